//! The checkers: each reads the evidence and reports violations naming the rule, the entities
//! and the time. They know nothing about how the run was produced.

use crate::metrics::{measure, Judged, Window};
use crate::runner::Evidence;
use lastmile_scenarios::faults::Origin;
use lastmile_scenarios::Scenario;
use lastmile_scenarios::{Action, Metric};
use lastmile_services::domain::{RideStatus, TripStatus};
use lastmile_workload::history::Phase as OpPhase;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    /// The rule (`no_double_match`, ...).
    pub rule: String,
    /// The riders, drivers, trips or rides involved.
    pub entities: Vec<String>,
    /// When (scenario ms), where known.
    pub at_ms: Option<u64>,
    /// What happened.
    pub message: String,
}

fn violation(rule: &str, entities: Vec<String>, at_ms: Option<u64>, message: String) -> Violation {
    Violation { rule: rule.to_string(), entities, at_ms, message }
}

/// The rules every run is judged by, in report order.
pub const RULES: [&str; 12] = [
    "run_completed",
    "replicas_restored",
    "services_ready_after_heal",
    "workload_did_something",
    "no_double_match",
    "no_over_capacity",
    "trip_states_forward",
    "no_lost_request",
    "no_duplicate_notification",
    "every_servable_ride_matched",
    "notifications_delivered",
    "no_dead_letter",
];

/// Every safety and liveness checker over `e`.
pub fn all(e: &Evidence) -> Vec<Violation> {
    let mut v = Vec::new();
    v.extend(run_completed(e));
    v.extend(replicas_restored(e));
    v.extend(services_ready_after_heal(e));
    v.extend(workload_did_something(e));
    v.extend(no_double_match(e));
    v.extend(no_over_capacity(e));
    v.extend(trip_states_forward(e));
    v.extend(no_lost_request(e));
    v.extend(no_duplicate_notification(e));
    v.extend(every_servable_ride_matched(e));
    v.extend(notifications_delivered(e));
    v.extend(no_dead_letter(e));
    v
}

/// No message was dead-lettered: no scenario injects poison, so a dead letter is work the
/// system gave up on (a retry budget spent during an outage, an event it could not decode).
pub fn no_dead_letter(e: &Evidence) -> Vec<Violation> {
    let Some(queues) = &e.dead_letters else { return Vec::new() };
    queues
        .iter()
        .filter(|(_, messages)| !messages.is_empty())
        .map(|(queue, messages)| {
            let mut entities = vec![queue.clone()];
            entities.extend(messages.iter().take(10).cloned());
            violation(
                "no_dead_letter",
                entities,
                Some(e.end_at_ms),
                format!("{queue} holds {} dead letters, first {}", messages.len(), messages[0]),
            )
        })
        .collect()
}

/// The run itself worked: services became ready, steps applied, the record was readable, and a
/// scripted workload's own expectations held.
pub fn run_completed(e: &Evidence) -> Vec<Violation> {
    let mut v: Vec<Violation> =
        e.run_errors.iter().map(|m| violation("run_completed", vec![], None, m.clone())).collect();
    if e.export.is_none() && e.run_errors.is_empty() {
        v.push(violation(
            "run_completed",
            vec!["trip-service".into()],
            None,
            "the final record could not be read".into(),
        ));
    }
    v.extend(
        e.scripted_violations
            .iter()
            .map(|m| violation("run_completed", vec![], None, format!("workload expectation: {m}"))),
    );
    v
}

/// The rollback: after the heal every service runs the replicas the scenario ends with — none
/// left killed, stopped or scaled the wrong way (read from the target, recorded as `replicas`).
pub fn replicas_restored(e: &Evidence) -> Vec<Violation> {
    let Some(op) = e.history.iter().rev().find(|op| op.client == "nemesis" && op.action == "replicas") else {
        return Vec::new();
    };
    let Some(counts) = op.detail.as_object() else { return Vec::new() };
    counts
        .iter()
        .filter(|(_, c)| c["have"] != c["want"])
        .map(|(service, c)| {
            violation(
                "replicas_restored",
                vec![service.clone()],
                Some(op.at_ms.saturating_sub(e.t0_ms)),
                format!("{service} runs {} replicas after the heal, {} wanted", c["have"], c["want"]),
            )
        })
        .collect()
}

/// Liveness: once every fault is healed, every service (and matching replica) reports ready
/// again — a service stuck unready would be cut out of its Kubernetes Service for good.
pub fn services_ready_after_heal(e: &Evidence) -> Vec<Violation> {
    e.history
        .iter()
        .filter(|op| op.action == "final_ready" && matches!(op.phase, OpPhase::Fail | OpPhase::Timeout))
        .map(|op| {
            let who = op.client.trim_start_matches("final:").to_string();
            let why = op.detail.as_str().unwrap_or_default();
            violation(
                "services_ready_after_heal",
                vec![who.clone()],
                Some(op.at_ms.saturating_sub(e.t0_ms)),
                format!("{who} is not ready after the heal and the settle time: {why}"),
            )
        })
        .collect()
}

/// A run without matches proves nothing.
pub fn workload_did_something(e: &Evidence) -> Vec<Violation> {
    let trips = e.export.as_ref().map_or(0, |x| x.trips.len());
    if trips == 0 {
        return vec![violation(
            "workload_did_something",
            vec![],
            None,
            "no trip was ever committed: the run proves nothing".into(),
        )];
    }
    Vec::new()
}

/// No ride is on two live trips (a cancelled trip gives its riders back).
pub fn no_double_match(e: &Evidence) -> Vec<Violation> {
    let Some(export) = &e.export else { return Vec::new() };
    let mut trips_of: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for trip in export.trips.iter().filter(|t| t.status != TripStatus::Cancelled) {
        for ride in &trip.ride_ids {
            trips_of.entry(ride).or_default().push(&trip.trip_id);
        }
    }
    trips_of
        .into_iter()
        .filter(|(_, trips)| trips.len() > 1)
        .map(|(ride, trips)| {
            let mut entities = vec![ride.to_string()];
            entities.extend(trips.iter().map(|t| t.to_string()));
            violation(
                "no_double_match",
                entities,
                None,
                format!("ride {ride} is on {} trips: {}", trips.len(), trips.join(", ")),
            )
        })
        .collect()
}

/// At no moment does a driver carry more riders (on scheduled or picked-up trips) than seats.
pub fn no_over_capacity(e: &Evidence) -> Vec<Violation> {
    let Some(export) = &e.export else { return Vec::new() };
    let mut out = Vec::new();
    let mut by_driver: BTreeMap<&str, Vec<(u64, i64, &str)>> = BTreeMap::new();
    for trip in &export.trips {
        let n = trip.ride_ids.len() as i64;
        let list = by_driver.entry(&trip.driver_id).or_default();
        list.push((trip.created_at_ms, n, &trip.trip_id));
        if let Some(closed) = trip.closed_at_ms {
            list.push((closed, -n, &trip.trip_id));
        }
    }
    for (driver, mut changes) in by_driver {
        let seats = export.shifts.get(driver).map_or(0, |s| s.seats) as i64;
        // Releases before takes at the same instant.
        changes.sort_by_key(|(at, delta, _)| (*at, *delta));
        let mut load = 0;
        for (at, delta, trip) in changes {
            load += delta;
            if load > seats {
                out.push(violation(
                    "no_over_capacity",
                    vec![driver.to_string(), trip.to_string()],
                    Some(at.saturating_sub(e.end_epoch_ms.saturating_sub(e.end_at_ms))),
                    format!("driver {driver} carried {load} riders with {seats} seats once {trip} was committed"),
                ));
                break;
            }
        }
    }
    out
}

/// What clients saw of each trip only moves forward (scheduled → picked up → completed).
pub fn trip_states_forward(e: &Evidence) -> Vec<Violation> {
    let mut last: BTreeMap<String, (u8, String, u64)> = BTreeMap::new();
    let mut out = Vec::new();
    for op in e.history.iter().filter(|op| op.phase == OpPhase::Ok) {
        if !matches!(op.action.as_str(), "get_trip" | "pickup" | "complete" | "cancel_trip") {
            continue;
        }
        let (Some(trip_id), Some(status)) = (
            op.detail.get("trip_id").and_then(Value::as_str),
            op.detail.get("status").and_then(|s| serde_json::from_value::<TripStatus>(s.clone()).ok()),
        ) else {
            continue;
        };
        let at = op.at_ms.saturating_sub(e.t0_ms);
        let name = format!("{status:?}");
        if let Some((rank, prev, prev_at)) = last.get(trip_id) {
            if status.rank() < *rank {
                out.push(violation(
                    "trip_states_forward",
                    vec![trip_id.to_string(), op.client.clone()],
                    Some(at),
                    format!("trip {trip_id} was seen {prev} at {prev_at} ms and {name} later"),
                ));
            }
        }
        last.insert(trip_id.to_string(), (status.rank(), name, at));
    }
    out
}

/// Every accepted ride request is in the record, and none waits past its deadline.
pub fn no_lost_request(e: &Evidence) -> Vec<Violation> {
    let Some(export) = &e.export else { return Vec::new() };
    let rides: BTreeMap<&str, &lastmile_services::domain::Ride> =
        export.rides.iter().map(|r| (r.ride_id.as_str(), r)).collect();
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for op in e.history.iter().filter(|op| op.action == "request_ride" && op.phase == OpPhase::Ok) {
        let Some(ride_id) = op.detail.get("ride_id").and_then(Value::as_str) else { continue };
        if !seen.insert(ride_id) {
            continue;
        }
        let at = op.at_ms.saturating_sub(e.t0_ms);
        match rides.get(ride_id) {
            None => out.push(violation(
                "no_lost_request",
                vec![ride_id.to_string()],
                Some(at),
                format!("ride {ride_id} was accepted at {at} ms but is not in the record"),
            )),
            Some(r)
                if r.status == RideStatus::Waiting && r.requested_at_ms + e.ride_ttl_ms + 10_000 < e.end_epoch_ms =>
            {
                out.push(violation(
                    "no_lost_request",
                    vec![ride_id.to_string()],
                    Some(at),
                    format!("ride {ride_id} is still waiting long past its deadline: it never reached a final state"),
                ))
            }
            _ => {}
        }
    }
    out
}

/// No user sees the same event twice.
pub fn no_duplicate_notification(e: &Evidence) -> Vec<Violation> {
    let mut out = Vec::new();
    for (user, inbox) in &e.inboxes {
        let mut seen = BTreeSet::new();
        for n in &inbox.notifications {
            if !seen.insert(&n.event_id) {
                out.push(violation(
                    "no_duplicate_notification",
                    vec![user.clone(), n.event_id.clone()],
                    None,
                    format!("{user} sees event {} ({}) twice", n.event_id, n.kind),
                ));
            }
        }
    }
    out
}

/// Liveness: after the heal and the settle time, every servable ride that was accepted is
/// matched (a driver serving it passes its station with seats in every run).
pub fn every_servable_ride_matched(e: &Evidence) -> Vec<Violation> {
    let (Some(plan), Some(export)) = (&e.plan, &e.export) else { return Vec::new() };
    let servable: BTreeSet<&str> = plan.arrivals.iter().filter(|a| a.servable).map(|a| a.ride_id.as_str()).collect();
    export
        .rides
        .iter()
        .filter(|r| servable.contains(r.ride_id.as_str()))
        .filter(|r| !matches!(r.status, RideStatus::Matched { .. } | RideStatus::Completed { .. }))
        .map(|r| {
            violation(
                "every_servable_ride_matched",
                vec![r.ride_id.clone(), r.rider_id.clone(), r.station_id.clone()],
                Some(e.end_at_ms),
                format!(
                    "ride {} ({} → {}) was never matched though drivers serve it; {:.0} s after the heal it is {:?}",
                    r.ride_id,
                    r.station_id,
                    r.destination,
                    e.end_at_ms.saturating_sub(e.heal_at_ms) as f64 / 1000.0,
                    r.status
                ),
            )
        })
        .collect()
}

/// Liveness: every participant of every trip was told about its match (and its completion),
/// and every rider of an expired ride was told why — even if notification-service was down.
pub fn notifications_delivered(e: &Evidence) -> Vec<Violation> {
    let Some(export) = &e.export else { return Vec::new() };
    let has = |user: &str, kind: &str, subject: &str| {
        e.inboxes.get(user).is_some_and(|i| i.notifications.iter().any(|n| n.kind == kind && n.subject == subject))
    };
    let mut out = Vec::new();
    for trip in &export.trips {
        for user in std::iter::once(&trip.driver_id).chain(&trip.rider_ids) {
            if !has(user, "match.found", &trip.trip_id) {
                out.push(violation(
                    "notifications_delivered",
                    vec![user.clone(), trip.trip_id.clone()],
                    None,
                    format!("{user} was never told about match {}", trip.trip_id),
                ));
            }
            if trip.status == TripStatus::Completed && !has(user, "trip.updated", &trip.trip_id) {
                out.push(violation(
                    "notifications_delivered",
                    vec![user.clone(), trip.trip_id.clone()],
                    None,
                    format!("{user} was never told that {} completed", trip.trip_id),
                ));
            }
        }
    }
    for ride in export.rides.iter().filter(|r| matches!(r.status, RideStatus::Expired { .. })) {
        if !has(&ride.rider_id, "ride.expired", &ride.ride_id) {
            out.push(violation(
                "notifications_delivered",
                vec![ride.rider_id.clone(), ride.ride_id.clone()],
                None,
                format!("{} was never told that ride {} expired", ride.rider_id, ride.ride_id),
            ));
        }
    }
    out
}

/// The value and verdict of one expectation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpectationResult {
    /// The phase.
    pub phase: String,
    /// The metric.
    pub metric: lastmile_scenarios::Metric,
    /// For probe metrics.
    pub probe: Option<String>,
    /// Lower bound.
    pub min: Option<f64>,
    /// Upper bound.
    pub max: Option<f64>,
    /// What was measured (`None`: nothing to measure in the phase).
    pub value: Option<f64>,
    /// Whether it held.
    pub ok: bool,
    /// The share of the phase it was judged on: the seed's random faults made the services it
    /// depends on unavailable for the rest (1 when none did).
    #[serde(default = "one")]
    pub judged_share: f64,
    /// Why it was judged on part of its phase, or not at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

fn one() -> f64 {
    1.0
}

/// How long after a random fault ends the services it hit still count as unavailable: a
/// restart with its journal replay, readiness, callers' breakers closing, backlogs draining.
pub const RECOVERY_GRACE_MS: u64 = 15_000;

/// Below this judged share of its phase an expectation is not judged at all: too little of
/// the phase is left to say anything.
pub const MIN_JUDGED_SHARE: f64 = 1.0 / 3.0;

/// What an expectation's metric depends on: services, and `broker` for the event flow. A
/// service that checks who a user is depends on where it can ask: its own directory, then
/// user-service, then (location-service, for drivers) trip-service.
pub fn depends_on(metric: Metric, probe_target: Option<&str>) -> Vec<&str> {
    match metric {
        Metric::RideRequestsAccepted | Metric::TripUpdatesAccepted => vec!["trip-service", "user-service"],
        Metric::LocationUpdatesAccepted => vec!["location-service", "user-service", "trip-service"],
        Metric::ProbeSuccess => probe_target.into_iter().collect(),
        Metric::Matches
        | Metric::FirstMatchAfterS
        | Metric::MatchLatencyP95S
        | Metric::ReplicaShareMin
        | Metric::ActiveReplicas => vec!["matching-service", "trip-service", "location-service", "broker"],
    }
}

/// The times (scenario ms, merged, in order) the seed's random faults made any of `deps`
/// unavailable: a kill, restart, crash, pause or partition of one of the services, or a
/// broker restart, each from its start to its end plus [`RECOVERY_GRACE_MS`]. The scenario's
/// own steps are never excused: they are what the expectations are about. Latency and loss
/// degrade but do not take anything away, so they are judged.
pub fn disturbed(e: &Evidence, deps: &[&str]) -> Vec<Window> {
    let mut spans: Vec<Window> = e
        .timeline
        .iter()
        .filter(|s| s.origin == Origin::Random)
        .filter(|s| match s.action {
            Action::Kill | Action::Restart | Action::Crash | Action::Pause | Action::Partition => {
                s.target.as_deref().is_some_and(|t| deps.contains(&t))
            }
            Action::BrokerRestart => deps.contains(&"broker"),
            Action::Scale | Action::Latency | Action::Loss => false,
        })
        .map(|s| {
            let from_ms = (s.at_s * 1000.0) as u64;
            Window { from_ms, to_ms: from_ms + (s.for_s.unwrap_or(0.0) * 1000.0) as u64 + RECOVERY_GRACE_MS }
        })
        .collect();
    spans.sort_by_key(|w| w.from_ms);
    let mut merged: Vec<Window> = Vec::new();
    for w in spans {
        match merged.last_mut() {
            Some(last) if w.from_ms <= last.to_ms => last.to_ms = last.to_ms.max(w.to_ms),
            _ => merged.push(w),
        }
    }
    merged
}

/// Judge the scenario's expectations; a metric with nothing to measure fails a `min` bound.
///
/// Random faults never make an expectation fail: each is judged on the part of its phase in
/// which the seed's random faults left the services it depends on alone ([`disturbed`]).
/// Shares and latencies count only that part; a `matches` lower bound shrinks with it (to the
/// whole part of its share); below
/// [`MIN_JUDGED_SHARE`] the expectation is not judged. The scenario's own steps always count.
pub fn expectations(e: &Evidence, scenario: &Scenario) -> (Vec<ExpectationResult>, Vec<Violation>) {
    let mut results = Vec::new();
    let mut out = Vec::new();
    for x in &scenario.expectations {
        let phase = x.phase.get_ref();
        let Some(p) = scenario.phases.iter().find(|p| &p.name == phase) else { continue };
        let w = Window { from_ms: (p.from_s * 1000.0) as u64, to_ms: (p.to_s * 1000.0) as u64 };
        let probe_target = x
            .probe
            .as_deref()
            .and_then(|name| scenario.probes.iter().find(|p| p.name == name))
            .map(|p| p.target.as_str());
        let deps = depends_on(x.metric, probe_target);
        let excluded = disturbed(e, &deps);
        let judged = Judged { window: w, excluded: &excluded };
        let share = judged.judged_share();
        let hit: Vec<&str> =
            deps.iter().copied().filter(|d| !disturbed(e, &[d]).iter().all(|x| x.overlap_ms(&w) == 0)).collect();
        let note = (share < 1.0).then(|| {
            let how = if share < MIN_JUDGED_SHARE { "not judged" } else { "judged on the rest" };
            format!("random faults on {} took {:.0}% of the phase: {how}", hit.join(", "), (1.0 - share) * 100.0)
        });
        if share < MIN_JUDGED_SHARE {
            results.push(ExpectationResult {
                phase: phase.clone(),
                metric: x.metric,
                probe: x.probe.clone(),
                min: x.min,
                max: x.max,
                value: None,
                ok: true,
                judged_share: share,
                note,
            });
            continue;
        }
        let value = measure(e, x.metric, judged, x.probe.as_deref());
        // A count over less time may be smaller: at least the whole part of the bound's share.
        let min = x.min.map(|m| if x.metric == Metric::Matches && share < 1.0 { (m * share).floor() } else { m });
        let ok = match value {
            Some(v) => min.is_none_or(|m| v >= m) && x.max.is_none_or(|m| v <= m),
            None => x.min.is_none(),
        };
        if !ok {
            let metric =
                serde_json::to_value(x.metric).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
            let bound = match (min, x.max) {
                (Some(a), Some(b)) => format!("in [{a}, {b}]"),
                (Some(a), None) => format!(">= {a}"),
                (None, Some(b)) => format!("<= {b}"),
                (None, None) => String::new(),
            };
            let got = value.map_or("nothing to measure".to_string(), |v| format!("{v:.3}"));
            out.push(violation(
                "expectation",
                vec![phase.clone(), metric.clone()],
                Some(w.from_ms),
                format!(
                    "phase {phase}: {metric} should be {bound}, was {got}{}",
                    note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()
                ),
            ));
        }
        results.push(ExpectationResult {
            phase: phase.clone(),
            metric: x.metric,
            probe: x.probe.clone(),
            min: x.min,
            max: x.max,
            value,
            ok,
            judged_share: share,
            note,
        });
    }
    (results, out)
}
