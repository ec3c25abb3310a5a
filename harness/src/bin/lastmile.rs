//! `lastmile`: the project's command line for real deployments and scenario files.
//!
//! `lastmile scenario check <file>...` validates scenario files and names the file, line and
//! field of the first problem in each. (Simulated runs are `cargo sim run ...`.)

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// LastMile's command line.
#[derive(Debug, Parser)]
#[command(name = "lastmile", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Scenario files.
    Scenario {
        #[command(subcommand)]
        command: ScenarioCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ScenarioCommand {
    /// Validate scenario files.
    Check {
        /// The files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    match Args::parse().command {
        Command::Scenario { command: ScenarioCommand::Check { files } } => {
            let mut ok = true;
            for file in files {
                match lastmile_scenarios::load(&file) {
                    Ok(s) => println!(
                        "{}: ok ({}: {} steps, {} phases, {} expectations, random faults {})",
                        file.display(),
                        s.scenario.name,
                        s.steps.len(),
                        s.phases.len(),
                        s.expectations.len(),
                        if s.random_faults.enabled { "on" } else { "off" }
                    ),
                    Err(e) => {
                        ok = false;
                        eprintln!("{e}");
                    }
                }
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
    }
}
