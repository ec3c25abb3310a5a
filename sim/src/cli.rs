//! `lastmile-sim`'s command line: the arguments and what each command does (the binary only
//! parses and calls [`dispatch`]). Runs, sweeps (a process per seed), explore and shrink are in
//! `crate::commands` (simulation build only).
//!
//! ```text
//! cargo sim run scenarios/matching-outage.toml --seed 7
//! cargo sim run scenarios/scale-under-load.toml --seeds 1..50 --jobs 2
//! cargo sim run scenarios/scale-under-load.toml --seed 3 --naive-matching
//! cargo sim run scenarios/demo.toml --seed 1 --check-determinism --json report.json
//! cargo sim run scenarios/matching-outage.toml --seed 7 --emit-scenario seed7.toml
//! cargo simr explore --budget 10m --out explored/
//! cargo sim shrink explored/explore-1-3.toml --seed 1013 --out minimal.toml
//! cargo sim run scenarios/demo.toml --seeds 1..20 --summary-lines > a.jsonl
//! cargo sim merge a.jsonl b.jsonl
//! ```
//!
//! A run prints its seed and every derived fault first, then a summary per phase and a verdict
//! per rule; a failing run prints the one command that replays it. The exit status is non-zero
//! when any check fails.

#[cfg(madsim)]
use crate::commands;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Run LastMile scenarios in the deterministic simulation.
#[derive(Debug, Parser)]
#[command(name = "lastmile-sim", version)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
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
    /// Merge the summary lines of any sweeps (`run --seeds A..B --summary-lines`, the pods of
    /// `lastmile sweep --kube`) into one summary: seeds run, passed, failed with their replay
    /// commands, and the seeds of the declared ranges no line reports.
    Merge {
        /// Files of summary lines (other lines are skipped); `-` reads standard input.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// `explore`'s arguments.
#[derive(Debug, clap::Args)]
pub struct ExploreArgs {
    /// Wall-clock budget: `90s`, `10m`, `1h`.
    #[arg(long, default_value = "60s")]
    pub budget: String,
    /// Seeds the generator (the same value generates the same scenarios).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Simulation seeds per generated scenario.
    #[arg(long, default_value_t = 2)]
    pub seeds_per_case: u64,
    /// Where failing scenarios are written.
    #[arg(long, default_value = "explored")]
    pub out: PathBuf,
}

/// `shrink`'s arguments.
#[derive(Debug, clap::Args)]
pub struct ShrinkArgs {
    /// The failing scenario file.
    pub file: PathBuf,
    /// The seed it fails with.
    #[arg(long)]
    pub seed: u64,
    /// Simulated runs to spend at most.
    #[arg(long, default_value_t = 200)]
    pub max_runs: usize,
    /// Where the minimal scenario is written.
    #[arg(long, default_value = "shrunk.toml")]
    pub out: PathBuf,
}

/// `run`'s arguments.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The scenario file.
    pub file: PathBuf,
    /// The seed of a single run (a run is a pure function of it).
    #[arg(long, default_value_t = 1, conflicts_with = "seeds")]
    pub seed: u64,
    /// Sweep seeds `A..B` (end exclusive) or `A..=B`.
    #[arg(long)]
    pub seeds: Option<String>,
    /// Runs in parallel during a sweep.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Do not add the seed's random faults to the scenario's timeline.
    #[arg(long)]
    pub no_random_faults: bool,
    /// Run the original matching design (riders and seats in each replica's memory).
    #[arg(long)]
    pub naive_matching: bool,
    /// Write the JSON report of the run (of the first failing seed in a sweep) to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the run as a self-contained HTML page (timeline, faults, violations) to this file.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Write JUnit XML (a test case per rule per seed) to this file, for CI systems.
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Run the seed twice and report the first point where the histories diverge.
    #[arg(long)]
    pub check_determinism: bool,
    /// Print only the report as JSON (how a sweep runs each seed in a process of its own).
    #[arg(long, hide = true)]
    pub report_stdout: bool,
    /// Write the scenario with this seed's random faults as explicit steps to this file, then
    /// run as usual.
    #[arg(long)]
    pub emit_scenario: Option<PathBuf>,
    /// Print the seeds as JSON lines on stdout (the range first, then each seed's verdict as it
    /// ends; progress goes to stderr), for a pod's log and `merge`. The exit status is then
    /// non-zero only when a seed gave no verdict: failing seeds are results, not errors.
    #[arg(long)]
    pub summary_lines: bool,
    /// The scenario path replay commands name (default: the file as given) — for a file that
    /// sits elsewhere while it runs, e.g. mounted into a pod.
    #[arg(long)]
    pub replay_file: Option<String>,
}

/// Parse `90s`, `10m`, `1h` (or plain seconds).
pub(crate) fn budget(text: &str) -> Result<std::time::Duration, String> {
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

/// Carry out a parsed command line.
pub fn dispatch(args: Args) -> ExitCode {
    #[cfg(madsim)]
    crate::init_logging();
    match args.command {
        Command::Check { file } => match lastmile_scenarios::check(&file) {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Run(args) => commands::run(args),
        Command::Explore(args) => commands::explore(args),
        Command::Shrink(args) => commands::shrink(args),
        Command::Merge { files } => merge(&files),
    }
}

/// `merge`: one summary of every file's summary lines; non-zero when a seed failed or is missing.
fn merge(files: &[PathBuf]) -> ExitCode {
    let mut text = String::new();
    for file in files {
        let read = if file.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin())
        } else {
            std::fs::read_to_string(file)
        };
        match read {
            Ok(t) => {
                text.push_str(&t);
                text.push('\n');
            }
            Err(e) => {
                eprintln!("cannot read {}: {e}", file.display());
                return ExitCode::from(2);
            }
        }
    }
    let summary = lastmile_harness::sweep::merge(text.lines(), &[]);
    print!("{}", summary.human());
    if summary.other_lines > 0 {
        println!("  ({} lines that are not summary lines skipped)", summary.other_lines);
    }
    if summary.all_passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Parse `A..B` or `A..=B`.
pub(crate) fn seed_range(text: &str) -> Result<std::ops::Range<u64>, String> {
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

/// Outside the simulation build the commands only say where to run them.
#[cfg(not(madsim))]
mod commands {
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;
    use lastmile_harness::docs::assert_documented_commands;

    /// Every `cargo sim …` / `cargo simr …` command the documentation quotes parses, and the
    /// scenario files it reads exist.
    #[test]
    fn every_documented_simulation_command_parses_and_names_existing_scenarios() {
        let parses = |args: &[String]| match Args::try_parse_from(
            std::iter::once("lastmile-sim".into()).chain(args.iter().cloned()),
        ) {
            Ok(_) => Ok(()),
            // Named without its arguments: prose naming the command.
            Err(e) if matches!(e.kind(), ErrorKind::MissingSubcommand | ErrorKind::MissingRequiredArgument) => Ok(()),
            Err(e) => Err(e.to_string().lines().next().unwrap_or_default().to_string()),
        };
        let words = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert!(parses(&words("run scenarios/demo.toml --seedz 1")).is_err(), "the check can fail");
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        assert_documented_commands(&root, &["cargo sim", "cargo simr", "lastmile-sim"], parses);
    }
}
