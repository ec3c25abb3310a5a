//! A local run interrupted in the middle of a fault leaves nothing behind: every service process
//! it started is stopped. Needs RabbitMQ (`LASTMILE_TEST_AMQP_URL`, like the other real-world
//! tests); fails, with directions, when none answers.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SCENARIO: &str = r#"
[scenario]
name = "interrupt-me"
duration_s = 120
settle_s = 10

[workload]
kind = "load"
drivers = 2
riders_per_minute = 6

[[step]]
at_s = 1
action = "scale"
target = "matching-service"
replicas = 0
"#;

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmdline).contains(needle) {
                found.push(pid);
            }
        }
    }
    found
}

#[test]
fn an_interrupted_local_run_stops_every_service_it_started() {
    let dir = std::env::temp_dir().join(format!("lastmile-interrupt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let scenario = dir.join("interrupt-me.toml");
    std::fs::write(&scenario, SCENARIO).unwrap();
    let work = dir.join("work");
    let mut run = Command::new(env!("CARGO_BIN_EXE_lastmile"))
        // The default broker: a RabbitMQ node of the run's own, under the work dir, which must
        // go with the run too.
        .args(["chaos", "run", scenario.to_str().unwrap(), "--target", "local", "--no-random-faults"])
        .arg("--work-dir")
        .arg(&work)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the services run and the fault is in force (matching scaled to 0).
    #[allow(clippy::disallowed_methods)] // a real-world test: real time
    let started = Instant::now();
    let needle = work.to_string_lossy().to_string();
    loop {
        let services = processes_mentioning(&needle);
        let matching_log = Path::new(&work).join("matching-service");
        if services.len() >= 4 && matching_log.exists() && started.elapsed() > Duration::from_secs(8) {
            break;
        }
        if let Ok(Some(status)) = run.try_wait() {
            let mut err = String::new();
            std::io::Read::read_to_string(run.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!(
                "the run ended early ({status}): {err}\n(it needs RabbitMQ installed: `apt-get install rabbitmq-server`)"
            );
        }
        assert!(started.elapsed() < Duration::from_secs(90), "the services never came up");
        std::thread::sleep(Duration::from_millis(200));
    }
    let during = processes_mentioning(&needle);
    assert!(during.len() >= 4, "services are running before the interrupt: {during:?}");
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(run.id() as libc::pid_t, libc::SIGINT);
    }
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(130), "an interrupted run says so");
    let left = processes_mentioning(&needle);
    assert!(left.is_empty(), "service or broker processes outlived the interrupted run: {left:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
