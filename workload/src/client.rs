//! A typed client of the LastMile HTTP API that records every call in a [`History`].
//!
//! Every call names `who` makes it (a rider, a driver, the harness's probes), so the history
//! reads like the log of many independent clients.

use crate::history::{History, OpPhase};
use lastmile_platform::auth::ServiceToken;
use lastmile_platform::http::{path_segment, CallError, CallPolicy, HttpClient, Method};
use lastmile_services::domain::{Ride, Station, Trip, User};
use lastmile_services::location::{LocationUpdate, Position};
use lastmile_services::notification::Inbox;
use lastmile_services::trip::{DriverView, Export, RideRequest, ShiftRequest, Summary};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Where the services answer (`http://host:port` or `host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// user-service.
    pub user: String,
    /// location-service.
    pub location: String,
    /// trip-service.
    pub trip: String,
    /// notification-service.
    pub notification: String,
    /// The service token internal endpoints (`/export`, `/summary`, `/stats`) require, if the
    /// deployment has one.
    pub token: Option<ServiceToken>,
}

/// The LastMile API as clients see it.
#[derive(Debug, Clone)]
pub struct LastMileClient {
    user: HttpClient,
    location: HttpClient,
    trip: HttpClient,
    notification: HttpClient,
    policy: CallPolicy,
    /// Presented by every call (the harness is an operator: it reads internal endpoints).
    token: Option<ServiceToken>,
    history: Arc<History>,
    /// The longest wait every ride request asks for, unless it says.
    ride_wait: Option<Duration>,
}

impl LastMileClient {
    /// A client of `endpoints` recording into `history`.
    pub fn new(endpoints: &Endpoints, policy: CallPolicy, history: Arc<History>) -> LastMileClient {
        let client =
            |name: &str, url: &str| HttpClient::new(name, url, policy.clone()).with_token(endpoints.token.clone());
        LastMileClient {
            user: client("user-service", &endpoints.user),
            location: client("location-service", &endpoints.location),
            trip: client("trip-service", &endpoints.trip),
            notification: client("notification-service", &endpoints.notification),
            token: endpoints.token.clone(),
            policy,
            history,
            ride_wait: None,
        }
    }

    /// Ask for rides that wait at most `wait` (the scenario's deadline), whatever deadline the
    /// deployment has.
    pub fn with_ride_wait(mut self, wait: Duration) -> LastMileClient {
        self.ride_wait = Some(wait);
        self
    }

    /// The history this client records into.
    pub fn history(&self) -> &Arc<History> {
        &self.history
    }

    async fn recorded<T: Serialize>(
        &self,
        who: &str,
        action: &str,
        args: Value,
        call: impl Future<Output = Result<T, CallError>>,
    ) -> Result<T, CallError> {
        self.history.record(who, action, OpPhase::Invoke, args);
        let result = call.await;
        match &result {
            Ok(value) => self.history.record(who, action, OpPhase::Ok, serde_json::to_value(value).unwrap_or_default()),
            Err(e @ CallError::Timeout { .. }) => {
                self.history.record(who, action, OpPhase::Timeout, e.to_string().into())
            }
            Err(e) => self.history.record(who, action, OpPhase::Fail, e.to_string().into()),
        }
        result
    }

    async fn get<T: Serialize + DeserializeOwned>(
        &self,
        client: &HttpClient,
        who: &str,
        action: &str,
        path: String,
    ) -> Result<T, CallError> {
        self.recorded(who, action, Value::String(path.clone()), client.get::<T>(&path)).await
    }

    /// `POST /drivers`.
    pub async fn register_driver(&self, id: &str, name: &str, phone: &str, vehicle: &str) -> Result<User, CallError> {
        let body = json!({ "driver_id": id, "name": name, "phone": phone, "vehicle": vehicle });
        self.recorded(id, "register_driver", body.clone(), self.user.post("/drivers", &body)).await
    }

    /// `POST /riders`.
    pub async fn register_rider(&self, id: &str, name: &str, phone: &str) -> Result<User, CallError> {
        let body = json!({ "rider_id": id, "name": name, "phone": phone });
        self.recorded(id, "register_rider", body.clone(), self.user.post("/riders", &body)).await
    }

    /// `PUT /drivers/{id}/shift`.
    pub async fn start_shift(&self, driver_id: &str, shift: &ShiftRequest) -> Result<DriverView, CallError> {
        let body = serde_json::to_vec(shift).expect("serializes");
        let path = format!("/drivers/{}/shift", path_segment(driver_id));
        let call = self.trip.call::<DriverView>(Method::PUT, &path, Some(body));
        self.recorded(driver_id, "start_shift", serde_json::to_value(shift).unwrap_or_default(), call).await
    }

    /// `POST /drivers/{id}/location` at a station's coordinates.
    pub async fn arrive_at(&self, driver_id: &str, station: &Station) -> Result<Position, CallError> {
        self.move_to(driver_id, station.lat, station.lng).await
    }

    /// `POST /drivers/{id}/location`.
    pub async fn move_to(&self, driver_id: &str, lat: f64, lng: f64) -> Result<Position, CallError> {
        let body = LocationUpdate { lat, lng };
        let path = format!("/drivers/{}/location", path_segment(driver_id));
        self.recorded(driver_id, "location", json!({ "lat": lat, "lng": lng }), self.location.post(&path, &body)).await
    }

    /// `POST /rides`.
    pub async fn request_ride(&self, request: &RideRequest) -> Result<Ride, CallError> {
        let mut request = request.clone();
        if request.max_wait_s.is_none() {
            request.max_wait_s = self.ride_wait.map(|w| w.as_secs_f64());
        }
        let args = serde_json::to_value(&request).unwrap_or_default();
        self.recorded(&request.rider_id, "request_ride", args, self.trip.post("/rides", &request)).await
    }

    /// `GET /rides/{id}`, as `who`.
    pub async fn ride_as(&self, who: &str, ride_id: &str) -> Result<Ride, CallError> {
        self.get(&self.trip, who, "get_ride", format!("/rides/{}", path_segment(ride_id))).await
    }

    /// `GET /rides/{id}`, as the harness.
    pub async fn ride(&self, ride_id: &str) -> Result<Ride, CallError> {
        self.ride_as("probe", ride_id).await
    }

    /// `GET /drivers/{id}`, as `who`.
    pub async fn driver_as(&self, who: &str, driver_id: &str) -> Result<DriverView, CallError> {
        self.get(&self.trip, who, "get_driver", format!("/drivers/{}", path_segment(driver_id))).await
    }

    /// `GET /drivers/{id}`, as the harness.
    pub async fn driver(&self, driver_id: &str) -> Result<DriverView, CallError> {
        self.driver_as("probe", driver_id).await
    }

    /// `GET /trips/{id}`, as `who`.
    pub async fn trip_as(&self, who: &str, trip_id: &str) -> Result<Trip, CallError> {
        self.get(&self.trip, who, "get_trip", format!("/trips/{}", path_segment(trip_id))).await
    }

    /// `GET /trips/{id}`, as the harness.
    pub async fn trip(&self, trip_id: &str) -> Result<Trip, CallError> {
        self.trip_as("probe", trip_id).await
    }

    /// `POST /trips/{id}/pickup`.
    pub async fn pickup(&self, driver_id: &str, trip_id: &str) -> Result<Trip, CallError> {
        let path = format!("/trips/{}/pickup", path_segment(trip_id));
        self.recorded(driver_id, "pickup", Value::String(trip_id.into()), self.trip.post(&path, &json!({}))).await
    }

    /// `POST /trips/{id}/complete`.
    pub async fn complete(&self, driver_id: &str, trip_id: &str) -> Result<Trip, CallError> {
        let path = format!("/trips/{}/complete", path_segment(trip_id));
        self.recorded(driver_id, "complete", Value::String(trip_id.into()), self.trip.post(&path, &json!({}))).await
    }

    /// `POST /trips/{id}/cancel`.
    pub async fn cancel_trip(&self, driver_id: &str, trip_id: &str) -> Result<Trip, CallError> {
        let path = format!("/trips/{}/cancel", path_segment(trip_id));
        self.recorded(driver_id, "cancel_trip", Value::String(trip_id.into()), self.trip.post(&path, &json!({}))).await
    }

    /// `GET /summary` of trip-service.
    pub async fn summary(&self) -> Result<Summary, CallError> {
        self.get(&self.trip, "probe", "summary", "/summary".to_string()).await
    }

    /// `GET /export` of trip-service: the whole record, unrecorded (it is evidence, not an
    /// operation).
    pub async fn export(&self) -> Result<Export, CallError> {
        self.trip.get("/export").await
    }

    /// `GET /users/{id}/notifications`.
    pub async fn inbox(&self, user_id: &str) -> Result<Inbox, CallError> {
        self.get(&self.notification, user_id, "inbox", format!("/users/{}/notifications", path_segment(user_id))).await
    }

    /// `GET path` of any replica or service at `base_url`, recorded as `who`/`action`.
    pub async fn probe(&self, who: &str, action: &str, base_url: &str, path: &str) -> Result<Value, CallError> {
        let client = HttpClient::new(who, base_url, self.policy.clone()).with_token(self.token.clone());
        self.recorded(who, action, Value::String(format!("{base_url}{path}")), client.get::<Value>(path)).await
    }

    /// Whether every service answers `/ready` with 200.
    pub async fn all_ready(&self) -> bool {
        for client in [&self.user, &self.location, &self.trip, &self.notification] {
            match client.call_raw(Method::GET, "/ready", None).await {
                Ok((200, _)) => {}
                _ => return false,
            }
        }
        true
    }
}
