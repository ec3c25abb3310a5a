//! The verdict of a run: a JSON report (like Chaos Toolkit's journal) and a human summary.
//!
//! The report holds no wall-clock values: the same scenario and seed give a byte-identical
//! report, including the history digest. Wall time belongs in the human summary only.

use crate::check::{self, ExpectationResult, Violation, RULES};
use crate::metrics::{measure, work_in, Judged, Window};
use crate::runner::Evidence;
use lastmile_platform::coverage::RecoveryPath;
use lastmile_scenarios::faults::TimelineStep;
use lastmile_scenarios::{Metric, Scenario};
use lastmile_services::domain::RideStatus;
use lastmile_workload::history::digest_ops;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Numbers of one phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseReport {
    /// Its name.
    pub name: String,
    /// Start, seconds.
    pub from_s: f64,
    /// End, seconds.
    pub to_s: f64,
    /// Every metric that had something to measure.
    pub metrics: BTreeMap<Metric, f64>,
    /// Events handled per matching replica in the phase.
    pub work_per_replica: BTreeMap<String, u64>,
}

/// One rule's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// The rule.
    pub rule: String,
    /// Whether it held.
    pub ok: bool,
    /// What broke it.
    pub violations: Vec<Violation>,
}

/// Counts of the whole run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Operations in the history.
    pub operations: u64,
    /// Ride requests accepted.
    pub rides_accepted: u64,
    /// Rides matched or completed at the end.
    pub rides_matched: u64,
    /// Rides that expired.
    pub rides_expired: u64,
    /// Trips committed.
    pub trips: u64,
    /// Notifications delivered.
    pub notifications: u64,
}

/// The judged report of a run (the `--json` file; its field names are the saved format).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The scenario.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// Whether random faults were on.
    pub random_faults: bool,
    /// Whether the naive matching design ran.
    pub naive_matching: bool,
    /// Every step of the run, random ones included.
    pub timeline: Vec<TimelineStep>,
    /// The steps the target could not carry out (recorded, never dropped silently).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// Scenario second the faults were healed.
    pub heal_at_s: f64,
    /// Scenario second the run ended.
    pub end_at_s: f64,
    /// Per phase.
    pub phases: Vec<PhaseReport>,
    /// The scenario's expectations.
    pub expectations: Vec<ExpectationResult>,
    /// Every rule, in order.
    pub checks: Vec<CheckResult>,
    /// Counts.
    pub totals: Totals,
    /// How often each recovery path ran, every path listed (0: never reached in this run);
    /// absent when the target does not collect them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<BTreeMap<String, u64>>,
    /// Digest of the operation history.
    pub history_digest: String,
    /// `pass` or `fail`.
    pub verdict: String,
}

impl RunReport {
    /// Whether every rule and expectation held.
    pub fn passed(&self) -> bool {
        self.verdict == "pass"
    }

    /// Every violation, in rule order.
    pub fn violations(&self) -> Vec<&Violation> {
        self.checks.iter().flat_map(|c| c.violations.iter()).collect()
    }
}

const ALL_METRICS: [Metric; 10] = [
    Metric::RideRequestsAccepted,
    Metric::LocationUpdatesAccepted,
    Metric::TripUpdatesAccepted,
    Metric::Matches,
    Metric::MatchesPerMinute,
    Metric::BacklogChange,
    Metric::FirstMatchAfterS,
    Metric::MatchLatencyP95S,
    Metric::ReplicaShareMin,
    Metric::ActiveReplicas,
];

/// Judge `evidence` against `scenario`.
pub fn judge(scenario: &Scenario, evidence: &Evidence) -> RunReport {
    let mut violations = check::all(evidence);
    let (expectations, broken) = check::expectations(evidence, scenario);
    violations.extend(broken);
    let mut checks: Vec<CheckResult> = RULES
        .iter()
        .chain(std::iter::once(&"expectation"))
        .map(|rule| {
            let mine: Vec<Violation> = violations.iter().filter(|v| v.rule == *rule).cloned().collect();
            CheckResult { rule: rule.to_string(), ok: mine.is_empty(), violations: mine }
        })
        .collect();
    checks.retain(|c| c.rule != "expectation" || !scenario.expectations.is_empty());
    let phases = scenario
        .phases
        .iter()
        .map(|p| {
            let w = Window { from_ms: (p.from_s * 1000.0) as u64, to_ms: (p.to_s * 1000.0) as u64 };
            let metrics = ALL_METRICS
                .iter()
                .filter_map(|m| measure(evidence, *m, Judged::whole(w), None).map(|v| (*m, v)))
                .collect();
            PhaseReport {
                name: p.name.clone(),
                from_s: p.from_s,
                to_s: p.to_s,
                metrics,
                work_per_replica: work_in(evidence, Judged::whole(w)),
            }
        })
        .collect();
    let export = evidence.export.as_ref();
    let totals = Totals {
        operations: evidence.history.len() as u64,
        rides_accepted: export.map_or(0, |x| x.rides.len() as u64),
        rides_matched: export.map_or(0, |x| {
            x.rides
                .iter()
                .filter(|r| matches!(r.status, RideStatus::Matched { .. } | RideStatus::Completed { .. }))
                .count() as u64
        }),
        rides_expired: export
            .map_or(0, |x| x.rides.iter().filter(|r| matches!(r.status, RideStatus::Expired { .. })).count() as u64),
        trips: export.map_or(0, |x| x.trips.len() as u64),
        notifications: evidence.inboxes.values().map(|i| i.notifications.len() as u64).sum(),
    };
    let passed = checks.iter().all(|c| c.ok);
    RunReport {
        scenario: evidence.scenario.clone(),
        seed: evidence.config.seed,
        random_faults: evidence.config.random_faults,
        naive_matching: evidence.config.naive_matching,
        timeline: evidence.timeline.clone(),
        skipped: evidence
            .history
            .iter()
            .filter(|op| op.client == "nemesis" && op.action == "skip")
            .filter_map(|op| op.detail.get("step").and_then(|v| v.as_str()).map(String::from))
            .collect(),
        heal_at_s: evidence.heal_at_ms as f64 / 1000.0,
        end_at_s: evidence.end_at_ms as f64 / 1000.0,
        phases,
        expectations,
        checks,
        totals,
        coverage: evidence.coverage.as_ref().map(|counts| {
            RecoveryPath::ALL.iter().map(|p| (p.to_string(), counts.get(p).copied().unwrap_or(0))).collect()
        }),
        history_digest: digest_ops(&evidence.history),
        verdict: if passed { "pass" } else { "fail" }.to_string(),
    }
}

/// A person's summary of the report; `wall` (if known) adds the simulated/wall time ratio.
pub fn human(report: &RunReport, wall: Option<std::time::Duration>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "scenario {} seed {}: {}", report.scenario, report.seed, report.verdict.to_uppercase());
    let t = &report.totals;
    let _ = writeln!(
        s,
        "  {} operations; {} rides accepted, {} matched, {} expired; {} trips; {} notifications",
        t.operations, t.rides_accepted, t.rides_matched, t.rides_expired, t.trips, t.notifications
    );
    let _ = writeln!(
        s,
        "  healed at {:.1} s, ended at {:.1} s; history digest {}",
        report.heal_at_s, report.end_at_s, report.history_digest
    );
    for step in &report.skipped {
        let _ = writeln!(s, "  skipped (not possible on this target): {step}");
    }
    if let Some(wall) = wall {
        let ratio = report.end_at_s / wall.as_secs_f64().max(1e-9);
        let _ = writeln!(s, "  wall time {:.2} s ({ratio:.0}x simulated/wall)", wall.as_secs_f64());
    }
    for p in &report.phases {
        let _ = write!(s, "  phase {:<14} {:>5.0}-{:<5.0}s", p.name, p.from_s, p.to_s);
        for (m, v) in &p.metrics {
            let name = serde_json::to_value(m).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
            let _ = write!(s, " {name}={v:.2}");
        }
        if !p.work_per_replica.is_empty() {
            let work: Vec<String> = p.work_per_replica.iter().map(|(r, n)| format!("{r}:{n}")).collect();
            let _ = write!(s, " work=[{}]", work.join(" "));
        }
        let _ = writeln!(s);
    }
    for x in report.expectations.iter().filter(|x| x.note.is_some()) {
        let metric = serde_json::to_value(x.metric).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        let _ = writeln!(s, "  expectation {} {metric}: {}", x.phase, x.note.as_deref().unwrap_or_default());
    }
    if let Some(coverage) = &report.coverage {
        let taken: Vec<String> = coverage.iter().filter(|(_, n)| **n > 0).map(|(p, n)| format!("{p}={n}")).collect();
        let never: Vec<&str> = coverage.iter().filter(|(_, n)| **n == 0).map(|(p, _)| p.as_str()).collect();
        let _ =
            writeln!(s, "  recovery paths taken: {}", if taken.is_empty() { "none".into() } else { taken.join(" ") });
        if !never.is_empty() {
            let _ = writeln!(s, "  recovery paths never reached: {}", never.join(" "));
        }
    }
    for c in &report.checks {
        let _ = writeln!(s, "  {} {}", if c.ok { "ok  " } else { "FAIL" }, c.rule);
        for v in c.violations.iter().take(5) {
            let at = v.at_ms.map(|t| format!(" at {:.1} s", t as f64 / 1000.0)).unwrap_or_default();
            let _ = writeln!(s, "       - {}{at} [{}] (seed {})", v.message, v.entities.join(", "), report.seed);
        }
        if c.violations.len() > 5 {
            let _ = writeln!(s, "       ... and {} more", c.violations.len() - 5);
        }
    }
    s
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&apos;")
}

/// JUnit XML for CI systems: one test suite per run, one test case per rule (and per
/// expectation), a failure for each broken one with its violations and the replay command.
pub fn junit(runs: &[(&RunReport, String)]) -> String {
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"lastmile-sim\">\n");
    for (report, replay) in runs {
        let failures = report.checks.iter().filter(|c| !c.ok).count();
        let _ = writeln!(
            s,
            "  <testsuite name=\"{} seed {}\" tests=\"{}\" failures=\"{failures}\" time=\"{:.1}\">",
            xml(&report.scenario),
            report.seed,
            report.checks.len(),
            report.end_at_s
        );
        for c in &report.checks {
            let _ = write!(
                s,
                "    <testcase classname=\"{}.seed{}\" name=\"{}\"",
                xml(&report.scenario),
                report.seed,
                c.rule
            );
            if c.ok {
                s.push_str("/>\n");
                continue;
            }
            let first = c.violations.first().map(|v| v.message.as_str()).unwrap_or_default();
            let _ = writeln!(s, ">\n      <failure message=\"{}\">", xml(first));
            for v in &c.violations {
                let _ = writeln!(s, "{}", xml(&v.message));
            }
            let _ = writeln!(s, "replay: {}\n      </failure>\n    </testcase>", xml(replay));
        }
        s.push_str("  </testsuite>\n");
    }
    s.push_str("</testsuites>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(ok: bool) -> RunReport {
        let violation = Violation {
            rule: "no_double_match".into(),
            entities: vec!["r1".into()],
            at_ms: None,
            message: "ride r1 is on 2 trips: <t1> & \"t2\"".into(),
        };
        RunReport {
            scenario: "s".into(),
            seed: 4,
            random_faults: true,
            naive_matching: false,
            timeline: vec![],
            skipped: vec![],
            heal_at_s: 1.0,
            end_at_s: 2.0,
            phases: vec![],
            expectations: vec![],
            checks: vec![
                CheckResult { rule: "run_completed".into(), ok: true, violations: vec![] },
                CheckResult {
                    rule: "no_double_match".into(),
                    ok,
                    violations: if ok { vec![] } else { vec![violation] },
                },
            ],
            totals: Totals::default(),
            coverage: None,
            history_digest: String::new(),
            verdict: if ok { "pass" } else { "fail" }.into(),
        }
    }

    #[test]
    fn junit_has_a_case_per_rule_and_a_failure_per_broken_one_escaped() {
        let (bad, good) = (report(false), report(true));
        let xml = junit(&[(&bad, "cargo sim run s.toml --seed 4".into()), (&good, String::new())]);
        assert_eq!(xml.matches("<testcase ").count(), 4);
        assert_eq!(xml.matches("<failure ").count(), 1);
        assert!(xml.contains("tests=\"2\" failures=\"1\""));
        assert!(xml.contains("&lt;t1&gt; &amp; &quot;t2&quot;"), "{xml}");
        assert!(xml.contains("replay: cargo sim run s.toml --seed 4"));
        assert!(!xml.contains("<t1>"));
    }
}
