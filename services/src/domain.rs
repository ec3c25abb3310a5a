//! The LastMile domain: stations, people, ride requests, trips and the matching rule.
//!
//! Pure types and functions, no I/O: the services own and persist them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The default network: 12 stations on two lines, as shipped in `scenarios/stations.csv`.
pub const DEFAULT_STATIONS_CSV: &str = include_str!("../../scenarios/stations.csv");

/// A metro station riders arrive at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Station {
    /// `ST101` ... `ST112`.
    pub id: String,
    /// Human name.
    pub name: String,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lng: f64,
    /// The metro line.
    pub line: String,
}

/// The station network, ordered by id.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Network {
    stations: BTreeMap<String, Station>,
}

/// A malformed stations file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stations data line {line}: {reason}")]
pub struct NetworkError {
    /// 1-based line of the CSV.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

impl Network {
    /// Parse `station_id,name,lat,lng,line` CSV with a header line.
    pub fn from_csv(csv: &str) -> Result<Network, NetworkError> {
        let mut stations = BTreeMap::new();
        for (i, raw) in csv.lines().enumerate().skip(1) {
            let line = i + 1;
            if raw.trim().is_empty() {
                continue;
            }
            let fields: Vec<&str> = raw.split(',').map(str::trim).collect();
            let [id, name, lat, lng, metro_line] = fields[..] else {
                return Err(NetworkError { line, reason: format!("expected 5 fields, found {}", fields.len()) });
            };
            let coord = |v: &str, what: &str| {
                v.parse::<f64>().map_err(|_| NetworkError { line, reason: format!("{what} {v:?} is not a number") })
            };
            let station = Station {
                id: id.to_string(),
                name: name.to_string(),
                lat: coord(lat, "lat")?,
                lng: coord(lng, "lng")?,
                line: metro_line.to_string(),
            };
            if stations.insert(id.to_string(), station).is_some() {
                return Err(NetworkError { line, reason: format!("duplicate station {id}") });
            }
        }
        Ok(Network { stations })
    }

    /// The default 12-station network.
    pub fn default_network() -> Network {
        Network::from_csv(DEFAULT_STATIONS_CSV).expect("the shipped stations file is valid")
    }

    /// A station by id.
    pub fn get(&self, id: &str) -> Option<&Station> {
        self.stations.get(id)
    }

    /// All stations, ordered by id.
    pub fn stations(&self) -> impl Iterator<Item = &Station> {
        self.stations.values()
    }

    /// The station within `radius_m` metres of a point, the nearest if several.
    pub fn near(&self, lat: f64, lng: f64, radius_m: f64) -> Option<&Station> {
        self.stations
            .values()
            .map(|s| (distance_m(lat, lng, s.lat, s.lng), s))
            .filter(|(d, _)| *d <= radius_m)
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, s)| s)
    }
}

/// Great-circle distance in metres (haversine).
pub fn distance_m(lat1: f64, lng1: f64, lat2: f64, lng2: f64) -> f64 {
    const EARTH_RADIUS_M: f64 = 6_371_000.0;
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lng2 - lng1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * a.sqrt().asin()
}

/// Whether a user drives or rides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Offers seats on a route.
    Driver,
    /// Asks for a drop from a station.
    Rider,
}

/// A registered user profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Client-chosen id (registration is idempotent on it).
    #[serde(deserialize_with = "lastmile_platform::id::checked")]
    pub user_id: String,
    /// Driver or rider.
    pub role: Role,
    /// Display name.
    pub name: String,
    /// Contact number.
    pub phone: String,
    /// The vehicle, for drivers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vehicle: Option<String>,
}

/// A driver's shift: where it drives and how many seats it offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shift {
    /// Stations in driving order.
    #[serde(deserialize_with = "lastmile_platform::id::checked_list")]
    pub route: Vec<String>,
    /// Where the driver ends up; riders going there are served from any route station.
    #[serde(deserialize_with = "lastmile_platform::id::checked_label")]
    pub destination: String,
    /// Seats offered.
    pub seats: u32,
}

impl Shift {
    /// Whether a driver at `station` on this shift serves riders going to `destination`:
    /// its own destination, or a route station strictly after `station` (the matching engine's
    /// rule, so proposals are checked exactly as candidates are picked).
    pub fn serves(&self, station: &str, destination: &str) -> bool {
        lastmile_engine::DriverOffer::for_route("", station, &self.route, &self.destination, 0).serves(destination)
    }
}

/// Where a ride request is in its life. `Waiting` is the only non-final state besides
/// `Matched`; every accepted request ends `Completed`, `Expired` or `Cancelled`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RideStatus {
    /// At the station, not matched yet.
    Waiting,
    /// Assigned to a trip.
    Matched { trip_id: String },
    /// The trip it was on completed.
    Completed { trip_id: String },
    /// Nobody could take it in time.
    Expired { reason: String },
    /// Withdrawn by the rider.
    Cancelled { reason: String },
}

impl RideStatus {
    /// Whether the request reached a final state.
    pub fn is_final(&self) -> bool {
        matches!(self, RideStatus::Completed { .. } | RideStatus::Expired { .. } | RideStatus::Cancelled { .. })
    }
}

/// A rider's request: I am at `station_id` and want to go to `destination`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ride {
    /// Client-chosen id; requesting twice with the same id is idempotent.
    #[serde(deserialize_with = "lastmile_platform::id::checked")]
    pub ride_id: String,
    /// Who asks.
    #[serde(deserialize_with = "lastmile_platform::id::checked")]
    pub rider_id: String,
    /// Where the rider waits.
    #[serde(deserialize_with = "lastmile_platform::id::checked")]
    pub station_id: String,
    /// Where the rider wants to go.
    #[serde(deserialize_with = "lastmile_platform::id::checked_label")]
    pub destination: String,
    /// Acceptance order, for first come first served.
    pub seq: u64,
    /// When the request was accepted (ms since epoch; simulated in simulation).
    pub requested_at_ms: u64,
    /// How long the rider waits at most, when the request said (else trip-service's deadline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wait_ms: Option<u64>,
    /// Where it is now.
    pub status: RideStatus,
}

/// A trip's state. Transitions only move forward: scheduled → picked up → completed, or
/// scheduled/picked up → cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TripStatus {
    /// Matched; the driver is on the way to the station.
    Scheduled,
    /// Riders on board.
    PickedUp,
    /// Riders dropped; seats are free again.
    Completed,
    /// Called off (e.g. the driver missed the pickup); seats are freed and the riders wait again
    /// with their place in the queue.
    Cancelled,
}

/// Why a trip transition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {from:?} trip cannot become {to:?}")]
pub struct TransitionError {
    /// Current state.
    pub from: TripStatus,
    /// Requested state.
    pub to: TripStatus,
}

impl TripStatus {
    /// The trip state machine.
    pub fn transition(self, to: TripStatus) -> Result<TripStatus, TransitionError> {
        use TripStatus::*;
        match (self, to) {
            (Scheduled, PickedUp) | (PickedUp, Completed) | (Scheduled | PickedUp, Cancelled) => Ok(to),
            _ => Err(TransitionError { from: self, to }),
        }
    }

    /// Whether the trip still occupies seats.
    pub fn is_active(self) -> bool {
        matches!(self, TripStatus::Scheduled | TripStatus::PickedUp)
    }

    /// The progress rank, for checking that states only move forward.
    pub fn rank(self) -> u8 {
        match self {
            TripStatus::Scheduled => 0,
            TripStatus::PickedUp => 1,
            TripStatus::Completed | TripStatus::Cancelled => 2,
        }
    }
}

/// A driver carrying riders from one station.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trip {
    /// Id assigned at commit.
    #[serde(deserialize_with = "lastmile_platform::id::checked")]
    pub trip_id: String,
    /// The proposal that created it (a retried proposal finds its trip again).
    #[serde(deserialize_with = "lastmile_platform::id::checked")]
    pub proposal_id: String,
    /// Who drives.
    #[serde(deserialize_with = "lastmile_platform::id::checked")]
    pub driver_id: String,
    /// Where riders are picked up.
    #[serde(deserialize_with = "lastmile_platform::id::checked")]
    pub station_id: String,
    /// The ride requests on board.
    #[serde(deserialize_with = "lastmile_platform::id::checked_list")]
    pub ride_ids: Vec<String>,
    /// Their riders, in the same order.
    #[serde(deserialize_with = "lastmile_platform::id::checked_list")]
    pub rider_ids: Vec<String>,
    /// Where it is now.
    pub status: TripStatus,
    /// When the match was committed (ms since epoch).
    #[serde(default)]
    pub created_at_ms: u64,
    /// When it completed or was cancelled (seats given back).
    #[serde(default)]
    pub closed_at_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_network_has_two_lines_of_twelve_stations() {
        let net = Network::default_network();
        assert_eq!(net.stations().count(), 12);
        assert_eq!(net.stations().filter(|s| s.line == "north-south").count(), 8);
        assert_eq!(net.get("ST101").unwrap().name, "MG Road");
    }

    #[test]
    fn a_broken_stations_file_names_the_line() {
        let err = Network::from_csv("station_id,name,lat,lng,line\nST1,A,1.0,2.0,x\nST2,B,north,2.0,x\n").unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.reason.contains("lat"), "{err}");
    }

    #[test]
    fn near_finds_the_station_within_the_radius_only() {
        let net = Network::default_network();
        assert_eq!(net.near(12.975, 77.605, 100.0).unwrap().id, "ST101");
        assert!(net.near(12.96, 77.62, 100.0).is_none());
    }

    #[test]
    fn a_shift_serves_its_destination_and_later_route_stations() {
        let shift = Shift {
            route: vec!["ST101".into(), "ST102".into(), "ST103".into()],
            destination: "Tech Park".into(),
            seats: 3,
        };
        assert!(shift.serves("ST101", "Tech Park"));
        assert!(shift.serves("ST101", "ST103"));
        assert!(!shift.serves("ST103", "ST101"), "stations behind the driver are not served");
        assert!(!shift.serves("ST102", "Airport"));
    }

    #[test]
    fn trip_states_only_move_forward() {
        use TripStatus::*;
        assert_eq!(Scheduled.transition(PickedUp), Ok(PickedUp));
        assert_eq!(PickedUp.transition(Completed), Ok(Completed));
        assert_eq!(Scheduled.transition(Cancelled), Ok(Cancelled));
        assert!(Scheduled.transition(Completed).is_err(), "cannot complete before pickup");
        assert!(Completed.transition(Cancelled).is_err());
        assert!(Cancelled.transition(PickedUp).is_err());
        assert!(PickedUp.transition(Scheduled).is_err());
    }
}
