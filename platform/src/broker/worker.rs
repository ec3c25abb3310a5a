//! The consumer loop every service uses: consume, hand each delivery to the service, ack after
//! the work is done, reconnect when the connection dies, stop cleanly on shutdown.
//!
//! The handler decides what a failure means:
//! - [`Outcome::Retry`]: a transient failure (a peer is down). The worker keeps the delivery
//!   (unacked) and runs the handler again with exponential backoff for up to `retry_budget`;
//!   only then does it give up and dead-letter it, with a warning. Other deliveries are handled
//!   meanwhile (up to the prefetch at once), so one retried message never stalls the queue. A requeue would spend the
//!   queue's delivery limit in a few seconds of a peer's outage and dead-letter work that a
//!   minute later would have succeeded (the simulation's `no_dead_letter` rule found that).
//!   If the worker dies meanwhile, the broker redelivers the delivery.
//! - [`Outcome::Poison`]: the message can never be processed (malformed); it is dead-lettered at
//!   once. A poison message therefore never crash-loops a service.
//!
//! A message that kills the process handling it (a crash on one input) is the broker's to stop:
//! each death returns the replica's unacked deliveries to the head of the queue, counted
//! against the queue's delivery limit (RabbitMQ 3.x counts every return), until the limit
//! dead-letters it. Every message delivered beside it is counted too, so at the full prefetch
//! the innocent messages it keeps dragging along would reach the limit with it and be
//! dead-lettered as well (the simulation's `poison` step found that: 7 of 8 in every seed). So
//! each consumer session starts **careful**, at prefetch 1, and widens to the configured
//! prefetch (cancel, settle, consume again) once a delivery arrives that was never delivered
//! before: by then what earlier sessions left at the head of the queue has been handled one
//! at a time, and a poison among it dies alone. A careful session whose one delivery waits out
//! a retry holds the queue for that replica meanwhile (other replicas go on).

use super::{Broker, Delivery, Message};
use crate::clock::{instant_now, jitter};
use crate::coverage::{Coverage, RecoveryPath};
use crate::faults::{CrashPoint, Faults};
use crate::shutdown::Shutdown;
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
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
///
/// Deliveries are handled concurrently, up to the prefetch (the broker never has more unacked
/// deliveries out): one waiting out its retry backoff does not hold up the others (a peer's
/// outage that hits one kind of event, a slow peer, a burst of messages for an unknown driver).
/// Each delivery is acked or dead-lettered as soon as its outcome is final; those that finished
/// together are acked together ([`Delivery::ack_all`]: one frame against RabbitMQ where it may).
pub async fn run<H, F>(broker: Broker, config: WorkerConfig, mut shutdown: Shutdown, mut handler: H)
where
    H: FnMut(Message, bool) -> F,
    F: Future<Output = Outcome>,
{
    let mut backoff = Duration::from_millis(50);
    // Whether this session starts careful (see the module's documentation): at the start and
    // after a lost connection, not after widening.
    let mut careful = true;
    while !shutdown.is_triggered() {
        let prefetch = if careful { 1 } else { config.prefetch };
        // Careful with more to come: widen on the first delivery never delivered before.
        let mut widen = false;
        let mut consumer = match broker.consume(&config.queue, prefetch).await {
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
        let mut in_flight: FuturesUnordered<_> = FuturesUnordered::new();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.wait() => {
                    // Stop consuming, let the attempts under way finish (one waiting out a
                    // backoff gives up at once); what is not acked the broker hands on.
                    consumer.cancel().await;
                    while let Some((delivery, _, outcome)) = in_flight.next().await {
                        if !matches!(outcome, Outcome::Retry(_)) {
                            settle(&config, delivery, outcome).await;
                        }
                    }
                    return;
                }
                Some(first) = in_flight.next(), if !in_flight.is_empty() => {
                    // This one and every other already finished: those done are acked together.
                    let mut done = Vec::new();
                    let mut given_up = Vec::new();
                    let mut finished = Some(first);
                    while let Some((delivery, tries, outcome)) = finished {
                        let (delivery, tries): (Delivery, Tries) = (delivery, tries);
                        match outcome {
                            Outcome::Done => done.push(delivery),
                            Outcome::Retry(reason) if tries.within(config.retry_budget) => {
                                config.coverage.hit(RecoveryPath::ConsumerRetry);
                                tracing::debug!(queue = %config.queue, id = %delivery.message.message_id, %reason, "retrying after a transient failure");
                                let work = handler(delivery.message.clone(), delivery.redelivered);
                                let wait = tries.delay;
                                in_flight.push(attempt(delivery, tries.next(&config), wait, work, shutdown.clone()));
                            }
                            outcome => given_up.push((delivery, outcome)),
                        }
                        finished = in_flight.next().now_or_never().flatten();
                    }
                    // Widening: the careful consumer's one delivery is settled now. Cancelled
                    // first, it gets nothing more in the meantime, so nothing is left on it when
                    // it closes; then the session starts again at the full prefetch.
                    let widening = widen && in_flight.is_empty();
                    if widening {
                        consumer.cancel().await;
                    }
                    for (delivery, outcome) in given_up {
                        settle(&config, delivery, outcome).await;
                    }
                    ack_all(&config, done).await;
                    if widening {
                        careful = false;
                        break;
                    }
                }
                delivery = consumer.next() => {
                    let Some(delivery) = delivery else {
                        // The attempts under way finish; their acks fail and the broker
                        // redelivers them to whoever consumes next.
                        tracing::warn!(queue = %config.queue, "consumer connection lost; reconnecting");
                        while in_flight.next().await.is_some() {}
                        careful = true;
                        break;
                    };
                    // A poison message (simulation's fault) kills this replica here.
                    config.faults.on_delivery(&delivery.message.message_id).await;
                    if careful && !delivery.redelivered && config.prefetch > 1 {
                        // Past what earlier sessions left behind: widen once this one is settled.
                        widen = true;
                    }
                    if delivery.redelivered {
                        config.coverage.hit(RecoveryPath::Redelivered);
                    }
                    let work = handler(delivery.message.clone(), delivery.redelivered);
                    in_flight.push(attempt(delivery, Tries::first(&config), Duration::ZERO, work, shutdown.clone()));
                }
            }
        }
    }
}

/// How long a delivery has been tried and the pause before its next attempt.
#[derive(Debug, Clone, Copy)]
struct Tries {
    started: tokio::time::Instant,
    delay: Duration,
}

impl Tries {
    fn first(config: &WorkerConfig) -> Tries {
        Tries { started: instant_now(), delay: config.retry_delay }
    }
    fn within(&self, budget: Duration) -> bool {
        instant_now().duration_since(self.started) < budget
    }
    fn next(self, config: &WorkerConfig) -> Tries {
        Tries { delay: (self.delay * 2).min(config.retry_delay_max), ..self }
    }
}

/// One attempt at a delivery: wait out `wait` (plus jitter), then run `work`. Shutdown during
/// the wait gives up the attempt (the delivery stays unacked).
async fn attempt<F: Future<Output = Outcome>>(
    delivery: Delivery,
    tries: Tries,
    wait: Duration,
    work: F,
    mut shutdown: Shutdown,
) -> (Delivery, Tries, Outcome) {
    if !wait.is_zero() {
        tokio::select! {
            biased;
            _ = shutdown.wait() => return (delivery, tries, Outcome::Retry("shutting down".into())),
            _ = tokio::time::sleep(wait + jitter(wait)) => {}
        }
    }
    let outcome = work.await;
    (delivery, tries, outcome)
}

/// Ack the deliveries that are done, together ([`Delivery::ack_all`]).
async fn ack_all(config: &WorkerConfig, done: Vec<Delivery>) {
    if done.is_empty() {
        return;
    }
    config.faults.crash_point(CrashPoint::BeforeAck).await;
    if let Err(e) = Delivery::ack_all(done).await {
        // The broker will redeliver them; consumers are idempotent.
        tracing::warn!(queue = %config.queue, error = %e, "ack failed");
    }
}

/// Ack a delivery that is done; dead-letter one that can never be done or ran out of retries.
async fn settle(config: &WorkerConfig, delivery: Delivery, outcome: Outcome) {
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
