//! location-service: the last position of each driver, and which station it is near.
//!
//! A driver entering the radius of a station publishes `driver.near_station` (once per visit).
//! Positions are soft state: after a restart drivers' next updates rebuild them.

use crate::api::Context;
use crate::config::ServiceName;
use crate::directory::Directory;
use crate::domain::{Network, Role};
use crate::events::{Event, EventBody};
use axum::extract::State as AxState;
use axum::routing::{get, post};
use axum::{Json, Router};
use lastmile_platform::broker::outbox::Outbox;
use lastmile_platform::clock::now_ms;
use lastmile_platform::http::{ApiError, ApiJson, PathId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// `POST /drivers/{id}/location`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LocationUpdate {
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lng: f64,
}

/// A driver's last known position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// The driver.
    #[serde(deserialize_with = "lastmile_platform::id::checked")]
    pub driver_id: String,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lng: f64,
    /// The station within the radius, if any.
    pub near_station: Option<String>,
    /// When the update arrived (ms since epoch).
    pub updated_at_ms: u64,
}

/// `GET /stations/{id}/drivers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriversNear {
    /// The station.
    #[serde(deserialize_with = "lastmile_platform::id::checked")]
    pub station_id: String,
    /// Drivers currently near it, by id.
    #[serde(deserialize_with = "lastmile_platform::id::checked_list")]
    pub driver_ids: Vec<String>,
}

struct Locations {
    network: Arc<Network>,
    radius_m: f64,
    positions: Mutex<BTreeMap<String, Position>>,
    directory: Arc<Directory>,
    outbox: Outbox,
}

type Shared = Arc<Locations>;

pub(crate) async fn start(ctx: &mut Context) -> anyhow::Result<(Router, Vec<tokio::task::JoinHandle<()>>)> {
    let directory = Directory::with_shifts(ctx.client(ServiceName::User), ctx.client(ServiceName::Trip));
    let outbox = ctx.outbox(None);
    let state = Arc::new(Locations {
        network: ctx.config.network.clone(),
        radius_m: ctx.config.near_radius_m,
        positions: Mutex::new(BTreeMap::new()),
        directory: directory.clone(),
        outbox,
    });
    let follower = {
        let directory = directory.clone();
        ctx.spawn_consumer(ServiceName::Location, move |event| {
            let directory = directory.clone();
            async move { directory.handle(&event).await }
        })
    };
    let router = Router::new()
        .route("/drivers/{id}/location", post(update))
        .route("/drivers/{id}/position", get(position))
        .merge(ctx.internal(Router::new().route("/stations/{id}/drivers", get(drivers_near))))
        .with_state(state);
    Ok((router, vec![follower]))
}

async fn update(
    AxState(state): AxState<Shared>,
    PathId(driver_id): PathId,
    ApiJson(body): ApiJson<LocationUpdate>,
) -> Result<Json<Position>, ApiError> {
    let driver_id = driver_id.into_string();
    if !(-90.0..=90.0).contains(&body.lat) || !(-180.0..=180.0).contains(&body.lng) {
        return Err(ApiError::unprocessable(
            "invalid_coordinates",
            format!("({}, {}) is not a position on Earth", body.lat, body.lng),
        ));
    }
    state.directory.check(&driver_id, Role::Driver).await?;
    crate::store::accepting(&state.outbox)?;
    let near = state.network.near(body.lat, body.lng, state.radius_m).map(|s| s.id.clone());
    let position = Position {
        driver_id: driver_id.clone(),
        lat: body.lat,
        lng: body.lng,
        near_station: near.clone(),
        updated_at_ms: now_ms(),
    };
    let previous = state.positions.lock().expect("positions").insert(driver_id.clone(), position.clone());
    let arrived = near.is_some() && previous.and_then(|p| p.near_station) != near;
    if let (true, Some(station_id)) = (arrived, near) {
        let event = Event::new(EventBody::DriverNearStation { driver_id, station_id });
        state.outbox.send(event.to_message());
    }
    Ok(Json(position))
}

async fn position(AxState(state): AxState<Shared>, PathId(driver_id): PathId) -> Result<Json<Position>, ApiError> {
    let driver_id = driver_id.into_string();
    state
        .positions
        .lock()
        .expect("positions")
        .get(&driver_id)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::not_found("no_position", format!("no position known for driver {driver_id}")))
}

async fn drivers_near(
    AxState(state): AxState<Shared>,
    PathId(station_id): PathId,
) -> Result<Json<DriversNear>, ApiError> {
    let station_id = station_id.into_string();
    if state.network.get(&station_id).is_none() {
        return Err(ApiError::not_found("unknown_station", format!("no station {station_id}")));
    }
    let driver_ids = state
        .positions
        .lock()
        .expect("positions")
        .values()
        .filter(|p| p.near_station.as_deref() == Some(station_id.as_str()))
        .map(|p| p.driver_id.clone())
        .collect();
    Ok(Json(DriversNear { station_id, driver_ids }))
}
