//! The simulated runs behind `lastmile-sim`: one seed, a sweep (each seed in a process of its
//! own, `--jobs` at a time), explore and shrink.

use crate::cli::{budget, seed_range, ExploreArgs, RunArgs, ShrinkArgs};
use crate::{replay_command, runs};
use lastmile_harness::report::{human, RunReport};
use lastmile_harness::sweep::{SeedRange, SeedSummary, SummaryLine};
use lastmile_harness::RunConfig;
use lastmile_scenarios::faults::timeline;
use lastmile_scenarios::Scenario;
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Run one seed in a child process and read its report.
fn run_child(exe: &std::path::Path, flags: &[String], seed: u64) -> Result<RunReport, String> {
    let out = std::process::Command::new(exe)
        .args(flags)
        .arg("--seed")
        .arg(seed.to_string())
        .output()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().last().map(serde_json::from_str::<RunReport>) {
        Some(Ok(report)) => Ok(report),
        _ => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let why = stderr.lines().find(|l| l.contains("panicked")).unwrap_or("no report");
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
    let config = crate::explore::ExploreConfig {
        seed: args.seed,
        cases: usize::MAX,
        seeds_per_case: args.seeds_per_case,
        stop_at_first: false,
        planted_bug: false,
    };
    let started = wall_now();
    println!("lastmile-sim explore: generator seed {}, budget {:?}", args.seed, budget);
    let out = args.out.clone();
    let found = crate::explore::explore(
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
    let config = crate::shrink::ShrinkConfig { seed: args.seed, max_runs: args.max_runs, planted_bug: false };
    match crate::shrink::shrink(&scenario, &config, |line| eprintln!("  {line}")) {
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
        // Summary lines come from the sweep's loop: one seed is a sweep of one.
        None if args.summary_lines => sweep(&scenario, &file, args.seed..args.seed + 1, &args),
        None => single(&scenario, &file, &args),
    }
}

/// The summary line of one seed's outcome (a report, or why the simulation crashed).
fn seed_line(scenario: &Scenario, seed: u64, run: &Result<RunReport, String>, replay: String) -> SummaryLine {
    let scenario = scenario.scenario.name.clone();
    SummaryLine::Seed(match run {
        Ok(report) => SeedSummary {
            scenario,
            seed,
            passed: report.passed(),
            failed_checks: report.checks.iter().filter(|c| !c.ok).map(|c| c.rule.clone()).collect(),
            first_violation: report.violations().first().map(|v| v.message.clone()),
            replay,
        },
        Err(crash) => SeedSummary {
            scenario,
            seed,
            passed: false,
            failed_checks: vec!["crashed".into()],
            first_violation: Some(crash.clone()),
            replay,
        },
    })
}

fn config(args: &RunArgs, seed: u64) -> RunConfig {
    RunConfig { seed, random_faults: !args.no_random_faults, naive_matching: args.naive_matching, planted_bug: false }
}

fn single(scenario: &Scenario, file: &str, args: &RunArgs) -> ExitCode {
    let cfg = config(args, args.seed);
    let file = args.replay_file.as_deref().unwrap_or(file);
    if args.report_stdout {
        let run = runs::run(scenario, &cfg);
        println!("{}", serde_json::to_string(&run.report).expect("reports serialize"));
        return if run.report.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE };
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
    print!("{}", human(&run.report, Some(wall)));
    if let Some(path) = &args.html {
        if let Err(e) = std::fs::write(path, lastmile_harness::html::render(&run.evidence, &run.report)) {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
        println!("HTML report written to {}", path.display());
    }
    if let Some(path) = &args.junit {
        let replay = replay_command(file, cfg.seed, cfg.random_faults, cfg.naive_matching);
        if let Err(e) = std::fs::write(path, lastmile_harness::report::junit(&[(&run.report, replay)])) {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&run.report).expect("reports serialize");
        if let Err(e) = std::fs::write(path, json + "\n") {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
        println!("JSON report written to {}", path.display());
    }
    let mut ok = run.report.passed();
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
    let replay_file = args.replay_file.as_deref().unwrap_or(file);
    // With --summary-lines stdout carries only the JSON lines; everything for a reader goes to
    // stderr.
    let mut out: Box<dyn Write> =
        if args.summary_lines { Box::new(std::io::stderr()) } else { Box::new(std::io::stdout()) };
    let _ = writeln!(
        out,
        "lastmile-sim: scenario {} ({file}) seeds {}..{} on {} jobs",
        scenario.scenario.name,
        seeds.start,
        seeds.end,
        args.jobs.max(1)
    );
    if args.summary_lines {
        let declared = SeedRange { start: seeds.start, end: seeds.end };
        println!("{}", SummaryLine::Range { scenario: scenario.scenario.name.clone(), seeds: declared }.to_line());
    }
    let next = Arc::new(AtomicU64::new(seeds.start));
    let (tx, rx) = mpsc::channel();
    let mut workers = Vec::new();
    let exe = std::env::current_exe().expect("the running binary has a path");
    for _ in 0..args.jobs.max(1) {
        let (next, tx, end, exe) = (next.clone(), tx.clone(), seeds.end, exe.clone());
        let mut flags = vec!["run".to_string(), file.to_string(), "--report-stdout".into()];
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
    let mut reports = Vec::new();
    // Seeds in which each recovery path ran at least once.
    let mut reached: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for (seed, run, wall) in rx {
        done += 1;
        times.push((wall, seed));
        if args.summary_lines {
            let replay = replay_command(replay_file, seed, !args.no_random_faults, args.naive_matching);
            println!("{}", seed_line(scenario, seed, &run, replay).to_line());
        }
        match run {
            Ok(report) => {
                for (path, n) in report.coverage.iter().flatten() {
                    *reached.entry(path.clone()).or_default() += u64::from(*n > 0);
                }
                let verdict = if report.passed() { "pass" } else { "FAIL" };
                eprintln!(
                    "[{done:>3}/{total}] seed {seed:>5}: {verdict} ({:.1} s wall, {:.0} s simulated)",
                    wall.as_secs_f64(),
                    report.end_at_s
                );
                if !report.passed() {
                    let first = report.violations().first().map(|v| v.message.clone()).unwrap_or_default();
                    failed.push((seed, first));
                    if first_failure.is_none() {
                        first_failure = Some(report.clone());
                    }
                }
                if args.junit.is_some() {
                    reports.push(report);
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
    let _ = writeln!(out, "summary: {} passed, {} failed of {total}", done - failed.len(), failed.len() + missing);
    if missing > 0 {
        let _ = writeln!(out, "  {missing} seeds did not report (a worker died)");
    }
    for (seed, why) in &failed {
        let _ = writeln!(out, "  seed {seed}: {why}");
        let replay = replay_command(replay_file, *seed, !args.no_random_faults, args.naive_matching);
        let _ = writeln!(out, "    replay: {replay}");
    }
    let slowest: Vec<String> =
        times.iter().rev().take(3).map(|(w, s)| format!("seed {s} {:.1} s", w.as_secs_f64())).collect();
    let _ = writeln!(out, "  slowest: {}", slowest.join(", "));
    let taken: Vec<String> = reached.iter().filter(|(_, n)| **n > 0).map(|(p, n)| format!("{p} ({n} seeds)")).collect();
    let never: Vec<&str> = reached.iter().filter(|(_, n)| **n == 0).map(|(p, _)| p.as_str()).collect();
    let _ =
        writeln!(out, "  recovery paths reached: {}", if taken.is_empty() { "none".into() } else { taken.join(", ") });
    if !never.is_empty() {
        let _ = writeln!(out, "  recovery paths NEVER reached in this sweep: {}", never.join(", "));
    }
    if let Some(path) = &args.junit {
        reports.sort_by_key(|r| r.seed);
        let runs: Vec<_> = reports
            .iter()
            .map(|r| (r, replay_command(replay_file, r.seed, !args.no_random_faults, args.naive_matching)))
            .collect();
        if let Err(e) = std::fs::write(path, lastmile_harness::report::junit(&runs)) {
            eprintln!("cannot write {}: {e}", path.display());
        }
    }
    if let (Some(path), Some(report)) = (&args.json, first_failure) {
        let json = serde_json::to_string_pretty(&report).expect("reports serialize");
        let _ = std::fs::write(path, json + "\n");
    }
    // Summary lines report failing seeds as results; only a seed without a verdict is an error
    // (what a Kubernetes Job should retry).
    if (failed.is_empty() || args.summary_lines) && missing == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
