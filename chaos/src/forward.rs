//! Port-forwarding to LastMile's pods through the API server: how a run outside the cluster
//! reaches the services (and what `lastmile port-forward` serves).
//!
//! One local port per service is a small round-robin front: each connection it accepts goes to
//! the next ready pod of the service, over a port-forward of its own, so scaling, killed pods
//! and rollouts change where new connections go (the service clients open a connection per
//! call). One more local port per pod reaches that pod only, for per-replica probes such as the
//! matching replicas' counters. Which pods are ready comes from a list refreshed every second
//! and after every change a run makes.

use crate::kubernetes::{pod_ready, NAME_LABEL};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::ResourceExt;
use lastmile_harness::TargetError;
use lastmile_services::ServiceName;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How often the ready pods are listed again.
const REFRESH: Duration = Duration::from_secs(1);
/// Pods a front tries for one connection before giving up on it.
const ATTEMPTS: usize = 3;

/// A ready pod: its name and the port its service listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyPod {
    /// The pod's name.
    pub name: String,
    /// The container port named `http` (else the first one).
    pub port: u16,
}

fn http_port(pod: &Pod) -> Option<u16> {
    let ports: Vec<_> = pod.spec.as_ref()?.containers.iter().flat_map(|c| c.ports.iter().flatten()).collect();
    let port = ports.iter().find(|p| p.name.as_deref() == Some("http")).or(ports.first())?;
    u16::try_from(port.container_port).ok()
}

/// What the fronts share.
struct Shared {
    pods: Api<Pod>,
    /// Ready pods per service (by the pods' name label), oldest first.
    ready: Mutex<BTreeMap<String, Vec<ReadyPod>>>,
    /// The local port of each pod's own front.
    pod_fronts: Mutex<BTreeMap<String, u16>>,
    /// Connections forwarded per pod (for `lastmile port-forward`'s progress).
    forwarded: Mutex<BTreeMap<String, u64>>,
    failed: AtomicU64,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// Local fronts for every service and pod of LastMile.
pub struct Forwarder {
    shared: Arc<Shared>,
    fronts: BTreeMap<ServiceName, SocketAddr>,
}

impl Forwarder {
    /// Start a front per service: on `base_port`, `base_port + 1`, ... in the order of
    /// [`ServiceName::ALL`], or on free ports when `None`.
    pub async fn start(pods: Api<Pod>, base_port: Option<u16>) -> Result<Forwarder, TargetError> {
        let shared = Arc::new(Shared {
            pods,
            ready: Mutex::new(BTreeMap::new()),
            pod_fronts: Mutex::new(BTreeMap::new()),
            forwarded: Mutex::new(BTreeMap::new()),
            failed: AtomicU64::new(0),
            tasks: Mutex::new(Vec::new()),
        });
        let mut fronts = BTreeMap::new();
        for (i, s) in ServiceName::ALL.into_iter().enumerate() {
            let port = base_port.map_or(0, |b| b + i as u16);
            let cannot_listen = |e| TargetError::Deployment(format!("cannot listen on 127.0.0.1:{port} for {s}: {e}"));
            let listener = TcpListener::bind(("127.0.0.1", port)).await.map_err(cannot_listen)?;
            fronts.insert(s, listener.local_addr().map_err(cannot_listen)?);
            let task = tokio::spawn(front(shared.clone(), listener, Route::Service(s)));
            shared.tasks.lock().expect("not poisoned").push(task);
        }
        let forwarder = Forwarder { shared: shared.clone(), fronts };
        forwarder.refresh().await?;
        let refresher = tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH).await;
                let _ = refresh(&shared).await;
            }
        });
        forwarder.shared.tasks.lock().expect("not poisoned").push(refresher);
        Ok(forwarder)
    }

    /// List the ready pods now.
    pub async fn refresh(&self) -> Result<(), TargetError> {
        refresh(&self.shared).await
    }

    /// The base URL of a service's front.
    pub fn url(&self, service: ServiceName) -> String {
        self.fronts.get(&service).map(|a| format!("http://{a}")).unwrap_or_default()
    }

    /// Each front: (service, address).
    pub fn fronts(&self) -> &BTreeMap<ServiceName, SocketAddr> {
        &self.fronts
    }

    /// The ready pods of a service, oldest first.
    pub fn ready_pods(&self, service: ServiceName) -> Vec<ReadyPod> {
        self.shared.ready.lock().expect("not poisoned").get(service.as_str()).cloned().unwrap_or_default()
    }

    /// Connections forwarded so far, per pod, and connections no pod took.
    pub fn forwarded(&self) -> (BTreeMap<String, u64>, u64) {
        (self.shared.forwarded.lock().expect("not poisoned").clone(), self.shared.failed.load(Ordering::Relaxed))
    }

    /// Each ready pod of a service as (pod, base URL of a front reaching only that pod).
    pub fn replica_urls(&self, service: ServiceName) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for pod in self.ready_pods(service) {
            let mut fronts = self.shared.pod_fronts.lock().expect("not poisoned");
            let port = match fronts.get(&pod.name) {
                Some(port) => *port,
                None => {
                    let Ok(std_listener) = std::net::TcpListener::bind("127.0.0.1:0") else { continue };
                    let Ok(port) = std_listener.local_addr().map(|a| a.port()) else { continue };
                    let _ = std_listener.set_nonblocking(true);
                    let Ok(listener) = TcpListener::from_std(std_listener) else { continue };
                    let task = tokio::spawn(front(self.shared.clone(), listener, Route::Pod(pod.clone())));
                    self.shared.tasks.lock().expect("not poisoned").push(task);
                    fronts.insert(pod.name.clone(), port);
                    port
                }
            };
            out.push((pod.name.clone(), format!("http://127.0.0.1:{port}")));
        }
        out
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        for task in self.shared.tasks.lock().expect("not poisoned").drain(..) {
            task.abort();
        }
    }
}

async fn refresh(shared: &Shared) -> Result<(), TargetError> {
    let pods = shared
        .pods
        .list(&ListParams::default().labels(NAME_LABEL))
        .await
        .map_err(|e| TargetError::Deployment(format!("cannot list pods: {e}")))?
        .items;
    let mut ready: BTreeMap<String, Vec<(Option<String>, ReadyPod)>> = BTreeMap::new();
    for pod in pods.iter().filter(|p| pod_ready(p)) {
        let (Some(service), Some(port)) = (pod.labels().get(NAME_LABEL).cloned(), http_port(pod)) else { continue };
        let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string());
        ready.entry(service).or_default().push((created, ReadyPod { name: pod.name_any(), port }));
    }
    let ready = ready
        .into_iter()
        .map(|(s, mut pods)| {
            pods.sort_by(|a, b| (&a.0, &a.1.name).cmp(&(&b.0, &b.1.name)));
            (s, pods.into_iter().map(|(_, p)| p).collect())
        })
        .collect();
    *shared.ready.lock().expect("not poisoned") = ready;
    Ok(())
}

/// Where a front sends its connections.
#[derive(Debug, Clone)]
enum Route {
    /// The next ready pod of the service.
    Service(ServiceName),
    /// This pod only.
    Pod(ReadyPod),
}

async fn front(shared: Arc<Shared>, listener: TcpListener, route: Route) {
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((connection, _)) = listener.accept().await else {
            // Out of file descriptors, say: wait instead of spinning.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (shared, route, next) = (shared.clone(), route.clone(), next.clone());
        tokio::spawn(async move {
            if !forward(&shared, connection, &route, &next).await {
                shared.failed.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}

/// Carry one connection to a pod; false when no pod took it (the caller's retries take over).
async fn forward(shared: &Shared, mut connection: TcpStream, route: &Route, next: &AtomicUsize) -> bool {
    for attempt in 0..ATTEMPTS {
        let pod = match route {
            Route::Pod(pod) => pod.clone(),
            Route::Service(service) => {
                if attempt > 0 {
                    let _ = refresh(shared).await;
                }
                let ready =
                    shared.ready.lock().expect("not poisoned").get(service.as_str()).cloned().unwrap_or_default();
                if ready.is_empty() {
                    continue;
                }
                ready[next.fetch_add(1, Ordering::Relaxed) % ready.len()].clone()
            }
        };
        let Ok(mut forwarder) = shared.pods.portforward(&pod.name, &[pod.port]).await else { continue };
        let Some(mut upstream) = forwarder.take_stream(pod.port) else { continue };
        *shared.forwarded.lock().expect("not poisoned").entry(pod.name.clone()).or_default() += 1;
        let _ = tokio::io::copy_bidirectional(&mut connection, &mut upstream).await;
        drop(upstream);
        forwarder.abort();
        return true;
    }
    false
}
