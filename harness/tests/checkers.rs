//! Every checker fires on a hand-made history that breaks its rule, and stays quiet on one that
//! keeps it.

use lastmile_harness::check;
use lastmile_harness::runner::{Evidence, RunConfig};
use lastmile_services::domain::{Ride, RideStatus, Shift, Trip, TripStatus};
use lastmile_services::notification::{Inbox, Notification};
use lastmile_services::trip::Export;
use lastmile_workload::history::{Op, Phase};
use lastmile_workload::load::{Arrival, LoadPlan};
use serde_json::json;
use std::collections::BTreeMap;

const EPOCH: u64 = 1_000_000_000;

fn ride(id: &str, status: RideStatus) -> Ride {
    Ride {
        ride_id: id.into(),
        rider_id: format!("rider-{id}"),
        station_id: "ST101".into(),
        destination: "ST104".into(),
        seq: 0,
        requested_at_ms: EPOCH + 1_000,
        max_wait_ms: None,
        status,
    }
}

fn trip(id: &str, rides: &[&str], status: TripStatus, created: u64, closed: Option<u64>) -> Trip {
    Trip {
        trip_id: id.into(),
        proposal_id: format!("p-{id}"),
        driver_id: "d1".into(),
        station_id: "ST101".into(),
        ride_ids: rides.iter().map(|r| r.to_string()).collect(),
        rider_ids: rides.iter().map(|r| format!("rider-{r}")).collect(),
        status,
        created_at_ms: EPOCH + created,
        closed_at_ms: closed.map(|c| EPOCH + c),
    }
}

fn op(at_ms: u64, client: &str, action: &str, phase: Phase, detail: serde_json::Value) -> Op {
    Op { at_ms, client: client.into(), action: action.into(), phase, detail }
}

/// A small, healthy run: one ride matched and completed, everyone told.
fn healthy() -> Evidence {
    let shift = Shift { route: vec!["ST101".into(), "ST104".into()], destination: "ST104".into(), seats: 2 };
    let export = Export {
        rides: vec![ride("r1", RideStatus::Completed { trip_id: "t1".into() })],
        trips: vec![trip("t1", &["r1"], TripStatus::Completed, 2_000, Some(9_000))],
        shifts: BTreeMap::from([("d1".to_string(), shift)]),
        changes: Vec::new(),
    };
    let told = |user: &str, kind: &str, event: &str| Notification {
        event_id: event.into(),
        user_id: user.into(),
        kind: kind.into(),
        subject: "t1".into(),
        text: String::new(),
    };
    let inboxes = ["d1", "rider-r1"]
        .iter()
        .map(|u| {
            let inbox = Inbox {
                user_id: u.to_string(),
                notifications: vec![
                    told(u, "match.found", "e1"),
                    told(u, "trip.updated", "e2"),
                    told(u, "trip.updated", "e3"),
                ],
            };
            (u.to_string(), inbox)
        })
        .collect();
    let plan = LoadPlan {
        drivers: vec![],
        riders: vec!["rider-r1".into()],
        arrivals: vec![Arrival {
            at_ms: 1_000,
            ride_id: "r1".into(),
            rider_id: "rider-r1".into(),
            station_id: "ST101".into(),
            destination: "ST104".into(),
            servable: true,
        }],
    };
    Evidence {
        scenario: "hand-made".into(),
        config: RunConfig { seed: 1, random_faults: false, naive_matching: false },
        timeline: vec![],
        history: vec![
            op(1_000, "rider-r1", "request_ride", Phase::Invoke, json!({"ride_id": "r1"})),
            op(1_100, "rider-r1", "request_ride", Phase::Ok, json!({"ride_id": "r1", "status": {"state": "waiting"}})),
            op(3_000, "d1", "get_trip", Phase::Ok, json!({"trip_id": "t1", "status": "scheduled"})),
            op(4_000, "d1", "pickup", Phase::Ok, json!({"trip_id": "t1", "status": "picked_up"})),
            op(9_000, "d1", "complete", Phase::Ok, json!({"trip_id": "t1", "status": "completed"})),
        ],
        t0_ms: 0,
        heal_at_ms: 10_000,
        end_at_ms: 20_000,
        end_epoch_ms: EPOCH + 20_000,
        ride_ttl_ms: 600_000,
        plan: Some(plan),
        export: Some(export),
        inboxes,
        stats: vec![],
        scripted_violations: vec![],
        run_errors: vec![],
    }
}

fn rules(v: &[check::Violation]) -> Vec<&str> {
    v.iter().map(|v| v.rule.as_str()).collect()
}

#[test]
fn a_healthy_run_breaks_no_rule() {
    let v = check::all(&healthy());
    assert!(v.is_empty(), "{v:#?}");
}

#[test]
fn a_ride_on_two_live_trips_is_a_double_match() {
    let mut e = healthy();
    let export = e.export.as_mut().unwrap();
    export.trips.push(trip("t2", &["r1"], TripStatus::Scheduled, 5_000, None));
    let v = check::no_double_match(&e);
    assert_eq!(rules(&v), ["no_double_match"]);
    assert_eq!(v[0].entities, ["r1", "t1", "t2"]);
    // A cancelled trip gave its riders back: no double match.
    e.export.as_mut().unwrap().trips[1].status = TripStatus::Cancelled;
    assert!(check::no_double_match(&e).is_empty());
}

#[test]
fn more_riders_than_seats_at_one_moment_is_over_capacity() {
    let mut e = healthy();
    let export = e.export.as_mut().unwrap();
    export.trips.push(trip("t2", &["a", "b"], TripStatus::Scheduled, 5_000, None));
    let v = check::no_over_capacity(&e);
    assert_eq!(rules(&v), ["no_over_capacity"]);
    assert!(v[0].message.contains("3 riders with 2 seats"), "{}", v[0].message);
    assert_eq!(v[0].at_ms, Some(5_000));
    // The same trip after t1 gave its seat back is fine.
    e.export.as_mut().unwrap().trips[1].created_at_ms = EPOCH + 9_500;
    assert!(check::no_over_capacity(&e).is_empty());
}

#[test]
fn a_trip_seen_going_back_breaks_forward_only_states() {
    let mut e = healthy();
    e.history.push(op(9_500, "probe", "get_trip", Phase::Ok, json!({"trip_id": "t1", "status": "scheduled"})));
    let v = check::trip_states_forward(&e);
    assert_eq!(rules(&v), ["trip_states_forward"]);
    assert_eq!(v[0].at_ms, Some(9_500));
}

#[test]
fn an_accepted_request_missing_or_stuck_is_lost() {
    let mut e = healthy();
    e.history.push(op(5_000, "rider-r9", "request_ride", Phase::Ok, json!({"ride_id": "r9"})));
    let v = check::no_lost_request(&e);
    assert_eq!(rules(&v), ["no_lost_request"]);
    assert!(v[0].message.contains("not in the record"));
    // In the record but waiting far past its deadline.
    let mut stuck = ride("r9", RideStatus::Waiting);
    stuck.requested_at_ms = EPOCH - 700_000;
    e.export.as_mut().unwrap().rides.push(stuck);
    let v = check::no_lost_request(&e);
    assert!(v[0].message.contains("past its deadline"), "{}", v[0].message);
}

#[test]
fn the_same_event_twice_in_an_inbox_is_a_duplicate_notification() {
    let mut e = healthy();
    let inbox = e.inboxes.get_mut("d1").unwrap();
    let again = inbox.notifications[0].clone();
    inbox.notifications.push(again);
    assert_eq!(rules(&check::no_duplicate_notification(&e)), ["no_duplicate_notification"]);
}

#[test]
fn a_servable_ride_still_waiting_after_the_settle_time_breaks_liveness() {
    let mut e = healthy();
    e.export.as_mut().unwrap().rides[0].status = RideStatus::Waiting;
    let v = check::every_servable_ride_matched(&e);
    assert_eq!(rules(&v), ["every_servable_ride_matched"]);
    assert!(v[0].message.contains("10 s after the heal"), "{}", v[0].message);
    // An unservable ride may wait (until it expires).
    e.plan.as_mut().unwrap().arrivals[0].servable = false;
    assert!(check::every_servable_ride_matched(&e).is_empty());
}

#[test]
fn a_participant_never_told_about_a_match_breaks_delivery() {
    let mut e = healthy();
    e.inboxes.get_mut("rider-r1").unwrap().notifications.retain(|n| n.kind != "match.found");
    let v = check::notifications_delivered(&e);
    assert_eq!(rules(&v), ["notifications_delivered"]);
    assert_eq!(v[0].entities, ["rider-r1", "t1"]);
}

#[test]
fn a_service_not_ready_after_the_heal_breaks_liveness() {
    let mut e = healthy();
    e.history.push(op(19_000, "final:user-service", "final_ready", Phase::Ok, json!({"ready": true})));
    assert!(check::services_ready_after_heal(&e).is_empty());
    e.history.push(op(19_500, "final:notification-service", "final_ready", Phase::Fail, json!("HTTP 503")));
    let v = check::services_ready_after_heal(&e);
    assert_eq!(rules(&v), ["services_ready_after_heal"]);
    assert_eq!(v[0].entities, ["notification-service"]);
}

#[test]
fn a_service_left_with_the_wrong_replica_count_after_the_heal_breaks_the_rollback() {
    let mut e = healthy();
    let counts = |matching: serde_json::Value| {
        json!({
            "trip-service": {"want": 1, "have": 1},
            "matching-service": {"want": 1, "have": matching},
        })
    };
    e.history.push(op(11_000, "nemesis", "replicas", Phase::Ok, counts(json!(1))));
    assert!(check::replicas_restored(&e).is_empty());
    e.history.push(op(12_000, "nemesis", "replicas", Phase::Ok, counts(json!(0))));
    let v = check::replicas_restored(&e);
    assert_eq!(rules(&v), ["replicas_restored"]);
    assert_eq!(v[0].entities, ["matching-service"]);
    // A count the target could not read is not a restored one either.
    e.history.push(op(13_000, "nemesis", "replicas", Phase::Ok, counts(json!("cannot list pods"))));
    assert!(check::replicas_restored(&e)[0].message.contains("cannot list pods"));
}

#[test]
fn a_run_without_trips_proves_nothing() {
    let mut e = healthy();
    e.export.as_mut().unwrap().trips.clear();
    assert_eq!(rules(&check::workload_did_something(&e)), ["workload_did_something"]);
}

#[test]
fn a_missing_record_or_a_failed_step_fails_the_run() {
    let mut e = healthy();
    e.export = None;
    assert_eq!(rules(&check::run_completed(&e)), ["run_completed"]);
    let mut e = healthy();
    e.run_errors.push("apply t=10s kill: no such node".into());
    assert_eq!(rules(&check::run_completed(&e)), ["run_completed"]);
}

#[test]
fn an_expectation_outside_its_bounds_fails_and_names_the_phase() {
    let text = r#"
[scenario]
name = "t"
duration_s = 20
[workload]
kind = "load"
[[phase]]
name = "all"
from_s = 0
to_s = 20
[[expect]]
phase = "all"
metric = "matches"
min = 2
[[expect]]
phase = "all"
metric = "ride_requests_accepted"
min = 0.99
"#;
    let scenario = lastmile_scenarios::parse("t.toml", text).unwrap();
    let mut e = healthy();
    e.history.push(op(
        6_000,
        "rider-r1",
        "get_ride",
        Phase::Ok,
        json!({"ride_id": "r1", "status": {"state": "matched", "trip_id": "t1"}}),
    ));
    let (results, v) = check::expectations(&e, &scenario);
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].value, Some(1.0), "one ride seen matched");
    assert!(results[1].ok, "the one request was accepted");
    assert_eq!(rules(&v), ["expectation"]);
    assert!(v[0].message.contains("phase all: matches should be >= 2, was 1.000"), "{}", v[0].message);
}
