//! Workloads that drive a running LastMile deployment over HTTP, in either world, and record
//! what every client saw in a [`History`].
//!
//! The same code runs against in-process services on real tokio, against processes, and inside
//! the madsim simulation (where `HttpClient` rides on simulated TCP and timestamps are simulated).
//!
//! # Layout
//! - [`history`]: the operation history (invoke / ok / fail / timeout) and its digest.
//! - [`client`]: a typed LastMile API client that records every call in the history.
//! - [`demo`]: the original mixed demo (3 drivers, 7 riders, 3 stations) with its expectations.
//! - [`wait`]: waiting for conditions instead of sleeping.

pub mod client;
pub mod demo;
pub mod history;
pub mod hostile;
pub mod load;
pub mod multi_station;
pub mod wait;

pub use client::{Endpoints, LastMileClient};
pub use history::{History, Op, OpPhase};
