//! What a scenario needs from a deployment. One implementation drives the simulated cluster;
//! the real world's drive processes or Kubernetes.

use lastmile_platform::coverage::RecoveryPath;
use lastmile_scenarios::faults::TimelineStep;
use lastmile_scenarios::Action;
use lastmile_workload::Endpoints;
use std::collections::BTreeMap;
use std::future::Future;

/// A deployment a scenario can run against.
#[allow(async_fn_in_trait)] // used through generics only; the runner needs no Send bound
pub trait Target {
    /// Spawn a task where clients run (the simulation's client node, or the local runtime).
    fn spawn_client<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static;

    /// Where clients reach the services.
    fn endpoints(&self) -> Endpoints;

    /// Where a client may publish to the services' broker (for the hostile client), if it can.
    fn broker(&self) -> Option<lastmile_workload::hostile::BrokerAccess> {
        None
    }

    /// Each running replica of `service` as (name, base URL), for per-replica probes.
    fn replica_urls(&self, service: &str) -> Vec<(String, String)>;

    /// Whether this target can carry out `action` at all (a local run cannot partition a
    /// process, for instance). Steps it cannot do are skipped and recorded as skipped.
    fn supports(&self, action: Action) -> bool {
        let _ = action;
        true
    }

    /// How many replicas of `service` run now (started and not killed; on Kubernetes, ready
    /// pods). Read after the heal to show every count was restored.
    async fn running(&self, service: &str) -> Result<usize, String>;

    /// Tell the person running a long real-world run what just happened (a step carried out,
    /// the counters so far). The simulation stays quiet.
    /// `line` is only built when the target shows progress.
    fn progress(&self, line: &dyn Fn() -> String) {
        let _ = line;
    }

    /// The logs of every replica of `service`: (replica, text).
    async fn logs(&self, service: &str) -> Result<Vec<(String, String)>, String> {
        Err(format!("this target keeps no logs of {service}"))
    }

    /// How often each recovery path ran in the services so far (`None`: this target does not
    /// collect them; the simulation does).
    fn coverage(&self) -> Option<BTreeMap<RecoveryPath, u64>> {
        None
    }

    /// Every message in a dead-letter queue now, by queue, as `message id (routing key)`
    /// (`None`: this target cannot look).
    async fn dead_letters(&self) -> Option<BTreeMap<String, Vec<String>>> {
        None
    }

    /// Carry out one step of the timeline; the answer says what was done.
    async fn apply(&mut self, step: &TimelineStep) -> Result<String, String>;

    /// Undo a step whose `for_s` ran out (restart the killed, unclog the partitioned, ...).
    async fn undo(&mut self, step: &TimelineStep) -> Result<String, String>;

    /// Undo every fault still in force and set each service to `replicas` (the rollback).
    async fn heal(&mut self, replicas: &BTreeMap<String, usize>) -> Result<String, String>;
}
