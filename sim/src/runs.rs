//! Whole simulated runs: `(scenario, seed) → report`, sweeps, and the determinism check.

use crate::target::SimTarget;
use lastmile_harness::report::{self, RunReport};
use lastmile_harness::{Evidence, RunConfig};
use lastmile_scenarios::Scenario;
use madsim::runtime::Runtime;
use std::time::Duration;

/// Simulated seconds a run may take beyond its scenario before the simulation gives up.
const TIME_LIMIT_SLACK: Duration = Duration::from_secs(900);

/// One finished run.
#[derive(Debug, Clone)]
pub struct ScenarioRun {
    /// What the run left behind.
    pub evidence: Evidence,
    /// The verdict.
    pub report: RunReport,
}

/// Run `scenario` in a fresh simulation seeded with `config.seed`.
///
/// Each run gets a thread of its own: std's hash maps seed their keys once per thread and then
/// count up, so a second simulation on the same thread would see other hash orders (inside
/// dependencies) and could diverge from the first. A fresh thread starts like a fresh process.
pub fn run(scenario: &Scenario, config: &RunConfig) -> ScenarioRun {
    let (s, c) = (scenario.clone(), config.clone());
    #[allow(clippy::disallowed_methods)] // the harness around a simulation, not simulated code
    let thread = std::thread::spawn(move || run_here(&s, &c));
    match thread.join() {
        Ok(run) => run,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

fn run_here(scenario: &Scenario, config: &RunConfig) -> ScenarioRun {
    let mut runtime = Runtime::with_seed_and_config(config.seed, madsim::Config::default());
    let limit = Duration::from_secs_f64(scenario.duration_s() + scenario.scenario.settle_s) + TIME_LIMIT_SLACK;
    runtime.set_time_limit(limit);
    let (s, c) = (scenario.clone(), config.clone());
    let evidence = runtime.block_on(async move {
        let mut target = SimTarget::start(&s, &c);
        lastmile_harness::run(&s, &c, &mut target).await
    });
    let report = report::judge(scenario, &evidence);
    ScenarioRun { evidence, report }
}

/// Where two runs of the same seed first differ.
#[derive(Debug, Clone, PartialEq)]
pub struct Divergence {
    /// Index of the first differing operation.
    pub index: usize,
    /// That operation in the first run (as JSON), or `None` if the first run ended there.
    pub first: Option<String>,
    /// And in the second.
    pub second: Option<String>,
}

/// Run the seed twice; `None` if the histories are identical.
pub fn check_determinism(scenario: &Scenario, config: &RunConfig) -> (ScenarioRun, Option<Divergence>) {
    let a = run(scenario, config);
    let b = run(scenario, config);
    let (x, y) = (&a.evidence.history, &b.evidence.history);
    let index = (0..x.len().max(y.len())).find(|&i| x.get(i) != y.get(i));
    let divergence = index.map(|i| Divergence {
        index: i,
        first: x.get(i).map(|op| serde_json::to_string(op).unwrap_or_default()),
        second: y.get(i).map(|op| serde_json::to_string(op).unwrap_or_default()),
    });
    (a, divergence)
}
