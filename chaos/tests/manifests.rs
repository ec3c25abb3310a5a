//! The Kubernetes manifests in `k8s/` parse into Kubernetes' own types and hold what the
//! deployment relies on: probes, resources, non-root read-only containers, a grace period that
//! covers the graceful shutdown, selectors that select, ports that line up, one image that the
//! Dockerfile builds. (No cluster runs here; these checks are what can be proven without one.)

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, PodSpec, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const NAMESPACE: &str = "lastmile";
const IMAGE: &str = "lastmile:dev";
/// After SIGTERM the services drain connections for up to 10 s, then wait up to 10 s for each
/// background task.
const DRAIN_SECONDS: i64 = 20;

#[derive(Default)]
struct Manifests {
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    stateful_sets: Vec<StatefulSet>,
    secrets: Vec<Secret>,
    claims: Vec<PersistentVolumeClaim>,
    namespaces: Vec<Namespace>,
    network_policies: Vec<NetworkPolicy>,
    budgets: Vec<PodDisruptionBudget>,
    files: Vec<String>,
}

fn k8s_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../k8s")
}

fn load() -> Manifests {
    let mut m = Manifests::default();
    let kustomization: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(k8s_dir().join("kustomization.yaml")).unwrap()).unwrap();
    let resources: Vec<String> = kustomization["resources"]
        .as_sequence()
        .expect("kustomization lists resources")
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    for file in resources {
        let text = std::fs::read_to_string(k8s_dir().join(&file)).unwrap_or_else(|e| panic!("k8s/{file}: {e}"));
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(doc).unwrap_or_else(|e| panic!("k8s/{file}: {e}"));
            let kind =
                value["kind"].as_str().unwrap_or_else(|| panic!("k8s/{file}: a document without kind")).to_string();
            let parse = |what: &str| -> serde_yaml::Value {
                assert!(value.get("metadata").is_some(), "k8s/{file}: {what} without metadata");
                value.clone()
            };
            macro_rules! typed {
                ($t:ty) => {
                    serde_yaml::from_value::<$t>(parse(&kind)).unwrap_or_else(|e| panic!("k8s/{file}: {kind}: {e}"))
                };
            }
            match kind.as_str() {
                "Deployment" => m.deployments.push(typed!(Deployment)),
                "Service" => m.services.push(typed!(Service)),
                "StatefulSet" => m.stateful_sets.push(typed!(StatefulSet)),
                "Secret" => m.secrets.push(typed!(Secret)),
                "PersistentVolumeClaim" => m.claims.push(typed!(PersistentVolumeClaim)),
                "Namespace" => m.namespaces.push(typed!(Namespace)),
                "NetworkPolicy" => m.network_policies.push(typed!(NetworkPolicy)),
                "PodDisruptionBudget" => m.budgets.push(typed!(PodDisruptionBudget)),
                other => panic!("k8s/{file}: unexpected kind {other}"),
            }
        }
        m.files.push(file);
    }
    m
}

fn pod_labels(m: &Manifests) -> Vec<(String, BTreeMap<String, String>, PodSpec)> {
    let mut pods = Vec::new();
    for d in &m.deployments {
        let t = &d.spec.as_ref().unwrap().template;
        pods.push((
            d.metadata.name.clone().unwrap(),
            t.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default(),
            t.spec.clone().unwrap(),
        ));
    }
    for s in &m.stateful_sets {
        let t = &s.spec.as_ref().unwrap().template;
        pods.push((
            s.metadata.name.clone().unwrap(),
            t.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default(),
            t.spec.clone().unwrap(),
        ));
    }
    pods
}

#[test]
fn every_service_has_a_deployment_and_a_service_in_the_lastmile_namespace() {
    let m = load();
    assert_eq!(m.namespaces.len(), 1);
    assert_eq!(m.namespaces[0].metadata.name.as_deref(), Some(NAMESPACE));
    let names: Vec<&str> = m.deployments.iter().map(|d| d.metadata.name.as_deref().unwrap()).collect();
    for service in lastmile_services::ServiceName::NAMES {
        assert!(names.contains(&service), "no Deployment for {service}");
        assert!(m.services.iter().any(|s| s.metadata.name.as_deref() == Some(service)), "no Service for {service}");
    }
    let namespaced = m
        .deployments
        .iter()
        .map(|d| &d.metadata)
        .chain(m.services.iter().map(|s| &s.metadata))
        .chain(m.stateful_sets.iter().map(|s| &s.metadata))
        .chain(m.secrets.iter().map(|s| &s.metadata))
        .chain(m.claims.iter().map(|c| &c.metadata));
    for meta in namespaced {
        assert_eq!(meta.namespace.as_deref(), Some(NAMESPACE), "{:?} is outside the namespace", meta.name);
    }
    assert!(
        m.stateful_sets.iter().any(|s| s.metadata.name.as_deref() == Some("rabbitmq")),
        "RabbitMQ runs as a StatefulSet"
    );
    let rabbit = m.stateful_sets.iter().find(|s| s.metadata.name.as_deref() == Some("rabbitmq")).unwrap();
    assert!(
        rabbit.spec.as_ref().unwrap().volume_claim_templates.as_ref().is_some_and(|v| !v.is_empty()),
        "RabbitMQ keeps its queues on durable storage"
    );
    assert!(m.secrets.is_empty(), "no Secret is committed: credentials are generated (k8s/make-secret.sh)");
}

/// The broker's credentials are never committed: kustomize generates the Secret from a file
/// that `k8s/make-secret.sh` writes with a random password, and every consumer reads it.
#[test]
fn the_broker_credentials_are_generated_not_committed() {
    let kustomization: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(k8s_dir().join("kustomization.yaml")).unwrap()).unwrap();
    let generator = &kustomization["secretGenerator"][0];
    assert_eq!(generator["name"].as_str(), Some("rabbitmq"));
    assert_eq!(generator["envs"][0].as_str(), Some("secrets/rabbitmq.env"));
    let token_generator = &kustomization["secretGenerator"][1];
    assert_eq!(token_generator["name"].as_str(), Some(lastmile_chaos::kubernetes::SERVICE_TOKEN_SECRET));
    assert_eq!(
        token_generator["files"][0].as_str(),
        Some(format!("{}=secrets/service-token", lastmile_chaos::kubernetes::SERVICE_TOKEN_KEY).as_str())
    );
    let ignored = std::fs::read_to_string(k8s_dir().join("../.gitignore")).unwrap();
    assert!(ignored.lines().any(|l| l.trim() == "/k8s/secrets/"), "k8s/secrets/ is git-ignored");

    let dir = std::env::temp_dir().join(format!("lastmile-secret-{}", std::process::id()));
    let read = |file: &std::path::Path| -> BTreeMap<String, String> {
        let text = std::fs::read_to_string(file).unwrap();
        text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let make = |dir: &std::path::Path, force: bool| {
        let mut command = std::process::Command::new(k8s_dir().join("make-secret.sh"));
        if force {
            command.arg("--force");
        }
        assert!(command.arg(dir).status().unwrap().success());
    };
    let (a_dir, b_dir) = (dir.join("a"), dir.join("b"));
    make(&a_dir, true);
    make(&b_dir, true);
    let token = |dir: &std::path::Path| std::fs::read_to_string(dir.join("service-token")).unwrap();
    let (a_token, b_token) = (token(&a_dir), token(&b_dir));
    assert!(lastmile_platform::auth::ServiceToken::new(&a_token).is_ok(), "a usable token: {} chars", a_token.len());
    assert!(a_token.len() >= 64, "128 bits or more");
    assert_ne!(a_token, b_token, "each deployment draws its own token");
    make(&a_dir, false);
    assert_eq!(token(&a_dir), a_token, "an existing token is kept without --force");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(a_dir.join("service-token")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "readable by its owner only");
    let (a, b) = (read(&a_dir.join("rabbitmq.env")), read(&b_dir.join("rabbitmq.env")));
    assert_eq!(a.keys().map(String::as_str).collect::<Vec<_>>(), ["amqp-url", "password", "username"]);
    assert!(a["password"].len() >= 32, "a long random password");
    assert_ne!(a["password"], b["password"], "each run draws a new password");
    assert_eq!(a["amqp-url"], format!("amqp://lastmile:{}@rabbitmq:5672/%2f", a["password"]));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn every_deployment_has_probes_resources_and_a_locked_down_non_root_container() {
    let m = load();
    for d in &m.deployments {
        let name = d.metadata.name.clone().unwrap();
        let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let grace = pod.termination_grace_period_seconds.unwrap_or(30);
        assert!(grace > DRAIN_SECONDS, "{name}: grace period {grace}s does not cover the {DRAIN_SECONDS}s drain");
        let pod_non_root = pod.security_context.as_ref().and_then(|s| s.run_as_non_root).unwrap_or(false);
        for c in &pod.containers {
            let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
                p.as_ref().and_then(|p| p.http_get.as_ref()).and_then(|h| h.path.clone())
            };
            assert_eq!(probe_path(&c.liveness_probe).as_deref(), Some("/health"), "{name}: liveness probe");
            assert_eq!(probe_path(&c.readiness_probe).as_deref(), Some("/ready"), "{name}: readiness probe");
            let resources = c.resources.as_ref().unwrap_or_else(|| panic!("{name}: no resources"));
            for key in ["cpu", "memory"] {
                assert!(resources.requests.as_ref().is_some_and(|r| r.contains_key(key)), "{name}: no {key} request");
                assert!(resources.limits.as_ref().is_some_and(|r| r.contains_key(key)), "{name}: no {key} limit");
            }
            let sc = c.security_context.as_ref().unwrap_or_else(|| panic!("{name}: no security context"));
            assert!(pod_non_root || sc.run_as_non_root == Some(true), "{name}: may run as root");
            assert_eq!(sc.read_only_root_filesystem, Some(true), "{name}: writable root filesystem");
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{name}: privilege escalation allowed");
            assert_eq!(c.image.as_deref(), Some(IMAGE), "{name}: not the image the Dockerfile builds");
            let args = c.args.clone().unwrap_or_default();
            let service = args.first().unwrap_or_else(|| panic!("{name}: which service does it run?"));
            assert_eq!(
                service.parse::<lastmile_services::ServiceName>().map(|s| s.as_str().to_string()),
                Ok(name.clone()),
                "{name}: runs {service}"
            );
        }
    }
}

/// A rollout never leaves a service without a ready pod where it can help it: the services that
/// run several replicas surge one pod at a time and keep every old one until its successor is
/// ready; the journal services (one writer) recreate, since two pods must not share a journal.
#[test]
fn rollouts_surge_one_pod_at_a_time_or_recreate_a_journal_writer() {
    let m = load();
    assert_eq!(m.deployments.len(), 5, "one Deployment per service");
    for d in &m.deployments {
        let name = d.metadata.name.clone().unwrap();
        let service: lastmile_services::ServiceName = name.parse().unwrap_or_else(|e| panic!("{name}: {e}"));
        let strategy = d.spec.as_ref().unwrap().strategy.clone().unwrap_or_else(|| panic!("{name}: no strategy"));
        if service.single_replica() {
            assert_eq!(strategy.type_.as_deref(), Some("Recreate"), "{name}: one journal writer at a time");
        } else {
            assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"), "{name}");
            let rolling = strategy.rolling_update.unwrap_or_else(|| panic!("{name}: no rollingUpdate"));
            assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(0)), "{name}: an old pod may go first");
            assert_eq!(rolling.max_surge, Some(IntOrString::Int(1)), "{name}: one new pod at a time");
        }
    }
}

#[test]
fn selectors_select_their_pods_and_service_ports_reach_container_ports() {
    let m = load();
    let pods = pod_labels(&m);
    for d in &m.deployments {
        let spec = d.spec.as_ref().unwrap();
        let selector = spec.selector.match_labels.clone().unwrap_or_default();
        let labels = spec.template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
        for (k, v) in &selector {
            assert_eq!(labels.get(k), Some(v), "{:?}: selector {k}={v} does not match its pods", d.metadata.name);
        }
    }
    for s in &m.services {
        let name = s.metadata.name.clone().unwrap();
        let spec = s.spec.as_ref().unwrap();
        let selector = spec.selector.clone().unwrap_or_default();
        let selected: Vec<&PodSpec> = pods
            .iter()
            .filter(|(_, labels, _)| selector.iter().all(|(k, v)| labels.get(k) == Some(v)))
            .map(|(_, _, pod)| pod)
            .collect();
        assert!(!selected.is_empty(), "Service {name} selects no pods");
        for port in spec.ports.as_ref().unwrap() {
            let target = port.target_port.clone().unwrap_or(IntOrString::Int(port.port));
            for pod in &selected {
                let reached = pod.containers.iter().flat_map(|c| c.ports.iter().flatten()).any(|p| match &target {
                    IntOrString::Int(n) => p.container_port == *n,
                    IntOrString::String(s) => p.name.as_deref() == Some(s.as_str()),
                });
                assert!(reached, "Service {name}: target port {target:?} is no container port");
            }
        }
    }
}

#[test]
fn the_dockerfile_builds_the_binary_the_deployments_run() {
    let dockerfile = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Dockerfile")).unwrap();
    assert!(dockerfile.contains("--bin lastmile-service"), "the Dockerfile builds lastmile-service");
    assert!(dockerfile.contains(r#"ENTRYPOINT ["/usr/local/bin/lastmile-service"]"#), "and runs it");
    assert!(dockerfile.contains("docker build -t lastmile:dev"), "it documents the tag the manifests use");
    assert!(dockerfile.contains("USER 10001"), "as the non-root user the manifests expect");
    let kustomization = std::fs::read_to_string(k8s_dir().join("kustomization.yaml")).unwrap();
    assert!(kustomization.contains("name: lastmile") && kustomization.contains("newTag: dev"));
    // The same image carries the simulator, built in its flavour, for `lastmile sweep --kube`.
    assert!(dockerfile.contains(r#"RUSTFLAGS="--cfg madsim""#), "the simulator is built with --cfg madsim");
    assert!(dockerfile.contains("--bin lastmile-sim"), "the Dockerfile builds lastmile-sim");
    assert!(dockerfile.contains("/usr/local/bin/lastmile-sim"), "and puts it on the PATH");
    // And the CLI, for the Job of `lastmile load --target kube`, which runs it by name.
    assert!(dockerfile.contains("-p lastmile-chaos --bin lastmile\n"), "the Dockerfile builds lastmile");
    assert!(dockerfile.contains("target/release/lastmile /usr/local/bin/lastmile\n"), "and puts it on the PATH");
}

/// `k8s/sweep/indexed-job.yaml`, the template of `lastmile sweep --kube`: a Job of Kubernetes'
/// own type, Indexed with retries per index, locked down like the services, running the
/// simulator of the Dockerfile's image — and not part of the deployment.
/// A Job template's pod runs non-root under the default seccomp profile, and its container
/// `name` runs the project image read-only, unprivileged, with requests and limits.
fn locked_down_container<'a>(pod: &'a PodSpec, name: &str) -> &'a k8s_openapi::api::core::v1::Container {
    let pod_sc = pod.security_context.as_ref().unwrap();
    assert_eq!(pod_sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()), Some("RuntimeDefault"));
    assert_eq!(pod_sc.run_as_non_root, Some(true));
    let c = pod.containers.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no container {name}"));
    assert_eq!(c.image.as_deref(), Some(IMAGE));
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!((sc.read_only_root_filesystem, sc.allow_privilege_escalation), (Some(true), Some(false)));
    let resources = c.resources.as_ref().unwrap();
    for key in ["cpu", "memory"] {
        assert!(resources.requests.as_ref().is_some_and(|r| r.contains_key(key)), "no {key} request");
        assert!(resources.limits.as_ref().is_some_and(|r| r.contains_key(key)), "no {key} limit");
    }
    c
}

#[test]
fn the_sweep_job_template_is_a_locked_down_indexed_job_outside_the_deployment() {
    use k8s_openapi::api::batch::v1::Job;
    let text = std::fs::read_to_string(k8s_dir().join("sweep/indexed-job.yaml")).unwrap();
    assert_eq!(text, lastmile_chaos::sweep::TEMPLATE, "the sweep renders this very file");
    let job: Job = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("k8s/sweep/indexed-job.yaml: {e}"));
    assert_eq!(job.metadata.namespace.as_deref(), Some(NAMESPACE));
    let spec = job.spec.as_ref().unwrap();
    assert_eq!(spec.completion_mode.as_deref(), Some("Indexed"));
    assert!(spec.backoff_limit_per_index.is_some_and(|n| n > 0), "failed indexes are retried");
    assert!(spec.max_failed_indexes.is_some(), "a broken image or cluster stops the Job");
    let rules = spec.pod_failure_policy.as_ref().map(|p| p.rules.clone()).unwrap_or_default();
    assert!(rules.iter().any(|r| r.action == "FailJob"), "usage errors fail the Job at once");
    assert!(spec.ttl_seconds_after_finished.is_some(), "a Job left behind goes away by itself");
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"), "backoffLimitPerIndex needs Never");
    assert_eq!(pod.automount_service_account_token, Some(false));
    let c = locked_down_container(pod, lastmile_chaos::sweep::CONTAINER);
    let script = c.args.clone().unwrap_or_default().join(" ");
    assert!(script.contains("JOB_COMPLETION_INDEX") && script.contains("lastmile-sim run"), "{script}");
    assert!(script.contains("--summary-lines"), "{script}");
    let volumes = pod.volumes.clone().unwrap_or_default();
    let scenario = volumes.iter().find_map(|v| v.config_map.as_ref()).expect("the scenario's ConfigMap");
    let items = scenario.items.clone().unwrap_or_default();
    assert!(items.iter().any(|i| i.key == lastmile_chaos::sweep::SCENARIO_KEY));
    let kustomization = std::fs::read_to_string(k8s_dir().join("kustomization.yaml")).unwrap();
    assert!(!kustomization.contains("sweep"), "the sweep's Job is not part of the deployment");
}

/// `k8s/load/job.yaml`, the template of `lastmile load --target kube`: one pod, never retried,
/// locked down like the services, reading the broker URL and the token from the mounted Secrets'
/// files, running `lastmile load --target endpoints` against URLs that are the deployment's
/// Services and ports, with its fdatasync probe on a volume of its own — and not part of the
/// deployment.
#[test]
fn the_load_job_template_runs_the_generator_next_to_the_services_it_names() {
    use k8s_openapi::api::batch::v1::Job;
    use lastmile_chaos::load::kube::{CONTAINER, POD_NAME_LABEL, TEMPLATE};
    let text = std::fs::read_to_string(k8s_dir().join("load/job.yaml")).unwrap();
    assert_eq!(text, TEMPLATE, "the CLI renders this very file");
    let job: Job = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("k8s/load/job.yaml: {e}"));
    assert_eq!(job.metadata.namespace.as_deref(), Some(NAMESPACE));
    let spec = job.spec.as_ref().unwrap();
    assert_eq!(spec.completion_mode, None, "one pod, not indexed");
    assert_eq!(spec.backoff_limit, Some(0), "a measurement is not retried");
    assert!(spec.ttl_seconds_after_finished.is_some() && spec.active_deadline_seconds.is_some(), "safety nets");
    let labels = spec.template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    assert_eq!(labels.get("app.kubernetes.io/name").map(String::as_str), Some(POD_NAME_LABEL));
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(pod.containers.len(), 1);
    let c = locked_down_container(pod, CONTAINER);

    // Secrets as files, as the services read them; nothing secret in the environment.
    let env = c.env.clone().unwrap_or_default();
    let value = |var: &str| env.iter().find(|e| e.name == var).and_then(|e| e.value.clone());
    assert!(!env.iter().any(|e| e.name == "LASTMILE_AMQP_URL" || e.name == "LASTMILE_SERVICE_TOKEN"));
    assert!(!env.iter().any(|e| e.value_from.is_some()), "no secretKeyRef in the environment");
    let volumes = pod.volumes.clone().unwrap_or_default();
    let mounts = c.volume_mounts.clone().unwrap_or_default();
    let mounted_secret = |secret: &str, key: &str| -> String {
        let volume = volumes
            .iter()
            .find(|v| v.secret.as_ref().is_some_and(|s| s.secret_name.as_deref() == Some(secret)))
            .unwrap_or_else(|| panic!("the Secret {secret} is not mounted"));
        let mount = mounts.iter().find(|m| m.name == volume.name).expect("its volume is mounted");
        assert_eq!(mount.read_only, Some(true));
        format!("{}/{key}", mount.mount_path)
    };
    assert_eq!(value("LASTMILE_AMQP_URL_FILE"), Some(mounted_secret("rabbitmq", "amqp-url")));
    assert_eq!(
        value("LASTMILE_SERVICE_TOKEN_FILE"),
        Some(mounted_secret(
            lastmile_chaos::kubernetes::SERVICE_TOKEN_SECRET,
            lastmile_chaos::kubernetes::SERVICE_TOKEN_KEY
        ))
    );

    // The command: an endpoints load against the deployment's own Services and ports.
    let command = c.command.clone().unwrap_or_default();
    assert_eq!(command[..4], ["lastmile", "load", "--target", "endpoints"]);
    let flag = |name: &str| command.iter().position(|w| w == name).map(|i| command[i + 1].clone());
    let m = load();
    for (service, name) in
        [("user-service", "--user-url"), ("location-service", "--location-url"), ("trip-service", "--trip-url")]
    {
        let url = flag(name).unwrap_or_else(|| panic!("no {name}"));
        let port = m
            .services
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(service))
            .and_then(|s| s.spec.as_ref()?.ports.as_ref()?.first().map(|p| p.port))
            .unwrap_or_else(|| panic!("no Service {service}"));
        assert_eq!(url, format!("http://{service}:{port}"), "{name} is the Service's DNS name and port");
        assert_eq!(lastmile_chaos::load::parse_service_url(&url), Ok(url.clone()));
    }
    // The disk probe writes to a volume of the pod's own (the root filesystem is read-only).
    let disk = flag("--disk-dir").expect("--disk-dir");
    let scratch = mounts.iter().find(|m| m.mount_path == disk).expect("--disk-dir is a mount");
    let volume = volumes.iter().find(|v| v.name == scratch.name).unwrap();
    assert!(volume.empty_dir.is_some(), "an emptyDir: this pod's disk, not trip-service's volume");
    assert_ne!(scratch.read_only, Some(true));

    let kustomization = std::fs::read_to_string(k8s_dir().join("kustomization.yaml")).unwrap();
    assert!(!kustomization.contains("load/"), "the load Job is not part of the deployment");
}

/// Every pod runs under the runtime's seccomp profile, without a service-account token (none of
/// them talks to the Kubernetes API), and the services read the broker URL from a mounted file
/// of the Secret rather than the environment.
#[test]
fn every_pod_has_seccomp_no_token_and_the_broker_url_as_a_file() {
    let m = load();
    let pods = m
        .deployments
        .iter()
        .map(|d| (d.metadata.name.clone().unwrap(), d.spec.as_ref().unwrap().template.spec.clone().unwrap()))
        .chain(
            m.stateful_sets
                .iter()
                .map(|s| (s.metadata.name.clone().unwrap(), s.spec.as_ref().unwrap().template.spec.clone().unwrap())),
        );
    for (name, pod) in pods {
        let seccomp = pod.security_context.as_ref().and_then(|s| s.seccomp_profile.as_ref()).map(|p| p.type_.as_str());
        assert_eq!(seccomp, Some("RuntimeDefault"), "{name}: seccomp");
        assert_eq!(pod.automount_service_account_token, Some(false), "{name}: service-account token mounted");
        if name == "rabbitmq" {
            continue;
        }
        let env = pod.containers[0].env.clone().unwrap_or_default();
        assert!(!env.iter().any(|e| e.name == "LASTMILE_AMQP_URL"), "{name}: the broker URL in the environment");
        let value = |var: &str| env.iter().find(|e| e.name == var).and_then(|e| e.value.clone());
        assert_eq!(value("LASTMILE_AMQP_URL_FILE").as_deref(), Some("/etc/lastmile/broker/amqp-url"), "{name}");
        assert_eq!(
            value("LASTMILE_SERVICE_TOKEN_FILE").as_deref(),
            Some("/etc/lastmile/token/service-token"),
            "{name}"
        );
        assert!(!env.iter().any(|e| e.name == "LASTMILE_SERVICE_TOKEN"), "{name}: the token in the environment");
        assert_eq!(value("LASTMILE_LOG_FORMAT").as_deref(), Some("json"), "{name}: JSON log lines");
        let volumes = pod.volumes.unwrap_or_default();
        let mounted = |secret: &str| {
            volumes.iter().any(|v| v.secret.as_ref().is_some_and(|s| s.secret_name.as_deref() == Some(secret)))
        };
        assert!(mounted("rabbitmq"), "{name}: the broker Secret is mounted");
        assert!(mounted(lastmile_chaos::kubernetes::SERVICE_TOKEN_SECRET), "{name}: the token Secret is mounted");
    }
}

/// Ingress is denied by default and allowed only from the intended callers; trip- and
/// matching-service have disruption budgets.
#[test]
fn network_policies_let_only_the_intended_callers_in() {
    let m = load();
    let policy = |name: &str| {
        m.network_policies
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no NetworkPolicy {name}"))
            .spec
            .clone()
            .unwrap()
    };
    let deny = policy("default-deny-ingress");
    assert!(deny.pod_selector.as_ref().is_some_and(|s| s.match_labels.is_none() && s.match_expressions.is_none()));
    assert!(deny.ingress.is_none(), "the default denies everything");
    let callers = |name: &str| -> Vec<String> {
        let mut out = Vec::new();
        for rule in policy(name).ingress.unwrap_or_default() {
            for peer in rule.from.unwrap_or_default() {
                let selector = peer.pod_selector.expect("callers are pods of the namespace");
                out.extend(selector.match_labels.unwrap_or_default().into_values());
                for e in selector.match_expressions.unwrap_or_default() {
                    out.extend(e.values.unwrap_or_default());
                }
            }
        }
        out.sort();
        out
    };
    // The load generator's pods (k8s/load/job.yaml) are let in where it calls, and only there.
    let load = lastmile_chaos::load::kube::POD_NAME_LABEL;
    assert_eq!(callers("user-service"), [load, "location-service", "trip-service"]);
    assert_eq!(callers("location-service"), [load, "matching-service"]);
    assert_eq!(callers("trip-service"), [load, "location-service", "matching-service"]);
    let mut broker_callers: Vec<String> = lastmile_services::ServiceName::NAMES.map(String::from).to_vec();
    broker_callers.push(load.to_string());
    broker_callers.sort();
    assert_eq!(callers("rabbitmq"), broker_callers, "the five services and the load probe reach the broker");
    for service in ["trip-service", "matching-service"] {
        let budget = m.budgets.iter().find(|b| b.metadata.name.as_deref() == Some(service)).expect("a budget");
        assert_eq!(budget.spec.as_ref().unwrap().min_available, Some(IntOrString::Int(1)), "{service}");
    }
}
