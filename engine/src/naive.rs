//! The original matching: a linear scan over every waiting rider.
//!
//! Kept on purpose. It states the matching rule in the most obvious way, so it is the oracle the
//! property tests compare [`MatchingEngine`](crate::MatchingEngine) with, and the baseline the
//! benchmarks measure it against.

use crate::ride::{DriverOffer, WaitingRide};

/// The riders `offer` picks among `waiting`: those at the offer's station whose destination it
/// serves, in `seq` order (ties by `ride_id`), at most `free_seats` of them.
///
/// O(n log n) in `waiting.len()` whatever the number of matches.
pub fn naive_select(waiting: &[WaitingRide], offer: &DriverOffer) -> Vec<WaitingRide> {
    let mut candidates: Vec<&WaitingRide> =
        waiting.iter().filter(|r| r.station_id == offer.station_id && offer.serves(&r.destination)).collect();
    candidates.sort_by(|a, b| (a.seq, &a.ride_id).cmp(&(b.seq, &b.ride_id)));
    candidates.into_iter().take(offer.free_seats as usize).cloned().collect()
}
