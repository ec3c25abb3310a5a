//! user-service: driver and rider profiles. Registration is idempotent on the client-chosen id
//! and publishes `user.registered`. Not critical: rides keep working while it is down.

use crate::api::Context;
use crate::domain::{Role, User};
use crate::events::{Event, EventBody};
use crate::store::{storage_error, Compacted, SharedStore, State, Store};
use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use lastmile_platform::http::{ApiError, ApiJson, PathId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

/// Registered users by id.
#[derive(Debug, Default)]
pub struct Users {
    by_id: BTreeMap<String, User>,
}

/// The one change: a user registered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registered(pub User);

impl State for Users {
    type Change = Registered;
    fn apply(&mut self, change: &Registered) {
        self.by_id.insert(change.0.user_id.clone(), change.0.clone());
    }
    fn compacted(&self) -> Compacted<Registered> {
        vec![std::sync::Arc::new(self.by_id.values().cloned().map(Registered).collect())]
    }
}

/// `POST /drivers`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterDriver {
    /// Client-chosen id.
    #[serde(deserialize_with = "lastmile_platform::id::checked")]
    pub driver_id: String,
    /// Display name.
    pub name: String,
    /// Contact number.
    pub phone: String,
    /// Vehicle description.
    pub vehicle: String,
}

/// `POST /riders`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRider {
    /// Client-chosen id.
    #[serde(deserialize_with = "lastmile_platform::id::checked")]
    pub rider_id: String,
    /// Display name.
    pub name: String,
    /// Contact number.
    pub phone: String,
}

pub(crate) async fn start(ctx: &mut Context) -> anyhow::Result<(Router, Vec<tokio::task::JoinHandle<()>>)> {
    let path = ctx.config.data_dir.join("user-service.journal");
    let store: SharedStore<Users> = Store::open(&path, ctx).await?;
    let store_handle = store.lock().await.journal_handle();
    ctx.ready_flag().store(true, Ordering::SeqCst);
    let router = Router::new()
        .route("/drivers", post(register_driver))
        .route("/riders", post(register_rider))
        .merge(ctx.internal(Router::new().route("/users/{id}", get(get_user))))
        .with_state(store);
    // No response shows state a crash could still take back.
    let router = router.layer(axum::middleware::from_fn_with_state(store_handle, crate::store::settled));
    Ok((router, Vec::new()))
}

fn validate(field: &str, value: &str) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::unprocessable("invalid_field", format!("{field} must not be empty")));
    }
    if value.len() > 200 {
        return Err(ApiError::unprocessable("invalid_field", format!("{field} is longer than 200 characters")));
    }
    Ok(())
}

fn validate_phone(phone: &str) -> Result<(), ApiError> {
    let digits = phone.chars().filter(char::is_ascii_digit).count();
    if digits < 7 || !phone.chars().all(|c| c.is_ascii_digit() || "+- ".contains(c)) {
        return Err(ApiError::unprocessable("invalid_field", format!("phone {phone:?} is not a phone number")));
    }
    Ok(())
}

async fn register(store: SharedStore<Users>, user: User) -> Result<(StatusCode, Json<User>), ApiError> {
    validate("id", &user.user_id)?;
    validate("name", &user.name)?;
    validate_phone(&user.phone)?;
    if let Some(v) = &user.vehicle {
        validate("vehicle", v)?;
    }
    let mut store = store.lock().await;
    match store.state().by_id.get(&user.user_id) {
        Some(existing) if *existing == user => return Ok((StatusCode::OK, Json(user))),
        Some(_) => {
            return Err(ApiError::conflict(
                "id_taken",
                format!("{} is already registered with other details", user.user_id),
            ))
        }
        None => {}
    }
    store.accepting()?;
    let event = Event::new(EventBody::UserRegistered(user.clone()));
    let pending = store.commit(vec![Registered(user.clone())], vec![event]).await.map_err(storage_error)?;
    drop(store);
    pending.durable().await.map_err(storage_error)?;
    Ok((StatusCode::CREATED, Json(user)))
}

async fn register_driver(
    AxState(store): AxState<SharedStore<Users>>,
    ApiJson(body): ApiJson<RegisterDriver>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    let user = User {
        user_id: body.driver_id,
        role: Role::Driver,
        name: body.name,
        phone: body.phone,
        vehicle: Some(body.vehicle),
    };
    register(store, user).await
}

async fn register_rider(
    AxState(store): AxState<SharedStore<Users>>,
    ApiJson(body): ApiJson<RegisterRider>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    let user = User { user_id: body.rider_id, role: Role::Rider, name: body.name, phone: body.phone, vehicle: None };
    register(store, user).await
}

async fn get_user(AxState(store): AxState<SharedStore<Users>>, PathId(id): PathId) -> Result<Json<User>, ApiError> {
    let id = id.into_string();
    store
        .lock()
        .await
        .state()
        .by_id
        .get(&id)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::not_found("unknown_user", format!("no user {id} is registered")))
}
