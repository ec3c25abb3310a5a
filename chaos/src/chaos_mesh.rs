//! Chaos Mesh objects for the faults the Kubernetes API alone cannot cause: `pause`, `partition`,
//! `latency` and `loss` on the kube target.
//!
//! A step becomes one object of `chaos-mesh.org/v1alpha1`, created through the `kube` crate as a
//! dynamic object (no generated types: the spec is plain JSON, built by [`ChaosObject::for_step`],
//! a pure function tested without a cluster):
//! - `partition` → `NetworkChaos` `action: partition`, `direction: both`, on the service's pods
//!   (`mode: all`), or on one replica's pod chosen by name (`selector.pods`); with a `peer`, a
//!   `target` selector on the peer's pods (the broker's for `peer = "broker"`), so only those links
//!   are cut;
//! - `latency` → `NetworkChaos` `action: delay` on every LastMile pod (broker included), egress:
//!   each side delays what it sends, so every link is slowed, as the simulation does;
//! - `loss` → `NetworkChaos` `action: loss` (a percentage string) on every LastMile pod, egress;
//! - `pause` → `PodChaos` `action: pod-failure`: Chaos Mesh has no way to freeze a pod's processes
//!   (no SIGSTOP, no cgroup freezer among its actions), so the closest it offers is to swap the
//!   containers' image for a pause image while the fault lasts — see [`ChaosObject::for_step`] for
//!   how that differs from the simulation's stop-the-world pause.
//!
//! Every object carries the run's labels ([`MANAGED_BY_LABEL`], [`RUN_LABEL`]) so all of a run's
//! objects can be listed and deleted together (the heal, and the cleanup when a run fails or is
//! interrupted), and a name made of the run and the step's index, as a DNS-1123 label.
//!
//! Each object also has a `duration`, as a safety net only: the target deletes it when the step is
//! undone, at the heal, and in the cleanup, which is what ends the fault on time. The duration is
//! the step's `for_s` plus [`SAFETY_MARGIN_S`] (an hour for a fault that lasts until the heal), so
//! a fault still ends by itself if the `lastmile` process dies where no cleanup can run (SIGKILL,
//! a lost machine) — and `pod-failure` needs a duration anyway.

use crate::kubernetes::{pod_ready, wait_for, KubeWorkload, NAME_LABEL};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::{Client, ResourceExt};
use lastmile_harness::target::step_service;
use lastmile_harness::TargetError;
use lastmile_scenarios::faults::TimelineStep;
use lastmile_scenarios::Action;
use serde_json::{json, Value};
use std::time::Duration;

/// Chaos Mesh's API group.
pub const GROUP: &str = "chaos-mesh.org";
/// The version of it the objects are written for.
pub const VERSION: &str = "v1alpha1";
/// The label naming who created an object.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Its value on every object a run creates.
pub const MANAGED_BY: &str = "lastmile-chaos";
/// The label holding the run's id.
pub const RUN_LABEL: &str = "lastmile.run";
/// The label every pod of the LastMile deployment (the broker's too) carries, with `lastmile`.
pub const PART_OF_LABEL: &str = "app.kubernetes.io/part-of";
/// Seconds a fault may outlive its `for_s` before Chaos Mesh ends it by itself (see the module docs).
pub const SAFETY_MARGIN_S: u64 = 300;
/// The safety-net duration of a fault that lasts until the heal.
pub const UNTIL_HEAL_S: u64 = 3600;

/// The helm commands that install Chaos Mesh on Minikube, in the error that asks for it.
pub const INSTALL_HINT: &str = "install Chaos Mesh, then run again:\n  \
    helm repo add chaos-mesh https://charts.chaos-mesh.org\n  \
    helm install chaos-mesh chaos-mesh/chaos-mesh -n chaos-mesh --create-namespace \
    --set chaosDaemon.runtime=docker --set chaosDaemon.socketPath=/var/run/docker.sock\n\
    (those flags fit Minikube's default Docker runtime; on `minikube start --container-runtime=containerd` use \
    --set chaosDaemon.runtime=containerd --set chaosDaemon.socketPath=/run/containerd/containerd.sock; \
    see docs/real-world.md)";

/// Whether a step needs Chaos Mesh on the kube target.
pub fn needs_chaos_mesh(action: Action) -> bool {
    matches!(action, Action::Pause | Action::Partition | Action::Latency | Action::Loss)
}

/// The two kinds of Chaos Mesh object a run creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChaosKind {
    /// `NetworkChaos`: partition, delay, loss.
    Network,
    /// `PodChaos`: pod-failure, for pause.
    Pod,
}

impl ChaosKind {
    /// Both kinds.
    pub const ALL: [ChaosKind; 2] = [ChaosKind::Network, ChaosKind::Pod];

    /// The object's `kind`.
    pub fn kind(self) -> &'static str {
        match self {
            ChaosKind::Network => "NetworkChaos",
            ChaosKind::Pod => "PodChaos",
        }
    }

    /// The resource's plural, as in its URL (`kubectl get networkchaos`).
    pub fn plural(self) -> &'static str {
        match self {
            ChaosKind::Network => "networkchaos",
            ChaosKind::Pod => "podchaos",
        }
    }

    /// The resource, for `kube`'s dynamic API.
    pub fn resource(self) -> ApiResource {
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, self.kind()), self.plural())
    }
}

/// `raw` as a DNS-1123 label (what object names and label values must be): lower case, letters,
/// digits and `-`, starting and ending with a letter or digit, at most 63 characters.
pub fn dns1123_label(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' };
        if !(c == '-' && (out.is_empty() || out.ends_with('-'))) {
            out.push(c);
        }
    }
    out.truncate(63);
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() {
        "lastmile".to_string()
    } else {
        out
    }
}

/// The Chaos Mesh duration of a step's fault: `for_s` plus the safety margin.
pub fn safety_duration(for_s: Option<f64>) -> String {
    let s = for_s.map_or(UNTIL_HEAL_S, |f| f.max(0.0).ceil() as u64 + SAFETY_MARGIN_S);
    format!("{s}s")
}

/// A share of packets (0..1) as Chaos Mesh's percentage string (`0.1` → `"10"`).
pub fn loss_percent(loss: f64) -> String {
    let percent = (loss.clamp(0.0, 1.0) * 10_000.0).round() / 100.0;
    format!("{percent}")
}

/// Chaos Mesh's `delay`: netem adds `latency ± jitter`, so `latency_ms` at least and up to half of
/// it more (the simulation's `latency_ms ..= 1.5 × latency_ms`) is 1.25 × ± 0.25 ×.
pub fn delay_spec(latency_ms: u64) -> Value {
    let ms = latency_ms as f64;
    json!({ "latency": format!("{}ms", ms * 1.25), "jitter": format!("{}ms", ms * 0.25), "correlation": "0" })
}

/// One Chaos Mesh object a step becomes.
#[derive(Debug, Clone, PartialEq)]
pub struct ChaosObject {
    /// NetworkChaos or PodChaos.
    pub kind: ChaosKind,
    /// Its name: the run and the step's index.
    pub name: String,
    /// Its labels: the run's.
    pub labels: Value,
    /// Its spec, as Chaos Mesh reads it.
    pub spec: Value,
}

/// Which pods of the step's service a fault selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pods {
    /// Every pod of the service (`mode: all` on its name label).
    All,
    /// One pod, by name (the step's `replica`).
    Named(String),
}

impl ChaosObject {
    /// The object step `index` of run `run_id` becomes in `namespace`; `pods` says which of the
    /// service's pods it picks (for pause and partition).
    ///
    /// On pause: `pod-failure` replaces each chosen container's image with a pause image until the
    /// object is deleted, and Kubernetes restarts the container twice (into the pause image, and
    /// back). Unlike the simulation's SIGSTOP-like freeze, the process is killed: its memory, its
    /// connections and its unacked deliveries are gone at once (RabbitMQ requeues them), peers see
    /// refused or reset connections rather than silence, readiness fails so the Service stops
    /// routing to the pod, and on resume the process starts afresh instead of carrying on with
    /// timers that fire late. It tests "a replica stops answering and comes back", not "a replica
    /// wakes up believing no time has passed".
    pub fn for_step(
        step: &TimelineStep,
        run_id: &str,
        index: usize,
        namespace: &str,
        pods: &Pods,
    ) -> Result<ChaosObject, TargetError> {
        let action = format!("{:?}", step.action).to_lowercase();
        let run_short: String = run_id.chars().take(12).collect();
        let name = dns1123_label(&format!("lm-{run_short}-{index}-{action}"));
        let labels = json!({ MANAGED_BY_LABEL: MANAGED_BY, RUN_LABEL: dns1123_label(run_id) });
        let duration = safety_duration(step.for_s);
        let every_lastmile_pod = json!({
            "mode": "all",
            "selector": { "namespaces": [namespace], "labelSelectors": { PART_OF_LABEL: "lastmile" } }
        });
        let service_pods = |service: &str| match pods {
            Pods::All => json!({
                "mode": "all",
                "selector": { "namespaces": [namespace], "labelSelectors": { NAME_LABEL: service } }
            }),
            Pods::Named(pod) => json!({ "mode": "all", "selector": { "pods": { namespace: [pod] } } }),
        };
        let (kind, spec) = match step.action {
            Action::Partition => {
                let service = step_service(step)?;
                let mut spec = service_pods(service.as_str());
                spec["action"] = json!("partition");
                spec["direction"] = json!("both");
                if let Some(peer) = &step.peer {
                    let peer = if peer == "broker" {
                        KubeWorkload::Broker.name().to_string()
                    } else {
                        peer.parse::<lastmile_services::ServiceName>()?.as_str().to_string()
                    };
                    spec["target"] = json!({
                        "mode": "all",
                        "selector": { "namespaces": [namespace], "labelSelectors": { NAME_LABEL: peer } }
                    });
                }
                (ChaosKind::Network, spec)
            }
            Action::Latency => {
                let ms = TargetError::required(step.latency_ms, "latency", "latency_ms")?;
                let mut spec = every_lastmile_pod;
                spec["action"] = json!("delay");
                spec["direction"] = json!("to");
                spec["delay"] = delay_spec(ms);
                (ChaosKind::Network, spec)
            }
            Action::Loss => {
                let loss = TargetError::required(step.loss, "loss", "loss")?;
                let mut spec = every_lastmile_pod;
                spec["action"] = json!("loss");
                spec["direction"] = json!("to");
                spec["loss"] = json!({ "loss": loss_percent(loss), "correlation": "0" });
                (ChaosKind::Network, spec)
            }
            Action::Pause => {
                let service = step_service(step)?;
                let mut spec = service_pods(service.as_str());
                spec["action"] = json!("pod-failure");
                (ChaosKind::Pod, spec)
            }
            action => return Err(TargetError::Unsupported { action, target: "kube (Chaos Mesh)" }),
        };
        let mut spec = spec;
        spec["duration"] = json!(duration);
        Ok(ChaosObject { kind, name, labels, spec })
    }

    /// The object as `kube` sends it.
    pub fn to_dynamic(&self, namespace: &str) -> DynamicObject {
        let mut object = DynamicObject::new(&self.name, &self.kind.resource()).within(namespace).data(json!({
            "spec": self.spec
        }));
        object.metadata.labels = serde_json::from_value(self.labels.clone()).ok();
        object
    }
}

fn chaos_error(message: String) -> TargetError {
    TargetError::Deployment(message)
}

/// The message when Chaos Mesh is missing; `why` says how that was found out.
fn missing(why: &str) -> TargetError {
    chaos_error(format!(
        "the timeline has pause, partition, latency or loss steps, which the kube target carries out with \
         Chaos Mesh, and {why}; nothing was changed. {INSTALL_HINT}"
    ))
}

/// Whether an API error is a 404 (the resource is not served).
fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 404)
}

/// Chaos Mesh's objects in one namespace.
#[derive(Clone)]
pub struct ChaosMesh {
    client: Client,
    namespace: String,
    /// How long an object may take to be injected, or to be gone once deleted.
    timeout: Duration,
}

impl ChaosMesh {
    /// The objects in `namespace` through `client`.
    pub fn new(client: Client, namespace: &str, timeout: Duration) -> ChaosMesh {
        ChaosMesh { client, namespace: namespace.to_string(), timeout }
    }

    fn api(&self, kind: ChaosKind) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.namespace, &kind.resource())
    }

    /// Fail, with the helm commands to install it, unless the API server serves Chaos Mesh's
    /// NetworkChaos and PodChaos (API discovery of `chaos-mesh.org/v1alpha1`).
    pub async fn require_installed(&self) -> Result<(), TargetError> {
        let group_version = format!("{GROUP}/{VERSION}");
        let resources = match self.client.list_api_group_resources(&group_version).await {
            Ok(list) => list.resources,
            Err(e) if not_found(&e) => {
                return Err(missing(&format!("the cluster does not serve {group_version}")));
            }
            Err(e) => {
                return Err(chaos_error(format!(
                    "cannot ask the API server whether Chaos Mesh is installed ({group_version}): {e}"
                )))
            }
        };
        for kind in ChaosKind::ALL {
            if !resources.iter().any(|r| r.name == kind.plural()) {
                return Err(missing(&format!("{group_version} has no {}", kind.kind())));
            }
        }
        Ok(())
    }

    /// Create `object` and wait until Chaos Mesh reports it injected into every pod it selected
    /// (its `AllInjected` condition); when that fails, the object is deleted again, so a failed
    /// step leaves nothing behind.
    pub async fn create(&self, object: &ChaosObject) -> Result<(), TargetError> {
        let api = self.api(object.kind);
        let what = format!("{} {}", object.kind.kind(), object.name);
        api.create(&PostParams::default(), &object.to_dynamic(&self.namespace)).await.map_err(|e| {
            if not_found(&e) {
                missing(&format!("creating {what} answered 404 ({e})"))
            } else {
                chaos_error(format!("cannot create {what}: {e}"))
            }
        })?;
        let by_name = ListParams::default().fields(&format!("metadata.name={}", object.name));
        let injected =
            wait_for(&api, &by_name, &format!("{what} injected"), self.timeout, |os| os.iter().any(all_injected)).await;
        if let Err(e) = injected {
            return Err(match self.delete(object.kind, &object.name).await {
                Ok(()) => e,
                Err(d) => TargetError::Several(vec![e, d]),
            });
        }
        Ok(())
    }

    /// Delete one object and wait until it is gone (Chaos Mesh's finalizer holds it until the
    /// fault is recovered, so gone means over). Already gone is fine.
    pub async fn delete(&self, kind: ChaosKind, name: &str) -> Result<(), TargetError> {
        let api = self.api(kind);
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if not_found(&e) => return Ok(()),
            Err(e) => return Err(chaos_error(format!("cannot delete {} {name}: {e}", kind.kind()))),
        }
        let by_name = ListParams::default().fields(&format!("metadata.name={name}"));
        wait_for(&api, &by_name, &format!("{} {name} recovered and gone", kind.kind()), self.timeout, |os| {
            os.is_empty()
        })
        .await
    }

    /// Delete every object of run `run_id` (found by its label, so also any whose creation was
    /// cut short) and wait until they are gone. Answers their names. A cluster without Chaos Mesh
    /// has none.
    pub async fn delete_run(&self, run_id: &str) -> Result<Vec<String>, TargetError> {
        let selector = ListParams::default().labels(&format!("{RUN_LABEL}={}", dns1123_label(run_id)));
        let mut deleted = Vec::new();
        let mut failures = Vec::new();
        for kind in ChaosKind::ALL {
            let objects = match self.api(kind).list(&selector).await {
                Ok(list) => list.items,
                Err(e) if not_found(&e) => continue,
                Err(e) => {
                    failures.push(chaos_error(format!("cannot list the run's {}: {e}", kind.kind())));
                    continue;
                }
            };
            for o in objects {
                let name = o.name_any();
                match self.delete(kind, &name).await {
                    Ok(()) => deleted.push(format!("{}/{name}", kind.plural())),
                    Err(e) => failures.push(e),
                }
            }
        }
        if failures.is_empty() {
            Ok(deleted)
        } else {
            Err(TargetError::Several(failures))
        }
    }

    /// The `kubectl` command that deletes run `run_id`'s objects by hand.
    pub fn manual_command(&self, run_id: &str) -> String {
        format!("kubectl -n {} delete networkchaos,podchaos -l {RUN_LABEL}={}", self.namespace, dns1123_label(run_id))
    }
}

/// Whether Chaos Mesh reports an object injected into every pod it selected.
fn all_injected(object: &DynamicObject) -> bool {
    object.data["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "AllInjected" && c["status"] == "True"))
}

/// The pod a step's `replica` picks among the service's ready pods (oldest first, the index taken
/// modulo their number, as the simulation does); `None` when there is none.
pub fn replica_pod(ready_oldest_first: &[Pod], replica: usize) -> Option<String> {
    let ready: Vec<&Pod> = ready_oldest_first.iter().filter(|p| pod_ready(p)).collect();
    (!ready.is_empty()).then(|| ready[replica % ready.len()].name_any())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lastmile_scenarios::faults::Origin;

    fn step(action: Action) -> TimelineStep {
        TimelineStep {
            target: Some("matching-service".into()),
            for_s: Some(10.0),
            ..TimelineStep::new(1.0, action, Origin::Scenario)
        }
    }

    #[test]
    fn names_are_dns1123_labels() {
        assert_eq!(dns1123_label("lm-ABCdef_01-3-partition"), "lm-abcdef-01-3-partition");
        assert_eq!(dns1123_label("--a..b--"), "a-b");
        assert_eq!(dns1123_label("___"), "lastmile");
        let long = dns1123_label(&format!("x{}", "-y".repeat(100)));
        assert!(long.len() <= 63 && !long.ends_with('-'), "{long}");
    }

    #[test]
    fn loss_is_a_percentage_and_delay_spans_the_simulations_range() {
        assert_eq!(loss_percent(0.1), "10");
        assert_eq!(loss_percent(0.07), "7");
        assert_eq!(loss_percent(0.255), "25.5");
        assert_eq!(delay_spec(100), json!({ "latency": "125ms", "jitter": "25ms", "correlation": "0" }));
        assert_eq!(delay_spec(3)["latency"], "3.75ms");
    }

    #[test]
    fn the_duration_is_only_a_safety_net_past_for_s() {
        assert_eq!(safety_duration(Some(10.0)), "310s");
        assert_eq!(safety_duration(Some(0.5)), "301s");
        assert_eq!(safety_duration(None), "3600s");
    }

    #[test]
    fn a_partition_of_one_replica_names_its_pod_and_a_peer_becomes_the_target() {
        let s = TimelineStep { replica: Some(1), peer: Some("broker".into()), ..step(Action::Partition) };
        let o = ChaosObject::for_step(&s, "0123456789abcdef", 4, "lastmile", &Pods::Named("m-2".into())).unwrap();
        assert_eq!(o.kind, ChaosKind::Network);
        assert_eq!(o.name, "lm-0123456789ab-4-partition");
        assert_eq!(o.spec["selector"], json!({ "pods": { "lastmile": ["m-2"] } }));
        assert_eq!(o.spec["target"]["selector"]["labelSelectors"][NAME_LABEL], "rabbitmq");
        assert_eq!(o.spec["direction"], "both");
        assert_eq!(o.labels[RUN_LABEL], "0123456789abcdef");
    }

    #[test]
    fn steps_chaos_mesh_cannot_take_are_refused() {
        let e = ChaosObject::for_step(&step(Action::Scale), "r", 0, "lastmile", &Pods::All).unwrap_err();
        assert!(matches!(e, TargetError::Unsupported { action: Action::Scale, .. }), "{e:?}");
        let no_ms = ChaosObject::for_step(&step(Action::Latency), "r", 0, "lastmile", &Pods::All).unwrap_err();
        assert!(matches!(no_ms, TargetError::MissingField { .. }), "{no_ms:?}");
        assert!(needs_chaos_mesh(Action::Pause) && !needs_chaos_mesh(Action::Kill));
    }
}
