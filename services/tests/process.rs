//! The service as a process, the way Kubernetes runs it: SIGTERM with a half-open client
//! connection still ends it within the drain period plus 2 s, cleanly; a second process on the
//! same journal refuses to start, naming the journal; and the logs hold no broker password.
//!
//! No broker is needed: the services run against an address nothing answers on (they buffer
//! what they would publish).

// Real processes and sockets (the normal build flavour only), on real time.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)]

use lastmile_platform::http::DRAIN_PERIOD;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_lastmile-service");
/// A password that must never be printed.
const PASSWORD: &str = "s3cret-broker-password";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn trip_service(port: u16, data_dir: &std::path::Path, log: &std::path::Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(BINARY)
        .arg("trip")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data_dir)
        // Nothing listens on port 1.
        .env("LASTMILE_AMQP_URL", format!("amqp://lastmile:{PASSWORD}@127.0.0.1:1/%2f"))
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start lastmile-service")
}

/// Wait until `child` exits, for at most `bound`.
fn exited_within(child: &mut Child, bound: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn answers_health(port: u16) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

#[test]
fn sigterm_with_a_half_open_client_exits_in_time_and_a_second_process_on_the_journal_is_refused() {
    let dir = std::env::temp_dir().join(format!("lastmile-process-{}", lastmile_platform::clock::new_id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (port, log) = (free_port(), dir.join("first.log"));
    let mut first = trip_service(port, &dir.join("data"), &log);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !answers_health(port) {
        assert!(Instant::now() < deadline, "trip-service never answered /health");
        assert!(first.try_wait().unwrap().is_none(), "trip-service exited: {}", std::fs::read_to_string(&log).unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }

    // A second replica on the same journal: refused, saying why.
    let second_log = dir.join("second.log");
    let mut second = trip_service(free_port(), &dir.join("data"), &second_log);
    let status = exited_within(&mut second, Duration::from_secs(20)).expect("the second process kept running");
    assert!(!status.success(), "the second process on a journal started");
    let said = std::fs::read_to_string(&second_log).unwrap();
    assert!(said.contains("is in use by another process"), "{said}");
    assert!(said.contains("trip-service.journal"), "the error names the journal: {said}");

    // Half a request, then silence; then SIGTERM.
    let mut half_open = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    half_open.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").unwrap();
    let status = Command::new("kill").arg("-TERM").arg(first.id().to_string()).status().unwrap();
    assert!(status.success());
    let bound = DRAIN_PERIOD + Duration::from_secs(2);
    let Some(status) = exited_within(&mut first, bound) else {
        let _ = first.kill();
        panic!("trip-service still running {bound:?} after SIGTERM");
    };
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "a graceful stop exits 0: {status}\n{logs}");
    assert!(logs.contains("stopped"), "{logs}");
    drop(half_open);

    // Debug logs of a run that kept failing to reach its broker: the URL appears, the password
    // never does.
    for text in [&logs, &said] {
        assert!(!text.contains(PASSWORD), "the broker password is in a log:\n{text}");
    }
    assert!(logs.contains("127.0.0.1:1"), "the broker was named (redacted) in the logs:\n{logs}");
    std::fs::remove_dir_all(&dir).unwrap();
}
