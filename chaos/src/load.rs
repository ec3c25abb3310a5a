//! `lastmile load`: an open-loop load generator against the local deployment, with the machine's
//! physical limits measured in the same run.
//!
//! - **Ride requests**: `POST /rides` sent at a constant rate whatever the answers do (open
//!   loop), each latency measured from the moment the request was *due*, so a server that falls
//!   behind shows it in the tail instead of slowing the generator down (no coordinated omission).
//!   Reported: accepted requests/s and p50/p99/p99.9.
//! - **Request → match** with drivers already waiting at the station: from a ride's acceptance to
//!   its trip's commit, both stamped by trip-service (milliseconds), for rides sent at a low rate.
//! - **The limits, in the same run**: `write` + `fdatasync` per second on the data folder's disk,
//!   and RabbitMQ's publish → confirm round trip.

use crate::cli::LoadArgs;
use crate::local::{LocalOptions, LocalTarget};
use hdrhistogram::Histogram;
use lastmile_harness::Target;
use lastmile_platform::broker::{Broker, Message};
use lastmile_platform::http::{CallPolicy, HttpClient, Method};
use lastmile_services::domain::{Ride, RideStatus, Trip};
use lastmile_services::ServiceName;
use lastmile_workload::{History, LastMileClient};
use std::collections::BTreeMap;
use std::path::Path;
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
    /// Ride accepted → its trip committed (trip-service's stamps; ms resolution).
    pub request_to_match: Percentiles,
    /// Rides of the match phase that were not matched within 5 s.
    pub unmatched: usize,
    /// `write` + `fdatasync` per second on the data folder's disk.
    pub fdatasyncs_per_s: f64,
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
        writeln!(f, "request -> match (driver waiting): {}", self.request_to_match)?;
        if self.unmatched > 0 {
            writeln!(f, "  {} rides not matched within 5 s", self.unmatched)?;
        }
        writeln!(f, "limits measured in the same run:")?;
        writeln!(f, "  disk: {:.0} write+fdatasync/s on the data folder", self.fdatasyncs_per_s)?;
        write!(f, "  RabbitMQ publish -> confirm: {}", self.broker_confirm)
    }
}

/// Why a load run could not measure.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The local deployment did not start.
    #[error("cannot start the services: {0}")]
    Start(#[from] lastmile_harness::target::TargetError),
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

/// Run the load against a local deployment started for it (every service once).
pub async fn run_local(options: &LoadOptions, local: LocalOptions) -> Result<LoadReport, LoadError> {
    let dir = local.work_dir.clone();
    let events = lastmile_platform::broker::Names::new(local.prefix.clone()).events_exchange();
    let amqp_url = local.amqp_url.clone();
    let replicas = ServiceName::ALL.into_iter().map(|s| (s, 1)).collect();
    let target = LocalTarget::start(local, &replicas).await?;
    let endpoints = target.endpoints();
    let api = LastMileClient::new(&endpoints, CallPolicy::default(), History::new());
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
    let riders: Vec<String> = (0..20).map(|i| format!("load-rider-{i}")).collect();
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
        let id = format!("load-driver-{d}");
        api.register_driver(&id, "Load Driver", "+91 90000 00001", "KA-01")
            .await
            .map_err(setup(format!("driver {id}")))?;
        api.start_shift(&id, &shift).await.map_err(setup(format!("{id}'s shift")))?;
        api.arrive_at(&id, &station).await.map_err(setup(format!("{id}'s arrival")))?;
    }

    // The limits first, on a quiet machine.
    let fdatasyncs_per_s = fdatasync_rate(&dir, Duration::from_secs(2))?;
    let broker_confirm = broker_confirms(&amqp_url, &events, Duration::from_secs(2)).await?;

    // Request -> match first, on an idle deployment: 10 rides a second at ST101, where drivers
    // wait. (After the throughput phase matching-service still works through its backlog.)
    let mut matched = histogram();
    let mut unmatched = 0;
    let mut sent = Vec::new();
    for i in 0..options.match_rides {
        let body = serde_json::json!({
            "ride_id": format!("match-{i}"), "rider_id": riders[i % riders.len()],
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
    let latencies = Arc::new(Mutex::new(histogram()));
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
            "ride_id": format!("load-{i}"), "rider_id": riders[i as usize % riders.len()],
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
            latencies.lock().expect("histogram").saturating_record(due.elapsed().as_micros() as u64);
            *statuses.lock().expect("statuses").entry(status).or_default() += 1;
            drop(slot);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    h.add(&*latencies.lock().expect("histogram")).expect("same bounds");
    let statuses = statuses.lock().expect("statuses").clone();
    let failures = failures.lock().expect("failures").clone();
    let accepted = statuses.get(&201).copied().unwrap_or(0);

    drop(target);
    Ok(LoadReport {
        sent: total,
        accepted,
        statuses,
        failures,
        accepted_per_s: accepted as f64 / elapsed,
        ride_request: Percentiles::of(&h),
        request_to_match: Percentiles::of(&matched),
        unmatched,
        fdatasyncs_per_s,
        broker_confirm,
    })
}

/// The trip a ride was matched to, waiting up to 5 s for it.
async fn matched_at(trips: &HttpClient, ride_id: &str) -> Option<Trip> {
    let deadline = now() + Duration::from_secs(5);
    while now() < deadline {
        if let Ok(ride) = trips.get::<Ride>(&format!("/rides/{ride_id}")).await {
            if let RideStatus::Matched { trip_id } | RideStatus::Completed { trip_id } = ride.status {
                return trips.get::<Trip>(&format!("/trips/{trip_id}")).await.ok();
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// `lastmile load`: a local deployment of its own, measured, with a verdict.
pub async fn command(args: &LoadArgs) -> ExitCode {
    if !(args.rate > 0.0 && args.duration_s > 0.0) {
        return crate::cli::usage("--rate and --duration-s must be positive");
    }
    let binary = match std::env::current_exe() {
        Ok(b) => b,
        Err(e) => return crate::cli::usage(format!("cannot find the lastmile binary to run services with: {e}")),
    };
    let id = lastmile_platform::clock::new_id();
    let work_dir =
        args.work_dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("lastmile-load-{}", &id[..12])));
    let local = LocalOptions {
        binary,
        amqp_url: args.amqp_url.clone(),
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
    let options = LoadOptions {
        rate: args.rate,
        duration: Duration::from_secs_f64(args.duration_s),
        max_in_flight: args.max_in_flight,
        match_rides: args.match_rides,
    };
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
