//! The load workload: drivers loop routes along the metro lines, riders arrive at a steady rate
//! and request rides, and everyone behaves like a real app (retries with backoff, polls for
//! status, drivers pick up and drop off).
//!
//! Everything random is drawn up front from the seed ([`plan`]), so the same seed gives the same
//! drivers, routes and arrivals in both worlds.

use crate::client::LastMileClient;
use lastmile_platform::clock::instant_now;
use lastmile_platform::rng::SeedRng;
use lastmile_platform::watch;
use lastmile_services::domain::{Network, Station, TripStatus};
use lastmile_services::trip::{RideRequest, ShiftRequest};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The destination no driver ever serves: such rides must expire, not vanish.
pub const UNSERVED_DESTINATION: &str = "Airport";
/// Stations per route segment.
const ROUTE_LEN: usize = 4;
/// Most rider profiles; arrivals beyond reuse them.
const MAX_PROFILES: usize = 80;

/// What the load does (from the scenario's `[workload]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadSpec {
    /// Drivers.
    pub drivers: u32,
    /// Seats per driver.
    pub seats: u32,
    /// Ride requests per minute.
    pub riders_per_minute: f64,
    /// Share of riders going where nobody drives.
    pub unserved_share: f64,
    /// Time at a station.
    pub dwell: Duration,
    /// Time between stations.
    pub travel: Duration,
    /// Between a rider's status polls.
    pub poll: Duration,
    /// How long riders keep arriving.
    pub duration: Duration,
}

/// One driver's plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverPlan {
    /// Its id.
    pub driver_id: String,
    /// Stations it loops through.
    pub route: Vec<String>,
    /// Where its shift ends (the last route station).
    pub destination: String,
    /// Route index it starts at (drivers on one route are spread out).
    pub start: usize,
}

/// One ride request to make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arrival {
    /// Milliseconds after the start.
    pub at_ms: u64,
    /// The idempotency key.
    pub ride_id: String,
    /// The profile asking.
    pub rider_id: String,
    /// Where the rider waits.
    pub station_id: String,
    /// Where to.
    pub destination: String,
    /// Whether some driver serves it (unservable ones must expire).
    pub servable: bool,
}

/// Everything the load will do, drawn from the seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadPlan {
    /// Drivers and their routes.
    pub drivers: Vec<DriverPlan>,
    /// Rider profiles registered at the start.
    pub riders: Vec<String>,
    /// Ride requests in time order.
    pub arrivals: Vec<Arrival>,
}

/// Route segments along each metro line: windows of four stations, two apart.
pub fn routes(network: &Network) -> Vec<Vec<String>> {
    let mut lines: BTreeMap<&str, Vec<&Station>> = BTreeMap::new();
    for s in network.stations() {
        lines.entry(s.line.as_str()).or_default().push(s);
    }
    let mut routes = Vec::new();
    for stations in lines.values() {
        let ids: Vec<String> = stations.iter().map(|s| s.id.clone()).collect();
        if ids.len() <= ROUTE_LEN {
            routes.push(ids);
            continue;
        }
        let mut start = 0;
        while start + ROUTE_LEN <= ids.len() {
            routes.push(ids[start..start + ROUTE_LEN].to_vec());
            start += 2;
        }
    }
    routes
}

/// Draw the plan for `seed`.
pub fn plan(spec: &LoadSpec, network: &Network, seed: u64) -> LoadPlan {
    let mut rng = SeedRng::new(seed.wrapping_mul(31).wrapping_add(7));
    let segments = routes(network);
    let drivers: Vec<DriverPlan> = (0..spec.drivers as usize)
        .map(|i| {
            let route = segments[i % segments.len()].clone();
            let start = (i / segments.len()) * 2 % route.len();
            DriverPlan { driver_id: format!("driver-{i}"), destination: route[route.len() - 1].clone(), route, start }
        })
        .collect();
    let mut arrivals = Vec::new();
    let mean_gap_s = 60.0 / spec.riders_per_minute;
    let mut t = 0.0;
    loop {
        // Exponential gaps: a Poisson stream of riders.
        t += -mean_gap_s * (1.0 - rng.between(0.0, 1.0)).ln();
        if t >= spec.duration.as_secs_f64() {
            break;
        }
        let n = arrivals.len();
        let (station_id, destination, servable) = if rng.between(0.0, 1.0) < spec.unserved_share {
            let route = &drivers[rng.below(drivers.len() as u64) as usize].route;
            (route[rng.below(route.len() as u64) as usize].clone(), UNSERVED_DESTINATION.to_string(), false)
        } else {
            let route = &drivers[rng.below(drivers.len() as u64) as usize].route;
            let i = rng.below(route.len() as u64 - 1) as usize;
            let j = i + 1 + rng.below((route.len() - i - 1) as u64) as usize;
            (route[i].clone(), route[j].clone(), true)
        };
        arrivals.push(Arrival {
            at_ms: (t * 1000.0) as u64,
            ride_id: format!("ride-{n}"),
            rider_id: String::new(),
            station_id,
            destination,
            servable,
        });
    }
    let profiles = arrivals.len().clamp(1, MAX_PROFILES);
    for (n, a) in arrivals.iter_mut().enumerate() {
        a.rider_id = format!("rider-{}", n % profiles);
    }
    LoadPlan { drivers, riders: (0..profiles).map(|k| format!("rider-{k}")).collect(), arrivals }
}

/// Where the load is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Riders arrive, drivers drive.
    Running,
    /// No new riders; drivers and waiting riders carry on (the liveness phase).
    Settling,
    /// Everyone stops.
    Stopped,
}

/// Register every driver and rider profile (retrying through faults), then start shifts.
pub async fn register(api: &LastMileClient, plan: &LoadPlan, seats: u32) -> Result<(), String> {
    for (i, d) in plan.drivers.iter().enumerate() {
        let (phone, name) = (format!("+91 98450 {:05}", i), format!("Driver {i}"));
        retry(|| api.register_driver(&d.driver_id, &name, &phone, "KA-01 hatchback")).await?;
        let shift = ShiftRequest { route: d.route.clone(), destination: d.destination.clone(), seats };
        retry(|| api.start_shift(&d.driver_id, &shift)).await?;
    }
    for (k, rider) in plan.riders.iter().enumerate() {
        let (phone, name) = (format!("+91 99000 {:05}", k), format!("Rider {k}"));
        retry(|| api.register_rider(rider, &name, &phone)).await?;
    }
    Ok(())
}

async fn retry<T, E: std::fmt::Display, F, Fut>(mut call: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut delay = Duration::from_millis(500);
    let mut last = String::new();
    for _ in 0..10 {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    Err(last)
}

/// Run the load until the stage becomes [`Stage::Stopped`]. Riders arrive only while
/// [`Stage::Running`].
pub async fn run(
    api: LastMileClient,
    plan: Arc<LoadPlan>,
    spec: LoadSpec,
    network: Arc<Network>,
    stage: watch::Receiver<Stage>,
) {
    let started = instant_now();
    let mut tasks = Vec::new();
    for d in plan.drivers.clone() {
        let (api, spec, network, stage) = (api.clone(), spec.clone(), network.clone(), stage.clone());
        tasks.push(tokio::spawn(async move { drive(&api, &d, &spec, &network, stage).await }));
    }
    for a in plan.arrivals.clone() {
        let due = started + Duration::from_millis(a.at_ms);
        tokio::select! {
            biased;
            _ = stage.wait_for(|s| *s != Stage::Running) => break,
            _ = tokio::time::sleep_until(due) => {}
        }
        let (api, spec, stage) = (api.clone(), spec.clone(), stage.clone());
        tasks.push(tokio::spawn(async move { ride(&api, &a, &spec, stage).await }));
    }
    stage.wait_for(|s| *s == Stage::Stopped).await;
    for task in tasks {
        let _ = task.await;
    }
}

fn stopped(stage: &watch::Receiver<Stage>) -> bool {
    stage.get() == Stage::Stopped
}

async fn pause(stage: &watch::Receiver<Stage>, d: Duration) {
    tokio::select! {
        biased;
        _ = stage.wait_for(|s| *s == Stage::Stopped) => {}
        _ = tokio::time::sleep(d) => {}
    }
}

async fn ride(api: &LastMileClient, a: &Arrival, spec: &LoadSpec, stage: watch::Receiver<Stage>) {
    let request = RideRequest {
        ride_id: a.ride_id.clone(),
        rider_id: a.rider_id.clone(),
        station_id: a.station_id.clone(),
        destination: a.destination.clone(),
        max_wait_s: None,
    };
    let mut delay = Duration::from_secs(1);
    let mut accepted = false;
    for _ in 0..6 {
        match api.request_ride(&request).await {
            Ok(_) => {
                accepted = true;
                break;
            }
            // An answer that will not change on retry.
            Err(e) if matches!(e.status(), Some(400..=499)) => break,
            Err(_) => {}
        }
        pause(&stage, delay).await;
        if stopped(&stage) {
            return;
        }
        delay = (delay * 2).min(Duration::from_secs(8));
    }
    if !accepted {
        return;
    }
    while !stopped(&stage) {
        pause(&stage, spec.poll).await;
        if let Ok(r) = api.ride_as(&a.rider_id, &a.ride_id).await {
            if r.status.is_final() {
                return;
            }
        }
    }
}

/// A point away from every station: a driver between stops.
fn in_transit(station: &Station) -> (f64, f64) {
    (station.lat + 0.02, station.lng + 0.02)
}

async fn drive(
    api: &LastMileClient,
    d: &DriverPlan,
    spec: &LoadSpec,
    network: &Network,
    stage: watch::Receiver<Stage>,
) {
    let mut i = d.start % d.route.len();
    while !stopped(&stage) {
        let Some(station) = network.get(&d.route[i]) else { return };
        for _ in 0..3 {
            if api.arrive_at(&d.driver_id, station).await.is_ok() || stopped(&stage) {
                break;
            }
            pause(&stage, Duration::from_millis(500)).await;
        }
        let leave_at = instant_now() + spec.dwell;
        loop {
            tend_trips(api, &d.driver_id, &station.id).await;
            let now = instant_now();
            if now >= leave_at || stopped(&stage) {
                break;
            }
            pause(&stage, (leave_at - now).min(Duration::from_secs(2))).await;
        }
        let (lat, lng) = in_transit(station);
        let _ = api.move_to(&d.driver_id, lat, lng).await;
        pause(&stage, spec.travel).await;
        i = (i + 1) % d.route.len();
    }
}

/// What a driver app does at a stop: pick up riders matched here, drop riders picked up
/// earlier, and cancel a pickup it can no longer make (matched after it left that station; the
/// riders go back to the queue).
async fn tend_trips(api: &LastMileClient, driver_id: &str, station: &str) {
    let Ok(view) = api.driver_as(driver_id, driver_id).await else { return };
    for trip_id in view.active_trips {
        let Ok(trip) = api.trip_as(driver_id, &trip_id).await else { continue };
        let _ = match trip.status {
            TripStatus::Scheduled if trip.station_id == station => api.pickup(driver_id, &trip_id).await,
            TripStatus::Scheduled => api.cancel_trip(driver_id, &trip_id).await,
            TripStatus::PickedUp if trip.station_id != station => api.complete(driver_id, &trip_id).await,
            _ => continue,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LoadSpec {
        LoadSpec {
            drivers: 6,
            seats: 3,
            riders_per_minute: 12.0,
            unserved_share: 0.1,
            dwell: Duration::from_secs(6),
            travel: Duration::from_secs(14),
            poll: Duration::from_secs(3),
            duration: Duration::from_secs(300),
        }
    }

    #[test]
    fn routes_follow_the_lines() {
        let r = routes(&Network::default_network());
        assert_eq!(r.len(), 4, "{r:?}");
        assert!(r.iter().all(|route| route.len() == 4));
    }

    #[test]
    fn the_plan_is_seeded_and_every_servable_rider_is_served_by_some_driver() {
        let net = Network::default_network();
        let a = plan(&spec(), &net, 1);
        assert_eq!(a, plan(&spec(), &net, 1));
        assert_ne!(a.arrivals, plan(&spec(), &net, 2).arrivals);
        assert!(a.arrivals.len() > 30, "about 60 riders in 5 minutes: {}", a.arrivals.len());
        for arrival in &a.arrivals {
            let served = a.drivers.iter().any(|d| {
                let shift = lastmile_services::domain::Shift {
                    route: d.route.clone(),
                    destination: d.destination.clone(),
                    seats: 3,
                };
                d.route.contains(&arrival.station_id) && shift.serves(&arrival.station_id, &arrival.destination)
            });
            assert_eq!(served, arrival.servable, "{arrival:?}");
        }
        assert!(a.arrivals.iter().any(|x| !x.servable), "some riders go where nobody drives");
    }
}
