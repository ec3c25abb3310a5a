//! [`MatchingEngine`]: waiting riders indexed so a driver event only touches what it matches.

use std::cmp::Reverse;
use std::collections::{btree_set, BTreeMap, BTreeSet, BinaryHeap};

use crate::ride::{DriverOffer, WaitingRide};

/// The riders waiting at every station, indexed for the matching rule (see the crate docs).
///
/// Ordered maps only: iteration order, and so every answer, is the same on every run.
#[derive(Clone, Debug, Default)]
pub struct MatchingEngine {
    /// Every waiting ride by id: answers `contains`, `get` and `remove`, and locates a ride's
    /// queue when it leaves.
    rides: BTreeMap<String, WaitingRide>,
    /// Station id → that station's queues; a driver event reads only its own station's entry.
    stations: BTreeMap<String, StationQueues>,
}

/// The riders waiting at one station.
#[derive(Clone, Debug, Default)]
struct StationQueues {
    /// Destination → FIFO queue of `(seq, ride_id)`; `ride_id` breaks `seq` ties deterministically.
    by_destination: BTreeMap<String, BTreeSet<(u64, String)>>,
    /// Riders waiting here over all destinations, so `waiting_at` does not sum the queues.
    waiting: usize,
}

impl MatchingEngine {
    /// An engine with no waiting riders.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a waiting rider. Returns `false`, and changes nothing, if a ride with the same
    /// `ride_id` is already waiting — so a redelivered ride request is harmless.
    pub fn insert(&mut self, ride: WaitingRide) -> bool {
        if self.rides.contains_key(&ride.ride_id) {
            return false;
        }
        let station = match self.stations.get_mut(&ride.station_id) {
            Some(station) => station,
            None => self.stations.entry(ride.station_id.clone()).or_default(),
        };
        let key = (ride.seq, ride.ride_id.clone());
        match station.by_destination.get_mut(&ride.destination) {
            Some(queue) => {
                queue.insert(key);
            }
            None => {
                station.by_destination.insert(ride.destination.clone(), BTreeSet::from([key]));
            }
        }
        station.waiting += 1;
        self.rides.insert(ride.ride_id.clone(), ride);
        true
    }

    /// Removes a waiting rider (cancelled, or matched elsewhere) and returns it; `None` if it was
    /// not waiting, so removing twice is harmless.
    pub fn remove(&mut self, ride_id: &str) -> Option<WaitingRide> {
        let ride = self.rides.remove(ride_id)?;
        let station = self.stations.get_mut(&ride.station_id).expect("a waiting ride's station is indexed");
        let queue = station.by_destination.get_mut(&ride.destination).expect("a waiting ride's destination is indexed");
        queue.remove(&(ride.seq, ride.ride_id.clone()));
        // Drop empty queues and stations so memory and lookups follow the riders actually waiting.
        if queue.is_empty() {
            station.by_destination.remove(&ride.destination);
        }
        station.waiting -= 1;
        if station.waiting == 0 {
            self.stations.remove(&ride.station_id);
        }
        Some(ride)
    }

    /// Whether the ride is waiting.
    pub fn contains(&self, ride_id: &str) -> bool {
        self.rides.contains_key(ride_id)
    }

    /// The waiting ride with this id.
    pub fn get(&self, ride_id: &str) -> Option<&WaitingRide> {
        self.rides.get(ride_id)
    }

    /// Every waiting ride, in `ride_id` order.
    pub fn iter(&self) -> impl Iterator<Item = &WaitingRide> + '_ {
        self.rides.values()
    }

    /// How many riders are waiting, over all stations.
    pub fn len(&self) -> usize {
        self.rides.len()
    }

    /// Whether no rider is waiting.
    pub fn is_empty(&self) -> bool {
        self.rides.is_empty()
    }

    /// How many riders are waiting at `station_id`, whatever their destination.
    pub fn waiting_at(&self, station_id: &str) -> usize {
        self.stations.get(station_id).map_or(0, |s| s.waiting)
    }

    /// The riders the matching rule gives `offer`: waiting at its station, going to a destination
    /// it serves, lowest `seq` first, at most `free_seats`. Removes nothing.
    ///
    /// Same answer as [`naive_select`](crate::naive_select) over all waiting rides.
    pub fn select(&self, offer: &DriverOffer) -> Vec<WaitingRide> {
        // Rebuilt from the index rather than looked up by id: the index holds every field.
        self.matches(offer)
            .into_iter()
            .map(|m| WaitingRide::new(m.ride_id, &offer.station_id, m.destination, m.seq))
            .collect()
    }

    /// [`select`](Self::select), then removes the selected riders: they are no longer waiting.
    pub fn take(&mut self, offer: &DriverOffer) -> Vec<WaitingRide> {
        let ride_ids: Vec<String> = self.matches(offer).into_iter().map(|m| m.ride_id.to_owned()).collect();
        ride_ids.iter().map(|id| self.remove(id).expect("a selected ride is waiting")).collect()
    }

    /// Several drivers in one window: [`take`](Self::take) for each offer in slice order, so a
    /// later driver only sees the riders earlier ones left. The caller decides the order (e.g.
    /// driver arrival order); the result has one entry per offer, in the same order.
    pub fn take_batch(&mut self, offers: &[DriverOffer]) -> Vec<Vec<WaitingRide>> {
        offers.iter().map(|offer| self.take(offer)).collect()
    }

    /// The k-way merge behind `select` and `take`: one heap entry per served destination's queue,
    /// keyed by `(seq, ride_id)`, popping until the seats are full or the queues are exhausted.
    /// Riders at other stations or for other destinations are never visited.
    fn matches(&self, offer: &DriverOffer) -> Vec<Match<'_>> {
        let seats = offer.free_seats as usize;
        let station = match self.stations.get(&offer.station_id) {
            Some(station) if seats > 0 => station,
            _ => return Vec::new(),
        };
        // `serves` may repeat a destination; merging its queue twice would match riders twice.
        let mut destinations: Vec<&str> = offer.serves.iter().map(String::as_str).collect();
        destinations.sort_unstable();
        destinations.dedup();
        let mut queues: Vec<(&str, btree_set::Iter<'_, (u64, String)>)> = destinations
            .into_iter()
            .filter_map(|d| station.by_destination.get_key_value(d))
            .map(|(destination, queue)| (destination.as_str(), queue.iter()))
            .collect();

        let mut heads = BinaryHeap::with_capacity(queues.len());
        for (queue_index, (_, queue)) in queues.iter_mut().enumerate() {
            if let Some(head) = queue.next() {
                heads.push(Reverse((head, queue_index)));
            }
        }
        let mut picked = Vec::with_capacity(seats.min(station.waiting));
        while picked.len() < seats {
            let Some(Reverse(((seq, ride_id), queue_index))) = heads.pop() else {
                break;
            };
            let (destination, queue) = &mut queues[queue_index];
            picked.push(Match { ride_id, destination, seq: *seq });
            if let Some(next) = queue.next() {
                heads.push(Reverse((next, queue_index)));
            }
        }
        picked
    }
}

/// A rider picked by the merge, borrowed from the index.
struct Match<'a> {
    ride_id: &'a str,
    destination: &'a str,
    seq: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::naive_select;

    fn route(stations: &[&str]) -> Vec<String> {
        stations.iter().map(|s| s.to_string()).collect()
    }

    fn ids(rides: &[WaitingRide]) -> Vec<&str> {
        rides.iter().map(|r| r.ride_id.as_str()).collect()
    }

    fn engine_with(rides: &[(&str, &str, &str, u64)]) -> MatchingEngine {
        let mut engine = MatchingEngine::new();
        for &(id, station, destination, seq) in rides {
            assert!(engine.insert(WaitingRide::new(id, station, destination, seq)));
        }
        engine
    }

    /// A driver at ST103 on ST101 → ST103 → ST105 → ST107 heading to Whitefield.
    fn driver_at_st103(free_seats: u32) -> DriverOffer {
        let route = route(&["ST101", "ST103", "ST105", "ST107"]);
        DriverOffer::for_route("d1", "ST103", &route, "Whitefield", free_seats)
    }

    #[test]
    fn matches_final_destination_and_later_stations_but_not_earlier_ones() {
        let engine = engine_with(&[
            ("behind", "ST103", "ST101", 1),
            ("here", "ST103", "ST103", 2),
            ("ahead", "ST103", "ST107", 3),
            ("final", "ST103", "Whitefield", 4),
            ("off-route", "ST103", "ST110", 5),
            ("other-area", "ST103", "Koramangala", 6),
        ]);
        let matched = engine.select(&driver_at_st103(6));
        assert_eq!(ids(&matched), ["ahead", "final"]);
    }

    #[test]
    fn matches_first_come_first_served_across_destinations() {
        // Inserted out of order and spread over two served destinations.
        let engine = engine_with(&[
            ("r40", "ST103", "Whitefield", 40),
            ("r10", "ST103", "ST105", 10),
            ("r30", "ST103", "ST105", 30),
            ("r20", "ST103", "Whitefield", 20),
        ]);
        let matched = engine.select(&driver_at_st103(4));
        assert_eq!(ids(&matched), ["r10", "r20", "r30", "r40"]);
    }

    #[test]
    fn never_matches_more_riders_than_free_seats() {
        let engine =
            engine_with(&[("r1", "ST103", "ST105", 1), ("r2", "ST103", "Whitefield", 2), ("r3", "ST103", "ST107", 3)]);
        assert_eq!(ids(&engine.select(&driver_at_st103(2))), ["r1", "r2"]);
        assert!(engine.select(&driver_at_st103(0)).is_empty());
    }

    #[test]
    fn take_leaves_riders_at_other_stations_and_unserved_riders_waiting() {
        let mut engine = engine_with(&[
            ("at-st101", "ST101", "Whitefield", 1),
            ("at-st105", "ST105", "Whitefield", 2),
            ("match", "ST103", "Whitefield", 3),
            ("unserved", "ST103", "ST101", 4),
        ]);
        let taken = engine.take(&driver_at_st103(4));
        assert_eq!(ids(&taken), ["match"]);
        assert_eq!(engine.len(), 3);
        assert!(!engine.contains("match"));
        for id in ["at-st101", "at-st105", "unserved"] {
            assert!(engine.contains(id), "{id} must still wait");
        }
        assert_eq!(engine.waiting_at("ST101"), 1);
        assert_eq!(engine.waiting_at("ST103"), 1);
        assert_eq!(engine.waiting_at("ST105"), 1);
        assert!(engine.take(&driver_at_st103(4)).is_empty());
    }

    #[test]
    fn take_returns_what_select_announced_and_removes_it() {
        let mut engine =
            engine_with(&[("r1", "ST103", "ST105", 1), ("r2", "ST103", "ST107", 2), ("r3", "ST103", "Whitefield", 3)]);
        let offer = driver_at_st103(2);
        let selected = engine.select(&offer);
        assert_eq!(engine.len(), 3, "select must not remove");
        assert_eq!(engine.take(&offer), selected);
        assert_eq!(ids(&engine.select(&offer)), ["r3"]);
    }

    #[test]
    fn duplicate_insert_is_rejected_and_changes_nothing() {
        let mut engine = engine_with(&[("r1", "ST103", "ST105", 1)]);
        assert!(!engine.insert(WaitingRide::new("r1", "ST109", "ST110", 9)));
        assert_eq!(engine.len(), 1);
        assert_eq!(engine.get("r1"), Some(&WaitingRide::new("r1", "ST103", "ST105", 1)));
        assert_eq!(engine.waiting_at("ST109"), 0);
    }

    #[test]
    fn remove_twice_is_harmless_and_reinsert_restores_the_ride() {
        let mut engine = engine_with(&[("r1", "ST103", "ST105", 1), ("r2", "ST103", "ST105", 2)]);
        let removed = engine.remove("r1").expect("r1 was waiting");
        assert_eq!(removed, WaitingRide::new("r1", "ST103", "ST105", 1));
        assert_eq!(engine.remove("r1"), None);
        assert_eq!(engine.remove("never-inserted"), None);
        assert_eq!(ids(&engine.select(&driver_at_st103(4))), ["r2"]);

        // Re-inserted with its original seq, r1 is first again.
        assert!(engine.insert(removed));
        assert_eq!(ids(&engine.select(&driver_at_st103(4))), ["r1", "r2"]);
    }

    #[test]
    fn emptied_engine_forgets_stations_and_destinations() {
        let mut engine = engine_with(&[("r1", "ST103", "ST105", 1), ("r2", "ST104", "ST105", 2)]);
        engine.remove("r1");
        engine.remove("r2");
        assert!(engine.is_empty());
        assert_eq!(engine.waiting_at("ST103"), 0);
        assert!(engine.stations.is_empty(), "empty queues must be dropped");
    }

    #[test]
    fn repeated_served_destination_matches_each_rider_once() {
        let engine = engine_with(&[("r1", "ST103", "ST105", 1), ("r2", "ST103", "ST105", 2)]);
        let mut offer = driver_at_st103(4);
        offer.serves = vec!["ST105".into(), "ST105".into()];
        assert_eq!(ids(&engine.select(&offer)), ["r1", "r2"]);
    }

    #[test]
    fn equal_seq_is_broken_by_ride_id_like_the_naive_scan() {
        let rides = [WaitingRide::new("b", "ST103", "ST105", 7), WaitingRide::new("a", "ST103", "Whitefield", 7)];
        let mut engine = MatchingEngine::new();
        for ride in rides.clone() {
            engine.insert(ride);
        }
        let offer = driver_at_st103(1);
        assert_eq!(ids(&engine.select(&offer)), ["a"]);
        assert_eq!(engine.select(&offer), naive_select(&rides, &offer));
    }

    #[test]
    fn batch_serves_drivers_in_order_from_what_is_left() {
        let mut engine = engine_with(&[
            ("r1", "ST103", "Whitefield", 1),
            ("r2", "ST103", "ST105", 2),
            ("r3", "ST103", "Whitefield", 3),
        ]);
        let second = DriverOffer::for_route("d2", "ST103", &route(&["ST103"]), "Whitefield", 4);
        let batch = engine.take_batch(&[driver_at_st103(2), second]);
        assert_eq!(batch.len(), 2);
        assert_eq!(ids(&batch[0]), ["r1", "r2"]);
        assert_eq!(ids(&batch[1]), ["r3"]);
        assert!(engine.is_empty());
    }
}
