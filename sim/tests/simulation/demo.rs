//! The original demo in simulation: same outcomes as the real world, and determinism.

use lastmile_sim::{replay_command, runs};

#[test]
fn demo_in_simulation_matches_fifo_within_seats_and_notifies_once() {
    let seed = 1;
    println!("seed {seed}");
    let run = runs::demo(seed);
    let report = run.outcome.unwrap_or_else(|e| panic!("seed {seed}: {e}\nreplay: {}", replay_command(seed)));
    let violations = report.violations();
    assert!(violations.is_empty(), "seed {seed}:\n{}\nreplay: {}", violations.join("\n"), replay_command(seed));
    assert_eq!(report.matches(), 4, "no matches: the test proves nothing");
}

#[test]
fn the_same_seed_gives_the_same_history_and_another_seed_another() {
    let (a, b, c) = (runs::demo(7), runs::demo(7), runs::demo(8));
    for run in [&a, &b, &c] {
        let report = run.outcome.as_ref().unwrap_or_else(|e| panic!("seed {}: {e}", run.seed));
        assert!(report.matches() > 0, "seed {}: no matches, the comparison proves nothing", run.seed);
        assert!(run.ops > 100, "seed {}: only {} operations recorded", run.seed, run.ops);
    }
    assert_eq!(a.digest, b.digest, "seed 7 ran twice with different histories: the simulation is not deterministic");
    assert_ne!(a.digest, c.digest, "seeds 7 and 8 gave the same history: the seed does not reach the run");
}
