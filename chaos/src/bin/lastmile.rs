//! `lastmile`: LastMile's command line for real deployments and scenario files.
//!
//! ```text
//! lastmile scenario check scenarios/*.toml
//! lastmile chaos run scenarios/matching-outage.toml --target local [--time-scale 0.5] [--seed 7]
//! lastmile service trip --listen 127.0.0.1:8083        # one service (what the local target runs)
//! ```
//! (Simulated runs are `cargo sim run ...`.)

use clap::{Parser, Subcommand, ValueEnum};
use lastmile_chaos::local::{LocalOptions, LocalTarget};
use lastmile_harness::report::{human, judge};
use lastmile_harness::RunConfig;
use lastmile_scenarios::faults::timeline;
use lastmile_services::cli::{init_logging, ServiceArgs};
use lastmile_services::ServiceName;
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
    /// Run scenarios against real deployments.
    Chaos {
        #[command(subcommand)]
        command: ChaosCommand,
    },
    /// Run one service (user, location, trip, matching, notification).
    Service(ServiceArgs),
}

#[derive(Debug, Subcommand)]
enum ScenarioCommand {
    /// Validate scenario files: the file, line and field of the first problem in each.
    Check {
        /// The files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TargetKind {
    /// Every service as a process of this machine, against a real RabbitMQ.
    Local,
    /// A Kubernetes cluster (not built yet).
    Kube,
}

#[derive(Debug, Subcommand)]
enum ChaosCommand {
    /// Run a scenario file for real and judge it with the simulation's checkers.
    Run {
        /// The scenario file.
        file: PathBuf,
        /// Where to run it.
        #[arg(long, value_enum, default_value = "local")]
        target: TargetKind,
        /// The seed of the workload and the random faults.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Multiply every duration of the scenario (0.5 runs it in half the time).
        #[arg(long, default_value_t = 1.0)]
        time_scale: f64,
        /// Do not add the seed's random faults.
        #[arg(long)]
        no_random_faults: bool,
        /// Run the original matching design.
        #[arg(long)]
        naive_matching: bool,
        /// RabbitMQ for the services.
        #[arg(long, env = "LASTMILE_AMQP_URL", default_value = lastmile_services::config::DEFAULT_AMQP_URL)]
        amqp_url: String,
        /// Where journals and service logs go (default: a fresh folder under the temp dir).
        #[arg(long)]
        work_dir: Option<PathBuf>,
        /// Write the JSON journal here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    match Args::parse().command {
        Command::Scenario { command: ScenarioCommand::Check { files } } => check(files),
        Command::Service(args) => {
            init_logging();
            let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
            match runtime.block_on(args.run()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Chaos {
            command:
                ChaosCommand::Run {
                    file,
                    target,
                    seed,
                    time_scale,
                    no_random_faults,
                    naive_matching,
                    amqp_url,
                    work_dir,
                    json,
                },
        } => {
            let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
            let config = RunConfig { seed, random_faults: !no_random_faults, naive_matching };
            runtime.block_on(chaos_run(file, target, config, time_scale, amqp_url, work_dir, json))
        }
    }
}

/// Ctrl-C or SIGTERM.
async fn interrupted() {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn check(files: Vec<PathBuf>) -> ExitCode {
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

async fn chaos_run(
    file: PathBuf,
    target: TargetKind,
    config: RunConfig,
    time_scale: f64,
    amqp_url: String,
    work_dir: Option<PathBuf>,
    json: Option<PathBuf>,
) -> ExitCode {
    let scenario = match lastmile_scenarios::load(&file) {
        Ok(s) if time_scale > 0.0 => s.time_scaled(time_scale),
        Ok(_) => {
            eprintln!("--time-scale must be positive");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let TargetKind::Kube = target {
        eprintln!("--target kube is not built yet; use --target local (see README.md, status)");
        return ExitCode::from(2);
    }
    let id = lastmile_platform::clock::new_id();
    let work_dir = work_dir.unwrap_or_else(|| std::env::temp_dir().join(format!("lastmile-chaos-{}", &id[..12])));
    let binary = match std::env::current_exe() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("cannot find the lastmile binary to run services with: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "lastmile chaos: scenario {} ({}) seed {} target local, time scale {time_scale}",
        scenario.scenario.name,
        file.display(),
        config.seed
    );
    println!("  services' logs and journals in {}", work_dir.display());
    println!("  timeline:");
    for step in timeline(&scenario, config.seed, config.random_faults) {
        println!("    {step}");
    }
    let options = LocalOptions {
        binary,
        amqp_url,
        prefix: format!("chaos-{}", &id[..12]),
        work_dir,
        ride_ttl: std::time::Duration::from_secs_f64(scenario.workload.ride_ttl_s),
        naive_matching: config.naive_matching || scenario.options.naive_matching,
    };
    let replicas = ServiceName::ALL.into_iter().map(|s| (s, scenario.initial_replicas(s.as_str()))).collect();
    // Wall time is what a real run takes; this is the harness, not simulated code.
    #[allow(clippy::disallowed_methods)]
    let started = std::time::Instant::now();
    let mut local = match LocalTarget::start(options, &replicas).await {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot start the services: {e}");
            return ExitCode::FAILURE;
        }
    };
    let evidence = tokio::select! {
        biased;
        _ = interrupted() => {
            // Stop every service process before leaving: nothing of the run outlives it.
            drop(local);
            eprintln!("interrupted: the run was stopped and every service process it started is gone");
            return ExitCode::from(130);
        }
        evidence = lastmile_harness::run(&scenario, &config, &mut local) => evidence,
    };
    drop(local);
    let journal = judge(&scenario, &evidence);
    print!("{}", human(&journal, None));
    println!("  wall time {:.0} s", started.elapsed().as_secs_f64());
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&journal).expect("journals serialize");
        if let Err(e) = std::fs::write(&path, text + "\n") {
            eprintln!("cannot write {}: {e}", path.display());
        }
    }
    if journal.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
