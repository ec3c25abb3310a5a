//! Crash points and storage faults: a replica killed with its work half done — after its side
//! effect and before its ack, after a commit and before the reply, after a publish confirm and
//! before it is journaled, in the middle of a journal write — and the recovery path that must
//! absorb it, seen in the run's coverage while every checker still holds.

use lastmile_harness::RunConfig;
use lastmile_platform::coverage::RecoveryPath;
use lastmile_sim::runs::{self, ScenarioRun};

/// A short load (4 drivers, 12 riders a minute, 180 s) named `name` with one step at 30 s:
/// `step` holds its lines after `at_s`.
fn short_load(name: &str, step: &str) -> lastmile_scenarios::Scenario {
    let text = format!(
        r#"
[scenario]
name = "{name}"
duration_s = 180
settle_s = 180

[workload]
kind = "load"
drivers = 4
riders_per_minute = 12
ride_ttl_s = 900

[[step]]
at_s = 30
{step}
"#
    );
    lastmile_scenarios::parse(&format!("{name}.toml"), &text).unwrap_or_else(|e| panic!("{e}"))
}

/// A short load with one crash point of `service` armed from 30 s to 150 s.
fn crash_scenario(service: &str, point: &str) -> lastmile_scenarios::Scenario {
    short_load(
        &format!("crash-{service}-{point}"),
        &format!("action = \"crash\"\ntarget = \"{service}\"\npoint = \"{point}\"\nfor_s = 120"),
    )
}

/// Run the crash scenario, require every rule to hold and the crash point to have fired, and
/// return the run for the recovery path's own assertions.
fn crashed_and_recovered(service: &str, point: &str) -> ScenarioRun {
    let scenario = crash_scenario(service, point);
    let seed = 5;
    println!("crash point {point} of {service}, seed {seed}");
    let run =
        runs::run(&scenario, &RunConfig { seed, random_faults: false, naive_matching: false, planted_bug: false });
    assert!(
        run.report.passed(),
        "the system did not absorb the crash:\n{}",
        lastmile_harness::report::human(&run.report, None)
    );
    let fired = run.evidence.history.iter().any(|op| {
        op.client == "nemesis" && op.detail.as_str().is_some_and(|d| d.contains(&format!("{point} of {service} fired")))
    });
    assert!(fired, "{point} of {service} was armed for 120 s but never reached: the test proves nothing");
    assert!(run.report.totals.trips > 0, "no trips: the test proves nothing");
    run
}

fn count(run: &ScenarioRun, path: RecoveryPath) -> u64 {
    run.evidence.coverage.as_ref().and_then(|c| c.get(&path).copied()).unwrap_or(0)
}

#[test]
fn a_matching_replica_killed_between_its_proposal_and_its_ack_is_redelivered_and_absorbed() {
    let run = crashed_and_recovered("matching-service", "before-ack");
    assert_eq!(count(&run, RecoveryPath::CrashPointHit), 1);
    assert!(count(&run, RecoveryPath::Redelivered) >= 1, "the unacked delivery came back: {:?}", run.evidence.coverage);
}

#[test]
fn trip_service_killed_after_a_commit_before_its_reply_loses_nothing_and_replays() {
    let run = crashed_and_recovered("trip-service", "before-reply");
    assert!(count(&run, RecoveryPath::JournalReplayed) >= 1, "{:?}", run.evidence.coverage);
}

#[test]
fn trip_service_killed_before_recording_a_publish_confirm_publishes_again_and_nobody_sees_it_twice() {
    let run = crashed_and_recovered("trip-service", "before-confirm-recorded");
    assert!(
        count(&run, RecoveryPath::Republished) >= 1,
        "the unrecorded event went out again: {:?}",
        run.evidence.coverage
    );
}

#[test]
fn trip_service_killed_in_the_middle_of_a_journal_write_drops_the_torn_record_on_replay() {
    let run = crashed_and_recovered("trip-service", "mid-sync");
    assert_eq!(count(&run, RecoveryPath::TornTailDropped), 1, "{:?}", run.evidence.coverage);
    assert!(count(&run, RecoveryPath::JournalReplayed) >= 1);
}

#[test]
fn trip_service_killed_once_a_snapshot_is_durable_replays_from_it_and_applies_nothing_twice() {
    let run = crashed_and_recovered("trip-service", "after-snapshot");
    assert!(count(&run, RecoveryPath::SnapshotReplayed) >= 1, "{:?}", run.evidence.coverage);
    assert_eq!(count(&run, RecoveryPath::OwedSnapshotWritten), 0, "nothing was owed: {:?}", run.evidence.coverage);
}

#[test]
fn trip_service_killed_between_a_compactions_cut_and_its_snapshot_replays_both_logs_and_writes_the_snapshot() {
    let run = crashed_and_recovered("trip-service", "mid-compaction");
    assert_eq!(count(&run, RecoveryPath::OwedSnapshotWritten), 1, "{:?}", run.evidence.coverage);
    assert!(count(&run, RecoveryPath::JournalReplayed) >= 1);
}

#[test]
fn notification_service_killed_between_recording_and_ack_shows_each_notification_once() {
    let run = crashed_and_recovered("notification-service", "before-ack");
    assert!(count(&run, RecoveryPath::Redelivered) >= 1, "{:?}", run.evidence.coverage);
    assert!(
        count(&run, RecoveryPath::DuplicateIgnored) >= 1,
        "the redelivery was recognised: {:?}",
        run.evidence.coverage
    );
}

/// trip-service's disk stalls for a minute: every sync takes 2.5 s more, so matching-service's
/// proposals and the workload's requests time out while their handlers wait on a sync. Nothing
/// may be lost — before the fix a trip committed meanwhile never had its `match.found`
/// published (its handler, dropped, was to hand it on), and the old inline group sync hung the
/// journal for good: both failed every seed of this run (docs/fault-model.md).
#[test]
fn trip_service_behind_a_stalled_disk_loses_no_event_when_its_callers_give_up() {
    let scenario = short_load(
        "disk-stall-trip-service",
        "action = \"disk-stall\"\ntarget = \"trip-service\"\nlatency_ms = 2500\nfor_s = 60",
    );
    let seed = 3;
    let run =
        runs::run(&scenario, &RunConfig { seed, random_faults: false, naive_matching: false, planted_bug: false });
    assert!(
        run.report.passed(),
        "the system lost work behind a stalled disk:\n{}",
        lastmile_harness::report::human(&run.report, None)
    );
    assert!(
        count(&run, RecoveryPath::CallRetry) >= 1,
        "no call gave up and retried while the disk stalled: the test proves nothing ({:?})",
        run.evidence.coverage
    );
    assert!(run.report.totals.trips > 0, "no trips: the test proves nothing");
}

/// A poison message (every replica receiving it dies) that waited in matching-service's backlog
/// through an outage dies alone: it reaches the queue's delivery limit (ten deliveries, ten
/// deaths) and is the only dead letter. Before consumer sessions started careful, the seven
/// messages prefetched beside it died with it, every seed (`scenarios/found/poison-in-a-backlog.toml`).
#[test]
fn a_poison_in_a_backlog_dies_alone() {
    let run = crate::common::run("found/poison-in-a-backlog", 1, false, false);
    crate::common::assert_passed("found/poison-in-a-backlog", &run);
    let dead = run.evidence.dead_letters.as_ref().expect("the simulation reads dead letters");
    let matching: Vec<&String> =
        dead.iter().filter(|(q, _)| q.ends_with(".matching-service.dead")).flat_map(|(_, m)| m).collect();
    assert_eq!(matching.len(), 1, "only the poison: {matching:?}");
    assert!(matching[0].starts_with("poison-matching-service-120000 "), "{matching:?}");
    assert!(
        count(&run, RecoveryPath::CrashPointHit) >= 10,
        "a death per delivery up to the limit: {:?}",
        run.evidence.coverage
    );
}
