//! Deterministic workloads for LastMile's benchmarks.
//!
//! Every input is generated from a fixed seed by a tiny xorshift generator, so two runs (or two
//! machines) measure exactly the same riders, drivers and event order. The bench targets in
//! `benches/` only time code; building the inputs lives here, where other benchmarks (e.g. the
//! simulated broker) can reuse it and where unit tests check the workloads are what the numbers
//! claim.
//!
//! The city: 12 metro stations `ST101` ..= `ST112`; riders go to one of 8 destinations (5 of the
//! stations and 3 areas). Drivers follow a 5-station route towards one of those destinations.
//!
//! # Layout
//! - [`workload`](mod@workload): waiting-rider backlogs, driver offers, the mixed [`Event`]
//!   stream, and [`apply`] / [`apply_naive`] which replay an event on the engine or on the naive
//!   baseline.

pub mod workload;

pub use lastmile_platform::rng::SeedRng;
pub use workload::{
    apply, apply_naive, driver_offer, waiting_rides, workload, Event, Workload, DESTINATIONS, STATIONS,
};
