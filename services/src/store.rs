//! Durable service state with a transactional outbox.
//!
//! A service's state is rebuilt by replaying its journal. A commit writes the state changes and
//! the events they cause as one fsynced journal record, applies the changes, and hands the
//! events to the outbox; when the broker confirms an event, a `published` record is appended.
//! After a crash, events committed but never confirmed are published again (same event id), so
//! no committed event is lost and consumers deduplicate the repeats.
//!
//! Every [`Config::compact_after`] records (and more as the state grows) the journal is
//! compacted: the state, written as the changes that rebuild it ([`State::compacted`]), and the
//! events still unconfirmed replace the history, so a restart replays the state rather than
//! everything that led to it. A compaction holds the store's lock only for the journal's cut
//! and to take the state's chunks (shared, not copied); the snapshot is serialized and written
//! in the background while commits go on.
//!
//! [`Config::compact_after`]: crate::Config::compact_after

use crate::api::Context;
use crate::events::Event;
use lastmile_platform::broker::outbox::Outbox;
use lastmile_platform::coverage::RecoveryPath;
use lastmile_platform::faults::{CrashPoint, Faults};
use lastmile_platform::http::ApiError;
use lastmile_platform::storage::{off_runtime, Journal, JournalHandle, Ticket};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, Mutex};

/// State that is changed only through journaled changes.
pub trait State: Default + Send + 'static {
    /// One journaled state change.
    type Change: Serialize + DeserializeOwned + Send + Sync + Clone;
    /// Apply a change (at commit and at replay; must be deterministic).
    fn apply(&mut self, change: &Self::Change);
    /// Changes that, applied in order to the default state, rebuild this one exactly: what a
    /// compacted journal keeps. Taken under the store's lock, so a large state keeps them in
    /// shared chunks ([`Chunked`]) and hands out references, not copies.
    fn compacted(&self) -> Compacted<Self::Change>;
}

/// A state's changes in chunks that may be shared with the state itself: the snapshot is
/// serialized from them after the store's lock is released.
pub type Compacted<C> = Vec<Arc<Vec<C>>>;

/// Changes per record in a compacted journal (keeps each line a moderate size), and per chunk of
/// a [`Chunked`] list.
pub const COMPACTED_CHANGES_PER_RECORD: usize = 1000;

/// An append-only list kept in chunks of [`COMPACTED_CHANGES_PER_RECORD`]: full chunks are frozen
/// and shared, so [`Chunked::chunks`] costs a reference per frozen chunk and a copy of the last,
/// partial one — not a copy of the list.
#[derive(Debug, Clone)]
pub struct Chunked<T> {
    frozen: Vec<Arc<Vec<T>>>,
    open: Vec<T>,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Chunked { frozen: Vec::new(), open: Vec::new() }
    }
}

impl<T: Clone> Chunked<T> {
    /// Append `item`.
    pub fn push(&mut self, item: T) {
        self.open.push(item);
        if self.open.len() == COMPACTED_CHANGES_PER_RECORD {
            self.frozen.push(Arc::new(std::mem::take(&mut self.open)));
        }
    }

    /// Every item, in the order pushed.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.frozen.iter().flat_map(|c| c.iter()).chain(self.open.iter())
    }

    /// How many items.
    pub fn len(&self) -> usize {
        self.frozen.len() * COMPACTED_CHANGES_PER_RECORD + self.open.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The last item pushed.
    pub fn last(&self) -> Option<&T> {
        self.open.last().or_else(|| self.frozen.last().and_then(|c| c.last()))
    }

    /// A copy of every item, in order.
    pub fn to_vec(&self) -> Vec<T> {
        self.iter().cloned().collect()
    }

    /// The items as shared chunks (see [`Compacted`]).
    pub fn chunks(&self) -> Compacted<T> {
        let mut chunks = self.frozen.clone();
        if !self.open.is_empty() {
            chunks.push(Arc::new(self.open.clone()));
        }
        chunks
    }
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
enum Record<C> {
    Commit { changes: Vec<C>, events: Vec<Event> },
    Published { event_id: String },
}

/// Parse a journal's records, in order; the first corrupt one is reported with its index. In the
/// real world the records are cut into one run of about equal bytes per core, parsed at once
/// (parsing is half of a restart's time; BENCHMARKS.md); a simulated service parses in turn.
fn parse_records<C: DeserializeOwned + Send>(records: &[Vec<u8>]) -> Result<Vec<Record<C>>, (usize, String)> {
    let parse_run = |run: &[Vec<u8>], first: usize| -> Result<Vec<Record<C>>, (usize, String)> {
        run.iter()
            .enumerate()
            .map(|(i, raw)| serde_json::from_slice(raw).map_err(|e| (first + i, e.to_string())))
            .collect()
    };
    #[cfg(not(madsim))]
    {
        /// Below this many bytes one thread parses faster than several start.
        const PARALLEL_FROM_BYTES: usize = 4 << 20;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
        let bytes: usize = records.iter().map(Vec::len).sum();
        if cores > 1 && bytes >= PARALLEL_FROM_BYTES {
            // Cut by bytes, not by count: a compacted journal's first records are its large ones.
            let mut runs = Vec::with_capacity(cores);
            let (mut start, mut taken) = (0, 0);
            for (i, raw) in records.iter().enumerate() {
                taken += raw.len();
                if taken * cores >= bytes * (runs.len() + 1) && runs.len() + 1 < cores {
                    runs.push(start..i + 1);
                    start = i + 1;
                }
            }
            runs.push(start..records.len());
            return std::thread::scope(|scope| {
                let parsers: Vec<_> = runs
                    .into_iter()
                    .map(|run| scope.spawn(move || parse_run(&records[run.clone()], run.start)))
                    .collect();
                let mut all = Vec::with_capacity(records.len());
                for parser in parsers {
                    all.extend(parser.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))?);
                }
                Ok(all)
            });
        }
    }
    parse_run(records, 0)
}

/// A [`Record::Commit`] written from borrowed changes (a snapshot's chunks): the same bytes.
#[derive(Serialize)]
#[serde(tag = "record", rename_all = "snake_case")]
enum RecordRef<'a, C> {
    Commit { changes: &'a [C], events: &'a [Event] },
}

/// A service's durable state, its journal and its outbox.
pub struct Store<S: State> {
    /// The current state (replayed from the journal at open).
    state: S,
    /// Where commits go before they are acknowledged.
    journal: Journal,
    /// Publishes committed events until confirmed.
    outbox: Outbox,
    /// The `before-reply` crash point (off unless a simulated fault plan arms it).
    faults: Faults,
    /// Events committed and not confirmed yet, in commit order, by their place in it.
    unconfirmed: BTreeMap<u64, Event>,
    /// Where each unconfirmed event sits in `unconfirmed`.
    unconfirmed_at: BTreeMap<String, u64>,
    /// The place of the next committed event.
    next_event: u64,
    /// Compact the journal once this many records were written since its last snapshot.
    compact_after: usize,
    /// About how many changes the last snapshot holds (at open: the changes replayed).
    snapshot_changes: usize,
    /// The log's records since the snapshot, for `/metrics`.
    sizes: Arc<AtomicU64>,
}

/// A store shared between handlers and background tasks.
pub type SharedStore<S> = Arc<Mutex<Store<S>>>;

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The journal file could not be read or written.
    #[error("journal {path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// A journal record is not one this service writes.
    #[error("journal {path}: record {index} is corrupt: {reason}")]
    Corrupt { path: String, index: usize, reason: String },
}

impl<S: State> Store<S> {
    /// Open the journal at `path`, replay it, and start publishing unconfirmed events to the
    /// service's events exchange. The service's crash points (the journal's `mid-sync`, the
    /// store's `before-reply`, the outbox's `before-confirm-recorded`) and recovery counters
    /// come from `ctx`.
    pub async fn open(path: &Path, ctx: &Context) -> Result<SharedStore<S>, StoreError> {
        let (faults, coverage) = (ctx.config.faults.clone(), ctx.config.coverage.clone());
        let display = path.display().to_string();
        let (journal, records) =
            Journal::open(path).await.map_err(|source| StoreError::Io { path: display.clone(), source })?;
        if journal.torn_bytes() > 0 {
            coverage.hit(RecoveryPath::TornTailDropped);
        }
        if !records.is_empty() {
            coverage.hit(RecoveryPath::JournalReplayed);
        }
        if journal.snapshot_epoch() > 0 {
            coverage.hit(RecoveryPath::SnapshotReplayed);
        }
        let mut journal = journal.with_faults(faults.clone());
        // A compaction cut short by a crash: its snapshot is the state at the end of the older
        // log, written before anything else (the journal compacts no more until it is).
        let mut owed = journal.take_owed_snapshot();
        let mut state = S::default();
        let mut committed: Vec<Event> = Vec::new();
        let mut published = BTreeSet::new();
        let mut replayed_changes = 0;
        let mut parsed = parse_records::<S::Change>(&records)
            .map_err(|(index, reason)| StoreError::Corrupt { path: display.clone(), index, reason })?
            .into_iter();
        // One pass more than there are records: the owed snapshot may come after the last.
        for index in 0..=records.len() {
            if let Some((_, writer)) = owed.take_if(|(at, _)| *at == index) {
                let unconfirmed = committed.iter().filter(|e| !published.contains(&e.event_id)).cloned().collect();
                let snapshot = snapshot_of(&state.compacted(), unconfirmed);
                writer.write(snapshot).await.map_err(|source| StoreError::Io { path: display.clone(), source })?;
                coverage.hit(RecoveryPath::OwedSnapshotWritten);
            }
            let Some(record) = parsed.next() else { break };
            match record {
                Record::Commit { changes, events } => {
                    replayed_changes += changes.len();
                    for change in &changes {
                        state.apply(change);
                    }
                    committed.extend(events);
                }
                Record::Published { event_id } => {
                    published.insert(event_id);
                }
            }
        }
        debug_assert!(owed.is_none(), "the owed snapshot lies within the records replayed");
        let (confirmed_tx, mut confirmed_rx) = mpsc::unbounded_channel();
        let outbox = ctx.outbox(Some(confirmed_tx));
        let mut store = Store {
            state,
            journal,
            outbox,
            faults,
            unconfirmed: BTreeMap::new(),
            unconfirmed_at: BTreeMap::new(),
            next_event: 0,
            compact_after: ctx.config.compact_after.max(1),
            snapshot_changes: replayed_changes,
            sizes: Arc::default(),
        };
        store.note_sizes();
        let journal = store.journal.handle();
        ctx.metrics.gauge("lastmile_journal_bytes", "Bytes of the journal's log (the snapshot apart).", move || {
            journal.log_bytes() as f64
        });
        let sizes = store.sizes.clone();
        ctx.metrics.gauge(
            "lastmile_journal_records_since_snapshot",
            "Journal records a restart replays after the snapshot.",
            move || sizes.load(Ordering::Relaxed) as f64,
        );
        for event in committed.into_iter().filter(|e| !published.contains(&e.event_id)) {
            coverage.hit(RecoveryPath::Republished);
            store.queue(event);
        }
        tracing::info!(
            journal = %path.display(),
            records = records.len(),
            epoch = store.journal.epoch(),
            snapshot_epoch = store.journal.snapshot_epoch(),
            "journal replayed"
        );
        let store = Arc::new(Mutex::new(store));
        let recorder = store.clone();
        tokio::spawn(async move {
            // Confirms are recorded in batches: all that arrived while the last batch synced.
            while let Some(first) = confirmed_rx.recv().await {
                let mut batch = vec![first];
                while let Ok(more) = confirmed_rx.try_recv() {
                    batch.push(more);
                }
                let written = recorder.lock().await.confirmed(batch).await;
                let done = match written {
                    Ok(pending) => pending.durable().await,
                    Err(e) => Err(e),
                };
                if let Err(e) = done {
                    // Only costs a duplicate publish after a restart.
                    tracing::warn!(error = %e, "could not record publish confirms");
                }
            }
        });
        Ok(store)
    }

    /// A handle that waits until the journal is durable as far as written now (for
    /// [`settled`]).
    pub fn journal_handle(&self) -> JournalHandle {
        self.journal.handle()
    }

    /// Publish the journal's sizes to the gauges.
    fn note_sizes(&self) {
        self.sizes.store(self.journal.records_since_snapshot() as u64, Ordering::Relaxed);
    }

    /// Hand `event` to the outbox and remember it until the broker confirms it.
    fn queue(&mut self, event: Event) {
        self.outbox.send(event.to_message());
        self.remember(event);
    }

    /// Remember `event` as unconfirmed (a compaction's snapshot keeps it).
    fn remember(&mut self, event: Event) {
        if self.unconfirmed_at.insert(event.event_id.clone(), self.next_event).is_none() {
            self.unconfirmed.insert(self.next_event, event);
            self.next_event += 1;
        }
    }

    /// Journal the broker's confirms of `event_ids`, one record each; durable once the returned
    /// [`Pending`] is.
    async fn confirmed(&mut self, event_ids: Vec<String>) -> std::io::Result<Pending> {
        let mut ticket = None;
        for event_id in event_ids {
            if let Some(at) = self.unconfirmed_at.remove(&event_id) {
                self.unconfirmed.remove(&at);
            }
            ticket = Some(self.journal.write(&published_record(event_id))?);
        }
        let pending = self.pending(ticket.expect("at least one confirm"), Vec::new(), false);
        self.compact_if_due().await;
        self.note_sizes();
        Ok(pending)
    }

    /// What waits for the record behind `ticket` to be durable and then hands `events` to the
    /// outbox: a task of its own, started now, so it goes on whatever becomes of the caller.
    fn pending(&self, ticket: Ticket, events: Vec<Event>, reply: bool) -> Pending {
        let (journal, outbox) = (self.journal.handle(), self.outbox.clone());
        let publish = tokio::spawn(async move {
            journal.durable(ticket).await?;
            for event in &events {
                outbox.send(event.to_message());
            }
            Ok::<(), std::io::Error>(())
        });
        Pending { publish, faults: if reply { self.faults.clone() } else { Faults::default() } }
    }

    /// Compact the journal once the log since the snapshot holds [`Config::compact_after`]
    /// records and an eighth as many as the snapshot holds changes, and no earlier snapshot is
    /// still being written. The interval grows with the state: each compaction costs O(state)
    /// (in the background) and comes after O(state) records — O(1) per record however large the
    /// state grows — while the log a restart replays past the snapshot stays within a ninth of the
    /// state (trip-service at 1 M records: a log of at most ~62 000, ~0.4 s of replay).
    ///
    /// Under the store's lock (commits wait) only the journal's cut — a sync and the next log's
    /// header — and taking the state's chunks; the snapshot is serialized and written by a task
    /// of its own while commits go on into the next epoch's log.
    ///
    /// [`Config::compact_after`]: crate::Config::compact_after
    async fn compact_if_due(&mut self) {
        if !compaction_due(self.journal.records_since_snapshot(), self.compact_after, self.snapshot_changes)
            || self.journal.snapshotting()
        {
            return;
        }
        let before = self.journal.records_since_snapshot();
        let writer = match self.journal.cut().await {
            Ok(Some(writer)) => writer,
            Ok(None) => return,
            Err(e) => {
                // Nothing changed (or the journal failed, which the next commit reports): only
                // replay stays longer until the next try.
                tracing::warn!(journal = %self.journal.path().display(), error = %e, "could not compact the journal");
                return;
            }
        };
        let chunks = self.state.compacted();
        let unconfirmed: Vec<Event> = self.unconfirmed.values().cloned().collect();
        self.snapshot_changes = chunks.iter().map(|c| c.len()).sum();
        let journal = self.journal.path().display().to_string();
        tokio::spawn(async move {
            let epoch = writer.epoch();
            // Serializing a large state takes a while: off the runtime's threads.
            let records = off_runtime(move || snapshot_of(&chunks, unconfirmed)).await;
            let after = records.len();
            match writer.write(records).await {
                Ok(()) => {
                    tracing::info!(journal, epoch, records_before = before, records_after = after, "journal compacted")
                }
                // The history is intact (two logs replay after the older snapshot); the journal
                // compacts no more until a restart writes the owed snapshot.
                Err(e) => tracing::warn!(journal, epoch, error = %e, "could not write the snapshot; compactions stop"),
            }
        });
    }

    /// Write `changes` and the `events` they cause as one journal record and apply the
    /// changes. Nothing is durable yet: release the store's lock, then wait for
    /// [`Pending::durable`] before answering — commits waiting together share one sync (group
    /// commit), and the events go to the outbox only once durable.
    ///
    /// Later commits may be decided on this one's state before it is durable: the journal is
    /// synced in order, so none of them can outlive it. Readers wait too (see [`settled`]).
    pub async fn commit(&mut self, changes: Vec<S::Change>, events: Vec<Event>) -> std::io::Result<Pending> {
        let record = Record::Commit { changes, events };
        let bytes = serde_json::to_vec(&record).expect("records serialize");
        let ticket = self.journal.write(&bytes)?;
        let Record::Commit { changes, events } = record else { unreachable!() };
        for change in &changes {
            self.state.apply(change);
        }
        for event in &events {
            self.remember(event.clone());
        }
        // Handed on before the first await: a caller dropped during the compaction below (an
        // HTTP handler whose client gave up while a stalled disk held up the cut) must not take
        // the durable commit's events with it.
        let pending = self.pending(ticket, events, true);
        self.compact_if_due().await;
        self.note_sizes();
        Ok(pending)
    }

    /// The current state.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// Whether the store takes new work: not while [`Config::outbox_capacity`] events wait for
    /// the broker (a long outage). The answer is a 503 with `Retry-After`, and nothing is lost:
    /// the work was not accepted.
    ///
    /// [`Config::outbox_capacity`]: crate::Config::outbox_capacity
    pub fn accepting(&self) -> Result<(), ApiError> {
        if let Some(why) = self.journal.failure() {
            return Err(ApiError::unavailable(
                "storage",
                format!("the journal failed ({why}); the service needs a restart"),
            ));
        }
        accepting(&self.outbox)
    }

    /// Events committed but not yet confirmed by the broker.
    pub fn unpublished(&self) -> usize {
        self.outbox.pending()
    }
}

/// Whether a log of `since_snapshot` records is compacted, the snapshot holding about
/// `snapshot_changes` changes: once it has `compact_after` records and an eighth of the
/// snapshot's.
fn compaction_due(since_snapshot: usize, compact_after: usize, snapshot_changes: usize) -> bool {
    since_snapshot >= compact_after.max(snapshot_changes / COMPACTION_GROWTH)
}

/// See [`compaction_due`]: the log may grow to 1/`COMPACTION_GROWTH` of the snapshot.
const COMPACTION_GROWTH: usize = 8;

/// A commit of `changes` and the `events` they cause, as [`Store::commit`] journals it.
///
/// With [`published_record`] and [`snapshot_records`], what writes a store's journal without a
/// running service, in exactly the store's format (the restart benchmark in `lastmile-benches`
/// builds a million-record journal with them).
pub fn commit_record<C: Serialize>(changes: Vec<C>, events: Vec<Event>) -> Vec<u8> {
    serde_json::to_vec(&Record::Commit { changes, events }).expect("records serialize")
}

/// The broker's confirm of `event_id`, as the store journals it.
pub fn published_record(event_id: String) -> Vec<u8> {
    serde_json::to_vec(&Record::<()>::Published { event_id }).expect("records serialize")
}

/// What a compaction replaces the journal's history with: `state` as the changes that rebuild
/// it ([`State::compacted`]), [`COMPACTED_CHANGES_PER_RECORD`] to a record, then the
/// `unconfirmed` events in one record (published again after a restart).
pub fn snapshot_records<S: State>(state: &S, unconfirmed: Vec<Event>) -> Vec<Vec<u8>> {
    snapshot_of(&state.compacted(), unconfirmed)
}

/// [`snapshot_records`] from a state's chunks, taken earlier.
fn snapshot_of<C: Serialize>(chunks: &Compacted<C>, unconfirmed: Vec<Event>) -> Vec<Vec<u8>> {
    let changes: usize = chunks.iter().map(|c| c.len()).sum();
    let mut records = Vec::with_capacity(changes / COMPACTED_CHANGES_PER_RECORD + chunks.len() + 1);
    for part in chunks.iter().flat_map(|chunk| chunk.chunks(COMPACTED_CHANGES_PER_RECORD)) {
        let record = RecordRef::Commit { changes: part, events: &[] };
        records.push(serde_json::to_vec(&record).expect("records serialize"));
    }
    if !unconfirmed.is_empty() {
        records.push(commit_record::<C>(Vec::new(), unconfirmed));
    }
    records
}

/// A commit written and applied, not durable yet. Wait for it outside the store's lock.
#[must_use = "a commit is not durable until `durable` returns: answer only after it"]
pub struct Pending {
    /// Waits until the record is durable, then hands its events to the outbox.
    publish: tokio::task::JoinHandle<std::io::Result<()>>,
    /// The `before-reply` crash point (off for records nobody answers for).
    faults: Faults,
}

impl Pending {
    /// Wait until the commit is durable; its events go to the outbox then. Only then may the
    /// caller answer (or ack).
    ///
    /// The events are handed on by a task of its own, started when the record was written, so
    /// a caller that gives up half way — an HTTP handler is dropped when its client
    /// disconnects, during the commit's compaction or while it waits here — cannot leave a
    /// durable commit's events unpublished until the next restart (found twice by the
    /// simulation's `disk-stall`: a trip committed while trip-service's disk was slow,
    /// matching-service's call timed out, and nobody was ever told of the match; the second
    /// time the handler was dropped while the commit's compaction waited on the stalled disk).
    pub async fn durable(self) -> std::io::Result<()> {
        let Pending { publish, faults } = self;
        publish.await.map_err(|e| std::io::Error::other(format!("the commit's publishing task ended: {e}")))??;
        faults.crash_point(CrashPoint::BeforeReply).await;
        Ok(())
    }
}

/// Middleware for a durable service's routes: a response leaves only once everything written
/// before it is durable, so no reader is shown state that a crash could still take back (a
/// commit's own reply already waited; a read waits for at most the sync under way).
pub async fn settled(
    axum::extract::State(journal): axum::extract::State<JournalHandle>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let response = next.run(request).await;
    match journal.durable(journal.written()).await {
        Ok(()) => response,
        Err(e) => ApiError::unavailable("storage", format!("the journal could not be synced: {e}")).into_response(),
    }
}

/// The answer when the journal cannot be written or synced: 503, the work not accepted.
pub fn storage_error(e: std::io::Error) -> ApiError {
    ApiError::unavailable("storage", format!("the record could not be written: {e}"))
}

/// Seconds a client is told to wait when an outbox is full.
pub const BACKLOG_RETRY_AFTER_S: u64 = 5;

/// `Ok` while `outbox` has room; else a 503 `broker_backlog` with `Retry-After`.
pub fn accepting(outbox: &Outbox) -> Result<(), ApiError> {
    if outbox.has_room() {
        return Ok(());
    }
    Err(ApiError::unavailable(
        "broker_backlog",
        format!("{} events wait for the broker (the bound); try again shortly", outbox.pending()),
    )
    .retry_after(BACKLOG_RETRY_AFTER_S))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunked_list_shares_its_full_chunks_and_keeps_its_order() {
        let mut list = Chunked::default();
        assert!(list.is_empty() && list.last().is_none() && list.chunks().is_empty());
        let n = 2 * COMPACTED_CHANGES_PER_RECORD + 3;
        for i in 0..n {
            list.push(i);
        }
        assert_eq!((list.len(), list.last()), (n, Some(&(n - 1))));
        assert_eq!(list.to_vec(), (0..n).collect::<Vec<_>>());
        let (first, second) = (list.chunks(), list.chunks());
        assert_eq!(first.iter().map(|c| c.len()).collect::<Vec<_>>(), [1000, 1000, 3]);
        assert!(Arc::ptr_eq(&first[0], &second[0]), "a full chunk is shared, not copied");
        list.push(n);
        assert_eq!(first.iter().map(|c| c.len()).sum::<usize>(), n, "chunks taken earlier do not change");
    }

    #[test]
    fn a_snapshot_from_shared_chunks_is_the_records_a_commit_would_write() {
        let chunks: Compacted<u32> = vec![Arc::new((0..1500).collect()), Arc::new(vec![7, 8])];
        let records = snapshot_of(&chunks, Vec::new());
        assert_eq!(records.len(), 3, "a record holds at most {COMPACTED_CHANGES_PER_RECORD} changes");
        assert_eq!(records[0], commit_record((0..1000).collect::<Vec<u32>>(), Vec::new()));
        assert_eq!(records[1], commit_record((1000..1500).collect::<Vec<u32>>(), Vec::new()));
        let Record::Commit { changes, events } = serde_json::from_slice::<Record<u32>>(&records[2]).unwrap() else {
            panic!("not a commit")
        };
        assert_eq!((changes, events.len()), (vec![7, 8], 0));
    }

    #[test]
    fn records_parsed_on_several_cores_come_back_in_order_and_the_first_corrupt_one_is_named() {
        // Over the parallel threshold, a few large records first (as a snapshot's are).
        let mut records: Vec<Vec<u8>> =
            (0..8).map(|i| commit_record(vec![format!("{i}:{}", "x".repeat(600_000))], Vec::new())).collect();
        records.extend((0..20_000u32).map(|i| commit_record(vec![i.to_string()], Vec::new())));
        let changes = |parsed: Vec<Record<String>>| -> Vec<String> {
            parsed
                .into_iter()
                .flat_map(|r| match r {
                    Record::Commit { changes, .. } => changes,
                    Record::Published { .. } => panic!("no confirms written"),
                })
                .collect()
        };
        let all = changes(parse_records(&records).unwrap());
        assert_eq!(all.len(), records.len());
        assert!(all[..8].iter().enumerate().all(|(i, c)| c.starts_with(&format!("{i}:"))));
        assert_eq!(all[8..], (0..20_000u32).map(|i| i.to_string()).collect::<Vec<_>>()[..]);
        // The runs are cut by bytes, so the large records are split between them: a corrupt
        // record is named by its index in the whole journal, and the earliest one is named.
        records[15_000] = b"{ torn".to_vec();
        records[18_000] = b"not json".to_vec();
        assert_eq!(parse_records::<String>(&records).err().map(|(index, _)| index), Some(15_000));
        records[2] = b"[".to_vec();
        assert_eq!(parse_records::<String>(&records).err().map(|(index, _)| index), Some(2));
    }

    /// A state that grows by one change per record, compacted by the rule: how many times, and
    /// the longest log a restart would replay.
    fn grow(records: usize, compact_after: usize) -> (usize, usize) {
        let (mut compactions, mut since, mut snapshot, mut longest) = (0, 0, 0, 0);
        for state in 1..=records {
            since += 1;
            longest = longest.max(since);
            if compaction_due(since, compact_after, snapshot) {
                compactions += 1;
                since = 0;
                snapshot = state;
            }
        }
        (compactions, longest)
    }

    #[test]
    fn compactions_thin_out_as_the_state_grows_and_the_log_stays_within_a_ninth_of_the_state() {
        // A fixed interval rewrites the growing state 100 times over a million records (about
        // 50 million changes written); the rule about half as often here, and ever rarer
        // relative to it as the state grows (at a state of 1 M, every 125 000 records).
        let (compactions, longest) = grow(1_000_000, 10_000);
        assert!(compactions < 50, "{compactions} compactions");
        assert!(longest <= 1_000_000 / 9 + 1, "the log stays within a ninth of the state: {longest}");
        let (more, _) = grow(2_000_000, 10_000);
        assert!(
            more - compactions < 10,
            "doubling the state adds a few compactions ({compactions} -> {more}), not 100"
        );
        // While the state is small, the configured interval rules.
        assert_eq!(grow(30_000, 10_000), (3, 10_000));
        assert!(!compaction_due(9_999, 10_000, 0) && compaction_due(10_000, 10_000, 0));
        assert!(!compaction_due(10_000, 10_000, 160_000) && compaction_due(20_000, 10_000, 160_000));
    }
}
