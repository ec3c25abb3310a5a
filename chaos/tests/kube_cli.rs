//! `lastmile` against an in-process Kubernetes API (`support/fake_kube.rs`), through a kubeconfig
//! like a user's: `scale` waits for readiness and rolls back when it does not come, and a
//! `chaos run --target kube` interrupted in the middle of a fault puts back the replica counts it
//! recorded before the run.

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::cli::{finish, text};
use support::fake_kube::FakeKube;

fn work_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lastmile-kube-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn lastmile(fake: &FakeKube, dir: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lastmile"));
    cmd.args(args).env("KUBECONFIG", fake.kubeconfig(dir)).env_remove("LASTMILE_NAMESPACE");
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_waits_until_the_replicas_are_ready_and_rolls_back_when_they_never_are() {
    let fake = FakeKube::lastmile(1).await;
    let dir = work_dir("scale");
    let out = lastmile(&fake, &dir, &["scale", "matching-service", "3", "--target", "kube"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = finish(out).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("verdict: PASS"), "{}", text(&out));
    assert_eq!(fake.ready_pods("matching-service").len(), 3);

    fake.never_ready("matching-service");
    let out = lastmile(&fake, &dir, &["scale", "matching-service", "4", "--target", "kube", "--ready-timeout-s", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = finish(out).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("verdict: FAIL"), "{}", text(&out));
    assert_eq!(fake.scale_patches("matching-service"), vec![3, 4, 3], "put back to its count before");
    assert_eq!(fake.pods("matching-service").len(), 3);
}

#[test]
fn scaling_to_a_count_needs_the_kube_target_and_a_service_that_can_have_that_many() {
    let out = Command::new(env!("CARGO_BIN_EXE_lastmile")).args(["scale", "matching-service", "3"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("--target kube"), "{}", text(&out));
    // A service with one journal is never scaled past one replica, on any target.
    let out = Command::new(env!("CARGO_BIN_EXE_lastmile"))
        .args(["scale", "trip-service", "2", "--target", "kube"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("one journal"), "{}", text(&out));
}

const SCENARIO: &str = r#"
[scenario]
name = "interrupt-me-on-kube"
duration_s = 120
settle_s = 10

[workload]
kind = "demo"

[[step]]
at_s = 1
action = "scale"
target = "matching-service"
replicas = 0
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_kube_run_puts_back_the_replica_counts_it_recorded() {
    let fake = FakeKube::lastmile(2).await;
    let dir = work_dir("interrupt");
    let scenario = dir.join("interrupt-me.toml");
    std::fs::write(&scenario, SCENARIO).unwrap();
    let work = dir.join("work");
    let args = ["chaos", "run", scenario.to_str().unwrap(), "--target", "kube", "--no-random-faults", "--work-dir"];
    let child = lastmile(&fake, &dir, &args).arg(&work).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();

    // The scenario sets matching to 1 (its default), then its fault scales it to 0.
    let mut in_fault = false;
    for _ in 0..600 {
        if fake.scale_patches("matching-service").ends_with(&[1, 0]) && fake.pods("matching-service").is_empty() {
            in_fault = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(in_fault, "the fault never happened: {:?}", fake.scale_patches("matching-service"));
    // SAFETY: kill(2) on the child we spawned.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let out = finish(child).await;
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert!(text(&out).contains("replicas restored"), "{}", text(&out));
    assert_eq!(fake.replicas("matching-service"), 2, "the count recorded before the run");
    assert_eq!(fake.ready_pods("matching-service").len(), 2);
    assert!(fake.settled(), "every workload back at its count and ready");
    // The logs of the pods running at the interrupt were kept (matching-service had none).
    let logs: Vec<String> =
        work.join("logs").read_dir().unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
    assert_eq!(logs.len(), 5, "{logs:?}");
    assert!(logs.iter().any(|l| l.starts_with("trip-service-")), "{logs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_serves_a_local_port_per_service_until_interrupted() {
    let fake = FakeKube::lastmile(2).await;
    let dir = work_dir("port-forward");
    // Free ports (0): the fronts' URLs are read from what the command prints.
    let mut child = lastmile(&fake, &dir, &["port-forward", "--base-port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    #[allow(clippy::disallowed_methods)] // a real-world test: a thread reads the child's output
    let reader = {
        let (stdout, lines) = (child.stdout.take().unwrap(), lines.clone());
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        })
    };
    let mut matching = None;
    for _ in 0..600 {
        matching = lines.lock().unwrap().iter().find_map(|l| {
            let l = l.trim();
            l.ends_with(")").then_some(())?;
            let (url, rest) = l.split_once("  ")?;
            rest.starts_with("matching-service").then(|| url.to_string())
        });
        if matching.is_some() || child.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let matching = matching.unwrap_or_else(|| panic!("no matching-service front printed: {:?}", lines.lock().unwrap()));
    // matching-service's two pods answer in turn, a connection each (a client per call: one
    // client would keep its connection, and with it its pod).
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..2 {
        let client = lastmile_platform::http::HttpClient::new(
            "test",
            &matching,
            lastmile_platform::http::CallPolicy { attempts: 1, ..Default::default() },
        );
        let (status, body) = client.call_raw(lastmile_platform::http::Method::GET, "/whoami", None).await.unwrap();
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        seen.insert(v["pod"].as_str().unwrap().to_string());
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), fake.ready_pods("matching-service"));
    // SAFETY: kill(2) on the child we spawned.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let out = finish(child).await;
    reader.join().unwrap();
    let printed = lines.lock().unwrap().join("\n");
    assert!(out.status.success(), "{printed}{}", text(&out));
    assert!(printed.contains("verdict: PASS"), "{printed}");
    for pod in fake.ready_pods("matching-service") {
        assert!(printed.contains(&format!("{pod}: 1")), "one connection each: {printed}");
    }
}
