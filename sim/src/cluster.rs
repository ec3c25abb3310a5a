//! A simulated LastMile deployment on madsim's network.
//!
//! Addresses (all simulated):
//!
//! | what | name | address |
//! |---|---|---|
//! | broker | `rabbitmq` | 10.0.0.2:5672 |
//! | service *k* (1 = user … 5 = notification) | `user-service`, … | virtual 10.1.0.*k*:80 |
//! | replica *r* of service *k* | — | 10.0.*k*.*r*:80 |
//! | workload clients | — | 10.0.9.1 |
//!
//! Each service's virtual address is an IPVS round-robin over its replicas, so callers address
//! a service by name and reach any replica, as through a Kubernetes Service.

use lastmile_platform::auth::ServiceToken;
use lastmile_platform::broker::sim::{run_broker_node, BrokerProbe};
use lastmile_platform::capacity::ServiceTime;
use lastmile_platform::coverage::{Coverage, RecoveryPath};
use lastmile_platform::faults::{CrashPoint, Faults};
use lastmile_platform::http::{CallPolicy, HttpClient, Method};
use lastmile_services::{Config, ServiceName};
use lastmile_workload::{Endpoints, History, LastMileClient};
use madsim::net::ipvs::{Scheduler, ServiceAddr};
use madsim::net::NetSim;
use madsim::runtime::{Handle, NodeHandle};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The broker's DNS name.
pub const BROKER_HOST: &str = "rabbitmq";
/// How often a starting replica's `/ready` is probed before it joins its service.
const READINESS_PERIOD: Duration = Duration::from_millis(500);
/// Where the broker keeps its durable state on its node's disk.
const BROKER_JOURNAL: &str = "rabbitmq.journal";
/// How long a replica that died at a crash point stays down before it is started again, like
/// a container restarted by its kubelet.
pub const CRASH_RESTART_DELAY: Duration = Duration::from_secs(2);

/// Journal records between compactions in the simulation: small, so every run compacts its
/// journals several times and its crashes and kills land around compactions too.
pub const SIM_COMPACT_AFTER: usize = 64;

/// The simulated deployment's service token (a constant: nothing outside the run sees it).
pub const SIM_SERVICE_TOKEN: &str = "simulated-service-token";

/// What to deploy.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Replicas per service at start.
    pub replicas: BTreeMap<ServiceName, usize>,
    /// How long rides wait before they expire.
    pub ride_ttl: Duration,
    /// Run the original matching design (demonstrations only).
    pub naive_matching: bool,
    /// Turn on the planted bug (the harness's own tests; needs the `planted-bugs` build).
    pub planted_bug: bool,
    /// Per-request service time of each service that has one (the others take no added time).
    pub service_time: BTreeMap<ServiceName, ServiceTime>,
}

impl Default for ClusterConfig {
    /// One replica of each service; rides expire after 30 simulated seconds.
    fn default() -> Self {
        ClusterConfig {
            replicas: ServiceName::ALL.into_iter().map(|s| (s, 1)).collect(),
            ride_ttl: Duration::from_secs(30),
            naive_matching: false,
            planted_bug: false,
            service_time: BTreeMap::new(),
        }
    }
}

fn index(service: ServiceName) -> u8 {
    ServiceName::ALL.iter().position(|s| *s == service).expect("known service") as u8 + 1
}

/// The virtual address of a service.
pub fn virtual_addr(service: ServiceName) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, 0, index(service))), 80)
}

fn replica_addr(service: ServiceName, replica: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, index(service), replica as u8 + 1)), 80)
}

/// Crash points whose hook kills the replica that reached one and starts it again after
/// [`CRASH_RESTART_DELAY`] — unless it was scaled down meanwhile.
fn crash_faults(
    handle: &Handle,
    supervisor: &NodeHandle,
    serving: &Arc<Mutex<BTreeSet<SocketAddr>>>,
    addrs: &Arc<Mutex<BTreeMap<madsim::task::NodeId, SocketAddr>>>,
    crashed: &Arc<Mutex<BTreeSet<madsim::task::NodeId>>>,
    coverage: &Coverage,
) -> Faults {
    let (handle, supervisor, serving, addrs, crashed, coverage) =
        (handle.clone(), supervisor.clone(), serving.clone(), addrs.clone(), crashed.clone(), coverage.clone());
    Faults::with_hook(Arc::new(move |what: &str| {
        coverage.hit(RecoveryPath::CrashPointHit);
        let node = madsim::plugin::node();
        let addr = addrs.lock().expect("replica addresses").get(&node).copied();
        tracing::debug!(%node, ?addr, %what, "crash: the replica dies");
        handle.kill(node);
        crashed.lock().expect("crashed set").insert(node);
        let (handle, serving, crashed) = (handle.clone(), serving.clone(), crashed.clone());
        supervisor.spawn(async move {
            tokio::time::sleep(CRASH_RESTART_DELAY).await;
            // Restarted already by the heal, or scaled down meanwhile: nothing to do.
            let pending = crashed.lock().expect("crashed set").remove(&node);
            if pending && addr.is_some_and(|a| serving.lock().expect("serving set").contains(&a)) {
                handle.restart(node);
            }
        });
    }))
}

/// One replica: its node and address.
#[derive(Clone)]
pub struct Replica {
    /// The madsim node.
    pub node: NodeHandle,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// A running simulated deployment.
pub struct SimCluster {
    handle: Handle,
    config: Config,
    broker: NodeHandle,
    probe: BrokerProbe,
    replicas: BTreeMap<ServiceName, Vec<Replica>>,
    /// Replica slots ever created per service.
    created: BTreeMap<ServiceName, usize>,
    /// Replicas scaled down, newest last. Scaling up brings these back first, with their disk:
    /// like a StatefulSet whose pods keep their volumes, a service's journal survives 0 and back.
    stopped: BTreeMap<ServiceName, Vec<Replica>>,
    /// Replicas that should serve (scaled up and not scaled down since); readiness gates read it.
    serving: Arc<Mutex<BTreeSet<SocketAddr>>>,
    client: NodeHandle,
    /// Each service's crash points, shared by its replicas.
    faults: BTreeMap<ServiceName, Faults>,
    /// Where each replica node listens, so a crash hook knows which replica died.
    addrs: Arc<Mutex<BTreeMap<madsim::task::NodeId, SocketAddr>>>,
    /// Replicas that died at a crash point and wait for their restart.
    crashed: Arc<Mutex<BTreeSet<madsim::task::NodeId>>>,
    /// The recovery paths every service of the run took.
    coverage: Coverage,
    /// Each service's per-request service time, given to every replica it starts.
    service_time: BTreeMap<ServiceName, ServiceTime>,
}

impl SimCluster {
    /// Deploy: broker, services, client node. Call inside a madsim runtime.
    pub fn start(cluster: &ClusterConfig) -> SimCluster {
        assert!(
            !cluster.planted_bug || lastmile_services::PLANTED_BUG_BUILT,
            "the planted bug exists only in the simulation's test build (feature planted-bugs)"
        );
        let handle = Handle::current();
        let net = NetSim::current();
        let broker_ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        net.add_dns_record(BROKER_HOST, broker_ip);
        let probe = BrokerProbe::default();
        let node_probe = probe.clone();
        let broker = handle
            .create_node()
            .name("rabbitmq")
            .ip(broker_ip)
            .init(move || {
                let probe = node_probe.clone();
                async move {
                    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 5672);
                    if let Err(e) = run_broker_node(addr, BROKER_JOURNAL, probe).await {
                        panic!("the simulated broker failed: {e}");
                    }
                }
            })
            .build();
        let host = |s: ServiceName| format!("http://{}:80", s.as_str());
        let config = Config {
            amqp_url: format!("amqp://guest:guest@{BROKER_HOST}:5672/%2f"),
            user_url: host(ServiceName::User),
            location_url: host(ServiceName::Location),
            trip_url: host(ServiceName::Trip),
            data_dir: "data".into(),
            ride_ttl: cluster.ride_ttl,
            naive_matching: cluster.naive_matching,
            planted_bug: cluster.planted_bug,
            compact_after: SIM_COMPACT_AFTER,
            harness_routes: true,
            service_token: Some(ServiceToken::new(SIM_SERVICE_TOKEN).expect("a valid token")),
            ..Config::default()
        };
        for service in ServiceName::ALL {
            let vip = virtual_addr(service);
            net.add_dns_record(service.as_str(), vip.ip());
            net.global_ipvs().add_service(ServiceAddr::Tcp(vip.to_string()), Scheduler::RoundRobin);
        }
        let client = handle.create_node().name("clients").ip(IpAddr::V4(Ipv4Addr::new(10, 0, 9, 1))).build();
        let serving: Arc<Mutex<BTreeSet<SocketAddr>>> = Arc::default();
        let addrs: Arc<Mutex<BTreeMap<madsim::task::NodeId, SocketAddr>>> = Arc::default();
        let crashed: Arc<Mutex<BTreeSet<madsim::task::NodeId>>> = Arc::default();
        let coverage = Coverage::default();
        let faults = ServiceName::ALL
            .into_iter()
            .map(|service| (service, crash_faults(&handle, &client, &serving, &addrs, &crashed, &coverage)))
            .collect();
        let config = Config { coverage: coverage.clone(), ..config };
        // Every service queue and its dead-letter queue, for `Target::dead_letters`.
        for service in ServiceName::ALL {
            probe.watch(&config.names.queue(service.as_str()));
        }
        let mut sim = SimCluster {
            handle,
            config,
            broker,
            probe,
            replicas: BTreeMap::new(),
            created: BTreeMap::new(),
            stopped: BTreeMap::new(),
            serving,
            client,
            faults,
            addrs,
            crashed,
            coverage,
            service_time: cluster.service_time.clone(),
        };
        for service in ServiceName::ALL {
            let n = cluster.replicas.get(&service).copied().unwrap_or(1);
            sim.scale(service, n);
        }
        sim
    }

    fn spawn_replica(&mut self, service: ServiceName) -> Replica {
        let slot = self.created.entry(service).or_default();
        let addr = replica_addr(service, *slot);
        *slot += 1;
        let config = Config {
            faults: self.faults[&service].clone(),
            service_time: self.service_time.get(&service).copied(),
            ..self.config.clone()
        };
        let node = self
            .handle
            .create_node()
            .name(format!("{}-{}", service.as_str(), addr.ip()))
            .ip(addr.ip())
            .init(move || {
                let config = config.clone();
                async move {
                    let listener = tokio::net::TcpListener::bind(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 80))
                        .await
                        .expect("a fresh node can bind its port");
                    let shutdown = lastmile_platform::shutdown::on_termination();
                    if let Err(e) = lastmile_services::run(service, config, listener, shutdown).await {
                        tracing::error!(%service, error = %e, "service stopped with an error");
                    }
                }
            })
            .build();
        self.addrs.lock().expect("replica addresses").insert(node.id(), addr);
        NetSim::current()
            .global_ipvs()
            .add_server(ServiceAddr::Tcp(virtual_addr(service).to_string()), &addr.to_string());
        Replica { node, addr }
    }

    /// Scale `service` to `n` replicas: replicas join its virtual address (a stopped one comes
    /// back first, with its disk); removed ones leave it first, then get a graceful stop
    /// (Ctrl-C), newest first.
    pub fn scale(&mut self, service: ServiceName, n: usize) {
        let vip = ServiceAddr::Tcp(virtual_addr(service).to_string());
        while self.replicas.get(&service).map_or(0, Vec::len) < n {
            let replica = match self.stopped.get_mut(&service).and_then(Vec::pop) {
                Some(r) => {
                    self.restart(&r.node);
                    r
                }
                None => self.spawn_replica(service),
            };
            self.join_when_ready(vip.clone(), replica.addr);
            self.replicas.entry(service).or_default().push(replica);
        }
        while self.replicas.get(&service).map_or(0, Vec::len) > n {
            let replica = self.replicas.get_mut(&service).expect("non-empty").pop().expect("non-empty");
            self.retire(service, replica);
        }
    }

    /// Take a replica out of its service's virtual address, then stop it gracefully (Ctrl-C);
    /// it keeps its disk among the stopped replicas.
    fn retire(&mut self, service: ServiceName, replica: Replica) {
        let vip = ServiceAddr::Tcp(virtual_addr(service).to_string());
        self.serving.lock().expect("serving set").remove(&replica.addr);
        NetSim::current().global_ipvs().del_server(vip, &replica.addr.to_string());
        tracing::debug!(addr = %replica.addr, "leaves its service: graceful stop");
        self.handle.send_ctrl_c(replica.node.id());
        self.stopped.entry(service).or_default().push(replica);
    }

    /// A rolling update's first half for one replica: a fresh replica of `service` (a new pod:
    /// new address, empty disk) that joins the service once its `/ready` answers.
    pub fn surge(&mut self, service: ServiceName) -> Replica {
        let replica = self.spawn_replica(service);
        self.join_when_ready(ServiceAddr::Tcp(virtual_addr(service).to_string()), replica.addr);
        self.replicas.entry(service).or_default().push(replica.clone());
        replica
    }

    /// A rolling update's second half: the replica on `node` leaves its service and stops
    /// gracefully. Whether it was found.
    pub fn retire_node(&mut self, service: ServiceName, node: madsim::task::NodeId) -> bool {
        let replicas = self.replicas.entry(service).or_default();
        match replicas.iter().position(|r| r.node.id() == node) {
            Some(i) => {
                let replica = replicas.remove(i);
                self.retire(service, replica);
                true
            }
            None => false,
        }
    }

    /// Whether `path` of the replica at `addr` answers 200 within `within`, probed from the
    /// clients' node every [`READINESS_PERIOD`]; with `until_down`, whether it stops answering.
    pub async fn await_probe(&self, addr: SocketAddr, path: &'static str, until_down: bool, within: Duration) -> bool {
        let probe =
            HttpClient::new("rollout", &format!("http://{addr}"), CallPolicy { attempts: 1, ..CallPolicy::default() });
        let polls = within.as_millis() / READINESS_PERIOD.as_millis();
        self.client
            .spawn(async move {
                for _ in 0..=polls {
                    let up = matches!(probe.call_raw(Method::GET, path, None).await, Ok((200, _)));
                    if up != until_down {
                        return true;
                    }
                    tokio::time::sleep(READINESS_PERIOD).await;
                }
                false
            })
            .await
            .unwrap_or(false)
    }

    /// Put a replica behind its service's virtual address once its own `/ready` answers 200, as
    /// Kubernetes adds a pod to a Service's endpoints when its readiness probe passes. A replica
    /// scaled down before it got ready never joins.
    fn join_when_ready(&self, vip: ServiceAddr, addr: SocketAddr) {
        self.serving.lock().expect("serving set").insert(addr);
        let serving = self.serving.clone();
        let probe = HttpClient::new(
            "readiness",
            &format!("http://{addr}"),
            CallPolicy { attempts: 1, ..CallPolicy::default() },
        );
        self.client.spawn(async move {
            loop {
                if !serving.lock().expect("serving set").contains(&addr) {
                    return;
                }
                if let Ok((200, _)) = probe.call_raw(Method::GET, "/ready", None).await {
                    if serving.lock().expect("serving set").contains(&addr) {
                        tracing::debug!(%addr, "ready: joins its service");
                        NetSim::current().global_ipvs().add_server(vip, &addr.to_string());
                    }
                    return;
                }
                tokio::time::sleep(READINESS_PERIOD).await;
            }
        });
    }

    /// Arm `point` of `service`: the next of its replicas to pass it dies there, and is started
    /// again [`CRASH_RESTART_DELAY`] later.
    pub fn arm_crash(&self, service: ServiceName, point: CrashPoint) {
        self.faults[&service].arm(point);
    }

    /// Make `message_id` kill every replica of `service` that receives it (each started again
    /// [`CRASH_RESTART_DELAY`] later), for good.
    pub fn poison(&self, service: ServiceName, message_id: &str) {
        self.faults[&service].poison(message_id);
    }

    /// Stall `service`'s disks: each journal sync of its replicas takes `ms` more (0: undo).
    pub fn stall_disk(&self, service: ServiceName, ms: u64) {
        self.faults[&service].set_disk_stall(ms);
    }

    /// Disarm `point` of `service`; the answer says whether a replica died there meanwhile.
    pub fn disarm_crash(&self, service: ServiceName, point: CrashPoint) -> bool {
        self.faults[&service].disarm(point)
    }

    /// Start every replica that died at a crash point and waits for its restart now (the heal).
    pub fn restart_crashed(&self) {
        let crashed = std::mem::take(&mut *self.crashed.lock().expect("crashed set"));
        let serving = self.serving.lock().expect("serving set").clone();
        for (node, addr) in self.addrs.lock().expect("replica addresses").iter() {
            if crashed.contains(node) && serving.contains(addr) {
                self.handle.restart(*node);
            }
        }
    }

    /// The recovery paths the run's services took so far.
    pub fn coverage(&self) -> &Coverage {
        &self.coverage
    }

    /// The replicas of a service.
    pub fn replicas(&self, service: ServiceName) -> &[Replica] {
        self.replicas.get(&service).map_or(&[], Vec::as_slice)
    }

    /// Kill the broker node abruptly; every connection to it dies.
    pub fn kill_broker(&self) {
        self.handle.kill(self.broker.id());
    }

    /// Restart the broker node: it replays its journal from its disk.
    pub fn restart_broker(&self) {
        self.restart(&self.broker);
    }

    /// Kill a node abruptly (no graceful shutdown).
    pub fn kill(&self, node: &NodeHandle) {
        self.handle.kill(node.id());
    }

    /// Restart a node (its init task runs again; its disk survives). The node is killed first:
    /// madsim's restart alone keeps the old incarnation's sockets bound.
    pub fn restart(&self, node: &NodeHandle) {
        tracing::debug!(node = %node.id(), "restart");
        self.handle.kill(node.id());
        self.handle.restart(node.id());
    }

    /// Freeze a node: its tasks stop running, its connections stay open.
    pub fn pause(&self, node: &NodeHandle) {
        self.handle.pause(node.id());
    }

    /// Let a paused node run again.
    pub fn resume(&self, node: &NodeHandle) {
        self.handle.resume(node.id());
    }

    /// Cut a node off the network (messages wait until it is reconnected).
    pub fn partition(&self, node: &NodeHandle) {
        NetSim::current().clog_node(node.id());
    }

    /// Cut the link between two nodes, both directions.
    pub fn partition_link(&self, a: &NodeHandle, b: &NodeHandle) {
        let net = NetSim::current();
        net.clog_link(a.id(), b.id());
        net.clog_link(b.id(), a.id());
    }

    /// Restore a link cut with [`SimCluster::partition_link`].
    pub fn reconnect_link(&self, a: &NodeHandle, b: &NodeHandle) {
        let net = NetSim::current();
        net.unclog_link(a.id(), b.id());
        net.unclog_link(b.id(), a.id());
    }

    /// The broker's node.
    pub fn broker_node(&self) -> &NodeHandle {
        &self.broker
    }

    /// Reconnect a partitioned node.
    pub fn reconnect(&self, node: &NodeHandle) {
        NetSim::current().unclog_node(node.id());
    }

    /// Set the latency range of every message and the packet loss rate (0 for none).
    pub fn set_network(&self, latency: std::ops::Range<Duration>, loss: f64) {
        NetSim::current().update_config(|c| {
            c.send_latency = latency;
            c.packet_loss_rate = loss;
        });
    }

    /// Whether a node is killed (or exited).
    pub fn is_down(&self, node: &NodeHandle) -> bool {
        self.handle.is_exit(node.id())
    }

    /// Counters and queue depths of the broker.
    pub fn broker_probe(&self) -> &BrokerProbe {
        &self.probe
    }

    /// The services' configuration (names, URLs).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The node workloads run on.
    pub fn client_node(&self) -> &NodeHandle {
        &self.client
    }

    /// Service endpoints as seen from inside the simulation.
    pub fn endpoints(&self) -> Endpoints {
        let host = |s: ServiceName| format!("{}:80", s.as_str());
        Endpoints {
            user: host(ServiceName::User),
            location: host(ServiceName::Location),
            trip: host(ServiceName::Trip),
            notification: host(ServiceName::Notification),
            token: self.config.service_token.clone(),
        }
    }

    /// A recording API client for workloads on the client node.
    pub fn api(&self, history: Arc<History>) -> LastMileClient {
        LastMileClient::new(&self.endpoints(), CallPolicy::default(), history)
    }
}
