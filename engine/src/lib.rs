//! LastMile's matching engine: which waiting riders a driver picks up at a metro station.
//!
//! This crate is pure: no I/O, no clock, no randomness, no hashing with a random seed. Given the
//! same sequence of calls it returns the same answers on every machine, which is what lets the
//! services run it inside the deterministic simulation and lets the benchmarks compare it with the
//! original linear scan.
//!
//! # The matching rule ("golden logic")
//!
//! Riders wait at metro stations (`"ST101"` ..= `"ST112"`) for a destination, which is either a
//! station id or an area name. Each accepted ride request gets a sequence number `seq`, increasing
//! in arrival order. A driver on a shift follows a route (an ordered list of station ids) towards
//! a final destination, with some free seats.
//!
//! When a driver reaches a station on its route, the riders waiting **at that station** whose
//! destination the driver **serves** are matched first-come-first-served (lowest `seq` first), up
//! to the driver's free seats. A driver serves a destination if it
//!
//! 1. equals the driver's final destination, or
//! 2. is a station on the driver's route **strictly after** the current station.
//!
//! Ties on `seq` (which the services never produce) are broken by `ride_id`, so the answer is
//! always a deterministic function of the waiting riders. Riders at other stations, and riders
//! whose destination the driver does not serve, are never touched.
//!
//! [`DriverOffer::for_route`] turns a route into the set of served destinations;
//! [`MatchingEngine::select`] applies the rule and [`MatchingEngine::take`] also removes the
//! matched riders. [`naive_select`] is the original linear scan, kept as the benchmark baseline
//! and as the oracle of the property tests.
//!
//! ```
//! use lastmile_engine::{DriverOffer, MatchingEngine, WaitingRide};
//!
//! let mut engine = MatchingEngine::new();
//! for (seq, (id, destination)) in [("r1", "ST105"), ("r2", "Whitefield"), ("r3", "ST102")]
//!     .into_iter()
//!     .enumerate()
//! {
//!     engine.insert(WaitingRide::new(id, "ST103", destination, seq as u64));
//! }
//! let route: Vec<String> = ["ST102", "ST103", "ST105"].map(String::from).into();
//! let offer = DriverOffer::for_route("d1", "ST103", &route, "Whitefield", 4);
//! let matched: Vec<_> = engine.take(&offer).into_iter().map(|r| r.ride_id).collect();
//! // ST102 is behind the driver: r3 keeps waiting.
//! assert_eq!(matched, ["r1", "r2"]);
//! assert_eq!(engine.waiting_at("ST103"), 1);
//! ```
//!
//! # Cost
//!
//! The engine indexes waiting riders by station, then destination, then `seq`. A driver event
//! merges the FIFO queues of the served destinations at its station with a heap of one entry per
//! destination and stops after `free_seats`: O(d log d + k log n) for d served destinations and k
//! matched riders, independent of how many riders wait elsewhere or for other destinations.
//! [`naive_select`] is O(n log n) in all waiting riders.
//!
//! # Layout
//! - [`ride`]: the values exchanged with the services — [`WaitingRide`] and [`DriverOffer`],
//!   including the route-to-served-destinations rule.
//! - [`engine`]: [`MatchingEngine`], the station → destination → `seq` index and the k-way merge.
//! - [`naive`]: [`naive_select`], the linear-scan baseline and test oracle.

pub mod engine;
pub mod naive;
pub mod ride;

pub use engine::MatchingEngine;
pub use naive::naive_select;
pub use ride::{DriverOffer, WaitingRide};
