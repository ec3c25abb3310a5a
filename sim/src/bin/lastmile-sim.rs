//! `lastmile-sim`: run LastMile inside the deterministic simulation.
//!
//! `cargo sim demo --seed 7` runs the original demo (3 drivers, 7 riders) against the five
//! services and the simulated broker, prints the seed first, and on failure the one command that
//! replays the run exactly.

use clap::{Parser, Subcommand};

/// Run LastMile in the deterministic simulation.
#[derive(Debug, Parser)]
#[command(name = "lastmile-sim", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The original mixed demo: 3 drivers, 7 riders on 3 stations.
    Demo {
        /// The seed (a run is a pure function of it).
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match args.command {
        Command::Demo { seed } => imp::demo(seed),
    }
}

#[cfg(madsim)]
mod imp {
    use lastmile_sim::{replay_command, runs};
    use std::process::ExitCode;

    pub fn demo(seed: u64) -> ExitCode {
        println!("lastmile-sim demo: seed {seed}");
        // Wall time is read by the harness around the simulation, never inside it.
        #[allow(clippy::disallowed_methods)]
        let wall = std::time::Instant::now();
        let run = runs::demo(seed);
        let wall = wall.elapsed();
        let ratio = run.simulated.as_secs_f64() / wall.as_secs_f64().max(1e-9);
        println!(
            "simulated {:.1} s in {:.2} s wall ({ratio:.0}x); {} operations; history digest {}",
            run.simulated.as_secs_f64(),
            wall.as_secs_f64(),
            run.ops,
            run.digest
        );
        let violations = match &run.outcome {
            Ok(report) => {
                println!("trips: {}", report.trips.len());
                for trip in report.trips.values() {
                    println!(
                        "  {} driver {} at {} riders {:?}: {:?}",
                        trip.trip_id, trip.driver_id, trip.station_id, trip.rider_ids, trip.status
                    );
                }
                for (ride_id, ride) in &report.rides {
                    println!(
                        "  {ride_id} ({} at {} → {}): {:?}",
                        ride.rider_id, ride.station_id, ride.destination, ride.status
                    );
                }
                report.violations()
            }
            Err(e) => vec![e.clone()],
        };
        if violations.is_empty() {
            println!("verdict: PASS");
            ExitCode::SUCCESS
        } else {
            println!("verdict: FAIL");
            for v in &violations {
                println!("  - {v}");
            }
            println!("replay: {}", replay_command(seed));
            ExitCode::FAILURE
        }
    }
}

#[cfg(not(madsim))]
mod imp {
    use std::process::ExitCode;

    pub fn demo(_seed: u64) -> ExitCode {
        eprintln!("lastmile-sim runs only in the simulation build: use `cargo sim demo` (see README.md)");
        ExitCode::from(2)
    }
}
