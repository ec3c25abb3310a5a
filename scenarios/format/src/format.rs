//! The scenario file format (TOML). An annotated example is in docs/simulation.md; every field is
//! documented here with its default.

pub use lastmile_platform::capacity::ServiceTime;
pub use lastmile_platform::faults::CrashPoint;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use toml::Spanned;

/// A whole scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name and timing.
    pub scenario: Header,
    /// Replicas per service at start (`matching-service = 2`); services left out get 1.
    #[serde(default)]
    pub deployment: BTreeMap<String, Spanned<usize>>,
    /// What clients do.
    pub workload: Workload,
    /// The timeline of actions (the method).
    #[serde(default, rename = "step")]
    pub steps: Vec<Step>,
    /// Named windows of the run that expectations refer to.
    #[serde(default, rename = "phase")]
    pub phases: Vec<Phase>,
    /// What must hold per phase (the steady-state hypothesis).
    #[serde(default, rename = "expect")]
    pub expectations: Vec<Expectation>,
    /// Active HTTP probes of services, recorded in the history.
    #[serde(default, rename = "probe")]
    pub probes: Vec<Probe>,
    /// Seeded random faults added on top of the timeline.
    #[serde(default)]
    pub random_faults: RandomFaults,
    /// Switches for demonstrations.
    #[serde(default)]
    pub options: Options,
    /// Per-request service time per service (`matching-service = { mean_ms = 400, jitter_ms
    /// = 100, concurrency = 1 }`): each event a replica consumes and each request to its own
    /// routes waits that long holding one of `concurrency` permits, so load beyond a replica's
    /// capacity queues and scaling out shows. Services left out take no added time (the
    /// default: the simulation's CPU is free).
    #[serde(default)]
    pub service_time: BTreeMap<String, Spanned<ServiceTime>>,
}

/// `[scenario]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Short name, used in reports and replay commands.
    pub name: String,
    /// What the scenario shows.
    #[serde(default)]
    pub description: String,
    /// How long the workload and the timeline run, in seconds.
    pub duration_s: Spanned<f64>,
    /// After the timeline every fault is healed; the system then has this long to converge
    /// (every servable ride matched, every notification delivered). Default 120.
    #[serde(default = "default_settle_s")]
    pub settle_s: f64,
}

fn default_settle_s() -> f64 {
    120.0
}

/// Which workload runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadKind {
    /// Drivers loop routes along the metro lines; riders arrive at a steady rate.
    Load,
    /// The original mixed demo: 3 drivers, 7 riders on 3 stations (fixed script).
    Demo,
    /// The original multi-station demo: one driver through ST101..ST108 picking riders up at
    /// four stations while its seats run out.
    MultiStation,
}

/// `[workload]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// The workload's kind.
    pub kind: WorkloadKind,
    /// Drivers (load only). Default 6.
    #[serde(default = "default_drivers")]
    pub drivers: u32,
    /// Seats per driver (load only). Default 3.
    #[serde(default = "default_seats")]
    pub seats: u32,
    /// Ride requests per minute (load only). Default 12.
    #[serde(default = "default_rate")]
    pub riders_per_minute: f64,
    /// Share of riders asking for a destination no driver serves; they must expire. Default 0.05.
    #[serde(default = "default_unserved")]
    pub unserved_share: f64,
    /// How long a ride may wait before it expires, in seconds. Default 600.
    #[serde(default = "default_ttl")]
    pub ride_ttl_s: f64,
    /// Seconds a driver stays at a station. Default 6.
    #[serde(default = "default_dwell")]
    pub dwell_s: f64,
    /// Seconds between stations. Default 14.
    #[serde(default = "default_travel")]
    pub travel_s: f64,
    /// Seconds between a rider's status polls. Default 3.
    #[serde(default = "default_poll")]
    pub poll_s: f64,
    /// Hostile actions per minute during the run (load only). Default 0 (none). Each is a
    /// request with a hostile id to a random route, or a poison or hostile-but-decodable
    /// message published to the broker; the checkers expect 4xx JSON answers, every such
    /// message dead-lettered, and valid work unaffected.
    #[serde(default)]
    pub hostile_per_minute: f64,
}

fn default_drivers() -> u32 {
    6
}
fn default_seats() -> u32 {
    3
}
fn default_rate() -> f64 {
    12.0
}
fn default_unserved() -> f64 {
    0.05
}
fn default_ttl() -> f64 {
    600.0
}
fn default_dwell() -> f64 {
    6.0
}
fn default_travel() -> f64 {
    14.0
}
fn default_poll() -> f64 {
    3.0
}

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Set a service's replica count (`replicas`).
    Scale,
    /// Kill one replica abruptly (`replica`, default the newest); it comes back after `for_s`
    /// if given (a pod restart), else stays down until the heal.
    Kill,
    /// Restart every replica of a service (graceful stop, then start).
    Restart,
    /// A rolling update: replace every replica of a service one at a time — a new replica
    /// started and ready first, then an old one stopped gracefully — so the service never has
    /// fewer ready replicas than before.
    Rollout,
    /// Freeze a service's replicas (or only `replica`) for `for_s`: a stop-the-world pause.
    Pause,
    /// Cut a service's replicas (or only `replica`) off the network for `for_s` — or, with
    /// `peer`, only their links to the peer (another service, or `broker`).
    Partition,
    /// Add network latency (`latency_ms`) to every link for `for_s`.
    Latency,
    /// Drop a share of packets (`loss`) for `for_s` (the simulation retransmits: it delays).
    Loss,
    /// Kill the broker and start it again after `for_s` (default 5).
    BrokerRestart,
    /// Arm a crash point (`point`) of a service for `for_s` (default: until the heal): the
    /// next replica to pass it dies there, with its work half done, and is started again 2 s
    /// later. Simulation only: real targets skip it.
    Crash,
    /// Stall a durable service's disk for `for_s`: every journal sync of its replicas takes
    /// `latency_ms` more (a cloud volume's hiccup), so requests wait on syncs and clients give
    /// up on them half way. Simulation only: real targets skip it.
    DiskStall,
    /// Publish a poison message to a consuming service's queue: every delivery of it kills the
    /// replica that receives it (a handler that crashes on one input), which is started again
    /// 2 s later. The broker's delivery limit must dead-letter it, and no other message may be
    /// dead-lettered or lost with it. It stays poison to the end of the run (no `for_s`).
    /// Simulation only: real targets skip it.
    Poison,
}

impl Action {
    /// Whether the step acts on one service (`target`), rather than on the whole network or
    /// the broker.
    pub fn targets_a_service(self) -> bool {
        matches!(
            self,
            Action::Scale
                | Action::Kill
                | Action::Restart
                | Action::Rollout
                | Action::Pause
                | Action::Partition
                | Action::Crash
                | Action::DiskStall
                | Action::Poison
        )
    }
}

/// `[[step]]`: one action on the timeline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Seconds from the start.
    pub at_s: Spanned<f64>,
    /// What to do.
    pub action: Action,
    /// The service it targets (not for latency, loss, broker-restart).
    #[serde(default)]
    pub target: Option<Spanned<String>>,
    /// For `scale`.
    #[serde(default)]
    pub replicas: Option<usize>,
    /// For `kill`, `pause`, `partition`: which replica (0 = oldest, taken modulo the replicas
    /// running then). Default: the newest for `kill`, every replica for `pause`/`partition`.
    #[serde(default)]
    pub replica: Option<usize>,
    /// For `partition`: cut only the links to this service (or `broker`).
    #[serde(default)]
    pub peer: Option<String>,
    /// How long the fault lasts before it is undone.
    #[serde(default)]
    pub for_s: Option<f64>,
    /// For `latency`: extra milliseconds per message; for `disk-stall`: per journal sync.
    #[serde(default)]
    pub latency_ms: Option<u64>,
    /// For `loss`: share of packets dropped.
    #[serde(default)]
    pub loss: Option<f64>,
    /// For `crash`: where the replica dies (`before-ack`, `before-reply`,
    /// `before-confirm-recorded`, `mid-sync`, `mid-compaction`, `after-snapshot`).
    #[serde(default)]
    pub point: Option<CrashPoint>,
    /// A seed's random fault written out (`--emit-scenario`, `shrink`): judged as one, so the
    /// file's run is judged exactly as the seed's was.
    #[serde(default)]
    pub random: bool,
}

/// `[[phase]]`: a named window `[from_s, to_s)` of the run.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// Name used by expectations.
    pub name: String,
    /// Start, seconds from the start of the run.
    pub from_s: f64,
    /// End; `settle` as a name or a time past `duration_s` reaches into the liveness phase.
    pub to_s: f64,
}

/// What an expectation measures over a phase (from the history).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Share of ride requests sent in the phase that were accepted.
    RideRequestsAccepted,
    /// Share of driver location updates accepted.
    LocationUpdatesAccepted,
    /// Share of trip operations (pickup, complete) accepted.
    TripUpdatesAccepted,
    /// Rides first seen matched by their riders during the phase.
    Matches,
    /// Seconds from the phase start to the first match seen in it.
    FirstMatchAfterS,
    /// 95th percentile of request-to-match seconds for rides matched in the phase.
    MatchLatencyP95S,
    /// The smallest share of matching work (events handled) done by one matching replica in the
    /// phase, among the replicas that ran through it.
    ReplicaShareMin,
    /// Matching replicas that did work in the phase.
    ActiveReplicas,
    /// Share of probe calls that succeeded in the phase.
    ProbeSuccess,
    /// Rides first seen matched per minute of the phase (of its judged time): a rate, so
    /// phases of different lengths compare (`ratio_of`).
    MatchesPerMinute,
    /// How matching-service's backlog (ready messages in its queue, sampled every 5 s) changed
    /// over the phase: the last sample minus the first. Negative: the backlog fell.
    BacklogChange,
}

impl Metric {
    /// Whether the metric is never negative, so one phase's value over another's means
    /// something (`ratio_of`).
    pub fn has_ratio(self) -> bool {
        self != Metric::BacklogChange
    }
}

/// `[[expect]]`: a bound on a metric over a phase.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// The phase.
    pub phase: Spanned<String>,
    /// What is measured.
    pub metric: Metric,
    /// Lower bound (inclusive).
    #[serde(default)]
    pub min: Option<f64>,
    /// Upper bound (inclusive).
    #[serde(default)]
    pub max: Option<f64>,
    /// For `probe_success`: which probe.
    #[serde(default)]
    pub probe: Option<String>,
    /// Judge the metric as a multiple of its value over this other phase: `min = 2.0` with
    /// `ratio_of = "one"` says at least twice phase `one`'s value.
    #[serde(default)]
    pub ratio_of: Option<Spanned<String>>,
}

/// `[[probe]]`: call a service's endpoint every `every_s`, recording the outcome.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// Name used by expectations.
    pub name: String,
    /// The service.
    pub target: String,
    /// The path (`/health`, `/ready`, ...).
    pub path: String,
    /// Interval in seconds. Default 2.
    #[serde(default = "default_every")]
    pub every_s: f64,
}

fn default_every() -> f64 {
    2.0
}

/// `[random_faults]`: TigerBeetle-style extra faults per seed.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RandomFaults {
    /// Whether a seed adds faults (`--no-random-faults` turns it off).
    #[serde(default)]
    pub enabled: bool,
    /// At most this many faults per run. Default 3.
    #[serde(default = "default_max_faults")]
    pub max: u32,
    /// Which actions may be drawn (kill, restart, crash, partition, pause, latency, loss,
    /// broker-restart).
    #[serde(default)]
    pub actions: Vec<Action>,
    /// Which services kills, restarts, crashes, partitions and pauses may hit.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Faults start within `[from_s, to_s]`.
    #[serde(default)]
    pub from_s: f64,
    /// See `from_s`; default: the scenario's duration.
    #[serde(default)]
    pub to_s: Option<f64>,
    /// Longest fault, seconds. Default 20.
    #[serde(default = "default_fault_len")]
    pub max_for_s: f64,
    /// Replicas a service starts with, drawn per seed from `[lo, hi]`
    /// (`deployment = { matching-service = [1, 5] }`): races need more than one replica.
    #[serde(default)]
    pub deployment: BTreeMap<String, [usize; 2]>,
    /// With `broker-restart` among the actions, half the seeds restart the broker while some
    /// service is scaled to 0 by the scenario — while its queue holds messages. Default true.
    #[serde(default = "default_true")]
    pub broker_restart_while_buffered: bool,
}

fn default_true() -> bool {
    true
}

impl Default for RandomFaults {
    fn default() -> Self {
        RandomFaults {
            enabled: false,
            max: default_max_faults(),
            actions: Vec::new(),
            targets: Vec::new(),
            from_s: 0.0,
            to_s: None,
            max_for_s: default_fault_len(),
            deployment: BTreeMap::new(),
            broker_restart_while_buffered: true,
        }
    }
}

fn default_max_faults() -> u32 {
    3
}
fn default_fault_len() -> f64 {
    20.0
}

/// `[options]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Run matching as the original LastMile did: waiting riders and seat counts in each
    /// replica's memory, matches committed without a compare-and-set. The checkers must catch
    /// it under load with more than one replica.
    #[serde(default)]
    pub naive_matching: bool,
}

impl Scenario {
    /// Seconds the timeline runs.
    pub fn duration_s(&self) -> f64 {
        *self.scenario.duration_s.get_ref()
    }

    /// The service time of `service`, if the scenario gives it one.
    pub fn service_time(&self, service: &str) -> Option<ServiceTime> {
        self.service_time.get(service).map(|t| *t.get_ref())
    }

    /// Replicas of `service` at start.
    pub fn initial_replicas(&self, service: &str) -> usize {
        self.deployment.get(service).map_or(1, |r| *r.get_ref())
    }

    /// Replicas of `service` once the timeline has run (what the heal restores).
    pub fn final_replicas(&self, service: &str) -> usize {
        let mut n = self.initial_replicas(service);
        let mut steps: Vec<&Step> = self.steps.iter().collect();
        steps.sort_by(|a, b| a.at_s.get_ref().total_cmp(b.at_s.get_ref()));
        for step in steps {
            if step.action == Action::Scale && step.target.as_ref().map(|t| t.get_ref().as_str()) == Some(service) {
                n = step.replicas.unwrap_or(n);
            }
        }
        n
    }
}

impl Scenario {
    /// The same scenario with every duration multiplied by `factor` and every rate divided by
    /// it, so a real-world run of a long scenario takes `factor` of its wall time. Bounds on
    /// seconds (`first_match_after_s`, `match_latency_p95_s`) scale too; counts and shares do
    /// not.
    pub fn time_scaled(&self, factor: f64) -> Scenario {
        let mut s = self.clone();
        *s.scenario.duration_s.get_mut() *= factor;
        s.scenario.settle_s *= factor;
        let w = &mut s.workload;
        w.riders_per_minute /= factor;
        for v in [&mut w.ride_ttl_s, &mut w.dwell_s, &mut w.travel_s, &mut w.poll_s] {
            *v *= factor;
        }
        for step in &mut s.steps {
            *step.at_s.get_mut() *= factor;
            step.for_s = step.for_s.map(|f| f * factor);
        }
        for p in &mut s.phases {
            p.from_s *= factor;
            p.to_s *= factor;
        }
        for e in &mut s.expectations {
            let by = match e.metric {
                _ if e.ratio_of.is_some() => 1.0,
                Metric::FirstMatchAfterS | Metric::MatchLatencyP95S => factor,
                Metric::MatchesPerMinute => 1.0 / factor,
                _ => 1.0,
            };
            e.min = e.min.map(|m| m * by);
            e.max = e.max.map(|m| m * by);
        }
        // The same work in `factor` of the time: each unit takes `factor` as long, so the same
        // load saturates a replica just as much.
        for t in s.service_time.values_mut() {
            let t = t.get_mut();
            let scaled = |ms: u64| (ms as f64 * factor).round() as u64;
            t.mean_ms = scaled(t.mean_ms).max(1);
            t.jitter_ms = scaled(t.jitter_ms).min(t.mean_ms);
        }
        for p in &mut s.probes {
            p.every_s *= factor;
        }
        let rf = &mut s.random_faults;
        rf.from_s *= factor;
        rf.to_s = rf.to_s.map(|t| t * factor);
        rf.max_for_s *= factor;
        s
    }
}
