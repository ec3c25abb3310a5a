//! Domain events on the broker: one envelope, one routing key per kind, one durable queue per
//! consuming service.

use crate::domain::{Ride, Trip, TripStatus, User};
use lastmile_platform::broker::{Message, Names, QueueSpec, Topology};
use serde::{Deserialize, Serialize};

/// Deliveries after which a message goes to the dead-letter queue.
pub const DELIVERY_LIMIT: u32 = 10;

/// An event as published. `event_id` is what consumers deduplicate on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique per event; a republished event keeps it.
    #[serde(deserialize_with = "lastmile_platform::id::checked")]
    pub event_id: String,
    /// When the publisher committed it (ms since epoch).
    pub occurred_at_ms: u64,
    /// What happened.
    #[serde(flatten)]
    pub body: EventBody,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum EventBody {
    /// A driver or rider registered.
    UserRegistered(User),
    /// A ride request was accepted and is waiting.
    RideRequested(Ride),
    /// A driver came within the radius of a station.
    DriverNearStation {
        /// The driver.
        #[serde(deserialize_with = "lastmile_platform::id::checked")]
        driver_id: String,
        /// The station it is near.
        #[serde(deserialize_with = "lastmile_platform::id::checked")]
        station_id: String,
    },
    /// A match was committed: a trip was scheduled.
    MatchFound(Trip),
    /// A trip moved to a new state.
    TripUpdated(Trip),
    /// A ride request reached its deadline unmatched.
    RideExpired(Ride),
}

impl EventBody {
    /// The topic routing key.
    pub fn routing_key(&self) -> &'static str {
        match self {
            EventBody::UserRegistered(_) => "user.registered",
            EventBody::RideRequested(_) => "ride.requested",
            EventBody::DriverNearStation { .. } => "driver.near_station",
            EventBody::MatchFound(_) => "match.found",
            EventBody::TripUpdated(_) => "trip.updated",
            EventBody::RideExpired(_) => "ride.expired",
        }
    }
}

impl Event {
    /// A new event with a fresh id, stamped now.
    pub fn new(body: EventBody) -> Event {
        Event { event_id: lastmile_platform::clock::new_id(), occurred_at_ms: lastmile_platform::clock::now_ms(), body }
    }

    /// The broker message carrying this event (persistent).
    pub fn to_message(&self) -> Message {
        Message {
            message_id: self.event_id.clone(),
            routing_key: self.body.routing_key().to_string(),
            body: serde_json::to_vec(self).expect("events serialize"),
            persistent: true,
        }
    }

    /// Decode a delivered message; `Err` means a poison message.
    pub fn from_message(message: &Message) -> Result<Event, String> {
        serde_json::from_slice(&message.body).map_err(|e| format!("undecodable event {}: {e}", message.message_id))
    }

    /// The trip status this event reports, if it is about a trip.
    pub fn trip_status(&self) -> Option<TripStatus> {
        match &self.body {
            EventBody::MatchFound(t) | EventBody::TripUpdated(t) => Some(t.status),
            _ => None,
        }
    }
}

/// The consuming services and what they subscribe to.
pub const SUBSCRIPTIONS: &[(&str, &[&str])] = &[
    ("matching-service", &["ride.requested", "driver.near_station", "trip.updated"]),
    ("notification-service", &["match.found", "trip.updated", "ride.expired"]),
    ("trip-service", &["user.registered"]),
    ("location-service", &["user.registered"]),
];

/// The whole LastMile topology under a naming scheme. `expires` deletes unused queues after that
/// long (isolated test topologies on a shared RabbitMQ); production passes `None`.
pub fn topology(names: &Names, expires: Option<std::time::Duration>) -> Topology {
    Topology {
        exchange: names.events_exchange(),
        dead_letter_exchange: names.dead_letter_exchange(),
        queues: SUBSCRIPTIONS
            .iter()
            .map(|(service, keys)| QueueSpec {
                name: names.queue(service),
                binding_keys: keys.iter().map(|k| k.to_string()).collect(),
                delivery_limit: DELIVERY_LIMIT,
                expires_ms: expires.map(|d| d.as_millis() as u64),
            })
            .collect(),
    }
}
