//! trip-service's HTTP API: the requests and answers, and the handlers.

use crate::api::Context;
use crate::directory::Directory;
use crate::domain::{Network, Ride, RideStatus, Role, Shift, Trip, TripStatus};
use crate::events::{Event, EventBody};
use crate::store::{storage_error, SharedStore};
use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use lastmile_platform::clock::{new_id, now_ms};
use lastmile_platform::coverage::{Coverage, RecoveryPath};
use lastmile_platform::http::{ApiError, ApiJson, ApiQuery, PathId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

use super::record::*;

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
pub(super) struct AppState {
    pub(super) store: SharedStore<TripRecord>,
    pub(super) directory: Arc<Directory>,
    pub(super) network: Arc<Network>,
    /// Whether the original design's unchecked commits are accepted (demonstrations only).
    pub(super) naive_matching: bool,
    /// Counts refused stale proposals.
    pub(super) coverage: Coverage,
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
                .map_err(storage_error)?,
        )
    } else {
        None
    };
    let view = driver_view(store.state(), &driver_id);
    drop(store);
    if let Some(pending) = pending {
        pending.durable().await.map_err(storage_error)?;
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
        store.commit(vec![Change::RideAccepted { ride: ride.clone() }], vec![event]).await.map_err(storage_error)?;
    drop(store);
    pending.durable().await.map_err(storage_error)?;
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
            Some(store.commit(vec![change], vec![]).await.map_err(storage_error)?)
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
        pending.durable().await.map_err(storage_error)?;
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
        store.commit(vec![Change::TripCommitted { trip: trip.clone() }], vec![event]).await.map_err(storage_error)?;
    drop(store);
    pending.durable().await.map_err(storage_error)?;
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
        store.commit(vec![Change::TripCommitted { trip: trip.clone() }], vec![event]).await.map_err(storage_error)?;
    drop(store);
    pending.durable().await.map_err(storage_error)?;
    Ok((StatusCode::CREATED, Json(trip)))
}

async fn export(AxState(app): AxState<AppState>) -> Json<Export> {
    let store = app.store.lock().await;
    let state = store.state();
    Json(Export {
        rides: state.rides.values().cloned().collect(),
        trips: state.trips.values().cloned().collect(),
        shifts: state.shifts.clone(),
        changes: state.changes.to_vec(),
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
    let pending = store
        .commit(vec![Change::TripMoved { trip_id, status: to, at_ms }], vec![event])
        .await
        .map_err(storage_error)?;
    drop(store);
    pending.durable().await.map_err(storage_error)?;
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

/// The routes: the public API, and the internal endpoints behind the service token.
pub(super) fn routes(ctx: &Context, state: AppState) -> Router {
    Router::new()
        .route("/drivers/{id}/shift", put(set_shift))
        .route("/drivers/{id}", get(get_driver))
        .route("/rides", post(request_ride))
        .route("/rides/{id}", get(get_ride))
        .route("/rides/{id}/cancel", post(cancel_ride))
        .route("/trips/{id}", get(get_trip))
        .route("/trips/{id}/pickup", post(pickup))
        .route("/trips/{id}/complete", post(complete))
        .route("/trips/{id}/cancel", post(cancel_trip))
        // Matching-service's: the service token guards them.
        .merge(ctx.internal(
            Router::new().route("/stations/{id}/candidates", get(candidates)).route("/matches", post(commit_match)),
        ))
        // The naive design's commit exists only where the naive design runs; the harness's
        // routes only where a harness reads them (token-guarded too).
        .merge(if ctx.config.naive_matching {
            ctx.internal(Router::new().route("/matches/unchecked", post(commit_unchecked)))
        } else {
            Router::new()
        })
        .merge(if ctx.config.harness_routes {
            ctx.internal(Router::new().route("/export", get(export)).route("/summary", get(summary)))
        } else {
            Router::new()
        })
        .with_state(state)
}
