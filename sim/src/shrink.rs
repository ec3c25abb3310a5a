//! Shrinking: from a failing `(scenario, seed)` to the smallest scenario file that still fails
//! the same rule with the same seed.
//!
//! The seed's random faults are first written out as steps of their own (still judged as random
//! faults), so every fault is something the shrinker can remove or narrow. Then, greedily, one
//! edit at a time — drop a step, halve how long a fault lasts, drop a driver, halve the riders'
//! rate, drop a matching replica, shorten the run — every edit that keeps the failure is kept,
//! until none does. Like a property-based test's shrinking, but over the scenario file, so the
//! result is a file a person reads and replays: `cargo sim run <file> --seed N`.

use crate::runs;
use lastmile_harness::RunConfig;
use lastmile_scenarios::write::{to_toml, with_faults_explicit};
use lastmile_scenarios::{Action, Scenario, ServiceName};

/// What shrinking is asked to do.
#[derive(Debug, Clone)]
pub struct ShrinkConfig {
    /// The seed that fails.
    pub seed: u64,
    /// Runs to spend at most.
    pub max_runs: usize,
    /// Turn on the bug planted for the harness's own tests (test builds only).
    pub planted_bug: bool,
}

/// The smallest failing scenario found.
#[derive(Debug, Clone)]
pub struct Shrunk {
    /// The scenario file's text.
    pub toml: String,
    /// The parsed scenario.
    pub scenario: Scenario,
    /// The rule that still fails (the first the original broke).
    pub rule: String,
    /// Steps before (random faults written out) and after.
    pub steps_before: usize,
    /// Steps left.
    pub steps_after: usize,
    /// Simulated runs it took.
    pub runs: usize,
}

/// Why nothing could be shrunk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShrinkError {
    /// The seed passes.
    #[error("seed {0} passes: nothing to shrink")]
    Passes(u64),
    /// With its random faults written out, the scenario no longer fails the rule.
    #[error("with its random faults written out the scenario no longer breaks {0}")]
    NotReproduced(String),
}

/// Every rule `scenario` breaks with the seed, in report order (`random`: with the seed's random
/// faults).
fn broken_rules(scenario: &Scenario, config: &ShrinkConfig, random: bool) -> Vec<String> {
    let run_config =
        RunConfig { seed: config.seed, random_faults: random, naive_matching: false, planted_bug: config.planted_bug };
    runs::run(scenario, &run_config).report.violations().iter().map(|v| v.rule.clone()).collect()
}

/// Every one-edit smaller version of `s`.
fn candidates(s: &Scenario) -> Vec<Scenario> {
    let mut out = Vec::new();
    for i in 0..s.steps.len() {
        let mut c = s.clone();
        c.steps.remove(i);
        out.push(c);
    }
    for i in 0..s.steps.len() {
        if let Some(f) = s.steps[i].for_s.filter(|f| *f >= 2.0) {
            let mut c = s.clone();
            c.steps[i].for_s = Some((f / 2.0 * 10.0).round() / 10.0);
            out.push(c);
        }
    }
    let w = &s.workload;
    if w.drivers > 1 {
        let mut c = s.clone();
        c.workload.drivers -= 1;
        out.push(c);
    }
    if w.riders_per_minute >= 2.0 {
        let mut c = s.clone();
        c.workload.riders_per_minute = (w.riders_per_minute / 2.0).floor();
        out.push(c);
    }
    if let Some(n) = s.deployment.get("matching-service").map(|n| *n.get_ref()).filter(|n| *n > 1) {
        let mut c = s.clone();
        *c.deployment.get_mut("matching-service").expect("present").get_mut() = n - 1;
        out.push(c);
    }
    // A shorter run: up to 30 s after the last step starts.
    let last = s.steps.iter().map(|st| *st.at_s.get_ref()).fold(0.0, f64::max);
    let shorter = ((last + 30.0) / 10.0).ceil() * 10.0;
    if shorter + 10.0 <= s.duration_s() {
        let mut c = s.clone();
        *c.scenario.duration_s.get_mut() = shorter;
        c.phases.retain(|p| p.to_s <= shorter);
        c.expectations.retain(|x| c.phases.iter().any(|p| &p.name == x.phase.get_ref()));
        out.push(c);
    }
    // Only scenarios a healthy system must pass: none ends with a service at 0, and the drivers
    // can still carry the riders (fewer drivers with as many riders is a capacity limit that
    // still "fails", and no bug).
    out.retain(|c| ServiceName::NAMES.iter().all(|svc| c.final_replicas(svc) >= 1 || s.final_replicas(svc) == 0));
    out.retain(|c| crate::explore::has_capacity(c) || !crate::explore::has_capacity(s));
    out.retain(|c| !c.steps.iter().any(|st| st.action == Action::Scale && st.replicas.is_none()));
    out
}

/// Shrink the failing `(scenario, config.seed)`; `progress` hears of every accepted edit.
pub fn shrink(
    scenario: &Scenario,
    config: &ShrinkConfig,
    mut progress: impl FnMut(&str),
) -> Result<Shrunk, ShrinkError> {
    let original = broken_rules(scenario, config, true);
    let Some(rule) = original.first().cloned() else { return Err(ShrinkError::Passes(config.seed)) };
    let explicit = lastmile_scenarios::parse("explicit.toml", &with_faults_explicit(scenario, config.seed))
        .expect("a written-out scenario parses");
    let mut runs = 2;
    if !broken_rules(&explicit, config, false).contains(&rule) {
        return Err(ShrinkError::NotReproduced(rule));
    }
    let steps_before = explicit.steps.len();
    let mut current = explicit;
    'search: while runs < config.max_runs {
        for candidate in candidates(&current) {
            if runs >= config.max_runs {
                break 'search;
            }
            // Validate as a file: an edit never yields a scenario its own loader refuses.
            let Ok(candidate) = lastmile_scenarios::parse("candidate.toml", &to_toml(&candidate)) else { continue };
            runs += 1;
            if broken_rules(&candidate, config, false).contains(&rule) {
                progress(&format!(
                    "still breaks {rule}: {} steps, {} drivers, {} riders/min, {} s",
                    candidate.steps.len(),
                    candidate.workload.drivers,
                    candidate.workload.riders_per_minute,
                    candidate.duration_s()
                ));
                current = candidate;
                continue 'search;
            }
        }
        break;
    }
    Ok(Shrunk {
        toml: to_toml(&current),
        steps_after: current.steps.len(),
        scenario: current,
        rule,
        steps_before,
        runs,
    })
}
