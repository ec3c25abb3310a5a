//! The simulated cluster as a scenario [`Target`]: every fault of the timeline maps to a madsim
//! operation on the nodes behind a service.

use crate::cluster::{ClusterConfig, Replica, SimCluster};
use lastmile_harness::target::{self, step_service};
use lastmile_harness::{RunConfig, Target, TargetError};
use lastmile_platform::broker::{Broker, Message};
use lastmile_platform::coverage::RecoveryPath;
use lastmile_scenarios::faults::TimelineStep;
use lastmile_scenarios::{Action, CrashPoint, Scenario};
use lastmile_services::ServiceName;
use lastmile_workload::Endpoints;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

/// madsim's default message latency, restored by the heal.
const DEFAULT_LATENCY: std::ops::Range<Duration> = Duration::from_millis(1)..Duration::from_millis(10);
/// How long a rollout waits for a new replica to get ready before it stalls (and lets the
/// timeline go on: a fault in force may be what holds it up).
const ROLLOUT_PATIENCE: Duration = Duration::from_secs(20);
/// How long the heal waits for a stalled rollout's replica to get ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a rollout waits for a replica's graceful stop before it starts its successor
/// (a pod's termination grace period).
const STOP_GRACE: Duration = Duration::from_secs(30);

/// A simulated deployment driven by a scenario.
pub struct SimTarget {
    cluster: SimCluster,
    /// Nodes killed and not yet brought back.
    killed: Vec<(ServiceName, Replica)>,
    /// Nodes paused.
    paused: Vec<Replica>,
    /// Nodes partitioned.
    partitioned: Vec<Replica>,
    /// Links cut.
    cut_links: Vec<(madsim::runtime::NodeHandle, madsim::runtime::NodeHandle)>,
    /// Whether the broker is down.
    broker_down: bool,
    /// Crash points armed and not disarmed yet.
    armed: Vec<(ServiceName, CrashPoint)>,
    /// Services whose disks are stalled.
    stalled_disks: std::collections::BTreeSet<ServiceName>,
    /// Rollouts held up by a fault, to go on after the next undo (at the latest, the heal).
    stalled: Vec<Rollout>,
}

/// A rollout under way.
struct Rollout {
    service: ServiceName,
    /// Old replicas still to replace, oldest first.
    old: Vec<Replica>,
    /// Replicas started and not ready yet; each one ready retires the next old one.
    waiting: Vec<Replica>,
}

impl SimTarget {
    /// Deploy the scenario's initial replicas. Call inside a madsim runtime.
    pub fn start(scenario: &Scenario, config: &RunConfig) -> SimTarget {
        let cluster = ClusterConfig {
            replicas: ServiceName::ALL.into_iter().map(|s| (s, scenario.initial_replicas(s.as_str()))).collect(),
            ride_ttl: Duration::from_secs_f64(scenario.workload.ride_ttl_s),
            naive_matching: config.naive_matching || scenario.options.naive_matching,
            planted_bug: config.planted_bug,
            service_time: ServiceName::ALL
                .into_iter()
                .filter_map(|s| Some((s, scenario.service_time(s.as_str())?)))
                .collect(),
        };
        SimTarget {
            cluster: SimCluster::start(&cluster),
            killed: Vec::new(),
            paused: Vec::new(),
            partitioned: Vec::new(),
            cut_links: Vec::new(),
            broker_down: false,
            armed: Vec::new(),
            stalled_disks: Default::default(),
            stalled: Vec::new(),
        }
    }

    /// The cluster underneath.
    pub fn cluster(&self) -> &SimCluster {
        &self.cluster
    }

    fn replicas(&self, service: ServiceName) -> Vec<Replica> {
        self.cluster.replicas(service).to_vec()
    }
}

/// What became of an armed crash point.
fn crash_outcome(service: ServiceName, point: CrashPoint, fired: bool) -> String {
    if fired {
        format!("{point} of {service} fired: a replica died there and was restarted")
    } else {
        format!("{point} of {service} was never reached")
    }
}

/// Every replica, or only the `replica`-th (modulo the count).
fn chosen(replicas: Vec<Replica>, replica: Option<usize>) -> Vec<Replica> {
    match replica {
        Some(i) if !replicas.is_empty() => vec![replicas[i % replicas.len()].clone()],
        _ => replicas,
    }
}

fn names(replicas: &[Replica]) -> String {
    replicas.iter().map(|r| r.addr.ip().to_string()).collect::<Vec<_>>().join(", ")
}

impl Target for SimTarget {
    fn spawn_client<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.cluster.client_node().spawn(future)
    }

    fn endpoints(&self) -> Endpoints {
        self.cluster.endpoints()
    }

    fn broker(&self) -> Option<lastmile_workload::hostile::BrokerAccess> {
        let config = self.cluster.config();
        Some(lastmile_workload::hostile::BrokerAccess {
            url: config.amqp_url.clone(),
            exchange: config.names.events_exchange(),
        })
    }

    fn replica_urls(&self, service: ServiceName) -> Vec<(String, String)> {
        self.cluster
            .replicas(service)
            .iter()
            .map(|r| (format!("{}@{}", service.as_str(), r.addr.ip()), format!("http://{}", r.addr)))
            .collect()
    }

    async fn dead_letters(&self) -> Option<BTreeMap<String, Vec<String>>> {
        let names = self.cluster.config().names.clone();
        let probe = self.cluster.broker_probe();
        Some(
            ServiceName::ALL
                .into_iter()
                .map(|s| {
                    let dead = lastmile_platform::broker::core::dead_letter_queue(&names.queue(s.as_str()));
                    let messages = probe
                        .dead_letters(&dead)
                        .iter()
                        .map(|m| format!("{} ({})", m.message_id, m.routing_key))
                        .collect();
                    (dead, messages)
                })
                .collect(),
        )
    }

    fn coverage(&self) -> Option<BTreeMap<RecoveryPath, u64>> {
        Some(self.cluster.coverage().counts())
    }

    async fn backlog(&self, service: ServiceName) -> Option<u64> {
        let queue = self.cluster.config().names.queue(service.as_str());
        Some(self.cluster.broker_probe().depth(&queue).0 as u64)
    }

    async fn running(&self, service: ServiceName) -> Result<usize, TargetError> {
        Ok(self.cluster.replicas(service).iter().filter(|r| !self.cluster.is_down(&r.node)).count())
    }

    async fn apply(&mut self, step: &TimelineStep) -> Result<String, TargetError> {
        match step.action {
            Action::Scale => {
                let s = step_service(step)?;
                let n = TargetError::required(step.replicas, "scale", "replicas")?;
                self.cluster.scale(s, n);
                Ok(format!("{s} scaled to {n}"))
            }
            Action::Kill => {
                let s = step_service(step)?;
                let replicas = self.replicas(s);
                if replicas.is_empty() {
                    return Ok(format!("{s} has no replica to kill"));
                }
                let i = step.replica.map_or(replicas.len() - 1, |r| r % replicas.len());
                let victim = replicas[i].clone();
                self.cluster.kill(&victim.node);
                self.killed.push((s, victim.clone()));
                Ok(format!("killed {s} at {}", victim.addr.ip()))
            }
            Action::Restart => {
                let s = step_service(step)?;
                let replicas = self.replicas(s);
                for r in &replicas {
                    self.cluster.restart(&r.node);
                }
                Ok(format!("restarted {s} ({})", names(&replicas)))
            }
            Action::Pause => {
                let s = step_service(step)?;
                let replicas = chosen(self.replicas(s), step.replica);
                for r in &replicas {
                    self.cluster.pause(&r.node);
                }
                self.paused.extend(replicas.iter().cloned());
                Ok(format!("paused {s} ({})", names(&replicas)))
            }
            Action::Partition if step.peer.is_some() => {
                let s = step_service(step)?;
                let peer = step.peer.as_deref().expect("checked");
                let peers: Vec<madsim::runtime::NodeHandle> = if peer == "broker" {
                    vec![self.cluster.broker_node().clone()]
                } else {
                    self.replicas(peer.parse::<ServiceName>()?).into_iter().map(|r| r.node).collect()
                };
                let replicas = chosen(self.replicas(s), step.replica);
                for r in &replicas {
                    for p in &peers {
                        self.cluster.partition_link(&r.node, p);
                        self.cut_links.push((r.node.clone(), p.clone()));
                    }
                }
                Ok(format!("cut the links of {s} ({}) to {peer}", names(&replicas)))
            }
            Action::Partition => {
                let s = step_service(step)?;
                let replicas = chosen(self.replicas(s), step.replica);
                for r in &replicas {
                    self.cluster.partition(&r.node);
                }
                self.partitioned.extend(replicas.iter().cloned());
                Ok(format!("partitioned {s} ({})", names(&replicas)))
            }
            Action::Latency => {
                let ms = step.latency_ms.unwrap_or(100);
                let base = Duration::from_millis(ms);
                self.cluster.set_network(base..base + Duration::from_millis(ms / 2 + 1), 0.0);
                Ok(format!("latency {ms} ms on every link"))
            }
            Action::Loss => {
                let loss = step.loss.unwrap_or(0.1);
                self.cluster.set_network(DEFAULT_LATENCY, loss);
                Ok(format!("packet loss {loss:.2} on every link"))
            }
            Action::BrokerRestart => {
                self.cluster.kill_broker();
                self.broker_down = true;
                Ok("broker killed".into())
            }
            Action::Rollout => {
                let s = step_service(step)?;
                let old = self.replicas(s);
                let rollout = if s.single_replica() {
                    // One journal writer at a time (`Recreate`): the replicas stop gracefully,
                    // then start again on their disks.
                    self.cluster.scale(s, 0);
                    for r in &old {
                        self.cluster.await_probe(r.addr, "/health", true, STOP_GRACE).await;
                    }
                    self.cluster.scale(s, old.len());
                    Rollout { service: s, old: Vec::new(), waiting: self.replicas(s) }
                } else {
                    Rollout { service: s, old: old.clone(), waiting: Vec::new() }
                };
                match self.roll_on(rollout, false).await? {
                    None => Ok(format!("rolled out {s}: replaced {}", names(&old))),
                    Some(stalled) => {
                        let why = format!(
                            "rollout of {s} stalled: {} not ready within {}s; the old replicas keep serving and it \
                             goes on after the next undo",
                            names(&stalled.waiting),
                            self.rollout_patience(false).as_secs()
                        );
                        self.stalled.push(stalled);
                        Ok(why)
                    }
                }
            }
            Action::Crash => {
                let s = step_service(step)?;
                let point = TargetError::required(step.point, "crash", "a point")?;
                self.cluster.arm_crash(s, point);
                self.armed.push((s, point));
                Ok(format!("armed {point} of {s}"))
            }
            Action::Poison => {
                let s = step_service(step)?;
                let id = step.poison_message_id().expect("a poison step with its target");
                self.cluster.poison(s, &id);
                let key = poison_routing_key(s)?;
                self.publish_poison(&id, key);
                Ok(format!("poison message {id} ({key}) on its way: each {s} replica receiving it dies"))
            }
            Action::DiskStall => {
                let s = step_service(step)?;
                let ms = TargetError::required(step.latency_ms, "disk-stall", "latency_ms")?;
                self.cluster.stall_disk(s, ms);
                self.stalled_disks.insert(s);
                Ok(format!("{s}'s disk stalled: each sync takes {ms} ms more"))
            }
        }
    }

    async fn undo(&mut self, step: &TimelineStep) -> Result<String, TargetError> {
        let undone = self.undo_fault(step).await?;
        Ok(match self.resume_rollouts(false).await? {
            Some(resumed) => format!("{undone}; {resumed}"),
            None => undone,
        })
    }

    async fn heal(&mut self, replicas: &BTreeMap<ServiceName, usize>) -> Result<String, TargetError> {
        self.heal_faults();
        let mut done = Vec::new();
        if let Some(resumed) = self.resume_rollouts(true).await? {
            done.push(resumed);
        }
        for (s, point) in std::mem::take(&mut self.armed) {
            done.push(crash_outcome(s, point, self.cluster.disarm_crash(s, point)));
        }

        for (s, r) in std::mem::take(&mut self.killed) {
            if self.cluster.replicas(s).iter().any(|x| x.node.id() == r.node.id()) {
                self.cluster.restart(&r.node);
            }
        }
        self.cluster.restart_crashed();
        for (s, n) in replicas {
            self.cluster.scale(*s, *n);
            done.push(format!("replicas {s}={n}"));
        }
        Ok(format!("healed; {}", done.join(" ")))
    }
}

/// A routing key only `service`'s queue is bound to, or for trip- and location-service (both
/// bound to `user.registered` alone) one both queues get: the other refuses it as undecodable.
fn poison_routing_key(service: ServiceName) -> Result<&'static str, TargetError> {
    let (_, keys) = lastmile_services::events::SUBSCRIPTIONS
        .iter()
        .find(|(s, _)| *s == service.as_str())
        .ok_or_else(|| TargetError::Deployment(format!("{service} consumes from no queue: nothing to poison")))?;
    let only_its =
        |k: &&&str| lastmile_services::events::SUBSCRIPTIONS.iter().filter(|(_, ks)| ks.contains(k)).count() == 1;
    Ok(keys.iter().find(only_its).or(keys.first()).expect("a subscription binds a key"))
}

impl SimTarget {
    /// Publish the poison message `id` to the events exchange from the client node, in the
    /// background: retried until the broker confirms it. Not awaited: a broker restart in force
    /// is undone by a later step of the timeline, which must not wait behind this one.
    fn publish_poison(&self, id: &str, routing_key: &str) {
        let access = self.broker().expect("the simulation has a broker");
        let message = Message {
            message_id: id.to_string(),
            routing_key: routing_key.to_string(),
            body: format!("poison {id}: a message the consuming replica dies on").into_bytes(),
            persistent: true,
        };
        let publish = async move {
            let broker = Broker::new(access.url.clone());
            while let Err(e) = broker.publish(&access.exchange, message.clone()).await {
                tracing::debug!(id = %message.message_id, error = %e, "poison not published yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        };
        drop(self.cluster.client_node().spawn(publish));
    }

    async fn undo_fault(&mut self, step: &TimelineStep) -> Result<String, TargetError> {
        match step.action {
            Action::Kill => {
                let s = step_service(step)?;
                let current: Vec<_> = self.replicas(s).iter().map(|r| r.node.id()).collect();
                let (back, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.killed)
                    .into_iter()
                    .partition(|(svc, r)| *svc == s && current.contains(&r.node.id()));
                self.killed = keep;
                for (_, r) in &back {
                    self.cluster.restart(&r.node);
                }
                Ok(format!(
                    "restarted killed {s} replicas ({})",
                    names(&back.into_iter().map(|(_, r)| r).collect::<Vec<_>>())
                ))
            }
            Action::Pause => {
                for r in std::mem::take(&mut self.paused) {
                    self.cluster.resume(&r.node);
                }
                Ok("resumed".into())
            }
            Action::Partition => {
                for r in std::mem::take(&mut self.partitioned) {
                    self.cluster.reconnect(&r.node);
                }
                for (a, b) in std::mem::take(&mut self.cut_links) {
                    self.cluster.reconnect_link(&a, &b);
                }
                Ok("reconnected".into())
            }
            Action::Latency | Action::Loss => {
                self.cluster.set_network(DEFAULT_LATENCY, 0.0);
                Ok("network back to normal".into())
            }
            Action::BrokerRestart => {
                if self.broker_down {
                    self.cluster.restart_broker();
                    self.broker_down = false;
                }
                Ok("broker restarted".into())
            }
            Action::Crash => {
                let s = step_service(step)?;
                let point = TargetError::required(step.point, "crash", "a point")?;
                self.armed.retain(|a| *a != (s, point));
                Ok(crash_outcome(s, point, self.cluster.disarm_crash(s, point)))
            }
            Action::DiskStall => {
                let s = step_service(step)?;
                self.cluster.stall_disk(s, 0);
                self.stalled_disks.remove(&s);
                Ok(format!("{s}'s disk back to normal"))
            }
            // A poison stays one: the broker's delivery limit must take it away.
            Action::Scale | Action::Restart | Action::Rollout | Action::Poison => Ok("nothing to undo".into()),
        }
    }

    /// Undo every network fault, pause and broker outage.
    fn heal_faults(&mut self) {
        for s in std::mem::take(&mut self.stalled_disks) {
            self.cluster.stall_disk(s, 0);
        }
        for r in std::mem::take(&mut self.partitioned) {
            self.cluster.reconnect(&r.node);
        }
        for (a, b) in std::mem::take(&mut self.cut_links) {
            self.cluster.reconnect_link(&a, &b);
        }
        for r in std::mem::take(&mut self.paused) {
            self.cluster.resume(&r.node);
        }
        self.cluster.set_network(DEFAULT_LATENCY, 0.0);
        if self.broker_down {
            self.cluster.restart_broker();
            self.broker_down = false;
        }
    }

    /// How long a rollout waits for a replica to get ready: [`READY_TIMEOUT`] at the heal;
    /// not at all while the broker is down, since no replica gets ready before its topology is
    /// declared and the broker's return is a later step, which must not wait behind this one (a
    /// trip-service rollout during a broker restart held the restart's undo back 20 s and its
    /// clients' retries ran out); else [`ROLLOUT_PATIENCE`].
    fn rollout_patience(&self, must_finish: bool) -> Duration {
        match (must_finish, self.broker_down) {
            (true, _) => READY_TIMEOUT,
            (false, true) => Duration::ZERO,
            (false, false) => ROLLOUT_PATIENCE,
        }
    }

    /// Carry a rollout on: wait for the replicas it started, then for each old replica left
    /// start a new one, wait until it is ready and retire the old one. A replica not ready
    /// within [`ROLLOUT_PATIENCE`] stalls the rollout (returned, to go on later) — a fault in force
    /// (the broker down, a partition) may hold it up, as it would hold up a Deployment's
    /// rollout — unless `must_finish`, when it fails the run.
    async fn roll_on(&mut self, mut rollout: Rollout, must_finish: bool) -> Result<Option<Rollout>, TargetError> {
        loop {
            while let Some(r) = rollout.waiting.first() {
                if !self.cluster.await_probe(r.addr, "/ready", false, self.rollout_patience(must_finish)).await {
                    if must_finish {
                        return Err(TargetError::TimedOut {
                            what: format!("{} at {} ready during a rollout", rollout.service, r.addr.ip()),
                            after: READY_TIMEOUT,
                            last_error: None,
                        });
                    }
                    return Ok(Some(rollout));
                }
                rollout.waiting.remove(0);
                if let Some(old) = (!rollout.old.is_empty()).then(|| rollout.old.remove(0)) {
                    self.cluster.retire_node(rollout.service, old.node.id());
                }
            }
            if rollout.old.is_empty() {
                return Ok(None);
            }
            rollout.waiting.push(self.cluster.surge(rollout.service));
        }
    }

    /// Go on with every stalled rollout; what became of them, if there were any.
    async fn resume_rollouts(&mut self, must_finish: bool) -> Result<Option<String>, TargetError> {
        let stalled = std::mem::take(&mut self.stalled);
        let (said, still) =
            target::resume_rollouts(stalled, |r| r.service, async |r| self.roll_on(r, must_finish).await).await?;
        self.stalled = still;
        Ok(said)
    }
}
