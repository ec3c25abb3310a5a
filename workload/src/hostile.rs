//! A hostile client (`hostile_per_minute` in a scenario's `[workload]`): at random moments it
//! either sends a request with a hostile id to a random route of a random service, or publishes
//! a message no service can process (undecodable bytes, or an event whose ids break the id rule)
//! to the events exchange. Every choice is drawn from the run's RNG, so a seed replays it.
//!
//! What it did goes into the history (client `hostile`): `hostile_http` with the method, path
//! and the status and whether the error body was JSON; `hostile_message` with the message id
//! and routing key once the broker confirmed it. The checker `hostile_input` then expects a
//! 4xx JSON answer to every request, and every confirmed message in a dead-letter queue.

use crate::history::{History, OpPhase};
use crate::Endpoints;
use lastmile_platform::broker::{Broker, Message};
use lastmile_platform::clock::random_u64;
use lastmile_platform::http::{path_segment, CallPolicy, ErrorBody, HttpClient, Method};
use serde_json::json;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The client name in the history.
pub const CLIENT: &str = "hostile";
/// Prefix of every message id the hostile client publishes.
pub const MESSAGE_PREFIX: &str = "hostile-";

/// Where the hostile client publishes: the broker URL and the events exchange.
#[derive(Debug, Clone)]
pub struct BrokerAccess {
    /// `amqp://...`.
    pub url: String,
    /// The events exchange.
    pub exchange: String,
}

impl BrokerAccess {
    /// The work queue of `service` (`<prefix>.<service>` beside the exchange `<prefix>.events`),
    /// whose backlog the harness samples.
    pub fn queue(&self, service: &str) -> String {
        let prefix = self.exchange.strip_suffix(".events").unwrap_or(&self.exchange);
        lastmile_platform::broker::Names::new(prefix).queue(service)
    }
}

/// Ids that break the rule in every way it has.
const HOSTILE_IDS: [&str; 9] =
    ["x?evil=1", "a/../b", "has space", "new\nline", "nul\u{0}", "pct%3F", "é", "#frag", "semi;colon"];

/// (service, method, path template with `{}` for the id, body template with `"{}"` for the id).
const ROUTES: [(Svc, &str, &str, Option<&str>); 12] = [
    (Svc::User, "GET", "/users/{}", None),
    (Svc::User, "POST", "/riders", Some(r#"{"rider_id": "{}", "name": "R", "phone": "+91 1"}"#)),
    (Svc::User, "POST", "/drivers", Some(r#"{"driver_id": "{}", "name": "D", "phone": "+91 1", "vehicle": "v"}"#)),
    (Svc::Location, "POST", "/drivers/{}/location", Some(r#"{"lat": 12.97, "lng": 77.6}"#)),
    (Svc::Location, "GET", "/stations/{}/drivers", None),
    (
        Svc::Trip,
        "POST",
        "/rides",
        Some(r#"{"ride_id": "{}", "rider_id": "rider-0", "station_id": "ST101", "destination": "ST104"}"#),
    ),
    (
        Svc::Trip,
        "POST",
        "/rides",
        Some(r#"{"ride_id": "hr", "rider_id": "{}", "station_id": "ST101", "destination": "ST104"}"#),
    ),
    (Svc::Trip, "PUT", "/drivers/{}/shift", Some(r#"{"route": ["ST101"], "destination": "ST104", "seats": 1}"#)),
    (Svc::Trip, "GET", "/stations/ST101/candidates?driver_id={}", None),
    (
        Svc::Trip,
        "POST",
        "/matches",
        Some(r#"{"proposal_id": "p", "driver_id": "d", "station_id": "ST101", "ride_ids": ["{}"]}"#),
    ),
    (Svc::Trip, "POST", "/trips/{}/complete", None),
    (Svc::Notification, "GET", "/users/{}/notifications", None),
];

#[derive(Debug, Clone, Copy)]
enum Svc {
    User,
    Location,
    Trip,
    Notification,
}

/// Routing keys the services consume.
const KEYS: [&str; 5] = ["ride.requested", "driver.near_station", "trip.updated", "match.found", "user.registered"];

fn pick<T: Copy>(from: &[T]) -> T {
    from[(random_u64() % from.len() as u64) as usize]
}

/// Act `per_minute` times a minute (exponential gaps) until `stop` resolves.
pub async fn run(
    endpoints: Endpoints,
    broker: Option<BrokerAccess>,
    per_minute: f64,
    history: Arc<History>,
    stop: impl Future<Output = ()>,
) {
    let mean_gap = 60.0 / per_minute;
    let broker_client = broker.as_ref().map(|b| Broker::new(b.url.clone()));
    let policy = CallPolicy { attempts: 1, ..CallPolicy::default() };
    // The hostile client presents the service token: a peer gone wrong reaches internal
    // endpoints, and what they take must hold up just the same. (Callers without the token
    // are refused before any handler runs; the services' in-process tests check that.)
    let client = |name: &str, url: &str| HttpClient::new(name, url, policy.clone()).with_token(endpoints.token.clone());
    let clients = [
        client("user", &endpoints.user),
        client("location", &endpoints.location),
        client("trip", &endpoints.trip),
        client("notification", &endpoints.notification),
    ];
    let mut stop = std::pin::pin!(stop);
    let mut n = 0u64;
    loop {
        // An exponential gap: -ln(U) * mean, U in (0, 1].
        let u = ((random_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let gap = Duration::from_secs_f64(-u.ln() * mean_gap);
        tokio::select! {
            biased;
            _ = &mut stop => return,
            _ = tokio::time::sleep(gap) => {}
        }
        n += 1;
        match (&broker, &broker_client, random_u64() % 3) {
            (Some(access), Some(client), 0) => publish(client, &access.exchange, n, &history).await,
            _ => request(&clients, &history).await,
        }
    }
}

async fn request(clients: &[HttpClient; 4], history: &History) {
    let (svc, method, template, body) = pick(&ROUTES);
    let id = pick(&HOSTILE_IDS);
    let long = "a".repeat(65);
    let id = if random_u64().is_multiple_of(5) { long.as_str() } else { id };
    let path = template.replace("{}", &path_segment(id));
    let body = body.map(|b| b.replace("\"{}\"", &serde_json::to_string(id).expect("a string serializes")));
    let client = &clients[svc as usize];
    history.record(CLIENT, "hostile_http", OpPhase::Invoke, json!({ "method": method, "path": path, "body": body }));
    let method: Method = method.parse().expect("a known method");
    match client.call_raw(method, &path, body.map(String::into_bytes)).await {
        Ok((status, bytes)) => {
            let json = serde_json::from_slice::<ErrorBody>(&bytes).is_ok();
            history.record(
                CLIENT,
                "hostile_http",
                OpPhase::Ok,
                json!({ "path": path, "status": status, "json_error": json }),
            );
        }
        Err(e) => {
            history.record(CLIENT, "hostile_http", OpPhase::Fail, json!({ "path": path, "error": e.to_string() }))
        }
    }
}

async fn publish(broker: &Broker, exchange: &str, n: u64, history: &History) {
    let routing_key = pick(&KEYS);
    let message_id = format!("{MESSAGE_PREFIX}{n}");
    let id = serde_json::to_string(pick(&HOSTILE_IDS)).expect("a string serializes");
    let body = match random_u64() % 2 {
        0 => format!("{{ not an event {n}").into_bytes(),
        _ => format!(
            r#"{{"event_id": {id}, "occurred_at_ms": 1, "kind": "driver_near_station", "data": {{"driver_id": {id}, "station_id": {id}}}}}"#
        )
        .into_bytes(),
    };
    let message = Message { message_id: message_id.clone(), routing_key: routing_key.into(), body, persistent: true };
    match broker.publish(exchange, message).await {
        Ok(()) => history.record(
            CLIENT,
            "hostile_message",
            OpPhase::Ok,
            json!({ "message_id": message_id, "routing_key": routing_key }),
        ),
        Err(e) => history.record(
            CLIENT,
            "hostile_message",
            OpPhase::Fail,
            json!({ "message_id": message_id, "error": e.to_string() }),
        ),
    }
}
