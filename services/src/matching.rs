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
use crate::domain::Trip;
use crate::events::{Event, EventBody};
use crate::location::{DriversNear, Position};
use crate::trip::{Candidates, Proposal};
use axum::extract::State as AxState;
use axum::routing::get;
use axum::{Json, Router};
use lastmile_platform::broker::worker::{self, Outcome, WorkerConfig};
use lastmile_platform::clock::new_id;
use lastmile_platform::http::{CallError, HttpClient};
use serde::{Deserialize, Serialize};
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
    counters: Counters,
}

pub(crate) async fn start(ctx: &mut Context) -> anyhow::Result<(Router, Vec<tokio::task::JoinHandle<()>>)> {
    let matcher = Arc::new(Matcher {
        trips: ctx.client(ServiceName::Trip),
        locations: ctx.client(ServiceName::Location),
        counters: Counters::default(),
    });
    let worker = {
        let (ctx, m) = (ctx.clone(), matcher.clone());
        let config = WorkerConfig::new(ctx.config.names.queue(ServiceName::Matching.as_str()));
        tokio::spawn(async move {
            ctx.declared().await;
            worker::run(ctx.broker.clone(), config, ctx.shutdown.clone(), |message, _| {
                let m = m.clone();
                async move {
                    let outcome = match Event::from_message(&message) {
                        Ok(event) => m.handle(&event).await,
                        Err(reason) => Outcome::Poison(reason),
                    };
                    if outcome == Outcome::Done {
                        m.counters.events_handled.fetch_add(1, Ordering::Relaxed);
                    }
                    outcome
                }
            })
            .await
        })
    };
    let router = Router::new().route("/stats", get(stats)).with_state(matcher);
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

fn retry(e: CallError) -> Outcome {
    Outcome::Retry(e.to_string())
}

impl Matcher {
    /// Process one event; `Retry` when a peer is unavailable.
    pub async fn handle(&self, event: &Event) -> Outcome {
        match &event.body {
            EventBody::DriverNearStation { driver_id, station_id } => {
                let position = match self.locations.get::<Position>(&format!("/drivers/{driver_id}/position")).await {
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
                let near =
                    match self.locations.get::<DriversNear>(&format!("/stations/{}/drivers", ride.station_id)).await {
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
                let position = match self.locations.get::<Position>(&format!("/drivers/{driver_id}/position")).await {
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
            let path = format!("/stations/{station_id}/candidates?driver_id={driver_id}");
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
}
