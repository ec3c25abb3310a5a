//! Retry-until-confirmed publishing.
//!
//! Services hand events to an [`Outbox`] and carry on; one background task publishes them in
//! order, a window of up to [`WINDOW`] at a time whose confirms it awaits together, retrying a
//! publish that was not confirmed with jittered backoff until the broker confirms it (a retried
//! message may then arrive after later ones: consumers never rely on the order of events). Owners of durable
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

/// Messages published at once, their confirms awaited together.
pub const WINDOW: usize = 64;

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
            while let Some(first) = tokio::select! {
                biased;
                m = rx.recv() => m,
                _ = shutdown.wait() => None,
            } {
                // Everything waiting, up to a window, goes out at once: the broker confirms the
                // window's publishes together instead of one round trip each.
                let mut window = vec![first];
                while window.len() < WINDOW {
                    match rx.try_recv() {
                        Ok(message) => window.push(message),
                        Err(_) => break,
                    }
                }
                let sent =
                    futures_util::future::join_all(window.iter().map(|m| broker.publish(&exchange, m.clone()))).await;
                for (message, result) in window.into_iter().zip(sent) {
                    if result.is_err() {
                        let mut backoff = Duration::from_millis(50);
                        loop {
                            coverage.hit(RecoveryPath::PublishRetried);
                            tracing::debug!(id = %message.message_id, "publish not confirmed; retrying");
                            if shutdown.is_triggered() {
                                return;
                            }
                            tokio::time::sleep(backoff + jitter(backoff)).await;
                            backoff = (backoff * 2).min(Duration::from_secs(2));
                            if broker.publish(&exchange, message.clone()).await.is_ok() {
                                break;
                            }
                        }
                    }
                    counter.fetch_sub(1, Ordering::SeqCst);
                    if let Some(confirmed) = &confirmed {
                        faults.crash_point(CrashPoint::BeforeConfirmRecorded).await;
                        let _ = confirmed.send(message.message_id.clone());
                    }
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
