//! Retry-until-confirmed publishing.
//!
//! Services hand events to an [`Outbox`] and carry on; one background task publishes them in
//! order, retrying with jittered backoff until the broker confirms each one. Owners of durable
//! state (trip-service, user-service) also journal their events and re-enqueue the ones that were
//! never confirmed after a restart, which makes delivery at-least-once end to end; consumers
//! deduplicate by event id.

use super::{Broker, Message};
use crate::clock::jitter;
use crate::coverage::{Coverage, RecoveryPath};
use crate::faults::{CrashPoint, Faults};
use crate::shutdown::Shutdown;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// A queue of messages that a background task publishes until confirmed.
#[derive(Clone, Debug)]
pub struct Outbox {
    /// Feeds the publisher task.
    tx: mpsc::UnboundedSender<Message>,
    /// Messages accepted but not yet confirmed, for readiness and tests.
    pending: Arc<AtomicUsize>,
    /// How many may wait before the owner stops taking new work ([`Outbox::has_room`]).
    capacity: usize,
}

impl Outbox {
    /// Start the publisher task. Each confirmed message id is sent to `confirmed`, if given,
    /// past the `before-confirm-recorded` crash point of `faults`; retried publishes are
    /// counted in `coverage`. `capacity` bounds the messages waiting for the broker: the owner
    /// asks [`Outbox::has_room`] before it takes new work (an owner with a journal has the
    /// messages on disk anyway; the bound keeps memory and the catch-up after an outage finite).
    pub fn spawn(
        capacity: usize,
        broker: Broker,
        exchange: String,
        confirmed: Option<mpsc::UnboundedSender<String>>,
        faults: Faults,
        coverage: Coverage,
        mut shutdown: Shutdown,
    ) -> Outbox {
        let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
        let pending = Arc::new(AtomicUsize::new(0));
        let counter = pending.clone();
        tokio::spawn(async move {
            while let Some(message) = tokio::select! {
                biased;
                m = rx.recv() => m,
                _ = shutdown.wait() => None,
            } {
                let mut backoff = Duration::from_millis(50);
                loop {
                    match broker.publish(&exchange, message.clone()).await {
                        Ok(()) => break,
                        Err(e) => {
                            coverage.hit(RecoveryPath::PublishRetried);
                            tracing::debug!(error = %e, id = %message.message_id, "publish not confirmed; retrying");
                            if shutdown.is_triggered() {
                                return;
                            }
                            tokio::time::sleep(backoff + jitter(backoff)).await;
                            backoff = (backoff * 2).min(Duration::from_secs(2));
                        }
                    }
                }
                counter.fetch_sub(1, Ordering::SeqCst);
                if let Some(confirmed) = &confirmed {
                    faults.crash_point(CrashPoint::BeforeConfirmRecorded).await;
                    let _ = confirmed.send(message.message_id.clone());
                }
            }
        });
        Outbox { tx, pending, capacity }
    }

    /// Queue a message for publishing.
    pub fn send(&self, message: Message) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        if self.tx.send(message).is_err() {
            // The publisher stopped (shutdown); the owner's journal still has the event.
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Messages accepted but not yet confirmed.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    /// Whether fewer than `capacity` messages wait for the broker.
    pub fn has_room(&self) -> bool {
        self.pending() < self.capacity
    }

    /// The bound given at spawn.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}
