//! trip-service: rides and trips, the system of record.
//!
//! **Matching proposes, trip-service decides.** matching-service (stateless, any number of
//! replicas) reads the candidates the matching rule picks (`GET /stations/{id}/candidates`) and
//! proposes a trip (`POST /matches`); trip-service commits it only after a compare-and-set
//! ([`check_proposal`]): every proposed ride still waiting at the station, the driver serving
//! their destinations and still having the seats. A stale proposal (another replica got there
//! first, a rider cancelled, seats were taken) is refused with 409 and changes nothing — which is
//! what makes any number of matching replicas safe. Every state change is journaled before it is
//! acknowledged.
//!
//! - [`record`]: the record ([`TripRecord`]), its journaled changes and the compare-and-set;
//! - [`api`]: the HTTP API, its requests and answers;
//! - [`expiry`]: rides that waited past their deadline.

pub mod api;
pub mod expiry;
pub mod record;

pub use api::{Candidates, CandidatesQuery, DriverView, Export, Proposal, RideRequest, ShiftRequest, Summary};
pub use record::{check_proposal, Change, TripRecord, MAX_SEATS};

use crate::api::Context;
use crate::config::ServiceName;
use crate::directory::Directory;
use crate::store::{SharedStore, Store};
use api::AppState;
use axum::Router;
use std::sync::atomic::Ordering;

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
    let expiry = tokio::spawn(expiry::expire_rides(store.clone(), ctx.config.ride_ttl, ctx.shutdown.clone()));
    let state = AppState {
        store,
        directory,
        network: ctx.config.network.clone(),
        naive_matching: ctx.config.naive_matching,
        coverage: ctx.config.coverage.clone(),
    };
    let router = api::routes(ctx, state);
    // No response shows state a crash could still take back.
    let router = router.layer(axum::middleware::from_fn_with_state(store_handle, crate::store::settled));
    Ok((router, vec![follower, expiry]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Ride, RideStatus, Shift, TripStatus};
    use crate::store::State;
    use axum::http::StatusCode;
    use expiry::wait_ms;
    use std::time::Duration;

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
