//! The engine against the original linear scan ([`naive_select`]) on random workloads: ride
//! requests, redeliveries, cancellations and driver arrivals (alone or in batches) over 12
//! stations and 8 destinations. Every driver event must pick exactly the riders the naive scan
//! picks over the same waiting riders.
//!
//! The proptest seed is fixed unless `PROPTEST_RNG_SEED` is set; the number of cases follows
//! `PROPTEST_CASES` (default 256). Both are printed at the start of the run.

use std::cell::Cell;

use lastmile_engine::{naive_select, DriverOffer, MatchingEngine, WaitingRide};
use proptest::prelude::*;
use proptest::sample::{subsequence, Index};
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

/// The seed used when `PROPTEST_RNG_SEED` is not set, so a plain `cargo test` is reproducible.
const DEFAULT_SEED: u64 = 0x1a57_311e;

const STATIONS: [&str; 12] =
    ["ST101", "ST102", "ST103", "ST104", "ST105", "ST106", "ST107", "ST108", "ST109", "ST110", "ST111", "ST112"];
const DESTINATIONS: [&str; 8] =
    ["ST103", "ST105", "ST107", "ST109", "ST111", "Whitefield", "Koramangala", "Indiranagar"];

#[derive(Clone, Debug)]
struct Driver {
    /// Indices into `STATIONS`, in driving order.
    route: Vec<usize>,
    /// Index into `DESTINATIONS`.
    destination: usize,
    free_seats: u32,
}

#[derive(Clone, Debug)]
enum Op {
    /// A new ride request, with the next `seq`.
    Request { station: usize, destination: usize },
    /// A ride already issued (waiting, matched or cancelled) delivered again with its own `seq`:
    /// a duplicate while it waits, an out-of-order re-insert once it left.
    Redeliver { ride: Index },
    /// A rider cancels (possibly after being matched, or twice).
    Cancel { ride: Index },
    /// Drivers reaching one station in the same window, served in order.
    Arrive { station: usize, on_route: bool, at: Index, drivers: Vec<Driver> },
}

fn driver() -> impl Strategy<Value = Driver> {
    (subsequence((0..STATIONS.len()).collect::<Vec<_>>(), 1..7).prop_shuffle(), 0..DESTINATIONS.len(), 0..6u32)
        .prop_map(|(route, destination, free_seats)| Driver { route, destination, free_seats })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..STATIONS.len(), 0..DESTINATIONS.len())
            .prop_map(|(station, destination)| Op::Request { station, destination }),
        1 => any::<Index>().prop_map(|ride| Op::Redeliver { ride }),
        1 => any::<Index>().prop_map(|ride| Op::Cancel { ride }),
        3 => (
            0..STATIONS.len(),
            prop::bool::weighted(0.8),
            any::<Index>(),
            prop::collection::vec(driver(), 1..4),
        )
            .prop_map(|(station, on_route, at, drivers)| Op::Arrive {
                station,
                on_route,
                at,
                drivers,
            }),
    ]
}

/// Runs `ops` on the engine and on a plain list of waiting rides, checking they agree at every
/// step. Returns how many riders were matched, so the caller can reject a vacuous run.
fn check(ops: Vec<Op>) -> Result<usize, TestCaseError> {
    let mut engine = MatchingEngine::new();
    let mut waiting: Vec<WaitingRide> = Vec::new();
    let mut issued: Vec<WaitingRide> = Vec::new();
    let mut matched = 0;

    for op in ops {
        match op {
            Op::Request { station, destination } => {
                let seq = issued.len() as u64;
                let ride = WaitingRide::new(format!("r{seq}"), STATIONS[station], DESTINATIONS[destination], seq);
                prop_assert!(engine.insert(ride.clone()), "fresh {ride:?} rejected");
                waiting.push(ride.clone());
                issued.push(ride);
            }
            Op::Redeliver { ride } if !issued.is_empty() => {
                let ride = ride.get(&issued).clone();
                let expected = !waiting.iter().any(|w| w.ride_id == ride.ride_id);
                prop_assert_eq!(engine.insert(ride.clone()), expected, "insert {:?}", ride);
                if expected {
                    waiting.push(ride);
                }
            }
            Op::Cancel { ride } if !issued.is_empty() => {
                let ride_id = &ride.get(&issued).ride_id;
                let expected = waiting.iter().position(|w| w.ride_id == *ride_id).map(|i| waiting.swap_remove(i));
                prop_assert_eq!(engine.remove(ride_id), expected, "remove {}", ride_id);
            }
            Op::Redeliver { .. } | Op::Cancel { .. } => {}
            Op::Arrive { station, on_route, at, drivers } => {
                let offers: Vec<DriverOffer> = drivers
                    .iter()
                    .enumerate()
                    .map(|(i, driver)| {
                        let route: Vec<String> = driver.route.iter().map(|&s| STATIONS[s].to_owned()).collect();
                        // Mostly a station on this driver's route; sometimes any station.
                        let here =
                            if on_route { route[at.index(route.len())].clone() } else { STATIONS[station].to_owned() };
                        DriverOffer::for_route(
                            format!("d{i}"),
                            here,
                            &route,
                            DESTINATIONS[driver.destination],
                            driver.free_seats,
                        )
                    })
                    .collect();

                let mut expected = Vec::with_capacity(offers.len());
                for offer in &offers {
                    let picked = naive_select(&waiting, offer);
                    waiting.retain(|w| !picked.contains(w));
                    matched += picked.len();
                    expected.push(picked);
                }

                if let [offer] = offers.as_slice() {
                    prop_assert_eq!(&engine.select(offer), &expected[0], "select {:?}", offer);
                    prop_assert_eq!(&engine.take(offer), &expected[0], "take {:?}", offer);
                } else {
                    prop_assert_eq!(engine.take_batch(&offers), expected, "batch {:?}", offers);
                }
                for offer in &offers {
                    let at_station = waiting.iter().filter(|w| w.station_id == offer.station_id).count();
                    prop_assert_eq!(engine.waiting_at(&offer.station_id), at_station);
                }
            }
        }
        prop_assert_eq!(engine.len(), waiting.len());
    }
    Ok(matched)
}

#[test]
fn engine_selects_exactly_what_the_naive_scan_selects() {
    let mut config = Config { failure_persistence: None, ..Config::default() };
    if let RngSeed::Random = config.rng_seed {
        config.rng_seed = RngSeed::Fixed(DEFAULT_SEED);
    }
    let seed = config.rng_seed;
    eprintln!("engine vs naive: PROPTEST_RNG_SEED={seed} PROPTEST_CASES={}", config.cases);

    let matched = Cell::new(0usize);
    let mut runner = TestRunner::new(config);
    let result = runner.run(&prop::collection::vec(op(), 1..200), |ops| {
        matched.set(matched.get() + check(ops)?);
        Ok(())
    });
    if let Err(error) = result {
        panic!(
            "{error}\nreplay: PROPTEST_RNG_SEED={seed} \
             cargo test -p lastmile-engine --test matches_naive"
        );
    }
    assert!(matched.get() > 0, "no rider was ever matched: the comparison proves nothing");
}
