//! Run a scenario against a target and collect the evidence.
//!
//! Order of a run: wait until every service is ready; register drivers and riders; start the
//! workload, the probes and the timeline (scenario steps plus the seed's random faults); at
//! `duration_s` stop new riders, undo every fault and restore the replica counts (the heal);
//! then let the system settle until every servable ride is matched or `settle_s` runs out;
//! finally read the record, every inbox and the per-replica counters.
//!
//! The stages are methods of one run (`prepare`, `steady`, `heal`, `settle`, `collect`); the
//! kinds of workload (the load, the scripted demos) sit behind [`WorkloadRun`].
//!
//! All times in the evidence are milliseconds since the workload started (`t0`).

use crate::check;
use crate::target::Target;
use lastmile_platform::capacity::ServiceTime;
use lastmile_platform::clock::{instant_now, now_ms};
use lastmile_platform::coverage::RecoveryPath;
use lastmile_platform::http::CallPolicy;
use lastmile_platform::watch;
use lastmile_scenarios::faults::{timeline, TimelineStep};
use lastmile_scenarios::{Metric, Scenario, WorkloadKind};
use lastmile_services::domain::{Network, RideStatus};
use lastmile_services::matching::MatchingStats;
use lastmile_services::notification::Inbox;
use lastmile_services::trip::Export;
use lastmile_services::ServiceName;
use lastmile_workload::history::{History, Op, OpPhase};
use lastmile_workload::load::{self, LoadPlan, LoadSpec, Stage};
use lastmile_workload::wait::wait_until;
use lastmile_workload::{demo, multi_station, LastMileClient};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// How one run is set up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunConfig {
    /// The seed (random faults, workload, and the simulation itself).
    pub seed: u64,
    /// Whether the seed adds random faults (when the scenario enables them).
    pub random_faults: bool,
    /// Run the original matching design (waiting riders in each replica's memory).
    pub naive_matching: bool,
    /// Turn on the bug planted for the harness's own tests (simulation test builds only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub planted_bug: bool,
}

/// Counters of every matching replica at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    /// When (ms since t0).
    pub at_ms: u64,
    /// Replica name → its counters (replicas that did not answer are absent).
    pub replicas: BTreeMap<String, MatchingStats>,
}

/// matching-service's backlog at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BacklogSample {
    /// When (ms since t0).
    pub at_ms: u64,
    /// Messages ready in matching-service's queue, not yet delivered to a replica.
    pub messages: u64,
}

/// Everything a run left behind for the checkers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Evidence {
    /// The scenario's name.
    pub scenario: String,
    /// The run's configuration.
    pub config: RunConfig,
    /// Every step the run carried out, random ones included.
    pub timeline: Vec<TimelineStep>,
    /// The operation history; `at_ms` is relative to the history's start, see `t0_ms`.
    pub history: Vec<Op>,
    /// History time at which the workload (and the scenario clock) started.
    pub t0_ms: u64,
    /// Scenario time the faults were healed.
    pub heal_at_ms: u64,
    /// Scenario time the run ended.
    pub end_at_ms: u64,
    /// trip-service's clock (ms since epoch) at the end, to age rides.
    pub end_epoch_ms: u64,
    /// The ride deadline the services ran with.
    pub ride_ttl_ms: u64,
    /// The load's plan (drivers, routes, arrivals), for load scenarios.
    pub plan: Option<LoadPlan>,
    /// trip-service's record at the end (`None` if it could not be read: itself a failure).
    pub export: Option<Export>,
    /// Every user's notifications at the end.
    pub inboxes: BTreeMap<String, Inbox>,
    /// Users whose inbox could not be read at the end, with the last error.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unread_inboxes: BTreeMap<String, String>,
    /// Matching counters at the start and end of every phase.
    pub stats: Vec<StatsSnapshot>,
    /// Expectations of a scripted workload (demo, multi-station) that did not hold.
    pub scripted_violations: Vec<String>,
    /// Problems of the run itself (services never ready, a step that could not be applied).
    pub run_errors: Vec<String>,
    /// How often each recovery path ran (`None`: the target does not collect them).
    #[serde(default)]
    pub coverage: Option<BTreeMap<RecoveryPath, u64>>,
    /// Every dead-letter queue's messages at the end (`None`: the target cannot look).
    #[serde(default)]
    pub dead_letters: Option<BTreeMap<String, Vec<String>>>,
    /// matching-service's backlog, read with the counters when an expectation judges it (empty
    /// otherwise, or when the target cannot look).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backlog: Vec<BacklogSample>,
    /// The services the scenario gave a service time (`[service_time]`): their capacity is
    /// bounded on purpose.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub service_time: BTreeMap<String, ServiceTime>,
}

const NEMESIS: &str = "nemesis";
/// How often matching replicas' counters are read (work per replica is summed over these).
const STATS_INTERVAL_MS: u64 = 5_000;
/// How often a real-world run reports its counters.
const PROGRESS_INTERVAL_MS: u64 = 15_000;

/// The run's clock for progress lines (seconds of history).
fn clock(history: &History) -> String {
    format!("[{:>5.0} s]", history.now_ms() as f64 / 1000.0)
}

/// The workload's calls so far and the matching replicas' counters.
fn progress_line(history: &History, stats: Option<&StatsSnapshot>) -> String {
    let ops = history.ops();
    let calls = |phase: OpPhase| ops.iter().filter(|o| o.client != NEMESIS && o.phase == phase).count();
    let (ok, failed) = (calls(OpPhase::Ok), calls(OpPhase::Fail));
    let replicas = stats.map_or(0, |s| s.replicas.len());
    let matches: u64 = stats.map_or(0, |s| s.replicas.values().map(|r| r.matches).sum());
    format!("{} calls {ok} ok / {failed} failed; matching replicas {replicas}, their matches {matches}", clock(history))
}

/// Seconds to milliseconds.
fn ms(s: f64) -> u64 {
    (s * 1000.0).max(0.0) as u64
}

enum Due {
    Apply(usize),
    Undo(usize),
    Snapshot,
}

/// Why a run could not get going (recorded in the evidence's run errors, by its text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// The services did not all report ready in time.
    #[error("{0}")]
    NotReady(String),
    /// The workload's drivers and riders could not be registered.
    #[error("registration failed: {0}")]
    Registration(String),
    /// A task on the client node ended without an answer (it panicked or was cancelled).
    #[error("the readiness check failed: {0}")]
    ClientTask(String),
}

/// What the runner needs from a kind of workload: start it once every service is ready, and
/// say when the liveness phase may end early.
#[allow(async_fn_in_trait)] // used through generics only
pub trait WorkloadRun {
    /// Prepare (register users, ...) and start the workload on the target's client node; the
    /// task answers the workload's own broken expectations. `Err`: it could not start.
    async fn start<T: Target>(
        &mut self,
        target: &T,
        api: &LastMileClient,
        stage: watch::Receiver<Stage>,
        evidence: &mut Evidence,
    ) -> Result<tokio::task::JoinHandle<Vec<String>>, RunError>;

    /// Whether the system has converged, so the liveness phase can end (`finished`: the
    /// workload task has returned).
    async fn converged<T: Target>(&self, target: &T, api: &LastMileClient, finished: bool) -> bool;
}

/// Drivers looping routes and riders arriving at a rate, from a seeded plan.
struct LoadRun {
    spec: LoadSpec,
    network: Arc<Network>,
    seed: u64,
    plan: Option<Arc<LoadPlan>>,
}

impl WorkloadRun for LoadRun {
    async fn start<T: Target>(
        &mut self,
        target: &T,
        api: &LastMileClient,
        stage: watch::Receiver<Stage>,
        evidence: &mut Evidence,
    ) -> Result<tokio::task::JoinHandle<Vec<String>>, RunError> {
        let plan = Arc::new(load::plan(&self.spec, &self.network, self.seed));
        evidence.plan = Some((*plan).clone());
        self.plan = Some(plan.clone());
        let registered = {
            let (api, plan, seats) = (api.clone(), plan.clone(), self.spec.seats);
            target.spawn_client(async move { load::register(&api, &plan, seats).await })
        };
        if let Ok(Err(e)) = registered.await {
            return Err(RunError::Registration(e.to_string()));
        }
        let (api, net, spec) = (api.clone(), self.network.clone(), self.spec.clone());
        Ok(target.spawn_client(async move {
            load::run(api, plan, spec, net, stage).await;
            Vec::new()
        }))
    }

    async fn converged<T: Target>(&self, target: &T, api: &LastMileClient, _finished: bool) -> bool {
        converged(target, api, self.plan.as_deref()).await
    }
}

/// A scripted workload (the original demos): it ends by itself with its own verdict.
struct ScriptedRun(WorkloadKind);

impl WorkloadRun for ScriptedRun {
    async fn start<T: Target>(
        &mut self,
        target: &T,
        api: &LastMileClient,
        _stage: watch::Receiver<Stage>,
        _evidence: &mut Evidence,
    ) -> Result<tokio::task::JoinHandle<Vec<String>>, RunError> {
        let api = api.clone();
        Ok(match self.0 {
            WorkloadKind::MultiStation => target.spawn_client(async move {
                match multi_station::run(&api).await {
                    Ok(report) => report.violations(),
                    Err(e) => vec![e.to_string()],
                }
            }),
            _ => target.spawn_client(async move {
                match demo::run(&api, &demo::DemoTimeouts::default()).await {
                    Ok(report) => report.violations(),
                    Err(e) => vec![e.to_string()],
                }
            }),
        })
    }

    async fn converged<T: Target>(&self, _target: &T, _api: &LastMileClient, finished: bool) -> bool {
        finished
    }
}

/// Run `scenario` on `target`.
pub async fn run<T: Target>(scenario: &Scenario, config: &RunConfig, target: &mut T) -> Evidence {
    let w = &scenario.workload;
    match w.kind {
        WorkloadKind::Load => {
            let spec = LoadSpec {
                drivers: w.drivers,
                seats: w.seats,
                riders_per_minute: w.riders_per_minute,
                unserved_share: w.unserved_share,
                dwell: Duration::from_secs_f64(w.dwell_s),
                travel: Duration::from_secs_f64(w.travel_s),
                poll: Duration::from_secs_f64(w.poll_s),
                duration: Duration::from_secs_f64(scenario.duration_s()),
            };
            let workload =
                LoadRun { spec, network: Arc::new(Network::default_network()), seed: config.seed, plan: None };
            Run::new(scenario, config, target).go(workload).await
        }
        kind => Run::new(scenario, config, target).go(ScriptedRun(kind)).await,
    }
}

/// One run in progress: the stages `prepare` → `steady` → `heal` → `settle` → `collect`.
struct Run<'a, T: Target> {
    scenario: &'a Scenario,
    config: &'a RunConfig,
    target: &'a mut T,
    /// The timeline: the scenario's steps and the seed's random faults.
    steps: Vec<TimelineStep>,
    history: Arc<History>,
    api: LastMileClient,
    evidence: Evidence,
    /// Tells the workload and the probes when riders stop and when everything stops.
    stage: watch::Sender<Stage>,
    stage_rx: watch::Receiver<Stage>,
    /// When counter snapshots are due (scenario ms).
    snapshot_times: BTreeSet<u64>,
    /// The probes' tasks; they end with the stage.
    probes: Vec<tokio::task::JoinHandle<()>>,
    /// Counter reads under way, oldest first.
    reading: Vec<StatsRead>,
}

impl<'a, T: Target> Run<'a, T> {
    fn new(scenario: &'a Scenario, config: &'a RunConfig, target: &'a mut T) -> Self {
        let steps = timeline(scenario, config.seed, config.random_faults);
        let history = History::new();
        let w = &scenario.workload;
        let api = LastMileClient::new(&target.endpoints(), CallPolicy::default(), history.clone())
            .with_ride_wait(Duration::from_secs_f64(w.ride_ttl_s));
        let evidence = Evidence {
            scenario: scenario.scenario.name.clone(),
            config: config.clone(),
            timeline: steps.clone(),
            history: Vec::new(),
            t0_ms: 0,
            heal_at_ms: 0,
            end_at_ms: 0,
            end_epoch_ms: 0,
            ride_ttl_ms: ms(w.ride_ttl_s),
            plan: None,
            export: None,
            inboxes: BTreeMap::new(),
            unread_inboxes: BTreeMap::new(),
            stats: Vec::new(),
            scripted_violations: Vec::new(),
            run_errors: Vec::new(),
            coverage: None,
            dead_letters: None,
            backlog: Vec::new(),
            service_time: scenario.service_time.iter().map(|(k, t)| (k.clone(), *t.get_ref())).collect(),
        };
        let (stage, stage_rx) = watch::channel(Stage::Running);
        Run {
            scenario,
            config,
            target,
            steps,
            history,
            api,
            evidence,
            stage,
            stage_rx,
            snapshot_times: BTreeSet::new(),
            probes: Vec::new(),
            reading: Vec::new(),
        }
    }

    async fn go<W: WorkloadRun>(mut self, mut workload: W) -> Evidence {
        if let Err(e) = self.prepare().await {
            self.evidence.run_errors.push(e.to_string());
            return finish(self.evidence, &self.history);
        }
        let task = match workload.start(&*self.target, &self.api, self.stage_rx.clone(), &mut self.evidence).await {
            Ok(task) => task,
            Err(e) => {
                self.evidence.run_errors.push(e.to_string());
                return finish(self.evidence, &self.history);
            }
        };
        let t0 = self.steady().await;
        let duration_ms = ms(self.scenario.duration_s());
        tokio::time::sleep_until(t0 + Duration::from_millis(duration_ms)).await;
        self.heal(t0).await;
        self.settle(t0, &workload, &task).await;
        self.stage.send(Stage::Stopped);
        match task.await {
            Ok(violations) => self.evidence.scripted_violations = violations,
            Err(e) => self.evidence.run_errors.push(format!("the workload task failed: {e}")),
        }
        for p in std::mem::take(&mut self.probes) {
            let _ = p.await;
        }
        self.collect().await
    }

    /// Wait until every service is ready.
    async fn prepare(&mut self) -> Result<(), RunError> {
        let ready = {
            let api = self.api.clone();
            self.target.spawn_client(async move {
                wait_until("every service ready", Duration::from_secs(120), || async {
                    api.all_ready().await.then_some(())
                })
                .await
            })
        };
        match ready.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(RunError::NotReady(e.to_string())),
            Err(e) => Err(RunError::ClientTask(e.to_string())),
        }
    }

    /// Start the clock and the probes, and play the timeline (steps, their undos, counter
    /// snapshots) up to the scenario's duration. Answers the run's start.
    async fn steady(&mut self) -> tokio::time::Instant {
        let (config, scenario) = (self.config, self.scenario);
        let history = self.history.clone();
        self.evidence.t0_ms = history.now_ms();
        let t0 = instant_now();
        history.record(
            NEMESIS,
            "start",
            OpPhase::Ok,
            json!({ "seed": config.seed, "scenario": scenario.scenario.name }),
        );
        if scenario.workload.hostile_per_minute > 0.0 {
            let (endpoints, broker, history) = (self.target.endpoints(), self.target.broker(), history.clone());
            let (per_minute, rx) = (scenario.workload.hostile_per_minute, self.stage_rx.clone());
            self.probes.push(self.target.spawn_client(async move {
                let stop = async move {
                    rx.wait_for(|s| *s != Stage::Running).await;
                };
                lastmile_workload::hostile::run(endpoints, broker, per_minute, history, stop).await;
            }));
        }
        for probe in &scenario.probes {
            let urls = self.target.endpoints();
            let base = match probe.target.as_str() {
                "user-service" => urls.user,
                "location-service" => urls.location,
                "trip-service" => urls.trip,
                "notification-service" => urls.notification,
                // A probe of a service without a single front (matching): its first replica.
                other => other
                    .parse::<ServiceName>()
                    .ok()
                    .and_then(|s| self.target.replica_urls(s).first().map(|r| r.1.clone()))
                    .unwrap_or_default(),
            };
            let (api, probe, rx) = (self.api.clone(), probe.clone(), self.stage_rx.clone());
            self.probes.push(self.target.spawn_client(async move {
                let who = format!("probe:{}", probe.name);
                loop {
                    let _ = api.probe(&who, "probe", &base, &probe.path).await;
                    tokio::select! {
                        biased;
                        _ = tokio::time::sleep(Duration::from_secs_f64(probe.every_s)) => {}
                        _ = rx.wait_for(|s| *s == Stage::Stopped) => return,
                    }
                }
            }));
        }

        // Every moment something is due, in time order: steps, their undos, counter snapshots.
        let duration_ms = ms(scenario.duration_s());
        let settle_ms = ms(scenario.scenario.settle_s);
        let mut agenda: Vec<(u64, Due)> = Vec::new();
        for (i, step) in self.steps.iter().enumerate() {
            agenda.push((ms(step.at_s), Due::Apply(i)));
            if let Some(for_s) = step.for_s {
                let end = ms(step.at_s + for_s);
                if end < duration_ms {
                    agenda.push((end, Due::Undo(i)));
                }
            }
        }
        self.snapshot_times = (0..duration_ms + settle_ms).step_by(STATS_INTERVAL_MS as usize).collect();
        for p in &scenario.phases {
            self.snapshot_times.insert(ms(p.from_s));
            self.snapshot_times.insert(ms(p.to_s));
        }
        for t in &self.snapshot_times {
            if *t < duration_ms {
                agenda.push((*t, Due::Snapshot));
            }
        }
        // At a phase boundary the counters are read before the steps due then: the end of one
        // phase is the start of the next, and new replicas start from zero anyway.
        agenda.sort_by_key(|(t, d)| (*t, !matches!(d, Due::Snapshot)));
        for (at, due) in agenda {
            tokio::time::sleep_until(t0 + Duration::from_millis(at)).await;
            match due {
                Due::Apply(i) => apply(self.target, &history, (i, &self.steps[i]), false, &mut self.evidence).await,
                Due::Undo(i) => apply(self.target, &history, (i, &self.steps[i]), true, &mut self.evidence).await,
                Due::Snapshot => self.snapshot(at).await,
            }
        }
        t0
    }

    /// Start reading every matching replica's counters, without holding up the timeline (and
    /// tell a real-world user how it goes, from the reads finished so far).
    async fn snapshot(&mut self, at: u64) {
        self.reading.push(StatsRead::start(&*self.target, &self.api, at));
        if self.scenario.expectations.iter().any(|x| x.metric == Metric::BacklogChange) {
            if let Some(messages) = self.target.backlog(ServiceName::Matching).await {
                self.evidence.backlog.push(BacklogSample { at_ms: at, messages });
            }
        }
        self.gather(false).await;
        if at.is_multiple_of(PROGRESS_INTERVAL_MS) {
            let (history, stats) = (&self.history, self.evidence.stats.last());
            self.target.progress(&|| progress_line(history, stats));
        }
    }

    /// The rollback: no new riders, every fault undone, replica counts restored.
    async fn heal(&mut self, t0: tokio::time::Instant) {
        let history = self.history.clone();
        self.stage.send(Stage::Settling);
        let replicas: BTreeMap<ServiceName, usize> =
            ServiceName::ALL.into_iter().map(|s| (s, self.scenario.final_replicas(s.as_str()))).collect();
        let by_name: BTreeMap<&str, usize> = replicas.iter().map(|(s, n)| (s.as_str(), *n)).collect();
        history.record(NEMESIS, "heal", OpPhase::Invoke, json!(by_name));
        self.target.progress(&|| format!("{} heal: no new riders, faults undone, replicas restored", clock(&history)));
        match self.target.heal(&replicas).await {
            Ok(done) => {
                self.target
                    .progress(&|| format!("{} {done}; waiting for every servable ride to be served", clock(&history)));
                history.record(NEMESIS, "heal", OpPhase::Ok, json!(done))
            }
            Err(e) => {
                history.record(NEMESIS, "heal", OpPhase::Fail, json!(e.to_string()));
                self.evidence.run_errors.push(format!("heal failed: {e}"));
            }
        }
        self.evidence.heal_at_ms = instant_now().duration_since(t0).as_millis() as u64;
        record_replicas(&*self.target, &history, &replicas).await;
    }

    /// The liveness phase: wait until the workload says the system converged, or time runs out.
    async fn settle<W: WorkloadRun>(
        &mut self,
        t0: tokio::time::Instant,
        workload: &W,
        task: &tokio::task::JoinHandle<Vec<String>>,
    ) {
        let duration_ms = ms(self.scenario.duration_s());
        let settle_end = t0 + Duration::from_millis(duration_ms + ms(self.scenario.scenario.settle_s));
        let mut pending: Vec<u64> = self.snapshot_times.iter().copied().filter(|t| *t >= duration_ms).collect();
        loop {
            let now_rel = instant_now().duration_since(t0).as_millis() as u64;
            while pending.first().is_some_and(|t| *t <= now_rel) {
                let at = pending.remove(0);
                self.snapshot(at).await;
            }
            self.gather(false).await;
            if instant_now() >= settle_end || workload.converged(&*self.target, &self.api, task.is_finished()).await {
                break;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        self.evidence.end_at_ms = instant_now().duration_since(t0).as_millis() as u64;
        self.evidence.end_epoch_ms = now_ms();
        self.reading.push(StatsRead::start(&*self.target, &self.api, self.evidence.end_at_ms));
        self.gather(true).await;
        for at in pending {
            // Phases ending after convergence end now.
            let mut s = self.evidence.stats.last().cloned().expect("just pushed");
            s.at_ms = at;
            self.evidence.stats.push(s);
        }
    }

    /// Move the finished counter reads (all of them if `all`), in order, into the evidence.
    async fn gather(&mut self, all: bool) {
        while self.reading.first().is_some_and(|r| all || r.is_finished()) {
            let read = self.reading.remove(0);
            self.evidence.stats.push(read.finish().await);
        }
    }

    /// The evidence: every service ready again, the record, every inbox, what the target knows.
    async fn collect(mut self) -> Evidence {
        self.history.record(NEMESIS, "stop", OpPhase::Ok, json!({}));
        let mut ready_checks: Vec<(String, String)> = {
            let e = self.target.endpoints();
            vec![
                ("user-service".into(), e.user),
                ("location-service".into(), e.location),
                ("trip-service".into(), e.trip),
                ("notification-service".into(), e.notification),
            ]
        };
        ready_checks.extend(self.target.replica_urls(ServiceName::Matching));
        let final_read = {
            let (api, plan) = (self.api.clone(), self.evidence.plan.clone());
            self.target.spawn_client(async move {
                for (name, url) in ready_checks {
                    let _ = api.probe(&format!("final:{name}"), "final_ready", &url, "/ready").await;
                }
                let export = api.export().await.ok();
                let mut users: BTreeSet<String> = BTreeSet::new();
                if let Some(export) = &export {
                    for t in &export.trips {
                        users.insert(t.driver_id.clone());
                        users.extend(t.rider_ids.iter().cloned());
                    }
                    users.extend(export.rides.iter().map(|r| r.rider_id.clone()));
                }
                if let Some(plan) = plan {
                    users.extend(plan.drivers.iter().map(|d| d.driver_id.clone()));
                }
                let (inboxes, unread) = read_inboxes(&api, users, FINAL_READ_PATIENCE).await;
                (export, inboxes, unread)
            })
        };
        match final_read.await {
            Ok((export, inboxes, unread)) => {
                self.evidence.export = export;
                self.evidence.inboxes = inboxes;
                self.evidence.unread_inboxes = unread;
            }
            Err(e) => self.evidence.run_errors.push(format!("reading the final state failed: {e}")),
        }
        self.evidence.coverage = self.target.coverage();
        self.evidence.dead_letters = self.target.dead_letters().await;
        finish(self.evidence, &self.history)
    }
}

fn finish(mut evidence: Evidence, history: &Arc<History>) -> Evidence {
    evidence.history = history.ops();
    evidence
}

/// Apply (or undo) step `index` of the timeline; the history records when it really happened,
/// which `check` uses to know how long a fault was in force.
async fn apply<T: Target>(
    target: &mut T,
    history: &History,
    (index, step): (usize, &TimelineStep),
    undo: bool,
    evidence: &mut Evidence,
) {
    let action = if undo { "undo" } else { "apply" };
    let detail = json!({ "step": step.to_string(), "index": index });
    if !target.supports(step.action) {
        if !undo {
            history.record(
                NEMESIS,
                "skip",
                OpPhase::Ok,
                json!({ "step": step.to_string(), "why": "not supported by this target" }),
            );
        }
        return;
    }
    history.record(NEMESIS, action, OpPhase::Invoke, detail);
    let result = if undo { target.undo(step).await } else { target.apply(step).await };
    target.progress(&|| match &result {
        Ok(done) => format!("{action} {step}: {done}"),
        Err(e) => format!("{action} {step}: FAILED {e}"),
    });
    match result {
        Ok(done) => history.record(NEMESIS, action, OpPhase::Ok, json!(done)),
        Err(e) => {
            history.record(NEMESIS, action, OpPhase::Fail, json!(e.to_string()));
            evidence.run_errors.push(format!("{action} {step}: {e}"));
        }
    }
}

/// The replicas running after the heal next to the counts it had to restore, for
/// `check::replicas_restored`.
async fn record_replicas<T: Target>(target: &T, history: &History, wanted: &BTreeMap<ServiceName, usize>) {
    let mut counts = serde_json::Map::new();
    for (service, want) in wanted {
        let have = match target.running(*service).await {
            Ok(n) => json!(n),
            Err(e) => json!(e.to_string()),
        };
        counts.insert(service.as_str().to_string(), json!({ "want": want, "have": have }));
    }
    history.record(NEMESIS, "replicas", OpPhase::Ok, serde_json::Value::Object(counts));
}

/// One reading of every matching replica's counters, under way. Each replica is read by its
/// own task: a paused or cut-off replica answers late or never, and neither the other replicas'
/// readings nor a timeline step due meanwhile may wait for it (a step applied late would stretch
/// the fault the scenario asked for).
struct StatsRead {
    at_ms: u64,
    reads: Vec<tokio::task::JoinHandle<Option<(String, MatchingStats)>>>,
}

impl StatsRead {
    fn start<T: Target>(target: &T, api: &LastMileClient, at_ms: u64) -> StatsRead {
        let reads = target
            .replica_urls(ServiceName::Matching)
            .into_iter()
            .map(|(name, url)| {
                let api = api.clone();
                target.spawn_client(async move {
                    let v = api.probe("harness", "matching_stats", &url, "/stats").await.ok()?;
                    Some((name, serde_json::from_value::<MatchingStats>(v).ok()?))
                })
            })
            .collect();
        StatsRead { at_ms, reads }
    }

    fn is_finished(&self) -> bool {
        self.reads.iter().all(|r| r.is_finished())
    }

    async fn finish(self) -> StatsSnapshot {
        let mut replicas = BTreeMap::new();
        for read in self.reads {
            if let Ok(Some((name, stats))) = read.await {
                replicas.insert(name, stats);
            }
        }
        StatsSnapshot { at_ms: self.at_ms, replicas }
    }
}

/// How long the final read keeps trying an inbox that does not answer (a breaker cooling
/// down, a slow sync): a read that fails once must not pass for notifications never sent.
const FINAL_READ_PATIENCE: Duration = Duration::from_secs(30);

/// Each user's inbox; a failed read is tried again until `patience` has passed since the first
/// read (then each remaining user gets one try). The users whose inbox stayed unreadable come
/// back with the last error.
async fn read_inboxes(
    api: &LastMileClient,
    users: impl IntoIterator<Item = String>,
    patience: Duration,
) -> (BTreeMap<String, Inbox>, BTreeMap<String, String>) {
    let deadline = instant_now() + patience;
    let (mut read, mut unread) = (BTreeMap::new(), BTreeMap::new());
    for user in users {
        loop {
            match api.inbox(&user).await {
                Ok(inbox) => {
                    read.insert(user, inbox);
                    break;
                }
                Err(_) if instant_now() < deadline => tokio::time::sleep(Duration::from_millis(500)).await,
                Err(e) => {
                    unread.insert(user, e.to_string());
                    break;
                }
            }
        }
    }
    (read, unread)
}

/// Whether every servable ride that was accepted is completed and everyone it concerns has
/// been told (notifications trail the trips: ending the run at the last completion would judge
/// an inbox before its events were consumed).
async fn converged<T: Target>(target: &T, api: &LastMileClient, plan: Option<&LoadPlan>) -> bool {
    let Some(plan) = plan else { return true };
    let servable: BTreeSet<String> = plan.arrivals.iter().filter(|a| a.servable).map(|a| a.ride_id.clone()).collect();
    let api = api.clone();
    let check = target.spawn_client(async move {
        let Ok(export) = api.export().await else { return false };
        let served = export
            .rides
            .iter()
            .filter(|r| servable.contains(&r.ride_id))
            .all(|r| matches!(r.status, RideStatus::Completed { .. }));
        if !served {
            return false;
        }
        let owed = check::owed_notifications(&export);
        let users: BTreeSet<String> = owed.iter().map(|o| o.user.clone()).collect();
        let (inboxes, unread) = read_inboxes(&api, users, Duration::ZERO).await;
        unread.is_empty() && owed.iter().all(|o| check::delivered(o, inboxes.get(&o.user)))
    });
    check.await.unwrap_or(false)
}
