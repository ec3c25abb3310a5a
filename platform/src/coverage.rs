//! Which recovery paths a run exercised, like Antithesis's "sometimes" assertions.
//!
//! A chaos run that passes proves little if no fault ever reached the code that recovers from
//! it. The platform counts each time a recovery path runs — a redelivery, a compare-and-set
//! conflict, a retry, a breaker opening, a dead letter, a journal replay, a torn tail dropped,
//! a crash point hit — so a run's report can show them and a sweep can name the paths that
//! never fired. In the simulation one [`Coverage`] is shared by every node of the run; in the
//! real world each process counts its own.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A recovery path of the platform or a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryPath {
    /// A delivery came with the redelivered flag (its consumer died or nacked before the ack).
    Redelivered,
    /// A consumer recognised an event it had already applied and changed nothing.
    DuplicateIgnored,
    /// trip-service refused a stale match proposal (the compare-and-set).
    CasConflict,
    /// A consumer requeued a delivery after a transient failure.
    ConsumerRetry,
    /// A service-to-service call was retried after a failed attempt.
    CallRetry,
    /// A peer's circuit breaker opened.
    CircuitOpened,
    /// A call was failed fast by an open breaker.
    CircuitRejected,
    /// A message was dead-lettered as poison.
    DeadLettered,
    /// A publish was not confirmed and was retried.
    PublishRetried,
    /// A journal with records was replayed at start.
    JournalReplayed,
    /// A torn last record was dropped when a journal was opened.
    TornTailDropped,
    /// A journal was rebuilt from a compaction's snapshot at start.
    SnapshotReplayed,
    /// A compaction cut short by a crash was finished at start: its owed snapshot written.
    OwedSnapshotWritten,
    /// Events committed but never confirmed were published again after a restart.
    Republished,
    /// A replica died at an armed crash point.
    CrashPointHit,
}

impl RecoveryPath {
    /// Every recovery path, in report order.
    pub const ALL: [RecoveryPath; 15] = [
        RecoveryPath::Redelivered,
        RecoveryPath::DuplicateIgnored,
        RecoveryPath::CasConflict,
        RecoveryPath::ConsumerRetry,
        RecoveryPath::CallRetry,
        RecoveryPath::CircuitOpened,
        RecoveryPath::CircuitRejected,
        RecoveryPath::DeadLettered,
        RecoveryPath::PublishRetried,
        RecoveryPath::JournalReplayed,
        RecoveryPath::TornTailDropped,
        RecoveryPath::SnapshotReplayed,
        RecoveryPath::OwedSnapshotWritten,
        RecoveryPath::Republished,
        RecoveryPath::CrashPointHit,
    ];

    /// The name in reports (`cas_conflict`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            RecoveryPath::Redelivered => "redelivered",
            RecoveryPath::DuplicateIgnored => "duplicate_ignored",
            RecoveryPath::CasConflict => "cas_conflict",
            RecoveryPath::ConsumerRetry => "consumer_retry",
            RecoveryPath::CallRetry => "call_retry",
            RecoveryPath::CircuitOpened => "circuit_opened",
            RecoveryPath::CircuitRejected => "circuit_rejected",
            RecoveryPath::DeadLettered => "dead_lettered",
            RecoveryPath::PublishRetried => "publish_retried",
            RecoveryPath::JournalReplayed => "journal_replayed",
            RecoveryPath::TornTailDropped => "torn_tail_dropped",
            RecoveryPath::SnapshotReplayed => "snapshot_replayed",
            RecoveryPath::OwedSnapshotWritten => "owed_snapshot_written",
            RecoveryPath::Republished => "republished",
            RecoveryPath::CrashPointHit => "crash_point_hit",
        }
    }
}

impl std::fmt::Display for RecoveryPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counts of recovery paths taken. Cheap to clone; clones count together.
#[derive(Debug, Clone, Default)]
pub struct Coverage {
    counts: Arc<Mutex<BTreeMap<RecoveryPath, u64>>>,
}

impl Coverage {
    /// Count one pass through `path`.
    pub fn hit(&self, path: RecoveryPath) {
        *self.counts.lock().expect("coverage counts").entry(path).or_default() += 1;
    }

    /// Every path taken so far with its count (paths never taken are absent).
    pub fn counts(&self) -> BTreeMap<RecoveryPath, u64> {
        self.counts.lock().expect("coverage counts").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_count_together_and_untaken_paths_are_absent() {
        let a = Coverage::default();
        let b = a.clone();
        a.hit(RecoveryPath::CasConflict);
        b.hit(RecoveryPath::CasConflict);
        b.hit(RecoveryPath::Redelivered);
        let counts = a.counts();
        assert_eq!(counts.get(&RecoveryPath::CasConflict), Some(&2));
        assert_eq!(counts.get(&RecoveryPath::Redelivered), Some(&1));
        assert!(!counts.contains_key(&RecoveryPath::TornTailDropped));
        let names: std::collections::BTreeSet<&str> = RecoveryPath::ALL.iter().map(|p| p.as_str()).collect();
        assert_eq!(names.len(), RecoveryPath::ALL.len(), "names are distinct");
        assert_eq!(serde_json::to_value(RecoveryPath::CasConflict).unwrap(), "cas_conflict");
    }
}
