//! The deterministic world: LastMile's five services, a simulated RabbitMQ-like broker and the
//! clients, all as nodes of one madsim simulation driven by a seed.
//!
//! A run is `(scenario, seed) → journal`, a pure function: the same seed gives the same history,
//! byte for byte (the journal carries its digest, and `--check-determinism` compares two runs
//! operation by operation). Only meaningful in the madsim build flavour (`cargo sim ...`,
//! `cargo simtest`); in the normal flavour this crate holds only [`replay_command`].
//!
//! # Layout
//! - `cluster`: the simulated deployment — a broker node, one node per service replica behind
//!   the service's virtual IP (DNS name + IPVS round-robin, like a Kubernetes Service), a client
//!   node for workloads, and node operations (scale, kill, restart, pause, partition, network).
//! - `target`: the cluster as a scenario target: timeline steps → node operations, and the heal.
//! - `runs`: whole runs, sweeps over seeds, and the determinism check.

#[cfg(madsim)]
pub mod cluster;
#[cfg(madsim)]
pub mod runs;
#[cfg(madsim)]
pub mod target;

/// The one command that replays a simulated run exactly.
pub fn replay_command(scenario_file: &str, seed: u64, random_faults: bool, naive_matching: bool) -> String {
    let mut cmd = format!("cargo sim run {scenario_file} --seed {seed}");
    if !random_faults {
        cmd.push_str(" --no-random-faults");
    }
    if naive_matching {
        cmd.push_str(" --naive-matching");
    }
    cmd
}
