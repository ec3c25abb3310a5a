//! `lastmile` against an in-process Kubernetes API (`support/fake_kube.rs`), through a kubeconfig
//! like a user's: `scale` waits for readiness and rolls back when it does not come, a
//! `chaos run --target kube` interrupted in the middle of a fault puts back the replica counts it
//! recorded before the run, and `load --target kube` runs its generator as a Job whose pod's
//! report it prints, deleting the Job however the run ends.

mod support;

use clap::Parser;
use lastmile_chaos::cli::{Cli, LoadArgs, LoadTarget};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::cli::{finish, text};
use support::fake_kube::{FakeKube, JobPodOutcome, JobPodRun};

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

// ---- `lastmile load --target kube` ----------------------------------------------------------

/// What a load pod of the real image prints: the endpoints run's report, then its verdict.
const POD_REPORT: &str = "lastmile load: the deployment at user-service http://user-service:8081, ...
ride requests: 1500 sent, 1500 accepted (300/s)
  answers by status: {201: 1500}
  latency from due time: p50 1.10 ms, p99 4.20 ms, p99.9 9.80 ms, max 12.00 ms (1500 measured)
request -> match (driver waiting): p50 31.00 ms, p99 60.00 ms, p99.9 61.00 ms, max 61.00 ms (20 measured)
limits measured in the same run:
  disk: 900 write+fdatasync/s on /scratch (the load generator's disk, not the services' volumes)
  RabbitMQ publish -> confirm: p50 1.00 ms, p99 2.00 ms, p99.9 2.00 ms, max 2.00 ms (1800 measured)
";

/// The pods' command lines (the container's command, then its args), as the Job controller
/// started them.
type Started = Arc<Mutex<Vec<Vec<String>>>>;

/// Each load pod ends as `outcome` says (`None`: it runs until deleted); its command line is kept.
fn play_the_load_pod(fake: &FakeKube, outcome: Option<JobPodOutcome>) -> Started {
    let started: Started = Arc::default();
    let seen = started.clone();
    fake.on_job_pod(move |run: &JobPodRun| {
        let container = &run.pod["spec"]["containers"][0];
        let words = container["command"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(container["args"].as_array().into_iter().flatten());
        let words: Vec<String> = words.map(|w| w.as_str().unwrap().to_string()).collect();
        let mut seen = seen.lock().unwrap();
        if !seen.contains(&words) {
            seen.push(words);
        }
        outcome.clone()
    });
    started
}

/// The pod's command line as `lastmile` parses it.
fn pod_load_args(words: &[String]) -> LoadArgs {
    assert_eq!(words[..2], ["lastmile", "load"], "{words:?}");
    match Cli::try_parse_from(words).unwrap_or_else(|e| panic!("the pod's command line is refused: {e}")).command {
        lastmile_chaos::cli::Command::Load(args) => args,
        other => panic!("{other:?}"),
    }
}

fn spawn(fake: &FakeKube, dir: &std::path::Path, args: &[&str]) -> std::process::Child {
    lastmile(fake, dir, args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

/// The Job is gone, deleted once by the run with its pods (background propagation).
fn load_job_deleted(fake: &FakeKube, name: &str, shown: &str) {
    assert!(fake.jobs().is_empty(), "a Job is left: {shown}");
    assert!(fake.job_pods(name).is_empty(), "its pod is left: {shown}");
    assert_eq!(fake.job_deletions(), [(name.to_string(), Some("Background".to_string()))], "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_on_kube_runs_the_generator_in_a_job_prints_its_report_and_deletes_it() {
    let fake = FakeKube::lastmile(1).await;
    let dir = work_dir("load-pass");
    let log =
        format!("{POD_REPORT}verdict: PASS — every ride request accepted, every ride to a waiting driver matched\n");
    let started = play_the_load_pod(&fake, Some(JobPodOutcome { exit_code: 0, log }));
    let args = ["load", "--target", "kube", "--rate", "300", "--duration-s", "5", "--match-rides", "20"];
    let out = finish(spawn(&fake, &dir, &[&args[..], &["--image", "lastmile:test", "--run-id", "t1"]].concat())).await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");

    // The Job as created: the template's, with the run's name, image and args.
    let jobs = fake.created_jobs();
    assert_eq!(jobs.len(), 1, "{shown}");
    assert_eq!(jobs[0]["metadata"]["name"], "lastmile-load-t1");
    assert_eq!(jobs[0]["metadata"]["namespace"], "lastmile");
    assert_eq!(jobs[0]["spec"]["backoffLimit"], 0, "a measurement is not retried");
    let container = &jobs[0]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "lastmile:test");
    let expected_args = ["--rate", "300", "--duration-s", "5", "--max-in-flight", "256", "--match-rides", "20"];
    let rendered: Vec<&str> = container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(rendered, [&expected_args[..], &["--run-id", "t1"]].concat());
    assert_eq!(
        jobs[0]["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"],
        lastmile_chaos::load::kube::POD_NAME_LABEL
    );

    // The pod ran one endpoints load, against the Services' DNS names, with the run's figures.
    let started = started.lock().unwrap().clone();
    assert_eq!(started.len(), 1, "one pod: {started:?}");
    let pod = pod_load_args(&started[0]);
    assert_eq!(pod.target, LoadTarget::Endpoints);
    assert_eq!(pod.trip_url.as_deref(), Some("http://trip-service:8083"));
    assert_eq!((pod.rate, pod.duration_s, pod.match_rides, pod.run_id.as_deref()), (300.0, 5.0, 20, Some("t1")));

    // Its report and verdict are printed here, then the Job is deleted.
    assert!(shown.contains("log of lastmile-load-t1-0-0 (exit 0):"), "{shown}");
    assert!(shown.contains("ride requests: 1500 sent, 1500 accepted (300/s)"), "{shown}");
    assert!(shown.contains("not the services' volumes"), "{shown}");
    assert!(shown.contains("verdict: PASS"), "{shown}");
    assert!(shown.contains("Job lastmile-load-t1 deleted"), "{shown}");
    load_job_deleted(&fake, "lastmile-load-t1", &shown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_on_kube_fails_with_its_pod_and_deletes_the_job_however_the_pod_ended() {
    // The deployment did not keep up: the pod's own report and FAIL verdict, exit 1.
    let fake = FakeKube::lastmile(1).await;
    let dir = work_dir("load-fail");
    let log = format!("{POD_REPORT}verdict: FAIL — the deployment did not keep up (see the answers above)\n");
    play_the_load_pod(&fake, Some(JobPodOutcome { exit_code: 1, log }));
    let out = finish(spawn(&fake, &dir, &["load", "--target", "kube", "--run-id", "f1"])).await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(shown.contains("log of lastmile-load-f1-0-0 (exit 1):"), "{shown}");
    assert_eq!(shown.matches("verdict: ").count(), 1, "the pod's verdict, once: {shown}");
    assert!(shown.contains("verdict: FAIL — the deployment did not keep up"), "{shown}");
    load_job_deleted(&fake, "lastmile-load-f1", &shown);

    // The pod died before a verdict (an OOM kill): FAIL, with its exit code, and deleted.
    let fake = FakeKube::lastmile(1).await;
    play_the_load_pod(&fake, Some(JobPodOutcome { exit_code: 137, log: "lastmile load: ...\n".into() }));
    let out = finish(spawn(&fake, &dir, &["load", "--target", "kube", "--run-id", "f2"])).await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(shown.contains("failed (BackoffLimitExceeded) without a verdict in its log (pod: exit 137)"), "{shown}");
    load_job_deleted(&fake, "lastmile-load-f2", &shown);

    // A pod that exits 0 without a verdict proves nothing: FAIL.
    let fake = FakeKube::lastmile(1).await;
    play_the_load_pod(&fake, Some(JobPodOutcome { exit_code: 0, log: String::new() }));
    let out = finish(spawn(&fake, &dir, &["load", "--target", "kube", "--run-id", "f3"])).await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(shown.contains("completed without a verdict"), "{shown}");
    load_job_deleted(&fake, "lastmile-load-f3", &shown);

    // No result in time: the log so far is printed, the Job deleted.
    let fake = FakeKube::lastmile(1).await;
    play_the_load_pod(&fake, None);
    let out = finish(spawn(&fake, &dir, &["load", "--target", "kube", "--run-id", "f4", "--timeout-s", "1"])).await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(shown.contains("verdict: FAIL — no result"), "{shown}");
    assert!(shown.contains("(still running)"), "{shown}");
    load_job_deleted(&fake, "lastmile-load-f4", &shown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_load_job_leaves_nothing_and_an_interrupted_one_is_deleted() {
    // The API server refuses the Job: nothing was made, nothing is left.
    let fake = FakeKube::lastmile(1).await;
    let dir = work_dir("load-refused");
    fake.fail_job_create();
    let out = finish(spawn(&fake, &dir, &["load", "--target", "kube"])).await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(shown.contains("cannot create the Job lastmile-load-"), "{shown}");
    assert!(fake.jobs().is_empty() && fake.created_jobs().is_empty(), "{shown}");

    // Ctrl-C while the generator runs: the Job and its pod are deleted.
    let fake = FakeKube::lastmile(1).await;
    play_the_load_pod(&fake, None);
    let child = spawn(&fake, &dir, &["load", "--target", "kube", "--run-id", "i1"]);
    let mut running = false;
    for _ in 0..600 {
        if fake.job_pods("lastmile-load-i1").len() == 1 {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(running, "the load pod never started");
    // SAFETY: kill(2) on the child we spawned.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let out = finish(child).await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(130), "{shown}");
    assert!(shown.contains("interrupted: the load Job was deleted"), "{shown}");
    load_job_deleted(&fake, "lastmile-load-i1", &shown);
}

/// Hostile values never reach the cluster: a run id or URL that is not one is a usage error
/// before any request, and so is a flag of another target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_load_arguments_are_refused_before_anything_is_created() {
    let fake = FakeKube::lastmile(1).await;
    let dir = work_dir("load-hostile");
    let endpoints = ["load", "--target", "endpoints", "--user-url", "http://u:1", "--location-url", "http://l:2"];
    let with_trip = |url: &'static str| [&endpoints[..], &["--trip-url", url]].concat();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["load", "--target", "kube", "--run-id", "../../x"], "a run id is"),
        (vec!["load", "--target", "kube", "--run-id", "Job;rm"], "a run id is"),
        (vec!["load", "--target", "kube", "--image", "x y"], "not an image reference"),
        (vec!["load", "--target", "kube", "--trip-url", "http://evil:80"], "--trip-url does not apply"),
        (with_trip("http://user:pw@trip-service:8083"), "--trip-url: no user or password"),
        (with_trip("https://trip-service:8083"), "--trip-url: https is not spoken"),
        (with_trip("http://trip-service:8083/../admin"), "--trip-url: give the service's base URL"),
        (endpoints.to_vec(), "needs --trip-url"),
    ];
    for (args, why) in cases {
        let out = finish(spawn(&fake, &dir, &args)).await;
        let shown = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {shown}");
        assert!(shown.contains(why), "{args:?}: {shown}");
        assert!(!shown.contains("pw@"), "a refused URL's password is not echoed: {shown}");
    }
    assert!(fake.created_jobs().is_empty());
}
