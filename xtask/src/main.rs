//! `cargo xtask <task>`: the project's own commands, with nothing but std.
//!
//! - `cargo xtask test`: every test of both build flavours. Starts a locally installed RabbitMQ
//!   if none answers (the real-world tests need one), then runs `cargo test` (normal flavour)
//!   and `cargo simtest` (madsim flavour).
//!   Then the three documented scenarios run for real (`cargo xtask chaos`).
//! - `cargo xtask chaos`: the three documented scenarios against local service processes and
//!   the real RabbitMQ, at half their simulated length, judged by the simulation's checkers;
//!   then `lastmile resilience matching-service` and `lastmile demo simulation`, so the scripts'
//!   jobs run too.
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
        "test" => ensure_rabbitmq().and_then(|()| run_all(&[&["test"], &["simtest"]])).and_then(|()| chaos()),
        "chaos" => ensure_rabbitmq().and_then(|()| chaos()),
        "lint" => run_all(&[
            &["fmt", "--all", "--", "--check"],
            &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"],
            &["simclippy", "--", "-D", "warnings"],
        ]),
        "rabbitmq" => ensure_rabbitmq(),
        _ => Err("usage: cargo xtask <test|chaos|lint|rabbitmq>".to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {task}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The documented scenarios, run for real (`--target local`) at this share of their length.
const REAL_WORLD_SCENARIOS: [&str; 3] =
    ["scenarios/matching-outage.toml", "scenarios/scale-under-load.toml", "scenarios/non-critical-outage.toml"];
const REAL_WORLD_TIME_SCALE: &str = "0.5";

fn chaos() -> Result<(), String> {
    for file in REAL_WORLD_SCENARIOS {
        run_all(&[&["lastmile", "chaos", "run", file, "--target", "local", "--time-scale", REAL_WORLD_TIME_SCALE]])?;
    }
    // The scripts' jobs, so the commands cannot rot: one resilience run and the original demo.
    run_all(&[
        &["lastmile", "resilience", "matching-service", "--target", "local", "--time-scale", REAL_WORLD_TIME_SCALE],
        &["lastmile", "demo", "simulation", "--target", "local"],
    ])
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
