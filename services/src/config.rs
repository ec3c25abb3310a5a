//! Service configuration: every default in one place.
//!
//! | setting | flag / environment | default |
//! |---|---|---|
//! | broker URL | `--amqp-url` / `LASTMILE_AMQP_URL` | `amqp://guest:guest@127.0.0.1:5672/%2f` |
//! | name prefix of exchanges and queues | `--prefix` / `LASTMILE_PREFIX` | `lastmile` |
//! | user-service URL | `--user-url` / `LASTMILE_USER_URL` | `http://127.0.0.1:8081` |
//! | location-service URL | `--location-url` / `LASTMILE_LOCATION_URL` | `http://127.0.0.1:8082` |
//! | trip-service URL | `--trip-url` / `LASTMILE_TRIP_URL` | `http://127.0.0.1:8083` |
//! | journal folder | `--data-dir` / `LASTMILE_DATA_DIR` | `data` |
//! | ride deadline | `--ride-ttl-secs` / `LASTMILE_RIDE_TTL_SECS` | 300 |
//! | "near a station" radius | `--near-radius-m` / `LASTMILE_NEAR_RADIUS_M` | 300 |
//! | delete unused queues after | `--queue-expires-secs` / `LASTMILE_QUEUE_EXPIRES_SECS` | never |
//! | events waiting for the broker before 503 | `--outbox-capacity` / `LASTMILE_OUTBOX_CAPACITY` | 10 000 |
//! | journal records between compactions | `--compact-after` / `LASTMILE_COMPACT_AFTER` | 10 000 |
//! | deliveries a consumer takes ahead (prefetch) | `--prefetch` / `LASTMILE_PREFETCH` | 8 |
//! | service token of internal endpoints | `--service-token-file` / `LASTMILE_SERVICE_TOKEN_FILE`, or `LASTMILE_SERVICE_TOKEN` | none (open) |
//! | the harness's routes (`/export`, `/summary`, `/stats`) | `--harness-routes` / `LASTMILE_HARNESS_ROUTES` | off |
//! | original matching design | `--naive-matching` / `LASTMILE_NAIVE_MATCHING` | off |
//! | service time per event and request | `--service-time mean_ms,jitter_ms,concurrency` / `LASTMILE_SERVICE_TIME` | off (no added time) |

use crate::domain::Network;
use lastmile_platform::auth::ServiceToken;
use lastmile_platform::broker::Names;
use lastmile_platform::capacity::ServiceTime;
use lastmile_platform::coverage::Coverage;
use lastmile_platform::faults::Faults;
use lastmile_platform::http::CallPolicy;
pub use lastmile_platform::service::ServiceName;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Default bound of a service's outbox (see `Config::outbox_capacity`).
pub const DEFAULT_OUTBOX_CAPACITY: usize = 10_000;

/// Default number of journal records between compactions (see `Config::compact_after`).
pub const DEFAULT_COMPACT_AFTER: usize = 10_000;

/// Default prefetch of a service's consumer (see `Config::prefetch`).
pub const DEFAULT_PREFETCH: u16 = 8;

/// Default broker URL (a local RabbitMQ).
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Everything a service needs to know about its surroundings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The broker.
    pub amqp_url: String,
    /// Exchange and queue names.
    pub names: Names,
    /// Base URL of user-service.
    pub user_url: String,
    /// Base URL of location-service.
    pub location_url: String,
    /// Base URL of trip-service.
    pub trip_url: String,
    /// Folder of the journals of durable services.
    pub data_dir: PathBuf,
    /// How long a ride request may wait before it expires.
    pub ride_ttl: Duration,
    /// How close a driver must be to a station to count as near it.
    pub near_radius_m: f64,
    /// Timeouts, retries and breaker of service-to-service calls.
    pub call_policy: CallPolicy,
    /// The station network.
    pub network: Arc<Network>,
    /// Delete unused queues after this long (test topologies only; `None` in production).
    pub queue_expires: Option<Duration>,
    /// Events that may wait for the broker (during an outage) before the service stops taking
    /// new work: it answers 503 with `Retry-After` and reports not ready until they drain.
    pub outbox_capacity: usize,
    /// Journal records written since the last snapshot after which a durable service compacts
    /// its journal (a restart then replays at most the snapshot and this many records).
    pub compact_after: usize,
    /// Deliveries a consumer takes ahead of its acks, handled concurrently. It bounds a
    /// replica's throughput at about prefetch / (deliver-to-ack round trip): 8 keeps work
    /// spread over replicas; a single replica taking thousands of events a second needs more
    /// (BENCHMARKS.md).
    pub prefetch: u16,
    /// Serve the harness's own routes: trip-service's `/export` (the whole record, for the
    /// checkers) and `/summary`, matching-service's `/stats`. Off in a production deployment;
    /// every harness world turns it on (the simulation, the local target, the Kubernetes
    /// manifests used for chaos runs).
    pub harness_routes: bool,
    /// The shared secret internal endpoints require and peer calls present (`None`: internal
    /// endpoints are open, a development setup; the service warns at start).
    pub service_token: Option<ServiceToken>,
    /// The original LastMile's matching, for demonstrations only: waiting riders and seat
    /// counts in each matching replica's memory, matches committed without a compare-and-set.
    pub naive_matching: bool,
    /// Each consumed event and each request to the service's own routes waits this service
    /// time while holding one of the replica's permits, so load beyond a replica's capacity
    /// queues (capacity scenarios; `None`: no added time).
    pub service_time: Option<ServiceTime>,
    /// The service's crash points: armed only by a simulated fault plan (never configurable
    /// from flags or the environment). A real service serving the harness's routes has
    /// [`Faults::disk_stall_only`]: its disk can be stalled through `POST /disk-stall`.
    pub faults: Faults,
    /// Where the service counts the recovery paths it takes (shared by a whole simulated run).
    pub coverage: Coverage,
    /// Turn on the bug planted for the harness's own tests. Does nothing unless the crate is
    /// built with the `planted-bugs` feature, which only the simulation's tests enable.
    pub planted_bug: bool,
}

/// Whether this build carries the planted bug at all (see `Config::planted_bug`).
pub const PLANTED_BUG_BUILT: bool = cfg!(feature = "planted-bugs");

impl Default for Config {
    fn default() -> Self {
        let local = |s: ServiceName| format!("http://127.0.0.1:{}", s.default_port());
        Config {
            amqp_url: DEFAULT_AMQP_URL.to_string(),
            names: Names::default(),
            user_url: local(ServiceName::User),
            location_url: local(ServiceName::Location),
            trip_url: local(ServiceName::Trip),
            data_dir: PathBuf::from("data"),
            ride_ttl: Duration::from_secs(300),
            near_radius_m: 300.0,
            call_policy: CallPolicy::default(),
            network: Arc::new(Network::default_network()),
            queue_expires: None,
            outbox_capacity: DEFAULT_OUTBOX_CAPACITY,
            compact_after: DEFAULT_COMPACT_AFTER,
            prefetch: DEFAULT_PREFETCH,
            service_token: None,
            harness_routes: false,
            naive_matching: false,
            service_time: None,
            faults: Faults::default(),
            coverage: Coverage::default(),
            planted_bug: false,
        }
    }
}
