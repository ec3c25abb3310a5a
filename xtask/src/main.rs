//! `cargo xtask <task>`: the project's own commands, with nothing but std.
//!
//! - `cargo xtask test`: every test of both build flavours. Starts a locally installed RabbitMQ
//!   if none answers (the real-world tests need one), then runs `cargo test` (normal flavour)
//!   and `cargo simtest` (madsim flavour), then README.md's main job as written
//!   (`cargo sim run scenarios/matching-outage.toml --seed 1`).
//!   Then the three documented scenarios run for real (`cargo xtask chaos`).
//! - `cargo xtask chaos`: the three documented scenarios, `capacity` and `rolling-update`
//!   against local service processes, each with a RabbitMQ node of its own, time-scaled, with
//!   seeds whose random faults carry out partitions, latency, broker restarts and a disk stall
//!   for real, judged by the simulation's checkers; then `lastmile resilience matching-service`
//!   and `lastmile demo simulation`, so the scripts' jobs run too, and a short `lastmile load`.
//!   Two at a time, each one's output in `target/chaos-logs/`; a failed one's output is printed
//!   whole at the end.
//! - `cargo xtask report`: a failing simulated run (the naive design under scale) written as an
//!   HTML report and rendered by headless Chromium (Debian's `chromium`) to a PNG; fails when
//!   Chromium is missing or draws nothing. Part of `cargo xtask test`.
//! - `cargo xtask lint`: `cargo fmt --check` and clippy with `-D warnings` in both flavours.
//! - `cargo xtask rabbitmq`: only make sure RabbitMQ answers.

use std::net::{TcpStream, ToSocketAddrs};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

/// The variable naming the broker the real-world tests use.
const AMQP_URL_VAR: &str = "LASTMILE_TEST_AMQP_URL";
const DEFAULT_BROKER: &str = "127.0.0.1:5672";
/// How long a starting RabbitMQ may take to accept connections.
const RABBITMQ_START_TIMEOUT: Duration = Duration::from_secs(120);

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let result = match task.as_str() {
        "test" => ensure_rabbitmq()
            // The README's main job too, exactly as a newcomer types it.
            .and_then(|()| run_all(&[&["test"], &["simtest"], &README_MAIN_JOB]))
            .and_then(|()| report())
            .and_then(|()| chaos()),
        "report" => report(),
        "chaos" => ensure_rabbitmq().and_then(|()| chaos()),
        "lint" => run_all(&[
            &["fmt", "--all", "--", "--check"],
            &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"],
            &["simclippy", "--", "-D", "warnings"],
        ]),
        "rabbitmq" => ensure_rabbitmq(),
        _ => Err("usage: cargo xtask <test|chaos|report|lint|rabbitmq>".to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {task}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// README.md's main job: a simulated chaos scenario, no external services.
const README_MAIN_JOB: [&str; 5] = ["sim", "run", "scenarios/matching-outage.toml", "--seed", "1"];

/// The scenarios run for real (`--target local`, the run's own RabbitMQ node): file, seed, the
/// share of their length, and the fault kinds the seed was chosen for (`--expect-faults` fails
/// the run if its timeline lacks one; `--strict` if any step would be skipped). Together they
/// carry out partitions, latency, broker restarts, rollouts and a disk stall (trip-service's
/// syncs 4 s slower) for real.
const REAL_WORLD_RUNS: [(&str, &str, &str, &str); 5] = [
    ("scenarios/matching-outage.toml", "15", "0.3", "partition,broker-restart,latency"),
    ("scenarios/scale-under-load.toml", "4", "0.3", "partition,latency"),
    ("scenarios/non-critical-outage.toml", "25", "0.3", "broker-restart,latency,restart"),
    ("scenarios/capacity.toml", "1", "0.3", "scale"),
    ("scenarios/rolling-update.toml", "48", "0.3", "rollout,disk-stall"),
];
const REAL_WORLD_TIME_SCALE: &str = "0.3";

/// `lastmile` argument lists of [`REAL_WORLD_RUNS`].
fn real_world_jobs() -> Vec<Vec<String>> {
    REAL_WORLD_RUNS
        .iter()
        .map(|(file, seed, scale, faults)| {
            let args = ["chaos", "run", file, "--target", "local", "--seed", seed, "--time-scale", scale];
            args.iter().chain(&["--strict", "--expect-faults", faults]).map(|a| a.to_string()).collect()
        })
        .collect()
}

fn chaos() -> Result<(), String> {
    let mut jobs = real_world_jobs();
    // The scripts' jobs, so the commands cannot rot: one resilience run and the original demo;
    // and the load generator, briefly (its figures come from the release build: BENCHMARKS.md).
    let scripts: [&[&str]; 3] = [
        &["resilience", "matching-service", "--target", "local", "--time-scale", REAL_WORLD_TIME_SCALE],
        &["demo", "simulation", "--target", "local"],
        &["load", "--rate", "200", "--duration-s", "2", "--match-rides", "10"],
    ];
    jobs.extend(scripts.iter().map(|args| args.iter().map(|a| a.to_string()).collect()));
    run_parallel(jobs)
}

/// How many real-world runs go at once. They wait on timers, sockets and disks far more than
/// they compute (each has its own broker node, ports and work dir), so two lanes halve CI's
/// wall time on two cores without starving any run.
const CHAOS_LANES: usize = 2;

/// Run `lastmile` with each argument list, [`CHAOS_LANES`] at a time, each one's output kept
/// in `target/chaos-logs`; every run finishes, then the logs of those that failed are printed
/// whole, last, where a CI log's tail shows them.
fn run_parallel(jobs: Vec<Vec<String>>) -> Result<(), String> {
    run_all(&[&["build", "-q", "-p", "lastmile-chaos", "--bin", "lastmile"]])?;
    let target_dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_string());
    let binary = std::path::Path::new(&target_dir).join("debug").join("lastmile");
    let logs = std::path::Path::new(&target_dir).join("chaos-logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    // Popped from the back: the first job (the longest runs come first) goes first.
    let queue = std::sync::Mutex::new(jobs.into_iter().enumerate().rev().collect::<Vec<_>>());
    let failed = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..CHAOS_LANES {
            scope.spawn(|| loop {
                let Some((i, args)) = queue.lock().expect("queue").pop() else { return };
                let command = format!("lastmile {}", args.join(" "));
                // Named by the scenario file, or by the subcommand and its first argument.
                let name = match args.iter().find_map(|a| a.strip_suffix(".toml")) {
                    Some(file) => file.rsplit('/').next().unwrap_or(file).to_string(),
                    None => args.iter().take(2).cloned().collect::<Vec<_>>().join("-"),
                };
                let log = logs
                    .join(format!("{i}-{}.log", name.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_")));
                eprintln!("xtask: started {command} (output in {})", log.display());
                #[allow(clippy::disallowed_methods)] // xtask is a build tool: wall time is what it reports
                let started = Instant::now();
                let outcome = std::fs::File::create(&log).and_then(|out| {
                    let err = out.try_clone()?;
                    Command::new(&binary).args(&args).stdout(out).stderr(err).status()
                });
                let took = started.elapsed().as_secs();
                let why = match outcome {
                    Ok(status) if status.success() => {
                        eprintln!("xtask: PASS {command} ({took} s)");
                        continue;
                    }
                    Ok(status) => status.to_string(),
                    Err(e) => format!("cannot run {}: {e}", binary.display()),
                };
                eprintln!("xtask: FAIL {command} ({why}, {took} s)");
                failed.lock().expect("failed").push((command, log));
            });
        }
    });
    let failed = failed.into_inner().expect("failed");
    for (command, log) in &failed {
        eprintln!("xtask: ===== {command}: its whole output =====");
        eprintln!("{}", std::fs::read_to_string(log).unwrap_or_else(|e| format!("({}: {e})", log.display())));
    }
    match failed.as_slice() {
        [] => Ok(()),
        _ => Err(format!(
            "{} real-world run(s) failed: {}",
            failed.len(),
            failed.iter().map(|(c, _)| format!("`{c}`")).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// Where `cargo xtask report` writes the page and its screenshot.
const REPORT_DIR: &str = "target/report";

/// Render a failing run's HTML report in headless Chromium and check it drew a page.
fn report() -> Result<(), String> {
    std::fs::create_dir_all(REPORT_DIR).map_err(|e| format!("{REPORT_DIR}: {e}"))?;
    let html = format!("{REPORT_DIR}/naive-scale-under-load.html");
    let png = format!("{REPORT_DIR}/naive-scale-under-load.png");
    let _ = std::fs::remove_file(&html);
    let _ = std::fs::remove_file(&png);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    // The naive design fails (exit status 1): the report of a failing run is the one to see.
    let args = ["sim", "run", "scenarios/scale-under-load.toml", "--seed", "2", "--naive-matching", "--html", &html];
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(&cargo).args(args).status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        return Err("the naive design passed scale-under-load seed 2: the checkers have no teeth".into());
    }
    let page = std::fs::read_to_string(&html).map_err(|e| format!("no report at {html}: {e}"))?;
    if !page.contains("class=\"violation\"") {
        return Err(format!("{html} marks no violation"));
    }
    let file = std::fs::canonicalize(&html).map_err(|e| format!("{html}: {e}"))?;
    let profile = std::env::temp_dir().join(format!("lastmile-chromium-{}", std::process::id()));
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1360,1400",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={png}"))
        .arg(format!("file://{}", file.display()))
        .output()
        .map_err(|e| format!("cannot run chromium ({e}); install it (Debian: `apt-get install chromium`)"))?;
    let _ = std::fs::remove_dir_all(&profile);
    let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    // A blank page compresses to a few KB; the report with its timeline and tables does not.
    if !output.status.success() || size < 30_000 {
        return Err(format!(
            "chromium drew {png} ({size} bytes, {}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).lines().last().unwrap_or_default()
        ));
    }
    eprintln!("xtask: report rendered: {html} -> {png} ({size} bytes)");
    Ok(())
}

fn run_all(commands: &[&[&str]]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    for args in commands {
        eprintln!("xtask: cargo {}", args.join(" "));
        let status = Command::new(&cargo).args(*args).status().map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err(format!("`cargo {}` failed ({status})", args.join(" ")));
        }
    }
    Ok(())
}

/// `host:port` of the test broker, from its AMQP URL.
fn broker_address() -> String {
    let Ok(url) = std::env::var(AMQP_URL_VAR) else { return DEFAULT_BROKER.to_string() };
    let rest = url.split("://").nth(1).unwrap_or(&url);
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    let host_port = rest.split('/').next().unwrap_or(rest);
    if host_port.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:5672")
    }
}

fn answers(addr: &str) -> bool {
    addr.to_socket_addrs()
        .map(|mut addrs| addrs.any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok()))
        .unwrap_or(false)
}

fn ensure_rabbitmq() -> Result<(), String> {
    let addr = broker_address();
    if answers(&addr) {
        eprintln!("xtask: RabbitMQ answers at {addr}");
        return Ok(());
    }
    let local = addr.starts_with("127.0.0.1:") || addr.starts_with("localhost:");
    if !local {
        return Err(format!("no RabbitMQ answers at {addr} (from {AMQP_URL_VAR}); start it or unset {AMQP_URL_VAR}"));
    }
    eprintln!("xtask: no RabbitMQ at {addr}; starting the local one with `rabbitmq-server -detached`");
    let status = Command::new("rabbitmq-server").arg("-detached").status().map_err(|e| {
        format!(
            "cannot start RabbitMQ ({e}); install it (Debian: `apt-get install rabbitmq-server`) or set {AMQP_URL_VAR}"
        )
    })?;
    if !status.success() {
        return Err(format!("`rabbitmq-server -detached` failed ({status})"));
    }
    // The wall clock is fine here: xtask is a build tool, not simulated code.
    #[allow(clippy::disallowed_methods)]
    let started = Instant::now();
    while started.elapsed() < RABBITMQ_START_TIMEOUT {
        if answers(&addr) {
            eprintln!("xtask: RabbitMQ answers at {addr} after {:.0?}", started.elapsed());
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(format!("RabbitMQ did not answer at {addr} within {RABBITMQ_START_TIMEOUT:?}"))
}

#[cfg(test)]
mod tests {
    use super::real_world_jobs;

    /// Each run as `cargo xtask chaos` starts it, its scenario file found from the workspace root.
    fn jobs() -> Vec<Vec<String>> {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        real_world_jobs()
            .into_iter()
            .map(|mut args| {
                assert_eq!(args[..2], ["chaos", "run"], "{args:?}");
                args[2] = format!("{root}/{}", args[2]);
                args
            })
            .collect()
    }

    /// A scenario's random actions redraw every seed's faults when they change: a seed that now
    /// draws a fault the local target cannot carry out, or lacks one it was chosen for, fails
    /// here in seconds rather than at the end of CI's real-world runs.
    #[test]
    fn every_real_world_run_is_one_the_local_target_starts() {
        let jobs = jobs();
        assert_eq!(jobs.len(), super::REAL_WORLD_RUNS.len());
        for args in jobs {
            assert_eq!(lastmile_chaos::cli::preflight(&args), Ok(()), "lastmile {}", args.join(" "));
        }
    }

    /// The check above can fail: for each run with random faults some seed draws a crash point
    /// (simulation only) and is refused, as CI refused the runs' old seeds once
    /// disk stalls joined the random actions; and a fault kind the timeline lacks is refused.
    #[test]
    fn a_real_world_run_drawing_a_fault_the_local_target_cannot_carry_out_is_refused() {
        for args in jobs() {
            if args[2].ends_with("capacity.toml") {
                continue; // no random faults: its one timeline is the file's own steps
            }
            // Without the fault kinds the seed was chosen for: only `--strict` judges.
            let mut other: Vec<String> = args.iter().take_while(|a| *a != "--expect-faults").cloned().collect();
            let seed = other.iter().position(|a| a == "--seed").expect("a seed") + 1;
            let refused = (1..100u64).find_map(|n| {
                other[seed] = n.to_string();
                lastmile_chaos::cli::preflight(&other).err()
            });
            let refusal = refused.unwrap_or_else(|| panic!("no seed of {} refused", args[2]));
            assert!(refusal.contains("--strict: the Local target cannot carry out"), "{refusal}");
            assert!(refusal.contains("crash"), "{refusal}");
        }
        let mut none = jobs()[0].clone();
        let faults = none.iter().position(|a| a == "--expect-faults").expect("expected faults") + 1;
        none[faults] = "pause".into();
        let refusal = lastmile_chaos::cli::preflight(&none).expect_err("no pause in that timeline");
        assert!(refusal.contains("has no pause step"), "{refusal}");
    }
}
