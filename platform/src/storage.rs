//! A small durable log: records are written, synced, and replayed in order on open; compacted
//! into a snapshot so replay reads the state, not its whole history.
//!
//! Real world: files on a volume (`std::fs` with `sync_data`). Simulation: the node's simulated
//! disk (`madsim::fs`), which survives a kill and restart of that node. Records are one line each
//! (compact JSON never contains a raw newline); lines starting with `#` are the journal's own.
//!
//! The storage fault model, the same in both worlds: [`Journal::write`] only buffers a record
//! (the page cache); [`Journal::sync`] puts every buffered record on disk and returns once it is
//! durable. A crash loses whatever was written and not synced — so a caller that answers before
//! `sync` returns is caught by the simulation, whose disk (unlike madsim's, where `sync_all` is a
//! no-op) holds only what was synced. A crash in the middle of a sync (the `mid-sync` crash
//! point) leaves the last record half written: a final line without its newline is a torn write
//! and is dropped on replay with a warning, which is exactly what sync-before-acknowledge
//! allows. Any other damage (a complete record that does not parse) is the owner's to refuse.
//! A `disk-stall` fault (the simulation's, or a real service's through its harness routes) makes
//! every sync wait [`Faults::disk_stall`] more, so callers give up on commits half way, as they
//! do behind a slow volume.
//!
//! **Compaction, off the commit path.** The log lives in two files that take turns (`<log>` and
//! `<log>.log-1`), each starting with the line `#epoch <n>`, and snapshots in two slots that take
//! turns (`<log>.snap-0`, `<log>.snap-1`, framed `#snapshot <n> <count>` … `#end <n>`). Nothing is
//! renamed (the simulated disk cannot rename). A compaction:
//! 1. [`Journal::cut`], under the owner's exclusive access and brief: syncs what is written, starts
//!    epoch n+1's log in the other file (its header synced) and sends every later record there;
//!    the owner captures its state as of the cut;
//! 2. [`SnapshotWriter::write`], in the background while commits go on into the new log: writes
//!    that state as epoch n+1's snapshot in slot (n+1) mod 2 and syncs it. From then on epoch n's
//!    log and snapshot are history, overwritten by the next compaction (which waits for this one).
//!
//! [`Journal::open`] takes the newest complete snapshot, epoch s (0: none), and replays the logs
//! of epoch s and s+1 after it; older logs are history. A crash between the steps (the
//! `mid-compaction` crash point; a torn snapshot, `mid-sync`) leaves epoch s+1's snapshot owed:
//! the replay spans both logs, and the owner writes the owed snapshot — its state as of the end
//! of epoch s's log — before the journal compacts again ([`Journal::take_owed_snapshot`]). A crash
//! after step 2 (`after-snapshot`) leaves nothing to do: epoch s's log is history and is not
//! applied twice. Any other combination is damage, refused with a clear error.

use crate::faults::{CrashPoint, Faults};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// An append-only, synced record log with snapshots.
pub struct Journal {
    /// Where the log lives, for error messages and the files beside it.
    path: PathBuf,
    /// What writers, the syncing task and a snapshot writer share.
    shared: Arc<Shared>,
    /// Bytes of a torn last record cut off when the journal was opened.
    torn_bytes: u64,
    /// The epoch of the log being written: how many times the journal was cut (0: never).
    epoch: u64,
    /// Which log file holds it (0: `<log>`, 1: `<log>.log-1`).
    log_file: u64,
    /// Records in the log being written (since the last cut, written ones included).
    since_cut: usize,
    /// The snapshot a compaction cut short by a crash left owed: how many of the replayed
    /// records it holds (see [`Journal::take_owed_snapshot`]).
    owed: Option<usize>,
}

/// The group commit's and the snapshots' state, shared by [`Journal`], [`JournalHandle`]s and a
/// [`SnapshotWriter`].
struct Shared {
    /// Where the log lives, for error messages.
    path: PathBuf,
    state: Mutex<SyncState>,
    /// Wakes the waiters of [`JournalHandle::durable`] when a sync ends.
    synced: tokio::sync::Notify,
    /// Crash points (`mid-sync`, `mid-compaction`, `after-snapshot`) and the disk stall; off
    /// unless a fault plan arms them.
    faults: Faults,
}

struct SyncState {
    /// The log file being written.
    file: imp::File,
    /// Records written and not handed to a sync yet, newline-terminated: a crash loses them.
    pending: Vec<u8>,
    /// Bytes ever written (the tickets count in these), across compactions.
    written: u64,
    /// Bytes ever made durable.
    synced: u64,
    /// The byte offset of the next write to the log file.
    len: u64,
    /// Whether a sync is under way (its caller is the leader; the others wait for it).
    syncing: bool,
    /// Syncs done (each one write and one fsync, however many records it carried).
    syncs: u64,
    /// A failed write or sync: the journal takes nothing more (what was applied in memory may
    /// not be on disk; only a restart, replaying the disk, is sound).
    failed: Option<String>,
    /// The epoch of the newest complete snapshot (0: none).
    snapshot_epoch: u64,
    /// Whether a cut's snapshot is owed (being written, or owed since a crash).
    snapshotting: bool,
    /// Why snapshots stopped (a snapshot write failed or was abandoned): the journal still takes
    /// records but cuts no more until a restart, whose replay writes the owed snapshot.
    snapshots_failed: Option<String>,
}

/// How far the journal must be durable for a write to be: returned by [`Journal::write`],
/// waited for with [`JournalHandle::durable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

/// Waits for writes to become durable, without holding the [`Journal`] (and whatever lock its
/// owner keeps it under). Cheap to clone.
#[derive(Clone)]
pub struct JournalHandle {
    shared: Arc<Shared>,
}

/// Writes the snapshot a [`Journal::cut`] owes: the owner's state as of the cut, as records
/// that rebuild it. Dropped unwritten, it stops the journal's compactions until a restart.
pub struct SnapshotWriter {
    shared: Arc<Shared>,
    /// The epoch of the snapshot (the epoch of the log the cut started).
    epoch: u64,
    /// Whether it was written (or failed), so dropping it says nothing more.
    done: bool,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).field("epoch", &self.epoch).finish()
    }
}

impl std::fmt::Debug for SnapshotWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotWriter").field("path", &self.shared.path).field("epoch", &self.epoch).finish()
    }
}

/// A complete snapshot read from a slot.
struct Snapshot {
    epoch: u64,
    records: Vec<Vec<u8>>,
}

/// One of the two log files as found at open.
struct LogFile {
    /// 0: `<log>`, 1: `<log>.log-1`.
    which: u64,
    /// Its epoch: the header's; a non-empty log without one is epoch 0's; an empty one without
    /// one is unused (`None`).
    epoch: Option<u64>,
    /// Its complete records (the header excluded).
    records: Vec<Vec<u8>>,
    /// The length its complete lines cover.
    complete: u64,
    /// Bytes of a torn last line.
    torn: u64,
}

fn damaged(path: &Path, what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("journal {}: {what}", path.display()))
}

/// The complete lines of `bytes` (a torn tail excluded) and the length they cover.
fn complete_lines(bytes: &[u8]) -> (Vec<&[u8]>, usize) {
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    (bytes[..complete].split(|b| *b == b'\n').filter(|line| !line.is_empty()).collect(), complete)
}

/// The number after `prefix` on a journal line (`#epoch 3` → 3).
fn numbered(line: &[u8], prefix: &str) -> Option<u64> {
    std::str::from_utf8(line).ok()?.strip_prefix(prefix)?.trim().parse().ok()
}

/// A snapshot slot's contents, if it holds a complete snapshot.
fn parse_snapshot(bytes: &[u8]) -> Option<Snapshot> {
    let (lines, _) = complete_lines(bytes);
    let (first, rest) = lines.split_first()?;
    let (last, records) = rest.split_last()?;
    let header = std::str::from_utf8(first).ok()?.strip_prefix("#snapshot ")?;
    let (epoch, count) = header.split_once(' ')?;
    let (epoch, count): (u64, usize) = (epoch.parse().ok()?, count.parse().ok()?);
    (numbered(last, "#end ") == Some(epoch) && records.len() == count)
        .then(|| Snapshot { epoch, records: records.iter().map(|r| r.to_vec()).collect() })
}

fn snapshot_bytes(epoch: u64, records: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = format!("#snapshot {epoch} {}\n", records.len()).into_bytes();
    for record in records {
        bytes.extend_from_slice(record);
        bytes.push(b'\n');
    }
    bytes.extend_from_slice(format!("#end {epoch}\n").as_bytes());
    bytes
}

/// A log file's contents, read: its epoch, records and torn tail; a journal line in the middle
/// of it is damage.
fn parse_log(path: &Path, which: u64, bytes: &[u8]) -> io::Result<LogFile> {
    let (lines, complete) = complete_lines(bytes);
    let header = lines.first().and_then(|l| numbered(l, "#epoch "));
    let records: Vec<Vec<u8>> = lines[usize::from(header.is_some())..].iter().map(|l| l.to_vec()).collect();
    if let Some(line) = records.iter().find(|l| l.starts_with(b"#")) {
        return Err(damaged(
            &log_path(path, which),
            format!("unexpected line {:?} in the log", String::from_utf8_lossy(line)),
        ));
    }
    let epoch = header.or((!records.is_empty()).then_some(0));
    Ok(LogFile { which, epoch, records, complete: complete as u64, torn: (bytes.len() - complete) as u64 })
}

impl Journal {
    /// Open (or create) the journal at `path` and return it with every complete record in order
    /// (the snapshot's records first, then the logs'). If a compaction was cut short, the
    /// records span two logs and a snapshot is owed: see [`Journal::take_owed_snapshot`].
    pub async fn open(path: impl AsRef<Path>) -> io::Result<(Journal, Vec<Vec<u8>>)> {
        let path = path.as_ref().to_path_buf();
        // `<log>` is opened (and in the real world locked: one writer per journal) first.
        let (first_file, first_bytes) = imp::open(&path, true).await?;
        let mut snapshot: Option<Snapshot> = None;
        for slot in [0, 1] {
            let found = imp::read(&slot_path(&path, slot)).await?.as_deref().and_then(parse_snapshot);
            if let Some(found) = found.filter(|f| snapshot.as_ref().is_none_or(|s| f.epoch > s.epoch)) {
                snapshot = Some(found);
            }
        }
        let second_bytes = imp::read(&log_path(&path, 1)).await?.unwrap_or_default();
        let snapshot_epoch = snapshot.as_ref().map_or(0, |s| s.epoch);
        let logs = [parse_log(&path, 0, &first_bytes)?, parse_log(&path, 1, &second_bytes)?];
        // The logs still to replay, oldest first; older ones are history the snapshot holds.
        let mut live: Vec<LogFile> =
            logs.into_iter().filter(|l| l.epoch.is_some_and(|e| e >= snapshot_epoch)).collect();
        live.sort_by_key(|l| l.epoch);
        let epochs: Vec<u64> = live.iter().filter_map(|l| l.epoch).collect();
        let fits = match epochs[..] {
            [] => snapshot_epoch == 0,
            [e] => e == snapshot_epoch,
            [e, next] => e == snapshot_epoch && next == e + 1,
            _ => false,
        };
        if !fits {
            let found: Vec<String> = epochs.iter().map(|e| format!("epoch {e}")).collect();
            return Err(damaged(
                &path,
                format!(
                    "the newest complete snapshot is of epoch {snapshot_epoch} but the logs found are of {} \
                     (a log of the snapshot's epoch, and at most the next, must follow it)",
                    if found.is_empty() { "none".to_string() } else { found.join(" and ") }
                ),
            ));
        }
        // The log being written: the newest, or a fresh `<log>` (epoch 0).
        let current = live.last().map_or(0, |l| l.which);
        let (complete, torn) = live.last().map_or((0, 0), |l| (l.complete, l.torn));
        let file = if current == 0 {
            first_file
        } else {
            drop(first_file);
            imp::open(&log_path(&path, 1), false).await?.0
        };
        // Cut a torn tail off so the next write starts on a record boundary.
        if torn > 0 {
            tracing::warn!(
                journal = %log_path(&path, current).display(),
                torn_bytes = torn,
                "dropping a torn last record (a crash during its sync; it was never acknowledged)"
            );
            imp::truncate(&file, complete).await?;
        }
        let epoch = epochs.last().copied().unwrap_or(0);
        let owed = epochs.len() == 2;
        let shared = Shared {
            path: path.clone(),
            state: Mutex::new(SyncState {
                file,
                pending: Vec::new(),
                written: 0,
                synced: 0,
                len: complete,
                syncing: false,
                syncs: 0,
                failed: None,
                snapshot_epoch,
                snapshotting: owed,
                snapshots_failed: None,
            }),
            synced: tokio::sync::Notify::new(),
            faults: Faults::default(),
        };
        let shared = Arc::new(shared);
        let mut records = snapshot.map(|s| s.records).unwrap_or_default();
        let since_cut = live.last().map_or(0, |l| l.records.len());
        let mut owed_at = None;
        for (i, log) in live.into_iter().enumerate() {
            if i == 1 {
                owed_at = Some(records.len());
            }
            records.extend(log.records);
        }
        if owed_at.is_some() {
            tracing::info!(
                journal = %path.display(),
                epoch,
                "a compaction was cut short: replaying two logs; epoch {epoch}'s snapshot is owed"
            );
        }
        Ok((Journal { path, shared, torn_bytes: torn, epoch, log_file: current, since_cut, owed: owed_at }, records))
    }

    /// The same journal with crash points (`mid-sync`, `mid-compaction`, `after-snapshot`) a
    /// fault plan can arm.
    pub fn with_faults(mut self, faults: Faults) -> Journal {
        Arc::get_mut(&mut self.shared).expect("set before the journal is shared").faults = faults;
        self
    }

    /// If a compaction was cut short by a crash: how many of the records [`Journal::open`]
    /// returned its snapshot must hold (the old snapshot's and the older log's), and the writer
    /// of that snapshot. The owner writes it — its state as of that record — before the journal
    /// compacts again; until then [`Journal::cut`] declines.
    pub fn take_owed_snapshot(&mut self) -> Option<(usize, SnapshotWriter)> {
        let at = self.owed.take()?;
        Some((at, SnapshotWriter { shared: self.shared.clone(), epoch: self.epoch, done: false }))
    }

    /// Buffer one record (which must not contain a newline or start with `#`). It is durable
    /// once [`JournalHandle::durable`] of the ticket returns; a crash before that loses it.
    pub fn write(&mut self, record: &[u8]) -> io::Result<Ticket> {
        check_record(&self.path, record)?;
        let mut state = self.shared.state.lock().expect("journal state");
        if let Some(why) = &state.failed {
            return Err(failed(&self.path, why));
        }
        state.pending.extend_from_slice(record);
        state.pending.push(b'\n');
        state.written += record.len() as u64 + 1;
        self.since_cut += 1;
        Ok(Ticket(state.written))
    }

    /// A handle that waits for durability without the journal.
    pub fn handle(&self) -> JournalHandle {
        JournalHandle { shared: self.shared.clone() }
    }

    /// Put every written record on disk and wait until it is durable.
    pub async fn sync(&mut self) -> io::Result<()> {
        let ticket = Ticket(self.shared.state.lock().expect("journal state").written);
        self.handle().durable(ticket).await
    }

    /// Write one record and wait until it is durable.
    pub async fn append(&mut self, record: &[u8]) -> io::Result<()> {
        let ticket = self.write(record)?;
        self.handle().durable(ticket).await
    }

    /// Syncs so far (each carried every record written before it started).
    pub fn syncs(&self) -> u64 {
        self.shared.state.lock().expect("journal state").syncs
    }

    /// Why the journal takes nothing more, if it does not (a write or sync failed).
    pub fn failure(&self) -> Option<String> {
        self.shared.state.lock().expect("journal state").failed.clone()
    }

    /// Step 1 of a compaction: sync what is written, then start the next epoch's log in the
    /// other file and send every later record there. Returns the writer of the snapshot the
    /// cut owes — the owner's state as of now — or `None` while an earlier snapshot is still
    /// owed (or snapshots failed): one compaction at a time, since the next one overwrites the
    /// older log and snapshot slot.
    ///
    /// Call with the owner's exclusive access (nothing written concurrently); it costs a sync
    /// and the new log's header sync, not the snapshot.
    pub async fn cut(&mut self) -> io::Result<Option<SnapshotWriter>> {
        {
            let state = self.shared.state.lock().expect("journal state");
            if state.snapshotting || state.snapshots_failed.is_some() {
                return Ok(None);
            }
        }
        self.sync().await?;
        let (epoch, which) = (self.epoch + 1, 1 - self.log_file);
        let next = log_path(&self.path, which);
        let file = imp::create(&next).await?;
        let header = format!("#epoch {epoch}\n").into_bytes();
        imp::write_at(&file, &header, 0).await?;
        self.shared.faults.disk_stall().await;
        imp::sync(&file).await?;
        imp::sync_dir(&next).await?;
        {
            let mut state = self.shared.state.lock().expect("journal state");
            debug_assert!(state.pending.is_empty() && !state.syncing, "cut with writes in flight");
            state.file = file;
            state.len = header.len() as u64;
            state.snapshotting = true;
        }
        (self.epoch, self.log_file, self.since_cut) = (epoch, which, 0);
        Ok(Some(SnapshotWriter { shared: self.shared.clone(), epoch, done: false }))
    }

    /// A whole compaction at once ([`Journal::cut`], then the snapshot of `records`): on return
    /// the next [`Journal::open`] reads `records` and whatever is written after. Fails if a
    /// snapshot is still owed.
    pub async fn compact(&mut self, records: &[Vec<u8>]) -> io::Result<()> {
        if let Some(bad) = records.iter().find(|r| check_record(&self.path, r).is_err()) {
            return Err(bad_snapshot_record(&self.path, bad));
        }
        let Some(writer) = self.cut().await? else {
            return Err(io::Error::other(format!(
                "journal {}: an earlier snapshot is still owed; compact after it is written",
                self.path.display()
            )));
        };
        writer.write(records.to_vec()).await
    }

    /// Records in the log being written (since the last cut): about what a restart replays
    /// beyond the snapshot.
    pub fn records_since_snapshot(&self) -> usize {
        self.since_cut
    }

    /// Bytes of the log being written (synced records; the snapshot is apart).
    pub fn log_bytes(&self) -> u64 {
        self.shared.state.lock().expect("journal state").len
    }

    /// The epoch of the log being written: how many times the journal was cut.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The epoch of the newest complete snapshot (0: none).
    pub fn snapshot_epoch(&self) -> u64 {
        self.shared.state.lock().expect("journal state").snapshot_epoch
    }

    /// Whether a snapshot is owed (being written in the background, or owed since a crash).
    pub fn snapshotting(&self) -> bool {
        self.shared.state.lock().expect("journal state").snapshotting
    }

    /// Where the journal lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of a torn last record dropped when the journal was opened (0: none).
    pub fn torn_bytes(&self) -> u64 {
        self.torn_bytes
    }
}

impl SnapshotWriter {
    /// Step 2 of a compaction: write `records` — which must rebuild the owner's state as of the
    /// cut, each one line not starting with `#` — as the cut's snapshot, durable in its slot.
    /// Commits go on meanwhile. On failure the journal stops compacting (its history is intact;
    /// a restart writes the snapshot).
    pub async fn write(mut self, records: Vec<Vec<u8>>) -> io::Result<()> {
        self.done = true;
        let result = self.write_slot(&records).await;
        let mut state = self.shared.state.lock().expect("journal state");
        match &result {
            Ok(()) => {
                state.snapshot_epoch = self.epoch;
                state.snapshotting = false;
            }
            Err(e) => state.snapshots_failed = Some(e.to_string()),
        }
        result
    }

    async fn write_slot(&self, records: &[Vec<u8>]) -> io::Result<()> {
        let path = &self.shared.path;
        if let Some(bad) = records.iter().find(|r| check_record(path, r).is_err()) {
            return Err(bad_snapshot_record(path, bad));
        }
        let faults = &self.shared.faults;
        faults.crash_point(CrashPoint::MidCompaction).await;
        let bytes = snapshot_bytes(self.epoch, records);
        // As with a record, a crash point splits the write, so a torn snapshot is tested too.
        let half = if faults.is_on() { bytes.len() / 2 } else { 0 };
        let slot = slot_path(path, self.epoch % 2);
        let file = imp::create(&slot).await?;
        if half > 0 {
            imp::write_at(&file, &bytes[..half], 0).await?;
            faults.crash_point(CrashPoint::MidSync).await;
        }
        imp::write_at(&file, &bytes[half..], half as u64).await?;
        faults.disk_stall().await;
        imp::sync(&file).await?;
        imp::sync_dir(&slot).await?;
        faults.crash_point(CrashPoint::AfterSnapshot).await;
        Ok(())
    }

    /// The epoch of the snapshot it writes.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if !self.done {
            let mut state = self.shared.state.lock().expect("journal state");
            state.snapshots_failed = Some(format!("the snapshot of epoch {} was never written", self.epoch));
        }
    }
}

/// A record must be one line that is not one of the journal's own.
fn check_record(path: &Path, record: &[u8]) -> io::Result<()> {
    if record.contains(&b'\n') || record.starts_with(b"#") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("journal {}: a record may not contain a newline or start with '#'", path.display()),
        ));
    }
    Ok(())
}

fn bad_snapshot_record(path: &Path, bad: &[u8]) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "journal {}: snapshot record {:?} contains a newline or starts with '#'",
            path.display(),
            String::from_utf8_lossy(bad)
        ),
    )
}

fn failed(path: &Path, why: &str) -> io::Error {
    io::Error::other(format!("journal {} failed earlier ({why}); restart to replay it from disk", path.display()))
}

impl JournalHandle {
    /// Bytes of the log being written (synced records; the snapshot is apart).
    pub fn log_bytes(&self) -> u64 {
        self.shared.state.lock().expect("journal state").len
    }

    /// The ticket of everything written so far.
    pub fn written(&self) -> Ticket {
        Ticket(self.shared.state.lock().expect("journal state").written)
    }

    /// Wait until the write of `ticket` is durable. **Group commit**: the first waiter to find no
    /// sync under way leads one — it takes every record written so far, writes them and syncs
    /// once — and the others wait for it; whoever is still not covered leads the next. So
    /// commits that arrive while a sync is in flight share the next one.
    pub async fn durable(&self, ticket: Ticket) -> io::Result<()> {
        let shared = &self.shared;
        loop {
            // Registered before the check, so a sync ending in between still wakes us.
            let woken = shared.synced.notified();
            let lead = {
                let mut state = shared.state.lock().expect("journal state");
                if let Some(why) = &state.failed {
                    return Err(failed(&shared.path, why));
                }
                if state.synced >= ticket.0 {
                    return Ok(());
                }
                (!state.syncing).then(|| {
                    state.syncing = true;
                    let sync = GroupSync {
                        file: state.file.clone(),
                        bytes: std::mem::take(&mut state.pending),
                        offset: state.len,
                    };
                    (sync, state.written)
                })
            };
            let Some((sync, target)) = lead else {
                woken.await;
                continue;
            };
            // The sync is a task of its own: the leader's caller may give up (an HTTP handler is
            // dropped when its client disconnects), and a sync dropped half way would leave
            // `syncing` set and the taken bytes unwritten — every later commit waiting forever.
            let task = tokio::spawn(lead_sync(shared.clone(), sync, target));
            match task.await {
                Ok(result) => result?,
                Err(e) => {
                    return Err(io::Error::other(format!(
                        "journal {}: the sync task ended: {e}",
                        shared.path.display()
                    )))
                }
            }
        }
    }
}

/// What one group sync writes: the bytes taken, where, in which log file.
struct GroupSync {
    file: imp::File,
    bytes: Vec<u8>,
    offset: u64,
}

/// One group sync, led to its end whoever waits for it: write and sync, then mark everything up
/// to `target` synced (or the journal failed) and wake the waiters.
async fn lead_sync(shared: Arc<Shared>, sync: GroupSync, target: u64) -> io::Result<()> {
    let result = write_and_sync(&shared, &sync).await;
    {
        let mut state = shared.state.lock().expect("journal state");
        state.syncing = false;
        match &result {
            Ok(()) => {
                state.len += sync.bytes.len() as u64;
                state.synced = target;
                state.syncs += u64::from(!sync.bytes.is_empty());
            }
            Err(e) => state.failed = Some(e.to_string()),
        }
    }
    shared.synced.notify_waiters();
    result.map_err(|e| io::Error::new(e.kind(), format!("journal {}: {e}", shared.path.display())))
}

/// Write the sync's bytes and sync. With crash points on, the bytes go down in two halves with
/// the `mid-sync` point between them: a crash there leaves a torn record on disk.
async fn write_and_sync(shared: &Shared, sync: &GroupSync) -> io::Result<()> {
    let GroupSync { file, bytes, offset } = sync;
    if bytes.is_empty() {
        return Ok(());
    }
    // A stalled disk (`disk-stall`) holds the write and its sync, the leader's caller waiting:
    // a client may give up on it half way.
    shared.faults.disk_stall().await;
    let half = if shared.faults.is_on() { bytes.len() / 2 } else { 0 };
    if half == 0 {
        return imp::write_and_sync(file, bytes, *offset).await;
    }
    imp::write_at(file, &bytes[..half], *offset).await?;
    shared.faults.crash_point(CrashPoint::MidSync).await;
    imp::write_at(file, &bytes[half..], offset + half as u64).await?;
    imp::sync(file).await
}

/// Run CPU-heavy `work` (serializing a snapshot) where it stalls no request: on tokio's blocking
/// pool in the real world; in the simulation, inline (one thread; simulated time does not move
/// while it runs).
pub async fn off_runtime<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    #[cfg(not(madsim))]
    {
        tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }
    #[cfg(madsim)]
    {
        work()
    }
}

/// Snapshot slot `slot` (0 or 1) of the log at `path`.
fn slot_path(path: &Path, slot: u64) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".snap-{slot}"));
    PathBuf::from(name)
}

/// Log file `which` (0: `path` itself, 1: `<path>.log-1`).
fn log_path(path: &Path, which: u64) -> PathBuf {
    if which == 0 {
        return path.to_path_buf();
    }
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".log-{which}"));
    PathBuf::from(name)
}

#[cfg(not(madsim))]
mod imp {
    use std::io::{self, Read};
    use std::os::unix::fs::FileExt;
    use std::path::Path;
    use std::sync::Arc;

    /// Shared with the blocking threads that write and sync it.
    pub type File = Arc<std::fs::File>;

    /// Run `io` on tokio's blocking pool: a write or an fsync must not stall the runtime's
    /// threads (and the requests they serve) for the milliseconds a disk takes.
    async fn blocking<T: Send + 'static>(io: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
        tokio::task::spawn_blocking(io).await.map_err(io::Error::other)?
    }

    /// Open (or create) `path` to read and write, and read it. With `lock`, the file is locked
    /// for this process: one writer per journal.
    pub async fn open(path: &Path, lock: bool) -> io::Result<(File, Vec<u8>)> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
        let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        // One writer per journal: a second process (an old replica still draining, a copy
        // started by mistake) would interleave records. The lock dies with the process.
        if let Err(e) = file.try_lock().or_else(|e| if lock { Err(e) } else { Ok(()) }) {
            return Err(match e {
                std::fs::TryLockError::WouldBlock => io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("journal {} is in use by another process; stop it first", path.display()),
                ),
                std::fs::TryLockError::Error(e) => e,
            });
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok((Arc::new(file), bytes))
    }

    pub async fn read(path: &Path) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn create(path: &Path) -> io::Result<File> {
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(path).map(Arc::new)
    }

    /// Make a newly created file's name in the folder of `path` durable.
    pub async fn sync_dir(path: &Path) -> io::Result<()> {
        match path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(dir) => std::fs::File::open(dir)?.sync_all(),
            None => std::fs::File::open(".")?.sync_all(),
        }
    }

    pub async fn write_at(file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
        let (file, bytes) = (file.clone(), bytes.to_vec());
        blocking(move || file.write_all_at(&bytes, offset)).await
    }

    pub async fn sync(file: &File) -> io::Result<()> {
        let file = file.clone();
        blocking(move || file.sync_data()).await
    }

    /// [`write_at`] and [`sync`] in one trip to the blocking pool (a group sync's hot path: one
    /// thread hand-off, not two).
    pub async fn write_and_sync(file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
        let (file, bytes) = (file.clone(), bytes.to_vec());
        blocking(move || {
            file.write_all_at(&bytes, offset)?;
            file.sync_data()
        })
        .await
    }

    pub async fn truncate(file: &File, len: u64) -> io::Result<()> {
        let file = file.clone();
        blocking(move || {
            file.set_len(len)?;
            file.sync_data()
        })
        .await
    }
}

#[cfg(madsim)]
mod imp {
    use std::io;
    use std::path::Path;
    use std::sync::Arc;

    /// Shared by the journal and its syncing tasks.
    pub type File = Arc<madsim::fs::File>;

    pub async fn open(path: &Path, _lock: bool) -> io::Result<(File, Vec<u8>)> {
        // madsim's file system opens existing files read-only; `create` is the only writable
        // open, and it truncates, so write the contents back.
        let bytes = match madsim::fs::read(path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let file = madsim::fs::File::create(path).await?;
        file.write_all_at(&bytes, 0).await?;
        file.sync_all().await?;
        Ok((Arc::new(file), bytes))
    }

    pub async fn read(path: &Path) -> io::Result<Option<Vec<u8>>> {
        match madsim::fs::read(path).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn create(path: &Path) -> io::Result<File> {
        madsim::fs::File::create(path).await.map(Arc::new)
    }

    /// The simulated disk has no folders to sync.
    pub async fn sync_dir(_path: &Path) -> io::Result<()> {
        Ok(())
    }

    pub async fn truncate(file: &File, len: u64) -> io::Result<()> {
        file.set_len(len).await?;
        sync(file).await
    }

    /// madsim's disk has no page cache: a write lands at once. What is not synced yet lives in
    /// the journal's own buffer instead, which dies with the node.
    pub async fn write_at(file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
        file.write_all_at(bytes, offset).await
    }

    pub async fn sync(file: &File) -> io::Result<()> {
        file.sync_all().await
    }

    pub async fn write_and_sync(file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
        write_at(file, bytes, offset).await?;
        sync(file).await
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_survive_reopen_and_a_torn_tail_is_dropped() {
        let dir = std::env::temp_dir().join(format!("lastmile-journal-{}", crate::clock::new_id()));
        let path = dir.join("log");
        let (mut journal, records) = Journal::open(&path).await.unwrap();
        assert!(records.is_empty());
        journal.append(b"{\"a\":1}").await.unwrap();
        journal.append(b"{\"b\":2}").await.unwrap();
        drop(journal);
        // Simulate a crash in the middle of a write.
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"c\"").unwrap();
        let (mut journal, records) = Journal::open(&path).await.unwrap();
        assert_eq!(records, vec![b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()]);
        journal.append(b"{\"d\":4}").await.unwrap();
        assert_eq!(journal.torn_bytes(), 4, "the torn tail was measured");
        assert!(journal.append(b"a\nb").await.is_err());
        drop(journal);
        let (_, records) = Journal::open(&path).await.unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(records[2], b"{\"d\":4}".to_vec());
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A request handler leading a group sync is dropped when its client disconnects: the sync
    /// must still finish, or `syncing` stays set and every later commit waits forever (found by
    /// the local chaos runs: trip-service stopped writing at a partition and never answered
    /// again).
    #[tokio::test]
    async fn a_sync_whose_leader_is_dropped_half_way_still_finishes_for_everyone() {
        let dir = std::env::temp_dir().join(format!("lastmile-journal-{}", crate::clock::new_id()));
        let path = dir.join("log");
        let (mut journal, _) = Journal::open(&path).await.unwrap();
        let first = journal.write(b"{\"a\":1}").unwrap();
        // Polled once — it takes the lead and starts the write — then dropped.
        let dropped = futures_util::FutureExt::now_or_never(journal.handle().durable(first));
        assert!(dropped.is_none(), "the leader was dropped before its sync ended");
        let second = journal.write(b"{\"b\":2}").unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), journal.handle().durable(second))
            .await
            .expect("a commit after a dropped leader is synced, not stuck behind it")
            .unwrap();
        drop(journal);
        let (_, records) = Journal::open(&path).await.unwrap();
        assert_eq!(records, vec![b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()], "the dropped leader's record too");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_record_written_but_never_synced_is_lost_with_the_process() {
        let dir = std::env::temp_dir().join(format!("lastmile-journal-{}", crate::clock::new_id()));
        let path = dir.join("log");
        let (mut journal, _) = Journal::open(&path).await.unwrap();
        journal.append(b"{\"a\":1}").await.unwrap();
        journal.write(b"{\"b\":2}").unwrap();
        drop(journal); // a crash before the sync
        let (mut journal, records) = Journal::open(&path).await.unwrap();
        assert_eq!(records, vec![b"{\"a\":1}".to_vec()]);
        journal.write(b"{\"c\":3}").unwrap();
        journal.sync().await.unwrap();
        drop(journal);
        let (_, records) = Journal::open(&path).await.unwrap();
        assert_eq!(records.len(), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_second_writer_on_a_journal_is_refused_until_the_first_is_gone() {
        let dir = std::env::temp_dir().join(format!("lastmile-journal-{}", crate::clock::new_id()));
        let path = dir.join("log");
        let (first, _) = Journal::open(&path).await.unwrap();
        let Err(e) = Journal::open(&path).await else { panic!("a second writer was let in") };
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert!(e.to_string().contains("in use by another process"), "{e}");
        drop(first);
        assert!(Journal::open(&path).await.is_ok(), "the lock goes with its holder");
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn scratch() -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("lastmile-journal-{}", crate::clock::new_id()));
        let path = dir.join("log");
        (dir, path)
    }

    fn recs(items: &[&str]) -> Vec<Vec<u8>> {
        items.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[tokio::test]
    async fn a_compacted_journal_replays_its_snapshot_then_what_came_after() {
        let (dir, path) = scratch();
        let (mut journal, _) = Journal::open(&path).await.unwrap();
        for i in 0..5 {
            journal.append(format!("{{\"n\":{i}}}").as_bytes()).await.unwrap();
        }
        assert_eq!(journal.records_since_snapshot(), 5);
        journal.write(b"{\"n\":5}").unwrap();
        journal.compact(&recs(&["{\"sum\":15}"])).await.unwrap();
        assert_eq!((journal.epoch(), journal.records_since_snapshot()), (1, 0));
        journal.append(b"{\"n\":6}").await.unwrap();
        drop(journal);
        let (mut journal, records) = Journal::open(&path).await.unwrap();
        assert_eq!(records, recs(&["{\"sum\":15}", "{\"n\":6}"]));
        assert_eq!((journal.epoch(), journal.records_since_snapshot()), (1, 1));
        // A second compaction takes the other slot; the newest complete one wins.
        journal.compact(&recs(&["{\"sum\":21}", "{\"extra\":1}"])).await.unwrap();
        journal.append(b"{\"n\":7}").await.unwrap();
        drop(journal);
        assert!(slot_path(&path, 0).exists() && slot_path(&path, 1).exists());
        let (journal, records) = Journal::open(&path).await.unwrap();
        assert_eq!(records, recs(&["{\"sum\":21}", "{\"extra\":1}", "{\"n\":7}"]));
        assert_eq!(journal.epoch(), 2);
        drop(journal);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn commits_go_on_while_a_snapshot_is_written_and_land_after_it() {
        let (dir, path) = scratch();
        let (mut journal, _) = Journal::open(&path).await.unwrap();
        journal.append(b"{\"n\":1}").await.unwrap();
        journal.write(b"{\"n\":2}").unwrap();
        let writer = journal.cut().await.unwrap().expect("nothing owed yet");
        assert_eq!((journal.epoch(), journal.snapshot_epoch(), journal.records_since_snapshot()), (1, 0, 0));
        assert!(journal.cut().await.unwrap().is_none(), "one compaction at a time");
        // The cut synced what came before it; what comes after goes to the next log.
        journal.append(b"{\"n\":3}").await.unwrap();
        writer.write(recs(&["{\"sum\":3}"])).await.unwrap();
        journal.append(b"{\"n\":4}").await.unwrap();
        assert_eq!((journal.snapshot_epoch(), journal.snapshotting()), (1, false));
        drop(journal);
        let (mut journal, records) = Journal::open(&path).await.unwrap();
        assert_eq!(records, recs(&["{\"sum\":3}", "{\"n\":3}", "{\"n\":4}"]), "the snapshot, then the new log");
        assert!(journal.take_owed_snapshot().is_none());
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"{\"n\":1}\n{\"n\":2}\n",
            "the older log is still on disk (the `after-snapshot` state) and is not applied twice"
        );
        // The next compaction reuses the older log's file and the other snapshot slot.
        journal.compact(&recs(&["{\"sum\":10}"])).await.unwrap();
        journal.append(b"{\"n\":5}").await.unwrap();
        drop(journal);
        assert_eq!(std::fs::read(&path).unwrap(), b"#epoch 2\n{\"n\":5}\n");
        let (_, records) = Journal::open(&path).await.unwrap();
        assert_eq!(records, recs(&["{\"sum\":10}", "{\"n\":5}"]));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_compaction_cut_short_replays_both_logs_and_its_snapshot_is_written_at_open() {
        let (dir, path) = scratch();
        let (mut journal, _) = Journal::open(&path).await.unwrap();
        journal.append(b"{\"n\":1}").await.unwrap();
        journal.compact(&recs(&["{\"sum\":1}"])).await.unwrap();
        journal.append(b"{\"n\":2}").await.unwrap();
        // Cut to epoch 2; the process dies before the snapshot is written (`mid-compaction`).
        let writer = journal.cut().await.unwrap().unwrap();
        journal.append(b"{\"n\":3}").await.unwrap();
        std::mem::forget(writer);
        drop(journal);
        let (mut journal, records) = Journal::open(&path).await.unwrap();
        assert_eq!(records, recs(&["{\"sum\":1}", "{\"n\":2}", "{\"n\":3}"]), "epoch 1's snapshot, then both logs");
        assert_eq!((journal.epoch(), journal.snapshot_epoch()), (2, 1));
        assert!(journal.cut().await.unwrap().is_none(), "no compaction while a snapshot is owed");
        let (at, writer) = journal.take_owed_snapshot().expect("a snapshot is owed");
        assert_eq!((at, writer.epoch()), (2, 2), "it holds the records up to the newer log");
        // Crash again before writing it: still owed, nothing lost.
        drop((writer, journal));
        let (mut journal, again) = Journal::open(&path).await.unwrap();
        assert_eq!(again, records);
        let (_, writer) = journal.take_owed_snapshot().unwrap();
        writer.write(recs(&["{\"sum\":3}"])).await.unwrap();
        journal.append(b"{\"n\":4}").await.unwrap();
        drop(journal);
        let (mut journal, records) = Journal::open(&path).await.unwrap();
        assert_eq!(records, recs(&["{\"sum\":3}", "{\"n\":3}", "{\"n\":4}"]));
        assert!(journal.take_owed_snapshot().is_none());
        assert!(journal.cut().await.unwrap().is_some(), "compactions go on");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_snapshot_writer_dropped_unwritten_stops_compactions_and_loses_nothing() {
        let (dir, path) = scratch();
        let (mut journal, _) = Journal::open(&path).await.unwrap();
        journal.append(b"{\"n\":1}").await.unwrap();
        drop(journal.cut().await.unwrap().unwrap());
        assert!(journal.cut().await.unwrap().is_none());
        let e = journal.compact(&recs(&["{\"sum\":1}"])).await.unwrap_err();
        assert!(e.to_string().contains("still owed"), "{e}");
        journal.append(b"{\"n\":2}").await.unwrap();
        drop(journal);
        let (mut journal, records) = Journal::open(&path).await.unwrap();
        assert_eq!(records, recs(&["{\"n\":1}", "{\"n\":2}"]));
        assert_eq!(journal.take_owed_snapshot().map(|(at, _)| at), Some(1));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_torn_snapshot_is_ignored_and_the_history_it_would_replace_is_kept() {
        let (dir, path) = scratch();
        let (mut journal, _) = Journal::open(&path).await.unwrap();
        journal.append(b"{\"n\":1}").await.unwrap();
        journal.compact(&recs(&["{\"sum\":1}"])).await.unwrap();
        journal.append(b"{\"n\":2}").await.unwrap();
        drop(journal);
        // A crash in the middle of writing epoch 2's snapshot: no end line.
        let torn = snapshot_bytes(2, &recs(&["{\"sum\":3}"]));
        std::fs::write(slot_path(&path, 0), &torn[..torn.len() - 4]).unwrap();
        let (journal, records) = Journal::open(&path).await.unwrap();
        assert_eq!(records, recs(&["{\"sum\":1}", "{\"n\":2}"]));
        assert_eq!(journal.epoch(), 1);
        drop(journal);
        // A snapshot whose record count disagrees with its lines is not complete either.
        let mut short = snapshot_bytes(2, &recs(&["{\"a\":1}", "{\"b\":2}"]));
        short.splice(0..b"#snapshot 2 2".len(), b"#snapshot 2 3".iter().copied());
        std::fs::write(slot_path(&path, 0), short).unwrap();
        assert_eq!(Journal::open(&path).await.unwrap().0.epoch(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_log_without_its_snapshot_is_refused_and_records_may_not_look_like_journal_lines() {
        let (dir, path) = scratch();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&path, b"#epoch 3\n{\"n\":1}\n").unwrap();
        let Err(e) = Journal::open(&path).await else { panic!("a log of epoch 3 with no snapshot was replayed") };
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("epoch 3") && e.to_string().contains("epoch 0"), "{e}");
        // A second log two epochs on, or one with no log of the snapshot's epoch, is damage too.
        std::fs::write(&path, b"#epoch 0\n{\"n\":1}\n").unwrap();
        std::fs::write(log_path(&path, 1), b"#epoch 2\n").unwrap();
        let Err(e) = Journal::open(&path).await else { panic!("a gap between the logs was replayed") };
        assert!(e.to_string().contains("epoch 0 and epoch 2"), "{e}");
        std::fs::remove_file(log_path(&path, 1)).unwrap();
        std::fs::write(&path, b"{\"n\":1}\n#end 1\n").unwrap();
        let Err(e) = Journal::open(&path).await else { panic!("a stray journal line was replayed") };
        assert!(e.to_string().contains("unexpected line"), "{e}");
        std::fs::remove_file(&path).unwrap();
        let (mut journal, _) = Journal::open(&path).await.unwrap();
        assert_eq!(journal.append(b"#epoch 9").await.unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert_eq!(journal.compact(&recs(&["a\nb"])).await.unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert_eq!(journal.epoch(), 0, "a refused compaction changes nothing");
        drop(journal);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_waiting_together_share_one_sync_and_all_are_durable() {
        let (dir, path) = scratch();
        let (mut journal, _) = Journal::open(&path).await.unwrap();
        let tickets: Vec<Ticket> =
            (0..50).map(|i| journal.write(format!("{{\"n\":{i}}}").as_bytes()).unwrap()).collect();
        let handle = journal.handle();
        let waits = tickets.into_iter().map(|t| {
            let handle = handle.clone();
            tokio::spawn(async move { handle.durable(t).await })
        });
        for wait in waits.collect::<Vec<_>>() {
            wait.await.unwrap().unwrap();
        }
        assert_eq!(journal.syncs(), 1, "fifty commits, one write and one fsync");
        journal.append(b"{\"n\":50}").await.unwrap();
        assert_eq!(journal.syncs(), 2);
        drop((journal, handle));
        let (_, records) = Journal::open(&path).await.unwrap();
        assert_eq!(records.len(), 51);
        assert_eq!(records[49], b"{\"n\":49}".to_vec(), "in the order written");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_committers_each_return_only_once_their_record_is_durable() {
        let (dir, path) = scratch();
        let (journal, _) = Journal::open(&path).await.unwrap();
        let journal = Arc::new(tokio::sync::Mutex::new(journal));
        let mut tasks = Vec::new();
        for i in 0..40 {
            let (journal, log) = (journal.clone(), path.clone());
            tasks.push(tokio::spawn(async move {
                // As a store does: write under the lock, wait for durability outside it.
                let (ticket, handle) = {
                    let mut j = journal.lock().await;
                    (j.write(format!("{{\"n\":{i}}}").as_bytes()).unwrap(), j.handle())
                };
                handle.durable(ticket).await.unwrap();
                // Durable means on disk: a reader opening the file now finds it.
                let text = std::fs::read_to_string(&log).unwrap();
                assert!(text.contains(&format!("{{\"n\":{i}}}\n")), "record {i} acknowledged before it was written");
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let syncs = journal.lock().await.syncs();
        assert!((1..=40).contains(&syncs), "{syncs} syncs");
        drop(journal);
        let (_, records) = Journal::open(&path).await.unwrap();
        assert_eq!(records.len(), 40);
        std::fs::remove_dir_all(dir).unwrap();
    }

    use std::io::Write;
}
