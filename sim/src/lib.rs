//! The deterministic world: LastMile's five services, a simulated RabbitMQ-like broker and the
//! clients, all as nodes of one madsim simulation driven by a seed.
//!
//! A run is a pure function of its seed: the same seed gives the same history, byte for byte
//! (checked by comparing [`lastmile_workload::History`] digests). Only meaningful in the madsim
//! build flavour (`cargo sim ...`, `cargo simtest`); in the normal flavour this crate is empty.
//!
//! # Layout
//! - `cluster`: the simulated deployment — a broker node, one node per service replica behind
//!   the service's virtual IP (DNS name + IPVS round-robin, like a Kubernetes Service), a client
//!   node for workloads, and fault operations (kill, restart, scale).
//! - `runs`: whole runs as `(seed) → outcome` with their history digest and timings.

#[cfg(madsim)]
pub mod cluster;
#[cfg(madsim)]
pub mod runs;

/// The command that replays a simulated demo run with `seed`.
pub fn replay_command(seed: u64) -> String {
    format!("cargo sim demo --seed {seed}")
}
