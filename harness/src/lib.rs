//! The harness both worlds share: run a scenario against a [`Target`] (the simulated cluster, or
//! real processes), collect the evidence, and judge it.
//!
//! The runner drives the workload and the timeline and records everything in one history;
//! the checkers are separate from both and only read the evidence, so the same checkers judge a
//! simulated run and a real one.
//!
//! # Layout
//! - [`target`]: what a scenario needs from a deployment (scale, kill, partition, heal, ...),
//!   services named by `ServiceName`, failures as a [`TargetError`].
//! - [`runner`]: runs a scenario on a target: workload, probes, timeline, heal, settle, evidence.
//! - [`metrics`]: per-phase numbers computed from the history.
//! - [`docs`]: the commands the documentation quotes, for tests that hold the docs to the CLIs.
//! - [`check`]: the safety and liveness checkers and the scenario's expectations.
//! - [`report`]: the verdict as a JSON report (no wall-clock values), a human summary and
//!   JUnit XML.
//! - [`sweep`]: a sweep's results as JSON lines (a declared seed range, a verdict per seed) and
//!   their merge from any runs: passed, failed with replay commands, missing seeds.
//! - [`html`]: a run as one self-contained HTML page: timeline, faults, per-service success,
//!   matches, violations where they happened, work per replica, recovery paths.

pub mod check;
pub mod docs;
pub mod html;
pub mod metrics;
pub mod report;
pub mod runner;
pub mod sweep;
pub mod target;

pub use runner::{run, BacklogSample, Evidence, RunConfig};
pub use target::{Target, TargetError};
