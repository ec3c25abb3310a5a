//! The values the matching engine exchanges with the services.

use serde::{Deserialize, Serialize};

/// A rider waiting at a metro station for a driver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitingRide {
    /// Identifies the ride request end to end (journal, broker messages, trips).
    pub ride_id: String,
    /// The station where the rider waits; only drivers at this station can pick them up.
    pub station_id: String,
    /// Where the rider is going: a station id or an area name.
    pub destination: String,
    /// Arrival order, assigned when the ride request was accepted; lower is served first.
    pub seq: u64,
}

impl WaitingRide {
    /// A waiting ride from its four fields.
    pub fn new(
        ride_id: impl Into<String>,
        station_id: impl Into<String>,
        destination: impl Into<String>,
        seq: u64,
    ) -> Self {
        Self { ride_id: ride_id.into(), station_id: station_id.into(), destination: destination.into(), seq }
    }
}

/// A driver standing at a station, ready to take riders.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverOffer {
    /// The driver making the offer, for the trip the services record.
    pub driver_id: String,
    /// The station the driver has reached; only riders waiting here are considered.
    pub station_id: String,
    /// The destinations the driver serves from this station (see [`DriverOffer::for_route`]).
    /// Duplicates are allowed and ignored.
    pub serves: Vec<String>,
    /// How many riders the driver can still take; the match never exceeds it.
    pub free_seats: u32,
}

impl DriverOffer {
    /// The offer of a driver at `station_id` following `route` towards `destination`.
    ///
    /// The driver serves its final `destination` and every station of `route` strictly after
    /// `station_id`. If `station_id` appears several times in the route, stations after its first
    /// occurrence count; if it is not on the route at all, only `destination` is served.
    /// `serves` lists those destinations once each: the later route stations in route order, then
    /// the final destination unless it is one of them.
    pub fn for_route(
        driver_id: impl Into<String>,
        station_id: impl Into<String>,
        route: &[String],
        destination: &str,
        free_seats: u32,
    ) -> Self {
        let station_id = station_id.into();
        let ahead = match route.iter().position(|s| *s == station_id) {
            Some(here) => &route[here + 1..],
            None => &[],
        };
        let mut serves: Vec<String> = Vec::with_capacity(ahead.len() + 1);
        for stop in ahead.iter().map(String::as_str).chain([destination]) {
            if !serves.iter().any(|s| s == stop) {
                serves.push(stop.to_owned());
            }
        }
        Self { driver_id: driver_id.into(), station_id, serves, free_seats }
    }

    /// Whether this driver serves `destination` from its current station.
    pub fn serves(&self, destination: &str) -> bool {
        self.serves.iter().any(|s| s == destination)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(stations: &[&str]) -> Vec<String> {
        stations.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn serves_final_destination_and_later_route_stations_only() {
        let route = route(&["ST101", "ST102", "ST103", "ST104"]);
        let offer = DriverOffer::for_route("d1", "ST102", &route, "Whitefield", 3);
        assert_eq!(offer.serves, ["ST103", "ST104", "Whitefield"]);
        assert!(!offer.serves("ST101"), "a station behind the driver");
        assert!(!offer.serves("ST102"), "the current station itself");
        assert_eq!(offer.free_seats, 3);
    }

    #[test]
    fn last_station_serves_only_the_final_destination() {
        let route = route(&["ST101", "ST102"]);
        let offer = DriverOffer::for_route("d1", "ST102", &route, "ST110", 1);
        assert_eq!(offer.serves, ["ST110"]);
    }

    #[test]
    fn final_destination_on_the_route_is_listed_once() {
        let route = route(&["ST101", "ST102", "ST103"]);
        let offer = DriverOffer::for_route("d1", "ST101", &route, "ST103", 1);
        assert_eq!(offer.serves, ["ST102", "ST103"]);
    }

    #[test]
    fn station_off_the_route_serves_only_the_final_destination() {
        let route = route(&["ST101", "ST102"]);
        let offer = DriverOffer::for_route("d1", "ST107", &route, "Indiranagar", 2);
        assert_eq!(offer.serves, ["Indiranagar"]);
    }

    #[test]
    fn repeated_station_counts_from_its_first_occurrence() {
        let route = route(&["ST101", "ST102", "ST101", "ST103"]);
        let offer = DriverOffer::for_route("d1", "ST101", &route, "ST104", 2);
        assert_eq!(offer.serves, ["ST102", "ST101", "ST103", "ST104"]);
    }
}
