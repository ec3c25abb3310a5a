//! The mutation run's test command (MUTATION.md): the documented scenarios swept over seeds in
//! the simulation, with their random faults, and nothing else: no unit test helps, so a mutant
//! that survives is a bug the harness would let through in a user's system.
//!
//! Ignored in `cargo simtest`; `cargo mutants` runs it with `--ignored` (see `.cargo/mutants.toml`).
//! `LASTMILE_MUTATION_SEEDS` sets the seeds per scenario (default 100); `LASTMILE_MUTATION_JOBS`
//! the runs at once (default 2). The first failing seed ends the sweep.

#[cfg(madsim)]
#[test]
#[ignore = "the mutation run's test command: `cargo mutants` (MUTATION.md)"]
fn the_documented_scenarios_pass_every_seed() {
    use lastmile_harness::RunConfig;
    use lastmile_sim::{replay_command, runs};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Mutex;

    let env = |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let (seeds, jobs) = (env("LASTMILE_MUTATION_SEEDS", 100), env("LASTMILE_MUTATION_JOBS", 2).max(1));
    let failed = AtomicBool::new(false);
    let failure = Mutex::new(None::<String>);
    for name in ["matching-outage", "scale-under-load", "non-critical-outage"] {
        let file = format!("scenarios/{name}.toml");
        let path = format!("{}/../{file}", env!("CARGO_MANIFEST_DIR"));
        let scenario = lastmile_scenarios::load(std::path::Path::new(&path)).unwrap_or_else(|e| panic!("{e}"));
        let next = AtomicU64::new(1);
        std::thread::scope(|scope| {
            for _ in 0..jobs {
                scope.spawn(|| loop {
                    let seed = next.fetch_add(1, Ordering::SeqCst);
                    if seed > seeds || failed.load(Ordering::SeqCst) {
                        return;
                    }
                    let config = RunConfig { seed, random_faults: true, naive_matching: false, planted_bug: false };
                    let run = std::panic::catch_unwind(|| runs::run(&scenario, &config));
                    let verdict = match run {
                        Ok(run) if run.report.passed() => continue,
                        Ok(run) => lastmile_harness::report::human(&run.report, None),
                        Err(_) => "the simulation panicked".to_string(),
                    };
                    if !failed.swap(true, Ordering::SeqCst) {
                        *failure.lock().unwrap() =
                            Some(format!("{verdict}\nreplay: {}", replay_command(&file, seed, true, false)));
                    }
                    return;
                });
            }
        });
        if let Some(failure) = failure.lock().unwrap().take() {
            panic!("{failure}");
        }
        println!("{name}: seeds 1..={seeds} passed");
    }
}
