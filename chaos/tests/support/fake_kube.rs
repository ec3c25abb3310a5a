//! An in-process Kubernetes API server for the kube target's tests: a real HTTP server on
//! loopback (so the `kube` client runs its whole stack: requests, watches, websocket upgrades)
//! over a small stateful model of what the target touches.
//!
//! - Deployments and StatefulSets with a `scale` subresource (GET, merge PATCH), merge PATCH of a
//!   Deployment (template annotations: a rollout), list and watch with `fieldSelector`
//!   `metadata.name=` and `labelSelector` (`k=v` or `k`), resource versions, watch replay;
//! - a controller loop playing the Deployment/StatefulSet controllers and the kubelet: it creates
//!   pods up to the spec, terminates the newest beyond it, replaces deleted pods, replaces every
//!   pod on a template change, makes pods ready after a few ticks (never, for a workload told
//!   so), and keeps each workload's status (`observedGeneration`, `replicas`, `readyReplicas`,
//!   `updatedReplicas`) up to date;
//! - pods: list, watch, delete, `log`, and `portforward` (the websocket channel protocol) to a
//!   tiny HTTP server each pod runs that answers every path with `{"pod": "<name>"}`;
//! - Chaos Mesh (`chaos-mesh.org/v1alpha1`): API discovery (or 404, when told it is not
//!   installed), create/get/list (`labelSelector`, `fieldSelector`, watch)/delete of
//!   `networkchaos` and `podchaos`, each object marked injected at once, every create and delete
//!   recorded in order; creation answering 500 when told so;
//! - Jobs (`batch/v1`, Indexed, or NonIndexed with one completion): create, get, list/watch by
//!   name, delete with a `propagationPolicy` (Background/Foreground take the pods along), and a
//!   Job controller that runs each index as a pod (labels and `JOB_COMPLETION_INDEX` as
//!   Kubernetes sets them) whose end and log a test hook decides, retrying up to
//!   `backoffLimitPerIndex` (a NonIndexed Job: `backoffLimit`), honouring `parallelism` and
//!   `maxFailedIndexes`, keeping `completedIndexes`/`failedIndexes`; and ConfigMaps (create,
//!   get, delete); creation of a Job answering 500 when told so;
//! - faults for the tests: a workload whose scale PATCH answers 500, one whose pods never get
//!   ready; and a record of every scale PATCH per workload.
//!
//! Not a general API server: one namespace, the resources above, and the controller's rules are
//! a simplification (a rollout replaces every pod at once).

#![allow(dead_code)] // each test binary uses part of it

use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast;

/// Controller ticks.
const TICK: Duration = Duration::from_millis(20);
/// Ticks until a new pod is ready; ticks a terminating pod lingers.
const READY_AFTER: u32 = 5;
const TERMINATE_AFTER: u32 = 3;

#[derive(Clone, Debug)]
struct Event {
    rv: u64,
    kind: &'static str,
    kind_type: &'static str,
    object: Value,
}

struct Workload {
    kind: &'static str, // "deployments" | "statefulsets"
    object: Value,
    port: u16,
}

struct PodState {
    object: Value,
    owner: String,
    template: String,
    age: u32,
    terminating_for: Option<u32>,
    backend: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Model {
    rv: u64,
    clock: u64,
    pod_seq: u64,
    workloads: BTreeMap<String, Workload>,
    pods: BTreeMap<String, PodState>,
    events: Vec<Event>,
    fail_scale: BTreeSet<String>,
    never_ready: BTreeSet<String>,
    scale_patches: BTreeMap<String, Vec<i32>>,
    deleted_pods: Vec<String>,
    /// The service token's Secret was never applied.
    no_token_secret: bool,
    /// Chaos Mesh's discovery and objects (the Chaos Mesh block at the end of the file).
    chaos_mesh: ChaosMeshModel,
    /// Jobs, their controller's state, and ConfigMaps (the Jobs block at the end of the file).
    jobs: JobsModel,
}

struct Shared {
    model: Mutex<Model>,
    events: broadcast::Sender<Event>,
}

/// The fake API server; dropping it stops nothing (tests are short-lived processes).
#[derive(Clone)]
pub struct FakeKube {
    shared: Arc<Shared>,
    /// Where it listens.
    pub addr: SocketAddr,
}

fn timestamp(clock: u64) -> String {
    format!("2026-01-01T{:02}:{:02}:{:02}Z", (clock / 3600) % 24, (clock / 60) % 60, clock % 60)
}

impl Model {
    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn publish(
        &mut self,
        shared_tx: &broadcast::Sender<Event>,
        kind: &'static str,
        kind_type: &'static str,
        mut object: Value,
    ) {
        let rv = self.next_rv();
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let event = Event { rv, kind, kind_type, object };
        self.events.push(event.clone());
        let _ = shared_tx.send(event);
    }

    fn template_of(w: &Workload) -> String {
        w.object["spec"]["template"].to_string()
    }

    fn pod_ready(p: &PodState) -> bool {
        p.terminating_for.is_none()
            && p.object["status"]["conditions"].as_array().is_some_and(|cs| cs.iter().any(|c| c["status"] == "True"))
    }
}

/// Answer every path with the pod's name (and `/ready`, `/health` with 200).
async fn pod_server(name: String) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().fallback(move || {
        let name = name.clone();
        async move { axum::Json(json!({ "pod": name })) }
    });
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, server)
}

impl FakeKube {
    /// Start with the five services' Deployments at `replicas` each (and RabbitMQ's StatefulSet
    /// at 1), everything ready.
    pub async fn start(replicas: &[(&str, i32)]) -> FakeKube {
        let (tx, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared { model: Mutex::new(Model::default()), events: tx });
        {
            let mut m = shared.model.lock().unwrap();
            for (i, (name, n)) in replicas.iter().enumerate() {
                let kind = if *name == "rabbitmq" { "statefulsets" } else { "deployments" };
                let port = 8081 + i as u16;
                let object = json!({
                    "metadata": { "name": name, "namespace": "lastmile", "generation": 1,
                                  "labels": { "app.kubernetes.io/name": name } },
                    "spec": {
                        "replicas": n,
                        "selector": { "matchLabels": { "app.kubernetes.io/name": name } },
                        "template": {
                            "metadata": { "labels": { "app.kubernetes.io/name": name } },
                            "spec": { "containers": [ { "name": name, "image": "lastmile:dev",
                                "ports": [ { "name": "http", "containerPort": port } ] } ] }
                        }
                    },
                    "status": {}
                });
                m.workloads.insert(name.to_string(), Workload { kind, object, port });
            }
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/apis/apps/v1/namespaces/{ns}/{kind}", get(list_workloads))
            .route("/apis/apps/v1/namespaces/{ns}/{kind}/{name}", get(get_workload).patch(patch_workload))
            .route("/apis/apps/v1/namespaces/{ns}/{kind}/{name}/scale", get(get_scale).patch(patch_scale))
            .route("/api/v1/namespaces/{ns}/pods", get(list_pods))
            .route("/api/v1/namespaces/{ns}/pods/{name}", axum::routing::delete(delete_pod))
            .route("/api/v1/namespaces/{ns}/pods/{name}/log", get(pod_log))
            .route("/api/v1/namespaces/{ns}/pods/{name}/portforward", get(portforward))
            .route("/api/v1/namespaces/{ns}/secrets/{name}", get(get_secret))
            .merge(chaos_mesh_routes())
            .merge(jobs_routes())
            .with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let fake = FakeKube { shared, addr };
        let controller = fake.clone();
        tokio::spawn(async move {
            loop {
                controller.tick().await;
                tokio::time::sleep(TICK).await;
            }
        });
        // Settle: everything at its count and ready.
        for _ in 0..200 {
            if fake.settled() {
                break;
            }
            tokio::time::sleep(TICK).await;
        }
        assert!(fake.settled(), "the fake cluster did not settle");
        fake
    }

    /// The usual LastMile deployment: every service and the broker at 1.
    pub async fn lastmile(matching: i32) -> FakeKube {
        FakeKube::start(&[
            ("user-service", 1),
            ("location-service", 1),
            ("trip-service", 1),
            ("matching-service", matching),
            ("notification-service", 1),
            ("rabbitmq", 1),
        ])
        .await
    }

    /// A kubeconfig file pointing at this server, namespace `lastmile`.
    pub fn kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: lastmile\ncurrent-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
            self.addr
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A client for this server.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(format!("http://{}", self.addr).parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    /// A workload's scale PATCHes will answer 500.
    pub fn fail_scale(&self, name: &str) {
        self.shared.model.lock().unwrap().fail_scale.insert(name.to_string());
    }

    /// A workload's new pods never get ready.
    pub fn never_ready(&self, name: &str) {
        self.shared.model.lock().unwrap().never_ready.insert(name.to_string());
    }

    /// Forget the service token's Secret (a deployment applied without `k8s/make-secret.sh`).
    pub fn drop_token_secret(&self) {
        self.shared.model.lock().unwrap().no_token_secret = true;
    }

    /// A workload's spec replicas.
    pub fn replicas(&self, name: &str) -> i32 {
        let m = self.shared.model.lock().unwrap();
        m.workloads[name].object["spec"]["replicas"].as_i64().unwrap() as i32
    }

    /// Every replica count a scale PATCH asked of a workload, in order.
    pub fn scale_patches(&self, name: &str) -> Vec<i32> {
        self.shared.model.lock().unwrap().scale_patches.get(name).cloned().unwrap_or_default()
    }

    /// A workload's pod names (terminating ones included), oldest first.
    pub fn pods(&self, name: &str) -> Vec<String> {
        let m = self.shared.model.lock().unwrap();
        m.pods.iter().filter(|(_, p)| p.owner == name).map(|(n, _)| n.clone()).collect()
    }

    /// A workload's ready pod names.
    pub fn ready_pods(&self, name: &str) -> Vec<String> {
        let m = self.shared.model.lock().unwrap();
        m.pods.iter().filter(|(_, p)| p.owner == name && Model::pod_ready(p)).map(|(n, _)| n.clone()).collect()
    }

    /// Pods deleted through the API.
    pub fn deleted_pods(&self) -> Vec<String> {
        self.shared.model.lock().unwrap().deleted_pods.clone()
    }

    /// A Deployment's pod-template annotations.
    pub fn template_annotations(&self, name: &str) -> Value {
        let m = self.shared.model.lock().unwrap();
        m.workloads[name].object["spec"]["template"]["metadata"]["annotations"].clone()
    }

    /// Whether every workload runs exactly its spec's pods, all ready.
    pub fn settled(&self) -> bool {
        let m = self.shared.model.lock().unwrap();
        m.workloads.iter().all(|(name, w)| {
            let want = w.object["spec"]["replicas"].as_i64().unwrap_or(1) as usize;
            let pods: Vec<&PodState> = m.pods.values().filter(|p| &p.owner == name).collect();
            pods.len() == want && pods.iter().all(|p| Model::pod_ready(p))
        })
    }

    /// One round of the controllers and the kubelet.
    async fn tick(&self) {
        let mut to_start: Vec<(String, String, u16, String)> = Vec::new();
        {
            let mut guard = self.shared.model.lock().unwrap();
            let m = &mut *guard;
            m.clock += 1;
            let tx = &self.shared.events;
            // Terminating pods go away; pods age and get ready.
            let names: Vec<String> = m.pods.keys().cloned().collect();
            for name in names {
                let never = m.never_ready.contains(&m.pods[&name].owner);
                let p = m.pods.get_mut(&name).unwrap();
                p.age += 1;
                if let Some(t) = p.terminating_for.as_mut() {
                    *t += 1;
                    if *t >= TERMINATE_AFTER {
                        let p = m.pods.remove(&name).unwrap();
                        p.server.abort();
                        m.publish(tx, "pods", "DELETED", p.object);
                    }
                } else if p.age >= READY_AFTER && !never && !Model::pod_ready(p) {
                    p.object["status"] = json!({ "phase": "Running",
                        "conditions": [ { "type": "Ready", "status": "True" } ] });
                    let object = p.object.clone();
                    m.publish(tx, "pods", "MODIFIED", object);
                }
            }
            // The controllers: template changes replace pods; counts follow the spec.
            let workloads: Vec<String> = m.workloads.keys().cloned().collect();
            for name in workloads {
                let w = &m.workloads[&name];
                let template = Model::template_of(w);
                let want = w.object["spec"]["replicas"].as_i64().unwrap_or(1) as usize;
                let stale: Vec<String> = m
                    .pods
                    .iter()
                    .filter(|(_, p)| p.owner == name && p.terminating_for.is_none() && p.template != template)
                    .map(|(n, _)| n.clone())
                    .collect();
                let mut live: Vec<String> = m
                    .pods
                    .iter()
                    .filter(|(_, p)| p.owner == name && p.terminating_for.is_none() && p.template == template)
                    .map(|(n, _)| n.clone())
                    .collect();
                for pod in stale.iter().chain(live.iter().skip(want).collect::<Vec<_>>().into_iter().rev()) {
                    let clock = m.clock;
                    let p = m.pods.get_mut(pod).unwrap();
                    p.terminating_for = Some(0);
                    p.object["metadata"]["deletionTimestamp"] = json!(timestamp(clock));
                    let object = p.object.clone();
                    m.publish(tx, "pods", "MODIFIED", object);
                }
                live.truncate(want);
                for _ in live.len()..want {
                    let w = &m.workloads[&name];
                    let pod = if w.kind == "statefulsets" {
                        format!("{name}-{}", (0..).find(|i| !m.pods.contains_key(&format!("{name}-{i}"))).unwrap())
                    } else {
                        m.pod_seq += 1;
                        format!("{name}-{:05}", m.pod_seq)
                    };
                    if m.pods.contains_key(&pod) {
                        continue;
                    }
                    to_start.push((pod, name.clone(), w.port, template.clone()));
                }
                // Status.
                let pods: Vec<&PodState> = m.pods.values().filter(|p| p.owner == name).collect();
                let current: Vec<&&PodState> =
                    pods.iter().filter(|p| p.terminating_for.is_none() && p.template == template).collect();
                let status = json!({
                    "observedGeneration": m.workloads[&name].object["metadata"]["generation"],
                    "replicas": pods.iter().filter(|p| p.terminating_for.is_none()).count(),
                    "updatedReplicas": current.len(),
                    "readyReplicas": current.iter().filter(|p| Model::pod_ready(p)).count(),
                });
                if m.workloads[&name].object["status"] != status {
                    let w = m.workloads.get_mut(&name).unwrap();
                    w.object["status"] = status;
                    let (kind, object) = (w.kind, w.object.clone());
                    m.publish(tx, kind, "MODIFIED", object);
                }
            }
        }
        // New pods (their servers start outside the lock).
        for (pod, owner, port, template) in to_start {
            let (backend, server) = pod_server(pod.clone()).await;
            let mut guard = self.shared.model.lock().unwrap();
            let m = &mut *guard;
            let object = json!({
                "metadata": { "name": pod, "namespace": "lastmile", "creationTimestamp": timestamp(m.clock),
                              "labels": { "app.kubernetes.io/name": owner } },
                "spec": { "containers": [ { "name": owner, "ports": [ { "name": "http", "containerPort": port } ] } ] },
                "status": { "phase": "Pending" }
            });
            m.pods.insert(
                pod.clone(),
                PodState { object: object.clone(), owner, template, age: 0, terminating_for: None, backend, server },
            );
            m.publish(&self.shared.events, "pods", "ADDED", object);
        }
    }
}

fn status(code: StatusCode, message: &str) -> Response {
    // The API server's reasons are CamelCase words (`NotFound`), which clients match on.
    let reason = code.canonical_reason().unwrap_or("Unknown").replace(' ', "");
    let body = json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                       "reason": reason, "code": code.as_u16() });
    (code, axum::Json(body)).into_response()
}

fn matches(object: &Value, query: &HashMap<String, String>) -> bool {
    if let Some(field) = query.get("fieldSelector") {
        if let Some(name) = field.strip_prefix("metadata.name=") {
            if object["metadata"]["name"] != name {
                return false;
            }
        }
    }
    if let Some(labels) = query.get("labelSelector") {
        for term in labels.split(',') {
            let value = match term.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (term, None),
            };
            let have = &object["metadata"]["labels"][value.0];
            match value.1 {
                Some(v) if have != v => return false,
                None if have.is_null() => return false,
                _ => {}
            }
        }
    }
    true
}

/// A list, or with `watch=true` a stream of events after `resourceVersion`.
fn list_or_watch(shared: &Arc<Shared>, kind: &'static str, query: HashMap<String, String>) -> Response {
    let m = shared.model.lock().unwrap();
    if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
        let since: u64 = query.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
        let backlog: Vec<Event> = m.events.iter().filter(|e| e.rv > since && e.kind == kind).cloned().collect();
        let live = shared.events.subscribe();
        drop(m);
        let timeout = query.get("timeoutSeconds").and_then(|t| t.parse().ok()).unwrap_or(290u64);
        let q = query.clone();
        let live = futures_util::stream::unfold(live, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(e) => return Some((e, rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        let events = futures_util::stream::iter(backlog)
            .chain(live)
            .filter(move |e| {
                let keep = e.kind == kind && matches(&e.object, &q);
                async move { keep }
            })
            .map(|e| {
                let line = json!({ "type": e.kind_type, "object": e.object }).to_string() + "\n";
                Ok::<Bytes, std::io::Error>(Bytes::from(line))
            })
            .take_until(tokio::time::sleep(Duration::from_secs(timeout)));
        return Response::builder().header("content-type", "application/json").body(Body::from_stream(events)).unwrap();
    }
    let items: Vec<Value> = match kind {
        "pods" => m.pods.values().map(|p| p.object.clone()).filter(|o| matches(o, &query)).collect(),
        _ => m
            .workloads
            .values()
            .filter(|w| w.kind == kind)
            .map(|w| w.object.clone())
            .filter(|o| matches(o, &query))
            .collect(),
    };
    let items: Vec<Value> = items
        .into_iter()
        .map(|mut o| {
            o["metadata"]["resourceVersion"] = json!(m.rv.to_string());
            o
        })
        .collect();
    axum::Json(json!({ "metadata": { "resourceVersion": m.rv.to_string() }, "items": items })).into_response()
}

fn kind_of(kind: &str) -> Option<&'static str> {
    match kind {
        "deployments" => Some("deployments"),
        "statefulsets" => Some("statefulsets"),
        _ => None,
    }
}

async fn list_workloads(
    State(shared): State<Arc<Shared>>,
    Path((_ns, kind)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    match kind_of(&kind) {
        Some(kind) => list_or_watch(&shared, kind, query),
        None => status(StatusCode::NOT_FOUND, &format!("no {kind} here")),
    }
}

async fn get_workload(
    State(shared): State<Arc<Shared>>,
    Path((_ns, _kind, name)): Path<(String, String, String)>,
) -> Response {
    let m = shared.model.lock().unwrap();
    match m.workloads.get(&name) {
        Some(w) => axum::Json(w.object.clone()).into_response(),
        None => status(StatusCode::NOT_FOUND, &format!("{name} not found")),
    }
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

async fn patch_workload(
    State(shared): State<Arc<Shared>>,
    Path((_ns, _kind, name)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let Ok(patch) = serde_json::from_slice::<Value>(&body) else { return status(StatusCode::BAD_REQUEST, "not JSON") };
    let mut guard = shared.model.lock().unwrap();
    let m = &mut *guard;
    let Some(w) = m.workloads.get_mut(&name) else {
        return status(StatusCode::NOT_FOUND, &format!("{name} not found"));
    };
    let before = w.object["spec"].clone();
    merge(&mut w.object, &patch);
    if w.object["spec"] != before {
        let g = w.object["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        w.object["metadata"]["generation"] = json!(g);
    }
    let (kind, object) = (w.kind, w.object.clone());
    m.publish(&shared.events, kind, "MODIFIED", object.clone());
    axum::Json(object).into_response()
}

fn scale_of(name: &str, w: &Workload) -> Value {
    json!({ "apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": { "name": name, "namespace": "lastmile" },
            "spec": { "replicas": w.object["spec"]["replicas"] },
            "status": { "replicas": w.object["status"]["replicas"].as_i64().unwrap_or(0) } })
}

async fn get_scale(
    State(shared): State<Arc<Shared>>,
    Path((_ns, _kind, name)): Path<(String, String, String)>,
) -> Response {
    let m = shared.model.lock().unwrap();
    match m.workloads.get(&name) {
        Some(w) => axum::Json(scale_of(&name, w)).into_response(),
        None => status(StatusCode::NOT_FOUND, &format!("{name} not found")),
    }
}

async fn patch_scale(
    State(shared): State<Arc<Shared>>,
    Path((_ns, _kind, name)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let Ok(patch) = serde_json::from_slice::<Value>(&body) else { return status(StatusCode::BAD_REQUEST, "not JSON") };
    let Some(n) = patch["spec"]["replicas"].as_i64() else {
        return status(StatusCode::UNPROCESSABLE_ENTITY, "spec.replicas missing");
    };
    let mut guard = shared.model.lock().unwrap();
    let m = &mut *guard;
    if m.fail_scale.contains(&name) {
        return status(StatusCode::INTERNAL_SERVER_ERROR, "injected failure");
    }
    m.scale_patches.entry(name.clone()).or_default().push(n as i32);
    let Some(w) = m.workloads.get_mut(&name) else {
        return status(StatusCode::NOT_FOUND, &format!("{name} not found"));
    };
    if w.object["spec"]["replicas"] != json!(n) {
        w.object["spec"]["replicas"] = json!(n);
        let g = w.object["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        w.object["metadata"]["generation"] = json!(g);
    }
    let scale = scale_of(&name, w);
    let (kind, object) = (w.kind, w.object.clone());
    m.publish(&shared.events, kind, "MODIFIED", object);
    axum::Json(scale).into_response()
}

async fn list_pods(
    State(shared): State<Arc<Shared>>,
    Path(_ns): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    list_or_watch(&shared, "pods", query)
}

async fn delete_pod(State(shared): State<Arc<Shared>>, Path((_ns, name)): Path<(String, String)>) -> Response {
    let mut guard = shared.model.lock().unwrap();
    let m = &mut *guard;
    let Some(p) = m.pods.remove(&name) else { return status(StatusCode::NOT_FOUND, &format!("pod {name} not found")) };
    p.server.abort();
    m.deleted_pods.push(name);
    m.publish(&shared.events, "pods", "DELETED", p.object.clone());
    axum::Json(p.object).into_response()
}

async fn pod_log(State(shared): State<Arc<Shared>>, Path((_ns, name)): Path<(String, String)>) -> Response {
    let m = shared.model.lock().unwrap();
    if let Some(log) = m.jobs.logs.get(&name).filter(|_| m.pods.contains_key(&name)) {
        return log.clone().into_response();
    }
    match m.pods.get(&name) {
        Some(p) => format!("log of {name} ({})\n", p.owner).into_response(),
        None => status(StatusCode::NOT_FOUND, &format!("pod {name} not found")),
    }
}

/// The port-forward websocket: channel 0 carries the data of the one port asked for, channel 1
/// its errors; each starts with a frame naming the port.
async fn portforward(
    State(shared): State<Arc<Shared>>,
    Path((_ns, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let backend = shared.model.lock().unwrap().pods.get(&name).filter(|p| Model::pod_ready(p)).map(|p| p.backend);
    let Some(backend) = backend else { return status(StatusCode::NOT_FOUND, &format!("pod {name} is not running")) };
    let Some(port) = query.get("ports").and_then(|p| p.parse::<u16>().ok()) else {
        return status(StatusCode::BAD_REQUEST, "ports missing");
    };
    upgrade.protocols(["v4.channel.k8s.io"]).on_upgrade(move |socket| relay(socket, backend, port))
}

async fn relay(mut socket: WebSocket, backend: SocketAddr, port: u16) {
    let [lo, hi] = port.to_le_bytes();
    for channel in [0u8, 1] {
        if socket.send(Message::Binary(Bytes::from(vec![channel, lo, hi]))).await.is_err() {
            return;
        }
    }
    let Ok(mut tcp) = tokio::net::TcpStream::connect(backend).await else { return };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            message = socket.recv() => match message {
                Some(Ok(Message::Binary(data))) if data.first() == Some(&0) => {
                    if tcp.write_all(&data[1..]).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            read = tcp.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
                Ok(n) => {
                    let mut frame = Vec::with_capacity(n + 1);
                    frame.push(0);
                    frame.extend_from_slice(&buf[..n]);
                    if socket.send(Message::Binary(Bytes::from(frame))).await.is_err() {
                        return;
                    }
                }
            },
        }
    }
}

/// The token in the fake's `lastmile-service-token` Secret.
pub const FAKE_SERVICE_TOKEN: &str = "fake-kube-service-token-0123456789";

async fn get_secret(State(shared): State<Arc<Shared>>, Path((ns, name)): Path<(String, String)>) -> Response {
    if name != "lastmile-service-token" || shared.model.lock().unwrap().no_token_secret {
        return status(StatusCode::NOT_FOUND, &format!("secrets \"{name}\" not found"));
    }
    // base64 of FAKE_SERVICE_TOKEN, as the API server sends Secret data.
    let data = "ZmFrZS1rdWJlLXNlcnZpY2UtdG9rZW4tMDEyMzQ1Njc4OQ==";
    axum::Json(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": name, "namespace": ns },
        "data": { "service-token": data }
    }))
    .into_response()
}

// ---- Chaos Mesh: chaos-mesh.org/v1alpha1 NetworkChaos and PodChaos ----------------------------

/// One create or delete of a Chaos Mesh object, as the fake saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChaosOp {
    /// The resource version of its event: orders it against every other change of the fake.
    pub seq: u64,
    /// `create` or `delete`.
    pub op: &'static str,
    /// `networkchaos` or `podchaos`.
    pub plural: String,
    /// The object's name.
    pub name: String,
}

/// Chaos Mesh as the fake serves it: discovery, and the objects as stored (Chaos Mesh's own
/// controller is played by marking every object injected as soon as it is created).
#[derive(Default)]
struct ChaosMeshModel {
    /// The CRDs are not installed: discovery and the resources answer 404.
    missing: bool,
    /// Creating an object answers 500.
    fail_create: bool,
    /// The objects by (plural, name).
    objects: BTreeMap<(String, String), Value>,
    /// Every create and delete, in order.
    ops: Vec<ChaosOp>,
}

fn chaos_plural(plural: &str) -> Option<(&'static str, &'static str)> {
    match plural {
        "networkchaos" => Some(("networkchaos", "NetworkChaos")),
        "podchaos" => Some(("podchaos", "PodChaos")),
        _ => None,
    }
}

fn chaos_mesh_routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/apis/chaos-mesh.org/v1alpha1", get(chaos_discovery))
        .route("/apis/chaos-mesh.org/v1alpha1/namespaces/{ns}/{plural}", get(list_chaos).post(create_chaos))
        .route("/apis/chaos-mesh.org/v1alpha1/namespaces/{ns}/{plural}/{name}", get(get_chaos).delete(delete_chaos))
}

impl FakeKube {
    /// Chaos Mesh is not installed: `chaos-mesh.org/v1alpha1` is not served.
    pub fn uninstall_chaos_mesh(&self) {
        self.shared.model.lock().unwrap().chaos_mesh.missing = true;
    }

    /// Creating a Chaos Mesh object answers 500.
    pub fn fail_chaos_create(&self) {
        self.shared.model.lock().unwrap().chaos_mesh.fail_create = true;
    }

    /// The Chaos Mesh objects of a kind (`networkchaos`, `podchaos`) there are now, by name.
    pub fn chaos_objects(&self, plural: &str) -> BTreeMap<String, Value> {
        let m = self.shared.model.lock().unwrap();
        m.chaos_mesh
            .objects
            .iter()
            .filter(|((p, _), _)| p == plural)
            .map(|((_, n), o)| (n.clone(), o.clone()))
            .collect()
    }

    /// Every create and delete of a Chaos Mesh object, in order.
    pub fn chaos_ops(&self) -> Vec<ChaosOp> {
        self.shared.model.lock().unwrap().chaos_mesh.ops.clone()
    }
}

async fn chaos_discovery(State(shared): State<Arc<Shared>>) -> Response {
    if shared.model.lock().unwrap().chaos_mesh.missing {
        return status(StatusCode::NOT_FOUND, "the server could not find the requested resource");
    }
    let resource = |plural: &str, kind: &str| {
        json!({ "name": plural, "singularName": plural, "namespaced": true, "kind": kind,
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"] })
    };
    axum::Json(json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "chaos-mesh.org/v1alpha1",
        "resources": [resource("networkchaos", "NetworkChaos"), resource("podchaos", "PodChaos")]
    }))
    .into_response()
}

async fn list_chaos(
    State(shared): State<Arc<Shared>>,
    Path((_ns, plural)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some((plural, kind)) = chaos_plural(&plural) else {
        return status(StatusCode::NOT_FOUND, &format!("no {plural} here"));
    };
    if shared.model.lock().unwrap().chaos_mesh.missing {
        return status(StatusCode::NOT_FOUND, "the server could not find the requested resource");
    }
    if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
        return list_or_watch(&shared, plural, query);
    }
    let m = shared.model.lock().unwrap();
    let items: Vec<Value> = m
        .chaos_mesh
        .objects
        .iter()
        .filter(|((p, _), o)| p == plural && matches(o, &query))
        .map(|(_, o)| o.clone())
        .collect();
    axum::Json(json!({ "apiVersion": "chaos-mesh.org/v1alpha1", "kind": format!("{kind}List"),
                       "metadata": { "resourceVersion": m.rv.to_string() }, "items": items }))
    .into_response()
}

async fn get_chaos(
    State(shared): State<Arc<Shared>>,
    Path((_ns, plural, name)): Path<(String, String, String)>,
) -> Response {
    let m = shared.model.lock().unwrap();
    match m.chaos_mesh.objects.get(&(plural.clone(), name.clone())) {
        Some(o) if !m.chaos_mesh.missing => axum::Json(o.clone()).into_response(),
        _ => status(StatusCode::NOT_FOUND, &format!("{plural} \"{name}\" not found")),
    }
}

async fn create_chaos(
    State(shared): State<Arc<Shared>>,
    Path((ns, plural)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let Some((plural, kind)) = chaos_plural(&plural) else {
        return status(StatusCode::NOT_FOUND, &format!("no {plural} here"));
    };
    let Ok(mut object) = serde_json::from_slice::<Value>(&body) else {
        return status(StatusCode::BAD_REQUEST, "not JSON");
    };
    let mut guard = shared.model.lock().unwrap();
    let m = &mut *guard;
    if m.chaos_mesh.missing {
        return status(StatusCode::NOT_FOUND, "the server could not find the requested resource");
    }
    if m.chaos_mesh.fail_create {
        return status(StatusCode::INTERNAL_SERVER_ERROR, "injected failure");
    }
    let Some(name) = object["metadata"]["name"].as_str().map(String::from) else {
        return status(StatusCode::UNPROCESSABLE_ENTITY, "metadata.name missing");
    };
    if object["kind"] != kind || object["apiVersion"] != "chaos-mesh.org/v1alpha1" {
        return status(StatusCode::BAD_REQUEST, &format!("not a chaos-mesh.org/v1alpha1 {kind}"));
    }
    let key = (plural.to_string(), name.clone());
    if m.chaos_mesh.objects.contains_key(&key) {
        return status(StatusCode::CONFLICT, &format!("{plural} \"{name}\" already exists"));
    }
    object["metadata"]["namespace"] = json!(ns);
    object["metadata"]["creationTimestamp"] = json!(timestamp(m.clock));
    object["status"] = json!({ "conditions": [
        { "type": "Selected", "status": "True" }, { "type": "AllInjected", "status": "True" } ] });
    m.publish(&shared.events, plural, "ADDED", object.clone());
    object["metadata"]["resourceVersion"] = json!(m.rv.to_string());
    m.chaos_mesh.ops.push(ChaosOp { seq: m.rv, op: "create", plural: plural.to_string(), name });
    m.chaos_mesh.objects.insert(key, object.clone());
    (StatusCode::CREATED, axum::Json(object)).into_response()
}

async fn delete_chaos(
    State(shared): State<Arc<Shared>>,
    Path((_ns, plural, name)): Path<(String, String, String)>,
) -> Response {
    let Some((plural, _)) = chaos_plural(&plural) else {
        return status(StatusCode::NOT_FOUND, &format!("no {plural} here"));
    };
    let mut guard = shared.model.lock().unwrap();
    let m = &mut *guard;
    let found =
        if m.chaos_mesh.missing { None } else { m.chaos_mesh.objects.remove(&(plural.to_string(), name.clone())) };
    let Some(object) = found else {
        return status(StatusCode::NOT_FOUND, &format!("{plural} \"{name}\" not found"));
    };
    m.publish(&shared.events, plural, "DELETED", object.clone());
    m.chaos_mesh.ops.push(ChaosOp { seq: m.rv, op: "delete", plural: plural.to_string(), name });
    axum::Json(object).into_response()
}

// ---- Jobs (batch/v1) and ConfigMaps: what `lastmile sweep --kube` and `load --target kube` create

/// One pod of a Job, as the fake's Job controller hands it to the test's hook.
#[derive(Debug, Clone)]
pub struct JobPodRun {
    /// The Job's name.
    pub job: String,
    /// The completion index (0 for the one pod of a NonIndexed Job).
    pub index: u64,
    /// 0 for the first pod of the index, then one more per retry.
    pub attempt: u32,
    /// The pod as created (its container's command and env, `JOB_COMPLETION_INDEX` included).
    pub pod: Value,
}

/// How a Job's pod ended: its exit code and what it printed.
#[derive(Debug, Clone)]
pub struct JobPodOutcome {
    /// 0: the index completed; anything else: the pod failed.
    pub exit_code: i32,
    /// The pod's log.
    pub log: String,
}

/// Decides how each Job pod ends; `None` keeps it running (asked again every tick). Called with
/// the fake's lock held: it must not call back into the fake.
type JobPodHook = Arc<dyn Fn(&JobPodRun) -> Option<JobPodOutcome> + Send + Sync>;

/// Ticks a Job pod runs before the hook is asked how it ends.
const JOB_POD_TICKS: u32 = 3;

#[derive(Default)]
struct JobsModel {
    /// The Jobs there are now, by name.
    jobs: BTreeMap<String, JobRun>,
    /// The ConfigMaps there are now, by name.
    config_maps: BTreeMap<String, Value>,
    /// Every Job as it was created, in order.
    created: Vec<Value>,
    /// Every Job deletion: (name, propagationPolicy).
    job_deletions: Vec<(String, Option<String>)>,
    /// Every ConfigMap deletion.
    config_map_deletions: Vec<String>,
    /// Every ConfigMap as it was created, in order.
    config_maps_created: Vec<Value>,
    /// Every pod the Job controller finished: (job, index, attempt, exit code).
    pod_runs: Vec<(String, u64, u32, i32)>,
    /// The logs of finished Job pods, by pod name.
    logs: BTreeMap<String, String>,
    hook: Option<JobPodHook>,
    /// Creating a Job answers 500.
    fail_job_create: bool,
    controller_started: bool,
}

struct JobRun {
    object: Value,
    /// `completionMode: Indexed` (else NonIndexed: one completion, retried up to `backoffLimit`).
    indexed: bool,
    indexes: Vec<IndexRun>,
    succeeded_pods: u64,
    failed_pods: u64,
}

#[derive(Clone, Default)]
struct IndexRun {
    attempts: u32,
    failures: u32,
    /// The running pod and the ticks it has run.
    running: Option<(String, u32)>,
    completed: bool,
    failed_for_good: bool,
}

/// `0-2,4`: an index set as the Job status writes it.
fn index_list(indexes: impl Iterator<Item = u64>) -> String {
    let mut parts: Vec<(u64, u64)> = Vec::new();
    for i in indexes {
        match parts.last_mut() {
            Some((_, end)) if *end + 1 == i => *end = i,
            _ => parts.push((i, i)),
        }
    }
    parts.iter().map(|(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect::<Vec<_>>().join(",")
}

fn jobs_routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/apis/batch/v1/namespaces/{ns}/jobs", get(list_jobs).post(create_job))
        .route("/apis/batch/v1/namespaces/{ns}/jobs/{name}", get(get_job).delete(delete_job))
        .route("/api/v1/namespaces/{ns}/configmaps", axum::routing::post(create_config_map))
        .route("/api/v1/namespaces/{ns}/configmaps/{name}", get(get_config_map).delete(delete_config_map))
}

impl FakeKube {
    /// How each Job pod ends (default: exit 0 with an empty log).
    pub fn on_job_pod(&self, hook: impl Fn(&JobPodRun) -> Option<JobPodOutcome> + Send + Sync + 'static) {
        self.shared.model.lock().unwrap().jobs.hook = Some(Arc::new(hook));
    }

    /// Creating a Job answers 500.
    pub fn fail_job_create(&self) {
        self.shared.model.lock().unwrap().jobs.fail_job_create = true;
    }

    /// Every Job as it was created.
    pub fn created_jobs(&self) -> Vec<Value> {
        self.shared.model.lock().unwrap().jobs.created.clone()
    }

    /// The Jobs there are now.
    pub fn jobs(&self) -> Vec<String> {
        self.shared.model.lock().unwrap().jobs.jobs.keys().cloned().collect()
    }

    /// The ConfigMaps there are now, by name.
    pub fn config_maps(&self) -> BTreeMap<String, Value> {
        self.shared.model.lock().unwrap().jobs.config_maps.clone()
    }

    /// Every Job deletion: (name, propagationPolicy).
    pub fn job_deletions(&self) -> Vec<(String, Option<String>)> {
        self.shared.model.lock().unwrap().jobs.job_deletions.clone()
    }

    /// Every ConfigMap as it was created.
    pub fn created_config_maps(&self) -> Vec<Value> {
        self.shared.model.lock().unwrap().jobs.config_maps_created.clone()
    }

    /// Every ConfigMap deletion.
    pub fn config_map_deletions(&self) -> Vec<String> {
        self.shared.model.lock().unwrap().jobs.config_map_deletions.clone()
    }

    /// Every Job pod finished: (job, index, attempt, exit code), in order.
    pub fn job_pod_runs(&self) -> Vec<(String, u64, u32, i32)> {
        self.shared.model.lock().unwrap().jobs.pod_runs.clone()
    }

    /// The pods of a Job there are now.
    pub fn job_pods(&self, job: &str) -> Vec<String> {
        self.pods(job)
    }
}

/// The Job controller: pods up to `parallelism`, a retry per failure up to
/// `backoffLimitPerIndex`, `maxFailedIndexes`, and the status (`completedIndexes`,
/// `failedIndexes`, `active`, `succeeded`, `failed`, a `Complete` or `Failed` condition).
fn job_controller_tick(shared: &Arc<Shared>) {
    let mut guard = shared.model.lock().unwrap();
    let m = &mut *guard;
    let tx = &shared.events;
    let names: Vec<String> = m.jobs.jobs.keys().cloned().collect();
    for name in names {
        let hook = m.jobs.hook.clone();
        let run = m.jobs.jobs.get_mut(&name).unwrap();
        if run.object["status"]["conditions"].as_array().is_some_and(|c| !c.is_empty()) {
            continue;
        }
        let spec = run.object["spec"].clone();
        let int = |key: &str, default: u64| spec[key].as_u64().unwrap_or(default);
        let indexed = run.indexed;
        let parallelism = int("parallelism", 1);
        // Kubernetes' default backoffLimit is 6.
        let backoff = (if indexed { int("backoffLimitPerIndex", 0) } else { int("backoffLimit", 6) }) as u32;
        let max_failed = spec["maxFailedIndexes"].as_u64();
        // Running pods end when the hook says so.
        let mut finished_pods: Vec<(String, i32, String, u64, u32)> = Vec::new();
        for (index, ix) in run.indexes.iter_mut().enumerate() {
            let Some((pod, ticks)) = ix.running.as_mut() else { continue };
            *ticks += 1;
            if *ticks < JOB_POD_TICKS {
                continue;
            }
            let pod_object = m.pods.get(pod.as_str()).map(|p| p.object.clone()).unwrap_or(Value::Null);
            let attempt = ix.attempts - 1;
            let call = JobPodRun { job: name.clone(), index: index as u64, attempt, pod: pod_object };
            let outcome = match &hook {
                Some(hook) => hook(&call),
                None => Some(JobPodOutcome { exit_code: 0, log: String::new() }),
            };
            let Some(outcome) = outcome else { continue };
            if outcome.exit_code == 0 {
                ix.completed = true;
                run.succeeded_pods += 1;
            } else {
                ix.failures += 1;
                run.failed_pods += 1;
                ix.failed_for_good = ix.failures > backoff;
            }
            finished_pods.push((pod.clone(), outcome.exit_code, outcome.log, index as u64, attempt));
            ix.running = None;
        }
        let failed_for_good = run.indexes.iter().filter(|i| i.failed_for_good).count() as u64;
        let over_max = max_failed.is_some_and(|max| failed_for_good > max);
        // New pods for the indexes waiting, up to the parallelism.
        let mut to_start: Vec<(u64, u32)> = Vec::new();
        if !over_max {
            let mut active = run.indexes.iter().filter(|i| i.running.is_some()).count() as u64;
            for (index, ix) in run.indexes.iter_mut().enumerate() {
                if active >= parallelism {
                    break;
                }
                if ix.running.is_none() && !ix.completed && !ix.failed_for_good {
                    let pod = format!("{name}-{index}-{}", ix.attempts);
                    ix.running = Some((pod, 0));
                    to_start.push((index as u64, ix.attempts));
                    ix.attempts += 1;
                    active += 1;
                }
            }
        }
        let template = run.object["spec"]["template"].clone();
        let all_done = run.indexes.iter().all(|i| i.completed || i.failed_for_good);
        let mut status = json!({
            "active": run.indexes.iter().filter(|i| i.running.is_some()).count(),
            "succeeded": run.succeeded_pods,
            "failed": run.failed_pods,
        });
        if indexed {
            status["completedIndexes"] =
                json!(index_list(run.indexes.iter().enumerate().filter(|(_, i)| i.completed).map(|(n, _)| n as u64)));
            status["failedIndexes"] = json!(index_list(
                run.indexes.iter().enumerate().filter(|(_, i)| i.failed_for_good).map(|(n, _)| n as u64)
            ));
        }
        if over_max || all_done {
            let (kind, reason) = match (over_max, failed_for_good, indexed) {
                (true, _, _) => ("Failed", "MaxFailedIndexesExceeded"),
                (false, 0, _) => ("Complete", "CompletionsReached"),
                (false, _, true) => ("Failed", "FailedIndexes"),
                (false, _, false) => ("Failed", "BackoffLimitExceeded"),
            };
            status["conditions"] = json!([{ "type": kind, "status": "True", "reason": reason }]);
        }
        let changed = run.object["status"] != status;
        run.object["status"] = status;
        let object = run.object.clone();
        // The pods: finished ones get their phase and log, new ones are created.
        for (pod, exit_code, log, index, attempt) in finished_pods {
            m.jobs.pod_runs.push((name.clone(), index, attempt, exit_code));
            m.jobs.logs.insert(pod.clone(), log);
            if let Some(p) = m.pods.get_mut(&pod) {
                let phase = if exit_code == 0 { "Succeeded" } else { "Failed" };
                let container = p.object["spec"]["containers"][0]["name"].clone();
                p.object["status"] = json!({ "phase": phase, "containerStatuses": [ { "name": container,
                    "state": { "terminated": { "exitCode": exit_code } } } ] });
                let object = p.object.clone();
                m.publish(tx, "pods", "MODIFIED", object);
            }
        }
        for (index, attempt) in to_start {
            let pod = format!("{name}-{index}-{attempt}");
            let mut spec = template["spec"].clone();
            let mut labels = template["metadata"]["labels"].clone();
            if !labels.is_object() {
                labels = json!({});
            }
            labels["batch.kubernetes.io/job-name"] = json!(name);
            labels["job-name"] = json!(name);
            let mut annotations = json!({});
            if indexed {
                for c in spec["containers"].as_array_mut().into_iter().flatten() {
                    let env = c["env"].as_array().cloned().unwrap_or_default();
                    let mut env: Vec<Value> = env.into_iter().filter(|e| e["name"] != "JOB_COMPLETION_INDEX").collect();
                    env.push(json!({ "name": "JOB_COMPLETION_INDEX", "value": index.to_string() }));
                    c["env"] = json!(env);
                }
                labels["batch.kubernetes.io/job-completion-index"] = json!(index.to_string());
                annotations["batch.kubernetes.io/job-completion-index"] = json!(index.to_string());
            }
            let object = json!({
                "metadata": { "name": pod, "namespace": "lastmile", "creationTimestamp": timestamp(m.clock),
                              "labels": labels, "annotations": annotations },
                "spec": spec,
                "status": { "phase": "Running" }
            });
            // Not a workload's pod: the workload controller and the kubelet's readiness leave it
            // alone (its owner is in `never_ready`, and no workload has its name).
            m.never_ready.insert(name.clone());
            let state = PodState {
                object: object.clone(),
                owner: name.clone(),
                template: String::new(),
                age: 0,
                terminating_for: None,
                backend: SocketAddr::from(([127, 0, 0, 1], 9)),
                server: tokio::spawn(async {}),
            };
            m.pods.insert(pod, state);
            m.publish(tx, "pods", "ADDED", object);
        }
        if changed {
            m.publish(tx, "jobs", "MODIFIED", object);
        }
    }
}

async fn list_jobs(
    State(shared): State<Arc<Shared>>,
    Path(_ns): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
        return list_or_watch(&shared, "jobs", query);
    }
    let m = shared.model.lock().unwrap();
    let items: Vec<Value> = m.jobs.jobs.values().map(|j| j.object.clone()).filter(|o| matches(o, &query)).collect();
    axum::Json(json!({ "apiVersion": "batch/v1", "kind": "JobList",
                       "metadata": { "resourceVersion": m.rv.to_string() }, "items": items }))
    .into_response()
}

async fn get_job(State(shared): State<Arc<Shared>>, Path((_ns, name)): Path<(String, String)>) -> Response {
    let m = shared.model.lock().unwrap();
    match m.jobs.jobs.get(&name) {
        Some(j) => axum::Json(j.object.clone()).into_response(),
        None => status(StatusCode::NOT_FOUND, &format!("jobs.batch \"{name}\" not found")),
    }
}

async fn create_job(State(shared): State<Arc<Shared>>, Path(ns): Path<String>, body: Bytes) -> Response {
    let Ok(mut object) = serde_json::from_slice::<Value>(&body) else {
        return status(StatusCode::BAD_REQUEST, "not JSON");
    };
    let start_controller = {
        let mut guard = shared.model.lock().unwrap();
        let m = &mut *guard;
        if m.jobs.fail_job_create {
            return status(StatusCode::INTERNAL_SERVER_ERROR, "injected failure");
        }
        let Some(name) = object["metadata"]["name"].as_str().map(String::from) else {
            return status(StatusCode::UNPROCESSABLE_ENTITY, "metadata.name missing");
        };
        if m.jobs.jobs.contains_key(&name) {
            return status(StatusCode::CONFLICT, &format!("jobs.batch \"{name}\" already exists"));
        }
        let indexed = object["spec"]["completionMode"] == "Indexed";
        let completions = object["spec"]["completions"].as_u64().unwrap_or(1) as usize;
        if !indexed && (completions != 1 || object["spec"]["parallelism"].as_u64().unwrap_or(1) != 1) {
            return status(StatusCode::UNPROCESSABLE_ENTITY, "the fake runs NonIndexed Jobs of one pod only");
        }
        m.jobs.created.push(object.clone());
        object["metadata"]["namespace"] = json!(ns);
        object["metadata"]["creationTimestamp"] = json!(timestamp(m.clock));
        object["status"] = json!({});
        m.publish(&shared.events, "jobs", "ADDED", object.clone());
        object["metadata"]["resourceVersion"] = json!(m.rv.to_string());
        let run = JobRun {
            object: object.clone(),
            indexed,
            indexes: vec![IndexRun::default(); completions],
            succeeded_pods: 0,
            failed_pods: 0,
        };
        m.jobs.jobs.insert(name, run);
        !std::mem::replace(&mut m.jobs.controller_started, true)
    };
    if start_controller {
        let shared = shared.clone();
        tokio::spawn(async move {
            loop {
                job_controller_tick(&shared);
                tokio::time::sleep(TICK).await;
            }
        });
    }
    (StatusCode::CREATED, axum::Json(object)).into_response()
}

async fn delete_job(
    State(shared): State<Arc<Shared>>,
    Path((_ns, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    // kube sends DeleteOptions as the body; kubectl may use the query.
    let options: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let policy = options["propagationPolicy"].as_str().map(String::from).or(query.get("propagationPolicy").cloned());
    let mut guard = shared.model.lock().unwrap();
    let m = &mut *guard;
    let Some(run) = m.jobs.jobs.remove(&name) else {
        return status(StatusCode::NOT_FOUND, &format!("jobs.batch \"{name}\" not found"));
    };
    m.jobs.job_deletions.push((name.clone(), policy.clone()));
    // Background and Foreground delete the pods with the Job; Orphan (or no policy, the
    // default for Jobs through the API) leaves them.
    if matches!(policy.as_deref(), Some("Background" | "Foreground")) {
        let pods: Vec<String> = m.pods.iter().filter(|(_, p)| p.owner == name).map(|(n, _)| n.clone()).collect();
        for pod in pods {
            let p = m.pods.remove(&pod).unwrap();
            m.publish(&shared.events, "pods", "DELETED", p.object);
        }
    }
    m.publish(&shared.events, "jobs", "DELETED", run.object.clone());
    axum::Json(run.object).into_response()
}

async fn create_config_map(State(shared): State<Arc<Shared>>, Path(ns): Path<String>, body: Bytes) -> Response {
    let Ok(mut object) = serde_json::from_slice::<Value>(&body) else {
        return status(StatusCode::BAD_REQUEST, "not JSON");
    };
    let mut m = shared.model.lock().unwrap();
    let Some(name) = object["metadata"]["name"].as_str().map(String::from) else {
        return status(StatusCode::UNPROCESSABLE_ENTITY, "metadata.name missing");
    };
    if m.jobs.config_maps.contains_key(&name) {
        return status(StatusCode::CONFLICT, &format!("configmaps \"{name}\" already exists"));
    }
    object["metadata"]["namespace"] = json!(ns);
    let rv = m.next_rv();
    object["metadata"]["resourceVersion"] = json!(rv.to_string());
    m.jobs.config_maps_created.push(object.clone());
    m.jobs.config_maps.insert(name, object.clone());
    (StatusCode::CREATED, axum::Json(object)).into_response()
}

async fn get_config_map(State(shared): State<Arc<Shared>>, Path((_ns, name)): Path<(String, String)>) -> Response {
    let m = shared.model.lock().unwrap();
    match m.jobs.config_maps.get(&name) {
        Some(o) => axum::Json(o.clone()).into_response(),
        None => status(StatusCode::NOT_FOUND, &format!("configmaps \"{name}\" not found")),
    }
}

async fn delete_config_map(State(shared): State<Arc<Shared>>, Path((_ns, name)): Path<(String, String)>) -> Response {
    let mut m = shared.model.lock().unwrap();
    match m.jobs.config_maps.remove(&name) {
        Some(o) => {
            m.jobs.config_map_deletions.push(name);
            axum::Json(o).into_response()
        }
        None => status(StatusCode::NOT_FOUND, &format!("configmaps \"{name}\" not found")),
    }
}
