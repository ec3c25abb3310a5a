//! trip-service's restart over a journal of 1 000 000 records: from a fresh runtime (what a new
//! process builds first) through `lastmile_services::start` until it returns — the journal
//! replayed, the readiness flag set, the routes able to answer from the replayed state. The
//! broker is left out: its URL points nowhere, and a real `/ready` also waits for one round trip
//! to RabbitMQ declaring the topology.
//!
//! The data dir is built once per run from one deterministic history — drivers' shifts, then
//! trips of two riders each: both requests, the match, the pickup, the drop-off, every commit
//! written as the store writes it and followed by the broker's confirm of its event — in two
//! forms:
//! - `compacted`: as the service keeps it (it compacts every `compact_after` = 10 000 records):
//!   the snapshot its compaction writes (every change, 1 000 to a record, the confirms dropped),
//!   then 9 999 records in the log, the most a restart replays past a snapshot;
//! - `raw`: never compacted, all 1 000 000 records replayed one by one.
//!
//! The files are in the page cache after the first iteration: this is a warm restart, a cold one
//! also reads them from disk (their sizes are printed). The data folder is `LASTMILE_BENCH_DIR`
//! (default: the temp dir), as for the `journal` bench; `LASTMILE_BENCH_RECORDS` sets how many
//! records the history has (default 1 000 000; 1 000 shifts plus 10 records per trip, so it must
//! end in 1 000 + a multiple of 10).

use axum::body::Body;
use axum::http::{Request, StatusCode};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use lastmile_benches::{SeedRng, DESTINATIONS, STATIONS};
use lastmile_platform::clock::instant_now;
use lastmile_platform::shutdown;
use lastmile_platform::storage::Journal;
use lastmile_services::config::DEFAULT_COMPACT_AFTER;
use lastmile_services::domain::{Ride, RideStatus, Shift, Trip, TripStatus};
use lastmile_services::events::{Event, EventBody};
use lastmile_services::store::{commit_record, published_record, snapshot_records, State as _};
use lastmile_services::trip::{Change, TripRecord};
use lastmile_services::{start, Config, Service, ServiceName};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tower::ServiceExt;

/// Journal records trip-service wrote (commits and publish confirms), in both forms, unless
/// `LASTMILE_BENCH_RECORDS` says otherwise.
const RECORDS: usize = 1_000_000;
/// Records the `compacted` journal keeps in its log after the snapshot: one short of the next
/// compaction.
const TAIL: usize = DEFAULT_COMPACT_AFTER - 1;
/// Drivers with a shift; they take the trips in turn.
const DRIVERS: usize = 1_000;
/// Riders the requests come from.
const RIDERS: u64 = 20_000;
/// Riders per trip (a shared ride).
const RIDES_PER_TRIP: usize = 2;
/// Records buffered between two syncs while building.
const SYNC_EVERY: usize = 10_000;
/// trip-service's journal in its data dir.
const JOURNAL: &str = "trip-service.journal";
/// A broker address nothing listens on: the restart is measured without RabbitMQ.
const NO_BROKER: &str = "amqp://guest:guest@127.0.0.1:9/%2f";
const SEED: u64 = 0x5eed_0013;

/// One commit as trip-service makes it: a change and the event it causes, if any.
struct Commit {
    change: Change,
    event: Option<Event>,
}

/// The deterministic city the history comes from.
struct City {
    rng: SeedRng,
    /// The history's clock (ms since epoch), a few ms per commit.
    now_ms: u64,
    /// Every driver's shift, by index.
    shifts: Vec<(String, Shift)>,
    /// Rides requested so far (the next ride's number and `seq`).
    rides: u64,
    /// Trips committed so far (the next trip's driver is `trips % DRIVERS`).
    trips: usize,
    /// The newest ride and trip, which the check after a restart looks up.
    last_ride_id: String,
    last_trip_id: String,
}

impl City {
    fn new(seed: u64) -> City {
        let mut rng = SeedRng::new(seed);
        let shifts = (0..DRIVERS)
            .map(|d| {
                let mut route: Vec<String> = Vec::new();
                while route.len() < 5 {
                    let station = rng.pick(&STATIONS).to_string();
                    if !route.contains(&station) {
                        route.push(station);
                    }
                }
                let destination = rng.pick(&DESTINATIONS).to_string();
                (format!("driver-{d}"), Shift { route, destination, seats: 4 })
            })
            .collect();
        City {
            rng,
            now_ms: 1_780_000_000_000,
            shifts,
            rides: 0,
            trips: 0,
            last_ride_id: String::new(),
            last_trip_id: String::new(),
        }
    }

    fn event(&mut self, body: EventBody) -> Option<Event> {
        let event_id = format!("{:016x}{:016x}", self.rng.next_u64(), self.rng.next_u64());
        Some(Event { event_id, occurred_at_ms: self.now_ms, body })
    }

    /// Every driver starts its shift (no event).
    fn shifts(&self) -> Vec<Commit> {
        let shift_set = |(driver_id, shift): &(String, Shift)| Change::ShiftSet {
            driver_id: driver_id.clone(),
            shift: shift.clone(),
        };
        self.shifts.iter().map(|s| Commit { change: shift_set(s), event: None }).collect()
    }

    /// One trip's life: its riders' requests, the match, the pickup and the drop-off.
    fn trip(&mut self) -> Vec<Commit> {
        let (driver_id, shift) = self.shifts[self.trips % DRIVERS].clone();
        self.trips += 1;
        let station_id = shift.route[self.rng.index(shift.route.len() - 1)].clone();
        let mut commits = Vec::new();
        let mut rides = Vec::new();
        for _ in 0..RIDES_PER_TRIP {
            self.now_ms += self.rng.below(5);
            let ride = Ride {
                ride_id: format!("ride-{}", self.rides),
                rider_id: format!("rider-{}", self.rng.below(RIDERS)),
                station_id: station_id.clone(),
                destination: shift.destination.clone(),
                seq: self.rides,
                requested_at_ms: self.now_ms,
                max_wait_ms: None,
                status: RideStatus::Waiting,
            };
            self.rides += 1;
            let event = self.event(EventBody::RideRequested(ride.clone()));
            commits.push(Commit { change: Change::RideAccepted { ride: ride.clone() }, event });
            rides.push(ride);
        }
        self.now_ms += self.rng.below(5);
        let proposal_id = format!("{:016x}{:016x}", self.rng.next_u64(), self.rng.next_u64());
        let mut trip = Trip {
            trip_id: format!("trip-{:016x}{:016x}", self.rng.next_u64(), self.rng.next_u64()),
            proposal_id,
            driver_id,
            station_id,
            ride_ids: rides.iter().map(|r| r.ride_id.clone()).collect(),
            rider_ids: rides.iter().map(|r| r.rider_id.clone()).collect(),
            status: TripStatus::Scheduled,
            created_at_ms: self.now_ms,
            closed_at_ms: None,
        };
        let event = self.event(EventBody::MatchFound(trip.clone()));
        commits.push(Commit { change: Change::TripCommitted { trip: trip.clone() }, event });
        for status in [TripStatus::PickedUp, TripStatus::Completed] {
            self.now_ms += 1 + self.rng.below(5);
            trip.status = status;
            trip.closed_at_ms = (status == TripStatus::Completed).then_some(self.now_ms);
            let event = self.event(EventBody::TripUpdated(trip.clone()));
            let change = Change::TripMoved { trip_id: trip.trip_id.clone(), status, at_ms: self.now_ms };
            commits.push(Commit { change, event });
        }
        self.last_ride_id = rides.last().expect("a trip has riders").ride_id.clone();
        self.last_trip_id = trip.trip_id;
        commits
    }
}

/// Writes the history into both journals with the store's own record format and compaction.
struct Writer {
    raw: Journal,
    compacted: Journal,
    /// The record the history builds, for the compaction's snapshot.
    state: TripRecord,
    /// Commits (one change each) and records written to each journal.
    commits: usize,
    written: usize,
    /// After which record the `compacted` journal is compacted.
    compacted_at: usize,
    /// Records in the compacted journal's snapshot.
    snapshot_records: usize,
}

impl Writer {
    /// Journal `commit` as the store does: the commit, then the broker's confirm of its event.
    async fn commit(&mut self, Commit { change, event }: Commit) -> std::io::Result<()> {
        self.state.apply(&change);
        self.commits += 1;
        self.write(&commit_record(vec![change], event.iter().cloned().collect()), event.as_ref()).await?;
        if let Some(event) = event {
            self.write(&published_record(event.event_id), None).await?;
        }
        Ok(())
    }

    /// `in_flight`: this record's event, still unconfirmed (a compaction right now keeps it).
    async fn write(&mut self, record: &[u8], in_flight: Option<&Event>) -> std::io::Result<()> {
        self.raw.write(record)?;
        self.compacted.write(record)?;
        self.written += 1;
        if self.written == self.compacted_at {
            let snapshot = snapshot_records(&self.state, in_flight.into_iter().cloned().collect());
            self.snapshot_records = snapshot.len();
            self.compacted.compact(&snapshot).await?;
        }
        if self.written.is_multiple_of(SYNC_EVERY) {
            self.raw.sync().await?;
            self.compacted.sync().await?;
        }
        Ok(())
    }
}

/// What was built, for the checks and the printout.
struct Built {
    rides: u64,
    trips: usize,
    changes: usize,
    snapshot_records: usize,
    last_ride_id: String,
    last_trip_id: String,
}

async fn build(base: &Path, records: usize) -> std::io::Result<Built> {
    let (raw, _) = Journal::open(base.join("raw").join(JOURNAL)).await?;
    let (compacted, _) = Journal::open(base.join("compacted").join(JOURNAL)).await?;
    let compacted_at = records.checked_sub(TAIL).filter(|at| *at > DRIVERS).expect("more records than a log's tail");
    let state = TripRecord::default();
    let mut writer = Writer { raw, compacted, state, commits: 0, written: 0, compacted_at, snapshot_records: 0 };
    let mut city = City::new(SEED);
    for commit in city.shifts() {
        writer.commit(commit).await?;
    }
    while writer.written < records {
        for commit in city.trip() {
            writer.commit(commit).await?;
        }
    }
    assert_eq!(writer.written, records, "LASTMILE_BENCH_RECORDS must be 1 000 + a multiple of 10 (whole trips)");
    writer.raw.sync().await?;
    writer.compacted.sync().await?;
    Ok(Built {
        rides: city.rides,
        trips: city.trips,
        changes: writer.commits,
        snapshot_records: writer.snapshot_records,
        last_ride_id: city.last_ride_id,
        last_trip_id: city.last_trip_id,
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime")
}

fn config(data_dir: PathBuf) -> Config {
    Config { data_dir, amqp_url: NO_BROKER.into(), ..Config::default() }
}

/// `GET path` on a started service's routes; the body, once it answered 200.
async fn get(router: &axum::Router, path: &str) -> Vec<u8> {
    let request = Request::get(path).body(Body::empty()).expect("a request");
    let response = router.clone().oneshot(request).await.expect("the router answers");
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("a body").to_vec()
}

/// Restart once and require the whole history replayed: the first ride (in the snapshot, for
/// `compacted`) and the newest ride and trip (in its log) completed.
fn check(dir: &Path, built: &Built) {
    let rt = runtime();
    let (trigger, signal) = shutdown::channel();
    let service =
        rt.block_on(start(ServiceName::Trip, &config(dir.to_path_buf()), signal)).expect("trip-service starts");
    rt.block_on(async {
        let ride = |id: String| {
            let router = service.router.clone();
            async move { serde_json::from_slice::<Ride>(&get(&router, &format!("/rides/{id}")).await).expect("a ride") }
        };
        let first = ride("ride-0".into()).await;
        assert!(matches!(first.status, RideStatus::Completed { .. }), "{}: {first:?}", dir.display());
        let last = ride(built.last_ride_id.clone()).await;
        assert_eq!(last.status, RideStatus::Completed { trip_id: built.last_trip_id.clone() }, "{}", dir.display());
        let trip: Trip = serde_json::from_slice(&get(&service.router, &format!("/trips/{}", built.last_trip_id)).await)
            .expect("a trip");
        assert_eq!(trip.status, TripStatus::Completed, "{}", dir.display());
    });
    stop(rt, trigger, service);
}

/// Shut `service` down as `lastmile_services::run` does — its tasks finished, the broker client
/// closed — so nothing of it outlives `rt` and the journal's lock is free for the next restart.
fn stop(rt: tokio::runtime::Runtime, trigger: shutdown::ShutdownTrigger, service: Service) {
    trigger.trigger();
    rt.block_on(async {
        for task in service.tasks {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("a task of trip-service ends within 10 s of shutdown")
                .expect("a task of trip-service ends cleanly");
        }
        service.broker.disconnect().await;
    });
    drop(service.router);
}

fn file_mb(path: &Path) -> f64 {
    std::fs::metadata(path).map_or(0.0, |m| m.len() as f64 / 1e6)
}

fn restart(c: &mut Criterion) {
    let base = std::env::var_os("LASTMILE_BENCH_DIR")
        .map_or_else(std::env::temp_dir, Into::into)
        .join(format!("lastmile-bench-restart-{}", std::process::id()));
    let records = std::env::var("LASTMILE_BENCH_RECORDS")
        .map_or(RECORDS, |n| n.parse().expect("LASTMILE_BENCH_RECORDS is a number of records"));
    let building = instant_now();
    let built = runtime().block_on(build(&base, records)).expect("the data dir is built");
    let (raw, compacted) = (base.join("raw"), base.join("compacted"));
    let snapshot = compacted.join(format!("{JOURNAL}.snap-1"));
    eprintln!(
        "trip_restart: {records} records ({} rides, {} trips, {} changes) built in {:.1} s; \
         raw journal {:.0} MB; compacted: snapshot {:.0} MB in {} records + log {:.1} MB, {} records",
        built.rides,
        built.trips,
        built.changes,
        building.elapsed().as_secs_f64(),
        file_mb(&raw.join(JOURNAL)),
        file_mb(&snapshot),
        built.snapshot_records,
        file_mb(&compacted.join(JOURNAL)),
        TAIL,
    );
    assert!(built.snapshot_records > 0 && snapshot.exists(), "the compacted journal has no snapshot");
    check(&compacted, &built);
    check(&raw, &built);

    let mut group = c.benchmark_group("trip_restart");
    // An iteration replays the whole journal: about a second or more.
    group.sample_size(10);
    for (form, dir) in [("compacted", &compacted), ("raw", &raw)] {
        let config = config(dir.clone());
        group.bench_function(BenchmarkId::new(form, records), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (trigger, signal) = shutdown::channel();
                    let started = instant_now();
                    let rt = runtime();
                    let service = rt.block_on(start(ServiceName::Trip, &config, signal)).expect("trip-service starts");
                    total += started.elapsed();
                    stop(rt, trigger, service);
                }
                total
            })
        });
    }
    group.finish();
    let _ = std::fs::remove_dir_all(base);
}

criterion_group!(benches, restart);
criterion_main!(benches);
