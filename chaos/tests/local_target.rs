//! The local target's timeline steps never wait on a replica that a fault in force keeps from
//! getting ready: the fault's undo is a later step, so a step that waited would hold back the
//! very undo it waits for (a run of non-critical-outage on this target once waited 60 s for a
//! restarted trip-service while the broker it needed stayed down behind it, and failed). Needs
//! RabbitMQ (`LASTMILE_TEST_AMQP_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f`).

use lastmile_chaos::local::{BrokerChoice, LocalOptions, LocalTarget};
use lastmile_harness::target::Target;
use lastmile_platform::http::{CallPolicy, HttpClient, Method};
use lastmile_scenarios::faults::{Origin, TimelineStep};
use lastmile_scenarios::Action;
use lastmile_services::ServiceName;
use lastmile_workload::history::History;
use lastmile_workload::LastMileClient;
use std::time::Duration;

fn amqp_url() -> String {
    std::env::var("LASTMILE_TEST_AMQP_URL").unwrap_or_else(|_| lastmile_services::config::DEFAULT_AMQP_URL.to_string())
}

fn step(action: Action) -> TimelineStep {
    TimelineStep { target: Some("trip-service".into()), ..TimelineStep::new(0.0, action, Origin::Scenario) }
}

/// What `/ready` at `url` answers now (0: nothing answered).
async fn ready_status(url: &str) -> u16 {
    let probe = HttpClient::new("test", url, CallPolicy { attempts: 1, ..CallPolicy::default() });
    probe.call_raw(Method::GET, "/ready", None).await.map_or(0, |(status, _)| status)
}

/// Poll `/ready` at `url` until it answers 200; false after `patience`.
async fn gets_ready(url: &str, patience: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + patience;
    while tokio::time::Instant::now() < deadline {
        if ready_status(url).await == 200 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Every service once behind the fault proxy, on the shared broker, under a prefix and work dir
/// of the test's own.
async fn deployment() -> (LocalTarget, std::path::PathBuf) {
    let options = options(env!("CARGO_BIN_EXE_lastmile").into());
    let work_dir = options.work_dir.clone();
    let target = LocalTarget::start(options, &one_each())
        .await
        .expect("the services start (is RabbitMQ running? `cargo xtask rabbitmq` starts it)");
    (target, work_dir)
}

/// A run of `binary` as every service, on the shared broker, under a prefix and work dir of the
/// test's own.
fn options(binary: std::path::PathBuf) -> LocalOptions {
    let id = lastmile_platform::clock::new_id();
    let work_dir = std::env::temp_dir().join(format!("lastmile-local-{}", &id[..12]));
    LocalOptions {
        binary,
        amqp_url: amqp_url(),
        prefix: format!("test-local-{}", &id[..8]),
        work_dir: work_dir.clone(),
        naive_matching: false,
        service_time: Default::default(),
        seed: 0,
        broker: BrokerChoice::Shared { restart_node: None },
        direct: false,
    }
}

fn one_each() -> std::collections::BTreeMap<ServiceName, usize> {
    ServiceName::ALL.into_iter().map(|s| (s, 1)).collect()
}

/// A replica that ends before it is ready (here one that cannot bind its port, as when another
/// process took it) fails the start at once, with its exit status and the end of its log, not
/// after a minute of polling a port nobody listens on. Its port is below the ephemeral range,
/// where no outgoing connection takes it.
#[tokio::test]
async fn a_replica_that_exits_before_it_is_ready_is_named_with_its_log() {
    let scripts = std::env::temp_dir().join(format!("lastmile-exits-{}", &lastmile_platform::clock::new_id()[..12]));
    std::fs::create_dir_all(&scripts).unwrap();
    let binary = scripts.join("lastmile");
    // Called as `lastmile service <name> --listen <addr> ...`.
    std::fs::write(
        &binary,
        "#!/bin/sh\necho \"starting $2\"\necho \"$2: cannot listen on $4: Address already in use\" >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&binary, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let options = options(binary);
    let work_dir = options.work_dir.clone();

    let err = LocalTarget::start(options, &one_each()).await.err().expect("a start whose replicas all exit fails");
    let err = err.to_string();
    assert!(err.contains("exited before it was ready") && err.contains("exit status: 3"), "{err}");
    assert!(err.contains("cannot listen on 127.0.0.1:") && err.contains("Address already in use"), "{err}");
    let port: u16 =
        err.split("on port ").nth(1).and_then(|r| r.split(' ').next()).and_then(|p| p.parse().ok()).expect(&err);
    assert!(port < 32_768, "port {port} is in the ephemeral range: {err}");
    let _ = std::fs::remove_dir_all(&work_dir);
    let _ = std::fs::remove_dir_all(&scripts);
}

#[tokio::test]
async fn a_restart_or_rollout_held_up_by_a_fault_lets_the_timeline_reach_the_undo() {
    let (mut target, work_dir) = deployment().await;
    let front = target.endpoints().trip;
    assert_eq!(ready_status(&front).await, 200, "started means ready");

    // trip-service cut off from the broker, then restarted: a fresh replica that never reached
    // the broker is not ready, and the restart does not wait for it.
    let cut = TimelineStep { peer: Some("broker".into()), ..step(Action::Partition) };
    target.apply(&cut).await.expect("cut");
    let restarted = target.apply(&step(Action::Restart)).await.expect("the restart returns");
    assert!(restarted.contains("restarted trip-service"), "{restarted}");
    let (_, replica) = target.replica_urls(ServiceName::Trip).pop().expect("one replica");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(ready_status(&replica).await, 503, "the new replica reached no broker, yet it is ready");
    assert_ne!(ready_status(&front).await, 200, "an unready replica is among the backends");

    // The undo is reached, and the replica gets ready and joins.
    target.undo(&cut).await.expect("reconnected");
    assert!(gets_ready(&front, Duration::from_secs(30)).await, "trip-service never got ready after the undo");

    // A rollout held up the same way stalls after its patience and goes on after the undo.
    target.apply(&cut).await.expect("cut again");
    let stalled = target.apply(&step(Action::Rollout)).await.expect("the rollout returns");
    assert!(stalled.contains("rollout of trip-service stalled"), "{stalled}");
    let undone = target.undo(&cut).await.expect("reconnected again");
    assert!(undone.contains("rollout of trip-service finished"), "{undone}");
    assert_eq!(ready_status(&front).await, 200);

    let healed = target.heal(&one_each()).await.expect("the heal");
    assert!(healed.contains("trip-service=1"), "{healed}");
    drop(target);
    let _ = std::fs::remove_dir_all(&work_dir);
}

/// `disk-stall` for real: every journal sync of trip-service waits out the stall, so a ride
/// request gets no answer within a second during a 4 s stall; its commit is not lost (it lands
/// once the sync goes through) and, undone, the next request is answered.
#[tokio::test]
async fn a_disk_stall_holds_every_commit_until_undone_and_loses_none() {
    let (mut target, work_dir) = deployment().await;
    let endpoints = target.endpoints();
    let api = LastMileClient::new(&endpoints, CallPolicy::default(), History::new());
    api.register_rider("stalled-rider", "Stalled Rider", "+91 90000 00001").await.expect("rider registered");
    let patient = HttpClient::new("test", &endpoints.trip, CallPolicy::default()).with_token(endpoints.token.clone());
    let impatient = HttpClient::new(
        "test",
        &endpoints.trip,
        CallPolicy { attempts: 1, timeout: Duration::from_secs(1), ..CallPolicy::default() },
    )
    .with_token(endpoints.token.clone());
    let ride = |id: &str| {
        serde_json::json!({ "ride_id": id, "rider_id": "stalled-rider", "station_id": "ST101", "destination": "ST104" })
            .to_string()
            .into_bytes()
    };

    // trip-service records a rider it checked in a journal of its own: done before the stall,
    // so the stalled sync below is the ride's commit itself.
    let (status, _) = patient.call_raw(Method::POST, "/rides", Some(ride("stalled-ride-0"))).await.expect("answered");
    assert_eq!(status, 201);

    let stall = TimelineStep { latency_ms: Some(4_000), ..step(Action::DiskStall) };
    let stalled = target.apply(&stall).await.expect("stalled");
    assert!(stalled.contains("each sync takes 4000 ms more (1 replicas)"), "{stalled}");
    let answer = impatient.call_raw(Method::POST, "/rides", Some(ride("stalled-ride-1"))).await;
    assert!(answer.is_err(), "a commit was answered within 1 s of a 4 s stall: {answer:?}");

    let undone = target.undo(&stall).await.expect("undone");
    assert!(undone.contains("disk back to normal (1 replicas)"), "{undone}");
    let (status, _) = patient.call_raw(Method::GET, "/rides/stalled-ride-1", None).await.expect("trip-service answers");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut status = status;
    while status != 200 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        status = patient.call_raw(Method::GET, "/rides/stalled-ride-1", None).await.map_or(0, |(s, _)| s);
    }
    assert_eq!(status, 200, "the ride committed during the stall was lost");
    let (status, _) = patient.call_raw(Method::POST, "/rides", Some(ride("stalled-ride-2"))).await.expect("answered");
    assert_eq!(status, 201);

    target.heal(&one_each()).await.expect("the heal");
    drop(target);
    let _ = std::fs::remove_dir_all(&work_dir);
}
