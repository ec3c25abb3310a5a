//! notification-service: what each user has been told, deduplicated by event id, so a
//! redelivered or republished event never shows twice. Not critical: while it is down its queue
//! buffers, and notifications catch up when it returns.

use crate::api::Context;
use crate::config::ServiceName;
use crate::events::{Event, EventBody};
use crate::store::{Compacted, SharedStore, State, Store};
use axum::extract::State as AxState;
use axum::routing::get;
use axum::{Json, Router};
use lastmile_platform::broker::worker::Outcome;
use lastmile_platform::coverage::RecoveryPath;
use lastmile_platform::http::PathId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;

/// One message to a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// The event it tells about (the deduplication key, with the user).
    #[serde(deserialize_with = "lastmile_platform::id::checked")]
    pub event_id: String,
    /// Who is told.
    #[serde(deserialize_with = "lastmile_platform::id::checked")]
    pub user_id: String,
    /// The event kind (`match.found`, ...).
    pub kind: String,
    /// What it is about: the trip (`match.found`, `trip.updated`) or the ride (`ride.expired`).
    #[serde(default)]
    pub subject: String,
    /// What the user reads.
    pub text: String,
}

/// `GET /users/{id}/notifications`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inbox {
    /// The user.
    #[serde(deserialize_with = "lastmile_platform::id::checked")]
    pub user_id: String,
    /// Oldest first.
    pub notifications: Vec<Notification>,
}

/// Notifications by user, and the (event, user) pairs already delivered.
#[derive(Debug, Default)]
pub struct Inboxes {
    by_user: BTreeMap<String, Vec<Notification>>,
    seen: BTreeSet<(String, String)>,
}

/// The one change: a notification was recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Notified(pub Notification);

impl State for Inboxes {
    type Change = Notified;
    fn apply(&mut self, Notified(n): &Notified) {
        if self.seen.insert((n.event_id.clone(), n.user_id.clone())) {
            self.by_user.entry(n.user_id.clone()).or_default().push(n.clone());
        }
    }
    /// Each user's notifications in order; `seen` is exactly their (event, user) pairs.
    fn compacted(&self) -> Compacted<Notified> {
        vec![std::sync::Arc::new(self.by_user.values().flatten().cloned().map(Notified).collect())]
    }
}

impl Inboxes {
    /// Whether some notification of `event_id` was recorded already (a redelivered event).
    pub fn has_seen(&self, event_id: &str) -> bool {
        self.seen.range((event_id.to_string(), String::new())..).next().is_some_and(|(e, _)| e == event_id)
    }

    /// The notifications `event` causes that were not recorded yet.
    pub fn fresh(&self, event: &Event) -> Vec<Notification> {
        let kind = event.body.routing_key().to_string();
        let mut out = Vec::new();
        let subject = match &event.body {
            EventBody::MatchFound(t) | EventBody::TripUpdated(t) => t.trip_id.clone(),
            EventBody::RideExpired(r) => r.ride_id.clone(),
            _ => String::new(),
        };
        let mut tell = |user_id: &str, text: String| {
            if !self.seen.contains(&(event.event_id.clone(), user_id.to_string())) {
                out.push(Notification {
                    event_id: event.event_id.clone(),
                    user_id: user_id.to_string(),
                    kind: kind.clone(),
                    subject: subject.clone(),
                    text,
                });
            }
        };
        match &event.body {
            EventBody::MatchFound(trip) => {
                tell(
                    &trip.driver_id,
                    format!("Pick up {} rider(s) at {} ({}).", trip.rider_ids.len(), trip.station_id, trip.trip_id),
                );
                for rider in &trip.rider_ids {
                    tell(
                        rider,
                        format!(
                            "Driver {} will pick you up at {} ({}).",
                            trip.driver_id, trip.station_id, trip.trip_id
                        ),
                    );
                }
            }
            EventBody::TripUpdated(trip) => {
                let status = serde_json::to_value(trip.status).expect("serializes");
                let text = format!("Trip {} is now {}.", trip.trip_id, status.as_str().unwrap_or("?"));
                tell(&trip.driver_id, text.clone());
                for rider in &trip.rider_ids {
                    tell(rider, text.clone());
                }
            }
            EventBody::RideExpired(ride) => {
                let reason = match &ride.status {
                    crate::domain::RideStatus::Expired { reason } => reason.clone(),
                    _ => "it expired".to_string(),
                };
                tell(&ride.rider_id, format!("Your ride {} was not matched: {reason}.", ride.ride_id));
            }
            _ => {}
        }
        out
    }
}

pub(crate) async fn start(ctx: &mut Context) -> anyhow::Result<(Router, Vec<tokio::task::JoinHandle<()>>)> {
    let path = ctx.config.data_dir.join("notification-service.journal");
    let store: SharedStore<Inboxes> = Store::open(&path, ctx).await?;
    let store_handle = store.lock().await.journal_handle();
    ctx.ready_flag().store(true, Ordering::SeqCst);
    let worker = {
        let (store, coverage) = (store.clone(), ctx.config.coverage.clone());
        ctx.spawn_consumer(ServiceName::Notification, move |event| {
            let (store, coverage) = (store.clone(), coverage.clone());
            async move {
                let mut store = store.lock().await;
                let fresh = store.state().fresh(&event);
                if fresh.is_empty() {
                    if store.state().has_seen(&event.event_id) {
                        coverage.hit(RecoveryPath::DuplicateIgnored);
                    }
                    return Outcome::Done;
                }
                let committed = store.commit(fresh.into_iter().map(Notified).collect(), vec![]).await;
                drop(store);
                match async { committed?.durable().await }.await {
                    Ok(()) => Outcome::Done,
                    Err(e) => Outcome::Retry(e.to_string()),
                }
            }
        })
    };
    let router = Router::new().route("/users/{id}/notifications", get(inbox)).with_state(store);
    // No response shows state a crash could still take back.
    let router = router.layer(axum::middleware::from_fn_with_state(store_handle, crate::store::settled));
    Ok((router, vec![worker]))
}

async fn inbox(AxState(store): AxState<SharedStore<Inboxes>>, PathId(user_id): PathId) -> Json<Inbox> {
    let user_id = user_id.into_string();
    let notifications = store.lock().await.state().by_user.get(&user_id).cloned().unwrap_or_default();
    Json(Inbox { user_id, notifications })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Trip, TripStatus};

    #[test]
    fn consuming_the_same_event_twice_notifies_once() {
        let trip = Trip {
            trip_id: "t1".into(),
            proposal_id: "p1".into(),
            driver_id: "d1".into(),
            station_id: "ST101".into(),
            ride_ids: vec!["r1".into()],
            rider_ids: vec!["u1".into()],
            status: TripStatus::Scheduled,
            created_at_ms: 0,
            closed_at_ms: None,
        };
        let event = Event { event_id: "e1".into(), occurred_at_ms: 0, body: EventBody::MatchFound(trip) };
        let mut inboxes = Inboxes::default();
        let first = inboxes.fresh(&event);
        assert_eq!(first.len(), 2, "driver and rider are told");
        for n in first {
            inboxes.apply(&Notified(n));
        }
        assert!(inboxes.fresh(&event).is_empty(), "a redelivery adds nothing");
        // Even a replayed change is idempotent.
        inboxes.apply(&Notified(Notification {
            event_id: "e1".into(),
            user_id: "u1".into(),
            kind: "x".into(),
            subject: "t1".into(),
            text: "x".into(),
        }));
        assert_eq!(inboxes.by_user["u1"].len(), 1);
    }
    #[test]
    fn the_compacted_inboxes_rebuild_the_same_inboxes_and_the_same_deduplication() {
        let n = |event: &str, user: &str| Notification {
            event_id: event.into(),
            user_id: user.into(),
            kind: "match.found".into(),
            subject: "t1".into(),
            text: event.into(),
        };
        let mut inboxes = Inboxes::default();
        for (event, user) in [("e2", "u2"), ("e1", "u1"), ("e1", "u2"), ("e3", "u1"), ("e1", "u1")] {
            inboxes.apply(&Notified(n(event, user)));
        }
        let mut rebuilt = Inboxes::default();
        for change in inboxes.compacted().iter().flat_map(|c| c.iter()) {
            rebuilt.apply(change);
        }
        assert_eq!(rebuilt.by_user, inboxes.by_user, "each inbox, in its order");
        assert_eq!(rebuilt.seen, inboxes.seen);
        assert_eq!(rebuilt.by_user["u1"].iter().map(|n| n.text.as_str()).collect::<Vec<_>>(), ["e1", "e3"]);
        assert!(rebuilt.has_seen("e1") && !rebuilt.has_seen("e4"));
    }
}
