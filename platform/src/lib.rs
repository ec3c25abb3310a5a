//! The platform layer: the one seam between LastMile's services and the world they run in.
//!
//! Service code is written against this crate only. Each module has one implementation for real
//! tokio (lapin, `axum::serve`, files with fsync) and one for the deterministic madsim simulation
//! (our simulated broker node, hyper over madsim's `TcpStream`, the simulated node disk).
//! `cfg(madsim)` appears in this crate and nowhere in service logic.
//!
//! # Layout
//! - [`auth`]: the service token internal endpoints require, compared in constant time.
//! - [`capacity`]: a replica's per-request service time and concurrency (off unless set), so
//!   load beyond a replica's capacity queues and scaling out shows.
//! - [`broker`]: publish with confirm, consume with prefetch, ack / nack / redelivered, topology
//!   (topic exchange, durable queues with a delivery limit and a dead-letter queue), and the
//!   consumer loop that reconnects and never crash-loops on a poison message.
//!   - `broker::core`: RabbitMQ's reliability semantics as a pure state machine, shared by the
//!     simulated broker node and by benchmarks.
//!   - `broker::amqp` (real) / `broker::sim` (simulated client and broker node).
//! - [`http`]: serving an axum `Router` in both worlds, JSON errors at the edge, and the one
//!   service-to-service client (timeouts, jittered retries, circuit breaker).
//! - [`id`]: the one identifier type for ids taken from HTTP or a message (1–64 of
//!   `[A-Za-z0-9-_.:]`), checked where they enter.
//! - [`metrics`]: Prometheus counters and gauges for `GET /metrics`.
//! - [`storage`]: an append-only journal with fsync (real file or simulated node disk); only
//!   what was synced survives a crash, and a torn last record is dropped on replay.
//! - [`coverage`]: counts of the recovery paths a run exercised (redeliveries, conflicts,
//!   retries, breakers, dead letters, replays, torn tails, crashes).
//! - [`faults`]: crash points (before an ack, before a reply, before a publish confirm is
//!   recorded, in the middle of a sync) that a simulated fault plan arms; off in the real world.
//! - [`clock`]: wall-clock milliseconds and randomness that are simulated (and seeded) under
//!   madsim.
//! - [`service`]: the five services by name (one list for every crate).
//! - [`rng`]: [`rng::SeedRng`], the one seeded generator of plans, workloads and bench inputs.
//! - [`shutdown`]: a cloneable shutdown signal for graceful stops.
//! - [`watch`]: a single-value channel whose wake-up order is deterministic under simulation.

pub mod auth;
pub mod broker;
pub mod capacity;
pub mod clock;
pub mod coverage;
pub mod faults;
pub mod fresh;
pub mod http;
pub mod id;
pub mod metrics;
pub mod rng;
pub mod service;
pub mod shutdown;
pub mod storage;
pub mod watch;
