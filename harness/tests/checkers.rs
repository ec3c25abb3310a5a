//! Every checker fires on a hand-made history that breaks its rule, and stays quiet on one that
//! keeps it.

use lastmile_harness::check;
use lastmile_harness::runner::{BacklogSample, Evidence, RunConfig};
use lastmile_scenarios::faults::TimelineStep;
use lastmile_services::domain::{Ride, RideStatus, Shift, Trip, TripStatus};
use lastmile_services::notification::{Inbox, Notification};
use lastmile_services::trip::{Change, Export};
use lastmile_workload::history::{Op, OpPhase};
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

fn op(at_ms: u64, client: &str, action: &str, phase: OpPhase, detail: serde_json::Value) -> Op {
    Op { at_ms, client: client.into(), action: action.into(), phase, detail }
}

fn moved(trip_id: &str, status: TripStatus, at: u64) -> Change {
    Change::TripMoved { trip_id: trip_id.into(), status, at_ms: EPOCH + at }
}

/// A small, healthy run: one ride matched and completed, everyone told.
fn healthy() -> Evidence {
    let shift = Shift { route: vec!["ST101".into(), "ST104".into()], destination: "ST104".into(), seats: 2 };
    let export = Export {
        rides: vec![ride("r1", RideStatus::Completed { trip_id: "t1".into() })],
        trips: vec![trip("t1", &["r1"], TripStatus::Completed, 2_000, Some(9_000))],
        shifts: BTreeMap::from([("d1".to_string(), shift.clone())]),
        changes: vec![
            Change::ShiftSet { driver_id: "d1".into(), shift },
            Change::RideAccepted { ride: ride("r1", RideStatus::Waiting) },
            Change::TripCommitted { trip: trip("t1", &["r1"], TripStatus::Scheduled, 2_000, None) },
            moved("t1", TripStatus::PickedUp, 4_000),
            moved("t1", TripStatus::Completed, 9_000),
        ],
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
        config: RunConfig { seed: 1, random_faults: false, naive_matching: false, planted_bug: false },
        timeline: vec![],
        history: vec![
            op(1_000, "rider-r1", "request_ride", OpPhase::Invoke, json!({"ride_id": "r1"})),
            op(
                1_100,
                "rider-r1",
                "request_ride",
                OpPhase::Ok,
                json!({"ride_id": "r1", "status": {"state": "waiting"}}),
            ),
            op(3_000, "d1", "get_trip", OpPhase::Ok, json!({"trip_id": "t1", "status": "scheduled"})),
            op(4_000, "d1", "pickup", OpPhase::Ok, json!({"trip_id": "t1", "status": "picked_up"})),
            op(9_000, "d1", "complete", OpPhase::Ok, json!({"trip_id": "t1", "status": "completed"})),
        ],
        t0_ms: 0,
        heal_at_ms: 10_000,
        end_at_ms: 20_000,
        end_epoch_ms: EPOCH + 20_000,
        ride_ttl_ms: 600_000,
        plan: Some(plan),
        export: Some(export),
        inboxes,
        unread_inboxes: BTreeMap::new(),
        stats: vec![],
        scripted_violations: vec![],
        run_errors: vec![],
        coverage: None,
        dead_letters: None,
        backlog: vec![],
        service_time: BTreeMap::new(),
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
    e.history.push(op(9_500, "probe", "get_trip", OpPhase::Ok, json!({"trip_id": "t1", "status": "scheduled"})));
    let v = check::trip_states_forward(&e);
    assert_eq!(rules(&v), ["trip_states_forward"]);
    assert_eq!(v[0].at_ms, Some(9_500));
}

#[test]
fn an_accepted_request_missing_or_stuck_is_lost() {
    let mut e = healthy();
    e.history.push(op(5_000, "rider-r9", "request_ride", OpPhase::Ok, json!({"ride_id": "r9"})));
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
fn an_inbox_that_could_not_be_read_is_named_once_and_not_called_never_told() {
    let mut e = healthy();
    let owed_to_rider =
        check::owed_notifications(e.export.as_ref().unwrap()).into_iter().filter(|o| o.user == "rider-r1").count();
    assert!(owed_to_rider >= 2, "the fixture owes the rider a match and a completion");
    e.inboxes.remove("rider-r1");
    e.unread_inboxes.insert("rider-r1".into(), "circuit breaker open".into());
    let v = check::notifications_delivered(&e);
    assert_eq!(rules(&v), ["notifications_delivered"], "one violation for the unread inbox, not one per notification");
    assert_eq!(v[0].entities, ["rider-r1"]);
    assert!(
        v[0].message.contains("could not be read") && v[0].message.contains("circuit breaker open"),
        "{}",
        v[0].message
    );
    assert!(!v[0].message.contains("never told"), "{}", v[0].message);
}

#[test]
fn a_service_not_ready_after_the_heal_breaks_liveness() {
    let mut e = healthy();
    e.history.push(op(19_000, "final:user-service", "final_ready", OpPhase::Ok, json!({"ready": true})));
    assert!(check::services_ready_after_heal(&e).is_empty());
    e.history.push(op(19_500, "final:notification-service", "final_ready", OpPhase::Fail, json!("HTTP 503")));
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
    e.history.push(op(11_000, "nemesis", "replicas", OpPhase::Ok, counts(json!(1))));
    assert!(check::replicas_restored(&e).is_empty());
    e.history.push(op(12_000, "nemesis", "replicas", OpPhase::Ok, counts(json!(0))));
    let v = check::replicas_restored(&e);
    assert_eq!(rules(&v), ["replicas_restored"]);
    assert_eq!(v[0].entities, ["matching-service"]);
    // A count the target could not read is not a restored one either.
    e.history.push(op(13_000, "nemesis", "replicas", OpPhase::Ok, counts(json!("cannot list pods"))));
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

/// A step the target could not carry out is named in the report (and its human summary), so a
/// real-world run that skipped a fault never reads as if it had carried it out.
#[test]
fn skipped_steps_are_named_in_the_report() {
    let scenario =
        lastmile_scenarios::parse("t.toml", "[scenario]\nname = \"t\"\nduration_s = 20\n[workload]\nkind = \"load\"\n")
            .unwrap();
    let mut e = healthy();
    let report = lastmile_harness::report::judge(&scenario, &e);
    assert!(report.skipped.is_empty(), "nothing skipped: {:?}", report.skipped);
    assert!(!lastmile_harness::report::human(&report, None).contains("skipped"));
    e.history.push(op(
        5_000,
        "nemesis",
        "skip",
        OpPhase::Ok,
        json!({ "step": "t=   5.0s crash          trip-service point=mid-sync", "why": "not supported by this target" }),
    ));
    let report = lastmile_harness::report::judge(&scenario, &e);
    assert_eq!(report.skipped, ["t=   5.0s crash          trip-service point=mid-sync"]);
    let human = lastmile_harness::report::human(&report, None);
    assert!(human.contains("skipped (not possible on this target): t=   5.0s crash"), "{human}");
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
        OpPhase::Ok,
        json!({"ride_id": "r1", "status": {"state": "matched", "trip_id": "t1"}}),
    ));
    let (results, v) = check::expectations(&e, &scenario);
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].value, Some(1.0), "one ride seen matched");
    assert!(results[1].ok, "the one request was accepted");
    assert_eq!(rules(&v), ["expectation"]);
    assert!(v[0].message.contains("phase all: matches should be >= 2, was 1.000"), "{}", v[0].message);
}

/// Two phases of 20 s and 40 s: `five` must match at least twice as many rides per minute as
/// `one`, and the backlog must fall in `five`.
const CAPACITY: &str = r#"
[scenario]
name = "t"
duration_s = 60
[workload]
kind = "load"
[[phase]]
name = "one"
from_s = 0
to_s = 20
[[phase]]
name = "five"
from_s = 20
to_s = 60
[[expect]]
phase = "five"
metric = "matches_per_minute"
ratio_of = "one"
min = 2.0
[[expect]]
phase = "five"
metric = "backlog_change"
max = -1
"#;

/// Riders seen matched at these seconds.
fn matched_at(e: &mut Evidence, seconds: &[u64]) {
    for (i, s) in seconds.iter().enumerate() {
        let ride = json!({"ride_id": format!("m{i}"), "status": {"state": "matched", "trip_id": "t1"}});
        e.history.push(op(s * 1000, "rider-m", "get_ride", OpPhase::Ok, ride));
    }
}

#[test]
fn a_ratio_of_another_phase_and_a_falling_backlog_are_judged() {
    let scenario = lastmile_scenarios::parse("t.toml", CAPACITY).unwrap();
    let backlog = |pairs: &[(u64, u64)]| -> Vec<BacklogSample> {
        pairs.iter().map(|(s, messages)| BacklogSample { at_ms: s * 1000, messages: *messages }).collect()
    };
    // one: 1 match in 20 s (3/min); five: 4 matches in 40 s (6/min): twice; backlog 30 -> 2.
    let mut e = healthy();
    e.history.retain(|op| op.action != "get_ride");
    matched_at(&mut e, &[10, 25, 35, 45, 55]);
    e.backlog = backlog(&[(0, 0), (20, 30), (40, 12), (60, 2)]);
    let (results, v) = check::expectations(&e, &scenario);
    assert!(v.is_empty(), "{v:#?}");
    assert_eq!(results[0].value, Some(2.0), "6 per minute against 3");
    assert_eq!(results[0].ratio_of.as_deref(), Some("one"));
    assert_eq!(results[1].value, Some(-28.0), "from 30 to 2");

    // Three matches in five (4.5/min, 1.5x), and a backlog that grows: both fail, named.
    let mut e = healthy();
    e.history.retain(|op| op.action != "get_ride");
    matched_at(&mut e, &[10, 25, 35, 45]);
    e.backlog = backlog(&[(20, 30), (60, 41)]);
    let (_, v) = check::expectations(&e, &scenario);
    assert_eq!(rules(&v), ["expectation", "expectation"]);
    assert!(
        v[0].message.contains("matches_per_minute should be >= 2 x phase one's, was 1.500 x (4.500 against 3.000)"),
        "{}",
        v[0].message
    );
    assert!(v[1].message.contains("backlog_change should be <= -1, was 11.000"), "{}", v[1].message);

    // Nothing matched in one and some in five: above every multiple of zero. No samples: the
    // backlog cannot be judged, and a bound on nothing fails.
    let mut e = healthy();
    e.history.retain(|op| op.action != "get_ride");
    matched_at(&mut e, &[25]);
    let (results, v) = check::expectations(&e, &scenario);
    assert!(results[0].ok && results[0].note.as_deref().is_some_and(|n| n.contains("against 0")), "{results:?}");
    assert_eq!(rules(&v), ["expectation"]);
    assert!(v[0].message.contains("backlog_change should be <= -1, was nothing to measure"), "{}", v[0].message);
}

#[test]
fn prompt_match_is_not_judged_when_matching_has_a_service_time() {
    // A driver at the station and a ride that waits: a prompt-match violation ...
    let e = driver_at_the_station(13_000);
    assert_eq!(rules(&check::prompt_match(&e)), ["prompt_match"]);
    // ... unless the scenario bounded matching's capacity on purpose.
    let mut e = driver_at_the_station(13_000);
    e.service_time.insert(
        "matching-service".into(),
        lastmile_platform::capacity::ServiceTime { mean_ms: 1000, jitter_ms: 0, concurrency: 1 },
    );
    assert!(check::prompt_match(&e).is_empty());
}

/// A phase 0..100 s in which ride requests sent from 40 s to 50 s failed.
fn failed_requests_during_an_outage() -> (lastmile_scenarios::Scenario, Evidence) {
    let text = r#"
[scenario]
name = "t"
duration_s = 100
[workload]
kind = "load"
[[phase]]
name = "all"
from_s = 0
to_s = 100
[[expect]]
phase = "all"
metric = "ride_requests_accepted"
min = 0.99
"#;
    let scenario = lastmile_scenarios::parse("t.toml", text).unwrap();
    let mut e = healthy();
    for (i, at) in (40_000..50_000).step_by(2_000).enumerate() {
        let id = format!("lost-{i}");
        e.history.push(op(at, "rider-x", "request_ride", OpPhase::Invoke, json!({"ride_id": id})));
        e.history.push(op(at + 100, "rider-x", "request_ride", OpPhase::Fail, json!({"ride_id": id})));
    }
    (scenario, e)
}

fn kill(at_s: f64, for_s: f64, target: &str, origin: lastmile_scenarios::faults::Origin) -> TimelineStep {
    TimelineStep {
        target: Some(target.into()),
        for_s: Some(for_s),
        ..TimelineStep::new(at_s, lastmile_scenarios::Action::Kill, origin)
    }
}

#[test]
fn an_expectation_is_judged_on_the_time_random_faults_left_its_services_alone() {
    use lastmile_scenarios::faults::Origin;
    let (scenario, mut e) = failed_requests_during_an_outage();
    let (results, v) = check::expectations(&e, &scenario);
    assert_eq!(rules(&v), ["expectation"], "without an excuse the failures count");
    assert_eq!(results[0].judged_share, 1.0);

    // A random kill of trip-service from 38 s for 5 s (+15 s to recover) covers the failures.
    e.timeline.push(kill(38.0, 5.0, "trip-service", Origin::Random));
    let (results, v) = check::expectations(&e, &scenario);
    assert!(v.is_empty(), "{v:?}");
    assert!((results[0].judged_share - 0.8).abs() < 1e-9, "{}", results[0].judged_share);
    assert!(results[0].note.as_deref().is_some_and(|n| n.contains("trip-service") && n.contains("20%")));

    // The same kill as the scenario's own step is what the expectation is about: no excuse.
    e.timeline[0].origin = Origin::Scenario;
    assert_eq!(rules(&check::expectations(&e, &scenario).1), ["expectation"]);

    // A random fault on a service the metric does not depend on excuses nothing.
    e.timeline[0] = kill(38.0, 5.0, "notification-service", Origin::Random);
    assert_eq!(rules(&check::expectations(&e, &scenario).1), ["expectation"]);

    // Random faults over most of the phase: not judged at all, and said so.
    e.timeline[0] = kill(0.0, 80.0, "trip-service", Origin::Random);
    let (results, v) = check::expectations(&e, &scenario);
    assert!(v.is_empty() && results[0].ok && results[0].value.is_none());
    assert!(results[0].note.as_deref().is_some_and(|n| n.contains("not judged")));
}

/// A fault is excused for as long as it really lasted: the harness records when it applied and
/// undid each step, and a step undone late (a slow target, a busy runner) stretches the excuse.
#[test]
fn a_fault_undone_late_is_excused_for_as_long_as_it_really_lasted() {
    use lastmile_scenarios::faults::Origin;
    let mut e = healthy();
    e.timeline = vec![kill(100.0, 5.0, "trip-service", Origin::Random)];
    let planned = check::disturbed(&e, &["trip-service"]);
    assert_eq!((planned[0].from_ms, planned[0].to_ms), (100_000, 120_000), "5 s + 15 s to recover");

    e.history.push(op(100_000, "nemesis", "apply", OpPhase::Invoke, json!({"step": "kill", "index": 0})));
    e.history.push(op(100_010, "nemesis", "apply", OpPhase::Ok, json!("killed")));
    e.history.push(op(100_500, "rider-x", "request_ride", OpPhase::Invoke, json!({})));
    e.history.push(op(150_000, "nemesis", "undo", OpPhase::Invoke, json!({"step": "kill", "index": 0})));
    e.history.push(op(151_000, "nemesis", "undo", OpPhase::Ok, json!("restarted")));
    let real = check::disturbed(&e, &["trip-service"]);
    assert_eq!((real[0].from_ms, real[0].to_ms), (100_000, 166_000), "undone at 151 s, + 15 s");

    // Undone early (never happens, but never shortens the excuse either).
    e.history.retain(|op| op.action != "undo");
    e.history.push(op(101_000, "nemesis", "undo", OpPhase::Invoke, json!({"step": "kill", "index": 0})));
    e.history.push(op(101_000, "nemesis", "undo", OpPhase::Ok, json!("restarted")));
    assert_eq!(check::disturbed(&e, &["trip-service"])[0].to_ms, 120_000);
}

#[test]
fn hostile_input_must_get_a_4xx_json_answer_and_its_poison_must_be_dead_lettered() {
    let mut e = healthy();
    let http = |status: u64, json: bool| {
        op(
            5_000,
            "hostile",
            "hostile_http",
            OpPhase::Ok,
            json!({"path": "/users/x%3Fevil", "status": status, "json_error": json}),
        )
    };
    e.history.push(http(422, true));
    e.history.push(op(5_000, "hostile", "hostile_http", OpPhase::Fail, json!({"path": "/users/a", "error": "down"})));
    e.history.push(op(
        6_000,
        "hostile",
        "hostile_message",
        OpPhase::Ok,
        json!({"message_id": "hostile-7", "routing_key": "ride.requested"}),
    ));
    e.dead_letters = Some(BTreeMap::from([(
        "lastmile.matching-service.dead".to_string(),
        vec!["hostile-7 (ride.requested)".to_string()],
    )]));
    assert!(check::hostile_input(&e).is_empty(), "{:?}", check::hostile_input(&e));
    assert!(check::no_dead_letter(&e).is_empty(), "the hostile client's dead letters are expected");

    e.history.push(http(500, true));
    e.history.push(http(404, false));
    let v = check::hostile_input(&e);
    assert_eq!(rules(&v), ["hostile_input", "hostile_input"]);
    assert!(v[0].message.contains("got 500"), "{}", v[0].message);
    assert!(v[1].message.contains("without a JSON error"), "{}", v[1].message);

    e.history.truncate(e.history.len() - 2);
    e.dead_letters = Some(BTreeMap::from([("lastmile.matching-service.dead".to_string(), vec![])]));
    let v = check::hostile_input(&e);
    assert_eq!(rules(&v), ["hostile_input"]);
    assert!(v[0].message.contains("hostile-7") && v[0].message.contains("no dead-letter queue"), "{}", v[0].message);
}

#[test]
fn a_message_left_in_a_dead_letter_queue_is_work_given_up() {
    let mut e = healthy();
    e.dead_letters = Some(BTreeMap::from([("lastmile.matching-service.dead".to_string(), vec![])]));
    assert!(check::no_dead_letter(&e).is_empty(), "empty dead-letter queues are fine");
    e.dead_letters = Some(BTreeMap::from([(
        "lastmile.matching-service.dead".to_string(),
        vec!["ev-1 (driver.near_station)".to_string()],
    )]));
    let v = check::no_dead_letter(&e);
    assert_eq!(rules(&v), ["no_dead_letter"]);
    assert!(v[0].message.contains("ev-1 (driver.near_station)"), "{}", v[0].message);
}

/// A poison step's message must be in its target's dead-letter queue at the end (only the
/// delivery limit takes a poison away), and nothing may be dead-lettered beside it. A poison
/// step the target skipped is owed nothing.
#[test]
fn a_poison_must_die_alone_in_its_targets_dead_letter_queue() {
    let mut e = healthy();
    let step = TimelineStep {
        target: Some("matching-service".into()),
        ..TimelineStep::new(120.0, lastmile_scenarios::Action::Poison, lastmile_scenarios::faults::Origin::Random)
    };
    assert_eq!(step.poison_message_id().as_deref(), Some("poison-matching-service-120000"));
    e.timeline = vec![step];
    let dead = |letters: &[&str]| {
        Some(BTreeMap::from([(
            "lastmile.matching-service.dead".to_string(),
            letters.iter().map(|l| l.to_string()).collect(),
        )]))
    };
    e.dead_letters = dead(&[]);
    assert!(check::no_dead_letter(&e).is_empty(), "a step never applied (skipped) is owed nothing");

    e.history.push(op(120_000, "nemesis", "apply", OpPhase::Invoke, json!({"step": "poison", "index": 0})));
    e.history.push(op(120_010, "nemesis", "apply", OpPhase::Ok, json!("poison message on its way")));
    let v = check::no_dead_letter(&e);
    assert_eq!(rules(&v), ["no_dead_letter"]);
    assert!(
        v[0].message.contains("poison-matching-service-120000") && v[0].message.contains("delivery limit"),
        "{}",
        v[0].message
    );

    e.dead_letters = dead(&["poison-matching-service-120000 (ride.requested)"]);
    assert!(check::no_dead_letter(&e).is_empty(), "{:?}", check::no_dead_letter(&e));

    e.dead_letters = dead(&["poison-matching-service-120000 (ride.requested)", "ev-3 (driver.near_station)"]);
    let v = check::no_dead_letter(&e);
    assert_eq!(rules(&v), ["no_dead_letter"]);
    assert!(v[0].message.contains("ev-3 (driver.near_station)"), "an innocent beside the poison: {}", v[0].message);
}

/// The healthy run's change log, to extend with a history of one's own.
fn log(e: &mut Evidence) -> &mut Vec<Change> {
    &mut e.export.as_mut().unwrap().changes
}

/// A ride accepted at `at` ms, `seq`-th in line at ST101 for ST104.
fn accepted(id: &str, seq: u64, at: u64) -> Change {
    Change::RideAccepted { ride: Ride { seq, requested_at_ms: EPOCH + at, ..ride(id, RideStatus::Waiting) } }
}

fn committed(id: &str, rides: &[&str], at: u64) -> Change {
    Change::TripCommitted { trip: trip(id, rides, TripStatus::Scheduled, at, None) }
}

#[test]
fn a_ride_accepted_later_with_no_higher_seq_breaks_first_come_first_served() {
    let mut e = healthy();
    assert!(check::matching_rule(&e).is_empty());
    log(&mut e).push(accepted("r2", 0, 3_000));
    let v = check::matching_rule(&e);
    assert_eq!(rules(&v), ["matching_rule"], "{v:?}");
    assert!(v[0].message.contains("r2 was accepted after ride r1 but has seq 0"), "{}", v[0].message);
}

#[test]
fn a_trip_taking_a_ride_not_waiting_at_its_station_breaks_the_matching_rule() {
    let mut e = healthy();
    let mut elsewhere = accepted("r2", 1, 10_000);
    if let Change::RideAccepted { ride } = &mut elsewhere {
        ride.station_id = "ST102".into();
    }
    log(&mut e).extend([elsewhere, committed("t2", &["r2"], 11_000)]);
    let v = check::matching_rule(&e);
    assert_eq!(rules(&v), ["matching_rule"]);
    assert_eq!(v[0].entities, ["r2", "t2", "d1"]);
    assert!(v[0].message.starts_with("not waiting:") && v[0].message.contains("waiting at ST102"), "{}", v[0].message);
    assert_eq!(v[0].at_ms, Some(11_000));

    // A ride already on a live trip is not waiting either: a double match.
    let mut e = healthy();
    log(&mut e).extend([accepted("r2", 1, 10_000), committed("t2", &["r2"], 11_000), committed("t3", &["r2"], 12_000)]);
    let v = check::matching_rule(&e);
    assert_eq!(v.len(), 1, "{v:#?}");
    assert!(v[0].message.contains("it was on trip t2"), "{}", v[0].message);
}

#[test]
fn a_trip_taking_a_ride_the_driver_does_not_serve_breaks_the_matching_rule() {
    let mut e = healthy();
    let mut airport = accepted("r2", 1, 10_000);
    if let Change::RideAccepted { ride } = &mut airport {
        ride.destination = "Airport".into();
    }
    log(&mut e).extend([airport, committed("t2", &["r2"], 11_000)]);
    let v = check::matching_rule(&e);
    assert_eq!(rules(&v), ["matching_rule"]);
    assert!(
        v[0].message.starts_with("destination not served:") && v[0].message.contains("Airport"),
        "{}",
        v[0].message
    );
}

#[test]
fn a_trip_over_the_driver_s_free_seats_breaks_the_matching_rule() {
    let mut e = healthy();
    // d1 has 2 seats; t2 holds one of them when t3 takes two more.
    log(&mut e).extend([
        accepted("r2", 1, 10_000),
        accepted("r3", 2, 10_100),
        accepted("r4", 3, 10_200),
        committed("t2", &["r2"], 11_000),
        committed("t3", &["r3", "r4"], 12_000),
    ]);
    let v = check::matching_rule(&e);
    assert_eq!(rules(&v), ["matching_rule"]);
    assert_eq!(v[0].entities, ["r4", "t3", "d1"], "the ride beyond the free seat");
    assert!(
        v[0].message.starts_with("over the free seats:") && v[0].message.contains("1 free seats"),
        "{}",
        v[0].message
    );
    // Once t2 completed its seat is free again: no violation.
    let changes = log(&mut e);
    let t3 = changes.pop().unwrap();
    changes.extend([moved("t2", TripStatus::PickedUp, 11_500), moved("t2", TripStatus::Completed, 11_800), t3]);
    assert!(check::matching_rule(&e).is_empty());
}

#[test]
fn a_ride_passed_over_for_a_later_one_breaks_first_come_first_served() {
    let mut e = healthy();
    log(&mut e).extend([accepted("r2", 1, 10_000), accepted("r3", 2, 10_100), committed("t2", &["r3"], 11_000)]);
    let v = check::matching_rule(&e);
    assert_eq!(rules(&v), ["matching_rule"]);
    assert_eq!(v[0].entities, ["r2", "r3", "t2", "d1"]);
    assert!(v[0].message.starts_with("first come first served:"), "{}", v[0].message);
    assert!(v[0].message.contains(r#"the rule picks ["r2", "r3"]"#), "{}", v[0].message);
}

#[test]
fn a_ride_back_in_line_after_the_taken_one_was_accepted_may_be_passed_over() {
    let mut e = healthy();
    // r2 goes back to waiting (its trip cancelled) after r3 was accepted: the matcher may have
    // read its candidates before r2 was back, so a trip of r3 alone keeps the rule.
    log(&mut e).extend([
        accepted("r2", 1, 10_000),
        committed("t2", &["r2"], 10_500),
        accepted("r3", 2, 10_600),
        moved("t2", TripStatus::Cancelled, 10_700),
        committed("t3", &["r3"], 11_000),
    ]);
    assert!(check::matching_rule(&e).is_empty(), "{:#?}", check::matching_rule(&e));
    // Had r2 been back before r3 was accepted, passing it over breaks the rule.
    let mut e = healthy();
    log(&mut e).extend([
        accepted("r2", 1, 10_000),
        committed("t2", &["r2"], 10_500),
        moved("t2", TripStatus::Cancelled, 10_550),
        accepted("r3", 2, 10_600),
        committed("t3", &["r3"], 11_000),
    ]);
    assert_eq!(rules(&check::matching_rule(&e)), ["matching_rule"]);
}

#[test]
fn a_trip_smaller_than_the_oracle_s_pick_keeps_the_rule() {
    let mut e = healthy();
    // Two seats free and two riders waiting, but r3 arrived after the matcher read r2 alone.
    log(&mut e).extend([accepted("r2", 1, 10_000), accepted("r3", 2, 10_100), committed("t2", &["r2"], 11_000)]);
    assert!(check::matching_rule(&e).is_empty(), "{:#?}", check::matching_rule(&e));
}

#[test]
fn a_trip_missing_from_the_change_log_cannot_be_judged_and_breaks_the_matching_rule() {
    let mut e = healthy();
    log(&mut e).retain(|c| !matches!(c, Change::TripCommitted { .. }));
    let v = check::matching_rule(&e);
    assert_eq!(rules(&v), ["matching_rule"]);
    assert_eq!(v[0].entities, ["t1"]);
    assert!(v[0].message.contains("not in its change log"), "{}", v[0].message);
}

#[test]
fn a_ride_expiring_before_its_deadline_breaks_expiry() {
    let mut e = healthy();
    let expired = |at: u64| Change::RideExpired { ride_id: "r2".into(), reason: "no driver".into(), at_ms: EPOCH + at };
    // r2 asked to wait 30 s from 10 s: its deadline is 40 s.
    let mut asked = accepted("r2", 1, 10_000);
    if let Change::RideAccepted { ride } = &mut asked {
        ride.max_wait_ms = Some(30_000);
    }
    log(&mut e).extend([asked, expired(39_999)]);
    let v = check::expiry(&e);
    assert_eq!(rules(&v), ["expiry"]);
    assert_eq!(v[0].entities, ["r2", "rider-r2"]);
    assert!(v[0].message.contains("1 ms before its deadline"), "{}", v[0].message);
    log(&mut e).pop();
    log(&mut e).push(expired(40_000));
    assert!(check::expiry(&e).is_empty(), "at the deadline exactly is in time");

    // Without a wait of its own a ride has the run's deadline (600 s here).
    let mut e = healthy();
    log(&mut e).extend([accepted("r2", 1, 10_000), expired(40_000)]);
    assert!(check::expiry(&e)[0].message.contains("570000 ms before its deadline"), "{:?}", check::expiry(&e));
}

#[test]
fn an_unservable_ride_on_a_trip_breaks_expiry() {
    let mut e = healthy();
    e.plan.as_mut().unwrap().arrivals[0].servable = false;
    let v = check::expiry(&e);
    assert_eq!(rules(&v), ["expiry"]);
    assert_eq!(v[0].entities, ["r1", "t1", "d1"]);
    assert_eq!(v[0].at_ms, Some(2_000));
}

/// The healthy run with driver d1 at ST101 from 1.5 s to 8 s (r1 waits there from 1 s), its
/// trip committed at `commit_ms`, and nothing disturbed until 15 s.
fn driver_at_the_station(commit_ms: u64) -> Evidence {
    let mut e = healthy();
    e.heal_at_ms = 15_000;
    let at = |ms: u64, station: Option<&str>| {
        op(
            ms,
            "d1",
            "location",
            OpPhase::Ok,
            json!({"driver_id": "d1", "near_station": station, "updated_at_ms": EPOCH + ms}),
        )
    };
    e.history.extend([at(1_500, Some("ST101")), at(8_000, None)]);
    let log = log(&mut e);
    log[2] = Change::TripCommitted { trip: trip("t1", &["r1"], TripStatus::Scheduled, commit_ms, None) };
    e
}

#[test]
fn a_driver_at_a_station_with_seats_while_a_rider_waits_unmatched_breaks_prompt_match() {
    assert!(check::prompt_match(&driver_at_the_station(2_000)).is_empty(), "matched 0.5 s after the arrival");

    let e = driver_at_the_station(13_000);
    let v = check::prompt_match(&e);
    assert_eq!(rules(&v), ["prompt_match"]);
    assert_eq!(v[0].entities, ["r1", "d1", "ST101"]);
    assert_eq!(v[0].at_ms, Some(1_500));
    assert!(v[0].message.contains("d1 reached ST101 with 2 free seats"), "{}", v[0].message);

    // Anything disturbed around it (here a scenario step) and the arrival is not judged.
    let mut disturbed = driver_at_the_station(13_000);
    disturbed.timeline.push(kill(0.5, 1.0, "notification-service", lastmile_scenarios::faults::Origin::Scenario));
    assert!(check::prompt_match(&disturbed).is_empty());

    // A driver that moves on within 2 s is not owed a match.
    let mut passing = driver_at_the_station(13_000);
    let left = passing.history.len() - 1;
    passing.history[left].detail["updated_at_ms"] = json!(EPOCH + 3_000);
    assert!(check::prompt_match(&passing).is_empty());

    // A ride requested while a driver is there counts too.
    let mut requested = driver_at_the_station(13_000);
    requested.history.retain(|op| op.detail["near_station"] != json!("ST101"));
    requested.history.push(op(
        500,
        "d1",
        "location",
        OpPhase::Ok,
        json!({"driver_id": "d1", "near_station": "ST101", "updated_at_ms": EPOCH + 500}),
    ));
    let v = check::prompt_match(&requested);
    assert_eq!(rules(&v), ["prompt_match"]);
    assert!(v[0].message.contains("r1 was requested at ST101 while d1 was there"), "{}", v[0].message);
}

#[test]
fn the_html_report_marks_every_step_and_violation_and_escapes_what_it_shows() {
    use lastmile_scenarios::faults::Origin;
    let scenario = lastmile_scenarios::parse(
        "t.toml",
        "[scenario]\nname = \"t<&>\"\nduration_s = 20\n[workload]\nkind = \"load\"\n[[phase]]\nname = \"all\"\nfrom_s = 0\nto_s = 20\n",
    )
    .unwrap();
    let mut e = driver_at_the_station(13_000);
    e.scenario = "t<&>".into();
    e.timeline =
        vec![kill(12.0, 3.0, "trip-service", Origin::Random), kill(14.0, 1.0, "matching-service", Origin::Scenario)];
    let report = lastmile_harness::report::judge(&scenario, &e);
    assert!(!report.passed(), "prompt_match is broken in this evidence");
    let page = lastmile_harness::html::render(&e, &report);
    assert!(page.starts_with("<!doctype html>") && page.contains("<svg") && page.trim_end().ends_with("</html>"));
    assert_eq!(page.matches("class=\"fault random\"").count(), 1);
    assert_eq!(page.matches("class=\"fault scripted\"").count(), 1);
    assert_eq!(page.matches("class=\"violation\"").count(), report.violations().len());
    assert!(page.contains("t&lt;&amp;&gt;") && !page.contains("t<&>"), "names are escaped");
    assert!(page.contains("prompt_match"));
    assert!(
        !page.contains("http://") || page.matches("http://").count() == 1,
        "nothing fetched: only the SVG namespace"
    );
}
