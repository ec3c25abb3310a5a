//! The kube target's logic against an in-process Kubernetes API (`support/fake_kube.rs`): scale
//! through the subresource, readiness by watching, the recorded counts put back, rollback when
//! a step fails, pod deletion, rollouts, the broker restart, logs and the port-forward fronts.
//! There is no cluster on this machine; docs/real-world.md says what has and has not met a real one.

mod support;

use lastmile_chaos::kubernetes::{Cluster, KubeTarget, KubeWorkload, Recorded, RESTARTED_AT};
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
    let target = KubeTarget::start(cluster, recorded, "lastmile", &wanted).await.unwrap();
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
    let Err(e) = KubeTarget::start(cluster, recorded, "lastmile", &BTreeMap::new()).await else {
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
    let mut target = KubeTarget::start(cluster, recorded, "lastmile", &wanted).await.unwrap();
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
    let err = match KubeTarget::start(cluster, recorded, "lastmile", &wanted).await {
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
    let err = match KubeTarget::start(cluster, recorded, "lastmile", &wanted).await {
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

    // Faults the target cannot cause are declared, so the runner skips and records them.
    assert!(!target.supports(Action::Partition) && !target.supports(Action::Pause));
    let logs = target.logs(ServiceName::Matching).await.unwrap();
    assert_eq!(logs.len(), 2);
    assert!(logs.iter().all(|(pod, text)| text.contains(pod.as_str())));
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
