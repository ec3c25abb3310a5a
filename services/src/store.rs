//! Durable service state with a transactional outbox.
//!
//! A service's state is rebuilt by replaying its journal. A commit writes the state changes and
//! the events they cause as one fsynced journal record, applies the changes, and hands the
//! events to the outbox; when the broker confirms an event, a `published` record is appended.
//! After a crash, events committed but never confirmed are published again (same event id), so
//! no committed event is lost and consumers deduplicate the repeats.

use crate::api::Context;
use crate::events::Event;
use lastmile_platform::broker::outbox::Outbox;
use lastmile_platform::coverage::RecoveryPath;
use lastmile_platform::faults::{CrashPoint, Faults};
use lastmile_platform::http::ApiError;
use lastmile_platform::storage::Journal;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::{mpsc, Mutex};

/// State that is changed only through journaled changes.
pub trait State: Default + Send + 'static {
    /// One journaled state change.
    type Change: Serialize + DeserializeOwned + Send + Clone;
    /// Apply a change (at commit and at replay; must be deterministic).
    fn apply(&mut self, change: &Self::Change);
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
enum Record<C> {
    Commit { changes: Vec<C>, events: Vec<Event> },
    Published { event_id: String },
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
        let journal = journal.with_faults(faults.clone());
        let mut state = S::default();
        let mut committed: Vec<Event> = Vec::new();
        let mut published = BTreeSet::new();
        for (index, raw) in records.iter().enumerate() {
            let record: Record<S::Change> = serde_json::from_slice(raw).map_err(|e| StoreError::Corrupt {
                path: display.clone(),
                index,
                reason: e.to_string(),
            })?;
            match record {
                Record::Commit { changes, events } => {
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
        let (confirmed_tx, mut confirmed_rx) = mpsc::unbounded_channel();
        let outbox = ctx.outbox(Some(confirmed_tx));
        for event in committed.iter().filter(|e| !published.contains(&e.event_id)) {
            coverage.hit(RecoveryPath::Republished);
            outbox.send(event.to_message());
        }
        tracing::info!(journal = %path.display(), records = records.len(), "journal replayed");
        let store = Arc::new(Mutex::new(Store { state, journal, outbox, faults }));
        let recorder = store.clone();
        tokio::spawn(async move {
            while let Some(event_id) = confirmed_rx.recv().await {
                let record = serde_json::to_vec(&Record::<S::Change>::Published { event_id }).expect("serializes");
                if let Err(e) = recorder.lock().await.journal.append(&record).await {
                    // Only costs a duplicate publish after a restart.
                    tracing::warn!(error = %e, "could not record a publish confirm");
                }
            }
        });
        Ok(store)
    }

    /// Make `changes` durable, apply them, and queue `events` for publishing.
    pub async fn commit(&mut self, changes: Vec<S::Change>, events: Vec<Event>) -> std::io::Result<()> {
        let record = Record::Commit { changes, events };
        let bytes = serde_json::to_vec(&record).expect("records serialize");
        self.journal.append(&bytes).await?;
        self.faults.crash_point(CrashPoint::BeforeReply).await;
        let Record::Commit { changes, events } = record else { unreachable!() };
        for change in &changes {
            self.state.apply(change);
        }
        for event in &events {
            self.outbox.send(event.to_message());
        }
        Ok(())
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
        accepting(&self.outbox)
    }

    /// Events committed but not yet confirmed by the broker.
    pub fn unpublished(&self) -> usize {
        self.outbox.pending()
    }
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
