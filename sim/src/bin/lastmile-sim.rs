//! `lastmile-sim`: run scenario files inside the deterministic simulation.
//!
//! ```text
//! cargo sim run scenarios/matching-outage.toml --seed 7
//! cargo sim run scenarios/scale-under-load.toml --seeds 1..50 --jobs 2
//! cargo sim run scenarios/scale-under-load.toml --seed 3 --naive-matching
//! cargo sim run scenarios/demo.toml --seed 1 --check-determinism --json journal.json
//! cargo sim run scenarios/matching-outage.toml --seed 7 --emit-scenario seed7.toml
//! cargo simr explore --budget 10m --out explored/
//! cargo sim shrink explored/explore-1-3.toml --seed 1013 --out minimal.toml
//! ```
//!
//! A run prints its seed and every derived fault first, then a summary per phase and a verdict
//! per rule; a failing run prints the one command that replays it. The exit status is non-zero
//! when any check fails.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Run LastMile scenarios in the deterministic simulation.
#[derive(Debug, Parser)]
#[command(name = "lastmile-sim", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scenario for one seed or sweep a range of seeds.
    Run(RunArgs),
    /// Validate a scenario file (file, line and field of the first problem).
    Check {
        /// The scenario file.
        file: PathBuf,
    },
    /// Run generated scenarios (proptest strategies over deployments, workloads and timelines)
    /// until the budget runs out; keep each failing one as a file with its replay command.
    Explore(ExploreArgs),
    /// Reduce a failing (scenario, seed) to the smallest scenario file that still fails the
    /// same rule.
    Shrink(ShrinkArgs),
}

#[derive(Debug, clap::Args)]
struct ExploreArgs {
    /// Wall-clock budget: `90s`, `10m`, `1h`.
    #[arg(long, default_value = "60s")]
    budget: String,
    /// Seeds the generator (the same value generates the same scenarios).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Simulation seeds per generated scenario.
    #[arg(long, default_value_t = 2)]
    seeds_per_case: u64,
    /// Where failing scenarios are written.
    #[arg(long, default_value = "explored")]
    out: PathBuf,
}

#[derive(Debug, clap::Args)]
struct ShrinkArgs {
    /// The failing scenario file.
    file: PathBuf,
    /// The seed it fails with.
    #[arg(long)]
    seed: u64,
    /// Simulated runs to spend at most.
    #[arg(long, default_value_t = 200)]
    max_runs: usize,
    /// Where the minimal scenario is written.
    #[arg(long, default_value = "shrunk.toml")]
    out: PathBuf,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The scenario file.
    file: PathBuf,
    /// The seed of a single run (a run is a pure function of it).
    #[arg(long, default_value_t = 1, conflicts_with = "seeds")]
    seed: u64,
    /// Sweep seeds `A..B` (end exclusive) or `A..=B`.
    #[arg(long)]
    seeds: Option<String>,
    /// Runs in parallel during a sweep.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Do not add the seed's random faults to the scenario's timeline.
    #[arg(long)]
    no_random_faults: bool,
    /// Run the original matching design (riders and seats in each replica's memory).
    #[arg(long)]
    naive_matching: bool,
    /// Write the JSON journal of the run (of the first failing seed in a sweep) to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the run as a self-contained HTML page (timeline, faults, violations) to this file.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Write JUnit XML (a test case per rule per seed) to this file, for CI systems.
    #[arg(long)]
    junit: Option<PathBuf>,
    /// Run the seed twice and report the first point where the histories diverge.
    #[arg(long)]
    check_determinism: bool,
    /// Print only the journal as JSON (how a sweep runs each seed in a process of its own).
    #[arg(long, hide = true)]
    journal_stdout: bool,
    /// Write the scenario with this seed's random faults as explicit steps to this file, then
    /// run as usual.
    #[arg(long)]
    emit_scenario: Option<PathBuf>,
}

/// Parse `90s`, `10m`, `1h` (or plain seconds).
fn budget(text: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().map_err(|_| format!("--budget {text:?}: expected e.g. 90s, 10m, 1h"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("--budget {text:?}: the unit is s, m or h")),
    };
    Ok(std::time::Duration::from_secs(secs))
}

fn main() -> ExitCode {
    #[cfg(madsim)]
    lastmile_sim::init_logging();
    match Args::parse().command {
        Command::Check { file } => match lastmile_scenarios::load(&file) {
            Ok(s) => {
                println!(
                    "{}: ok ({}: {} steps, {} phases, {} expectations)",
                    file.display(),
                    s.scenario.name,
                    s.steps.len(),
                    s.phases.len(),
                    s.expectations.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Run(args) => imp::run(args),
        Command::Explore(args) => imp::explore(args),
        Command::Shrink(args) => imp::shrink(args),
    }
}

/// Parse `A..B` or `A..=B`.
fn seed_range(text: &str) -> Result<std::ops::Range<u64>, String> {
    let bad = || format!("--seeds {text:?}: expected A..B or A..=B");
    let (a, b) = text.split_once("..").ok_or_else(bad)?;
    let start: u64 = a.trim().parse().map_err(|_| bad())?;
    let end = match b.strip_prefix('=') {
        Some(b) => b.trim().parse::<u64>().map_err(|_| bad())? + 1,
        None => b.trim().parse().map_err(|_| bad())?,
    };
    if end <= start {
        return Err(bad());
    }
    Ok(start..end)
}

#[cfg(madsim)]
mod imp {
    use super::*;
    use lastmile_harness::report::human;
    use lastmile_harness::RunConfig;
    use lastmile_scenarios::faults::timeline;
    use lastmile_scenarios::Scenario;
    use lastmile_sim::{replay_command, runs};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{mpsc, Arc};
    use std::time::{Duration, Instant};

    /// Run one seed in a child process and read its journal.
    fn run_child(
        exe: &std::path::Path,
        flags: &[String],
        seed: u64,
    ) -> Result<lastmile_harness::report::Journal, String> {
        let out = std::process::Command::new(exe)
            .args(flags)
            .arg("--seed")
            .arg(seed.to_string())
            .output()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        match stdout.lines().last().map(serde_json::from_str::<lastmile_harness::report::Journal>) {
            Some(Ok(journal)) => Ok(journal),
            _ => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let why = stderr.lines().find(|l| l.contains("panicked")).unwrap_or("no journal");
                Err(format!("the simulation crashed ({}): {why}", out.status))
            }
        }
    }

    fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into())
    }

    // The harness measures wall time around simulations, never inside them.
    #[allow(clippy::disallowed_methods)]
    fn wall_now() -> Instant {
        Instant::now()
    }

    pub fn explore(args: ExploreArgs) -> ExitCode {
        let budget = match budget(&args.budget) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        };
        if let Err(e) = std::fs::create_dir_all(&args.out) {
            eprintln!("cannot create {}: {e}", args.out.display());
            return ExitCode::from(2);
        }
        let config = lastmile_sim::explore::ExploreConfig {
            seed: args.seed,
            cases: usize::MAX,
            seeds_per_case: args.seeds_per_case,
            stop_at_first: false,
            planted_bug: false,
        };
        let started = wall_now();
        println!("lastmile-sim explore: generator seed {}, budget {:?}", args.seed, budget);
        let out = args.out.clone();
        let found = lastmile_sim::explore::explore(
            &config,
            |case, scenario, failure| match failure {
                None => eprintln!("[{case:>4}] {}: pass", scenario.scenario.name),
                Some(f) => {
                    let path = out.join(format!("{}.toml", scenario.scenario.name));
                    let _ = std::fs::write(&path, &f.toml);
                    println!("[{case:>4}] {}: FAIL seed {} ({})", scenario.scenario.name, f.seed, f.rules.join(", "));
                    println!("    kept: {}", path.display());
                    println!("    replay: {}", replay_command(&path.display().to_string(), f.seed, true, false));
                    println!("    shrink: cargo sim shrink {} --seed {}", path.display(), f.seed);
                }
            },
            || started.elapsed() < budget,
        );
        println!("summary: {} failing scenarios kept in {}", found.len(), args.out.display());
        if found.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }

    pub fn shrink(args: ShrinkArgs) -> ExitCode {
        let scenario = match lastmile_scenarios::load(&args.file) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        };
        let config =
            lastmile_sim::shrink::ShrinkConfig { seed: args.seed, max_runs: args.max_runs, planted_bug: false };
        match lastmile_sim::shrink::shrink(&scenario, &config, |line| eprintln!("  {line}")) {
            Ok(shrunk) => {
                if let Err(e) = std::fs::write(&args.out, &shrunk.toml) {
                    eprintln!("cannot write {}: {e}", args.out.display());
                    return ExitCode::from(2);
                }
                println!(
                    "shrunk {} ({} steps with its random faults written out) to {} steps in {} runs; still breaks {}",
                    args.file.display(),
                    shrunk.steps_before,
                    shrunk.steps_after,
                    shrunk.runs,
                    shrunk.rule
                );
                println!("written: {}", args.out.display());
                println!("replay: {}", replay_command(&args.out.display().to_string(), args.seed, false, false));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        }
    }

    pub fn run(args: RunArgs) -> ExitCode {
        let scenario = match lastmile_scenarios::load(&args.file) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        };
        if let Some(path) = &args.emit_scenario {
            let text = lastmile_scenarios::write::with_faults_explicit(&scenario, args.seed);
            if let Err(e) = std::fs::write(path, text) {
                eprintln!("cannot write {}: {e}", path.display());
                return ExitCode::from(2);
            }
            println!("scenario with seed {}'s random faults as steps: {}", args.seed, path.display());
        }
        let file = args.file.display().to_string();
        match &args.seeds {
            Some(range) => match seed_range(range) {
                Ok(range) => sweep(&scenario, &file, range, &args),
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            },
            None => single(&scenario, &file, &args),
        }
    }

    fn config(args: &RunArgs, seed: u64) -> RunConfig {
        RunConfig {
            seed,
            random_faults: !args.no_random_faults,
            naive_matching: args.naive_matching,
            planted_bug: false,
        }
    }

    fn single(scenario: &Scenario, file: &str, args: &RunArgs) -> ExitCode {
        let cfg = config(args, args.seed);
        if args.journal_stdout {
            let run = runs::run(scenario, &cfg);
            println!("{}", serde_json::to_string(&run.journal).expect("journals serialize"));
            return if run.journal.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE };
        }
        println!("lastmile-sim: scenario {} ({file}) seed {}", scenario.scenario.name, cfg.seed);
        println!(
            "  random faults {}, matching {}",
            if cfg.random_faults { "on" } else { "off" },
            if cfg.naive_matching || scenario.options.naive_matching {
                "naive (original design)"
            } else {
                "stateless + compare-and-set"
            }
        );
        println!("  timeline:");
        for step in timeline(scenario, cfg.seed, cfg.random_faults) {
            println!("    {step}");
        }
        let started = wall_now();
        let outcome = std::panic::catch_unwind(|| {
            if args.check_determinism {
                let (run, d) = runs::check_determinism(scenario, &cfg);
                (run, Some(d))
            } else {
                (runs::run(scenario, &cfg), None)
            }
        });
        let (run, divergence) = match outcome {
            Ok(done) => done,
            Err(panic) => {
                println!(
                    "scenario {} seed {}: FAIL (the simulation panicked: {})",
                    scenario.scenario.name,
                    cfg.seed,
                    panic_message(&panic)
                );
                println!("replay: {}", replay_command(file, cfg.seed, cfg.random_faults, cfg.naive_matching));
                return ExitCode::FAILURE;
            }
        };
        let wall = started.elapsed() / if args.check_determinism { 2 } else { 1 };
        print!("{}", human(&run.journal, Some(wall)));
        if let Some(path) = &args.html {
            if let Err(e) = std::fs::write(path, lastmile_harness::html::render(&run.evidence, &run.journal)) {
                eprintln!("cannot write {}: {e}", path.display());
                return ExitCode::from(2);
            }
            println!("report written to {}", path.display());
        }
        if let Some(path) = &args.junit {
            let replay = replay_command(file, cfg.seed, cfg.random_faults, cfg.naive_matching);
            if let Err(e) = std::fs::write(path, lastmile_harness::report::junit(&[(&run.journal, replay)])) {
                eprintln!("cannot write {}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
        if let Some(path) = &args.json {
            let json = serde_json::to_string_pretty(&run.journal).expect("journals serialize");
            if let Err(e) = std::fs::write(path, json + "\n") {
                eprintln!("cannot write {}: {e}", path.display());
                return ExitCode::from(2);
            }
            println!("journal written to {}", path.display());
        }
        let mut ok = run.journal.passed();
        match divergence {
            Some(None) => println!(
                "determinism: the seed ran twice with identical histories ({} operations)",
                run.evidence.history.len()
            ),
            Some(Some(d)) => {
                ok = false;
                println!("determinism: FAILED, histories diverge at operation {}", d.index);
                println!("  first run:  {}", d.first.unwrap_or_else(|| "(ended)".into()));
                println!("  second run: {}", d.second.unwrap_or_else(|| "(ended)".into()));
            }
            None => {}
        }
        if ok {
            ExitCode::SUCCESS
        } else {
            println!("replay: {}", replay_command(file, cfg.seed, cfg.random_faults, cfg.naive_matching));
            ExitCode::FAILURE
        }
    }

    fn sweep(scenario: &Scenario, file: &str, seeds: std::ops::Range<u64>, args: &RunArgs) -> ExitCode {
        let total = seeds.end - seeds.start;
        println!(
            "lastmile-sim: scenario {} ({file}) seeds {}..{} on {} jobs",
            scenario.scenario.name,
            seeds.start,
            seeds.end,
            args.jobs.max(1)
        );
        let next = Arc::new(AtomicU64::new(seeds.start));
        let (tx, rx) = mpsc::channel();
        let mut workers = Vec::new();
        let exe = std::env::current_exe().expect("the running binary has a path");
        for _ in 0..args.jobs.max(1) {
            let (next, tx, end, exe) = (next.clone(), tx.clone(), seeds.end, exe.clone());
            let mut flags = vec!["run".to_string(), file.to_string(), "--journal-stdout".into()];
            if args.no_random_faults {
                flags.push("--no-random-faults".into());
            }
            if args.naive_matching {
                flags.push("--naive-matching".into());
            }
            // Each seed runs in a process of its own, as a replay would: nothing a run leaves in
            // its process (memory, global counters) can reach the next one.
            #[allow(clippy::disallowed_methods)] // the harness's workers, not simulated code
            workers.push(std::thread::spawn(move || loop {
                let seed = next.fetch_add(1, Ordering::SeqCst);
                if seed >= end {
                    return;
                }
                let started = wall_now();
                let run = run_child(&exe, &flags, seed);
                if tx.send((seed, run, started.elapsed())).is_err() {
                    return;
                }
            }));
        }
        drop(tx);
        let mut failed = Vec::new();
        let mut times: Vec<(Duration, u64)> = Vec::new();
        let mut done = 0;
        let mut first_failure = None;
        let mut journals = Vec::new();
        // Seeds in which each recovery path ran at least once.
        let mut reached: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
        for (seed, run, wall) in rx {
            done += 1;
            times.push((wall, seed));
            match run {
                Ok(journal) => {
                    for (path, n) in journal.coverage.iter().flatten() {
                        *reached.entry(path.clone()).or_default() += u64::from(*n > 0);
                    }
                    let verdict = if journal.passed() { "pass" } else { "FAIL" };
                    eprintln!(
                        "[{done:>3}/{total}] seed {seed:>5}: {verdict} ({:.1} s wall, {:.0} s simulated)",
                        wall.as_secs_f64(),
                        journal.end_at_s
                    );
                    if !journal.passed() {
                        let first = journal.violations().first().map(|v| v.message.clone()).unwrap_or_default();
                        failed.push((seed, first));
                        if first_failure.is_none() {
                            first_failure = Some(journal.clone());
                        }
                    }
                    if args.junit.is_some() {
                        journals.push(journal);
                    }
                }
                Err(crash) => {
                    eprintln!("[{done:>3}/{total}] seed {seed:>5}: FAIL ({crash})");
                    failed.push((seed, crash));
                }
            }
        }
        for w in workers {
            let _ = w.join();
        }
        failed.sort();
        times.sort();
        let missing = total as usize - done;
        println!("summary: {} passed, {} failed of {total}", done - failed.len(), failed.len() + missing);
        if missing > 0 {
            println!("  {missing} seeds did not report (a worker died)");
        }
        for (seed, why) in &failed {
            println!("  seed {seed}: {why}");
            println!("    replay: {}", replay_command(file, *seed, !args.no_random_faults, args.naive_matching));
        }
        let slowest: Vec<String> =
            times.iter().rev().take(3).map(|(w, s)| format!("seed {s} {:.1} s", w.as_secs_f64())).collect();
        println!("  slowest: {}", slowest.join(", "));
        let taken: Vec<String> =
            reached.iter().filter(|(_, n)| **n > 0).map(|(p, n)| format!("{p} ({n} seeds)")).collect();
        let never: Vec<&str> = reached.iter().filter(|(_, n)| **n == 0).map(|(p, _)| p.as_str()).collect();
        println!("  recovery paths reached: {}", if taken.is_empty() { "none".into() } else { taken.join(", ") });
        if !never.is_empty() {
            println!("  recovery paths NEVER reached in this sweep: {}", never.join(", "));
        }
        if let Some(path) = &args.junit {
            journals.sort_by_key(|j| j.seed);
            let runs: Vec<_> = journals
                .iter()
                .map(|j| (j, replay_command(file, j.seed, !args.no_random_faults, args.naive_matching)))
                .collect();
            if let Err(e) = std::fs::write(path, lastmile_harness::report::junit(&runs)) {
                eprintln!("cannot write {}: {e}", path.display());
            }
        }
        if let (Some(path), Some(journal)) = (&args.json, first_failure) {
            let json = serde_json::to_string_pretty(&journal).expect("journals serialize");
            let _ = std::fs::write(path, json + "\n");
        }
        if failed.is_empty() && missing == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

#[cfg(not(madsim))]
mod imp {
    use super::*;

    pub fn explore(args: ExploreArgs) -> ExitCode {
        let _ = (args, budget);
        run_elsewhere()
    }

    pub fn shrink(args: ShrinkArgs) -> ExitCode {
        let _ = args;
        run_elsewhere()
    }

    fn run_elsewhere() -> ExitCode {
        eprintln!("lastmile-sim runs scenarios only in the simulation build: use `cargo sim ...` (see README.md)");
        ExitCode::from(2)
    }

    pub fn run(args: RunArgs) -> ExitCode {
        let _ = (args, seed_range);
        eprintln!("lastmile-sim runs scenarios only in the simulation build: use `cargo sim run ...` (see README.md)");
        ExitCode::from(2)
    }
}
