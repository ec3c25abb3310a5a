//! Crash points: the places at the platform seam where a real process can die with its work
//! half done, so every service built on the platform can be crashed exactly there.
//!
//! | point | where | what a crash there tests |
//! |---|---|---|
//! | `before-ack` | a consumer's handler finished its side effect; the delivery is not acked | redelivery absorbed by an idempotent consumer |
//! | `before-reply` | a commit is synced to the journal; the caller has no answer yet | a client retry finds the committed work (idempotent request ids), replay rebuilds it |
//! | `before-confirm-recorded` | the broker confirmed a publish; the journal does not say so yet | the event is published again after replay, and consumers deduplicate it |
//! | `mid-sync` | a journal record (or a snapshot) is half on disk | a torn tail is dropped on replay (a torn snapshot ignored), nothing acknowledged is lost |
//! | `mid-compaction` | a compaction started the next epoch's log; its snapshot is not written yet | replay spans the old snapshot and both logs, and writes the owed snapshot before compacting again |
//! | `after-snapshot` | a compaction's snapshot is durable; the older log is still on disk | replay takes the snapshot and skips the log it already holds: nothing applied twice |
//!
//! A fault plan *arms* a point of a service (the simulation does it from the seed, as a step
//! of the run's timeline); the next replica of that service to pass the point calls the crash
//! hook — in the simulation: kill the node, restart it a moment later — and never goes on.
//! Nothing arms a point in the real world: [`Faults::default`] is off and a point costs one
//! branch.
//!
//! A *stalled disk* (`disk-stall`: every journal sync of a service waits some milliseconds more)
//! is the one fault of this module the real world carries out too: a service serving the
//! harness's routes has [`Faults::disk_stall_only`], which a harness sets through the service's
//! internal `POST /disk-stall` (token required; crash points stay simulation only).

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The longest disk stall a fault may set: what each sync takes more, in milliseconds (a
/// scenario's `disk-stall` step and a real service's `POST /disk-stall` take as much).
pub const MAX_DISK_STALL_MS: u64 = 60_000;

/// A place where a process can be crashed with its work half done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CrashPoint {
    /// After a consumer's side effect, before the delivery is acked.
    BeforeAck,
    /// After a commit is synced, before the caller is answered.
    BeforeReply,
    /// After the broker confirmed a publish, before the confirm is journaled.
    BeforeConfirmRecorded,
    /// In the middle of writing a journal record (a torn write).
    MidSync,
    /// After a journal compaction started the next epoch's log, before its snapshot is written.
    MidCompaction,
    /// After a journal compaction's snapshot is durable (the older log still on disk).
    AfterSnapshot,
}

impl CrashPoint {
    /// Every crash point.
    pub const ALL: [CrashPoint; 6] = [
        CrashPoint::BeforeAck,
        CrashPoint::BeforeReply,
        CrashPoint::BeforeConfirmRecorded,
        CrashPoint::MidSync,
        CrashPoint::MidCompaction,
        CrashPoint::AfterSnapshot,
    ];

    /// The name used in scenario files and reports (`before-ack`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            CrashPoint::BeforeAck => "before-ack",
            CrashPoint::BeforeReply => "before-reply",
            CrashPoint::BeforeConfirmRecorded => "before-confirm-recorded",
            CrashPoint::MidSync => "mid-sync",
            CrashPoint::MidCompaction => "mid-compaction",
            CrashPoint::AfterSnapshot => "after-snapshot",
        }
    }
}

impl std::fmt::Display for CrashPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an armed crash point (or a poison message) does: end the process it runs in, told what
/// killed it (`before-ack`, `poison message poison-...`). It must not return control to the work
/// in flight; [`Faults::crash_point`] and [`Faults::on_delivery`] park the caller forever after
/// calling it.
pub type CrashHook = Arc<dyn Fn(&str) + Send + Sync>;

/// The crash points of one service, shared by its replicas (the first replica to pass an armed
/// point crashes). Cheap to clone; the default is off.
#[derive(Clone, Default)]
pub struct Faults {
    inner: Option<Arc<Armed>>,
}

struct Armed {
    /// The points that crash the next replica passing them; a point disarms when it fires.
    points: Mutex<BTreeSet<CrashPoint>>,
    /// What every journal sync takes more while the disk is stalled (ms; 0: not stalled).
    disk_stall_ms: AtomicU64,
    /// Points that fired since the last [`Faults::disarm`] of each.
    fired: Mutex<BTreeSet<CrashPoint>>,
    /// Message ids that kill the replica receiving them, on every delivery.
    poison: Mutex<BTreeSet<String>>,
    /// Ends the process; none with [`Faults::disk_stall_only`], where no point can be armed.
    hook: Option<CrashHook>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            None => f.write_str("Faults(off)"),
            Some(a) => f.debug_tuple("Faults").field(&*a.points.lock().expect("points")).finish(),
        }
    }
}

impl Faults {
    /// Crash points that can be armed; reaching an armed one calls `hook`.
    pub fn with_hook(hook: CrashHook) -> Faults {
        Faults::armed(Some(hook))
    }

    /// A disk that can be stalled ([`Faults::set_disk_stall`]) and no crash point: what the real
    /// world's harness routes offer.
    pub fn disk_stall_only() -> Faults {
        Faults::armed(None)
    }

    fn armed(hook: Option<CrashHook>) -> Faults {
        Faults {
            inner: Some(Arc::new(Armed {
                points: Mutex::default(),
                disk_stall_ms: AtomicU64::new(0),
                fired: Mutex::default(),
                poison: Mutex::default(),
                hook,
            })),
        }
    }

    /// Whether the disk can be stalled ([`Faults::default`] cannot).
    pub fn can_stall(&self) -> bool {
        self.inner.is_some()
    }

    /// Whether crash points can be armed at all (never in the real world).
    pub fn is_on(&self) -> bool {
        self.inner.as_ref().is_some_and(|a| a.hook.is_some())
    }

    /// Arm `point`: the next replica to pass it crashes. Does nothing when crash points are off.
    pub fn arm(&self, point: CrashPoint) {
        if let Some(a) = self.inner.as_ref().filter(|a| a.hook.is_some()) {
            a.points.lock().expect("points").insert(point);
            a.fired.lock().expect("fired").remove(&point);
        }
    }

    /// Disarm `point`; the answer says whether it fired while armed.
    pub fn disarm(&self, point: CrashPoint) -> bool {
        let Some(a) = &self.inner else { return false };
        a.points.lock().expect("points").remove(&point);
        a.fired.lock().expect("fired").remove(&point)
    }

    /// Make `message_id` a poison: every replica that receives it dies ([`Faults::on_delivery`]),
    /// for good (the input does not turn harmless; the broker's delivery limit must take it
    /// away). Does nothing when crash points are off.
    pub fn poison(&self, message_id: &str) {
        if let Some(a) = self.inner.as_ref().filter(|a| a.hook.is_some()) {
            a.poison.lock().expect("poison").insert(message_id.to_string());
        }
    }

    /// Called by a consumer for each delivery before it works on it: a poison message crashes
    /// the process and never returns.
    pub async fn on_delivery(&self, message_id: &str) {
        let Some((a, hook)) = self.inner.as_ref().and_then(|a| Some((a, a.hook.as_ref()?))) else { return };
        if !a.poison.lock().expect("poison").contains(message_id) {
            return;
        }
        tracing::warn!(id = %message_id, "poison message received: the process dies here");
        hook(&format!("poison message {message_id}"));
        std::future::pending::<()>().await;
    }

    /// Stall the disk: every journal sync takes `ms` more until set back to 0. Does nothing when
    /// faults are off ([`Faults::default`]).
    pub fn set_disk_stall(&self, ms: u64) {
        if let Some(a) = &self.inner {
            a.disk_stall_ms.store(ms, Ordering::Relaxed);
        }
    }

    /// Called by the journal before each sync: waits out a stalled disk (at once when faults are
    /// off or the disk is not stalled).
    pub async fn disk_stall(&self) {
        let ms = self.inner.as_ref().map_or(0, |a| a.disk_stall_ms.load(Ordering::Relaxed));
        if ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
    }

    /// Pass `point`: if it is armed, disarm it, crash the process and never return.
    pub async fn crash_point(&self, point: CrashPoint) {
        let Some((a, hook)) = self.inner.as_ref().and_then(|a| Some((a, a.hook.as_ref()?))) else { return };
        if !a.points.lock().expect("points").remove(&point) {
            return;
        }
        a.fired.lock().expect("fired").insert(point);
        tracing::warn!(%point, "crash point reached: the process dies here");
        hook(point.as_str());
        std::future::pending::<()>().await;
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn an_armed_point_crashes_the_first_caller_once_and_reports_it() {
        let crashes = Arc::new(AtomicUsize::new(0));
        let counter = crashes.clone();
        let faults = Faults::with_hook(Arc::new(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        }));
        faults.crash_point(CrashPoint::BeforeAck).await; // not armed: passes
        faults.arm(CrashPoint::BeforeAck);
        let first = tokio::time::timeout(Duration::from_millis(50), faults.crash_point(CrashPoint::BeforeAck)).await;
        assert!(first.is_err(), "the crashing caller never goes on");
        faults.crash_point(CrashPoint::BeforeAck).await; // fired once: disarmed
        faults.crash_point(CrashPoint::BeforeReply).await;
        assert_eq!(crashes.load(Ordering::SeqCst), 1);
        assert!(faults.disarm(CrashPoint::BeforeAck), "it fired");
        assert!(!faults.disarm(CrashPoint::BeforeAck), "reported once");
        faults.arm(CrashPoint::MidSync);
        assert!(!faults.disarm(CrashPoint::MidSync), "armed but never reached");
    }

    #[tokio::test]
    async fn a_poison_message_crashes_every_receiver() {
        let crashes = Arc::new(Mutex::new(Vec::new()));
        let seen = crashes.clone();
        let faults = Faults::with_hook(Arc::new(move |what: &str| seen.lock().unwrap().push(what.to_string())));
        faults.on_delivery("poison-1").await; // not poisoned: passes
        faults.poison("poison-1");
        for _ in 0..2 {
            let dies = tokio::time::timeout(Duration::from_millis(50), faults.on_delivery("poison-1")).await;
            assert!(dies.is_err(), "a receiver of the poison never goes on");
        }
        faults.on_delivery("ride-1").await; // another message passes
        assert_eq!(*crashes.lock().unwrap(), ["poison message poison-1", "poison message poison-1"]);
        let off = Faults::disk_stall_only();
        off.poison("poison-1");
        off.on_delivery("poison-1").await; // no crash points in the real world: passes
    }

    #[tokio::test]
    async fn a_disk_stall_only_fault_set_arms_no_crash_point_and_stalls_until_set_back() {
        let faults = Faults::disk_stall_only();
        assert!(!faults.is_on(), "no crash points: journals write records whole");
        assert!(faults.can_stall() && !Faults::default().can_stall());
        faults.arm(CrashPoint::MidSync);
        faults.crash_point(CrashPoint::MidSync).await; // not armed: passes, the hook never runs
        assert!(!faults.disarm(CrashPoint::MidSync));
        faults.set_disk_stall(60_000);
        let stalled = tokio::time::timeout(Duration::from_millis(50), faults.disk_stall()).await;
        assert!(stalled.is_err(), "a sync waits out the stall");
        faults.set_disk_stall(0);
        faults.disk_stall().await;
        let off = Faults::default();
        off.set_disk_stall(60_000);
        let at_once = tokio::time::timeout(Duration::from_millis(50), off.disk_stall()).await;
        assert!(at_once.is_ok(), "faults off: no stall to set");
    }

    #[tokio::test]
    async fn faults_are_off_by_default() {
        let faults = Faults::default();
        faults.arm(CrashPoint::BeforeReply);
        faults.crash_point(CrashPoint::BeforeReply).await;
        assert!(!faults.disarm(CrashPoint::BeforeReply));
    }
}
