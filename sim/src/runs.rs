//! Whole simulated runs: `(seed) → outcome`, with the history digest that proves determinism.

use crate::cluster::{ClusterConfig, SimCluster};
use lastmile_workload::demo::{self, DemoReport, DemoTimeouts};
use lastmile_workload::History;
use madsim::runtime::Runtime;
use std::time::Duration;

/// The outcome of one simulated run.
#[derive(Debug)]
pub struct SimRun<T> {
    /// The seed that produced it.
    pub seed: u64,
    /// What the workload reported (or why it could not finish).
    pub outcome: Result<T, String>,
    /// Digest of the full operation history.
    pub digest: String,
    /// Operations recorded.
    pub ops: usize,
    /// Simulated time the run took.
    pub simulated: Duration,
}

/// Run the original demo in a fresh simulation seeded with `seed`.
pub fn demo(seed: u64) -> SimRun<DemoReport> {
    let runtime = Runtime::with_seed_and_config(seed, madsim::Config::default());
    runtime.block_on(async move {
        let cluster = SimCluster::start(&ClusterConfig::default());
        let history = History::new();
        let api = cluster.api(history.clone());
        let started = lastmile_platform::clock::instant_now();
        let outcome = cluster
            .client_node()
            .spawn(async move { demo::run(&api, &DemoTimeouts::default()).await.map_err(|e| e.to_string()) })
            .await
            .unwrap_or_else(|e| Err(format!("the workload task failed: {e}")));
        SimRun { seed, outcome, digest: history.digest(), ops: history.len(), simulated: started.elapsed() }
    })
}
