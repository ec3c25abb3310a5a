//! The original demo workloads in simulation: same outcomes as in the real world, and the
//! determinism every replay relies on.

use crate::common::{assert_passed, run};

#[test]
fn demo_matches_fifo_within_seats_and_notifies_once_per_event() {
    let r = run("demo", 1, true, false);
    assert_passed("demo", &r);
    assert_eq!(r.report.totals.trips, 4, "no matches: the test proves nothing");
}

#[test]
fn multi_station_driver_fills_its_seats_and_strands_the_rest() {
    let r = run("multi-station", 1, true, false);
    assert_passed("multi-station", &r);
    assert_eq!(r.report.totals.rides_expired, 2);
}

#[test]
fn the_same_seed_gives_the_same_history_and_another_seed_another() {
    let (a, b, c) = (run("demo", 7, true, false), run("demo", 7, true, false), run("demo", 8, true, false));
    for r in [&a, &b, &c] {
        assert!(r.report.totals.trips > 0, "seed {}: no matches, the comparison proves nothing", r.report.seed);
        assert!(
            r.report.totals.operations > 100,
            "seed {}: only {} operations",
            r.report.seed,
            r.report.totals.operations
        );
    }
    assert_eq!(a.evidence.history, b.evidence.history, "seed 7 ran twice with different histories");
    assert_eq!(a.report, b.report, "seed 7 ran twice with different reports");
    assert_ne!(a.report.history_digest, c.report.history_digest, "seeds 7 and 8 gave the same history");
}
