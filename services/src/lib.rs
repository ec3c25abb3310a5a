//! The five LastMile services: user, location, trip, matching and notification.
//!
//! Each service is a library: `start` wires its state, broker consumers and HTTP `Router`;
//! [`run`] serves it on a listener until a shutdown signal, then stops consuming, finishes the
//! work in flight and returns. The same code runs on real tokio with RabbitMQ and inside the
//! madsim simulation: it talks to the world only through `lastmile-platform`.
//!
//! The ride flow: register (user) → shift (trip) → location updates (location) →
//! `driver.near_station` → matching reads the waiting rides and the driver's free seats from
//! trip-service and *proposes* a match → trip-service commits it with a compare-and-set (every
//! rider still waiting, the driver still has the seats) → `match.found` → notifications →
//! pickup → complete → seats released. Unmatched rides expire with a reason.
//!
//! # Layout
//! - [`domain`]: stations, users, shifts, rides, trips, the trip state machine, the matching rule.
//! - [`events`]: the event envelope, routing keys and the broker topology.
//! - [`config`]: configuration with its defaults, and the service names.
//! - [`cli`]: the command line of one service (flags and environment), shared by the binaries.
//! - [`store`]: journaled state with a transactional outbox (trip, user, notification).
//! - [`directory`]: registered users as other services see them.
//! - [`api`]: routes every service shares (`/health`, `/ready`) and the service runner.
//! - [`user`], [`location`], [`trip`], [`matching`], [`notification`]: the services.

pub mod api;
pub mod cli;
pub mod config;
pub mod directory;
pub mod domain;
pub mod events;
pub mod location;
pub mod matching;
pub mod notification;
pub mod store;
pub mod trip;
pub mod user;

pub use api::{run, start, Service};
pub use config::{Config, ServiceName, PLANTED_BUG_BUILT};
