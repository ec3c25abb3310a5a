//! Shared by the simulation tests: load a scenario file, run seeds, explain failures.

use lastmile_harness::RunConfig;
use lastmile_scenarios::Scenario;
use lastmile_sim::replay_command;
use lastmile_sim::runs::{self, ScenarioRun};

/// The scenario file `name` (e.g. `matching-outage`) of the repository.
pub fn scenario(name: &str) -> (Scenario, String) {
    let file = format!("{}/../scenarios/{name}.toml", env!("CARGO_MANIFEST_DIR"));
    let scenario = lastmile_scenarios::load(std::path::Path::new(&file)).unwrap_or_else(|e| panic!("{e}"));
    (scenario, format!("scenarios/{name}.toml"))
}

/// Run one seed, printing the seed first.
pub fn run(name: &str, seed: u64, random_faults: bool, naive_matching: bool) -> ScenarioRun {
    let (scenario, _) = scenario(name);
    println!("scenario {name} seed {seed} random_faults {random_faults} naive_matching {naive_matching}");
    runs::run(&scenario, &RunConfig { seed, random_faults, naive_matching, planted_bug: false })
}

/// Fail with every violation and the replay command unless the run passed.
pub fn assert_passed(name: &str, run: &ScenarioRun) {
    if run.report.passed() {
        return;
    }
    let (_, file) = scenario(name);
    let c = &run.evidence.config;
    panic!(
        "{}\nreplay: {}",
        lastmile_harness::report::human(&run.report, None),
        replay_command(&file, c.seed, c.random_faults, c.naive_matching)
    );
}
