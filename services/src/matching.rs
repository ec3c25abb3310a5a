//! matching-service: stateless matching workers, safe at any replica count.
//!
//! A worker keeps nothing between messages. On `driver.near_station` (the driver is still there),
//! on `ride.requested` (drivers near that station now) and on a trip that ended (its driver's
//! seats are free again), it reads the candidates the matching rule picks from trip-service and
//! proposes them. trip-service commits or refuses the proposal (compare-and-set); a refused
//! proposal is re-read and retried a few times, so competing replicas never double-match and
//! never lose a match.

use crate::api::Context;
use crate::config::ServiceName;
use crate::domain::{Shift, Trip};
use crate::events::{Event, EventBody};
use crate::location::{DriversNear, Position};
use crate::trip::DriverView;
use crate::trip::{Candidates, Proposal};
use axum::extract::State as AxState;
use axum::routing::get;
use axum::{Json, Router};
use lastmile_engine::{DriverOffer, MatchingEngine, WaitingRide};
use lastmile_platform::broker::worker::Outcome;
use lastmile_platform::clock::new_id;
use lastmile_platform::fresh::FreshReads;
use lastmile_platform::http::{path_segment, CallError, HttpClient};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Refused proposals re-read and retried per driver event before giving up (the next event for
/// that station or driver tries again).
const PROPOSAL_ATTEMPTS: u32 = 3;

/// `GET /stats`: this replica's share of the work.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchingStats {
    /// Events processed to completion.
    pub events_handled: u64,
    /// Proposals sent to trip-service.
    pub proposals: u64,
    /// Proposals committed as trips.
    pub matches: u64,
    /// Proposals refused as stale.
    pub conflicts: u64,
}

#[derive(Default)]
struct Counters {
    events_handled: AtomicU64,
    proposals: AtomicU64,
    matches: AtomicU64,
    conflicts: AtomicU64,
}

/// One matching worker.
pub struct Matcher {
    trips: HttpClient,
    locations: HttpClient,
    /// Drivers near a station, read once for the rides that asked while another read was under
    /// way (never an answer read before a ride's event arrived: `lastmile_platform::fresh`).
    drivers_near: FreshReads<Result<DriversNear, CallError>>,
    counters: Counters,
    /// How this replica matches, chosen once at start.
    strategy: Strategy,
    /// The harness's planted bug is on (test builds only).
    #[cfg_attr(not(feature = "planted-bugs"), allow(dead_code))]
    planted_bug: bool,
}

/// How a replica matches.
enum Strategy {
    /// The real design: stateless; trip-service's candidates, proposals under a compare-and-set.
    Engine,
    /// The original design, for demonstrations only: this replica's private memory, commits
    /// without a compare-and-set (what the checkers catch).
    Naive(tokio::sync::Mutex<NaiveMemory>),
}

/// What the original LastMile kept in each matching replica: the waiting riders it happened to
/// receive and its own idea of every driver's free seats. With more than one replica, a rider
/// and the driver that could take it land on different replicas (a lost match), and each replica
/// hands out the same seats (a driver over capacity).
#[derive(Default)]
struct NaiveMemory {
    waiting: MatchingEngine,
    shifts: BTreeMap<String, Shift>,
    free_seats: BTreeMap<String, i64>,
}

pub(crate) async fn start(ctx: &mut Context) -> anyhow::Result<(Router, Vec<tokio::task::JoinHandle<()>>)> {
    let matcher = Arc::new(Matcher {
        trips: ctx.client(ServiceName::Trip),
        locations: ctx.client(ServiceName::Location),
        drivers_near: FreshReads::default(),
        counters: Counters::default(),
        strategy: if ctx.config.naive_matching {
            tracing::warn!("matching with the original design (demonstrations only): no compare-and-set");
            Strategy::Naive(tokio::sync::Mutex::new(NaiveMemory::default()))
        } else {
            Strategy::Engine
        },
        planted_bug: ctx.config.planted_bug,
    });
    let worker = {
        let m = matcher.clone();
        ctx.spawn_consumer(ServiceName::Matching, move |event| {
            let m = m.clone();
            async move {
                let outcome = m.handle(&event).await;
                if outcome == Outcome::Done {
                    m.counters.events_handled.fetch_add(1, Ordering::Relaxed);
                }
                outcome
            }
        })
    };
    // The harness's: where a harness reads it.
    let router = if ctx.config.harness_routes {
        ctx.internal(Router::new().route("/stats", get(stats))).with_state(matcher)
    } else {
        Router::new()
    };
    Ok((router, vec![worker]))
}

async fn stats(AxState(m): AxState<Arc<Matcher>>) -> Json<MatchingStats> {
    let c = &m.counters;
    Json(MatchingStats {
        events_handled: c.events_handled.load(Ordering::Relaxed),
        proposals: c.proposals.load(Ordering::Relaxed),
        matches: c.matches.load(Ordering::Relaxed),
        conflicts: c.conflicts.load(Ordering::Relaxed),
    })
}

/// What a failed peer call makes of the event: a refusal (a 4xx, a request that cannot be built)
/// will not change on retry, so the event is dead-lettered at once (with a warning naming it);
/// an outage, a timeout or a 5xx is retried with backoff.
fn retry(e: CallError) -> Outcome {
    if e.is_permanent() {
        Outcome::Poison(format!("a peer refused it: {e}"))
    } else {
        Outcome::Retry(e.to_string())
    }
}

impl Matcher {
    /// Process one event with the replica's strategy; `Retry` when a peer is unavailable.
    pub async fn handle(&self, event: &Event) -> Outcome {
        match &self.strategy {
            Strategy::Engine => self.handle_engine(event).await,
            Strategy::Naive(memory) => self.handle_naive(&mut *memory.lock().await, event).await,
        }
    }

    /// The real design: read what trip-service's rule picks, propose it, let trip-service decide.
    async fn handle_engine(&self, event: &Event) -> Outcome {
        match &event.body {
            EventBody::DriverNearStation { driver_id, station_id } => {
                #[cfg(feature = "planted-bugs")]
                if self.planted_bug && event.event_id.ends_with('0') {
                    // The planted bug: acked, never processed.
                    return Outcome::Done;
                }
                let position = match self
                    .locations
                    .get::<Position>(&format!("/drivers/{}/position", path_segment(driver_id)))
                    .await
                {
                    Ok(p) => p,
                    Err(e) if e.status() == Some(404) => return Outcome::Done,
                    Err(e) => return retry(e),
                };
                if position.near_station.as_deref() != Some(station_id.as_str()) {
                    // A stale arrival (the driver moved on while this message waited).
                    return Outcome::Done;
                }
                self.try_match(driver_id, station_id).await.map_or_else(retry, |_| Outcome::Done)
            }
            EventBody::RideRequested(ride) => {
                let path = format!("/stations/{}/drivers", path_segment(&ride.station_id));
                let near =
                    match self.drivers_near.read(&ride.station_id, || self.locations.get::<DriversNear>(&path)).await {
                        Ok(n) => n,
                        Err(e) => return retry(e),
                    };
                for driver_id in &near.driver_ids {
                    if let Err(e) = self.try_match(driver_id, &ride.station_id).await {
                        return retry(e);
                    }
                }
                Outcome::Done
            }
            EventBody::TripUpdated(Trip { driver_id, status, .. }) if !status.is_active() => {
                let position = match self
                    .locations
                    .get::<Position>(&format!("/drivers/{}/position", path_segment(driver_id)))
                    .await
                {
                    Ok(p) => p,
                    Err(e) if e.status() == Some(404) => return Outcome::Done,
                    Err(e) => return retry(e),
                };
                match position.near_station {
                    Some(station) => self.try_match(driver_id, &station).await.map_or_else(retry, |_| Outcome::Done),
                    None => Outcome::Done,
                }
            }
            _ => Outcome::Done,
        }
    }

    /// Propose the rule's pick for `driver_id` at `station_id` until one commits or nothing is
    /// left to propose. Returns the riders matched.
    pub async fn try_match(&self, driver_id: &str, station_id: &str) -> Result<usize, CallError> {
        for _ in 0..PROPOSAL_ATTEMPTS {
            let path =
                format!("/stations/{}/candidates?driver_id={}", path_segment(station_id), path_segment(driver_id));
            let candidates = match self.trips.get::<Candidates>(&path).await {
                Ok(c) => c,
                // No shift (yet): nothing to match for this driver.
                Err(e) if e.status() == Some(404) => return Ok(0),
                Err(e) => return Err(e),
            };
            if candidates.rides.is_empty() {
                return Ok(0);
            }
            let proposal = Proposal {
                proposal_id: new_id(),
                driver_id: driver_id.to_string(),
                station_id: station_id.to_string(),
                ride_ids: candidates.rides.iter().map(|r| r.ride_id.clone()).collect(),
            };
            self.counters.proposals.fetch_add(1, Ordering::Relaxed);
            match self.trips.post::<_, Trip>("/matches", &proposal).await {
                Ok(trip) => {
                    self.counters.matches.fetch_add(1, Ordering::Relaxed);
                    return Ok(trip.ride_ids.len());
                }
                Err(e) if e.status() == Some(409) => {
                    self.counters.conflicts.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Err(e) if matches!(e.status(), Some(404 | 422)) => return Ok(0),
                Err(e) => return Err(e),
            }
        }
        Ok(0)
    }

    async fn handle_naive(&self, memory: &mut NaiveMemory, event: &Event) -> Outcome {
        match &event.body {
            EventBody::RideRequested(ride) => {
                memory.waiting.insert(WaitingRide::new(&ride.ride_id, &ride.station_id, &ride.destination, ride.seq));
                Outcome::Done
            }
            EventBody::DriverNearStation { driver_id, station_id } => {
                if !memory.shifts.contains_key(driver_id) {
                    match self.trips.get::<DriverView>(&format!("/drivers/{}", path_segment(driver_id))).await {
                        Ok(view) => {
                            // First sight: the original assumed every seat free.
                            memory.free_seats.insert(driver_id.clone(), i64::from(view.shift.seats));
                            memory.shifts.insert(driver_id.clone(), view.shift);
                        }
                        Err(e) if e.status() == Some(404) => return Outcome::Done,
                        Err(e) => return retry(e),
                    }
                }
                let shift = &memory.shifts[driver_id];
                let free = memory.free_seats.get(driver_id).copied().unwrap_or(0).max(0) as u32;
                let offer = DriverOffer::for_route(driver_id, station_id, &shift.route, &shift.destination, free);
                let taken = memory.waiting.take(&offer);
                if taken.is_empty() {
                    return Outcome::Done;
                }
                let proposal = Proposal {
                    proposal_id: new_id(),
                    driver_id: driver_id.clone(),
                    station_id: station_id.clone(),
                    ride_ids: taken.iter().map(|r| r.ride_id.clone()).collect(),
                };
                self.counters.proposals.fetch_add(1, Ordering::Relaxed);
                match self.trips.post::<_, Trip>("/matches/unchecked", &proposal).await {
                    Ok(trip) => {
                        self.counters.matches.fetch_add(1, Ordering::Relaxed);
                        *memory.free_seats.entry(driver_id.clone()).or_default() -= trip.ride_ids.len() as i64;
                        Outcome::Done
                    }
                    Err(e) => {
                        for ride in taken {
                            memory.waiting.insert(ride);
                        }
                        retry(e)
                    }
                }
            }
            EventBody::TripUpdated(trip) if !trip.status.is_active() => {
                *memory.free_seats.entry(trip.driver_id.clone()).or_default() += trip.ride_ids.len() as i64;
                Outcome::Done
            }
            _ => Outcome::Done,
        }
    }
}
