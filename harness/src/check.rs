//! The checkers: each reads the evidence and reports violations naming the rule, the entities
//! and the time. They know nothing about how the run was produced.

use crate::metrics::{measure, Judged, Window};
use crate::runner::Evidence;
use lastmile_engine::{naive_select, DriverOffer, WaitingRide};
use lastmile_scenarios::faults::Origin;
use lastmile_scenarios::Scenario;
use lastmile_scenarios::{Action, Metric};
use lastmile_services::domain::{Ride, RideStatus, Shift, Trip, TripStatus};
use lastmile_services::notification::Inbox;
use lastmile_services::trip::{Change, Export};
use lastmile_services::ServiceName;
use lastmile_workload::history::{Op, OpPhase};
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

/// Scenario time (ms since the workload started) of a reading of trip-service's clock.
fn scenario_ms(e: &Evidence, epoch_ms: u64) -> u64 {
    epoch_ms.saturating_sub(e.end_epoch_ms.saturating_sub(e.end_at_ms))
}

/// The rules every run is judged by, in report order.
pub const RULES: [&str; 16] = [
    "run_completed",
    "replicas_restored",
    "services_ready_after_heal",
    "workload_did_something",
    "no_double_match",
    "no_over_capacity",
    "matching_rule",
    "prompt_match",
    "expiry",
    "trip_states_forward",
    "no_lost_request",
    "no_duplicate_notification",
    "every_servable_ride_matched",
    "notifications_delivered",
    "no_dead_letter",
    "hostile_input",
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
    v.extend(matching_rule(e));
    v.extend(prompt_match(e));
    v.extend(expiry(e));
    v.extend(trip_states_forward(e));
    v.extend(no_lost_request(e));
    v.extend(no_duplicate_notification(e));
    v.extend(every_servable_ride_matched(e));
    v.extend(notifications_delivered(e));
    v.extend(no_dead_letter(e));
    v.extend(hostile_input(e));
    v
}

/// The dead letters are exactly those meant to die. None but the hostile client's and the
/// poison steps' messages: any other dead letter is work the system gave up on (a retry budget
/// spent during an outage, an event it could not decode, an innocent message that went past
/// the delivery limit beside a poison). And every poison step's message is in its target's
/// dead-letter queue: a poison kills each replica receiving it for good, so only the queue's
/// delivery limit can take it away; one still queued at the end has the service crash-looping.
pub fn no_dead_letter(e: &Evidence) -> Vec<Violation> {
    let Some(queues) = &e.dead_letters else { return Vec::new() };
    let mut out = Vec::new();
    for (i, step) in e.timeline.iter().enumerate() {
        let (Some(id), Some(target)) = (step.poison_message_id(), step.target.as_deref()) else { continue };
        if !applied(e, i) {
            continue;
        }
        let dlq_suffix = format!(".{target}.dead");
        let dead = queues
            .iter()
            .filter(|(queue, _)| queue.ends_with(&dlq_suffix))
            .flat_map(|(_, messages)| messages)
            .any(|m| m.split(' ').next() == Some(id.as_str()));
        if !dead {
            out.push(violation(
                "no_dead_letter",
                vec![id.clone(), target.to_string()],
                Some((step.at_s * 1000.0) as u64),
                format!(
                    "poison message {id} is not in {target}'s dead-letter queue at the end: the delivery limit \
                     never took it away, so every {target} replica receiving it still dies"
                ),
            ));
        }
    }
    out.extend(
        queues
            .iter()
            .map(|(queue, messages)| {
                let ours: Vec<String> = messages.iter().filter(|m| !is_hostile_letter(m)).cloned().collect();
                (queue, ours)
            })
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
            }),
    );
    out
}

/// A dead-letter entry (`message id (routing key)`) put there on purpose: by the hostile client
/// or a poison step.
fn is_hostile_letter(entry: &str) -> bool {
    entry.starts_with(lastmile_workload::hostile::MESSAGE_PREFIX)
        || entry.starts_with(lastmile_scenarios::faults::POISON_PREFIX)
}

/// Whether the harness carried out step `i` of the timeline (its apply answered success).
fn applied(e: &Evidence, i: usize) -> bool {
    nemesis_op(e, "apply", i, true).is_some_and(|op| op.phase == OpPhase::Ok)
}

/// Hostile input is refused and never crashes anything (`hostile_per_minute`): every hostile
/// request got a 4xx with a JSON error body (an answer of any 5xx, or a 4xx without JSON, is a
/// violation; a request that got no answer at all, e.g. to a service a fault took away, proves
/// nothing either way), and every hostile message the broker confirmed is in a dead-letter queue
/// at the end (where the target can look), neither processed nor lost.
pub fn hostile_input(e: &Evidence) -> Vec<Violation> {
    let client = lastmile_workload::hostile::CLIENT;
    let mut out = Vec::new();
    for op in e.history.iter().filter(|op| op.client == client && op.phase == OpPhase::Ok) {
        let at = Some(op.at_ms.saturating_sub(e.t0_ms));
        let path = op.detail["path"].as_str().unwrap_or_default();
        match op.action.as_str() {
            "hostile_http" => {
                let status = op.detail["status"].as_u64().unwrap_or_default();
                let json = op.detail["json_error"].as_bool().unwrap_or(false);
                if !(400..500).contains(&status) || !json {
                    out.push(violation(
                        "hostile_input",
                        vec![path.to_string()],
                        at,
                        format!(
                            "a request with a hostile id got {status}{}: {path}",
                            if json { "" } else { " without a JSON error" }
                        ),
                    ));
                }
            }
            "hostile_message" => {
                let Some(queues) = &e.dead_letters else { continue };
                let id = op.detail["message_id"].as_str().unwrap_or_default();
                let dead = queues.values().flatten().any(|m| m.split(' ').next() == Some(id));
                if !dead {
                    let key = op.detail["routing_key"].as_str().unwrap_or_default();
                    out.push(violation(
                        "hostile_input",
                        vec![id.to_string()],
                        at,
                        format!("poison message {id} ({key}) was confirmed but is in no dead-letter queue at the end: processed or lost"),
                    ));
                }
            }
            _ => {}
        }
    }
    out
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
                    Some(scenario_ms(e, at)),
                    format!("driver {driver} carried {load} riders with {seats} seats once {trip} was committed"),
                ));
                break;
            }
        }
    }
    out
}

/// Where a ride is in the replayed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RideState<'a> {
    /// In the queue since the change at this index of the log (its acceptance, or the
    /// cancellation of the trip it was on).
    Waiting { since: usize },
    /// On a live trip.
    OnTrip(&'a str),
    /// Its trip completed.
    Completed,
    /// It expired.
    Expired,
    /// The rider withdrew it.
    Cancelled,
}

/// trip-service's record rebuilt from its change log, one change at a time, holding what the
/// matching rule reads: the queue, the shifts and the seats in use.
#[derive(Debug, Default)]
struct Replay<'a> {
    shifts: BTreeMap<&'a str, &'a Shift>,
    /// Every ride accepted, with the index of its acceptance in the log.
    accepted: BTreeMap<&'a str, (&'a Ride, usize)>,
    /// Where each accepted ride is now.
    rides: BTreeMap<&'a str, RideState<'a>>,
    /// Every trip committed, and whether it still holds its seats (scheduled or picked up).
    trips: BTreeMap<&'a str, (&'a Trip, bool)>,
    /// Seats taken by each driver's live trips.
    seats_in_use: BTreeMap<&'a str, u32>,
}

impl<'a> Replay<'a> {
    /// Apply the change at `index` of the log, as trip-service does.
    fn apply(&mut self, index: usize, change: &'a Change) {
        match change {
            Change::ShiftSet { driver_id, shift } => {
                self.shifts.insert(driver_id, shift);
            }
            Change::RideAccepted { ride } => {
                self.accepted.insert(&ride.ride_id, (ride, index));
                self.rides.insert(&ride.ride_id, RideState::Waiting { since: index });
            }
            Change::TripCommitted { trip } => {
                for ride_id in &trip.ride_ids {
                    self.rides.insert(ride_id, RideState::OnTrip(&trip.trip_id));
                }
                *self.seats_in_use.entry(&trip.driver_id).or_default() += trip.ride_ids.len() as u32;
                self.trips.insert(&trip.trip_id, (trip, true));
            }
            Change::TripMoved { trip_id, status, .. } => {
                let Some((trip, live)) = self.trips.get_mut(trip_id.as_str()) else { return };
                if !*live || status.is_active() {
                    return;
                }
                *live = false;
                let trip: &'a Trip = trip;
                let used = self.seats_in_use.entry(&trip.driver_id).or_default();
                *used = used.saturating_sub(trip.ride_ids.len() as u32);
                // A completed trip's rides are done; a cancelled trip's wait again, in their place.
                let then = match status {
                    TripStatus::Completed => RideState::Completed,
                    _ => RideState::Waiting { since: index },
                };
                for ride_id in &trip.ride_ids {
                    self.rides.insert(ride_id, then);
                }
            }
            Change::RideExpired { ride_id, .. } => {
                self.rides.insert(ride_id, RideState::Expired);
            }
            Change::RideCancelled { ride_id, .. } => {
                self.rides.insert(ride_id, RideState::Cancelled);
            }
        }
    }

    /// The rides waiting now, as the matching engine holds them.
    fn waiting(&self) -> Vec<WaitingRide> {
        self.rides
            .iter()
            .filter(|(_, state)| matches!(state, RideState::Waiting { .. }))
            .filter_map(|(id, _)| self.accepted.get(id))
            .map(|(r, _)| WaitingRide::new(&r.ride_id, &r.station_id, &r.destination, r.seq))
            .collect()
    }

    /// Since which change `ride_id` has been waiting, if it is.
    fn waiting_since(&self, ride_id: &str) -> Option<usize> {
        match self.rides.get(ride_id) {
            Some(RideState::Waiting { since }) => Some(*since),
            _ => None,
        }
    }

    /// A driver's free seats now (none without a shift).
    fn free_seats(&self, driver_id: &str) -> u32 {
        let seats = self.shifts.get(driver_id).map_or(0, |s| s.seats);
        seats.saturating_sub(self.seats_in_use.get(driver_id).copied().unwrap_or(0))
    }
}

/// Every committed trip obeys the matching rule in the state it was committed in: replaying
/// trip-service's change log, each trip's rides were waiting at its station, the driver serves
/// their destinations and had the seats, and no ride was passed over for a later one
/// (see `judge_trip`). Every trip and ride of the record must be in the log.
pub fn matching_rule(e: &Evidence) -> Vec<Violation> {
    let Some(export) = &e.export else { return Vec::new() };
    let mut record = Replay::default();
    let mut out = Vec::new();
    // First come first served is judged by each ride's `seq`, so `seq` must follow the order in
    // which trip-service accepted the rides: a ride accepted later with a `seq` no higher than
    // an earlier one's would be served out of turn, and judging by `seq` alone would not see it.
    let mut last_seq: Option<(u64, &str)> = None;
    for (index, change) in export.changes.iter().enumerate() {
        match change {
            Change::TripCommitted { trip } => out.extend(judge_trip(e, &record, trip)),
            Change::RideAccepted { ride } => {
                if let Some((seq, earlier)) = last_seq.filter(|(seq, _)| ride.seq <= *seq) {
                    out.push(violation(
                        "matching_rule",
                        vec![ride.ride_id.clone(), earlier.to_string()],
                        Some(scenario_ms(e, ride.requested_at_ms)),
                        format!(
                            "first come first served: ride {} was accepted after ride {earlier} but has seq {} (not above {seq}): the queue order is not the order of arrival",
                            ride.ride_id, ride.seq
                        ),
                    ));
                }
                last_seq = Some((ride.seq, &ride.ride_id));
            }
            _ => {}
        }
        record.apply(index, change);
    }
    // A record the log does not explain would go unjudged: a silent pass is not one.
    let unlogged_trips = export.trips.iter().map(|t| t.trip_id.as_str()).filter(|t| !record.trips.contains_key(t));
    let unlogged_rides = export.rides.iter().map(|r| r.ride_id.as_str()).filter(|r| !record.accepted.contains_key(r));
    out.extend(unlogged_trips.chain(unlogged_rides).map(|id| {
        violation(
            "matching_rule",
            vec![id.to_string()],
            None,
            format!("{id} is in trip-service's record but not in its change log, so its commit cannot be judged"),
        )
    }));
    out
}

/// Judge one trip against the rule's reference (the engine's naive oracle over the queue at its
/// commit). Its pick is not required to be the oracle's: a matcher reads its candidates before
/// it proposes, and riders who arrive in between legitimately leave a trip smaller than the
/// oracle's pick. What cannot happen under the rule is a ride passed over for a later one
/// although it had been waiting since before that one was accepted, for then it was waiting
/// when the matcher read its candidates too.
fn judge_trip(e: &Evidence, record: &Replay, trip: &Trip) -> Vec<Violation> {
    let (t, d, at) = (&trip.trip_id, &trip.driver_id, &trip.station_id);
    let rule = |rides: &[&str], message: String| {
        let mut entities: Vec<String> = rides.iter().map(|r| r.to_string()).collect();
        entities.extend([t.clone(), d.clone()]);
        violation("matching_rule", entities, Some(scenario_ms(e, trip.created_at_ms)), message)
    };
    // Every ride the driver could take here now, in the rule's order. Seats are judged on their
    // own, so the oracle gets them all: a ride passed over beyond the seats is still passed over.
    let offer = match record.shifts.get(d.as_str()) {
        Some(s) => DriverOffer::for_route(d, at, &s.route, &s.destination, u32::MAX),
        None => DriverOffer { driver_id: d.clone(), station_id: at.clone(), serves: Vec::new(), free_seats: u32::MAX },
    };
    let eligible = naive_select(&record.waiting(), &offer);
    let free = record.free_seats(d);
    let mut out = Vec::new();
    // The trip's rides the rule allowed, with the index of their acceptance.
    let mut allowed: Vec<(&Ride, usize)> = Vec::new();
    for (i, ride_id) in trip.ride_ids.iter().enumerate() {
        let accepted = record.accepted.get(ride_id.as_str());
        let waiting_here = accepted.is_some_and(|(r, _)| r.station_id == *at)
            && record.waiting_since(ride_id).is_some()
            && !trip.ride_ids[..i].contains(ride_id);
        if !waiting_here {
            let was = match (accepted, record.rides.get(ride_id.as_str())) {
                _ if trip.ride_ids[..i].contains(ride_id) => "already on this trip".to_string(),
                (Some((r, _)), Some(RideState::Waiting { .. })) => format!("waiting at {}", r.station_id),
                (_, Some(RideState::OnTrip(other))) => format!("on trip {other}"),
                (_, Some(RideState::Completed)) => "completed".to_string(),
                (_, Some(RideState::Expired)) => "expired".to_string(),
                (_, Some(RideState::Cancelled)) => "cancelled".to_string(),
                _ => "never accepted".to_string(),
            };
            out.push(rule(&[ride_id], format!("not waiting: trip {t} took ride {ride_id} at {at}, but it was {was}")));
            continue;
        }
        let (ride, accepted_at) = accepted.expect("checked above");
        if !offer.serves(&ride.destination) {
            out.push(rule(
                &[ride_id],
                format!(
                    "destination not served: trip {t} took ride {ride_id} to {}, which driver {d} does not serve from {at}",
                    ride.destination
                ),
            ));
            continue;
        }
        allowed.push((ride, *accepted_at));
    }
    if trip.ride_ids.len() > free as usize {
        let seatless: Vec<&str> = trip.ride_ids[free as usize..].iter().map(String::as_str).collect();
        out.push(rule(
            &seatless,
            format!(
                "over the free seats: trip {t} took {} rides while driver {d} had {free} free seats; no seat for {}",
                trip.ride_ids.len(),
                seatless.join(", ")
            ),
        ));
    }
    // The reference must know every ride the record says was allowed: if it does not, the
    // oracle (or its replay of the queue) is wrong, and every verdict built on it would be
    // vacuous. Say so rather than pass.
    for (ride, _) in &allowed {
        if !eligible.iter().any(|w| w.ride_id == ride.ride_id) {
            out.push(rule(
                &[&ride.ride_id],
                format!(
                    "reference disagrees: ride {} waits at {at} for {}, which driver {d} serves, yet the \
                     reference rule does not pick it; the checker cannot judge this trip",
                    ride.ride_id, ride.destination
                ),
            ));
        }
    }
    let picks: Vec<&str> = eligible.iter().take(free as usize).map(|w| w.ride_id.as_str()).collect();
    for skipped in eligible.iter().filter(|w| !trip.ride_ids.contains(&w.ride_id)) {
        let since = record.waiting_since(&skipped.ride_id).expect("the oracle picks waiting rides");
        let overtaker = allowed
            .iter()
            .filter(|(r, accepted_at)| (r.seq, &r.ride_id) > (skipped.seq, &skipped.ride_id) && since < *accepted_at)
            .max_by_key(|(r, _)| r.seq);
        if let Some((r, _)) = overtaker {
            out.push(rule(
                &[&skipped.ride_id, &r.ride_id],
                format!(
                    "first come first served: trip {t} took ride {} (seq {}) at {at} and passed over ride {} \
                     (seq {}), waiting there since before {} was accepted; the rule picks {picks:?}",
                    r.ride_id, r.seq, skipped.ride_id, skipped.seq, r.ride_id
                ),
            ));
        }
    }
    out
}

/// How soon an arrival or a ride request must have its effect (the rides the rule picks stop
/// waiting) when nothing is disturbed: processing takes milliseconds; this leaves room for a
/// backlog of a few seconds without letting a lost event pass.
pub const PROMPT_MATCH_MS: u64 = 10_000;

/// How long a poison message disturbs its target: the queue's delivery limit (10 deliveries),
/// each killing a replica that is started again 2 s later, with room to spare. A poison the
/// limit never takes away disturbs for good, and `prompt_match` and `no_dead_letter` show it.
const POISON_DISTURBS_MS: u64 = 60_000;

/// How long a driver must still be at the station after an event for the event to count: a
/// matcher checks the driver is still near before it proposes.
const PROMPT_MATCH_MIN_STAY_MS: u64 = 2_000;

/// Times (scenario ms) in which something was disturbed, for any reason — the scenario's own
/// steps, the seed's random faults, the heal — each with [`RECOVERY_GRACE_MS`] after it. A
/// scale to 0 disturbs until the next scale up of that service.
fn unquiet(e: &Evidence) -> Vec<Window> {
    let mut spans = vec![Window { from_ms: e.heal_at_ms, to_ms: u64::MAX }];
    spans.extend((0..e.timeline.len()).map(|i| in_force(e, i)));
    spans
}

/// When step `i` of the timeline was in force (scenario ms), plus [`RECOVERY_GRACE_MS`] to
/// recover: a fault for its `for_s` (until the heal without one), a scale to 0 until the next
/// scale up of that service, any other scale and a restart only at its moment. Where the history
/// shows the step applied earlier or undone later than planned (a slow target, a busy runner),
/// the window stretches to what really happened: a fault is judged by how long it lasted, not
/// by how long it was meant to.
fn in_force(e: &Evidence, i: usize) -> Window {
    let s = &e.timeline[i];
    let planned_from = (s.at_s * 1000.0) as u64;
    // (planned end, the step whose completion really ended it)
    let (planned_to, ended_by) = match (s.action, s.replicas) {
        (Action::Scale, Some(0)) => e.timeline[i + 1..]
            .iter()
            .position(|n| n.action == Action::Scale && n.target == s.target && n.replicas.is_some_and(|r| r > 0))
            .map_or((e.heal_at_ms, None), |j| {
                ((e.timeline[i + 1 + j].at_s * 1000.0) as u64, Some(("apply", i + 1 + j)))
            }),
        (Action::Scale, _) | (Action::Restart, _) => (planned_from, None),
        // It crash-loops its target until the delivery limit takes it away.
        (Action::Poison, _) => (planned_from + POISON_DISTURBS_MS, None),
        _ => match s.for_s {
            Some(f) => (planned_from + (f * 1000.0) as u64, Some(("undo", i))),
            None => (e.heal_at_ms, None),
        },
    };
    let from_ms = nemesis_at(e, "apply", i, false).map_or(planned_from, |t| t.min(planned_from));
    let to_ms =
        ended_by.and_then(|(action, j)| nemesis_at(e, action, j, true)).map_or(planned_to, |t| t.max(planned_to));
    Window { from_ms, to_ms: to_ms.saturating_add(RECOVERY_GRACE_MS) }
}

/// Scenario time at which the harness began (or, if `done`, finished) `action` (apply or undo)
/// of timeline step `i`.
fn nemesis_at(e: &Evidence, action: &str, i: usize, done: bool) -> Option<u64> {
    nemesis_op(e, action, i, done).map(|op| op.at_ms.saturating_sub(e.t0_ms))
}

/// The history's record of the harness beginning (or, if `done`, finishing) `action` (apply or
/// undo) of timeline step `i`. The harness applies one step at a time, so the step's outcome is
/// the next record of that action after its invocation.
fn nemesis_op<'e>(e: &'e Evidence, action: &str, i: usize, done: bool) -> Option<&'e Op> {
    let is = |op: &&Op| op.client == "nemesis" && op.action == action;
    let start = e.history.iter().position(|op| {
        is(&op) && op.phase == OpPhase::Invoke && op.detail.get("index").and_then(|v| v.as_u64()) == Some(i as u64)
    })?;
    if done {
        e.history[start + 1..].iter().find(|op| is(op) && op.phase != OpPhase::Invoke)
    } else {
        Some(&e.history[start])
    }
}

/// Quiescent liveness: every event that should cause a match has its effect promptly. Each time
/// a driver reaches a station (its location update said so), and each time a ride is requested
/// at a station where a driver is, the rides the matching rule picks for that driver then (the
/// engine's oracle over the queue replayed from the change log, up to its free seats) must stop
/// waiting within [`PROMPT_MATCH_MS`] — unless the driver left within 2 s, or anything was
/// disturbed around that time (a fault, a scaling, the heal: see `unquiet`). The workload's
/// drivers loop their routes and would repair a lost `driver.near_station` or `ride.requested`
/// on their next pass; this rule does not wait for them. Load workloads only, and not when the
/// scenario gives matching-service a service time: its capacity is then bounded on purpose, a
/// load beyond it queues, and the scenario's own expectations judge the throughput instead.
pub fn prompt_match(e: &Evidence) -> Vec<Violation> {
    let (Some(export), Some(_)) = (&e.export, &e.plan) else { return Vec::new() };
    if e.service_time.contains_key(ServiceName::Matching.as_str()) {
        return Vec::new();
    }
    let offset = e.end_epoch_ms.saturating_sub(e.end_at_ms);
    let unquiet = unquiet(e);
    let quiet = |epoch_ms: u64| {
        let at = epoch_ms.saturating_sub(offset);
        let span = Window { from_ms: at.saturating_sub(RECOVERY_GRACE_MS), to_ms: at + PROMPT_MATCH_MS };
        unquiet.iter().all(|u| u.overlap_ms(&span) == 0)
    };
    // When each ride stopped waiting (on a trip, expired, cancelled), from the log.
    let mut stopped: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for change in &export.changes {
        match change {
            Change::TripCommitted { trip } => {
                for r in &trip.ride_ids {
                    stopped.entry(r).or_default().push(trip.created_at_ms);
                }
            }
            Change::RideExpired { ride_id, at_ms, .. } | Change::RideCancelled { ride_id, at_ms, .. } => {
                stopped.entry(ride_id).or_default().push(*at_ms);
            }
            _ => {}
        }
    }
    // Each driver's accepted location updates: (when, the station it was near).
    let mut updates: BTreeMap<&str, Vec<(u64, Option<&str>)>> = BTreeMap::new();
    for op in e.history.iter().filter(|op| op.action == "location" && op.phase == OpPhase::Ok) {
        let (Some(at), Some(driver)) = (
            op.detail.get("updated_at_ms").and_then(Value::as_u64),
            op.detail.get("driver_id").and_then(Value::as_str),
        ) else {
            continue;
        };
        updates.entry(driver).or_default().push((at, op.detail.get("near_station").and_then(Value::as_str)));
    }
    // Occasions: (when, driver, station, what happened), each while the driver stays 2 s more.
    let mut occasions: Vec<(u64, &str, &str, String)> = Vec::new();
    for (driver, mut list) in updates {
        list.sort_by_key(|(at, _)| *at);
        let mut i = 0;
        while i < list.len() {
            let (arrived, Some(station)) = list[i] else {
                i += 1;
                continue;
            };
            let mut j = i + 1;
            while j < list.len() && list[j].1 == Some(station) {
                j += 1;
            }
            let left = list.get(j).map_or(u64::MAX, |(at, _)| *at);
            let stays = |at: u64| at.saturating_add(PROMPT_MATCH_MIN_STAY_MS) <= left;
            if stays(arrived) {
                occasions.push((arrived, driver, station, format!("{driver} reached {station}")));
            }
            for change in &export.changes {
                if let Change::RideAccepted { ride } = change {
                    let at = ride.requested_at_ms;
                    if ride.station_id == station && (arrived..left).contains(&at) && stays(at) {
                        let why = format!("{} was requested at {station} while {driver} was there", ride.ride_id);
                        occasions.push((at, driver, station, why));
                    }
                }
            }
            i = j;
        }
    }
    occasions.sort();
    let mut record = Replay::default();
    let mut next = 0;
    let mut out = Vec::new();
    let mut blamed = BTreeSet::new();
    for (at, driver, station, why) in occasions {
        while next < export.changes.len() && change_at(&export.changes[next]).is_none_or(|t| t <= at) {
            record.apply(next, &export.changes[next]);
            next += 1;
        }
        if !quiet(at) {
            continue;
        }
        let Some(shift) = record.shifts.get(driver) else { continue };
        let free = record.free_seats(driver);
        let offer = DriverOffer::for_route(driver, station, &shift.route, &shift.destination, free);
        for pick in naive_select(&record.waiting(), &offer) {
            let ride = pick.ride_id.as_str();
            let in_time =
                stopped.get(ride).is_some_and(|ts| ts.iter().any(|t| (at..=at + PROMPT_MATCH_MS).contains(t)));
            if !in_time && blamed.insert(ride.to_string()) {
                out.push(violation(
                    "prompt_match",
                    vec![ride.to_string(), driver.to_string(), station.to_string()],
                    Some(at.saturating_sub(offset)),
                    format!(
                        "{why} with {free} free seats and nothing disturbed; ride {ride} (→ {}) waited there and was still waiting {} s later: the event had no effect",
                        pick.destination,
                        PROMPT_MATCH_MS / 1000
                    ),
                ));
            }
        }
    }
    out
}

/// When a change was committed (trip-service's clock), where the change says.
fn change_at(change: &Change) -> Option<u64> {
    match change {
        Change::RideAccepted { ride } => Some(ride.requested_at_ms),
        Change::TripCommitted { trip } => Some(trip.created_at_ms),
        Change::TripMoved { at_ms, .. } | Change::RideExpired { at_ms, .. } | Change::RideCancelled { at_ms, .. } => {
            Some(*at_ms)
        }
        Change::ShiftSet { .. } => None,
    }
}

/// No ride expires before its deadline (its own `max_wait`, else the run's ride deadline), and a
/// ride the load plan marks unservable is never on a trip. trip-service expires a ride once its
/// clock reads at least `requested_at_ms + wait` — both readings of one clock, in whole ms — so
/// no slack is allowed.
pub fn expiry(e: &Evidence) -> Vec<Violation> {
    let Some(export) = &e.export else { return Vec::new() };
    let unservable: BTreeSet<&str> =
        e.plan.iter().flat_map(|p| &p.arrivals).filter(|a| !a.servable).map(|a| a.ride_id.as_str()).collect();
    let mut accepted: BTreeMap<&str, &Ride> = BTreeMap::new();
    let mut out = Vec::new();
    for change in &export.changes {
        match change {
            Change::RideAccepted { ride } => {
                accepted.insert(&ride.ride_id, ride);
            }
            // An expiry journaled before its time was recorded (at 0) cannot be judged.
            Change::RideExpired { ride_id, at_ms, .. } if *at_ms > 0 => {
                let Some(ride) = accepted.get(ride_id.as_str()) else { continue };
                let deadline = ride.requested_at_ms + ride.max_wait_ms.unwrap_or(e.ride_ttl_ms);
                if *at_ms < deadline {
                    out.push(violation(
                        "expiry",
                        vec![ride_id.clone(), ride.rider_id.clone()],
                        Some(scenario_ms(e, *at_ms)),
                        format!(
                            "ride {ride_id} expired {} ms before its deadline (requested at {} ms, may wait {} ms)",
                            deadline - at_ms,
                            scenario_ms(e, ride.requested_at_ms),
                            deadline - ride.requested_at_ms
                        ),
                    ));
                }
            }
            Change::TripCommitted { trip } => {
                for ride_id in trip.ride_ids.iter().filter(|r| unservable.contains(r.as_str())) {
                    out.push(violation(
                        "expiry",
                        vec![ride_id.clone(), trip.trip_id.clone(), trip.driver_id.clone()],
                        Some(scenario_ms(e, trip.created_at_ms)),
                        format!(
                            "ride {ride_id} goes where no driver serves, yet trip {} of driver {} took it",
                            trip.trip_id, trip.driver_id
                        ),
                    ));
                }
            }
            _ => {}
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

/// One notification the end state owes a user: `kind` about `subject` (a trip or a ride).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owed {
    /// Who must have been told.
    pub user: String,
    /// The event kind (`match.found`, `trip.updated`, `ride.expired`).
    pub kind: &'static str,
    /// The trip or ride it is about.
    pub subject: String,
    /// What is missing, in words.
    pub what: String,
}

/// Every notification `export` says someone must have: each participant of each trip told of
/// its match (and of its completion), each rider of an expired ride told why.
pub fn owed_notifications(export: &Export) -> Vec<Owed> {
    let mut out = Vec::new();
    for trip in &export.trips {
        for user in std::iter::once(&trip.driver_id).chain(&trip.rider_ids) {
            let owed = |kind, what: String| Owed { user: user.clone(), kind, subject: trip.trip_id.clone(), what };
            out.push(owed("match.found", format!("{user} was never told about match {}", trip.trip_id)));
            if trip.status == TripStatus::Completed {
                out.push(owed("trip.updated", format!("{user} was never told that {} completed", trip.trip_id)));
            }
        }
    }
    for ride in export.rides.iter().filter(|r| matches!(r.status, RideStatus::Expired { .. })) {
        out.push(Owed {
            user: ride.rider_id.clone(),
            kind: "ride.expired",
            subject: ride.ride_id.clone(),
            what: format!("{} was never told that ride {} expired", ride.rider_id, ride.ride_id),
        });
    }
    out
}

/// Whether `inbox` holds the notification `owed`.
pub fn delivered(owed: &Owed, inbox: Option<&Inbox>) -> bool {
    inbox.is_some_and(|i| i.notifications.iter().any(|n| n.kind == owed.kind && n.subject == owed.subject))
}

/// Liveness: every participant of every trip was told about its match (and its completion),
/// and every rider of an expired ride was told why — even if notification-service was down.
/// An inbox that could not be read at the end says so once, instead of claiming each of its
/// notifications was never sent.
pub fn notifications_delivered(e: &Evidence) -> Vec<Violation> {
    let Some(export) = &e.export else { return Vec::new() };
    let mut out = Vec::new();
    let mut unreadable = BTreeSet::new();
    for owed in owed_notifications(export) {
        if let Some(error) = e.unread_inboxes.get(&owed.user) {
            if unreadable.insert(owed.user.clone()) {
                out.push(violation(
                    "notifications_delivered",
                    vec![owed.user.clone()],
                    None,
                    format!("the inbox of {} could not be read at the end: {error}", owed.user),
                ));
            }
        } else if !delivered(&owed, e.inboxes.get(&owed.user)) {
            out.push(violation("notifications_delivered", vec![owed.user, owed.subject], None, owed.what));
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
    /// The phase the value is a multiple of (`value` is then the ratio of the two phases'
    /// values, and the bounds bound it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio_of: Option<String>,
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
        | Metric::MatchesPerMinute
        | Metric::BacklogChange
        | Metric::FirstMatchAfterS
        | Metric::MatchLatencyP95S
        | Metric::ReplicaShareMin
        | Metric::ActiveReplicas => vec!["matching-service", "trip-service", "location-service", "broker"],
    }
}

/// The times (scenario ms, merged, in order) the seed's random faults made any of `deps`
/// unavailable: a kill, restart, crash, pause or partition of one of the services, or a
/// broker restart, each while in force (`in_force`: a restart only at its moment) plus
/// [`RECOVERY_GRACE_MS`]. The scenario's
/// own steps are never excused: they are what the expectations are about. Latency and loss
/// degrade but do not take anything away, so they are judged.
pub fn disturbed(e: &Evidence, deps: &[&str]) -> Vec<Window> {
    let mut spans: Vec<Window> = (0..e.timeline.len())
        .filter(|i| {
            let s = &e.timeline[*i];
            s.origin == Origin::Random
                && match s.action {
                    Action::Kill
                    | Action::Restart
                    | Action::Crash
                    | Action::Pause
                    | Action::Partition
                    | Action::DiskStall
                    | Action::Poison => s.target.as_deref().is_some_and(|t| deps.contains(&t)),
                    Action::BrokerRestart => deps.contains(&"broker"),
                    // A rollout keeps every ready replica until its successor is ready: judged.
                    Action::Scale | Action::Rollout | Action::Latency | Action::Loss => false,
                }
        })
        .map(|i| in_force(e, i))
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

/// Judge the scenario's expectations; a metric with nothing to measure fails a `min` bound (and
/// `backlog_change` any bound).
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
        let window_of = |name: &str| {
            scenario
                .phases
                .iter()
                .find(|p| p.name == name)
                .map(|p| Window { from_ms: (p.from_s * 1000.0) as u64, to_ms: (p.to_s * 1000.0) as u64 })
        };
        let Some(w) = window_of(phase) else { continue };
        let ratio_of = x.ratio_of.as_ref().map(|r| r.get_ref().clone());
        let other = match ratio_of.as_deref().map(window_of) {
            Some(None) => continue,
            Some(Some(o)) => Some(o),
            None => None,
        };
        let probe_target = x
            .probe
            .as_deref()
            .and_then(|name| scenario.probes.iter().find(|p| p.name == name))
            .map(|p| p.target.as_str());
        let deps = depends_on(x.metric, probe_target);
        let excluded = disturbed(e, &deps);
        let judged = Judged { window: w, excluded: &excluded };
        // A ratio is judged on as little as the less judged of its two phases.
        let share =
            other.map_or(1.0, |o| Judged { window: o, excluded: &excluded }.judged_share()).min(judged.judged_share());
        let hit: Vec<&str> = deps
            .iter()
            .copied()
            .filter(|d| {
                !disturbed(e, &[d]).iter().all(|x| x.overlap_ms(&w) == 0 && other.is_none_or(|o| x.overlap_ms(&o) == 0))
            })
            .collect();
        let note = (share < 1.0).then(|| {
            let how = if share < MIN_JUDGED_SHARE { "not judged" } else { "judged on the rest" };
            format!("random faults on {} took {:.0}% of the phase: {how}", hit.join(", "), (1.0 - share) * 100.0)
        });
        let result = |value: Option<f64>, ok: bool, note: Option<String>| ExpectationResult {
            phase: phase.clone(),
            metric: x.metric,
            probe: x.probe.clone(),
            min: x.min,
            max: x.max,
            value,
            ok,
            judged_share: share,
            note,
            ratio_of: ratio_of.clone(),
        };
        if share < MIN_JUDGED_SHARE {
            results.push(result(None, true, note));
            continue;
        }
        let measured = measure(e, x.metric, judged, x.probe.as_deref());
        // Over another phase: the ratio of the two values (nothing to measure when the other
        // phase's value is nothing or zero).
        let base = other.map(|o| measure(e, x.metric, Judged { window: o, excluded: &excluded }, x.probe.as_deref()));
        let value = match base {
            None => measured,
            Some(Some(b)) if b > 0.0 => measured.map(|v| v / b),
            Some(_) => None,
        };
        // Anything above zero is above every multiple of a zero: a lower bound holds (the
        // value, an infinite ratio, stays unrecorded; the note says why).
        if let (Some(Some(b)), Some(m), None, Some(other)) = (base, measured, x.max, &ratio_of) {
            if b == 0.0 && m > 0.0 {
                let why = format!("{m:.3} against 0 in phase {other}: above every multiple of it");
                let note = Some(note.map_or(why.clone(), |n| format!("{n}; {why}")));
                results.push(result(None, true, note));
                continue;
            }
        }
        // A count over less time may be smaller: at least the whole part of the bound's share.
        let min = x.min.map(|m| {
            if x.metric == Metric::Matches && share < 1.0 && other.is_none() {
                (m * share).floor()
            } else {
                m
            }
        });
        let ok = match value {
            Some(v) => min.is_none_or(|m| v >= m) && x.max.is_none_or(|m| v <= m),
            // A backlog the target could not read says nothing about how it moved.
            None => x.min.is_none() && x.metric != Metric::BacklogChange,
        };
        if !ok {
            let metric =
                serde_json::to_value(x.metric).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
            let times = |b: f64| match &ratio_of {
                Some(o) => format!("{b} x phase {o}'s"),
                None => b.to_string(),
            };
            let bound = match (min, x.max) {
                (Some(a), Some(b)) => format!("in [{}, {}]", times(a), times(b)),
                (Some(a), None) => format!(">= {}", times(a)),
                (None, Some(b)) => format!("<= {}", times(b)),
                (None, None) => String::new(),
            };
            let got = match (value, base, measured) {
                (Some(v), Some(Some(b)), Some(m)) => format!("{v:.3} x ({m:.3} against {b:.3})"),
                (Some(v), _, _) => format!("{v:.3}"),
                (None, Some(b), Some(m)) => {
                    format!(
                        "{m:.3} against {} in phase {}",
                        b.map_or("nothing".into(), |b| format!("{b:.3}")),
                        ratio_of.as_deref().unwrap_or_default()
                    )
                }
                (None, _, _) => "nothing to measure".to_string(),
            };
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
        results.push(result(value, ok, note));
    }
    (results, out)
}
