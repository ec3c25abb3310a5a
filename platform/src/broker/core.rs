//! RabbitMQ's reliability semantics as a pure, deterministic state machine.
//!
//! The simulated broker node wraps this with a network and a disk; benchmarks drive it directly.
//! What it reproduces (per queue, as a quorum queue does):
//! - topic routing from one exchange to every bound queue (`*` = one word, `#` = zero or more);
//! - round-robin delivery to the queue's consumers, at most `prefetch` unacked per consumer;
//! - ack removes, nack(requeue) puts the message back at the head with `redelivered` set,
//!   nack(no requeue) dead-letters it;
//! - a consumer connection that dies has every unacked delivery requeued (redelivered);
//! - every requeue counts a delivery; at the queue's delivery limit the message is dead-lettered
//!   to `<queue>.dead` through the dead-letter exchange instead;
//! - a dead-letter queue holds at most [`DEAD_LETTER_MAX_LEN`] ready messages (`x-max-length`
//!   with RabbitMQ's default overflow, `drop-head`): one more drops the oldest, counted in
//!   [`Stats::dead_letters_dropped`];
//! - durable queues and persistent messages are reported as [`JournalOp`]s so the owner can
//!   write them to disk before confirming; transient messages are never journaled and so do not
//!   survive a restart ([`BrokerCore::replay`]).
//!
//! All maps are ordered (`BTreeMap`), so the same operations give the same deliveries.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// One message as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The publisher's id for the message; consumers deduplicate on the event id inside.
    pub message_id: String,
    /// The topic routing key (`ride.requested`, ...).
    pub routing_key: String,
    /// The payload (JSON in LastMile).
    pub body: Vec<u8>,
    /// Persistent messages in durable queues survive a broker restart; transient ones do not.
    pub persistent: bool,
}

/// The exchanges and queues a set of services needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// The topic exchange domain events are published to.
    pub exchange: String,
    /// Where dead letters go; each queue's `<name>.dead` is bound to it with the queue's name.
    pub dead_letter_exchange: String,
    /// The durable work queues.
    pub queues: Vec<QueueSpec>,
}

/// One durable work queue (competing consumers across a service's replicas).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSpec {
    /// Queue name.
    pub name: String,
    /// Topic patterns bound from the events exchange.
    pub binding_keys: Vec<String>,
    /// Deliveries after which a message is dead-lettered instead of requeued.
    pub delivery_limit: u32,
    /// Real world only: delete the queue after this long unused (isolated test topologies).
    pub expires_ms: Option<u64>,
}

impl QueueSpec {
    /// The queue dead letters of this queue end up in.
    pub fn dead_letter_queue(&self) -> String {
        dead_letter_queue(&self.name)
    }
}

/// The name of the dead-letter queue of `queue`.
pub fn dead_letter_queue(queue: &str) -> String {
    format!("{queue}.dead")
}

/// The most ready messages a dead-letter queue `<queue>.dead` holds: its `x-max-length`. A dead
/// letter beyond it drops the oldest one (RabbitMQ's default overflow, `drop-head`), so a flood
/// of poison cannot fill the broker's disk and stop every publisher; the newest dead letters,
/// the ones an operator is asked about, are the ones kept. 10 000 LastMile events are a few MB.
pub const DEAD_LETTER_MAX_LEN: u32 = 10_000;

/// Identifies a client connection to the broker.
pub type ConnectionId = u64;
/// Identifies one delivery (unique per broker lifetime).
pub type DeliveryTag = u64;

/// A state change the owner must make durable before acknowledging the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JournalOp {
    /// A topology was declared.
    Declared(Topology),
    /// A persistent message entered a durable queue.
    Stored { queue: String, seq: u64, message: Message },
    /// A stored message left its queue (acked or dead-lettered elsewhere).
    Removed { queue: String, seq: u64 },
}

/// A message the owner must send to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The connection the consumer lives on.
    pub connection: ConnectionId,
    /// The consumer's tag on that connection.
    pub consumer_tag: String,
    /// The tag to ack or nack with.
    pub delivery_tag: DeliveryTag,
    /// The message.
    pub message: Message,
    /// Whether it was delivered before.
    pub redelivered: bool,
}

/// Errors a client can provoke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// Consume or publish named a queue or exchange that was never declared.
    #[error("no such queue or exchange: {0}")]
    NotFound(String),
    /// Ack or nack of a tag this connection does not hold (double ack, wrong connection).
    #[error("unknown delivery tag {0}")]
    UnknownDeliveryTag(DeliveryTag),
    /// A consumer tag is already in use on this connection.
    #[error("consumer tag {0} already in use")]
    DuplicateConsumer(String),
}

#[derive(Debug, Clone)]
struct Stored {
    seq: u64,
    message: Message,
    deliveries: u32,
    redelivered: bool,
}

#[derive(Debug, Default)]
struct QueueState {
    spec: Option<QueueSpec>,
    ready: VecDeque<Stored>,
    /// Ready messages kept at most, the oldest dropped beyond (dead-letter queues only).
    max_len: Option<usize>,
    /// Consumers in registration order; delivery is round-robin over them.
    consumers: Vec<(ConnectionId, String)>,
    next_consumer: usize,
}

#[derive(Debug)]
struct ConsumerState {
    queue: String,
    prefetch: u32,
    unacked: u32,
}

#[derive(Debug)]
struct Unacked {
    connection: ConnectionId,
    consumer_tag: String,
    queue: String,
    stored: Stored,
}

/// Counters, for reports and benchmarks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Messages accepted from publishers (after routing to at least zero queues).
    pub published: u64,
    /// Deliveries sent to consumers, redeliveries included.
    pub delivered: u64,
    /// Deliveries acknowledged.
    pub acked: u64,
    /// Deliveries put back into their queue.
    pub requeued: u64,
    /// Messages moved to a dead-letter queue.
    pub dead_lettered: u64,
    /// Dead letters dropped, oldest first, because their queue was at its bound.
    pub dead_letters_dropped: u64,
}

/// The broker's whole state.
#[derive(Debug)]
pub struct BrokerCore {
    /// exchange → (pattern, queue) bindings.
    bindings: BTreeMap<String, Vec<(String, String)>>,
    queues: BTreeMap<String, QueueState>,
    consumers: BTreeMap<(ConnectionId, String), ConsumerState>,
    unacked: BTreeMap<DeliveryTag, Unacked>,
    next_seq: u64,
    next_tag: DeliveryTag,
    stats: Stats,
    /// The bound of every dead-letter queue declared from now on.
    dead_letter_max_len: usize,
}

impl Default for BrokerCore {
    fn default() -> Self {
        BrokerCore {
            bindings: BTreeMap::new(),
            queues: BTreeMap::new(),
            consumers: BTreeMap::new(),
            unacked: BTreeMap::new(),
            next_seq: 0,
            next_tag: 0,
            stats: Stats::default(),
            dead_letter_max_len: DEAD_LETTER_MAX_LEN as usize,
        }
    }
}

impl BrokerCore {
    /// An empty broker whose dead-letter queues hold [`DEAD_LETTER_MAX_LEN`] messages each.
    pub fn new() -> BrokerCore {
        BrokerCore::default()
    }

    /// An empty broker whose dead-letter queues hold `max_len` messages each (tests use a small
    /// bound).
    pub fn with_dead_letter_max_len(max_len: u32) -> BrokerCore {
        BrokerCore { dead_letter_max_len: max_len as usize, ..BrokerCore::default() }
    }

    /// Rebuild the durable state from its journal: durable topology and persistent messages.
    pub fn replay(ops: impl IntoIterator<Item = JournalOp>) -> BrokerCore {
        let mut core = BrokerCore::new();
        for op in ops {
            match op {
                JournalOp::Declared(topology) => {
                    core.declare(&topology);
                }
                JournalOp::Stored { queue, seq, message } => {
                    core.next_seq = core.next_seq.max(seq + 1);
                    let q = core.queues.entry(queue).or_default();
                    // A restart forgets who held the message: it comes back as redelivered.
                    q.ready.push_back(Stored { seq, message, deliveries: 0, redelivered: true });
                }
                JournalOp::Removed { queue, seq } => {
                    if let Some(q) = core.queues.get_mut(&queue) {
                        q.ready.retain(|m| m.seq != seq);
                    }
                }
            }
        }
        core
    }

    /// Declare exchanges, queues, bindings and dead-letter queues. Idempotent.
    pub fn declare(&mut self, topology: &Topology) -> Vec<JournalOp> {
        for spec in &topology.queues {
            let dead = spec.dead_letter_queue();
            self.queues.entry(dead.clone()).or_default().max_len = Some(self.dead_letter_max_len);
            self.bind(&topology.dead_letter_exchange, &spec.name, &dead);
            let q = self.queues.entry(spec.name.clone()).or_default();
            q.spec = Some(spec.clone());
            for key in &spec.binding_keys {
                self.bind(&topology.exchange, key, &spec.name);
            }
        }
        self.bindings.entry(topology.exchange.clone()).or_default();
        vec![JournalOp::Declared(topology.clone())]
    }

    fn bind(&mut self, exchange: &str, pattern: &str, queue: &str) {
        let list = self.bindings.entry(exchange.to_string()).or_default();
        if !list.iter().any(|(p, q)| p == pattern && q == queue) {
            list.push((pattern.to_string(), queue.to_string()));
        }
    }

    /// Route a message to every queue bound to `exchange` with a matching pattern.
    pub fn publish(&mut self, exchange: &str, message: Message) -> Result<Vec<JournalOp>, CoreError> {
        let bindings = self.bindings.get(exchange).ok_or_else(|| CoreError::NotFound(exchange.to_string()))?;
        let mut targets: Vec<String> = bindings
            .iter()
            .filter(|(pattern, _)| topic_matches(pattern, &message.routing_key))
            .map(|(_, queue)| queue.clone())
            .collect();
        targets.sort();
        targets.dedup();
        self.stats.published += 1;
        let mut ops = Vec::new();
        for queue in targets {
            ops.extend(self.enqueue(&queue, message.clone(), false));
        }
        Ok(ops)
    }

    fn enqueue(&mut self, queue: &str, message: Message, redelivered: bool) -> Vec<JournalOp> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let persistent = message.persistent;
        let q = self.queues.entry(queue.to_string()).or_default();
        q.ready.push_back(Stored { seq, message: message.clone(), deliveries: 0, redelivered });
        let mut ops = Vec::new();
        if persistent {
            ops.push(JournalOp::Stored { queue: queue.to_string(), seq, message });
        }
        // x-max-length with overflow drop-head: the oldest ready messages go.
        while q.max_len.is_some_and(|max| q.ready.len() > max) {
            let oldest = q.ready.pop_front().expect("over a bound, so not empty");
            self.stats.dead_letters_dropped += 1;
            ops.extend(removed_op(queue, &oldest));
        }
        ops
    }

    /// Register a consumer on `queue`.
    pub fn consume(
        &mut self,
        connection: ConnectionId,
        consumer_tag: &str,
        queue: &str,
        prefetch: u32,
    ) -> Result<(), CoreError> {
        let key = (connection, consumer_tag.to_string());
        if self.consumers.contains_key(&key) {
            return Err(CoreError::DuplicateConsumer(consumer_tag.to_string()));
        }
        let q = self.queues.get_mut(queue).ok_or_else(|| CoreError::NotFound(queue.to_string()))?;
        q.consumers.push(key.clone());
        self.consumers.insert(key, ConsumerState { queue: queue.to_string(), prefetch: prefetch.max(1), unacked: 0 });
        Ok(())
    }

    /// Stop delivering to a consumer. Its unacked deliveries stay with the connection.
    pub fn cancel(&mut self, connection: ConnectionId, consumer_tag: &str) {
        let key = (connection, consumer_tag.to_string());
        if let Some(state) = self.consumers.remove(&key) {
            if let Some(q) = self.queues.get_mut(&state.queue) {
                q.consumers.retain(|c| c != &key);
            }
        }
    }

    /// Acknowledge a delivery.
    pub fn ack(&mut self, connection: ConnectionId, tag: DeliveryTag) -> Result<Vec<JournalOp>, CoreError> {
        let entry = self.take_unacked(connection, tag)?;
        self.stats.acked += 1;
        Ok(removed_op(&entry.queue, &entry.stored))
    }

    /// Negatively acknowledge a delivery: requeue it or dead-letter it.
    pub fn nack(
        &mut self,
        connection: ConnectionId,
        tag: DeliveryTag,
        requeue: bool,
    ) -> Result<Vec<JournalOp>, CoreError> {
        let entry = self.take_unacked(connection, tag)?;
        Ok(self.return_to_queue(entry, requeue))
    }

    /// A connection closed or died: drop its consumers and requeue everything it held.
    pub fn disconnect(&mut self, connection: ConnectionId) -> Vec<JournalOp> {
        let tags: Vec<String> =
            self.consumers.keys().filter(|(c, _)| *c == connection).map(|(_, t)| t.clone()).collect();
        for tag in tags {
            self.cancel(connection, &tag);
        }
        let held: Vec<DeliveryTag> =
            self.unacked.iter().filter(|(_, u)| u.connection == connection).map(|(t, _)| *t).collect();
        // Requeue in reverse so the oldest delivery ends up first again.
        let mut ops = Vec::new();
        for tag in held.into_iter().rev() {
            if let Some(entry) = self.unacked.remove(&tag) {
                ops.extend(self.return_to_queue(entry, true));
            }
        }
        ops
    }

    fn take_unacked(&mut self, connection: ConnectionId, tag: DeliveryTag) -> Result<Unacked, CoreError> {
        match self.unacked.get(&tag) {
            Some(u) if u.connection == connection => {}
            _ => return Err(CoreError::UnknownDeliveryTag(tag)),
        }
        let entry = self.unacked.remove(&tag).expect("checked above");
        if let Some(c) = self.consumers.get_mut(&(entry.connection, entry.consumer_tag.clone())) {
            c.unacked = c.unacked.saturating_sub(1);
        }
        Ok(entry)
    }

    fn return_to_queue(&mut self, entry: Unacked, requeue: bool) -> Vec<JournalOp> {
        let limit =
            self.queues.get(&entry.queue).and_then(|q| q.spec.as_ref()).map_or(u32::MAX, |s| s.delivery_limit.max(1));
        if requeue && entry.stored.deliveries < limit {
            self.stats.requeued += 1;
            let mut stored = entry.stored;
            stored.redelivered = true;
            let q = self.queues.entry(entry.queue).or_default();
            q.ready.push_front(stored);
            return Vec::new();
        }
        self.stats.dead_lettered += 1;
        let mut ops = removed_op(&entry.queue, &entry.stored);
        let dead = dead_letter_queue(&entry.queue);
        ops.extend(self.enqueue(&dead, entry.stored.message, false));
        ops
    }

    /// Hand ready messages to consumers with free prefetch slots, round-robin per queue.
    pub fn next_deliveries(&mut self) -> Vec<Outgoing> {
        let mut out = Vec::new();
        for (name, q) in self.queues.iter_mut() {
            while !q.ready.is_empty() && !q.consumers.is_empty() {
                let n = q.consumers.len();
                let free = (0..n)
                    .map(|i| (q.next_consumer + i) % n)
                    .find(|&i| self.consumers.get(&q.consumers[i]).is_some_and(|c| c.unacked < c.prefetch));
                let Some(i) = free else { break };
                q.next_consumer = (i + 1) % n;
                let key = q.consumers[i].clone();
                let consumer = self.consumers.get_mut(&key).expect("registered consumer");
                consumer.unacked += 1;
                let mut stored = q.ready.pop_front().expect("non-empty");
                stored.deliveries += 1;
                let tag = self.next_tag;
                self.next_tag += 1;
                self.stats.delivered += 1;
                out.push(Outgoing {
                    connection: key.0,
                    consumer_tag: key.1.clone(),
                    delivery_tag: tag,
                    message: stored.message.clone(),
                    redelivered: stored.redelivered,
                });
                self.unacked
                    .insert(tag, Unacked { connection: key.0, consumer_tag: key.1, queue: name.clone(), stored });
            }
        }
        out
    }

    /// Messages ready and unacked in `queue`.
    pub fn queue_depth(&self, queue: &str) -> (usize, usize) {
        let ready = self.queues.get(queue).map_or(0, |q| q.ready.len());
        let unacked = self.unacked.values().filter(|u| u.queue == queue).count();
        (ready, unacked)
    }

    /// The message bodies waiting in `queue` (for inspecting dead-letter queues).
    pub fn peek(&self, queue: &str) -> Vec<Message> {
        self.queues.get(queue).map_or_else(Vec::new, |q| q.ready.iter().map(|s| s.message.clone()).collect())
    }

    /// Counters since start (not persisted).
    pub fn stats(&self) -> Stats {
        self.stats
    }
}

fn removed_op(queue: &str, stored: &Stored) -> Vec<JournalOp> {
    if stored.message.persistent {
        vec![JournalOp::Removed { queue: queue.to_string(), seq: stored.seq }]
    } else {
        Vec::new()
    }
}

/// RabbitMQ topic matching: words separated by `.`, `*` matches one word, `#` zero or more.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    fn go(p: &[&str], k: &[&str]) -> bool {
        match (p.first(), k.first()) {
            (None, None) => true,
            (Some(&"#"), _) => go(&p[1..], k) || (!k.is_empty() && go(p, &k[1..])),
            (Some(&"*"), Some(_)) => go(&p[1..], &k[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &k[1..]),
            _ => false,
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    go(&p, &k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology(limit: u32) -> Topology {
        Topology {
            exchange: "ev".into(),
            dead_letter_exchange: "dlx".into(),
            queues: vec![QueueSpec {
                name: "work".into(),
                binding_keys: vec!["ride.*".into()],
                delivery_limit: limit,
                expires_ms: None,
            }],
        }
    }

    fn msg(id: &str, persistent: bool) -> Message {
        Message {
            message_id: id.into(),
            routing_key: "ride.requested".into(),
            body: id.as_bytes().to_vec(),
            persistent,
        }
    }

    #[test]
    fn topic_patterns_follow_rabbitmq() {
        assert!(topic_matches("ride.*", "ride.requested"));
        assert!(!topic_matches("ride.*", "ride.requested.again"));
        assert!(topic_matches("#", "a.b.c"));
        assert!(topic_matches("a.#.c", "a.c"));
        assert!(topic_matches("a.#.c", "a.x.y.c"));
        assert!(!topic_matches("trip.updated", "trip.created"));
    }

    #[test]
    fn prefetch_bounds_unacked_and_round_robin_spreads() {
        let mut core = BrokerCore::new();
        core.declare(&topology(5));
        core.consume(1, "a", "work", 1).unwrap();
        core.consume(2, "b", "work", 1).unwrap();
        for i in 0..4 {
            core.publish("ev", msg(&format!("m{i}"), true)).unwrap();
        }
        let first = core.next_deliveries();
        assert_eq!(first.len(), 2, "one per consumer with prefetch 1");
        assert_ne!(first[0].connection, first[1].connection);
        assert!(core.next_deliveries().is_empty(), "prefetch is exhausted");
        core.ack(1, first[0].delivery_tag).unwrap();
        let next = core.next_deliveries();
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].connection, 1);
        assert_eq!(core.ack(2, first[0].delivery_tag), Err(CoreError::UnknownDeliveryTag(first[0].delivery_tag)));
    }

    #[test]
    fn a_dead_connection_requeues_its_deliveries_as_redelivered() {
        let mut core = BrokerCore::new();
        core.declare(&topology(5));
        core.consume(1, "a", "work", 10).unwrap();
        core.publish("ev", msg("m1", true)).unwrap();
        core.publish("ev", msg("m2", true)).unwrap();
        let d = core.next_deliveries();
        assert_eq!(d.len(), 2);
        assert!(!d[0].redelivered);
        core.disconnect(1);
        assert_eq!(core.queue_depth("work"), (2, 0));
        core.consume(2, "b", "work", 10).unwrap();
        let again = core.next_deliveries();
        assert_eq!(again.iter().map(|o| o.message.message_id.as_str()).collect::<Vec<_>>(), ["m1", "m2"]);
        assert!(again.iter().all(|o| o.redelivered));
    }

    #[test]
    fn a_poison_message_is_dead_lettered_at_the_delivery_limit() {
        let mut core = BrokerCore::new();
        core.declare(&topology(3));
        core.consume(1, "a", "work", 1).unwrap();
        core.publish("ev", msg("poison", true)).unwrap();
        for _ in 0..3 {
            let d = core.next_deliveries();
            assert_eq!(d.len(), 1);
            core.nack(1, d[0].delivery_tag, true).unwrap();
        }
        assert!(core.next_deliveries().is_empty());
        assert_eq!(core.queue_depth("work"), (0, 0));
        assert_eq!(core.peek("work.dead").len(), 1);
        assert_eq!(core.stats().dead_lettered, 1);
        // A reject without requeue dead-letters at once.
        core.publish("ev", msg("bad", true)).unwrap();
        let d = core.next_deliveries();
        core.nack(1, d[0].delivery_tag, false).unwrap();
        assert_eq!(core.peek("work.dead").len(), 2);
    }

    #[test]
    fn a_full_dead_letter_queue_drops_its_oldest_message() {
        let mut core = BrokerCore::with_dead_letter_max_len(2);
        let mut journal = core.declare(&topology(5));
        core.consume(1, "a", "work", 1).unwrap();
        for id in ["d1", "d2", "d3"] {
            journal.extend(core.publish("ev", msg(id, true)).unwrap());
            let d = core.next_deliveries();
            journal.extend(core.nack(1, d[0].delivery_tag, false).unwrap());
        }
        let kept: Vec<String> = core.peek("work.dead").into_iter().map(|m| m.message_id).collect();
        assert_eq!(kept, ["d2", "d3"], "the oldest dead letter is dropped");
        assert_eq!(core.stats().dead_lettered, 3);
        assert_eq!(core.stats().dead_letters_dropped, 1);
        // The drop is journaled: a restart does not bring the dropped message back.
        let restarted = BrokerCore::replay(journal);
        let kept: Vec<String> = restarted.peek("work.dead").into_iter().map(|m| m.message_id).collect();
        assert_eq!(kept, ["d2", "d3"]);
        // Work queues are not bounded.
        core.cancel(1, "a");
        for i in 0..5 {
            core.publish("ev", msg(&format!("w{i}"), true)).unwrap();
        }
        assert_eq!(core.queue_depth("work"), (5, 0));
        assert_eq!(BrokerCore::new().dead_letter_max_len, DEAD_LETTER_MAX_LEN as usize);
    }

    #[test]
    fn replay_keeps_persistent_messages_and_drops_transient_ones() {
        let mut core = BrokerCore::new();
        let mut journal = core.declare(&topology(5));
        journal.extend(core.publish("ev", msg("durable-1", true)).unwrap());
        journal.extend(core.publish("ev", msg("transient", false)).unwrap());
        journal.extend(core.publish("ev", msg("durable-2", true)).unwrap());
        core.consume(1, "a", "work", 1).unwrap();
        let d = core.next_deliveries();
        journal.extend(core.ack(1, d[0].delivery_tag).unwrap());
        let restarted = BrokerCore::replay(journal);
        let left: Vec<String> = restarted.peek("work").into_iter().map(|m| m.message_id).collect();
        assert_eq!(left, ["durable-2"]);
    }
}
