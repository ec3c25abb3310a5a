//! The consumer loop every service uses: consume, hand each delivery to the service, ack after
//! the work is done, reconnect when the connection dies, stop cleanly on shutdown.
//!
//! The handler decides what a failure means:
//! - [`Outcome::Retry`]: a transient failure (a peer is down). The worker keeps the delivery
//!   (unacked) and runs the handler again with exponential backoff for up to `retry_budget`;
//!   only then does it give up and dead-letter it, with a warning. A requeue would spend the
//!   queue's delivery limit in a few seconds of a peer's outage and dead-letter work that a
//!   minute later would have succeeded (the simulation's `no_dead_letter` rule found that).
//!   If the worker dies meanwhile, the broker redelivers the delivery.
//! - [`Outcome::Poison`]: the message can never be processed (malformed); it is dead-lettered at
//!   once. A poison message therefore never crash-loops a service.

use super::{Broker, Message};
use crate::clock::{instant_now, jitter};
use crate::coverage::{Coverage, RecoveryPath};
use crate::faults::{CrashPoint, Faults};
use crate::shutdown::Shutdown;
use std::future::Future;
use std::time::Duration;

/// What became of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Processed (or already processed before): ack.
    Done,
    /// Could not be processed now; requeue after a delay.
    Retry(String),
    /// Can never be processed; dead-letter.
    Poison(String),
}

/// How a worker consumes its queue.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The queue to consume.
    pub queue: String,
    /// Unacked deliveries the broker may push ahead of processing.
    pub prefetch: u16,
    /// First pause before running a delivery whose processing failed transiently again; it
    /// doubles per attempt, so a peer outage does not become a hot loop.
    pub retry_delay: Duration,
    /// Longest pause between two attempts.
    pub retry_delay_max: Duration,
    /// How long a delivery is retried before it is dead-lettered.
    pub retry_budget: Duration,
    /// Upper bound of the exponential backoff between reconnect attempts.
    pub reconnect_delay_max: Duration,
    /// The `before-ack` crash point (off unless a simulated fault plan arms it).
    pub faults: Faults,
    /// Counts redeliveries, retries and dead letters.
    pub coverage: Coverage,
}

impl WorkerConfig {
    /// Defaults: prefetch 8, retries from 200 ms up to 5 s apart for 5 minutes, reconnect
    /// backoff up to 2 s, no crash points.
    pub fn new(queue: impl Into<String>) -> WorkerConfig {
        WorkerConfig {
            queue: queue.into(),
            prefetch: 8,
            retry_delay: Duration::from_millis(200),
            retry_delay_max: Duration::from_secs(5),
            retry_budget: Duration::from_secs(300),
            reconnect_delay_max: Duration::from_secs(2),
            faults: Faults::default(),
            coverage: Coverage::default(),
        }
    }
}

/// Consume `config.queue` until `shutdown` fires, handing every delivery to `handler`.
pub async fn run<H, F>(broker: Broker, config: WorkerConfig, mut shutdown: Shutdown, mut handler: H)
where
    H: FnMut(Message, bool) -> F,
    F: Future<Output = Outcome>,
{
    let mut backoff = Duration::from_millis(50);
    while !shutdown.is_triggered() {
        let mut consumer = match broker.consume(&config.queue, config.prefetch).await {
            Ok(consumer) => {
                backoff = Duration::from_millis(50);
                consumer
            }
            Err(e) => {
                tracing::warn!(queue = %config.queue, error = %e, "cannot consume; retrying");
                tokio::select! {
                    biased;
                    _ = tokio::time::sleep(backoff + jitter(backoff)) => {}
                    _ = shutdown.wait() => return,
                }
                backoff = (backoff * 2).min(config.reconnect_delay_max);
                continue;
            }
        };
        loop {
            let delivery = tokio::select! {
                biased;
                d = consumer.next() => d,
                _ = shutdown.wait() => {
                    // Stop consuming; the work in flight has already finished (one at a time).
                    consumer.cancel().await;
                    return;
                }
            };
            let Some(delivery) = delivery else {
                tracing::warn!(queue = %config.queue, "consumer connection lost; reconnecting");
                break;
            };
            if delivery.redelivered {
                config.coverage.hit(RecoveryPath::Redelivered);
            }
            let (started, mut delay) = (instant_now(), config.retry_delay);
            let outcome = loop {
                match handler(delivery.message.clone(), delivery.redelivered).await {
                    Outcome::Retry(reason) if instant_now().duration_since(started) < config.retry_budget => {
                        config.coverage.hit(RecoveryPath::ConsumerRetry);
                        tracing::debug!(queue = %config.queue, id = %delivery.message.message_id, %reason, "retrying after a transient failure");
                        tokio::select! {
                            biased;
                            _ = tokio::time::sleep(delay + jitter(delay)) => {}
                            _ = shutdown.wait() => {
                                // Unacked: the broker hands it to the next consumer.
                                consumer.cancel().await;
                                return;
                            }
                        }
                        delay = (delay * 2).min(config.retry_delay_max);
                    }
                    other => break other,
                }
            };
            let result = match outcome {
                Outcome::Done => {
                    config.faults.crash_point(CrashPoint::BeforeAck).await;
                    delivery.ack().await
                }
                Outcome::Retry(reason) => {
                    config.coverage.hit(RecoveryPath::DeadLettered);
                    tracing::warn!(
                        queue = %config.queue,
                        id = %delivery.message.message_id,
                        %reason,
                        budget_s = config.retry_budget.as_secs(),
                        "giving up after the retry budget: dead-lettering"
                    );
                    delivery.nack(false).await
                }
                Outcome::Poison(reason) => {
                    config.coverage.hit(RecoveryPath::DeadLettered);
                    tracing::warn!(queue = %config.queue, id = %delivery.message.message_id, %reason, "dead-lettering a message that cannot be processed");
                    delivery.nack(false).await
                }
            };
            if let Err(e) = result {
                // The broker will redeliver it; consumers are idempotent.
                tracing::warn!(queue = %config.queue, error = %e, "ack/nack failed");
            }
        }
    }
}
