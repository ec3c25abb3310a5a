//! Rides that waited past their deadline: expired with a reason and a `ride.expired` event.

use crate::domain::{Ride, RideStatus};
use crate::events::{Event, EventBody};
use crate::store::SharedStore;
use lastmile_platform::clock::now_ms;
use lastmile_platform::shutdown::Shutdown;
use std::time::Duration;

use super::record::*;

/// How often waiting rides are checked against their deadline.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(1);

/// Expire rides that waited longer than `ttl`, each with its reason and a `ride.expired` event.
/// How long a ride may wait: its own limit, else the service's deadline.
pub(super) fn wait_ms(ride: &Ride, ttl: Duration) -> u64 {
    ride.max_wait_ms.unwrap_or(ttl.as_millis() as u64)
}

pub(super) async fn expire_rides(store: SharedStore<TripRecord>, ttl: Duration, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(EXPIRY_INTERVAL);
    loop {
        tokio::select! {
            biased;
            _ = tick.tick() => {}
            _ = shutdown.wait() => return,
        }
        let now = now_ms();
        let mut store = store.lock().await;
        let due: Vec<Ride> = store
            .state()
            .waiting
            .iter()
            .filter_map(|w| store.state().rides.get(&w.ride_id))
            .filter(|r| r.requested_at_ms + wait_ms(r, ttl) <= now)
            .cloned()
            .collect();
        if due.is_empty() {
            continue;
        }
        let mut changes = Vec::new();
        let mut events = Vec::new();
        for ride in due {
            let reason = format!(
                "no driver with a free seat serving {} reached {} within {}s",
                ride.destination,
                ride.station_id,
                wait_ms(&ride, ttl) / 1000
            );
            changes.push(Change::RideExpired { ride_id: ride.ride_id.clone(), reason: reason.clone(), at_ms: now });
            events.push(Event::new(EventBody::RideExpired(Ride { status: RideStatus::Expired { reason }, ..ride })));
        }
        let committed = store.commit(changes, events).await;
        drop(store);
        if let Err(e) = async { committed?.durable().await }.await {
            tracing::warn!(error = %e, "could not expire rides; will retry");
        }
    }
}
