//! `lastmile load`: an open-loop load generator against a deployment, with the physical limits
//! measured in the same run.
//!
//! - **Ride requests**: `POST /rides` sent at a constant rate whatever the answers do (open
//!   loop), each latency measured from the moment the request was *due*, so a server that falls
//!   behind shows it in the tail instead of slowing the generator down (no coordinated omission).
//!   Reported: accepted requests/s and p50/p99/p99.9.
//! - **Request → match** with drivers already waiting at the station: from a ride's acceptance to
//!   its trip's commit, both stamped by trip-service (milliseconds), for rides sent at a low rate.
//! - **The limits, in the same run**: `write` + `fdatasync` per second on a folder's disk, and
//!   RabbitMQ's publish → confirm round trip.
//!
//! [`run_against`] measures any deployment given by its [`Endpoints`] and [`Limits`]; the three
//! targets only say where those come from and where the generator runs:
//! - `--target local` ([`run_local`]): a deployment of the run's own on this machine, every
//!   service once and wired direct (no fault proxy); the disk measured is its data folder's;
//! - `--target endpoints`: a deployment already running at the URLs given (validated: plain
//!   `http://host:port`), its service token from a file or `LASTMILE_SERVICE_TOKEN` (never a
//!   flag, never printed), the broker URL from a file or the environment; the disk measured is
//!   `--disk-dir`'s, the generator's own — not the services' volumes, and the report says so;
//!   every id carries the run's tag, so runs against a long-lived deployment never collide;
//! - `--target kube` ([`kube`]): a Job in the cluster (`k8s/load/job.yaml`) whose pod runs the
//!   endpoints target against the Services' DNS names — next to the services, since through
//!   port-forwards the figures would be the tunnels' — and whose log this command prints.

pub mod kube;

use crate::cli::{usage, LoadArgs, LoadTarget};
use crate::local::{LocalOptions, LocalTarget};
use hdrhistogram::Histogram;
use lastmile_harness::Target;
use lastmile_platform::auth::ServiceToken;
use lastmile_platform::broker::{Broker, Message};
use lastmile_platform::http::{path_segment, CallPolicy, HttpClient, Method};
use lastmile_services::domain::{Ride, RideStatus, Trip};
use lastmile_services::ServiceName;
use lastmile_workload::{Endpoints, History, LastMileClient};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Ride requests per second in the throughput phase.
    pub rate: f64,
    /// How long the throughput phase lasts.
    pub duration: Duration,
    /// Ride requests in flight at most (beyond it the next waits, and its latency shows it).
    pub max_in_flight: usize,
    /// Rides sent (10 a second) in the request → match phase.
    pub match_rides: usize,
    /// Put before every rider, driver and ride id: empty for a deployment of the run's own, the
    /// run's tag and `-` against a long-lived one (where an id of an earlier run would be taken).
    pub id_prefix: String,
}

/// The limits measured beside the deployment, and where.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The folder whose disk the `write` + `fdatasync` probe measures.
    pub disk_dir: PathBuf,
    /// Whose disk that is, for the report: the figure means nothing without it.
    pub disk: String,
    /// The broker whose publish → confirm round trip is measured (its password is never shown).
    pub amqp_url: String,
    /// The exchange the probe publishes to: the services' events exchange, which exists.
    pub exchange: String,
    /// matching-service's work queue, whose depth at the end of the throughput phase says
    /// whether matching kept up with the ride requests.
    pub matching_queue: String,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Percentiles {
    /// How many were measured.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// The largest.
    pub max_ms: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Percentiles {
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms ({} measured)",
            self.p50_ms, self.p99_ms, self.p999_ms, self.max_ms, self.count
        )
    }
}

/// What a load run measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Requests sent in the throughput phase.
    pub sent: u64,
    /// Of them answered 201.
    pub accepted: u64,
    /// Answers by status (`0`: no answer).
    pub statuses: BTreeMap<u16, u64>,
    /// Why requests got no answer, by the start of the error (at most a few kinds).
    pub failures: BTreeMap<String, u64>,
    /// Accepted requests per second of the phase.
    pub accepted_per_s: f64,
    /// Ride request latency from the moment each was due.
    pub ride_request: Percentiles,
    /// The p99 of the requests due in each second of the phase, in ms: a tail spread over
    /// every second is a queue (the cores are busy); one in a few seconds is a stall.
    pub p99_by_second: Vec<f64>,
    /// Ride requests still in matching-service's queue when the phase ended (`None`: not read).
    pub matching_backlog: Option<u32>,
    /// Ride accepted → its trip committed (trip-service's stamps; ms resolution).
    pub request_to_match: Percentiles,
    /// Rides of the match phase that were not matched within 5 s.
    pub unmatched: usize,
    /// `write` + `fdatasync` per second on [`Limits::disk_dir`]'s disk.
    pub fdatasyncs_per_s: f64,
    /// Whose disk that is ([`Limits::disk`]).
    pub disk: String,
    /// RabbitMQ publish → confirm round trips (sequential).
    pub broker_confirm: Percentiles,
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "ride requests: {} sent, {} accepted ({:.0}/s)", self.sent, self.accepted, self.accepted_per_s)?;
        writeln!(f, "  answers by status: {:?}", self.statuses)?;
        for (why, n) in &self.failures {
            writeln!(f, "  no answer ({n}): {why}")?;
        }
        writeln!(f, "  latency from due time: {}", self.ride_request)?;
        if !self.p99_by_second.is_empty() {
            let each: Vec<String> = self.p99_by_second.iter().map(|ms| format!("{ms:.0}")).collect();
            writeln!(f, "  p99 of each second's requests (ms): {}", each.join(" "))?;
        }
        if let Some(backlog) = self.matching_backlog {
            writeln!(
                f,
                "  matching-service's queue when the phase ended: {backlog} ride requests not consumed yet{}",
                if backlog > self.sent as u32 / 100 { " (matching fell behind the rate)" } else { "" }
            )?;
        }
        writeln!(f, "request -> match (driver waiting): {}", self.request_to_match)?;
        if self.unmatched > 0 {
            writeln!(f, "  {} rides not matched within 5 s", self.unmatched)?;
        }
        writeln!(f, "limits measured in the same run:")?;
        writeln!(f, "  disk: {:.0} write+fdatasync/s on {}", self.fdatasyncs_per_s, self.disk)?;
        write!(f, "  RabbitMQ publish -> confirm: {}", self.broker_confirm)
    }
}

/// Why a load run could not measure.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The local deployment did not start.
    #[error("cannot start the services: {0}")]
    Start(#[from] lastmile_harness::target::TargetError),
    /// A service of the deployment given by its URLs did not answer `/ready` with 200 in time.
    #[error("{service} at {url} is not ready ({why})")]
    NotReady { service: String, url: String, why: String },
    /// Registering riders and drivers, or putting drivers at the station, failed.
    #[error("setting up {what}: {source}")]
    Setup { what: String, source: lastmile_platform::http::CallError },
    /// The disk probe failed.
    #[error("the fdatasync probe: {0}")]
    Disk(#[from] std::io::Error),
    /// RabbitMQ did not confirm a probe publish.
    #[error("the RabbitMQ probe: {0}")]
    Broker(#[from] lastmile_platform::broker::BrokerError),
}

fn setup(what: impl Into<String>) -> impl FnOnce(lastmile_platform::http::CallError) -> LoadError {
    let what = what.into();
    move |source| LoadError::Setup { what, source }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// Wall time: this is the real world's load generator, not simulated code.
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

/// `write` + `fdatasync` of a small record for `for_how_long` in `dir`: syncs per second.
pub fn fdatasync_rate(dir: &Path, for_how_long: Duration) -> std::io::Result<f64> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let path = dir.join("fdatasync-probe");
    let mut file = std::fs::File::create(&path)?;
    let (start, mut n) = (now(), 0u64);
    while start.elapsed() < for_how_long {
        file.write_all(&[b'x'; 200])?;
        file.sync_data()?;
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(path)?;
    Ok(rate)
}

/// Sequential persistent publishes to `exchange` (declared by the services), each waiting for its
/// confirm, for `for_how_long`.
async fn broker_confirms(amqp_url: &str, exchange: &str, for_how_long: Duration) -> Result<Percentiles, LoadError> {
    let broker = Broker::new(amqp_url.to_string());
    let mut h = histogram();
    let start = now();
    let mut i = 0u64;
    while start.elapsed() < for_how_long {
        let message = Message {
            message_id: format!("load-probe-{i}"),
            routing_key: "load.probe".into(),
            body: b"{}".to_vec(),
            persistent: true,
        };
        let sent = now();
        broker.publish(exchange, message).await?;
        h.saturating_record(sent.elapsed().as_micros() as u64);
        i += 1;
    }
    broker.disconnect().await;
    Ok(Percentiles::of(&h))
}

/// Run the load against a local deployment started for it (every service once), the limits
/// measured on its data folder and its broker.
pub async fn run_local(options: &LoadOptions, local: LocalOptions) -> Result<LoadReport, LoadError> {
    let limits = Limits {
        disk_dir: local.work_dir.clone(),
        disk: "the data folder".to_string(),
        amqp_url: local.amqp_url.clone(),
        exchange: lastmile_platform::broker::Names::new(local.prefix.clone()).events_exchange(),
        matching_queue: lastmile_platform::broker::Names::new(local.prefix.clone())
            .queue(ServiceName::Matching.as_str()),
    };
    let names = lastmile_platform::broker::Names::new(local.prefix.clone());
    let replicas = ServiceName::ALL.into_iter().map(|s| (s, 1)).collect();
    let target = LocalTarget::start(local, &replicas).await?;
    let report = run_against(options, &target.endpoints(), &limits).await;
    drop(target);
    // The run's queues and exchanges go with it: a backlog left in the broker would weigh on the
    // next run measured (they would expire only after 10 minutes).
    let broker = Broker::new(limits.amqp_url.clone());
    if let Err(e) = broker.delete(&lastmile_services::events::topology(&names, None)).await {
        eprintln!("lastmile load: could not delete the run's queues (they expire in 10 minutes): {e}");
    }
    broker.disconnect().await;
    report
}

/// Run the load against the deployment at `endpoints` (already up and ready), with the limits
/// of `limits` measured in the same run: the phases of [the module docs](self).
pub async fn run_against(
    options: &LoadOptions,
    endpoints: &Endpoints,
    limits: &Limits,
) -> Result<LoadReport, LoadError> {
    let id = |what: String| format!("{}{what}", options.id_prefix);
    let api = LastMileClient::new(endpoints, CallPolicy::default(), History::new());
    // One attempt, no breaker: every request is measured as the server answers it.
    let policy = CallPolicy {
        attempts: 1,
        timeout: Duration::from_secs(10),
        breaker_threshold: u32::MAX,
        ..CallPolicy::default()
    };
    // As many pooled connections as calls in flight: no connection is opened per request.
    let trips = HttpClient::new("trip-service", &endpoints.trip, policy)
        .with_token(endpoints.token.clone())
        .with_pool(options.max_in_flight.max(1));

    // Riders, and drivers waiting at ST101 with room for every rider of the match phase.
    let riders: Vec<String> = (0..20).map(|i| id(format!("load-rider-{i}"))).collect();
    for r in &riders {
        api.register_rider(r, "Load Rider", "+91 90000 00000").await.map_err(setup(format!("rider {r}")))?;
    }
    let network = lastmile_services::domain::Network::default_network();
    let station = network.get("ST101").expect("the default network has ST101").clone();
    let shift = lastmile_services::trip::ShiftRequest {
        route: vec!["ST101".into(), "ST102".into()],
        destination: "ST104".into(),
        seats: lastmile_services::trip::MAX_SEATS,
    };
    let drivers = options.match_rides / lastmile_services::trip::MAX_SEATS as usize + 2;
    for d in 0..drivers {
        let driver = id(format!("load-driver-{d}"));
        api.register_driver(&driver, "Load Driver", "+91 90000 00001", "KA-01")
            .await
            .map_err(setup(format!("driver {driver}")))?;
        api.start_shift(&driver, &shift).await.map_err(setup(format!("{driver}'s shift")))?;
        api.arrive_at(&driver, &station).await.map_err(setup(format!("{driver}'s arrival")))?;
    }

    // The limits first, on a quiet machine.
    let fdatasyncs_per_s = fdatasync_rate(&limits.disk_dir, Duration::from_secs(2))?;
    let broker_confirm = broker_confirms(&limits.amqp_url, &limits.exchange, Duration::from_secs(2)).await?;

    // Request -> match first, on an idle deployment: 10 rides a second at ST101, where drivers
    // wait. (After the throughput phase matching-service still works through its backlog.)
    let mut matched = histogram();
    let mut unmatched = 0;
    let mut sent = Vec::new();
    for i in 0..options.match_rides {
        let body = serde_json::json!({
            "ride_id": id(format!("match-{i}")), "rider_id": riders[i % riders.len()],
            "station_id": "ST101", "destination": "ST104"
        });
        if let Ok((201, bytes)) = trips.call_raw(Method::POST, "/rides", Some(body.to_string().into_bytes())).await {
            if let Ok(ride) = serde_json::from_slice::<Ride>(&bytes) {
                sent.push(ride);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for ride in sent {
        match matched_at(&trips, &ride.ride_id).await {
            Some(trip) => matched.saturating_record(trip.created_at_ms.saturating_sub(ride.requested_at_ms) * 1000),
            None => unmatched += 1,
        }
    }
    // Throughput: open loop at ST110 (no driver there: the rides just wait).
    let mut h = histogram();
    let statuses: Arc<Mutex<BTreeMap<u16, u64>>> = Arc::default();
    let failures: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let seconds = options.duration.as_secs_f64().ceil().max(1.0) as usize;
    // One histogram per second of due time (the last takes any remainder).
    let latencies = Arc::new(Mutex::new(vec![histogram(); seconds]));
    let slots = Arc::new(tokio::sync::Semaphore::new(options.max_in_flight.max(1)));
    let total = (options.rate * options.duration.as_secs_f64()).round() as u64;
    let gap = Duration::from_secs_f64(1.0 / options.rate.max(0.001));
    let start = now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + gap * i as u32;
        tokio::time::sleep_until(due).await;
        let slot = slots.clone().acquire_owned().await.expect("never closed");
        let body = serde_json::json!({
            "ride_id": id(format!("load-{i}")), "rider_id": riders[i as usize % riders.len()],
            "station_id": "ST110", "destination": "ST104"
        });
        let (trips, statuses, failures, latencies) =
            (trips.clone(), statuses.clone(), failures.clone(), latencies.clone());
        tasks.push(tokio::spawn(async move {
            let answer = trips.call_raw(Method::POST, "/rides", Some(body.to_string().into_bytes())).await;
            let status = match answer {
                Ok((status, _)) => status,
                Err(e) => {
                    let why: String = e.to_string().chars().take(80).collect();
                    *failures.lock().expect("failures").entry(why).or_default() += 1;
                    0
                }
            };
            let second = ((due - start).as_secs() as usize).min(seconds - 1);
            latencies.lock().expect("histograms")[second].saturating_record(due.elapsed().as_micros() as u64);
            *statuses.lock().expect("statuses").entry(status).or_default() += 1;
            drop(slot);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let broker = Broker::new(limits.amqp_url.clone());
    let matching_backlog = broker.queue_len(&limits.matching_queue).await.ok().flatten();
    broker.disconnect().await;
    let by_second = latencies.lock().expect("histograms").clone();
    for second in &by_second {
        h.add(second).expect("same bounds");
    }
    let p99_by_second = by_second.iter().filter(|s| !s.is_empty()).map(|s| Percentiles::of(s).p99_ms).collect();
    let statuses = statuses.lock().expect("statuses").clone();
    let failures = failures.lock().expect("failures").clone();
    let accepted = statuses.get(&201).copied().unwrap_or(0);

    Ok(LoadReport {
        sent: total,
        accepted,
        statuses,
        failures,
        accepted_per_s: accepted as f64 / elapsed,
        ride_request: Percentiles::of(&h),
        p99_by_second,
        matching_backlog,
        request_to_match: Percentiles::of(&matched),
        unmatched,
        fdatasyncs_per_s,
        disk: limits.disk.clone(),
        broker_confirm,
    })
}

/// The trip a ride was matched to, waiting up to 5 s for it.
async fn matched_at(trips: &HttpClient, ride_id: &str) -> Option<Trip> {
    let deadline = now() + Duration::from_secs(5);
    while now() < deadline {
        if let Ok(ride) = trips.get::<Ride>(&format!("/rides/{}", path_segment(ride_id))).await {
            if let RideStatus::Matched { trip_id } | RideStatus::Completed { trip_id } = ride.status {
                return trips.get::<Trip>(&format!("/trips/{}", path_segment(&trip_id))).await.ok();
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// `lastmile load`: the target's deployment measured, with a verdict.
pub async fn command(args: &LoadArgs) -> ExitCode {
    if !(args.rate > 0.0 && args.duration_s > 0.0) {
        return usage("--rate and --duration-s must be positive");
    }
    if let Err(e) = refuse_misplaced(args) {
        return usage(e);
    }
    match args.target {
        LoadTarget::Local => local_command(args).await,
        LoadTarget::Endpoints => endpoints_command(args).await,
        LoadTarget::Kube => kube::command(args).await,
    }
}

/// The measurement's options from the arguments, every id behind `id_prefix`.
fn options(args: &LoadArgs, id_prefix: String) -> LoadOptions {
    LoadOptions {
        rate: args.rate,
        duration: Duration::from_secs_f64(args.duration_s),
        max_in_flight: args.max_in_flight,
        match_rides: args.match_rides,
        id_prefix,
    }
}

/// Flags that belong to another target than the one chosen are refused, not ignored: a
/// `--trip-url` given to a local run would otherwise measure something else than asked.
pub fn refuse_misplaced(args: &LoadArgs) -> Result<(), String> {
    let endpoints_only = [
        ("--user-url", args.user_url.is_some()),
        ("--location-url", args.location_url.is_some()),
        ("--trip-url", args.trip_url.is_some()),
        ("--notification-url", args.notification_url.is_some()),
        ("--disk-dir", args.disk_dir.is_some()),
    ];
    let local_only = [("--work-dir", args.work_dir.is_some())];
    let kube_only = [("--timeout-s", args.timeout_s.is_some())];
    let not_local = [("--run-id", args.run_id.is_some())];
    let (refused, target): (Vec<(&str, bool)>, &str) = match args.target {
        LoadTarget::Local => ([&endpoints_only[..], &kube_only, &not_local].concat(), "local"),
        LoadTarget::Endpoints => ([&local_only[..], &kube_only].concat(), "endpoints"),
        LoadTarget::Kube => ([&endpoints_only[..], &local_only].concat(), "kube"),
    };
    match refused.iter().find(|(_, given)| *given) {
        Some((flag, _)) => Err(format!("{flag} does not apply to --target {target} (see `lastmile load --help`)")),
        None => Ok(()),
    }
}

/// A service's base URL from a flag: plain `http://host[:port]` (port 80 when left out), nothing
/// after the authority but one `/`. Returned as `http://host:port`.
///
/// Refused with the reason: another scheme (the generator's client speaks HTTP/1.1 without TLS,
/// as the services do inside the cluster), a path, query or fragment (the client puts its own
/// path after the base), credentials (they would be printed: the token has its own way in), and
/// a host or port that is not one.
pub fn parse_service_url(text: &str) -> Result<String, String> {
    let example = "e.g. http://trip-service:8083";
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err(format!("not a URL: give http://host:port ({example})"));
    };
    if scheme.eq_ignore_ascii_case("https") {
        return Err(format!(
            "https is not spoken: the load generator's client is plain HTTP/1.1, like the services' own \
             calls inside the cluster ({example})"
        ));
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(format!("{scheme}:// is not a service's URL: give http://host:port ({example})"));
    }
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#']) {
        return Err(format!("give the service's base URL, without a path, query or fragment ({example})"));
    }
    if authority.contains('@') {
        return Err("no user or password in a service's URL: the service token comes from \
                    --service-token-file or LASTMILE_SERVICE_TOKEN"
            .to_string());
    }
    let (host, port) = match authority.strip_prefix('[') {
        // An IPv6 literal: [::1]:8083.
        Some(v6) => {
            let (address, after) = v6.split_once(']').ok_or("an IPv6 address needs its closing ]")?;
            if address.is_empty() || !address.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.') {
                return Err(format!("[{address}] is not an IPv6 address"));
            }
            let port = match after {
                "" => None,
                after => Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| format!("{authority:?}: only a :port may follow the host ({example})"))?,
                ),
            };
            (format!("[{address}]"), port)
        }
        None => {
            let (host, port) = match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            };
            let label_ok = |l: &str| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            };
            if host.len() > 253 || !host.split('.').all(label_ok) {
                return Err(format!("{host:?} is not a host name or address ({example})"));
            }
            (host.to_ascii_lowercase(), port)
        }
    };
    let port = match port {
        None => 80,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.chars().all(|c| c.is_ascii_digit()) => n,
            _ => return Err(format!("{p:?} is not a port (1 to 65535)")),
        },
    };
    Ok(format!("http://{host}:{port}"))
}

/// A run's tag (`--run-id`): 1 to 32 of `a-z`, `0-9` and `-`, starting and ending with a letter
/// or digit. It goes into every rider, driver and ride id and into the Job's name, so nothing
/// else is let through.
pub fn parse_run_id(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 32
        && text.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !text.starts_with('-')
        && !text.ends_with('-');
    if ok {
        Ok(text.to_string())
    } else {
        Err("a run id is 1 to 32 of a-z, 0-9 and '-', starting and ending with a letter or digit".to_string())
    }
}

/// A fresh run tag.
pub fn fresh_run_id() -> String {
    lastmile_platform::clock::new_id()[..12].to_string()
}

/// The broker URL: the file's (a mounted Secret) when one is named, else `--amqp-url`.
fn amqp_url(args: &LoadArgs) -> Result<String, String> {
    match &args.amqp_url_file {
        Some(file) => std::fs::read_to_string(file)
            .map(|text| text.trim().to_string())
            .map_err(|e| format!("cannot read the broker URL from {}: {e}", file.display())),
        None => Ok(args.amqp_url.clone()),
    }
}

/// The service token, and where it came from: a file (a mounted Secret) or the environment's
/// `LASTMILE_SERVICE_TOKEN` (`from_env`); both at once is ambiguous. No message shows the token.
pub fn service_token(
    file: Option<&Path>,
    from_env: Option<&str>,
) -> Result<(Option<ServiceToken>, &'static str), String> {
    match (file, from_env) {
        (Some(_), Some(_)) => Err("the service token is given twice: --service-token-file (or \
                                   LASTMILE_SERVICE_TOKEN_FILE) and LASTMILE_SERVICE_TOKEN; keep one"
            .to_string()),
        (Some(file), None) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read the service token from {}: {e}", file.display()))?;
            let token = ServiceToken::new(&text).map_err(|e| format!("{}: {e}", file.display()))?;
            Ok((Some(token), "from its file"))
        }
        (None, Some(text)) => {
            let token = ServiceToken::new(text).map_err(|e| format!("LASTMILE_SERVICE_TOKEN: {e}"))?;
            Ok((Some(token), "from LASTMILE_SERVICE_TOKEN"))
        }
        (None, None) => Ok((None, "none")),
    }
}

/// The deployment `--target endpoints` loads, and the services to find ready first (name, URL).
pub fn endpoints_of(
    args: &LoadArgs,
    token: Option<ServiceToken>,
) -> Result<(Endpoints, Vec<(ServiceName, String)>), String> {
    let url = |flag: &str, url: &Option<String>| match url {
        Some(text) => parse_service_url(text).map(Some).map_err(|e| format!("{flag}: {e}")),
        None => Ok(None),
    };
    let need = |flag: &str, given: &Option<String>| {
        url(flag, given)?
            .ok_or_else(|| format!("--target endpoints needs {flag} (e.g. --trip-url http://trip-service:8083)"))
    };
    let user = need("--user-url", &args.user_url)?;
    let location = need("--location-url", &args.location_url)?;
    let trip = need("--trip-url", &args.trip_url)?;
    let notification = url("--notification-url", &args.notification_url)?;
    let mut checked = vec![
        (ServiceName::User, user.clone()),
        (ServiceName::Location, location.clone()),
        (ServiceName::Trip, trip.clone()),
    ];
    if let Some(url) = &notification {
        checked.push((ServiceName::Notification, url.clone()));
    }
    let endpoints = Endpoints {
        user,
        location,
        trip,
        // Never called without a URL: the load reads no inbox.
        notification: notification.unwrap_or_default(),
        token,
    };
    Ok((endpoints, checked))
}

/// Wait until each service answers `/ready` with 200 (30 s each at most).
async fn wait_ready(services: &[(ServiceName, String)], token: Option<ServiceToken>) -> Result<(), LoadError> {
    // One attempt per poll and no breaker: the last answer is the reason given.
    let policy = CallPolicy {
        attempts: 1,
        timeout: Duration::from_secs(2),
        breaker_threshold: u32::MAX,
        ..CallPolicy::default()
    };
    for (service, url) in services {
        let client = HttpClient::new(service.as_str(), url, policy.clone()).with_token(token.clone());
        let last = Mutex::new(String::from("no answer yet"));
        let ready = lastmile_workload::wait::wait_until("ready", Duration::from_secs(30), || async {
            match client.call_raw(Method::GET, "/ready", None).await {
                Ok((200, _)) => Some(()),
                Ok((status, _)) => {
                    *last.lock().expect("last") = format!("/ready answered {status}");
                    None
                }
                Err(e) => {
                    *last.lock().expect("last") = e.to_string();
                    None
                }
            }
        })
        .await;
        if ready.is_err() {
            let why = format!("after 30 s: {}", last.lock().expect("last"));
            return Err(LoadError::NotReady { service: service.to_string(), url: url.clone(), why });
        }
    }
    Ok(())
}

/// `--target local`: a deployment of its own, measured.
async fn local_command(args: &LoadArgs) -> ExitCode {
    let binary = match std::env::current_exe() {
        Ok(b) => b,
        Err(e) => return usage(format!("cannot find the lastmile binary to run services with: {e}")),
    };
    let amqp_url = match amqp_url(args) {
        Ok(url) => url,
        Err(e) => return usage(e),
    };
    let id = lastmile_platform::clock::new_id();
    let work_dir =
        args.work_dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("lastmile-load-{}", &id[..12])));
    let local = LocalOptions {
        binary,
        amqp_url,
        prefix: format!("lm-load-{}", &id[..12]),
        work_dir: work_dir.clone(),
        naive_matching: false,
        service_time: Default::default(),
        // No faults in a load run.
        seed: 0,
        // The broker whose round trip is measured beside the services.
        broker: crate::local::BrokerChoice::Shared { restart_node: None },
        // The services measured, not the fault proxy (which a load run has no use for).
        direct: true,
    };
    // A deployment of its own: nothing else has taken its ids.
    let options = options(args, String::new());
    println!(
        "lastmile load: {3} rides to waiting drivers, then {0} ride requests/s for {1} s (at most {2} in flight); data in {4}",
        args.rate,
        args.duration_s,
        args.max_in_flight,
        args.match_rides,
        work_dir.display()
    );
    let result = run_local(&options, local).await;
    if args.work_dir.is_none() {
        // A folder of its own under the temp dir: nothing in it is wanted after the figures.
        let _ = std::fs::remove_dir_all(&work_dir);
    }
    verdict(result)
}

/// `--target endpoints`: the deployment at the URLs given, measured from wherever this runs.
async fn endpoints_command(args: &LoadArgs) -> ExitCode {
    let from_env = std::env::var("LASTMILE_SERVICE_TOKEN").ok();
    let (token, token_source) = match service_token(args.service_token_file.as_deref(), from_env.as_deref()) {
        Ok(t) => t,
        Err(e) => return usage(e),
    };
    let (endpoints, checked) = match endpoints_of(args, token.clone()) {
        Ok(e) => e,
        Err(e) => return usage(e),
    };
    let amqp_url = match amqp_url(args) {
        Ok(url) => url,
        Err(e) => return usage(e),
    };
    let run_id = args.run_id.clone().unwrap_or_else(fresh_run_id);
    let (disk_dir, own_dir) = match &args.disk_dir {
        Some(dir) => (dir.clone(), false),
        None => (std::env::temp_dir().join(format!("lastmile-load-{run_id}")), true),
    };
    let limits = Limits {
        disk: format!("{} (the load generator's disk, not the services' volumes)", disk_dir.display()),
        disk_dir,
        amqp_url,
        exchange: lastmile_platform::broker::Names::new(args.prefix.clone()).events_exchange(),
        matching_queue: lastmile_platform::broker::Names::new(args.prefix.clone())
            .queue(ServiceName::Matching.as_str()),
    };
    let options = options(args, format!("{run_id}-"));
    let services: Vec<String> = checked.iter().map(|(s, url)| format!("{s} {url}")).collect();
    println!(
        "lastmile load: the deployment at {}; run {run_id}: {} rides to waiting drivers, then {} ride requests/s \
         for {} s (at most {} in flight)",
        services.join(", "),
        args.match_rides,
        args.rate,
        args.duration_s,
        args.max_in_flight
    );
    println!(
        "  service token: {token_source}; the limits measured from here: write+fdatasync on {}, RabbitMQ's \
         publish -> confirm to the exchange {}",
        limits.disk, limits.exchange
    );
    let result = async {
        wait_ready(&checked, token).await?;
        run_against(&options, &endpoints, &limits).await
    }
    .await;
    if own_dir {
        let _ = std::fs::remove_dir_all(&limits.disk_dir);
    }
    verdict(result)
}

/// The report and the verdict: PASS when every ride request was accepted and every ride to a
/// waiting driver matched.
fn verdict(result: Result<LoadReport, LoadError>) -> ExitCode {
    match result {
        Ok(report) => {
            println!("{report}");
            let kept_up = report.accepted == report.sent && report.unmatched == 0;
            if kept_up {
                println!("verdict: PASS — every ride request accepted, every ride to a waiting driver matched");
                ExitCode::SUCCESS
            } else {
                println!("verdict: FAIL — the deployment did not keep up (see the answers above)");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("lastmile load: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(line: &str) -> Result<LoadArgs, String> {
        let argv = ["lastmile", "load"].into_iter().map(String::from).chain(line.split_whitespace().map(String::from));
        match Cli::try_parse_from(argv) {
            Ok(Cli { command: Command::Load(args) }) => Ok(args),
            Ok(other) => panic!("not load: {other:?}"),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn service_urls_are_plain_http_base_urls() {
        let ok = [
            ("http://trip-service:8083", "http://trip-service:8083"),
            ("http://trip-service:8083/", "http://trip-service:8083"),
            (
                "HTTP://Trip-Service.lastmile.svc.cluster.local:8083",
                "http://trip-service.lastmile.svc.cluster.local:8083",
            ),
            ("http://10.0.0.7:8081", "http://10.0.0.7:8081"),
            ("http://[::1]:8083", "http://[::1]:8083"),
            ("http://user-service", "http://user-service:80"),
        ];
        for (given, normal) in ok {
            assert_eq!(parse_service_url(given).as_deref(), Ok(normal), "{given}");
        }
        let refused = [
            ("https://trip-service:8083", "https is not spoken"),
            ("ftp://trip-service:21", "ftp:// is not"),
            ("trip-service:8083", "not a URL"),
            ("file:///etc/passwd", "file:// is not"),
            ("http://trip-service:8083/rides", "without a path"),
            ("http://trip-service:8083?x=1", "without a path"),
            ("http://trip-service:8083#top", "without a path"),
            ("http://guest:secret@trip-service:8083", "no user or password"),
            ("http://trip service:8083", "not a host"),
            ("http://trip_service:8083", "not a host"),
            ("http://-trip:8083", "not a host"),
            ("http://:8083", "not a host"),
            ("http://trip-service:0", "not a port"),
            ("http://trip-service:65536", "not a port"),
            ("http://trip-service:+80", "not a port"),
            ("http://trip-service:", "not a port"),
            ("http://[::1", "closing ]"),
            ("http://[zz]:80", "not an IPv6"),
            ("http://[::1]x", "only a :port"),
            ("http://trip-service:8083\n", "not a port"),
        ];
        for (given, why) in refused {
            let e = parse_service_url(given).expect_err(given);
            assert!(e.contains(why), "{given:?}: {e}");
            assert!(!e.contains("secret"), "a refused URL's password is not echoed: {e}");
        }
        // From the command line: the flag is named, the password is not shown.
        let line = "--target endpoints --user-url http://u:1 --location-url http://l:2 --trip-url";
        let e = endpoints_of(&parse(&format!("{line} https://trip-service:8083")).unwrap(), None).unwrap_err();
        assert!(e.starts_with("--trip-url: https is not spoken"), "{e}");
        let e = endpoints_of(&parse(&format!("{line} http://me:pw@trip-service:8083")).unwrap(), None).unwrap_err();
        assert!(e.starts_with("--trip-url: no user or password") && !e.contains("pw"), "{e}");
        let e = endpoints_of(&parse(&format!("{line} http://t:3 --notification-url x")).unwrap(), None).unwrap_err();
        assert!(e.starts_with("--notification-url: not a URL"), "{e}");
    }

    #[test]
    fn run_ids_are_tags_that_fit_ids_and_job_names() {
        for ok in ["a", "ab12cd34ef56", "run-7", &"x".repeat(32)] {
            assert_eq!(parse_run_id(ok).as_deref(), Ok(ok));
        }
        for bad in ["", "-a", "a-", "A1", "a/b", "../x", "a b", "a?b", "ü", &"x".repeat(33)] {
            assert!(parse_run_id(bad).is_err(), "{bad:?}");
        }
        assert!(parse_run_id(&fresh_run_id()).is_ok());
        assert!(parse("--target endpoints --run-id ../../etc").is_err());
    }

    #[test]
    fn flags_of_another_target_are_refused_not_ignored() {
        let refused = |line: &str| refuse_misplaced(&parse(line).unwrap()).unwrap_err();
        assert!(refused("--trip-url http://t:1").contains("--trip-url does not apply to --target local"));
        assert!(refused("--disk-dir /tmp").contains("--disk-dir"));
        assert!(refused("--run-id r1").contains("--run-id"));
        assert!(refused("--timeout-s 5").contains("--timeout-s"));
        assert!(refused("--target endpoints --work-dir /tmp").contains("--work-dir"));
        assert!(refused("--target kube --user-url http://u:1").contains("--user-url"));
        assert!(refused("--target kube --work-dir /tmp").contains("--work-dir"));
        for fine in ["", "--rate 5000 --work-dir /tmp", "--target kube --run-id r1 --timeout-s 60 --image x:y"] {
            assert_eq!(refuse_misplaced(&parse(fine).unwrap()), Ok(()), "{fine}");
        }
        // Today's local command line (xtask's, BENCHMARKS.md's) is unchanged.
        let local = parse("--rate 200 --duration-s 2 --match-rides 10").unwrap();
        assert_eq!(local.target, LoadTarget::Local);
    }

    #[test]
    fn the_endpoints_target_needs_the_three_urls_it_calls() {
        let line = "--target endpoints --user-url http://u:8081 --location-url http://l:8082 --trip-url http://t:8083";
        let (endpoints, checked) = endpoints_of(&parse(line).unwrap(), None).unwrap();
        assert_eq!((endpoints.user.as_str(), endpoints.trip.as_str()), ("http://u:8081", "http://t:8083"));
        assert_eq!(checked.len(), 3, "notification-service is checked only when given");
        let (_, checked) =
            endpoints_of(&parse(&format!("{line} --notification-url http://n:8085")).unwrap(), None).unwrap();
        assert_eq!(checked.last(), Some(&(ServiceName::Notification, "http://n:8085".to_string())));
        let e = endpoints_of(&parse("--target endpoints --user-url http://u:1 --trip-url http://t:3").unwrap(), None)
            .unwrap_err();
        assert!(e.contains("--location-url"), "{e}");
    }

    #[test]
    fn the_service_token_comes_from_one_place_and_is_never_shown() {
        let dir = std::env::temp_dir().join(format!("lastmile-load-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("service-token");
        let secret = "s3cret-token-0123456789abcdef";
        std::fs::write(&file, format!("{secret}\n")).unwrap();
        let (token, from) = service_token(Some(&file), None).unwrap();
        assert_eq!((token.unwrap().expose(), from), (secret, "from its file"));
        let (token, from) = service_token(None, Some(secret)).unwrap();
        assert_eq!((token.unwrap().expose(), from), (secret, "from LASTMILE_SERVICE_TOKEN"));
        assert_eq!(service_token(None, None).unwrap().1, "none");
        let both = service_token(Some(&file), Some(secret)).unwrap_err();
        assert!(both.contains("twice") && !both.contains(secret), "{both}");
        let short = service_token(None, Some("short")).unwrap_err();
        assert!(short.contains("at least 16") && !short.contains("short\""), "{short}");
        let missing = service_token(Some(&dir.join("none")), None).unwrap_err();
        assert!(missing.contains("cannot read the service token"), "{missing}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_report_says_whose_disk_was_measured() {
        let p = Percentiles { count: 1, p50_ms: 1.0, p99_ms: 1.0, p999_ms: 1.0, max_ms: 1.0 };
        let report = LoadReport {
            sent: 1,
            accepted: 1,
            statuses: BTreeMap::from([(201, 1)]),
            failures: BTreeMap::new(),
            accepted_per_s: 1.0,
            ride_request: p.clone(),
            p99_by_second: vec![3.0, 41.5],
            matching_backlog: Some(0),
            request_to_match: p.clone(),
            unmatched: 0,
            fdatasyncs_per_s: 812.0,
            disk: "the data folder".into(),
            broker_confirm: p,
        };
        assert!(report.to_string().contains("  disk: 812 write+fdatasync/s on the data folder\n"), "{report}");
        assert!(report.to_string().contains("  p99 of each second's requests (ms): 3 42\n"), "{report}");
    }
}
