//! The message broker seam: RabbitMQ semantics in both worlds.
//!
//! - Publish waits for the broker's confirm; messages are persistent unless said otherwise.
//! - Consumers get at most `prefetch` unacknowledged deliveries and ack (or nack) after the work
//!   is done; deliveries of a consumer whose connection dies are requeued and come back with
//!   `redelivered` set.
//! - Every work queue is durable, has a delivery limit and a dead-letter queue `<name>.dead`, so a
//!   poison message ends up there instead of crash-looping a service. A dead-letter queue keeps
//!   at most [`DEAD_LETTER_MAX_LEN`] messages, dropping the oldest beyond (`x-max-length`).
//! - Real world only, for operators (`lastmile dlq`): count, peek at, replay and purge the
//!   messages of a queue ([`Broker::queue_len`], [`Broker::peek`],
//!   [`Broker::replay_dead_letters`], [`Broker::purge`]).
//!
//! Real world: [`lapin`](https://docs.rs/lapin) against RabbitMQ with quorum queues
//! (`x-delivery-limit`, `x-dead-letter-exchange`). Simulation: our own broker node
//! ([`sim`]) speaking a small framed protocol over madsim's TCP, built on [`core`].

pub mod core;
pub mod outbox;
pub mod worker;

#[cfg(not(madsim))]
mod amqp;
#[cfg(not(madsim))]
use amqp as imp;

#[cfg(madsim)]
pub mod sim;
#[cfg(madsim)]
use sim as imp;

use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub use self::core::{dead_letter_queue, Message, QueueSpec, Topology, DEAD_LETTER_MAX_LEN};

/// What can go wrong talking to the broker. All of them are transient from a service's point of
/// view: the caller retries after a backoff.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum BrokerError {
    /// No connection could be opened to the broker. `url` is [`redacted`]: errors end up in
    /// logs.
    #[error("broker at {url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    /// The connection broke while an operation was in flight.
    #[error("connection to the broker was lost: {0}")]
    ConnectionLost(String),
    /// The broker refused or negatively confirmed a publish.
    #[error("publish of {message_id} was not confirmed: {reason}")]
    NotConfirmed { message_id: String, reason: String },
    /// The broker rejected an operation (bad topology, unknown queue).
    #[error("broker refused the operation: {0}")]
    Refused(String),
}

/// A connection to the broker that reconnects on demand. Cheap to clone.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<imp::Client>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("url", &redacted(self.inner.url())).finish()
    }
}

/// The address part of an AMQP URL (`amqp://user:pass@host:port/vhost` → `host:port`).
pub fn broker_address(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    let host_port = rest.split('/').next().unwrap_or(rest);
    if host_port.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:5672")
    }
}

/// `url` fit for a log line: the password of its user-info replaced by `***`
/// (`amqp://guest:***@host:5672/%2f`). A URL without credentials is returned as it is.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        // A user name alone may be a token: then it goes too.
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => format!("{scheme}://***@{host}{path}"),
        },
        None => url.to_string(),
    }
}

impl Broker {
    /// A broker client for `url` (`amqp://user:pass@host:port/vhost`). Connects lazily.
    pub fn new(url: impl Into<String>) -> Broker {
        Broker { inner: Arc::new(imp::Client::new(url.into())) }
    }

    /// The URL this client talks to.
    pub fn url(&self) -> &str {
        self.inner.url()
    }

    /// Open the connection now (otherwise the first operation does).
    pub async fn connect(&self) -> Result<(), BrokerError> {
        self.inner.connect().await
    }

    /// Whether a live connection to the broker exists right now (used by `/ready`).
    pub fn is_connected(&self) -> bool {
        self.inner.is_connected()
    }

    /// Declare the exchanges, the durable queues with their bindings, and their dead-letter
    /// queues. Idempotent.
    pub async fn declare(&self, topology: &Topology) -> Result<(), BrokerError> {
        self.inner.declare(topology).await
    }

    /// Publish one message to `exchange` and wait for the broker's confirm.
    pub async fn publish(&self, exchange: &str, message: Message) -> Result<(), BrokerError> {
        self.inner.publish(exchange, message).await
    }

    /// Close the connection now, abruptly: the broker requeues every unacked delivery it holds.
    /// (A consumer that dies does the same; tests use this to play one.)
    pub async fn disconnect(&self) {
        self.inner.disconnect().await
    }

    /// Start consuming `queue` with at most `prefetch` unacknowledged deliveries.
    pub async fn consume(&self, queue: &str, prefetch: u16) -> Result<Consumer, BrokerError> {
        Ok(Consumer { inner: self.inner.consume(queue, prefetch).await? })
    }
}

/// Operator tools on queues, for `lastmile dlq` and the tests. Real world only: a simulated run
/// reads its dead letters through the broker node's probe. Each operation uses a channel of its
/// own; an unknown queue is a [`BrokerError::Refused`] saying "no such queue".
#[cfg(not(madsim))]
impl Broker {
    /// [`Broker::declare`], with dead-letter queues bounded at `dead_letter_max_len` messages
    /// instead of [`DEAD_LETTER_MAX_LEN`] (tests use a small bound).
    pub async fn declare_with_dead_letter_max_len(
        &self,
        topology: &Topology,
        dead_letter_max_len: u32,
    ) -> Result<(), BrokerError> {
        self.inner.declare_bounded(topology, dead_letter_max_len).await
    }

    /// The ready messages in `queue` (a passive declare), or `None` when there is no such queue.
    pub async fn queue_len(&self, queue: &str) -> Result<Option<u32>, BrokerError> {
        self.inner.queue_len(queue).await
    }

    /// The first `max` messages of `queue`, left in place: they are taken unacknowledged and all
    /// given back (requeued, in their places). They come back flagged as redelivered.
    pub async fn peek(&self, queue: &str, max: usize) -> Result<Vec<Peeked>, BrokerError> {
        self.inner.peek(queue, max).await
    }

    /// Move up to `max` messages, oldest first, from `queue`'s dead-letter queue back into
    /// `queue`: each is published to the default exchange (routing key `queue`, persistent,
    /// same message id, properties and body, without RabbitMQ's death headers), and only once
    /// the broker confirmed it is it acknowledged in the dead-letter queue. A crash in between
    /// leaves a copy in both — consumers deduplicate — never in neither. Returns how many moved;
    /// stops at the first message that could not be moved (it stays a dead letter).
    pub async fn replay_dead_letters(&self, queue: &str, max: usize) -> Result<usize, BrokerError> {
        self.inner.replay_dead_letters(queue, max).await
    }

    /// Drop every ready message of `queue`; returns how many were dropped.
    pub async fn purge(&self, queue: &str) -> Result<u32, BrokerError> {
        self.inner.purge(queue).await
    }

    /// Delete the queues, dead-letter queues and exchanges of `topology` (tests clean up with
    /// it). Already gone is fine.
    pub async fn delete(&self, topology: &Topology) -> Result<(), BrokerError> {
        self.inner.delete(topology).await
    }
}

/// The ready messages of `queue` at the broker `url` — a queue's backlog, for the harness —
/// read over a short-lived connection of its own (`None` when it cannot be read). A simulated
/// run reads its broker node's probe instead, so under simulation this is always `None`.
pub async fn ready_messages(url: &str, queue: &str) -> Option<u64> {
    #[cfg(not(madsim))]
    {
        let broker = Broker::new(url);
        let count = broker.queue_len(queue).await.ok().flatten().map(u64::from);
        broker.disconnect().await;
        count
    }
    #[cfg(madsim)]
    {
        let _ = (url, queue);
        None
    }
}

/// A message seen in a queue without taking it ([`Broker::peek`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peeked {
    /// The message; for a dead letter, `routing_key` is the key it was published with.
    pub message: Message,
    /// The latest dead-lettering of the message (RabbitMQ's `x-death`), if it was dead-lettered.
    pub death: Option<Death>,
}

/// Why a message was dead-lettered: the latest entry of RabbitMQ's `x-death` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Death {
    /// `rejected` (nacked without requeue: poison), `delivery_limit`, `expired` or `maxlen`.
    pub reason: String,
    /// How many times it died for this reason in this queue.
    pub count: u64,
    /// The queue it died in.
    pub queue: String,
}

/// A stream of deliveries from one queue.
pub struct Consumer {
    inner: imp::Consumer,
}

impl Consumer {
    /// The next delivery, or `None` once the connection is gone (reconnect and consume again).
    pub async fn next(&mut self) -> Option<Delivery> {
        self.inner.next().await
    }

    /// Stop receiving new deliveries; unacknowledged ones can still be acked until the consumer
    /// is dropped.
    pub async fn cancel(&mut self) {
        self.inner.cancel().await
    }
}

/// One delivered message. Ack it after the work is done, or nack it.
pub struct Delivery {
    /// The message as published.
    pub message: Message,
    /// Set when the message was delivered before and not acknowledged (RabbitMQ's flag).
    pub redelivered: bool,
    acker: imp::Acker,
}

impl Delivery {
    /// Acknowledge: the broker forgets the message.
    pub async fn ack(self) -> Result<(), BrokerError> {
        self.acker.ack().await
    }

    /// Negative acknowledge: requeue (counted against the delivery limit) or dead-letter.
    pub async fn nack(self, requeue: bool) -> Result<(), BrokerError> {
        self.acker.nack(requeue).await
    }

    /// Acknowledge several deliveries of one consumer. Against RabbitMQ, those that are the
    /// consumer's oldest unsettled ones go in a single `multiple` ack (one frame and one
    /// settlement in the quorum queue's log instead of one each); the rest are acked alone.
    pub async fn ack_all(deliveries: Vec<Delivery>) -> Result<(), BrokerError> {
        imp::Acker::ack_all(deliveries.into_iter().map(|d| d.acker).collect()).await
    }
}

/// A topology-wide naming scheme, so tests can run isolated topologies on one RabbitMQ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Names {
    /// Prefix of every exchange and queue name (`lastmile` in production).
    pub prefix: String,
}

impl Names {
    /// The names of a topology whose exchanges and queues start with `prefix`.
    pub fn new(prefix: impl Into<String>) -> Names {
        Names { prefix: prefix.into() }
    }
    /// The topic exchange carrying domain events.
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }
    /// The exchange dead letters are routed through (routing key = the queue they died in).
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dead-letter", self.prefix)
    }
    /// A service's work queue.
    pub fn queue(&self, consumer: &str) -> String {
        format!("{}.{}", self.prefix, consumer)
    }
}

impl Default for Names {
    fn default() -> Self {
        Names::new("lastmile")
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn a_password_never_reaches_a_log_line() {
        assert_eq!(redacted("amqp://guest:guest@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(redacted("amqps://u:p%40ss@rabbit:5671"), "amqps://u:***@rabbit:5671");
        assert_eq!(redacted("amqp://u:p@ss@host/v?x=1"), "amqp://u:***@host/v?x=1");
        assert_eq!(redacted("amqp://token@host"), "amqp://***@host");
        assert_eq!(redacted("amqp://host:5672/%2f"), "amqp://host:5672/%2f");
        assert_eq!(redacted("host:5672"), "host:5672");
        let e = super::BrokerError::Unreachable { url: redacted("amqp://a:secret@h"), reason: "refused".into() };
        assert!(!e.to_string().contains("secret"), "{e}");
    }
}
