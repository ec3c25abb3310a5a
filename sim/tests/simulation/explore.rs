//! Exploration and shrinking find a bug planted behind a test-only switch (matching-service acks
//! 1 in 16 driver arrivals without processing them; see lastmile-services' `planted-bugs`).

use lastmile_harness::RunConfig;
use lastmile_sim::explore::{explore, ExploreConfig};
use lastmile_sim::runs;
use lastmile_sim::shrink::{shrink, ShrinkConfig};

#[test]
fn explore_finds_the_planted_bug_and_shrink_leaves_a_smaller_scenario_that_still_fails() {
    let config = ExploreConfig { seed: 1, cases: 40, seeds_per_case: 1, stop_at_first: true, planted_bug: true };
    let mut tried = 0;
    let found = explore(&config, |_, _, _| tried += 1, || true);
    let found = found.first().unwrap_or_else(|| panic!("{tried} generated scenarios never caught the planted bug"));
    println!("found after {tried} scenarios, seed {}: {:?}\n{}", found.seed, found.rules, found.toml);

    let shrink_config = ShrinkConfig { seed: found.seed, max_runs: 60, planted_bug: true };
    let shrunk =
        shrink(&found.scenario, &shrink_config, |line| println!("  {line}")).expect("it failed, so it shrinks");
    println!("shrunk in {} runs to:\n{}", shrunk.runs, shrunk.toml);
    assert!(found.rules.contains(&shrunk.rule));
    assert!(shrunk.steps_after < shrunk.steps_before, "{} -> {} steps", shrunk.steps_before, shrunk.steps_after);
    let smaller = shrunk.scenario.workload.drivers < found.scenario.workload.drivers
        || shrunk.scenario.duration_s() < found.scenario.duration_s()
        || shrunk.steps_after < found.scenario.steps.len();
    assert!(smaller, "the shrunk scenario is no bigger than the found one in every dimension");

    // The shrunk file fails the same rule with the bug, and passes without it: the bug's, not the file's.
    let with_bug = RunConfig { seed: found.seed, random_faults: false, naive_matching: false, planted_bug: true };
    let run = runs::run(&shrunk.scenario, &with_bug);
    assert!(run.report.violations().iter().any(|v| v.rule == shrunk.rule), "the shrunk file still fails");
    let run = runs::run(&shrunk.scenario, &RunConfig { planted_bug: false, ..with_bug });
    assert!(run.report.passed(), "without the planted bug the shrunk scenario passes: {:?}", run.report.violations());
}
