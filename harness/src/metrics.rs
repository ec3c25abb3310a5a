//! Per-phase numbers, computed from the evidence only.
//!
//! Each metric can leave out parts of its window (`excluded`): the times a seed's random
//! faults made the services it depends on unavailable (see `check::expectations`).

use crate::runner::Evidence;
use lastmile_scenarios::Metric;
use lastmile_workload::history::{Op, OpPhase};
use serde_json::Value;
use std::collections::BTreeMap;

/// A window of scenario time, in milliseconds since t0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Start (inclusive).
    pub from_ms: u64,
    /// End (exclusive).
    pub to_ms: u64,
}

impl Window {
    /// Whether `t` falls in the window.
    pub fn contains(&self, t: u64) -> bool {
        (self.from_ms..self.to_ms).contains(&t)
    }

    /// Milliseconds of the window.
    pub fn len_ms(&self) -> u64 {
        self.to_ms.saturating_sub(self.from_ms)
    }

    /// Milliseconds shared with `other`.
    pub fn overlap_ms(&self, other: &Window) -> u64 {
        self.to_ms.min(other.to_ms).saturating_sub(self.from_ms.max(other.from_ms))
    }
}

/// A window of a phase with the parts that are not judged (disjoint, in time order).
#[derive(Debug, Clone, Copy)]
pub struct Judged<'a> {
    /// The phase's window.
    pub window: Window,
    /// Parts left out.
    pub excluded: &'a [Window],
}

impl Judged<'_> {
    /// The whole of `window`.
    pub fn whole(window: Window) -> Judged<'static> {
        Judged { window, excluded: &[] }
    }

    /// Whether `t` is in the window and not left out.
    pub fn contains(&self, t: u64) -> bool {
        self.window.contains(t) && !self.excluded.iter().any(|x| x.contains(t))
    }

    /// Milliseconds of `[from, to)` that are left out.
    fn excluded_ms(&self, from_ms: u64, to_ms: u64) -> u64 {
        let span = Window { from_ms, to_ms };
        self.excluded.iter().map(|x| x.overlap_ms(&span)).sum()
    }

    /// The share of the window that is judged.
    pub fn judged_share(&self) -> f64 {
        let len = self.window.len_ms();
        if len == 0 {
            return 1.0;
        }
        1.0 - self.excluded_ms(self.window.from_ms, self.window.to_ms) as f64 / len as f64
    }
}

/// An op's time in scenario time (ops before the start count as time 0).
fn t(e: &Evidence, op: &Op) -> u64 {
    op.at_ms.saturating_sub(e.t0_ms)
}

/// Share of completed calls of `actions` that succeeded, for calls completing in the window.
fn success_rate(e: &Evidence, w: Judged, actions: &[&str]) -> Option<f64> {
    let (mut ok, mut all) = (0u64, 0u64);
    for op in &e.history {
        if actions.contains(&op.action.as_str()) && op.phase != OpPhase::Invoke && w.contains(t(e, op)) {
            all += 1;
            ok += u64::from(op.phase == OpPhase::Ok);
        }
    }
    (all > 0).then(|| ok as f64 / all as f64)
}

/// Ride requests first sent in the window, and whether each was eventually accepted (retries
/// of one request count once: what the rider experienced).
fn requests_accepted(e: &Evidence, w: Judged) -> Option<f64> {
    let mut first: BTreeMap<&str, u64> = BTreeMap::new();
    let mut accepted: BTreeMap<&str, bool> = BTreeMap::new();
    for op in e.history.iter().filter(|op| op.action == "request_ride") {
        let id = match op.phase {
            OpPhase::Invoke => op.detail.get("ride_id").and_then(Value::as_str),
            OpPhase::Ok => op.detail.get("ride_id").and_then(Value::as_str),
            _ => None,
        };
        let Some(id) = id else { continue };
        first.entry(id).or_insert(t(e, op));
        if op.phase == OpPhase::Ok {
            accepted.insert(id, true);
        }
    }
    let in_window: Vec<&str> = first.iter().filter(|(_, at)| w.contains(**at)).map(|(id, _)| *id).collect();
    if in_window.is_empty() {
        return None;
    }
    let ok = in_window.iter().filter(|id| accepted.get(*id).copied().unwrap_or(false)).count();
    Some(ok as f64 / in_window.len() as f64)
}

/// When each ride was first seen matched by its rider (scenario ms), and when it was accepted.
pub fn match_observations(e: &Evidence) -> BTreeMap<String, (u64, u64)> {
    let mut accepted_at: BTreeMap<String, u64> = BTreeMap::new();
    let mut matched_at: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for op in &e.history {
        if op.phase != OpPhase::Ok {
            continue;
        }
        let Some(ride_id) = op.detail.get("ride_id").and_then(Value::as_str) else { continue };
        match op.action.as_str() {
            "request_ride" => {
                accepted_at.entry(ride_id.to_string()).or_insert(t(e, op));
            }
            "get_ride" => {
                let state = op.detail.pointer("/status/state").and_then(Value::as_str);
                if matches!(state, Some("matched" | "completed")) && !matched_at.contains_key(ride_id) {
                    let accepted = accepted_at.get(ride_id).copied().unwrap_or(0);
                    matched_at.insert(ride_id.to_string(), (t(e, op), accepted));
                }
            }
            _ => {}
        }
    }
    matched_at
}

/// Events handled by each matching replica during `w`, from the periodic counter snapshots.
/// Like a rate over a counter: a counter that went down restarted from zero (its replica was
/// restarted), and a replica seen for the first time started from zero. Work between two
/// snapshots counts only when no excluded part falls between them.
pub fn work_in(e: &Evidence, w: Judged) -> BTreeMap<String, u64> {
    let mut snaps: Vec<&crate::runner::StatsSnapshot> = e.stats.iter().collect();
    snaps.sort_by_key(|s| s.at_ms);
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    let mut work: BTreeMap<String, u64> = BTreeMap::new();
    let mut previous_at = 0;
    for snap in snaps {
        if snap.at_ms > w.window.to_ms {
            break;
        }
        let judged = w.excluded_ms(previous_at, snap.at_ms.max(previous_at + 1)) == 0;
        for (name, stats) in &snap.replicas {
            let now = stats.events_handled;
            let before = last.insert(name, now).unwrap_or(0);
            if snap.at_ms > w.window.from_ms && judged {
                let delta = if now >= before { now - before } else { now };
                *work.entry(name.clone()).or_default() += delta;
            } else if snap.at_ms >= w.window.from_ms {
                work.entry(name.clone()).or_default();
            }
        }
        previous_at = snap.at_ms;
    }
    work
}

fn share_metrics(e: &Evidence, w: Judged) -> (Option<f64>, Option<f64>) {
    let work = work_in(e, w);
    let total: u64 = work.values().sum();
    let active = work.values().filter(|d| **d > 0).count() as f64;
    if total == 0 {
        return (None, Some(active));
    }
    // Among the replicas that took part: a replica added or removed mid-phase did less, fairly.
    let min_share = work.values().filter(|d| **d > 0).map(|d| *d as f64 / total as f64).fold(f64::INFINITY, f64::min);
    (Some(min_share), Some(active))
}

/// The value of `metric` over the judged part of `w` (`None` when there was nothing to
/// measure). Rates and shares count only what happened in judged time; `matches` counts the
/// matches seen in judged time; `first_match_after_s` counts judged seconds only; latencies
/// leave out rides whose wait overlapped an excluded part.
pub fn measure(e: &Evidence, metric: Metric, w: Judged, probe: Option<&str>) -> Option<f64> {
    match metric {
        Metric::RideRequestsAccepted => requests_accepted(e, w),
        Metric::LocationUpdatesAccepted => success_rate(e, w, &["location"]),
        Metric::TripUpdatesAccepted => success_rate(e, w, &["pickup", "complete", "cancel_trip"]),
        Metric::Matches => Some(match_observations(e).values().filter(|(at, _)| w.contains(*at)).count() as f64),
        Metric::FirstMatchAfterS => match_observations(e)
            .values()
            .filter(|(at, _)| w.window.contains(*at))
            .map(|(at, _)| (*at - w.window.from_ms - w.excluded_ms(w.window.from_ms, *at)) as f64 / 1000.0)
            .reduce(f64::min),
        Metric::MatchLatencyP95S => {
            let mut latencies: Vec<f64> = match_observations(e)
                .values()
                .filter(|(at, accepted)| w.contains(*at) && w.excluded_ms(*accepted, *at) == 0)
                .map(|(at, accepted)| at.saturating_sub(*accepted) as f64 / 1000.0)
                .collect();
            if latencies.is_empty() {
                return None;
            }
            latencies.sort_by(f64::total_cmp);
            Some(latencies[((latencies.len() as f64 * 0.95).ceil() as usize).saturating_sub(1)])
        }
        Metric::MatchesPerMinute => {
            let minutes = w.window.len_ms() as f64 * w.judged_share() / 60_000.0;
            let matches = match_observations(e).values().filter(|(at, _)| w.contains(*at)).count();
            (minutes > 0.0).then(|| matches as f64 / minutes)
        }
        Metric::BacklogChange => {
            // The samples at both ends of the phase count (one is taken at each boundary).
            let mut samples = e.backlog.iter().filter(|b| {
                (w.window.from_ms..=w.window.to_ms).contains(&b.at_ms)
                    && !w.excluded.iter().any(|x| x.contains(b.at_ms))
            });
            let first = samples.next()?;
            let last = samples.next_back()?;
            Some(last.messages as f64 - first.messages as f64)
        }
        Metric::ReplicaShareMin => share_metrics(e, w).0,
        Metric::ActiveReplicas => share_metrics(e, w).1,
        Metric::ProbeSuccess => {
            let who = format!("probe:{}", probe.unwrap_or_default());
            let (mut ok, mut all) = (0u64, 0u64);
            for op in e.history.iter().filter(|op| op.client == who && op.phase != OpPhase::Invoke) {
                if w.contains(t(e, op)) {
                    all += 1;
                    ok += u64::from(op.phase == OpPhase::Ok);
                }
            }
            (all > 0).then(|| ok as f64 / all as f64)
        }
    }
}
