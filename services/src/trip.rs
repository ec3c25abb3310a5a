//! trip-service: rides and trips, the system of record.
//!
//! Every state change is journaled before it is acknowledged, and every match is committed with
//! a compare-and-set: all proposed rides are still waiting at the station, the driver serves
//! their destinations and still has the seats. A stale proposal (another replica of matching
//! got there first, a rider cancelled, seats were taken) is refused with 409 and changes nothing,
//! which is what makes any number of matching replicas safe.

use crate::api::Context;
use crate::config::ServiceName;
use crate::directory::Directory;
use crate::domain::{Network, Ride, RideStatus, Role, Shift, Trip, TripStatus};
use crate::events::{Event, EventBody};
use crate::store::{SharedStore, State, Store};
use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use lastmile_engine::{DriverOffer, MatchingEngine, WaitingRide};
use lastmile_platform::clock::{new_id, now_ms};
use lastmile_platform::coverage::{Coverage, RecoveryPath};
use lastmile_platform::http::{ApiError, ApiJson, ApiQuery, PathId};
use lastmile_platform::shutdown::Shutdown;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Most seats a shift may offer.
pub const MAX_SEATS: u32 = 8;
/// How often waiting rides are checked against their deadline.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(1);

/// trip-service's whole record: shifts, rides, trips, the indexes matching needs and every change
/// applied.
#[derive(Debug, Default)]
pub struct TripRecord {
    shifts: BTreeMap<String, Shift>,
    rides: BTreeMap<String, Ride>,
    /// The waiting rides, indexed by station and destination in arrival order, so picking a
    /// driver's riders costs only the riders it takes.
    waiting: MatchingEngine,
    trips: BTreeMap<String, Trip>,
    /// proposal id → trip id, so a retried proposal finds its trip.
    by_proposal: BTreeMap<String, String>,
    /// Seats taken by a driver's active trips.
    seats_in_use: BTreeMap<String, u32>,
    next_seq: u64,
    /// Every change applied, in commit order (replayed from the journal after a restart): the
    /// ordered record of everything trip-service committed, exported so the checkers can judge
    /// each committed effect against the state it was committed in.
    changes: Vec<Change>,
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
    fn compacted(&self) -> Vec<Change> {
        self.changes.clone()
    }
}

/// `PUT /drivers/{id}/shift`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShiftRequest {
    /// Stations in driving order.
    #[serde(deserialize_with = "lastmile_platform::id::checked_list")]
    pub route: Vec<String>,
    /// The driver's destination.
    #[serde(deserialize_with = "lastmile_platform::id::checked_label")]
    pub destination: String,
    /// Seats offered.
    pub seats: u32,
}

/// `GET /drivers/{id}`: a driver as matching sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriverView {
    /// The driver.
    #[serde(deserialize_with = "lastmile_platform::id::checked")]
    pub driver_id: String,
    /// Its shift.
    pub shift: Shift,
    /// Seats not taken by active trips.
    pub free_seats: u32,
    /// Its scheduled and picked-up trips.
    #[serde(deserialize_with = "lastmile_platform::id::checked_list")]
    pub active_trips: Vec<String>,
}

/// `POST /rides`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RideRequest {
    /// Client-chosen id: repeating a request is idempotent.
    #[serde(deserialize_with = "lastmile_platform::id::checked")]
    pub ride_id: String,
    /// Who asks.
    #[serde(deserialize_with = "lastmile_platform::id::checked")]
    pub rider_id: String,
    /// Where the rider waits.
    #[serde(deserialize_with = "lastmile_platform::id::checked")]
    pub station_id: String,
    /// Where the rider wants to go.
    #[serde(deserialize_with = "lastmile_platform::id::checked_label")]
    pub destination: String,
    /// How long the rider waits at most, in seconds (0 < s <= 86400); trip-service's ride
    /// deadline when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wait_s: Option<f64>,
}

/// The most stations a route may list (a metro line has far fewer).
const MAX_ROUTE_STATIONS: usize = 64;

/// The longest wait a request may ask for.
const MAX_WAIT_LIMIT_S: f64 = 86_400.0;

/// `GET /stations/{id}/candidates?driver_id=`: what the rule picks for a driver there now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidates {
    /// The driver.
    #[serde(deserialize_with = "lastmile_platform::id::checked")]
    pub driver_id: String,
    /// The station.
    #[serde(deserialize_with = "lastmile_platform::id::checked")]
    pub station_id: String,
    /// The driver's free seats at this moment.
    pub free_seats: u32,
    /// The rides the matching rule picks, oldest first.
    pub rides: Vec<Ride>,
}

/// Query of the candidates route.
#[derive(Debug, Deserialize)]
pub struct CandidatesQuery {
    /// The driver to pick riders for.
    #[serde(deserialize_with = "lastmile_platform::id::checked")]
    pub driver_id: String,
}

/// `POST /matches`: a proposal from matching-service.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Proposal {
    /// Unique per proposal; a retry with the same id returns the same trip.
    #[serde(deserialize_with = "lastmile_platform::id::checked")]
    pub proposal_id: String,
    /// The driver.
    #[serde(deserialize_with = "lastmile_platform::id::checked")]
    pub driver_id: String,
    /// Where the riders are picked up.
    #[serde(deserialize_with = "lastmile_platform::id::checked")]
    pub station_id: String,
    /// The rides to put on the trip.
    #[serde(deserialize_with = "lastmile_platform::id::checked_list")]
    pub ride_ids: Vec<String>,
}

/// `GET /summary`: counts by state, for probes and tests.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Ride requests by state name.
    pub rides: BTreeMap<String, u64>,
    /// Trips by state name.
    pub trips: BTreeMap<String, u64>,
    /// Events committed and not yet confirmed by the broker.
    pub unpublished_events: u64,
}

/// `GET /export`: the whole record, for the harness's checkers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Export {
    /// Every ride request ever accepted.
    pub rides: Vec<Ride>,
    /// Every trip ever committed.
    pub trips: Vec<Trip>,
    /// Every driver's shift.
    pub shifts: BTreeMap<String, Shift>,
    /// Every change trip-service committed, in order: what the rides, trips and shifts above
    /// went through, so a checker can replay the record and judge each commit in its moment.
    #[serde(default)]
    pub changes: Vec<Change>,
}

#[derive(Clone)]
struct AppState {
    store: SharedStore<TripRecord>,
    directory: Arc<Directory>,
    network: Arc<Network>,
    /// Whether the original design's unchecked commits are accepted (demonstrations only).
    naive_matching: bool,
    /// Counts refused stale proposals.
    coverage: Coverage,
}

pub(crate) async fn start(ctx: &mut Context) -> anyhow::Result<(Router, Vec<tokio::task::JoinHandle<()>>)> {
    let path = ctx.config.data_dir.join("trip-service.journal");
    let store: SharedStore<TripRecord> = Store::open(&path, ctx).await?;
    let store_handle = store.lock().await.journal_handle();
    ctx.ready_flag().store(true, Ordering::SeqCst);
    let directory = Directory::open(
        &ctx.config.data_dir.join("trip-service.directory.journal"),
        ctx.client(ServiceName::User),
        ctx.config.faults.clone(),
    )
    .await?;
    let follower = {
        let directory = directory.clone();
        ctx.spawn_consumer(ServiceName::Trip, move |event| {
            let directory = directory.clone();
            async move { directory.handle(&event).await }
        })
    };
    let expiry = tokio::spawn(expire_rides(store.clone(), ctx.config.ride_ttl, ctx.shutdown.clone()));
    let state = AppState {
        store,
        directory,
        network: ctx.config.network.clone(),
        naive_matching: ctx.config.naive_matching,
        coverage: ctx.config.coverage.clone(),
    };
    let router = Router::new()
        .route("/drivers/{id}/shift", put(set_shift))
        .route("/drivers/{id}", get(get_driver))
        .route("/rides", post(request_ride))
        .route("/rides/{id}", get(get_ride))
        .route("/rides/{id}/cancel", post(cancel_ride))
        .route("/trips/{id}", get(get_trip))
        .route("/trips/{id}/pickup", post(pickup))
        .route("/trips/{id}/complete", post(complete))
        .route("/trips/{id}/cancel", post(cancel_trip))
        // Matching-service's and the harness's: the service token guards them.
        .merge(
            ctx.internal(
                Router::new()
                    .route("/stations/{id}/candidates", get(candidates))
                    .route("/matches", post(commit_match))
                    .route("/matches/unchecked", post(commit_unchecked))
                    .route("/export", get(export))
                    .route("/summary", get(summary)),
            ),
        )
        .with_state(state);
    // No response shows state a crash could still take back.
    let router = router.layer(axum::middleware::from_fn_with_state(store_handle, crate::store::settled));
    Ok((router, vec![follower, expiry]))
}

fn storage(e: std::io::Error) -> ApiError {
    ApiError::unavailable("storage", format!("the trip record could not be written: {e}"))
}

fn check_station(network: &Network, station: &str) -> Result<(), ApiError> {
    match network.get(station) {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found("unknown_station", format!("no station {station}"))),
    }
}

async fn set_shift(
    AxState(app): AxState<AppState>,
    PathId(driver_id): PathId,
    ApiJson(body): ApiJson<ShiftRequest>,
) -> Result<Json<DriverView>, ApiError> {
    let driver_id = driver_id.into_string();
    if body.route.is_empty() || body.route.len() > MAX_ROUTE_STATIONS {
        return Err(ApiError::unprocessable(
            "invalid_route",
            format!("a route has 1 to {MAX_ROUTE_STATIONS} stations, not {}", body.route.len()),
        ));
    }
    for station in &body.route {
        check_station(&app.network, station)?;
    }
    if body.seats == 0 || body.seats > MAX_SEATS {
        return Err(ApiError::unprocessable(
            "invalid_seats",
            format!("seats must be 1..={MAX_SEATS}, not {}", body.seats),
        ));
    }
    if body.destination.trim().is_empty() {
        return Err(ApiError::unprocessable("invalid_destination", "destination must not be empty"));
    }
    app.directory.check(&driver_id, Role::Driver).await?;
    let mut store = app.store.lock().await;
    let in_use = store.state().seats_in_use.get(&driver_id).copied().unwrap_or(0);
    if body.seats < in_use {
        return Err(ApiError::conflict("seats_in_use", format!("{in_use} seats are taken by active trips")));
    }
    let shift = Shift { route: body.route, destination: body.destination, seats: body.seats };
    let pending = if store.state().shifts.get(&driver_id) != Some(&shift) {
        Some(
            store
                .commit(vec![Change::ShiftSet { driver_id: driver_id.clone(), shift }], vec![])
                .await
                .map_err(storage)?,
        )
    } else {
        None
    };
    let view = driver_view(store.state(), &driver_id);
    drop(store);
    if let Some(pending) = pending {
        pending.durable().await.map_err(storage)?;
    }
    view.map(Json)
}

fn driver_view(state: &TripRecord, driver_id: &str) -> Result<DriverView, ApiError> {
    let shift = state.shift(driver_id)?;
    let active_trips = state
        .trips
        .values()
        .filter(|t| t.driver_id == driver_id && t.status.is_active())
        .map(|t| t.trip_id.clone())
        .collect();
    Ok(DriverView {
        driver_id: driver_id.to_string(),
        shift: shift.clone(),
        free_seats: state.free_seats(driver_id),
        active_trips,
    })
}

async fn get_driver(AxState(app): AxState<AppState>, PathId(driver_id): PathId) -> Result<Json<DriverView>, ApiError> {
    let driver_id = driver_id.into_string();
    driver_view(app.store.lock().await.state(), &driver_id).map(Json)
}

async fn request_ride(
    AxState(app): AxState<AppState>,
    ApiJson(body): ApiJson<RideRequest>,
) -> Result<(StatusCode, Json<Ride>), ApiError> {
    if body.ride_id.trim().is_empty() {
        return Err(ApiError::unprocessable("invalid_ride_id", "ride_id must not be empty"));
    }
    if let Some(s) = body.max_wait_s {
        if !(s > 0.0 && s <= MAX_WAIT_LIMIT_S) {
            return Err(ApiError::unprocessable(
                "invalid_max_wait",
                format!("max_wait_s must be more than 0 and at most {MAX_WAIT_LIMIT_S}, not {s}"),
            ));
        }
    }
    if body.destination.trim().is_empty() {
        return Err(ApiError::unprocessable("invalid_destination", "destination must not be empty"));
    }
    check_station(&app.network, &body.station_id)?;
    if let Some(existing) = app.store.lock().await.state().rides.get(&body.ride_id) {
        return same_request(existing, &body).map(|r| (StatusCode::OK, Json(r)));
    }
    app.directory.check(&body.rider_id, Role::Rider).await?;
    let mut store = app.store.lock().await;
    if let Some(existing) = store.state().rides.get(&body.ride_id) {
        return same_request(existing, &body).map(|r| (StatusCode::OK, Json(r)));
    }
    store.accepting()?;
    let ride = Ride {
        ride_id: body.ride_id,
        rider_id: body.rider_id,
        station_id: body.station_id,
        destination: body.destination,
        seq: store.state().next_seq,
        requested_at_ms: now_ms(),
        max_wait_ms: body.max_wait_s.map(|s| (s * 1000.0) as u64),
        status: RideStatus::Waiting,
    };
    let event = Event::new(EventBody::RideRequested(ride.clone()));
    let pending =
        store.commit(vec![Change::RideAccepted { ride: ride.clone() }], vec![event]).await.map_err(storage)?;
    drop(store);
    pending.durable().await.map_err(storage)?;
    Ok((StatusCode::CREATED, Json(ride)))
}

fn same_request(existing: &Ride, body: &RideRequest) -> Result<Ride, ApiError> {
    if existing.rider_id == body.rider_id
        && existing.station_id == body.station_id
        && existing.destination == body.destination
    {
        Ok(existing.clone())
    } else {
        Err(ApiError::conflict("ride_id_taken", format!("ride {} exists with other details", existing.ride_id)))
    }
}

async fn get_ride(AxState(app): AxState<AppState>, PathId(ride_id): PathId) -> Result<Json<Ride>, ApiError> {
    let ride_id = ride_id.into_string();
    app.store.lock().await.state().ride(&ride_id).cloned().map(Json)
}

async fn cancel_ride(AxState(app): AxState<AppState>, PathId(ride_id): PathId) -> Result<Json<Ride>, ApiError> {
    let ride_id = ride_id.into_string();
    let mut store = app.store.lock().await;
    let ride = store.state().ride(&ride_id)?.clone();
    let pending = match ride.status {
        RideStatus::Waiting => {
            let reason = "cancelled by the rider".to_string();
            let change = Change::RideCancelled { ride_id: ride_id.clone(), reason, at_ms: now_ms() };
            Some(store.commit(vec![change], vec![]).await.map_err(storage)?)
        }
        RideStatus::Cancelled { .. } => None,
        other => {
            return Err(ApiError::conflict(
                "not_waiting",
                format!("ride {ride_id} is {other:?}; cancel its trip instead"),
            ))
        }
    };
    let reply = store.state().rides[&ride_id].clone();
    drop(store);
    if let Some(pending) = pending {
        pending.durable().await.map_err(storage)?;
    }
    Ok(Json(reply))
}

async fn candidates(
    AxState(app): AxState<AppState>,
    PathId(station_id): PathId,
    ApiQuery(query): ApiQuery<CandidatesQuery>,
) -> Result<Json<Candidates>, ApiError> {
    let station_id = station_id.into_string();
    check_station(&app.network, &station_id)?;
    let store = app.store.lock().await;
    let state = store.state();
    state.shift(&query.driver_id)?;
    let free_seats = state.free_seats(&query.driver_id);
    let rides = state.candidates(&query.driver_id, &station_id).into_iter().cloned().collect();
    Ok(Json(Candidates { driver_id: query.driver_id, station_id, free_seats, rides }))
}

async fn commit_match(
    AxState(app): AxState<AppState>,
    ApiJson(proposal): ApiJson<Proposal>,
) -> Result<(StatusCode, Json<Trip>), ApiError> {
    let mut store = app.store.lock().await;
    let state = store.state();
    if let Some(trip_id) = state.by_proposal.get(&proposal.proposal_id) {
        return Ok((StatusCode::OK, Json(state.trips[trip_id].clone())));
    }
    let mut trip = check_proposal(state, &proposal, format!("trip-{}", new_id())).inspect_err(|e| {
        if e.code == "stale_proposal" {
            app.coverage.hit(RecoveryPath::CasConflict);
        }
    })?;
    trip.created_at_ms = now_ms();
    let event = Event::new(EventBody::MatchFound(trip.clone()));
    let pending =
        store.commit(vec![Change::TripCommitted { trip: trip.clone() }], vec![event]).await.map_err(storage)?;
    drop(store);
    pending.durable().await.map_err(storage)?;
    Ok((StatusCode::CREATED, Json(trip)))
}

/// The original LastMile's commit: whatever matching decided, without a compare-and-set. Only
/// served when the deployment runs the naive design, to show what the checkers catch.
async fn commit_unchecked(
    AxState(app): AxState<AppState>,
    ApiJson(proposal): ApiJson<Proposal>,
) -> Result<(StatusCode, Json<Trip>), ApiError> {
    if !app.naive_matching {
        return Err(ApiError::not_found("no_such_route", "unchecked matches exist only in the naive design"));
    }
    let mut store = app.store.lock().await;
    let state = store.state();
    if let Some(trip_id) = state.by_proposal.get(&proposal.proposal_id) {
        return Ok((StatusCode::OK, Json(state.trips[trip_id].clone())));
    }
    let mut rider_ids = Vec::new();
    for ride_id in &proposal.ride_ids {
        rider_ids.push(state.ride(ride_id)?.rider_id.clone());
    }
    let trip = Trip {
        trip_id: format!("trip-{}", new_id()),
        proposal_id: proposal.proposal_id,
        driver_id: proposal.driver_id,
        station_id: proposal.station_id,
        ride_ids: proposal.ride_ids,
        rider_ids,
        status: TripStatus::Scheduled,
        created_at_ms: now_ms(),
        closed_at_ms: None,
    };
    let event = Event::new(EventBody::MatchFound(trip.clone()));
    let pending =
        store.commit(vec![Change::TripCommitted { trip: trip.clone() }], vec![event]).await.map_err(storage)?;
    drop(store);
    pending.durable().await.map_err(storage)?;
    Ok((StatusCode::CREATED, Json(trip)))
}

async fn export(AxState(app): AxState<AppState>) -> Json<Export> {
    let store = app.store.lock().await;
    let state = store.state();
    Json(Export {
        rides: state.rides.values().cloned().collect(),
        trips: state.trips.values().cloned().collect(),
        shifts: state.shifts.clone(),
        changes: state.changes.clone(),
    })
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

async fn get_trip(AxState(app): AxState<AppState>, PathId(trip_id): PathId) -> Result<Json<Trip>, ApiError> {
    let trip_id = trip_id.into_string();
    app.store.lock().await.state().trip(&trip_id).cloned().map(Json)
}

async fn move_trip(app: AppState, trip_id: String, to: TripStatus) -> Result<Json<Trip>, ApiError> {
    let mut store = app.store.lock().await;
    let trip = store.state().trip(&trip_id)?.clone();
    if trip.status == to {
        // A retried request: already there.
        return Ok(Json(trip));
    }
    trip.status.transition(to).map_err(|e| ApiError::conflict("invalid_transition", e.to_string()))?;
    let at_ms = now_ms();
    let closed_at_ms = if to.is_active() { None } else { Some(at_ms) };
    let moved = Trip { status: to, closed_at_ms, ..trip };
    let event = Event::new(EventBody::TripUpdated(moved.clone()));
    let pending =
        store.commit(vec![Change::TripMoved { trip_id, status: to, at_ms }], vec![event]).await.map_err(storage)?;
    drop(store);
    pending.durable().await.map_err(storage)?;
    Ok(Json(moved))
}

async fn pickup(AxState(app): AxState<AppState>, PathId(id): PathId) -> Result<Json<Trip>, ApiError> {
    let id = id.into_string();
    move_trip(app, id, TripStatus::PickedUp).await
}

async fn complete(AxState(app): AxState<AppState>, PathId(id): PathId) -> Result<Json<Trip>, ApiError> {
    let id = id.into_string();
    move_trip(app, id, TripStatus::Completed).await
}

async fn cancel_trip(AxState(app): AxState<AppState>, PathId(id): PathId) -> Result<Json<Trip>, ApiError> {
    let id = id.into_string();
    move_trip(app, id, TripStatus::Cancelled).await
}

async fn summary(AxState(app): AxState<AppState>) -> Json<Summary> {
    let store = app.store.lock().await;
    let mut summary = Summary { unpublished_events: store.unpublished() as u64, ..Summary::default() };
    for ride in store.state().rides.values() {
        let name = match ride.status {
            RideStatus::Waiting => "waiting",
            RideStatus::Matched { .. } => "matched",
            RideStatus::Completed { .. } => "completed",
            RideStatus::Expired { .. } => "expired",
            RideStatus::Cancelled { .. } => "cancelled",
        };
        *summary.rides.entry(name.to_string()).or_default() += 1;
    }
    for trip in store.state().trips.values() {
        let name = serde_json::to_value(trip.status).expect("serializes");
        *summary.trips.entry(name.as_str().unwrap_or("?").to_string()).or_default() += 1;
    }
    Json(summary)
}

/// Expire rides that waited longer than `ttl`, each with its reason and a `ride.expired` event.
/// How long a ride may wait: its own limit, else the service's deadline.
fn wait_ms(ride: &Ride, ttl: Duration) -> u64 {
    ride.max_wait_ms.unwrap_or(ttl.as_millis() as u64)
}

async fn expire_rides(store: SharedStore<TripRecord>, ttl: Duration, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(EXPIRY_INTERVAL);
    loop {
        tokio::select! {
            biased;
            _ = tick.tick() => {}
            _ = shutdown.wait() => return,
        }
        let now = now_ms();
        let mut store = store.lock().await;
        let due: Vec<Ride> = store
            .state()
            .waiting
            .iter()
            .filter_map(|w| store.state().rides.get(&w.ride_id))
            .filter(|r| r.requested_at_ms + wait_ms(r, ttl) <= now)
            .cloned()
            .collect();
        if due.is_empty() {
            continue;
        }
        let mut changes = Vec::new();
        let mut events = Vec::new();
        for ride in due {
            let reason = format!(
                "no driver with a free seat serving {} reached {} within {}s",
                ride.destination,
                ride.station_id,
                wait_ms(&ride, ttl) / 1000
            );
            changes.push(Change::RideExpired { ride_id: ride.ride_id.clone(), reason: reason.clone(), at_ms: now });
            events.push(Event::new(EventBody::RideExpired(Ride { status: RideStatus::Expired { reason }, ..ride })));
        }
        let committed = store.commit(changes, events).await;
        drop(store);
        if let Err(e) = async { committed?.durable().await }.await {
            tracing::warn!(error = %e, "could not expire rides; will retry");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ride_waits_as_long_as_its_request_asked_else_the_service_deadline() {
        let t = record();
        let ride = t.rides["r1"].clone();
        assert_eq!(wait_ms(&ride, Duration::from_secs(300)), 300_000);
        let asked = Ride { max_wait_ms: Some(30_000), ..ride };
        assert_eq!(wait_ms(&asked, Duration::from_secs(300)), 30_000);
    }

    fn record() -> TripRecord {
        let mut t = TripRecord::default();
        let shift = Shift { route: vec!["ST101".into(), "ST102".into()], destination: "Whitefield".into(), seats: 2 };
        t.apply(&Change::ShiftSet { driver_id: "d1".into(), shift });
        for (i, id) in ["r1", "r2", "r3"].iter().enumerate() {
            let ride = Ride {
                ride_id: id.to_string(),
                rider_id: format!("rider-{id}"),
                station_id: "ST101".into(),
                destination: "Whitefield".into(),
                seq: i as u64,
                requested_at_ms: 0,
                max_wait_ms: None,
                status: RideStatus::Waiting,
            };
            t.apply(&Change::RideAccepted { ride });
        }
        t
    }

    fn proposal(id: &str, rides: &[&str]) -> Proposal {
        Proposal {
            proposal_id: id.into(),
            driver_id: "d1".into(),
            station_id: "ST101".into(),
            ride_ids: rides.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn of_two_proposals_for_the_same_rider_exactly_one_commits() {
        let mut t = record();
        let a = check_proposal(&t, &proposal("p-a", &["r1"]), "trip-p-a".into()).expect("first proposal is valid");
        let b =
            check_proposal(&t, &proposal("p-b", &["r1"]), "trip-p-b".into()).expect("valid before the first commits");
        t.apply(&Change::TripCommitted { trip: a });
        // The second replica's proposal is now stale: the rider is no longer waiting.
        let err = check_proposal(&t, &proposal("p-b", &["r1"]), "trip-p-b".into()).unwrap_err();
        assert_eq!(err.status, StatusCode::CONFLICT);
        assert_eq!(err.code, "stale_proposal");
        drop(b);
        assert!(matches!(t.rides["r1"].status, RideStatus::Matched { .. }));
        assert_eq!(t.free_seats("d1"), 1);
    }

    #[test]
    fn candidates_are_the_oldest_served_riders_up_to_the_free_seats() {
        let mut t = record();
        let other = Ride {
            ride_id: "r0".into(),
            rider_id: "rider-r0".into(),
            station_id: "ST101".into(),
            destination: "Airport".into(),
            seq: 99,
            requested_at_ms: 0,
            max_wait_ms: None,
            status: RideStatus::Waiting,
        };
        t.apply(&Change::RideAccepted { ride: other });
        let picked: Vec<&str> = t.candidates("d1", "ST101").iter().map(|r| r.ride_id.as_str()).collect();
        assert_eq!(picked, ["r1", "r2"], "first come first served, two seats, Airport not served");
        assert!(t.candidates("d1", "ST102").is_empty(), "riders at another station are not candidates");
        assert!(t.candidates("nobody", "ST101").is_empty());
    }

    #[test]
    fn a_cancelled_trip_puts_its_riders_back_in_the_queue_in_their_place() {
        let mut t = record();
        let trip = check_proposal(&t, &proposal("p1", &["r1", "r2"]), "trip-p1".into()).unwrap();
        t.apply(&Change::TripCommitted { trip });
        t.apply(&Change::TripMoved { trip_id: "trip-p1".into(), status: TripStatus::Cancelled, at_ms: 5 });
        assert_eq!(t.free_seats("d1"), 2);
        assert_eq!(t.trips["trip-p1"].closed_at_ms, Some(5));
        let picked: Vec<&str> = t.candidates("d1", "ST101").iter().map(|r| r.ride_id.as_str()).collect();
        assert_eq!(picked, ["r1", "r2"], "back at the head of the queue");
    }

    #[test]
    fn a_proposal_over_the_free_seats_is_refused() {
        let mut t = record();
        let trip = check_proposal(&t, &proposal("p1", &["r1"]), "trip-p1".into()).unwrap();
        t.apply(&Change::TripCommitted { trip });
        let err = check_proposal(&t, &proposal("p2", &["r2", "r3"]), "trip-p2".into()).unwrap_err();
        assert_eq!(err.code, "stale_proposal");
        assert!(err.message.contains("1 free seats"), "{}", err.message);
    }

    #[test]
    fn every_applied_change_is_kept_in_commit_order() {
        let mut t = record();
        let trip = check_proposal(&t, &proposal("p1", &["r1"]), "trip-p1".into()).unwrap();
        t.apply(&Change::TripCommitted { trip });
        t.apply(&Change::RideExpired { ride_id: "r3".into(), reason: "late".into(), at_ms: 7 });
        let kinds: Vec<&str> = t
            .changes
            .iter()
            .map(|c| match c {
                Change::ShiftSet { .. } => "shift",
                Change::RideAccepted { .. } => "accepted",
                Change::TripCommitted { .. } => "committed",
                Change::TripMoved { .. } => "moved",
                Change::RideExpired { .. } => "expired",
                Change::RideCancelled { .. } => "cancelled",
            })
            .collect();
        assert_eq!(kinds, ["shift", "accepted", "accepted", "accepted", "committed", "expired"]);
        assert_eq!(
            t.changes.last(),
            Some(&Change::RideExpired { ride_id: "r3".into(), reason: "late".into(), at_ms: 7 })
        );
    }

    #[test]
    fn an_expiry_journaled_without_its_time_still_replays() {
        let old = r#"{"change":"ride_expired","ride_id":"r1","reason":"no driver"}"#;
        let change: Change = serde_json::from_str(old).expect("a journal from before at_ms replays");
        assert_eq!(change, Change::RideExpired { ride_id: "r1".into(), reason: "no driver".into(), at_ms: 0 });
        let mut t = record();
        t.apply(&change);
        assert!(matches!(t.rides["r1"].status, RideStatus::Expired { .. }));
        assert_eq!(t.waiting_count(), 2);
    }

    #[test]
    fn completing_a_trip_gives_the_seats_back_and_completes_its_rides() {
        let mut t = record();
        let trip = check_proposal(&t, &proposal("p1", &["r1", "r2"]), "trip-p1".into()).unwrap();
        let trip_id = trip.trip_id.clone();
        t.apply(&Change::TripCommitted { trip });
        assert_eq!(t.free_seats("d1"), 0);
        assert_eq!(t.waiting_count(), 1);
        assert!(t.candidates("d1", "ST101").is_empty(), "no free seats, no candidates");
        t.apply(&Change::TripMoved { trip_id: trip_id.clone(), status: TripStatus::PickedUp, at_ms: 1 });
        assert_eq!(t.free_seats("d1"), 0, "seats stay taken while riders are on board");
        t.apply(&Change::TripMoved { trip_id, status: TripStatus::Completed, at_ms: 2 });
        assert_eq!(t.free_seats("d1"), 2);
        assert!(matches!(t.rides["r1"].status, RideStatus::Completed { .. }));
    }
}
