//! Services as local processes: the `--target local` of `lastmile chaos run`.
//!
//! Each replica is a process `lastmile service <name> --listen 127.0.0.1:<port>`, and every
//! connection of the run goes through one [`FaultProxy`], as every connection of a cluster goes
//! through its network:
//! - each service has a *front route* (dialled by `client`): the URL [`Target::endpoints`] hands
//!   to the workload and the harness;
//! - each replica has its own routes to everything it dials — user-, location- and trip-service
//!   (its `--user-url`, `--location-url`, `--trip-url`) and the broker (the AMQP URL with only its
//!   host and port rewritten, passed in the environment);
//! - a route reaches its service's *backend set*, round robin: a replica joins once its own
//!   `/ready` answers and leaves before it is stopped, like a Kubernetes Service's endpoints.
//!   [`Target::replica_urls`] keeps the replicas' direct URLs, for observation only.
//!
//! So the network faults mean what they mean in the simulation: `partition` holds every link of
//! the chosen replicas (or with `peer` only their links to that service or the broker) until it
//! is undone; `latency` delays every chunk on every link by `[ms, ms + ms/2]`; `loss` resets that
//! share of new connections and delays that share of chunks by a retransmission timeout (see
//! [`crate::proxy`]). The heal clears them all.
//!
//! Scaling starts and stops processes (SIGTERM, waiting for the graceful stop), `kill` is
//! SIGKILL, `pause` is SIGSTOP/SIGCONT, and `rollout` replaces every replica one at a time: a
//! service that may run several replicas gets a new one on a fresh port, ready and joined before
//! an old one leaves and stops; a journal service (one writer, `Recreate` in Kubernetes) is
//! stopped and started again on the same port and data.
//!
//! No step waits for a replica to get ready, as in the simulation: a replica started by a scale,
//! a restart or a kill's undo joins its backends whenever its `/ready` answers, because a fault
//! in force (the broker down, a partition) may hold it up until a later step undoes that fault,
//! and a timeline that waited would never reach the undo. A rollout waits for each new replica
//! up to [`ROLLOUT_PATIENCE`] (not at all while the broker is down), then stalls and goes on
//! after the next undo. The start and the
//! heal, with no fault in force, wait until every replica is ready.
//!
//! The broker: with [`BrokerChoice::Own`] (the default of `lastmile chaos run`) the run starts a
//! RabbitMQ node of its own ([`BrokerNode`]: own node name, port and data dir under the work
//! dir, so nothing else on the machine is disturbed), and `broker-restart` kills it hard and
//! starts it again on its data after `for_s`, as the simulation kills its broker node. With
//! [`BrokerChoice::Shared`] the run uses the given AMQP URL, and a `broker-restart` is carried out
//! only when the user named the shared node (`rabbitmqctl stop_app` / `start_app`: every user of
//! that broker sees it); otherwise it is skipped. Crash points are simulation only.
//!
//! `disk-stall` goes through each replica's harness route `POST /disk-stall` (service token
//! required): every journal sync of the process waits `latency_ms` more, the same hook the
//! simulation's stall uses, until the undo sets it back to 0; a replica that gets ready during
//! the stall is stalled before it joins.

use crate::broker::{free_port, BrokerNode, SharedBroker};
use crate::proxy::{Cut, Endpoint, FaultProxy, Route};
use lastmile_harness::target::{self, step_service};
use lastmile_harness::{Target, TargetError};
use lastmile_platform::auth::ServiceToken;
use lastmile_platform::http::{CallPolicy, HttpClient, Method};
use lastmile_scenarios::faults::TimelineStep;
use lastmile_scenarios::Action;
use lastmile_services::ServiceName;
use lastmile_workload::Endpoints;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long the start and the heal wait for a replica to answer `/ready` (no fault is in force
/// then: a replica not ready by then is a finding).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a rollout waits for a new replica to get ready before it stalls and lets the
/// timeline go on: a fault in force may be what holds it up (the simulation's patience).
const ROLLOUT_PATIENCE: Duration = Duration::from_secs(20);
/// How long a stopping replica may take to finish its work after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// How the local deployment is set up.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// The binary that runs a service as `<binary> service <name> ...` (the `lastmile` CLI).
    pub binary: PathBuf,
    /// The RabbitMQ the services use.
    pub amqp_url: String,
    /// Exchange and queue name prefix: unique per run, so runs never share queues.
    pub prefix: String,
    /// Journals and logs, one folder per service.
    pub work_dir: PathBuf,
    /// Run the original matching design.
    pub naive_matching: bool,
    /// Per-request service time of the services that have one (`--service-time`).
    pub service_time: BTreeMap<ServiceName, lastmile_platform::capacity::ServiceTime>,
    /// Seeds the fault proxy's draws (latency jitter, loss).
    pub seed: u64,
    /// Whose RabbitMQ the run uses.
    pub broker: BrokerChoice,
    /// No fault proxy: one replica per service on a port chosen at the start, the services
    /// dialling each other and the broker directly (`lastmile load` measures the services, not
    /// the proxy). Network faults and more replicas are then refused.
    pub direct: bool,
}

/// Whose RabbitMQ a local run uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerChoice {
    /// A node of the run's own, started under the work dir (`amqp_url` is then its URL).
    Own,
    /// The broker at `amqp_url`; broker restarts as `stop_app`/`start_app` of `restart_node`
    /// when one is named, else skipped.
    Shared {
        /// The shared node's name (`rabbit@host`), when the user allows restarting it.
        restart_node: Option<String>,
    },
}

impl BrokerChoice {
    /// Whether a `broker-restart` can be carried out.
    pub fn restartable(&self) -> bool {
        !matches!(self, BrokerChoice::Shared { restart_node: None })
    }
}

/// One running replica.
struct Process {
    child: Child,
    port: u16,
    /// Its routes to the broker and its peers: closed once the process is gone.
    _routes: Vec<Route>,
    /// Polls its `/ready` and adds it to its service's backends once it answers, however long
    /// that takes; finished once it joined.
    joining: tokio::task::JoinHandle<()>,
}

impl Drop for Process {
    fn drop(&mut self) {
        self.joining.abort();
    }
}

/// Whether a replica answers `/ready`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Readiness {
    /// It answered and joined its service's backends.
    Ready,
    /// Not within the patience given.
    NotYet,
    /// No replica runs on that port any more.
    Gone,
    /// The process ended before it was ready: how, and the end of its log.
    Exited(String),
}

/// A rollout under way.
struct Rollout {
    service: ServiceName,
    /// Old replicas' ports still to replace, oldest first.
    old: Vec<u16>,
    /// Ports of replicas started and not ready yet; each one ready retires the next old one.
    waiting: Vec<u16>,
}

/// The disk stalls in force, by service: a replica that gets ready while its service's disk is
/// stalled is stalled before it joins.
type DiskStalls = Arc<Mutex<BTreeMap<ServiceName, u64>>>;

/// Poll the replica on `port` until its `/ready` answers, then (its service's disk stall set on
/// it, if one is in force) add it to `service`'s backends.
async fn join_when_ready(proxy: FaultProxy, service: ServiceName, port: u16, stalls: DiskStalls, token: ServiceToken) {
    let probe =
        HttpClient::new("readiness", &LocalTarget::url(port), CallPolicy { attempts: 1, ..CallPolicy::default() });
    while !matches!(probe.call_raw(Method::GET, "/ready", None).await, Ok((200, _))) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Until what it set is what is in force: an undo may come while it sets a stall.
    let mut set = 0;
    loop {
        let wanted = stalls.lock().expect("disk stalls").get(&service).copied().unwrap_or(0);
        if wanted == set {
            break;
        }
        let _ = set_disk_stall(port, wanted, &token).await;
        set = wanted;
    }
    proxy.join(Endpoint::replica(service.as_str(), port), SocketAddr::from(([127, 0, 0, 1], port)));
}

/// Set the disk stall of the replica on `port` through its harness route (0 ends it).
async fn set_disk_stall(port: u16, ms: u64, token: &ServiceToken) -> Result<(), String> {
    let client =
        HttpClient::new("disk-stall", &LocalTarget::url(port), CallPolicy { attempts: 1, ..CallPolicy::default() })
            .with_token(Some(token.clone()));
    let body = serde_json::json!({ "latency_ms": ms }).to_string().into_bytes();
    match client.call_raw(Method::POST, "/disk-stall", Some(body)).await {
        Ok((200, _)) => Ok(()),
        Ok((status, body)) => Err(format!("{status} {}", String::from_utf8_lossy(&body))),
        Err(e) => Err(e.to_string()),
    }
}

/// Services as processes of this machine.
pub struct LocalTarget {
    options: LocalOptions,
    /// Every connection of the run goes through it: the network faults happen there.
    proxy: FaultProxy,
    /// Each service's route from `client`: where the workload and the harness reach it.
    fronts: BTreeMap<ServiceName, Route>,
    /// Replicas running, oldest first.
    running: BTreeMap<ServiceName, Vec<Process>>,
    /// Replicas killed and not brought back yet: (service, port).
    killed: Vec<(ServiceName, u16)>,
    /// Process ids stopped with SIGSTOP.
    paused: Vec<u32>,
    /// The run's service token, made for it: internal endpoints require it.
    token: ServiceToken,
    /// The run's own RabbitMQ node ([`BrokerChoice::Own`]).
    own_broker: Option<BrokerNode>,
    /// The shared node the user allowed restarting.
    shared_broker: Option<SharedBroker>,
    /// Whether a broker restart has it down now.
    broker_down: bool,
    /// [`LocalOptions::direct`]: each service's one port, fixed at the start.
    direct_ports: Option<BTreeMap<ServiceName, u16>>,
    /// Rollouts held up by a fault, to go on after the next undo (at the latest, the heal).
    stalled: Vec<Rollout>,
    /// Disk stalls in force.
    disk_stalls: DiskStalls,
}

/// How many bytes of a replica's log an error quotes, from its end.
const LOG_TAIL_BYTES: u64 = 1500;

/// The end of a replica's log (the last [`LOG_TAIL_BYTES`], from a line's start), for an error
/// that has to say why it stopped; or why it cannot be read.
fn log_tail(path: &std::path::Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let read = || -> std::io::Result<String> {
        let mut file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let text = String::from_utf8_lossy(&bytes);
        let text = if len > LOG_TAIL_BYTES { text.split_once('\n').map_or(&*text, |(_, rest)| rest) } else { &text };
        Ok(text.trim_end().to_owned())
    };
    match read() {
        Ok(tail) if tail.is_empty() => format!("its log {} is empty", path.display()),
        Ok(tail) => format!("its log {} ends:\n{tail}", path.display()),
        Err(e) => format!("its log {} cannot be read: {e}", path.display()),
    }
}

/// A replica that ended on its own before it was ready.
fn exited_early(service: ServiceName, port: u16, how: &str) -> TargetError {
    TargetError::Deployment(format!("{service} on port {port} exited before it was ready ({how})"))
}

/// A file or folder of the run out of reach.
fn io_error(path: &std::path::Path, e: std::io::Error) -> TargetError {
    TargetError::Deployment(format!("{}: {e}", path.display()))
}

/// Where the host and port of an AMQP URL are (after any credentials, before the vhost).
fn amqp_host_range(url: &str) -> Option<Range<usize>> {
    let start = url.find("://")? + 3;
    let end = url[start..].find(['/', '?', '#']).map_or(url.len(), |i| start + i);
    let host = url[start..end].rfind('@').map_or(start, |i| start + i + 1);
    (host < end).then_some(host..end)
}

/// The `host:port` the AMQP URL names (the scheme's default port if it names none). Errors never
/// repeat the URL: it carries the broker's credentials.
fn amqp_host(url: &str) -> Result<String, TargetError> {
    let range = amqp_host_range(url).ok_or_else(|| TargetError::Deployment("the AMQP URL names no host".into()))?;
    let host = &url[range];
    let has_port = host.rsplit_once(':').is_some_and(|(_, port)| !port.contains(']'));
    if has_port {
        return Ok(host.to_string());
    }
    let port = if url.starts_with("amqps:") { 5671 } else { 5672 };
    Ok(format!("{host}:{port}"))
}

/// The AMQP URL with its host and port replaced by `addr`; credentials, vhost and query kept.
fn amqp_url_via(url: &str, addr: SocketAddr) -> String {
    match amqp_host_range(url) {
        Some(range) => format!("{}{addr}{}", &url[..range.start], &url[range.end..]),
        None => url.to_string(),
    }
}

/// A route that would not open.
fn route_error(from: &Endpoint, to: &str, e: std::io::Error) -> TargetError {
    TargetError::Deployment(format!("no route from {from} to {to}: {e}"))
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on a pid we spawned and still own (not yet waited for).
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

impl LocalTarget {
    /// What processes on one machine behind the fault proxy can do: everything but crash points
    /// (simulation only), and broker restarts only on a broker the run may restart.
    pub fn can(broker: &BrokerChoice, action: Action) -> bool {
        match action {
            Action::Scale
            | Action::Kill
            | Action::Restart
            | Action::Rollout
            | Action::Pause
            | Action::Partition
            | Action::Latency
            | Action::Loss
            | Action::DiskStall => true,
            Action::BrokerRestart => broker.restartable(),
            Action::Crash | Action::Poison => false,
        }
    }

    /// Start every service with `replicas` each (services left out get 1), waiting until every
    /// replica is ready.
    pub async fn start(
        mut options: LocalOptions,
        replicas: &BTreeMap<ServiceName, usize>,
    ) -> Result<LocalTarget, TargetError> {
        std::fs::create_dir_all(&options.work_dir).map_err(|e| io_error(&options.work_dir, e))?;
        let own_broker = match options.broker {
            BrokerChoice::Own => Some(BrokerNode::start(&options.work_dir.join("broker")).await?),
            BrokerChoice::Shared { .. } => None,
        };
        if let Some(node) = &own_broker {
            options.amqp_url = node.url();
        }
        let shared_broker = match &options.broker {
            BrokerChoice::Shared { restart_node: Some(node) } => Some(SharedBroker::new(node.clone())),
            _ => None,
        };
        let proxy = FaultProxy::new(options.seed);
        let broker = amqp_host(&options.amqp_url)?;
        let resolved = tokio::net::lookup_host(&broker)
            .await
            .map_err(|e| TargetError::Deployment(format!("cannot resolve the broker {broker}: {e}")))?
            .collect::<Vec<_>>();
        let broker_addr = resolved
            .iter()
            .find(|a| a.is_ipv4())
            .or(resolved.first())
            .copied()
            .ok_or_else(|| TargetError::Deployment(format!("the broker {broker} has no address")))?;
        proxy.join(Endpoint::broker(), broker_addr);
        let mut fronts = BTreeMap::new();
        let mut direct_ports = None;
        if options.direct {
            let ports = ServiceName::ALL.into_iter().map(|s| free_port().map(|port| (s, port)));
            direct_ports = Some(ports.collect::<Result<_, TargetError>>()?);
        } else {
            for s in ServiceName::ALL {
                let route = proxy.route(Endpoint::client(), s.as_str()).await;
                fronts.insert(s, route.map_err(|e| route_error(&Endpoint::client(), s.as_str(), e))?);
            }
        }
        let mut target = LocalTarget {
            options,
            proxy,
            fronts,
            running: BTreeMap::new(),
            killed: Vec::new(),
            paused: Vec::new(),
            token: ServiceToken::random(),
            own_broker,
            shared_broker,
            broker_down: false,
            direct_ports,
            stalled: Vec::new(),
            disk_stalls: DiskStalls::default(),
        };
        for s in ServiceName::ALL {
            target.scale(s, replicas.get(&s).copied().unwrap_or(1)).await?;
        }
        target.all_ready().await?;
        Ok(target)
    }

    fn url(port: u16) -> String {
        format!("http://127.0.0.1:{port}")
    }

    /// The replica's own routes: to the broker, then to user-, location- and trip-service.
    async fn routes(&self, service: ServiceName, port: u16) -> Result<Vec<Route>, TargetError> {
        let from = Endpoint::replica(service.as_str(), port);
        let mut routes = Vec::new();
        for to in ["broker", ServiceName::User.as_str(), ServiceName::Location.as_str(), ServiceName::Trip.as_str()] {
            routes.push(self.proxy.route(from.clone(), to).await.map_err(|e| route_error(&from, to, e))?);
        }
        Ok(routes)
    }

    async fn spawn(&self, service: ServiceName, port: u16) -> Result<Process, TargetError> {
        let o = &self.options;
        let (routes, amqp_url, [user, location, trip]) = match &self.direct_ports {
            Some(ports) => {
                let peer = |s: ServiceName| Self::url(ports[&s]);
                let peers = [peer(ServiceName::User), peer(ServiceName::Location), peer(ServiceName::Trip)];
                (Vec::new(), o.amqp_url.clone(), peers)
            }
            None => {
                let routes = self.routes(service, port).await?;
                let [broker, user, location, trip] = &routes[..] else { unreachable!("four routes") };
                let (amqp_url, peers) =
                    (amqp_url_via(&o.amqp_url, broker.addr()), [user.url(), location.url(), trip.url()]);
                (routes, amqp_url, peers)
            }
        };
        let dir = self.options.work_dir.join(service.as_str());
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        let log_error = |e| TargetError::Deployment(format!("{service} log: {e}"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(service, port))
            .map_err(log_error)?;
        let err = log.try_clone().map_err(log_error)?;
        let mut cmd = Command::new(&o.binary);
        cmd.arg("service")
            .arg(service.as_str())
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            // In the environment, not on the command line, where `ps` would show its password.
            .env("LASTMILE_AMQP_URL", amqp_url)
            .env("LASTMILE_SERVICE_TOKEN", self.token.expose())
            .arg("--prefix")
            .arg(&o.prefix)
            .arg("--user-url")
            .arg(user)
            .arg("--location-url")
            .arg(location)
            .arg("--trip-url")
            .arg(trip)
            .arg("--data-dir")
            .arg(&dir)
            .arg("--queue-expires-secs")
            .arg("600")
            // The harness reads /export, /summary and /stats.
            .arg("--harness-routes")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        if o.naive_matching {
            cmd.arg("--naive-matching");
        }
        if let Some(t) = o.service_time.get(&service) {
            cmd.arg("--service-time").arg(t.to_string());
        }
        let child = cmd
            .spawn()
            .map_err(|e| TargetError::Deployment(format!("cannot start {service} ({}): {e}", o.binary.display())))?;
        let joining = tokio::spawn(join_when_ready(
            self.proxy.clone(),
            service,
            port,
            self.disk_stalls.clone(),
            self.token.clone(),
        ));
        Ok(Process { child, port, _routes: routes, joining })
    }

    /// Start a replica on `port`; it joins its service's backends once it is ready. Nothing here
    /// waits for that: a fault in force (the broker down, a partition) may hold it up until a
    /// later step undoes the fault, as it would hold up a pod, and the timeline must go on.
    async fn start_on(&mut self, service: ServiceName, port: u16) -> Result<(), TargetError> {
        let process = self.spawn(service, port).await?;
        self.running.entry(service).or_default().push(process);
        Ok(())
    }

    /// Wait up to `patience` for the replica of `service` on `port` to be ready.
    async fn ready(&mut self, service: ServiceName, port: u16, patience: Duration) -> Readiness {
        let deadline = lastmile_platform::clock::instant_now() + patience;
        loop {
            let Some(p) = self.running.get_mut(&service).into_iter().flatten().find(|p| p.port == port) else {
                return Readiness::Gone;
            };
            if p.joining.is_finished() {
                return Readiness::Ready;
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                return Readiness::Exited(format!("{status}; {}", log_tail(&self.log_path(service, port))));
            }
            if lastmile_platform::clock::instant_now() > deadline {
                return Readiness::NotYet;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A replica not ready within [`READY_TIMEOUT`], with the end of its log (what it waits on).
    fn not_ready(&self, service: ServiceName, port: u16, during: &str) -> TargetError {
        TargetError::Deployment(format!(
            "{service} ready on port {port}{during}: not within {READY_TIMEOUT:?}; {}",
            log_tail(&self.log_path(service, port))
        ))
    }

    /// Where the replica of `service` on `port` writes its output.
    fn log_path(&self, service: ServiceName, port: u16) -> PathBuf {
        self.options.work_dir.join(service.as_str()).join(format!("{port}.log"))
    }

    /// Wait until every running replica is ready ([`READY_TIMEOUT`] each at most).
    async fn all_ready(&mut self) -> Result<(), TargetError> {
        let replicas: Vec<(ServiceName, u16)> =
            self.running.iter().flat_map(|(s, ps)| ps.iter().map(|p| (*s, p.port))).collect();
        for (service, port) in replicas {
            match self.ready(service, port, READY_TIMEOUT).await {
                Readiness::NotYet => return Err(self.not_ready(service, port, "")),
                Readiness::Exited(how) => return Err(exited_early(service, port, &how)),
                Readiness::Ready | Readiness::Gone => {}
            }
        }
        Ok(())
    }

    /// A free port that no killed replica waits to come back on; with direct wiring, the
    /// service's one port while it has no replica.
    fn fresh_port(&self, service: ServiceName) -> Result<u16, TargetError> {
        if let Some(ports) = &self.direct_ports {
            return match self.running.get(&service).map_or(0, Vec::len) {
                0 => Ok(ports[&service]),
                _ => Err(TargetError::Deployment(format!(
                    "a run without the fault proxy has one replica of {service}, no more"
                ))),
            };
        }
        loop {
            let port = free_port()?;
            if !self.killed.iter().any(|(_, p)| *p == port) {
                return Ok(port);
            }
        }
    }

    /// Take the replica on `port` out of its service's backends and out of the running ones.
    fn retire(&mut self, service: ServiceName, port: u16) -> Option<Process> {
        let processes = self.running.get_mut(&service)?;
        let i = processes.iter().position(|p| p.port == port)?;
        let process = processes.remove(i);
        // Not joining any more, then out of the backends: a late join cannot bring it back.
        process.joining.abort();
        self.proxy.leave(&Endpoint::replica(service.as_str(), port));
        Some(process)
    }

    fn ports(&self, service: ServiceName) -> Vec<u16> {
        self.running.get(&service).into_iter().flatten().map(|p| p.port).collect()
    }

    /// Start replacing every replica of `service`, one at a time (see the module docs).
    async fn rollout(&mut self, service: ServiceName) -> Result<String, TargetError> {
        let old = self.ports(service);
        let rollout = if service.single_replica() {
            // One journal writer at a time (`Recreate`): stopped, then started on the same data.
            for &port in &old {
                if let Some(process) = self.retire(service, port) {
                    Self::stop(process).await;
                }
            }
            for &port in &old {
                self.start_on(service, port).await?;
            }
            Rollout { service, old: Vec::new(), waiting: old.clone() }
        } else {
            Rollout { service, old: old.clone(), waiting: Vec::new() }
        };
        Ok(match self.roll_on(rollout, false).await? {
            None if service.single_replica() => {
                format!("rolled out {service}: stopped and started again on ports {old:?}")
            }
            None => format!("rolled out {service}: ports {old:?} replaced by {:?}", self.ports(service)),
            Some(stalled) => {
                let why = format!(
                    "rollout of {service} stalled: ports {:?} not ready within {}s; the old replicas keep \
                     serving and it goes on after the next undo",
                    stalled.waiting,
                    self.rollout_patience(false).as_secs()
                );
                self.stalled.push(stalled);
                why
            }
        })
    }

    /// How long a rollout waits for a replica to get ready: [`READY_TIMEOUT`] at the heal; not
    /// at all while the broker is down (no replica gets ready before it declares its topology,
    /// and the broker's return is a later step that must not wait behind this one); else
    /// [`ROLLOUT_PATIENCE`]. The simulation's rule too.
    fn rollout_patience(&self, must_finish: bool) -> Duration {
        match (must_finish, self.broker_down) {
            (true, _) => READY_TIMEOUT,
            (false, true) => Duration::ZERO,
            (false, false) => ROLLOUT_PATIENCE,
        }
    }

    /// Carry a rollout on: wait for the replicas it started, then for each old replica left
    /// start a new one on a fresh port, wait until it is ready and retire the old one. A replica
    /// not ready within [`ROLLOUT_PATIENCE`] stalls the rollout (returned, to go on later),
    /// unless `must_finish` (the heal: no fault in force), when that fails the run.
    async fn roll_on(&mut self, mut rollout: Rollout, must_finish: bool) -> Result<Option<Rollout>, TargetError> {
        let s = rollout.service;
        loop {
            while let Some(&port) = rollout.waiting.first() {
                match self.ready(s, port, self.rollout_patience(must_finish)).await {
                    Readiness::NotYet if must_finish => return Err(self.not_ready(s, port, " during a rollout")),
                    Readiness::NotYet => return Ok(Some(rollout)),
                    Readiness::Exited(how) => return Err(exited_early(s, port, &how)),
                    // Scaled away meanwhile: no successor, so the old replica it was to replace stays.
                    Readiness::Gone => {
                        rollout.waiting.remove(0);
                        continue;
                    }
                    Readiness::Ready => {}
                }
                rollout.waiting.remove(0);
                if let Some(old) = (!rollout.old.is_empty()).then(|| rollout.old.remove(0)) {
                    if let Some(process) = self.retire(s, old) {
                        Self::stop(process).await;
                    }
                }
            }
            if rollout.old.is_empty() {
                return Ok(None);
            }
            let fresh = self.fresh_port(s)?;
            self.start_on(s, fresh).await?;
            rollout.waiting.push(fresh);
        }
    }

    /// Go on with every stalled rollout; what became of them, if there were any.
    async fn resume_rollouts(&mut self, must_finish: bool) -> Result<Option<String>, TargetError> {
        let stalled = std::mem::take(&mut self.stalled);
        let (said, still) =
            target::resume_rollouts(stalled, |r| r.service, async |r| self.roll_on(r, must_finish).await).await?;
        self.stalled = still;
        Ok(said)
    }

    /// Stop a replica gracefully (SIGTERM), SIGKILL after the grace period.
    async fn stop(mut process: Process) {
        signal(&process.child, libc::SIGTERM);
        let deadline = lastmile_platform::clock::instant_now() + STOP_TIMEOUT;
        loop {
            if let Ok(Some(_)) = process.child.try_wait() {
                return;
            }
            if lastmile_platform::clock::instant_now() > deadline {
                let _ = process.child.kill();
                let _ = process.child.wait();
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Set `service` to `n` replicas, each on a port of its own (new ones join when ready);
    /// scaling down stops the newest.
    pub async fn scale(&mut self, service: ServiceName, n: usize) -> Result<(), TargetError> {
        while self.running.get(&service).map_or(0, Vec::len) < n {
            let port = self.fresh_port(service)?;
            self.start_on(service, port).await?;
        }
        while self.running.get(&service).map_or(0, Vec::len) > n {
            let newest = *self.ports(service).last().expect("more than n replicas");
            if let Some(process) = self.retire(service, newest) {
                Self::stop(process).await;
            }
        }
        Ok(())
    }

    fn chosen(&self, service: ServiceName, replica: Option<usize>, all: bool) -> Vec<usize> {
        let n = self.running.get(&service).map_or(0, Vec::len);
        match (n, replica) {
            (0, _) => Vec::new(),
            (n, Some(r)) => vec![r % n],
            (n, None) if all => (0..n).collect(),
            (n, None) => vec![n - 1],
        }
    }
}

impl Drop for LocalTarget {
    fn drop(&mut self) {
        // Whatever happens to the run, no service process outlives it.
        for processes in self.running.values_mut() {
            for p in processes.iter_mut() {
                signal(&p.child, libc::SIGCONT);
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        }
    }
}

impl Target for LocalTarget {
    fn spawn_client<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        tokio::spawn(future)
    }

    fn endpoints(&self) -> Endpoints {
        match &self.direct_ports {
            Some(ports) => crate::endpoints(|s| Self::url(ports[&s]), Some(self.token.clone())),
            None => crate::endpoints(|s| self.fronts[&s].url(), Some(self.token.clone())),
        }
    }

    fn broker(&self) -> Option<lastmile_workload::hostile::BrokerAccess> {
        Some(lastmile_workload::hostile::BrokerAccess {
            url: self.options.amqp_url.clone(),
            exchange: lastmile_platform::broker::Names::new(self.options.prefix.clone()).events_exchange(),
        })
    }

    fn replica_urls(&self, service: ServiceName) -> Vec<(String, String)> {
        self.running
            .get(&service)
            .into_iter()
            .flatten()
            .map(|p| (format!("{service}@{}", p.port), Self::url(p.port)))
            .collect()
    }

    fn supports(&self, action: Action) -> bool {
        let network = matches!(action, Action::Partition | Action::Latency | Action::Loss);
        LocalTarget::can(&self.options.broker, action) && !(network && self.direct_ports.is_some())
    }

    async fn running(&self, service: ServiceName) -> Result<usize, TargetError> {
        Ok(self.running.get(&service).map_or(0, Vec::len))
    }

    fn progress(&self, line: &dyn Fn() -> String) {
        println!("  {}", line());
    }

    async fn logs(&self, service: ServiceName) -> Result<Vec<(String, String)>, TargetError> {
        let dir = self.options.work_dir.join(service.as_str());
        let entries = std::fs::read_dir(&dir).map_err(|e| io_error(&dir, e))?;
        let mut logs = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|x| x == "log") {
                let port = path.file_stem().map(|p| p.to_string_lossy().to_string()).unwrap_or_default();
                let text = std::fs::read_to_string(&path).map_err(|e| io_error(&path, e))?;
                logs.push((format!("{service}@{port}"), text));
            }
        }
        logs.sort();
        Ok(logs)
    }

    async fn apply(&mut self, step: &TimelineStep) -> Result<String, TargetError> {
        // Faults of every link first: they name no service.
        match step.action {
            Action::Latency => {
                let ms = step.latency_ms.unwrap_or(100);
                self.proxy.set_latency_ms(Some(ms));
                return Ok(format!("latency {ms} ms on every link"));
            }
            Action::Loss => {
                let loss = step.loss.unwrap_or(0.1);
                self.proxy.set_loss(loss);
                return Ok(format!("packet loss {loss:.2} on every link"));
            }
            Action::BrokerRestart => return self.stop_broker().await,
            _ => {}
        }
        let s = step_service(step)?;
        match step.action {
            Action::Scale => {
                let n = TargetError::required(step.replicas, "scale", "replicas")?;
                self.scale(s, n).await?;
                Ok(format!("{s} scaled to {n}"))
            }
            Action::Kill => {
                let Some(&i) = self.chosen(s, step.replica, false).first() else {
                    return Ok(format!("{s} has no replica to kill"));
                };
                let port = self.running[&s][i].port;
                let mut p = self.retire(s, port).expect("chosen exists");
                let _ = p.child.kill();
                let _ = p.child.wait();
                self.killed.push((s, p.port));
                Ok(format!("killed {s} on port {}", p.port))
            }
            Action::Restart => {
                let ports = self.ports(s);
                for &port in &ports {
                    if let Some(process) = self.retire(s, port) {
                        Self::stop(process).await;
                    }
                }
                for port in &ports {
                    self.start_on(s, *port).await?;
                }
                Ok(format!("restarted {s} on ports {ports:?}"))
            }
            Action::Pause => {
                let chosen = self.chosen(s, step.replica, true);
                let procs = self.running.get(&s).map(Vec::as_slice).unwrap_or(&[]);
                for i in chosen {
                    signal(&procs[i].child, libc::SIGSTOP);
                    self.paused.push(procs[i].child.id());
                }
                Ok(format!("paused {s}"))
            }
            Action::Rollout => self.rollout(s).await,
            Action::DiskStall => {
                let ms = TargetError::required(step.latency_ms, "disk-stall", "latency_ms")?;
                self.disk_stalls.lock().expect("disk stalls").insert(s, ms);
                let set = self.set_disk_stalls(s, ms).await;
                Ok(format!("{s}'s disk stalled: each sync takes {ms} ms more ({set})"))
            }
            Action::Partition => {
                if let Some(peer) = step.peer.as_deref().filter(|p| *p != "broker") {
                    peer.parse::<ServiceName>()?;
                }
                let ports: Vec<u16> =
                    self.chosen(s, step.replica, true).into_iter().map(|i| self.running[&s][i].port).collect();
                for &port in &ports {
                    let side = Endpoint::replica(s.as_str(), port);
                    self.proxy.cut(Cut { side, peer: step.peer.clone() });
                }
                Ok(match &step.peer {
                    Some(peer) => format!("cut the links of {s} (ports {ports:?}) to {peer}"),
                    None => format!("partitioned {s} (ports {ports:?})"),
                })
            }
            action => Err(TargetError::Unsupported { action, target: "local" }),
        }
    }

    async fn undo(&mut self, step: &TimelineStep) -> Result<String, TargetError> {
        let undone = self.undo_fault(step).await?;
        Ok(match self.resume_rollouts(false).await? {
            Some(resumed) => format!("{undone}; {resumed}"),
            None => undone,
        })
    }

    async fn heal(&mut self, replicas: &BTreeMap<ServiceName, usize>) -> Result<String, TargetError> {
        self.proxy.heal();
        self.resume_all();
        self.start_broker().await?;
        let stalled: Vec<ServiceName> =
            std::mem::take(&mut *self.disk_stalls.lock().expect("disk stalls")).into_keys().collect();
        for s in stalled {
            self.set_disk_stalls(s, 0).await;
        }
        for (s, port) in std::mem::take(&mut self.killed) {
            self.start_on(s, port).await?;
        }
        let mut done = Vec::new();
        if let Some(resumed) = self.resume_rollouts(true).await? {
            done.push(resumed);
        }
        for (s, n) in replicas {
            self.scale(*s, *n).await?;
            done.push(format!("{s}={n}"));
        }
        // No fault is in force any more: every replica must get ready now.
        self.all_ready().await?;
        Ok(format!("healed; replicas {}", done.join(" ")))
    }
}

impl LocalTarget {
    async fn undo_fault(&mut self, step: &TimelineStep) -> Result<String, TargetError> {
        match step.action {
            Action::Kill => {
                let s = step_service(step)?;
                let back: Vec<u16> = self.killed.iter().filter(|(x, _)| *x == s).map(|(_, p)| *p).collect();
                self.killed.retain(|(x, _)| *x != s);
                for port in &back {
                    self.start_on(s, *port).await?;
                }
                Ok(format!("restarted killed {s} on ports {back:?}"))
            }
            Action::Pause => {
                self.resume_all();
                Ok("resumed".into())
            }
            Action::Partition => {
                self.proxy.clear_cuts();
                Ok("reconnected".into())
            }
            Action::Latency => {
                self.proxy.set_latency_ms(None);
                Ok("latency removed".into())
            }
            Action::Loss => {
                self.proxy.set_loss(0.0);
                Ok("loss removed".into())
            }
            Action::BrokerRestart => self.start_broker().await,
            Action::DiskStall => {
                let s = step_service(step)?;
                self.disk_stalls.lock().expect("disk stalls").remove(&s);
                let set = self.set_disk_stalls(s, 0).await;
                Ok(format!("{s}'s disk back to normal ({set})"))
            }
            _ => Ok("nothing to undo".into()),
        }
    }

    /// Set the disk stall of every running replica of `service`; says how many took it.
    async fn set_disk_stalls(&self, service: ServiceName, ms: u64) -> String {
        let (ports, mut failed) = (self.ports(service), Vec::new());
        for &port in &ports {
            if let Err(e) = set_disk_stall(port, ms, &self.token).await {
                failed.push(format!("port {port}: {e}"));
            }
        }
        match failed.is_empty() {
            true => format!("{} replicas", ports.len()),
            // A paused replica does not answer; one not ready yet takes it when it gets ready.
            false => {
                format!("{} of {} replicas; not set on {}", ports.len() - failed.len(), ports.len(), failed.join(", "))
            }
        }
    }

    /// A broker restart's first half: the run's own node killed hard, or the shared node's
    /// application stopped.
    async fn stop_broker(&mut self) -> Result<String, TargetError> {
        let done = if let Some(node) = &mut self.own_broker {
            // Killing waits until the node's processes are gone: off the runtime's threads.
            tokio::task::block_in_place(|| node.kill())?;
            format!("broker node {} killed", node.node_name())
        } else if let Some(shared) = &self.shared_broker {
            shared.stop_app().await?;
            format!("broker node {} stopped (stop_app)", shared.node_name())
        } else {
            return Err(TargetError::Unsupported { action: Action::BrokerRestart, target: "local" });
        };
        self.broker_down = true;
        Ok(done)
    }

    /// A broker restart's second half (and the heal's): the node started again on its data.
    async fn start_broker(&mut self) -> Result<String, TargetError> {
        if !self.broker_down {
            return Ok("the broker is up".into());
        }
        let done = if let Some(node) = &mut self.own_broker {
            node.start_again().await?;
            format!("broker node {} started again", node.node_name())
        } else if let Some(shared) = &self.shared_broker {
            shared.start_app().await?;
            format!("broker node {} started again (start_app)", shared.node_name())
        } else {
            "the broker is up".to_string()
        };
        self.broker_down = false;
        Ok(done)
    }

    fn resume_all(&mut self) {
        for pid in std::mem::take(&mut self.paused) {
            // SAFETY: kill(2) on a pid we spawned.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGCONT);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{amqp_host, amqp_url_via};
    use std::net::SocketAddr;

    #[test]
    fn amqp_url_keeps_credentials_and_vhost_with_the_proxy_address() {
        let via: SocketAddr = "127.0.0.1:40000".parse().expect("address");
        let url = "amqp://guest:p%40ss@rabbit.local:5673/%2f?heartbeat=10";
        assert_eq!(amqp_host(url).expect("host"), "rabbit.local:5673");
        assert_eq!(amqp_url_via(url, via), "amqp://guest:p%40ss@127.0.0.1:40000/%2f?heartbeat=10");
        assert_eq!(amqp_host("amqp://127.0.0.1").expect("default port"), "127.0.0.1:5672");
        assert_eq!(amqp_host("amqps://u:p@[::1]/vh").expect("ipv6, default port"), "[::1]:5671");
        assert_eq!(amqp_url_via("amqp://u@h", via), "amqp://u@127.0.0.1:40000");
        let e = amqp_host("amqp://secret@").expect_err("no host").to_string();
        assert!(!e.contains("secret"), "the error repeats the URL's credentials: {e}");
    }
}
