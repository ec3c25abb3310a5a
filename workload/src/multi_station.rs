//! The original multi-station demo: one driver through ST101 → ST108 with 4 seats, riders
//! waiting at four stations, seats running out on the way.
//!
//! | station | riders (destination) | free seats after |
//! |---|---|---|
//! | ST101 | 2 (ST108) | 2 |
//! | ST103 | 1 (ST106) | 1 |
//! | ST105 | 2 (ST108) — only one fits | 0 |
//! | ST107 | 1 (ST108) — no seat | 0 |
//!
//! At ST108 every trip completes. The two riders left behind expire with a reason.

use crate::client::LastMileClient;
use crate::wait::{wait_until, WaitTimeout};
use lastmile_platform::http::CallError;
use lastmile_services::domain::{Network, RideStatus, TripStatus};
use lastmile_services::trip::{RideRequest, ShiftRequest};
use std::collections::BTreeMap;
use std::time::Duration;

const DRIVER: &str = "ms-driver";
const ROUTE: [&str; 8] = ["ST101", "ST102", "ST103", "ST104", "ST105", "ST106", "ST107", "ST108"];
const RIDES: [(&str, &str, &str); 6] = [
    ("ms-ride-1", "ST101", "ST108"),
    ("ms-ride-2", "ST101", "ST108"),
    ("ms-ride-3", "ST103", "ST106"),
    ("ms-ride-4", "ST105", "ST108"),
    ("ms-ride-5", "ST105", "ST108"),
    ("ms-ride-6", "ST107", "ST108"),
];

/// What the run observed.
#[derive(Debug, Clone, Default)]
pub struct MultiStationReport {
    /// Free seats after the driver left each station with riders.
    pub seats_after: BTreeMap<String, u32>,
    /// Final status of each ride.
    pub rides: BTreeMap<String, RideStatus>,
    /// Trips and their final state.
    pub trips: BTreeMap<String, TripStatus>,
}

/// The run could not finish.
#[derive(Debug, thiserror::Error)]
pub enum MultiStationError {
    /// A call failed.
    #[error("multi-station step {step}: {source}")]
    Call { step: &'static str, source: CallError },
    /// Something did not happen in time.
    #[error("multi-station: {0}")]
    Timeout(#[from] WaitTimeout),
}

fn step(step: &'static str) -> impl Fn(CallError) -> MultiStationError {
    move |source| MultiStationError::Call { step, source }
}

/// Run the demo and report what happened; check it with [`MultiStationReport::violations`].
pub async fn run(api: &LastMileClient) -> Result<MultiStationReport, MultiStationError> {
    let network = Network::default_network();
    wait_until("every service ready", Duration::from_secs(60), || async { api.all_ready().await.then_some(()) })
        .await?;
    api.register_driver(DRIVER, "Route Driver", "+91 98450 77777", "KA-05 van")
        .await
        .map_err(step("register driver"))?;
    let shift =
        ShiftRequest { route: ROUTE.iter().map(|s| s.to_string()).collect(), destination: "ST108".into(), seats: 4 };
    api.start_shift(DRIVER, &shift).await.map_err(step("start shift"))?;
    for (i, (ride_id, station, destination)) in RIDES.iter().enumerate() {
        let rider = format!("ms-rider-{}", i + 1);
        api.register_rider(&rider, &format!("Rider {}", i + 1), &format!("+91 99000 7700{i}"))
            .await
            .map_err(step("register rider"))?;
        let request = RideRequest {
            ride_id: ride_id.to_string(),
            rider_id: rider,
            station_id: station.to_string(),
            destination: destination.to_string(),
            max_wait_s: None,
        };
        api.request_ride(&request).await.map_err(step("request ride"))?;
    }
    let mut report = MultiStationReport::default();
    for station_id in ROUTE {
        let station = network.get(station_id).expect("route stations exist");
        api.arrive_at(DRIVER, station).await.map_err(step("arrive"))?;
        let expected: Vec<&str> = match station_id {
            "ST101" => vec!["ms-ride-1", "ms-ride-2"],
            "ST103" => vec!["ms-ride-3"],
            "ST105" => vec!["ms-ride-4"],
            _ => vec![],
        };
        if !expected.is_empty() {
            wait_until(&format!("matches at {station_id}"), Duration::from_secs(30), || async {
                for ride_id in &expected {
                    if api.ride(ride_id).await.ok()?.status == RideStatus::Waiting {
                        return None;
                    }
                }
                Some(())
            })
            .await?;
        }
        // Give matching a moment to (wrongly) match riders the driver has no seat for.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let view = api.driver(DRIVER).await.map_err(step("read driver"))?;
        for trip_id in &view.active_trips {
            let trip = api.trip(trip_id).await.map_err(step("read trip"))?;
            if trip.status == TripStatus::Scheduled {
                api.pickup(DRIVER, trip_id).await.map_err(step("pickup"))?;
            }
            if station_id == "ST108" {
                api.complete(DRIVER, trip_id).await.map_err(step("complete"))?;
            }
        }
        if RIDES.iter().any(|(_, s, _)| *s == station_id) {
            let view = api.driver(DRIVER).await.map_err(step("read driver"))?;
            report.seats_after.insert(station_id.to_string(), view.free_seats);
        }
        let (lat, lng) = (station.lat + 0.02, station.lng + 0.02);
        api.move_to(DRIVER, lat, lng).await.map_err(step("leave"))?;
    }
    // The two riders left behind expire with a reason.
    wait_until("the stranded rides to expire", Duration::from_secs(120), || async {
        for ride_id in ["ms-ride-5", "ms-ride-6"] {
            if !api.ride(ride_id).await.ok()?.status.is_final() {
                return None;
            }
        }
        Some(())
    })
    .await?;
    for (ride_id, ..) in RIDES {
        let ride = api.ride(ride_id).await.map_err(step("read ride"))?;
        if let RideStatus::Matched { trip_id } | RideStatus::Completed { trip_id } = &ride.status {
            let trip = api.trip(trip_id).await.map_err(step("read trip"))?;
            report.trips.insert(trip.trip_id, trip.status);
        }
        report.rides.insert(ride_id.to_string(), ride.status);
    }
    Ok(report)
}

impl MultiStationReport {
    /// Every way the run differs from the demo's expectations (empty = passed).
    pub fn violations(&self) -> Vec<String> {
        let mut v = Vec::new();
        for (station, want) in [("ST101", 2), ("ST103", 1), ("ST105", 0), ("ST107", 0)] {
            let got = self.seats_after.get(station).copied();
            if got != Some(want) {
                v.push(format!("after {station} the driver had {got:?} free seats, expected {want}"));
            }
        }
        for ride in ["ms-ride-1", "ms-ride-2", "ms-ride-3", "ms-ride-4"] {
            if !matches!(self.rides.get(ride), Some(RideStatus::Completed { .. })) {
                v.push(format!("{ride} should be completed, is {:?}", self.rides.get(ride)));
            }
        }
        for ride in ["ms-ride-5", "ms-ride-6"] {
            if !matches!(self.rides.get(ride), Some(RideStatus::Expired { .. })) {
                v.push(format!("{ride} had no seat and should expire, is {:?}", self.rides.get(ride)));
            }
        }
        if self.trips.is_empty() || self.trips.values().any(|s| *s != TripStatus::Completed) {
            v.push(format!("every trip should complete at ST108: {:?}", self.trips));
        }
        v
    }
}
