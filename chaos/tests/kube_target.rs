//! The kube target's logic against an in-process Kubernetes API (`support/fake_kube.rs`): scale
//! through the subresource, readiness by watching, the recorded counts put back, rollback when
//! a step fails, pod deletion, rollouts, the broker restart, logs and the port-forward fronts;
//! and pauses and network faults as Chaos Mesh objects (module `chaos_mesh`).
//! There is no cluster on this machine; docs/real-world.md says what has and has not met a real one.

mod support;

use lastmile_chaos::kubernetes::{Cluster, KubeRun, KubeTarget, KubeWorkload, Recorded, RESTARTED_AT};
use lastmile_harness::{Target, TargetError};
use lastmile_platform::http::{CallPolicy, HttpClient, Method};
use lastmile_scenarios::faults::{Origin, TimelineStep};
use lastmile_scenarios::Action;
use lastmile_services::ServiceName;
use std::collections::BTreeMap;
use std::time::Duration;
use support::fake_kube::{FakeKube, FAKE_SERVICE_TOKEN};

const MATCHING: KubeWorkload = KubeWorkload::Service(ServiceName::Matching);

fn cluster(fake: &FakeKube) -> Cluster {
    Cluster::new(fake.client(), "lastmile", Duration::from_secs(10))
}

fn step(action: Action, target: Option<&str>, replicas: Option<usize>) -> TimelineStep {
    TimelineStep {
        target: target.map(String::from),
        replicas,
        for_s: Some(5.0),
        ..TimelineStep::new(1.0, action, Origin::Scenario)
    }
}

/// A fake deployment with `matching` matching replicas and a target started on it at that count.
async fn started(matching: i32) -> (FakeKube, KubeTarget) {
    let fake = FakeKube::lastmile(matching).await;
    let cluster = cluster(&fake);
    let recorded = Recorded::read(&cluster).await.unwrap();
    let wanted = BTreeMap::from([(ServiceName::Matching, matching as usize)]);
    let target = KubeTarget::start(cluster, recorded, "lastmile", &wanted, KubeRun::new(&[])).await.unwrap();
    (fake, target)
}

async fn pod_answering(url: &str) -> String {
    let client = HttpClient::new("test", url, CallPolicy { attempts: 1, ..CallPolicy::default() });
    let (status, body) = client.call_raw(Method::GET, "/whoami", None).await.expect("the front answers");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v["pod"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn scaling_goes_through_the_scale_subresource_and_waits_until_every_pod_is_ready() {
    let fake = FakeKube::lastmile(1).await;
    let cluster = cluster(&fake);
    cluster.scale(MATCHING, 3).await.unwrap();
    // Waiting ended only once three pods were ready, not when the PATCH was accepted.
    assert_eq!(fake.ready_pods("matching-service").len(), 3);
    assert_eq!(fake.scale_patches("matching-service"), vec![3]);
    assert_eq!(cluster.replicas(MATCHING).await.unwrap(), 3);

    cluster.scale(MATCHING, 0).await.unwrap();
    assert!(fake.pods("matching-service").is_empty(), "scaled to 0 means no pod left, terminating ones included");
}

#[tokio::test]
async fn the_harness_presents_the_token_from_the_deployments_secret_and_a_missing_secret_stops_the_run() {
    let (fake, target) = started(1).await;
    let token = target.endpoints().token.expect("the kube target has a service token");
    assert_eq!(token.expose(), FAKE_SERVICE_TOKEN);
    fake.drop_token_secret();
    let cluster = cluster(&fake);
    let recorded = Recorded::read(&cluster).await.unwrap();
    let Err(e) = KubeTarget::start(cluster, recorded, "lastmile", &BTreeMap::new(), KubeRun::new(&[])).await else {
        panic!("a run started without the service token")
    };
    assert!(matches!(e, TargetError::Deployment(_)), "{e:?}");
    let e = e.to_string();
    assert!(e.contains("lastmile-service-token") && e.contains("k8s/make-secret.sh"), "{e}");
}

#[tokio::test]
async fn waiting_for_pods_that_never_get_ready_fails_by_its_deadline() {
    let fake = FakeKube::lastmile(1).await;
    fake.never_ready("matching-service");
    let cluster = Cluster::new(fake.client(), "lastmile", Duration::from_secs(2));
    let err = cluster.scale(MATCHING, 2).await.unwrap_err();
    assert!(matches!(&err, TargetError::TimedOut { after, .. } if *after == Duration::from_secs(2)), "{err:?}");
    let err = err.to_string();
    assert!(err.contains("matching-service") && err.contains("not within"), "{err}");
}

#[tokio::test]
async fn a_run_records_the_replica_counts_and_restores_them() {
    let fake = FakeKube::lastmile(3).await;
    let cluster = cluster(&fake);
    let recorded = Recorded::read(&cluster).await.unwrap();
    assert_eq!(recorded.0[&MATCHING], 3);
    assert_eq!(recorded.0[&KubeWorkload::Broker], 1);
    let wanted = BTreeMap::from([(ServiceName::Matching, 1)]);
    let mut target = KubeTarget::start(cluster, recorded, "lastmile", &wanted, KubeRun::new(&[])).await.unwrap();
    assert_eq!(fake.replicas("matching-service"), 1, "the scenario's count");
    assert_eq!(fake.ready_pods("matching-service").len(), 1);

    target.apply(&step(Action::Scale, Some("matching-service"), Some(0))).await.unwrap();
    assert_eq!(fake.replicas("matching-service"), 0);
    let done = target.restore().await.unwrap();
    assert!(done.contains("matching-service=3"), "{done}");
    assert_eq!(fake.replicas("matching-service"), 3);
    assert_eq!(fake.ready_pods("matching-service").len(), 3);
    assert_eq!(fake.scale_patches("matching-service"), vec![1, 0, 3]);
}

#[tokio::test]
async fn a_failing_start_rolls_every_count_back() {
    let fake = FakeKube::lastmile(2).await;
    // notification-service is scaled after matching-service: its failure must undo matching's change.
    fake.fail_scale("notification-service");
    let cluster = cluster(&fake);
    let recorded = Recorded::read(&cluster).await.unwrap();
    let wanted = BTreeMap::from([(ServiceName::Matching, 4)]);
    let err = match KubeTarget::start(cluster, recorded, "lastmile", &wanted, KubeRun::new(&[])).await {
        Ok(_) => panic!("the start must fail"),
        Err(e) => e,
    };
    assert!(matches!(err, TargetError::RollbackFailed { .. }), "{err:?}");
    let err = err.to_string();
    assert!(err.contains("notification-service"), "{err}");
    assert!(err.contains("the rollback failed too"), "notification-service cannot be scaled back either: {err}");
    assert_eq!(fake.scale_patches("matching-service"), vec![4, 2]);
    assert_eq!(fake.replicas("matching-service"), 2);
    assert_eq!(fake.ready_pods("matching-service").len(), 2);
}

#[tokio::test]
async fn a_start_that_never_gets_ready_rolls_back() {
    let fake = FakeKube::lastmile(1).await;
    fake.never_ready("matching-service");
    let cluster = Cluster::new(fake.client(), "lastmile", Duration::from_secs(2));
    let recorded = Recorded::read(&cluster).await.unwrap();
    let wanted = BTreeMap::from([(ServiceName::Matching, 2)]);
    let err = match KubeTarget::start(cluster, recorded, "lastmile", &wanted, KubeRun::new(&[])).await {
        Ok(_) => panic!("the start must fail"),
        Err(e) => e,
    };
    assert!(
        matches!(&err, TargetError::RolledBack { cause, .. } if matches!(**cause, TargetError::TimedOut { .. })),
        "{err:?}"
    );
    let err = err.to_string();
    assert!(err.contains("not within") && err.contains("rolled back"), "{err}");
    assert_eq!(fake.replicas("matching-service"), 1);
    assert_eq!(fake.scale_patches("matching-service"), vec![2, 1]);
}

#[tokio::test]
async fn kill_deletes_the_newest_ready_pod_and_undo_waits_for_its_replacement() {
    let (fake, mut target) = started(2).await;
    let before = fake.ready_pods("matching-service");
    let kill = step(Action::Kill, Some("matching-service"), None);
    let done = target.apply(&kill).await.unwrap();
    let newest = before.last().unwrap();
    assert_eq!(fake.deleted_pods(), vec![newest.clone()]);
    assert!(done.contains(newest.as_str()), "{done}");
    target.undo(&kill).await.unwrap();
    let after = fake.ready_pods("matching-service");
    assert_eq!(after.len(), 2);
    assert!(!after.contains(newest), "the replacement is a new pod");
}

#[tokio::test]
async fn restart_rolls_every_pod_and_the_broker_restart_scales_rabbitmq_down_and_up() {
    let (fake, mut target) = started(2).await;
    let before = fake.ready_pods("matching-service");
    target.apply(&step(Action::Restart, Some("matching-service"), None)).await.unwrap();
    let after = fake.ready_pods("matching-service");
    assert_eq!(after.len(), 2);
    assert!(after.iter().all(|p| !before.contains(p)), "{before:?} -> {after:?}");
    assert!(fake.template_annotations("matching-service")[RESTARTED_AT].is_string());

    let broker = step(Action::BrokerRestart, None, None);
    target.apply(&broker).await.unwrap();
    assert_eq!(fake.replicas("rabbitmq"), 0);
    assert!(fake.pods("rabbitmq").is_empty());
    target.undo(&broker).await.unwrap();
    assert_eq!(fake.ready_pods("rabbitmq"), vec!["rabbitmq-0".to_string()]);

    // Faults the target cannot cause are declared, so the runner skips and records them: only
    // crash points (pauses and network faults go through Chaos Mesh, see `chaos_mesh` below).
    assert!(!target.supports(Action::Crash));
    assert!([Action::Partition, Action::Pause, Action::Latency, Action::Loss, Action::Rollout]
        .into_iter()
        .all(|a| target.supports(a)));
    let logs = target.logs(ServiceName::Matching).await.unwrap();
    assert_eq!(logs.len(), 2);
    assert!(logs.iter().all(|(pod, text)| text.contains(pod.as_str())));
}

/// A step gives its pods a while, not the whole ready timeout: a fault in force may hold them up
/// until a later step undoes it, and a step that waited would hold that undo back. The heal,
/// with no fault in force, still fails on pods that never get ready.
#[tokio::test]
async fn a_restart_or_scale_whose_pods_do_not_get_ready_lets_the_timeline_go_on_and_the_heal_fails() {
    let fake = FakeKube::lastmile(1).await;
    let cluster = Cluster::new(fake.client(), "lastmile", Duration::from_secs(2));
    assert_eq!(cluster.step_patience(), Duration::from_secs(2), "never longer than the ready timeout");
    let recorded = Recorded::read(&cluster).await.unwrap();
    let wanted = BTreeMap::from([(ServiceName::Matching, 1)]);
    let mut target = KubeTarget::start(cluster, recorded, "lastmile", &wanted, KubeRun::new(&[])).await.unwrap();
    fake.never_ready("matching-service");

    let restarted = target.apply(&step(Action::Restart, Some("matching-service"), None)).await.unwrap();
    assert!(restarted.contains("not all ready within 2s"), "{restarted}");
    let scaled = target.apply(&step(Action::Scale, Some("matching-service"), Some(2))).await.unwrap();
    assert!(scaled.contains("scaled to 2, not all ready"), "{scaled}");
    assert_eq!(fake.replicas("matching-service"), 2, "the scale went through all the same");

    let err = target.heal(&wanted).await.unwrap_err();
    assert!(matches!(err, TargetError::TimedOut { .. }), "{err:?}");
}

#[tokio::test]
async fn the_fronts_spread_connections_over_the_ready_pods_and_reach_each_pod_alone() {
    let (fake, mut target) = started(3).await;
    let pods = fake.ready_pods("matching-service");

    // Per replica: each URL reaches its own pod.
    let replicas = target.replica_urls(ServiceName::Matching);
    assert_eq!(replicas.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(), pods);
    for (pod, url) in &replicas {
        assert_eq!(&pod_answering(url).await, pod);
    }

    // The trip-service front reaches trip-service's one pod.
    let trip = target.endpoints().trip;
    assert_eq!(pod_answering(&trip).await, fake.ready_pods("trip-service")[0]);

    // A service front: round robin over the three pods.
    let front = lastmile_chaos::forward::Forwarder::start(fake_pods(&fake), None).await.unwrap();
    let url = front.url(ServiceName::Matching);
    let mut seen = BTreeMap::new();
    for _ in 0..6 {
        *seen.entry(pod_answering(&url).await).or_insert(0) += 1;
    }
    assert_eq!(seen, pods.iter().map(|p| (p.clone(), 2)).collect::<BTreeMap<_, _>>());

    // A killed pod gets no more connections (once the list is refreshed, as after every step).
    target.apply(&step(Action::Kill, Some("matching-service"), None)).await.unwrap();
    front.refresh().await.unwrap();
    let killed = fake.deleted_pods()[0].clone();
    for _ in 0..6 {
        assert_ne!(pod_answering(&url).await, killed);
    }
    target.restore().await.unwrap();
}

fn fake_pods(fake: &FakeKube) -> kube::Api<k8s_openapi::api::core::v1::Pod> {
    kube::Api::namespaced(fake.client(), "lastmile")
}

#[tokio::test]
async fn an_unreachable_api_server_is_retried_until_the_deadline_and_named_in_the_error() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = kube::Config::new(format!("http://127.0.0.1:{port}").parse().unwrap());
    let cluster = Cluster::new(kube::Client::try_from(config).unwrap(), "lastmile", Duration::from_secs(2));
    let err = cluster.wait_ready(MATCHING, 1).await.unwrap_err();
    assert!(matches!(&err, TargetError::TimedOut { last_error: Some(_), .. }), "{err:?}");
    let err = err.to_string();
    assert!(err.contains("not within") && err.contains("last API error"), "{err}");
}

/// Pauses and network faults as Chaos Mesh objects: what each step creates, that undo, the heal
/// and the cleanup delete them, and that a cluster without Chaos Mesh stops the run before it
/// changes anything.
mod chaos_mesh {
    use super::*;
    use lastmile_chaos::chaos_mesh::{MANAGED_BY, MANAGED_BY_LABEL, RUN_LABEL};
    use serde_json::{json, Value};

    const RUN: &str = "0123456789abcdef0123456789abcdef";

    fn chaos_run() -> KubeRun {
        KubeRun { id: RUN.into(), needs_chaos_mesh: true }
    }

    /// A fake deployment with `matching` matching replicas and a target for a run with faults.
    async fn started_with_faults(matching: i32) -> (FakeKube, KubeTarget) {
        let fake = FakeKube::lastmile(matching).await;
        let cluster = cluster(&fake);
        let recorded = Recorded::read(&cluster).await.unwrap();
        let wanted = BTreeMap::from([(ServiceName::Matching, matching as usize)]);
        let target = KubeTarget::start(cluster, recorded, "lastmile", &wanted, chaos_run()).await.unwrap();
        (fake, target)
    }

    fn fault(action: Action) -> TimelineStep {
        step(action, Some("matching-service"), None)
    }

    /// The one object of a kind there is now.
    fn only(fake: &FakeKube, plural: &str) -> (String, Value) {
        let objects = fake.chaos_objects(plural);
        assert_eq!(objects.len(), 1, "{objects:?}");
        objects.into_iter().next().unwrap()
    }

    fn ops(fake: &FakeKube) -> Vec<(&'static str, String)> {
        fake.chaos_ops().into_iter().map(|o| (o.op, o.name)).collect()
    }

    #[tokio::test]
    async fn a_partition_cuts_every_pod_of_the_service_both_ways_until_undone() {
        let (fake, mut target) = started_with_faults(2).await;
        let partition = fault(Action::Partition);
        let done = target.apply(&partition).await.unwrap();
        let (name, object) = only(&fake, "networkchaos");
        assert_eq!(name, "lm-0123456789ab-0-partition", "the run and the step's index");
        assert!(done.contains(&name), "{done}");
        assert_eq!(object["metadata"]["labels"][MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(object["metadata"]["labels"][RUN_LABEL], RUN);
        let spec = &object["spec"];
        assert_eq!(spec["action"], "partition");
        assert_eq!(spec["direction"], "both");
        assert_eq!(spec["mode"], "all");
        assert_eq!(
            spec["selector"],
            json!({ "namespaces": ["lastmile"], "labelSelectors": { "app.kubernetes.io/name": "matching-service" } })
        );
        assert!(spec.get("target").is_none(), "no peer: cut off from everything");
        assert_eq!(spec["duration"], "305s", "for_s 5 plus the safety margin");

        target.undo(&partition).await.unwrap();
        assert!(fake.chaos_objects("networkchaos").is_empty());
        assert_eq!(ops(&fake), vec![("create", name.clone()), ("delete", name)]);
    }

    #[tokio::test]
    async fn a_partition_from_a_peer_targets_the_peers_pods_and_a_replica_is_picked_by_pod_name() {
        let (fake, mut target) = started_with_faults(3).await;
        let pods = fake.ready_pods("matching-service");
        let from_trip =
            TimelineStep { replica: Some(4), peer: Some("trip-service".into()), ..fault(Action::Partition) };
        target.apply(&from_trip).await.unwrap();
        let (_, object) = only(&fake, "networkchaos");
        // Replica 4 of 3 ready pods, oldest first: the second.
        assert_eq!(object["spec"]["selector"], json!({ "pods": { "lastmile": [pods[1].clone()] } }));
        assert_eq!(object["spec"]["target"]["mode"], "all");
        assert_eq!(object["spec"]["target"]["selector"]["labelSelectors"]["app.kubernetes.io/name"], "trip-service");
        target.undo(&from_trip).await.unwrap();

        let from_broker = TimelineStep { peer: Some("broker".into()), ..fault(Action::Partition) };
        target.apply(&from_broker).await.unwrap();
        let (name, object) = only(&fake, "networkchaos");
        assert_eq!(name, "lm-0123456789ab-1-partition");
        assert_eq!(object["spec"]["target"]["selector"]["labelSelectors"]["app.kubernetes.io/name"], "rabbitmq");
        target.undo(&from_broker).await.unwrap();
        assert!(fake.chaos_objects("networkchaos").is_empty());
    }

    #[tokio::test]
    async fn latency_and_loss_slow_every_lastmile_pod_as_the_simulation_does() {
        let (fake, mut target) = started_with_faults(1).await;
        let latency = TimelineStep { latency_ms: Some(100), ..step(Action::Latency, None, None) };
        target.apply(&latency).await.unwrap();
        let (_, object) = only(&fake, "networkchaos");
        let spec = &object["spec"];
        assert_eq!(spec["action"], "delay");
        // 100 ms at least, up to half of it more: 125 ms ± 25 ms.
        assert_eq!(spec["delay"], json!({ "latency": "125ms", "jitter": "25ms", "correlation": "0" }));
        assert_eq!(spec["direction"], "to", "each pod delays what it sends: every link, both ways");
        assert_eq!(
            spec["selector"],
            json!({ "namespaces": ["lastmile"], "labelSelectors": { "app.kubernetes.io/part-of": "lastmile" } })
        );
        target.undo(&latency).await.unwrap();

        let loss = TimelineStep { loss: Some(0.15), ..step(Action::Loss, None, None) };
        target.apply(&loss).await.unwrap();
        let (_, object) = only(&fake, "networkchaos");
        assert_eq!(object["spec"]["action"], "loss");
        assert_eq!(object["spec"]["loss"], json!({ "loss": "15", "correlation": "0" }));
        target.undo(&loss).await.unwrap();
        assert!(fake.chaos_objects("networkchaos").is_empty());
    }

    #[tokio::test]
    async fn a_pause_is_a_pod_failure_until_undone_and_the_pods_are_ready_after() {
        let (fake, mut target) = started_with_faults(2).await;
        let pause = fault(Action::Pause);
        target.apply(&pause).await.unwrap();
        let (name, object) = only(&fake, "podchaos");
        assert_eq!(name, "lm-0123456789ab-0-pause");
        assert_eq!(object["spec"]["action"], "pod-failure");
        assert_eq!(object["spec"]["mode"], "all");
        assert_eq!(object["spec"]["selector"]["labelSelectors"]["app.kubernetes.io/name"], "matching-service");
        let one = TimelineStep { replica: Some(0), ..fault(Action::Pause) };
        target.apply(&one).await.unwrap();
        let oldest = fake.ready_pods("matching-service")[0].clone();
        let objects = fake.chaos_objects("podchaos");
        assert_eq!(objects["lm-0123456789ab-1-pause"]["spec"]["selector"], json!({ "pods": { "lastmile": [oldest] } }));

        let done = target.undo(&pause).await.unwrap();
        assert!(done.contains("back to 2 pods, all ready"), "{done}");
        assert_eq!(fake.chaos_objects("podchaos").keys().collect::<Vec<_>>(), vec!["lm-0123456789ab-1-pause"]);
        target.undo(&one).await.unwrap();
        assert!(fake.chaos_objects("podchaos").is_empty());
    }

    #[tokio::test]
    async fn the_heal_deletes_every_object_of_the_run() {
        let (fake, mut target) = started_with_faults(2).await;
        target.apply(&fault(Action::Partition)).await.unwrap();
        target.apply(&fault(Action::Pause)).await.unwrap();
        target.apply(&TimelineStep { loss: Some(0.1), ..step(Action::Loss, None, None) }).await.unwrap();
        assert_eq!(fake.chaos_objects("networkchaos").len() + fake.chaos_objects("podchaos").len(), 3);
        let done = target.heal(&BTreeMap::from([(ServiceName::Matching, 2)])).await.unwrap();
        assert!(fake.chaos_objects("networkchaos").is_empty() && fake.chaos_objects("podchaos").is_empty());
        assert!(done.contains("deleted"), "{done}");
        let deletes = fake.chaos_ops().iter().filter(|o| o.op == "delete").count();
        assert_eq!(deletes, 3);
        // Nothing left for an undo due later.
        assert!(target.undo(&fault(Action::Partition)).await.unwrap().contains("no Chaos Mesh object"));
    }

    #[tokio::test]
    async fn when_a_later_step_fails_the_cleanup_deletes_the_objects_and_restores_the_counts() {
        let (fake, mut target) = started_with_faults(2).await;
        target.apply(&fault(Action::Partition)).await.unwrap();
        fake.fail_scale("notification-service");
        let err = target.apply(&step(Action::Scale, Some("notification-service"), Some(0))).await.unwrap_err();
        assert!(err.to_string().contains("notification-service"), "{err}");
        // What run.rs does when a run ends, however it ends.
        let restored = target.restore().await;
        assert!(restored.is_err(), "notification-service still cannot be scaled");
        assert!(fake.chaos_objects("networkchaos").is_empty(), "the partition outlived the run");
        let ops = fake.chaos_ops();
        assert_eq!(ops.iter().map(|o| o.op).collect::<Vec<_>>(), vec!["create", "delete"]);
        assert!(ops[0].seq < ops[1].seq);
        assert_eq!(fake.replicas("matching-service"), 2);
        assert!(target.manual_commands().iter().any(|c| c.contains("delete networkchaos,podchaos -l lastmile.run=")));
    }

    #[tokio::test]
    async fn without_chaos_mesh_a_run_with_faults_fails_before_changing_anything() {
        let fake = FakeKube::lastmile(1).await;
        fake.uninstall_chaos_mesh();
        let cluster = cluster(&fake);
        let recorded = Recorded::read(&cluster).await.unwrap();
        let wanted = BTreeMap::from([(ServiceName::Matching, 3)]);
        let Err(e) = KubeTarget::start(cluster.clone(), recorded.clone(), "lastmile", &wanted, chaos_run()).await
        else {
            panic!("a run with faults started without Chaos Mesh")
        };
        let e = e.to_string();
        assert!(e.contains("install Chaos Mesh") && e.contains("helm repo add chaos-mesh"), "{e}");
        assert!(e.contains("chaos-mesh.org/v1alpha1") && e.contains("nothing was changed"), "{e}");
        assert!(fake.scale_patches("matching-service").is_empty(), "the start changed a replica count");
        assert!(fake.chaos_ops().is_empty());

        // A run without such steps does not need it.
        let plain = KubeRun { needs_chaos_mesh: false, ..chaos_run() };
        let mut target = KubeTarget::start(cluster, recorded, "lastmile", &wanted, plain).await.unwrap();
        assert_eq!(fake.scale_patches("matching-service"), vec![3]);
        target.restore().await.unwrap();
    }

    #[tokio::test]
    async fn a_failed_creation_is_an_error_and_leaves_nothing_behind() {
        let (fake, mut target) = started_with_faults(1).await;
        fake.fail_chaos_create();
        let err = target.apply(&fault(Action::Partition)).await.unwrap_err();
        assert!(matches!(err, TargetError::Deployment(_)), "{err:?}");
        assert!(err.to_string().contains("cannot create NetworkChaos"), "{err}");
        assert!(fake.chaos_objects("networkchaos").is_empty() && fake.chaos_ops().is_empty());
        assert!(target.undo(&fault(Action::Partition)).await.unwrap().contains("no Chaos Mesh object"));
        target.restore().await.unwrap();
    }

    const PARTITION_SCENARIO: &str = r#"
[scenario]
name = "interrupt-me-in-a-partition"
duration_s = 120
settle_s = 10

[workload]
kind = "demo"

[[step]]
at_s = 1
action = "partition"
target = "matching-service"
peer = "broker"
for_s = 60
"#;

    /// `lastmile chaos run` of [`PARTITION_SCENARIO`] on `fake`, its output piped.
    fn chaos_run_command(fake: &FakeKube, name: &str) -> std::process::Command {
        let dir = std::env::temp_dir().join(format!("lastmile-chaos-mesh-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let scenario = dir.join("partition.toml");
        std::fs::write(&scenario, PARTITION_SCENARIO).unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_lastmile"));
        cmd.args(["chaos", "run", scenario.to_str().unwrap(), "--target", "kube", "--no-random-faults", "--work-dir"])
            .arg(dir.join("work"))
            .env("KUBECONFIG", fake.kubeconfig(&dir))
            .env_remove("LASTMILE_NAMESPACE")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd
    }

    /// Wait for the child without blocking the runtime the fake API server runs on.
    async fn finish(mut child: std::process::Child) -> (Option<i32>, String) {
        for _ in 0..1200 {
            if child.try_wait().unwrap().is_some() {
                let out = child.wait_with_output().unwrap();
                let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
                return (out.status.code(), text);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        panic!("lastmile did not finish within a minute: {:?}", child.wait_with_output().unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_interrupted_run_deletes_its_chaos_objects_and_puts_the_counts_back() {
        let fake = FakeKube::lastmile(2).await;
        let child = chaos_run_command(&fake, "interrupt").spawn().unwrap();
        let mut in_fault = false;
        for _ in 0..600 {
            if !fake.chaos_objects("networkchaos").is_empty() {
                in_fault = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(in_fault, "the partition was never created");
        // SAFETY: kill(2) on the child we spawned.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGINT);
        }
        let (code, out) = finish(child).await;
        assert_eq!(code, Some(130), "{out}");
        assert!(fake.chaos_objects("networkchaos").is_empty(), "the partition outlived the run: {out}");
        assert_eq!(fake.chaos_ops().iter().map(|o| o.op).collect::<Vec<_>>(), vec!["create", "delete"]);
        assert!(out.contains("replicas restored"), "{out}");
        assert_eq!(fake.replicas("matching-service"), 2, "the count recorded before the run");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_with_faults_on_a_cluster_without_chaos_mesh_says_how_to_install_it() {
        let fake = FakeKube::lastmile(2).await;
        fake.uninstall_chaos_mesh();
        let child = chaos_run_command(&fake, "missing").spawn().unwrap();
        let (code, out) = finish(child).await;
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains("install Chaos Mesh") && out.contains("helm install chaos-mesh"), "{out}");
        assert!(fake.scale_patches("matching-service").is_empty(), "the run changed a replica count: {out}");
    }

    #[tokio::test]
    async fn a_rollout_replaces_every_pod_through_the_deployment_controller() {
        let (fake, mut target) = started_with_faults(2).await;
        let before = fake.ready_pods("matching-service");
        target.apply(&fault(Action::Rollout)).await.unwrap();
        let after = fake.ready_pods("matching-service");
        assert_eq!(after.len(), 2);
        assert!(after.iter().all(|p| !before.contains(p)), "{before:?} -> {after:?}");
        assert!(fake.template_annotations("matching-service")[RESTARTED_AT].is_string());
        assert_eq!(target.undo(&fault(Action::Rollout)).await.unwrap(), "nothing to undo");
    }
}
