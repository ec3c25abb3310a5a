//! `lastmile-sim`: run scenario files inside the deterministic simulation.
//!
//! ```text
//! cargo sim run scenarios/matching-outage.toml --seed 7
//! cargo sim run scenarios/scale-under-load.toml --seeds 1..50 --jobs 2
//! cargo sim run scenarios/scale-under-load.toml --seed 3 --naive-matching
//! cargo sim run scenarios/demo.toml --seed 1 --check-determinism --json journal.json
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
    /// Run the seed twice and report the first point where the histories diverge.
    #[arg(long)]
    check_determinism: bool,
    /// Print only the journal as JSON (how a sweep runs each seed in a process of its own).
    #[arg(long, hide = true)]
    journal_stdout: bool,
}

fn main() -> ExitCode {
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

    pub fn run(args: RunArgs) -> ExitCode {
        let scenario = match lastmile_scenarios::load(&args.file) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        };
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
        RunConfig { seed, random_faults: !args.no_random_faults, naive_matching: args.naive_matching }
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
                            first_failure = Some(journal);
                        }
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

    pub fn run(args: RunArgs) -> ExitCode {
        let _ = (args, seed_range);
        eprintln!("lastmile-sim runs scenarios only in the simulation build: use `cargo sim run ...` (see README.md)");
        ExitCode::from(2)
    }
}
