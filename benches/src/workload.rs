//! The inputs the benchmarks replay: waiting riders, driver offers and a mixed event stream.

use lastmile_engine::{naive_select, DriverOffer, MatchingEngine, WaitingRide};

use lastmile_platform::rng::SeedRng;

/// The metro stations riders wait at.
pub const STATIONS: [&str; 12] =
    ["ST101", "ST102", "ST103", "ST104", "ST105", "ST106", "ST107", "ST108", "ST109", "ST110", "ST111", "ST112"];

/// Where riders go: five stations and three areas.
pub const DESTINATIONS: [&str; 8] =
    ["ST103", "ST105", "ST107", "ST109", "ST111", "Whitefield", "Koramangala", "Indiranagar"];

/// Stations on a driver's route.
const ROUTE_LEN: usize = 5;

/// Seats a driver has free, at most (the stream draws 1 ..= this).
pub const SEATS_MAX: u32 = 4;

/// One input of the event stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A ride request was accepted: the rider starts waiting.
    RideRequested(WaitingRide),
    /// A driver reached a station: it takes the riders the matching rule gives it.
    DriverArrived(DriverOffer),
    /// A rider cancelled; the ride may already have been matched, then nothing happens.
    RideCancelled {
        /// The cancelled ride.
        ride_id: String,
    },
}

/// A backlog of riders already waiting, and the events that follow.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Riders waiting before the first event, `seq` 0 .. `backlog.len()`.
    pub backlog: Vec<WaitingRide>,
    /// The stream: about 65% requests, 25% driver arrivals, 10% cancellations.
    pub events: Vec<Event>,
}

/// The ride with sequence number `seq`: ids are derived from `seq` so cancellations can name
/// rides without keeping a list.
fn ride(rng: &mut SeedRng, seq: u64) -> WaitingRide {
    WaitingRide::new(format!("ride-{seq}"), *rng.pick(&STATIONS), *rng.pick(&DESTINATIONS), seq)
}

/// `count` waiting riders spread uniformly over the 12 stations and 8 destinations,
/// with `seq` 0 .. `count`.
pub fn waiting_rides(count: usize, seed: u64) -> Vec<WaitingRide> {
    let mut rng = SeedRng::new(seed);
    (0..count as u64).map(|seq| ride(&mut rng, seq)).collect()
}

/// A driver on a random 5-station route towards a random destination, standing at one of its
/// first four stations (so at least one station is ahead), with `free_seats`.
pub fn driver_offer(rng: &mut SeedRng, driver_no: u64, free_seats: u32) -> DriverOffer {
    // Partial Fisher-Yates: ROUTE_LEN distinct stations in random order.
    let mut stations = STATIONS;
    for i in 0..ROUTE_LEN {
        let j = i + rng.index(stations.len() - i);
        stations.swap(i, j);
    }
    let route: Vec<String> = stations[..ROUTE_LEN].iter().map(|s| s.to_string()).collect();
    let here = route[rng.index(ROUTE_LEN - 1)].clone();
    let destination = *rng.pick(&DESTINATIONS);
    DriverOffer::for_route(format!("driver-{driver_no}"), here, &route, destination, free_seats)
}

/// `backlog` waiting riders, then `events` events. The mix keeps the number of waiting riders
/// roughly level: requests add 0.65 riders per event, arrivals (1 ..= 4 seats) and
/// cancellations remove about as many. Every request is a new ride: no redeliveries.
pub fn workload(backlog: usize, events: usize, seed: u64) -> Workload {
    let mut rng = SeedRng::new(seed);
    let backlog: Vec<WaitingRide> = (0..backlog as u64).map(|seq| ride(&mut rng, seq)).collect();
    let mut next_seq = backlog.len() as u64;
    let mut drivers = 0;
    let events = (0..events)
        .map(|_| match rng.below(100) {
            0..65 => {
                next_seq += 1;
                Event::RideRequested(ride(&mut rng, next_seq - 1))
            }
            65..90 => {
                drivers += 1;
                let seats = 1 + rng.below(u64::from(SEATS_MAX)) as u32;
                Event::DriverArrived(driver_offer(&mut rng, drivers, seats))
            }
            _ => Event::RideCancelled { ride_id: format!("ride-{}", rng.below(next_seq.max(1))) },
        })
        .collect();
    Workload { backlog, events }
}

/// Replays `event` on the engine; returns how many riders it matched.
pub fn apply(engine: &mut MatchingEngine, event: &Event) -> usize {
    match event {
        Event::RideRequested(ride) => {
            engine.insert(ride.clone());
            0
        }
        Event::DriverArrived(offer) => engine.take(offer).len(),
        Event::RideCancelled { ride_id } => {
            engine.remove(ride_id);
            0
        }
    }
}

/// Replays `event` on a plain list of waiting riders with [`naive_select`], the way matching
/// worked before the engine; returns how many riders it matched. Assumes, like [`workload`]'s
/// streams, that no ride is requested twice.
pub fn apply_naive(waiting: &mut Vec<WaitingRide>, event: &Event) -> usize {
    match event {
        // No duplicate check: the stream never repeats a request, and a scan here would charge
        // the baseline for work the comparison is not about.
        Event::RideRequested(ride) => {
            waiting.push(ride.clone());
            0
        }
        Event::DriverArrived(offer) => {
            let picked = naive_select(waiting, offer);
            waiting.retain(|w| !picked.iter().any(|p| p.ride_id == w.ride_id));
            picked.len()
        }
        Event::RideCancelled { ride_id } => {
            if let Some(i) = waiting.iter().position(|w| w.ride_id == *ride_id) {
                waiting.swap_remove(i);
            }
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_workload() {
        let a = workload(100, 100, 3);
        let b = workload(100, 100, 3);
        assert_eq!(a.backlog, b.backlog);
        assert_eq!(a.events, b.events);
    }

    #[test]
    fn backlog_covers_every_station_and_destination() {
        let rides = waiting_rides(1_000, 1);
        for station in STATIONS {
            assert!(rides.iter().any(|r| r.station_id == station), "{station}");
        }
        for destination in DESTINATIONS {
            assert!(rides.iter().any(|r| r.destination == destination), "{destination}");
        }
    }

    #[test]
    fn drivers_stand_on_their_route_with_somewhere_to_go() {
        let mut rng = SeedRng::new(5);
        for n in 0..200 {
            let offer = driver_offer(&mut rng, n, 4);
            assert!(STATIONS.contains(&offer.station_id.as_str()));
            // Somewhere to go: a later station of the route (which may be the destination too).
            assert!(offer.serves.iter().any(|s| STATIONS.contains(&s.as_str()) && *s != offer.station_id), "{offer:?}");
        }
    }

    /// The stream matches riders, keeps the backlog level, and the engine and the naive baseline
    /// replay it identically — so the throughput benchmark compares equal work.
    #[test]
    fn stream_matches_riders_keeps_backlog_level_and_engine_agrees_with_naive() {
        let Workload { backlog, events } = workload(2_000, 4_000, 11);
        let mut engine = MatchingEngine::new();
        for ride in backlog.iter().cloned() {
            assert!(engine.insert(ride));
        }
        let mut waiting = backlog;
        let mut matched = 0;
        for event in &events {
            let by_engine = apply(&mut engine, event);
            assert_eq!(by_engine, apply_naive(&mut waiting, event), "{event:?}");
            matched += by_engine;
        }
        assert_eq!(engine.len(), waiting.len());
        assert!(matched > 1_000, "only {matched} riders matched: the stream barely matches");
        assert!((1_000..=4_000).contains(&engine.len()), "backlog drifted from 2000 to {}", engine.len());
    }
}
