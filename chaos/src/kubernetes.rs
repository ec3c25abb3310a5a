//! A LastMile deployment on Kubernetes: the `--target kube` of `lastmile chaos run`.
//!
//! Everything goes through the API server with the `kube` crate (the user's kubeconfig, namespace
//! `lastmile` by default), the way a chaos tool drives a cluster:
//! - scale: the Deployment's `scale` subresource, then wait — by watching, never by sleeping —
//!   until the Deployment has observed it and exactly N pods are ready and none is terminating;
//! - kill: delete one pod with no grace period (the Deployment replaces it, as after a crash);
//! - restart and rollout: a rollout (a new pod-template annotation, like `kubectl rollout
//!   restart`), carried out by the Deployment controller;
//! - a timeline step waits for its pods up to [`STEP_PATIENCE`] only, then the timeline goes on
//!   (the controller carries on): a fault in force may hold the pods up until a later step undoes
//!   it. The start and the heal wait the full ready timeout;
//! - broker restart: the RabbitMQ StatefulSet scaled to 0 and back;
//! - logs: every pod of a service;
//! - the workload and probes reach the services through [`Forwarder`] (port-forwarding).
//!
//! Like a scale attack of a chaos platform, the target records every replica count before it
//! changes anything and [`KubeTarget::restore`] puts them back — the CLI calls it when a run ends,
//! fails or is interrupted.
//!
//! Pauses and network faults (partition, latency, loss) are Chaos Mesh objects
//! ([`crate::chaos_mesh`]): created when the step is applied, deleted when it is undone, and every
//! object of the run deleted at the heal and by [`KubeTarget::restore`]. A run whose timeline
//! needs them fails before changing anything when Chaos Mesh is not installed.

use crate::chaos_mesh::{self, ChaosMesh, ChaosObject, Pods};
use crate::forward::Forwarder;
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Secret};
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, WatchEvent, WatchParams};
use kube::config::KubeConfigOptions;
use kube::{Client, Config, Resource, ResourceExt};
use lastmile_harness::target::step_service;
use lastmile_harness::{Target, TargetError};
use lastmile_platform::auth::ServiceToken;
use lastmile_scenarios::faults::TimelineStep;
use lastmile_scenarios::Action;
use lastmile_services::ServiceName;
use lastmile_workload::Endpoints;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

/// The label every LastMile pod carries with its service's name.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// The broker's StatefulSet.
pub const BROKER: &str = "rabbitmq";
/// The annotation a restart sets on the pod template.
pub const RESTARTED_AT: &str = "lastmile.dev/restarted-at";
/// How long a timeline step (a scale, a restart or rollout, a kill's undo) waits for its pods to
/// get ready before the timeline goes on: the simulation's and the local target's patience.
pub const STEP_PATIENCE: Duration = Duration::from_secs(20);

/// How to reach the cluster.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// The namespace LastMile runs in.
    pub namespace: String,
    /// A kubeconfig context (default: the current one).
    pub context: Option<String>,
    /// How long a scale or restart may take to settle.
    pub ready_timeout: Duration,
}

impl Default for KubeOptions {
    fn default() -> Self {
        KubeOptions { namespace: "lastmile".into(), context: None, ready_timeout: Duration::from_secs(180) }
    }
}

/// A client for the cluster in the user's kubeconfig (`KUBECONFIG`, else `~/.kube/config`).
pub async fn connect(options: &KubeOptions) -> Result<Client, TargetError> {
    let config = Config::from_kubeconfig(&KubeConfigOptions { context: options.context.clone(), ..Default::default() })
        .await
        .map_err(|e| {
            cluster_error(format!("cannot read the kubeconfig: {e} (is a cluster configured? `minikube start`)"))
        })?;
    Client::try_from(config).map_err(|e| cluster_error(format!("cannot build a Kubernetes client: {e}")))
}

/// The cluster could not be reached, or refused or failed an operation; `message` says which and why.
fn cluster_error(message: String) -> TargetError {
    TargetError::Deployment(message)
}

/// What a run scales on Kubernetes: a service's Deployment or the broker's StatefulSet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum KubeWorkload {
    /// A LastMile service's Deployment.
    Service(ServiceName),
    /// RabbitMQ's StatefulSet.
    Broker,
}

impl KubeWorkload {
    /// Its name (Deployment or StatefulSet, and the pods' name label).
    pub fn name(self) -> &'static str {
        match self {
            KubeWorkload::Service(s) => s.as_str(),
            KubeWorkload::Broker => BROKER,
        }
    }

    /// Every workload a run may change.
    pub fn all() -> Vec<KubeWorkload> {
        let mut all: Vec<KubeWorkload> = ServiceName::ALL.into_iter().map(KubeWorkload::Service).collect();
        all.push(KubeWorkload::Broker);
        all
    }
}

impl std::fmt::Display for KubeWorkload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The container called `name` of a Job template's pod (the one the CLI fills in).
pub fn template_container<'a>(pod: &'a mut PodSpec, name: &str) -> Result<&'a mut Container, String> {
    pod.containers.iter_mut().find(|c| c.name == name).ok_or_else(|| format!("the template has no container {name}"))
}

/// Whether a pod is ready and not on its way out.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether a Deployment has observed its latest spec and runs exactly `n` updated, ready pods.
pub fn deployment_settled(d: &Deployment, n: i32) -> bool {
    let generation = d.metadata.generation.unwrap_or(0);
    let spec = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(s) = d.status.as_ref() else { return spec == 0 && n == 0 };
    s.observed_generation.unwrap_or(0) >= generation
        && spec == n
        && s.replicas.unwrap_or(0) == n
        && s.updated_replicas.unwrap_or(0) == n
        && s.ready_replicas.unwrap_or(0) == n
}

/// The pods of one workload, exactly `n` of them, all ready, none terminating.
fn pods_settled(pods: &[Pod], n: i32) -> bool {
    pods.len() == n as usize && pods.iter().all(pod_ready)
}

/// Wait until `done` holds for the objects `selector` picks, by listing once and then following
/// the watch (re-listing when a watch ends or falls behind). Fails after `timeout`.
pub async fn wait_for<K>(
    api: &Api<K>,
    selector: &ListParams,
    what: &str,
    timeout: Duration,
    done: impl Fn(&[K]) -> bool,
) -> Result<(), TargetError>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    // What went wrong last, for the timeout's message (the API server may blip: it is part of
    // what is under test, so errors are retried until the deadline).
    let last_error = std::sync::Mutex::new(String::new());
    let note = |e: String| *last_error.lock().expect("not poisoned") = e;
    let watch = async {
        loop {
            let list = match api.list(selector).await {
                Ok(list) => list,
                Err(e) => {
                    note(e.to_string());
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let version = list.metadata.resource_version.clone().unwrap_or_else(|| "0".into());
            let mut objects: BTreeMap<String, K> = list.items.into_iter().map(|o| (o.name_any(), o)).collect();
            let current = |objects: &BTreeMap<String, K>| objects.values().cloned().collect::<Vec<K>>();
            if done(&current(&objects)) {
                return;
            }
            let params = WatchParams {
                label_selector: selector.label_selector.clone(),
                field_selector: selector.field_selector.clone(),
                timeout: Some(60),
                ..WatchParams::default()
            };
            let events = match api.watch(&params, &version).await {
                Ok(events) => events,
                Err(e) => {
                    note(e.to_string());
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let mut events = events.boxed();
            loop {
                match events.try_next().await {
                    Ok(Some(WatchEvent::Added(o) | WatchEvent::Modified(o))) => {
                        objects.insert(o.name_any(), o);
                    }
                    Ok(Some(WatchEvent::Deleted(o))) => {
                        objects.remove(&o.name_any());
                    }
                    Ok(Some(WatchEvent::Bookmark(_))) => continue,
                    // Too old a version (410) or a broken stream: list again.
                    Ok(Some(WatchEvent::Error(e))) => {
                        note(e.to_string());
                        break;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        note(e.to_string());
                        break;
                    }
                }
                if done(&current(&objects)) {
                    return;
                }
            }
        }
    };
    match tokio::time::timeout(timeout, watch).await {
        Ok(()) => Ok(()),
        Err(_) => {
            let last = last_error.lock().expect("not poisoned").clone();
            Err(TargetError::TimedOut {
                what: what.to_string(),
                after: timeout,
                last_error: (!last.is_empty()).then_some(last),
            })
        }
    }
}

/// The cluster operations a scenario needs, on one namespace.
#[derive(Clone)]
pub struct Cluster {
    /// The client itself, for what is not one of the typed APIs below (Chaos Mesh's objects).
    client: Client,
    deployments: Api<Deployment>,
    statefulsets: Api<StatefulSet>,
    pods: Api<Pod>,
    secrets: Api<Secret>,
    ready_timeout: Duration,
}

/// The Secret holding the service token (`k8s/make-secret.sh` writes it, kustomize applies it).
pub const SERVICE_TOKEN_SECRET: &str = "lastmile-service-token";
/// The key of the token in [`SERVICE_TOKEN_SECRET`].
pub const SERVICE_TOKEN_KEY: &str = "service-token";

impl Cluster {
    /// The operations on `namespace` through `client`.
    pub fn new(client: Client, namespace: &str, ready_timeout: Duration) -> Cluster {
        Cluster {
            client: client.clone(),
            deployments: Api::namespaced(client.clone(), namespace),
            statefulsets: Api::namespaced(client.clone(), namespace),
            pods: Api::namespaced(client.clone(), namespace),
            secrets: Api::namespaced(client, namespace),
            ready_timeout,
        }
    }

    /// The service token the deployment's internal endpoints require, read from its Secret.
    pub async fn service_token(&self) -> Result<ServiceToken, TargetError> {
        let missing = || {
            cluster_error(format!(
                "the Secret {SERVICE_TOKEN_SECRET} has no {SERVICE_TOKEN_KEY}: run k8s/make-secret.sh, then kubectl apply -k k8s/"
            ))
        };
        let secret = self.secrets.get_opt(SERVICE_TOKEN_SECRET).await.map_err(|e| {
            cluster_error(format!(
                "cannot read the Secret {SERVICE_TOKEN_SECRET} (the run needs `get` on secrets): {e}"
            ))
        })?;
        let bytes = secret.and_then(|s| s.data).and_then(|mut d| d.remove(SERVICE_TOKEN_KEY)).ok_or_else(missing)?;
        let text = String::from_utf8(bytes.0)
            .map_err(|_| cluster_error(format!("{SERVICE_TOKEN_SECRET}: the token is not text")))?;
        ServiceToken::new(&text).map_err(|e| cluster_error(format!("{SERVICE_TOKEN_SECRET}: {e}")))
    }

    /// The client the operations go through.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// How long a scale, rollout or fault may take to settle.
    pub fn ready_timeout(&self) -> Duration {
        self.ready_timeout
    }

    /// The pods API of the namespace.
    pub fn pods(&self) -> &Api<Pod> {
        &self.pods
    }

    fn selector(w: KubeWorkload) -> ListParams {
        ListParams::default().labels(&format!("{NAME_LABEL}={}", w.name()))
    }

    /// The replica count a workload is set to (its scale subresource).
    pub async fn replicas(&self, w: KubeWorkload) -> Result<i32, TargetError> {
        let scale = match w {
            KubeWorkload::Service(_) => self.deployments.get_scale(w.name()).await,
            KubeWorkload::Broker => self.statefulsets.get_scale(w.name()).await,
        };
        let scale = scale.map_err(|e| cluster_error(format!("cannot read the scale of {w}: {e}")))?;
        Ok(scale.spec.and_then(|s| s.replicas).unwrap_or(0))
    }

    /// Set a workload's replica count through its scale subresource (no waiting).
    pub async fn set_replicas(&self, w: KubeWorkload, n: i32) -> Result<(), TargetError> {
        let patch = Patch::Merge(json!({ "spec": { "replicas": n } }));
        let params = PatchParams::default();
        let result = match w {
            KubeWorkload::Service(_) => self.deployments.patch_scale(w.name(), &params, &patch).await.map(drop),
            KubeWorkload::Broker => self.statefulsets.patch_scale(w.name(), &params, &patch).await.map(drop),
        };
        result.map_err(|e| cluster_error(format!("cannot scale {w} to {n}: {e}")))
    }

    /// Wait until `w` runs exactly `n` ready pods and no other (a Deployment must also have
    /// observed its latest spec, so a rollout counts only once it is complete).
    pub async fn wait_ready(&self, w: KubeWorkload, n: i32) -> Result<(), TargetError> {
        self.wait_ready_within(w, n, self.ready_timeout).await
    }

    /// Whether `w` runs exactly `n` ready pods within [`STEP_PATIENCE`] (or the ready timeout,
    /// if shorter). A timeline step waits no longer: a fault in force (the broker down, a
    /// partition) may hold the pods up until a later step undoes it, and a step that waited for
    /// them would hold that undo back. The heal, with no fault in force, waits the full timeout.
    pub async fn ready_soon(&self, w: KubeWorkload, n: i32) -> Result<bool, TargetError> {
        match self.wait_ready_within(w, n, self.step_patience()).await {
            Ok(()) => Ok(true),
            Err(TargetError::TimedOut { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// How long [`Cluster::ready_soon`] waits.
    pub fn step_patience(&self) -> Duration {
        self.ready_timeout.min(STEP_PATIENCE)
    }

    async fn wait_ready_within(&self, w: KubeWorkload, n: i32, timeout: Duration) -> Result<(), TargetError> {
        if let KubeWorkload::Service(_) = w {
            let by_name = ListParams::default().fields(&format!("metadata.name={}", w.name()));
            wait_for(&self.deployments, &by_name, &format!("{w} rolled out with {n} replicas"), timeout, |ds| {
                ds.iter().any(|d| deployment_settled(d, n))
            })
            .await?;
        }
        wait_for(&self.pods, &Self::selector(w), &format!("{w} with {n} ready pods"), timeout, |pods| {
            pods_settled(pods, n)
        })
        .await
    }

    /// Scale and wait until the new count is ready.
    pub async fn scale(&self, w: KubeWorkload, n: i32) -> Result<(), TargetError> {
        self.set_replicas(w, n).await?;
        self.wait_ready(w, n).await
    }

    /// The pods of a workload, oldest first.
    pub async fn list_pods(&self, w: KubeWorkload) -> Result<Vec<Pod>, TargetError> {
        let mut pods = self
            .pods
            .list(&Self::selector(w))
            .await
            .map_err(|e| cluster_error(format!("cannot list the pods of {w}: {e}")))?
            .items;
        pods.sort_by(|a, b| {
            let key = |p: &Pod| (p.metadata.creation_timestamp.clone().map(|t| t.0), p.name_any());
            key(a).cmp(&key(b))
        });
        Ok(pods)
    }

    /// Delete one ready pod at once (no grace period): `replica` counts from the oldest, modulo
    /// the pods; without it, the newest. Answers the pod's name, or `None` when there is none.
    pub async fn kill(&self, w: KubeWorkload, replica: Option<usize>) -> Result<Option<String>, TargetError> {
        let ready: Vec<Pod> = self.list_pods(w).await?.into_iter().filter(pod_ready).collect();
        let chosen = match (ready.len(), replica) {
            (0, _) => return Ok(None),
            (n, Some(r)) => &ready[r % n],
            (n, None) => &ready[n - 1],
        };
        let name = chosen.name_any();
        let params = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() };
        self.pods.delete(&name, &params).await.map_err(|e| cluster_error(format!("cannot delete pod {name}: {e}")))?;
        Ok(Some(name))
    }

    /// Roll every pod of a service (a new template annotation); answers the replica count the
    /// rollout ends with. `stamp` tells this rollout apart from earlier ones.
    pub async fn restart(&self, s: ServiceName, stamp: &str) -> Result<i32, TargetError> {
        let w = KubeWorkload::Service(s);
        let n = self.replicas(w).await?;
        let patch = Patch::Merge(json!({
            "spec": { "template": { "metadata": { "annotations": { RESTARTED_AT: stamp } } } }
        }));
        self.deployments
            .patch(s.as_str(), &PatchParams::default(), &patch)
            .await
            .map_err(|e| cluster_error(format!("cannot restart {s}: {e}")))?;
        Ok(n)
    }

    /// The logs of every pod of a workload: (pod, text).
    pub async fn logs(&self, w: KubeWorkload) -> Result<Vec<(String, String)>, TargetError> {
        let mut out = Vec::new();
        for pod in self.list_pods(w).await? {
            let name = pod.name_any();
            let text = self
                .pods
                .logs(&name, &LogParams::default())
                .await
                .unwrap_or_else(|e| format!("(no logs of {name}: {e})\n"));
            out.push((name, text));
        }
        Ok(out)
    }
}

/// Replica counts recorded before a run changed them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded(pub BTreeMap<KubeWorkload, i32>);

impl Recorded {
    /// Read the replica count of every workload. Fails, naming it, when one is missing.
    pub async fn read(cluster: &Cluster) -> Result<Recorded, TargetError> {
        let mut counts = BTreeMap::new();
        for w in KubeWorkload::all() {
            let n = cluster.replicas(w).await.map_err(|e| {
                cluster_error(format!("{e}\n(is LastMile deployed? `kubectl apply -k k8s/`, see docs/real-world.md)"))
            })?;
            counts.insert(w, n);
        }
        Ok(Recorded(counts))
    }

    /// Put every count back and wait until each is ready. Goes on past a failing workload so
    /// as much as possible is restored; the error names every failure.
    pub async fn restore(&self, cluster: &Cluster) -> Result<String, TargetError> {
        let mut failures = Vec::new();
        for (w, n) in &self.0 {
            if let Err(e) = cluster.set_replicas(*w, *n).await {
                failures.push(e);
            }
        }
        // The broker first: the services' readiness depends on it.
        let mut order: Vec<(&KubeWorkload, &i32)> = self.0.iter().collect();
        order.sort_by_key(|(w, _)| **w != KubeWorkload::Broker);
        for (w, n) in order {
            if let Err(e) = cluster.wait_ready(*w, *n).await {
                failures.push(e);
            }
        }
        let counts: Vec<String> = self.0.iter().map(|(w, n)| format!("{w}={n}")).collect();
        if failures.is_empty() {
            Ok(format!("replicas restored: {}", counts.join(" ")))
        } else {
            Err(TargetError::Several(failures))
        }
    }

    /// `kubectl` commands that put the counts back by hand.
    pub fn manual_commands(&self, namespace: &str) -> Vec<String> {
        self.0
            .iter()
            .map(|(w, n)| {
                let kind = if *w == KubeWorkload::Broker { "statefulset" } else { "deployment" };
                format!("kubectl -n {namespace} scale {kind}/{w} --replicas={n}")
            })
            .collect()
    }
}

/// The run a [`KubeTarget`] serves, known before it changes anything.
#[derive(Debug, Clone)]
pub struct KubeRun {
    /// The run's id: names and labels every Chaos Mesh object it creates.
    pub id: String,
    /// Whether its timeline has pause or network-fault steps (Chaos Mesh must then be installed).
    pub needs_chaos_mesh: bool,
}

impl KubeRun {
    /// A new run (a fresh id) of `timeline`.
    pub fn new(timeline: &[TimelineStep]) -> KubeRun {
        KubeRun {
            id: lastmile_platform::clock::new_id(),
            needs_chaos_mesh: timeline.iter().any(|s| chaos_mesh::needs_chaos_mesh(s.action)),
        }
    }
}

/// A Chaos Mesh object in force, and the step it carries out (its undo deletes it).
#[derive(Debug, Clone)]
struct ActiveChaos {
    step: TimelineStep,
    object: ChaosObject,
}

/// LastMile on a Kubernetes cluster, as a scenario target.
pub struct KubeTarget {
    cluster: Cluster,
    namespace: String,
    recorded: Recorded,
    forwarder: Forwarder,
    /// Whether the broker is scaled down by a `broker-restart` not undone yet.
    broker_down: bool,
    /// Rollouts so far (tells restart annotations apart).
    restarts: u64,
    /// The deployment's service token, for the harness's reads of internal endpoints.
    token: ServiceToken,
    /// The run: its id labels the Chaos Mesh objects, so the cleanup finds every one.
    run: KubeRun,
    /// Chaos Mesh's objects in the namespace.
    chaos: ChaosMesh,
    /// Objects created and not deleted yet, oldest first.
    active_chaos: Vec<ActiveChaos>,
    /// Steps applied so far: the next step's index, in its object's name.
    steps_applied: usize,
}

impl KubeTarget {
    /// What the target can do: everything but crash points, poison messages and disk stalls
    /// (no hook inside a process); pauses and network faults through Chaos Mesh.
    pub fn can(action: Action) -> bool {
        !matches!(action, Action::Crash | Action::Poison | Action::DiskStall)
    }

    /// Set each service to `replicas` (left out: 1), wait until all are ready and start the
    /// port-forwards. `recorded` holds the counts read before (see [`Recorded::read`]); when
    /// anything fails, they are put back before the error is returned. When `run` needs Chaos
    /// Mesh and the cluster lacks it, fails first, having changed nothing.
    pub async fn start(
        cluster: Cluster,
        recorded: Recorded,
        namespace: &str,
        replicas: &BTreeMap<ServiceName, usize>,
        run: KubeRun,
    ) -> Result<KubeTarget, TargetError> {
        let chaos = ChaosMesh::new(cluster.client().clone(), namespace, cluster.ready_timeout());
        if run.needs_chaos_mesh {
            chaos.require_installed().await?;
        }
        let token = cluster.service_token().await?;
        let forwarder = Forwarder::start(cluster.pods().clone(), None).await?;
        let mut target = KubeTarget {
            token,
            cluster,
            namespace: namespace.to_string(),
            recorded,
            forwarder,
            broker_down: false,
            restarts: 0,
            run,
            chaos,
            active_chaos: Vec::new(),
            steps_applied: 0,
        };
        if let Err(e) = target.set_services(replicas).await {
            let restored = target.restore().await;
            return Err(match restored {
                Ok(restored) => TargetError::RolledBack { cause: Box::new(e), restored },
                Err(r) => TargetError::RollbackFailed { cause: Box::new(e), rollback: Box::new(r) },
            });
        }
        Ok(target)
    }

    /// The replica counts recorded before the run.
    pub fn recorded(&self) -> &Recorded {
        &self.recorded
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    async fn set_services(&mut self, replicas: &BTreeMap<ServiceName, usize>) -> Result<(), TargetError> {
        for s in ServiceName::ALL {
            let n = replicas.get(&s).copied().unwrap_or(1) as i32;
            self.cluster.set_replicas(KubeWorkload::Service(s), n).await?;
        }
        if self.cluster.replicas(KubeWorkload::Broker).await? == 0 {
            self.cluster.set_replicas(KubeWorkload::Broker, 1).await?;
        }
        for s in ServiceName::ALL {
            let n = replicas.get(&s).copied().unwrap_or(1) as i32;
            self.cluster.wait_ready(KubeWorkload::Service(s), n).await?;
        }
        self.forwarder.refresh().await
    }

    /// The run's id (its Chaos Mesh objects carry it in their `lastmile.run` label).
    pub fn run_id(&self) -> &str {
        &self.run.id
    }

    /// Delete every Chaos Mesh object of the run, then put every recorded replica count back
    /// and wait until each is ready. Goes on past a failure; the error names every one.
    pub async fn restore(&mut self) -> Result<String, TargetError> {
        let cleared = self.clear_chaos().await;
        let restored = self.recorded.restore(&self.cluster).await;
        self.broker_down = false;
        match (cleared, restored) {
            (Ok(cleared), Ok(restored)) => {
                Ok([cleared, Some(restored)].into_iter().flatten().collect::<Vec<_>>().join("; "))
            }
            (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e),
            (Err(c), Err(r)) => Err(TargetError::Several(vec![c, r])),
        }
    }

    /// Delete every Chaos Mesh object of the run (listed by its label, so also one whose
    /// creation was interrupted). Answers what was deleted, `None` when the run needs none.
    async fn clear_chaos(&mut self) -> Result<Option<String>, TargetError> {
        if !self.run.needs_chaos_mesh && self.active_chaos.is_empty() {
            return Ok(None);
        }
        let deleted = self.chaos.delete_run(&self.run.id).await?;
        self.active_chaos.clear();
        Ok(Some(if deleted.is_empty() {
            "no Chaos Mesh object left".to_string()
        } else {
            format!("deleted {}", deleted.join(" "))
        }))
    }

    /// `kubectl` commands that undo the run by hand: delete its Chaos Mesh objects, put the
    /// replica counts back.
    pub fn manual_commands(&self) -> Vec<String> {
        let mut commands = Vec::new();
        if self.run.needs_chaos_mesh {
            commands.push(self.chaos.manual_command(&self.run.id));
        }
        commands.extend(self.recorded.manual_commands(&self.namespace));
        commands
    }

    /// Create the Chaos Mesh object of `step` (step `index` of the run) and wait until it is in force.
    async fn inject(&mut self, step: &TimelineStep, index: usize) -> Result<String, TargetError> {
        let mut pods = Pods::All;
        let mut chosen = String::new();
        if matches!(step.action, Action::Pause | Action::Partition) {
            let s = step_service(step)?;
            let all = self.cluster.list_pods(KubeWorkload::Service(s)).await?;
            if !all.iter().any(pod_ready) {
                return Ok(format!("{s} has no ready pod to {}", format!("{:?}", step.action).to_lowercase()));
            }
            if let Some(r) = step.replica {
                let pod = chaos_mesh::replica_pod(&all, r).expect("a ready pod exists");
                chosen = format!(" (pod {pod})");
                pods = Pods::Named(pod);
            }
        }
        let object = ChaosObject::for_step(step, &self.run.id, index, &self.namespace, &pods)?;
        self.chaos.create(&object).await?;
        let done = format!("{} {} in force{chosen}", object.kind.kind(), object.name);
        self.active_chaos.push(ActiveChaos { step: step.clone(), object });
        Ok(done)
    }

    /// Give the `n` pods of `s` [`Cluster::step_patience`] to be ready (a step waits no longer);
    /// what the step's outcome says of them.
    async fn readiness(&self, s: ServiceName, n: i32) -> Result<String, TargetError> {
        Ok(match self.cluster.ready_soon(KubeWorkload::Service(s), n).await? {
            true => "all ready".into(),
            false => format!(
                "not all ready within {}s: the controller carries on and the pods join when ready",
                self.cluster.step_patience().as_secs_f64()
            ),
        })
    }

    /// Delete the object `step` created (the oldest such, when a step repeats) and wait until
    /// the fault is over; after a pause, a while for the service's pods to be ready again.
    async fn recover(&mut self, step: &TimelineStep) -> Result<String, TargetError> {
        let Some(at) = self.active_chaos.iter().position(|a| &a.step == step) else {
            return Ok("no Chaos Mesh object to delete".into());
        };
        let active = self.active_chaos[at].clone();
        self.chaos.delete(active.object.kind, &active.object.name).await?;
        self.active_chaos.remove(at);
        let mut done = format!("deleted {} {}", active.object.kind.kind(), active.object.name);
        if step.action == Action::Pause {
            let s = step_service(step)?;
            let n = self.cluster.replicas(KubeWorkload::Service(s)).await?;
            done.push_str(&format!("; {s} back to {n} pods, {}", self.readiness(s, n).await?));
        }
        Ok(done)
    }

    /// The logs of every pod of every workload: (pod, text).
    pub async fn all_logs(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for w in KubeWorkload::all() {
            match self.cluster.logs(w).await {
                Ok(logs) => out.extend(logs),
                Err(e) => out.push((w.to_string(), e.to_string())),
            }
        }
        out
    }
}

impl Target for KubeTarget {
    fn spawn_client<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        tokio::spawn(future)
    }

    fn endpoints(&self) -> Endpoints {
        crate::endpoints(|s| self.forwarder.url(s), Some(self.token.clone()))
    }

    fn replica_urls(&self, service: ServiceName) -> Vec<(String, String)> {
        self.forwarder.replica_urls(service)
    }

    fn supports(&self, action: Action) -> bool {
        KubeTarget::can(action)
    }

    async fn running(&self, service: ServiceName) -> Result<usize, TargetError> {
        let pods = self.cluster.list_pods(KubeWorkload::Service(service)).await?;
        Ok(pods.iter().filter(|p| pod_ready(p)).count())
    }

    fn progress(&self, line: &dyn Fn() -> String) {
        println!("  {}", line());
    }

    async fn apply(&mut self, step: &TimelineStep) -> Result<String, TargetError> {
        let index = self.steps_applied;
        self.steps_applied += 1;
        let done = match step.action {
            Action::Scale => {
                let s = step_service(step)?;
                let n = TargetError::required(step.replicas, "scale", "replicas")?;
                self.cluster.set_replicas(KubeWorkload::Service(s), n as i32).await?;
                format!("{s} scaled to {n}, {}", self.readiness(s, n as i32).await?)
            }
            Action::Kill => {
                let s = step_service(step)?;
                match self.cluster.kill(KubeWorkload::Service(s), step.replica).await? {
                    Some(pod) => format!("deleted pod {pod} of {s}"),
                    None => format!("{s} has no ready pod to kill"),
                }
            }
            // Both are the Deployment controller's rollout: a rolling update for the stateless
            // services (one pod at a time up to 3 replicas, with the default 25 % surge and
            // unavailability), stop-then-start for the journal writers (`strategy: Recreate`).
            Action::Restart | Action::Rollout => {
                let s = step_service(step)?;
                self.restarts += 1;
                let stamp = format!("{}-{}", lastmile_platform::clock::now_ms(), self.restarts);
                let n = self.cluster.restart(s, &stamp).await?;
                format!("{s} rolled out again, {}", self.readiness(s, n).await?)
            }
            action if chaos_mesh::needs_chaos_mesh(action) => self.inject(step, index).await?,
            Action::BrokerRestart => {
                self.cluster.scale(KubeWorkload::Broker, 0).await?;
                self.broker_down = true;
                "broker scaled to 0".to_string()
            }
            action => return Err(TargetError::Unsupported { action, target: "kube" }),
        };
        self.forwarder.refresh().await?;
        Ok(done)
    }

    async fn undo(&mut self, step: &TimelineStep) -> Result<String, TargetError> {
        let done = match step.action {
            Action::Kill => {
                // The Deployment has already replaced the pod; give the replacement a while.
                let s = step_service(step)?;
                let n = self.cluster.replicas(KubeWorkload::Service(s)).await?;
                format!("{s} back to {n} pods, {}", self.readiness(s, n).await?)
            }
            Action::BrokerRestart => {
                let n = self.recorded.0.get(&KubeWorkload::Broker).copied().unwrap_or(1).max(1);
                self.cluster.scale(KubeWorkload::Broker, n).await?;
                self.broker_down = false;
                format!("broker back to {n}")
            }
            action if chaos_mesh::needs_chaos_mesh(action) => self.recover(step).await?,
            _ => return Ok("nothing to undo".into()),
        };
        self.forwarder.refresh().await?;
        Ok(done)
    }

    async fn heal(&mut self, replicas: &BTreeMap<ServiceName, usize>) -> Result<String, TargetError> {
        let cleared = self.clear_chaos().await?;
        if self.broker_down {
            let n = self.recorded.0.get(&KubeWorkload::Broker).copied().unwrap_or(1).max(1);
            self.cluster.scale(KubeWorkload::Broker, n).await?;
            self.broker_down = false;
        }
        self.set_services(replicas).await?;
        let done: Vec<String> = replicas.iter().map(|(s, n)| format!("{s}={n}")).collect();
        let cleared = cleared.map(|c| format!("; {c}")).unwrap_or_default();
        Ok(format!("healed; replicas {}{cleared}", done.join(" ")))
    }

    async fn logs(&self, service: ServiceName) -> Result<Vec<(String, String)>, TargetError> {
        self.cluster.logs(KubeWorkload::Service(service)).await
    }
}
