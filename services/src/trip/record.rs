//! trip-service's record: shifts, rides, trips and the change history, changed only by journaled
//! [`Change`]s, and the compare-and-set every match passes ([`check_proposal`]).

use super::api::Proposal;
use crate::domain::{Ride, RideStatus, Shift, Trip, TripStatus};
use crate::store::{Chunked, Compacted, State};
use lastmile_engine::{DriverOffer, MatchingEngine, WaitingRide};
use lastmile_platform::http::ApiError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most seats a shift may offer.
pub const MAX_SEATS: u32 = 8;

/// trip-service's whole record: shifts, rides, trips, the indexes matching needs and every change
/// applied.
#[derive(Debug, Default)]
pub struct TripRecord {
    pub(super) shifts: BTreeMap<String, Shift>,
    pub(super) rides: BTreeMap<String, Ride>,
    /// The waiting rides, indexed by station and destination in arrival order, so picking a
    /// driver's riders costs only the riders it takes.
    pub(super) waiting: MatchingEngine,
    pub(super) trips: BTreeMap<String, Trip>,
    /// proposal id → trip id, so a retried proposal finds its trip.
    pub(super) by_proposal: BTreeMap<String, String>,
    /// Seats taken by a driver's active trips.
    pub(super) seats_in_use: BTreeMap<String, u32>,
    pub(super) next_seq: u64,
    /// Every change applied, in commit order (replayed from the journal after a restart): the
    /// ordered record of everything trip-service committed, exported so the checkers can judge
    /// each committed effect against the state it was committed in. Kept in shared chunks, so a
    /// compaction takes it without copying it under the store's lock.
    pub(super) changes: Chunked<Change>,
}

/// One journaled change of the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// A driver started or changed its shift.
    ShiftSet {
        #[serde(deserialize_with = "lastmile_platform::id::checked")]
        driver_id: String,
        shift: Shift,
    },
    /// A ride request was accepted and waits.
    RideAccepted { ride: Ride },
    /// A match was committed.
    TripCommitted { trip: Trip },
    /// A trip moved on.
    TripMoved {
        #[serde(deserialize_with = "lastmile_platform::id::checked")]
        trip_id: String,
        status: TripStatus,
        /// When (ms since epoch); the journal carries it so replay reads no clock.
        #[serde(default)]
        at_ms: u64,
    },
    /// A waiting ride ran out of time.
    RideExpired {
        #[serde(deserialize_with = "lastmile_platform::id::checked")]
        ride_id: String,
        reason: String,
        /// When the expiry loop found it due (ms since epoch), so its deadline can be checked;
        /// 0 in journals written before the time was recorded.
        #[serde(default)]
        at_ms: u64,
    },
    /// A waiting ride was withdrawn.
    RideCancelled {
        #[serde(deserialize_with = "lastmile_platform::id::checked")]
        ride_id: String,
        reason: String,
        /// When (ms since epoch); 0 in journals written before the time was recorded.
        #[serde(default)]
        at_ms: u64,
    },
}

impl TripRecord {
    fn set_ride(&mut self, ride_id: &str, status: RideStatus) {
        self.waiting.remove(ride_id);
        if let Some(ride) = self.rides.get_mut(ride_id) {
            ride.status = status;
        }
    }

    /// A ride, or the 404 that says it does not exist.
    pub fn ride(&self, ride_id: &str) -> Result<&Ride, ApiError> {
        self.rides.get(ride_id).ok_or_else(|| ApiError::not_found("unknown_ride", format!("no ride {ride_id}")))
    }

    /// A trip, or the 404 that says it does not exist.
    pub fn trip(&self, trip_id: &str) -> Result<&Trip, ApiError> {
        self.trips.get(trip_id).ok_or_else(|| ApiError::not_found("unknown_trip", format!("no trip {trip_id}")))
    }

    /// A driver's shift, or the 404 that says it has none.
    pub fn shift(&self, driver_id: &str) -> Result<&Shift, ApiError> {
        self.shifts
            .get(driver_id)
            .ok_or_else(|| ApiError::not_found("no_shift", format!("driver {driver_id} has no shift")))
    }

    /// Free seats of a driver (0 without a shift).
    pub fn free_seats(&self, driver_id: &str) -> u32 {
        let total = self.shifts.get(driver_id).map_or(0, |s| s.seats);
        total.saturating_sub(self.seats_in_use.get(driver_id).copied().unwrap_or(0))
    }

    /// The rides the matching rule picks for `driver_id` at `station`: waiting there, going
    /// where the driver serves, first come first served, up to its free seats.
    pub fn candidates(&self, driver_id: &str, station: &str) -> Vec<&Ride> {
        let Some(shift) = self.shifts.get(driver_id) else { return Vec::new() };
        let offer =
            DriverOffer::for_route(driver_id, station, &shift.route, &shift.destination, self.free_seats(driver_id));
        self.waiting.select(&offer).iter().filter_map(|w| self.rides.get(&w.ride_id)).collect()
    }

    /// Rides waiting, across all stations.
    pub fn waiting_count(&self) -> usize {
        self.waiting.len()
    }
}

impl State for TripRecord {
    type Change = Change;

    fn apply(&mut self, change: &Change) {
        self.changes.push(change.clone());
        match change {
            Change::ShiftSet { driver_id, shift } => {
                self.shifts.insert(driver_id.clone(), shift.clone());
            }
            Change::RideAccepted { ride } => {
                self.next_seq = self.next_seq.max(ride.seq + 1);
                self.waiting.insert(WaitingRide::new(&ride.ride_id, &ride.station_id, &ride.destination, ride.seq));
                self.rides.insert(ride.ride_id.clone(), ride.clone());
            }
            Change::TripCommitted { trip } => {
                for ride_id in &trip.ride_ids {
                    self.set_ride(ride_id, RideStatus::Matched { trip_id: trip.trip_id.clone() });
                }
                *self.seats_in_use.entry(trip.driver_id.clone()).or_default() += trip.ride_ids.len() as u32;
                self.by_proposal.insert(trip.proposal_id.clone(), trip.trip_id.clone());
                self.trips.insert(trip.trip_id.clone(), trip.clone());
            }
            Change::TripMoved { trip_id, status, at_ms } => {
                let Some(trip) = self.trips.get_mut(trip_id) else { return };
                let was_active = trip.status.is_active();
                trip.status = *status;
                if was_active && !status.is_active() {
                    trip.closed_at_ms = Some(*at_ms);
                    let trip = trip.clone();
                    let used = self.seats_in_use.entry(trip.driver_id.clone()).or_default();
                    *used = used.saturating_sub(trip.ride_ids.len() as u32);
                    for ride_id in &trip.ride_ids {
                        if *status == TripStatus::Completed {
                            self.set_ride(ride_id, RideStatus::Completed { trip_id: trip.trip_id.clone() });
                        } else if let Some(ride) = self.rides.get_mut(ride_id) {
                            // A cancelled trip puts its riders back in the queue, in their place.
                            ride.status = RideStatus::Waiting;
                            self.waiting.insert(WaitingRide::new(
                                &ride.ride_id,
                                &ride.station_id,
                                &ride.destination,
                                ride.seq,
                            ));
                        }
                    }
                }
            }
            Change::RideExpired { ride_id, reason, .. } => {
                self.set_ride(ride_id, RideStatus::Expired { reason: reason.clone() });
            }
            Change::RideCancelled { ride_id, reason, .. } => {
                self.set_ride(ride_id, RideStatus::Cancelled { reason: reason.clone() });
            }
        }
    }

    /// The change history itself: the record keeps every committed change (the checkers judge
    /// each against the state it was committed in), so compaction drops the journal's publish
    /// confirms but keeps the history, and replaying it rebuilds the record exactly.
    fn compacted(&self) -> Compacted<Change> {
        self.changes.chunks()
    }
}

/// The compare-and-set: the trip a proposal would create, or why it is stale.
pub fn check_proposal(state: &TripRecord, proposal: &Proposal, trip_id: String) -> Result<Trip, ApiError> {
    let stale = |why: String| ApiError::conflict("stale_proposal", why);
    let shift = state.shift(&proposal.driver_id)?;
    if proposal.ride_ids.is_empty() {
        return Err(ApiError::unprocessable("empty_proposal", "a proposal needs at least one ride"));
    }
    if proposal.ride_ids.len() > MAX_SEATS as usize {
        return Err(ApiError::unprocessable(
            "too_many_rides",
            format!("a trip has at most {MAX_SEATS} riders, {} were proposed", proposal.ride_ids.len()),
        ));
    }
    let mut rider_ids = Vec::new();
    for (i, ride_id) in proposal.ride_ids.iter().enumerate() {
        if proposal.ride_ids[..i].contains(ride_id) {
            return Err(ApiError::unprocessable("duplicate_ride", format!("ride {ride_id} is proposed twice")));
        }
        let ride = state.ride(ride_id)?;
        if ride.status != RideStatus::Waiting {
            return Err(stale(format!("ride {ride_id} is no longer waiting")));
        }
        if ride.station_id != proposal.station_id {
            return Err(stale(format!("ride {ride_id} waits at {}, not {}", ride.station_id, proposal.station_id)));
        }
        if !shift.serves(&proposal.station_id, &ride.destination) {
            return Err(stale(format!("driver {} does not serve {}", proposal.driver_id, ride.destination)));
        }
        rider_ids.push(ride.rider_id.clone());
    }
    let free = state.free_seats(&proposal.driver_id);
    if (proposal.ride_ids.len() as u32) > free {
        return Err(stale(format!(
            "driver {} has {free} free seats, not {}",
            proposal.driver_id,
            proposal.ride_ids.len()
        )));
    }
    Ok(Trip {
        trip_id,
        proposal_id: proposal.proposal_id.clone(),
        driver_id: proposal.driver_id.clone(),
        station_id: proposal.station_id.clone(),
        ride_ids: proposal.ride_ids.clone(),
        rider_ids,
        status: TripStatus::Scheduled,
        created_at_ms: 0,
        closed_at_ms: None,
    })
}
