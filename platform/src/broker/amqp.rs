//! The real broker: RabbitMQ through lapin.
//!
//! Work queues are quorum queues: durable, replicated where a cluster exists, and the only
//! RabbitMQ queue type that counts deliveries (`x-delivery-limit`) and dead-letters a message
//! that keeps failing. One connection per client; a confirm-mode channel for publishing and one
//! channel per consumer (so each consumer has its own prefetch).
//!
//! Dead-letter queues are classic queues bounded by `x-max-length` ([`DEAD_LETTER_MAX_LEN`]),
//! with the default overflow behaviour, `drop-head`: the oldest dead letter is dropped to make
//! room. The operator tools at the end (count, peek, replay, purge) each work on a channel of
//! their own, because RabbitMQ closes a channel on any refusal (an unknown queue, say).

use super::core::{dead_letter_queue, DEAD_LETTER_MAX_LEN};
use super::{BrokerError, Death, Delivery, Message, Peeked, Topology};
use crate::clock::new_id;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ErrorKind, ExchangeKind};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a publish may wait for its confirm before it counts as failed.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
/// How long closing the connection waits for the broker's answer.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

struct Live {
    connection: Connection,
    publish: Channel,
}

impl Live {
    fn usable(&self) -> bool {
        self.connection.status().connected() && self.publish.status().connected()
    }
}

pub struct Client {
    url: String,
    live: Mutex<Option<Arc<Live>>>,
    /// Serialises reconnects so concurrent callers open one connection, not many.
    connecting: tokio::sync::Mutex<()>,
}

fn lost(e: lapin::Error) -> BrokerError {
    BrokerError::ConnectionLost(e.to_string())
}

/// Whether the broker refused an operation with an AMQP reply code (404 no such queue, 406
/// inequivalent arguments, ...).
fn refused_with(e: &lapin::Error, code: u16) -> bool {
    matches!(e.kind(), ErrorKind::ProtocolError(amqp) if amqp.get_id() == code)
}

/// RabbitMQ's reply code for an unknown queue or exchange.
const NOT_FOUND: u16 = 404;
/// RabbitMQ's reply code for a redeclare with different arguments.
const PRECONDITION_FAILED: u16 = 406;

/// An admin operation's error: a refusal names `what`, anything else is a lost connection.
fn admin_error(what: &str) -> impl Fn(lapin::Error) -> BrokerError + '_ {
    move |e| {
        if refused_with(&e, NOT_FOUND) {
            BrokerError::Refused(format!("{what}: no such queue"))
        } else if e.is_amqp_soft_error() {
            BrokerError::Refused(format!("{what}: {e}"))
        } else {
            lost(e)
        }
    }
}

impl Client {
    pub fn new(url: String) -> Client {
        Client { url, live: Mutex::new(None), connecting: tokio::sync::Mutex::new(()) }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn current(&self) -> Option<Arc<Live>> {
        self.live.lock().expect("broker state").clone().filter(|l| l.usable())
    }

    pub fn is_connected(&self) -> bool {
        self.current().is_some()
    }

    async fn live(&self) -> Result<Arc<Live>, BrokerError> {
        if let Some(live) = self.current() {
            return Ok(live);
        }
        let _guard = self.connecting.lock().await;
        if let Some(live) = self.current() {
            return Ok(live);
        }
        let unreachable =
            |e: lapin::Error| BrokerError::Unreachable { url: super::redacted(&self.url), reason: e.to_string() };
        let connection = Connection::connect(&self.url, ConnectionProperties::default()).await.map_err(unreachable)?;
        let publish = connection.create_channel().await.map_err(unreachable)?;
        publish.confirm_select(ConfirmSelectOptions::default()).await.map_err(unreachable)?;
        let live = Arc::new(Live { connection, publish });
        *self.live.lock().expect("broker state") = Some(live.clone());
        Ok(live)
    }

    pub async fn connect(&self) -> Result<(), BrokerError> {
        self.live().await.map(|_| ())
    }

    pub async fn declare(&self, topology: &Topology) -> Result<(), BrokerError> {
        self.declare_bounded(topology, DEAD_LETTER_MAX_LEN).await
    }

    /// [`Client::declare`] with dead-letter queues of `dead_letter_max_len` messages.
    pub async fn declare_bounded(&self, topology: &Topology, dead_letter_max_len: u32) -> Result<(), BrokerError> {
        let live = self.live().await?;
        let ch = live.connection.create_channel().await.map_err(lost)?;
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        for exchange in [&topology.exchange, &topology.dead_letter_exchange] {
            ch.exchange_declare(exchange.as_str().into(), ExchangeKind::Topic, durable, FieldTable::default())
                .await
                .map_err(|e| BrokerError::Refused(format!("exchange {exchange}: {e}")))?;
        }
        for q in &topology.queues {
            let mut args = FieldTable::default();
            args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
            args.insert("x-delivery-limit".into(), AMQPValue::LongInt(q.delivery_limit as i32));
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(topology.dead_letter_exchange.as_str().into()),
            );
            args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(q.name.as_str().into()));
            let mut dead_args = FieldTable::default();
            // Overflow stays RabbitMQ's default, `drop-head`: the oldest dead letter goes.
            dead_args
                .insert("x-max-length".into(), AMQPValue::LongInt(dead_letter_max_len.min(i32::MAX as u32) as i32));
            if let Some(ms) = q.expires_ms {
                args.insert("x-expires".into(), AMQPValue::LongLongInt(ms as i64));
                dead_args.insert("x-expires".into(), AMQPValue::LongLongInt(ms as i64));
            }
            let opts = QueueDeclareOptions { durable: true, ..Default::default() };
            ch.queue_declare(q.name.as_str().into(), opts, args)
                .await
                .map_err(|e| BrokerError::Refused(format!("queue {}: {e}", q.name)))?;
            for key in &q.binding_keys {
                ch.queue_bind(
                    q.name.as_str().into(),
                    topology.exchange.as_str().into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| BrokerError::Refused(format!("bind {} to {key}: {e}", q.name)))?;
            }
            let dead = q.dead_letter_queue();
            ch.queue_declare(dead.as_str().into(), opts, dead_args).await.map_err(|e| {
                let hint = if refused_with(&e, PRECONDITION_FAILED) {
                    " (declared earlier with other arguments, e.g. before dead-letter queues were \
                     bounded: drain it with `lastmile dlq`, delete it, start again; see \
                     docs/hardening.md, \"Dead letters\")"
                } else {
                    ""
                };
                BrokerError::Refused(format!("queue {dead}: {e}{hint}"))
            })?;
            ch.queue_bind(
                dead.as_str().into(),
                topology.dead_letter_exchange.as_str().into(),
                q.name.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| BrokerError::Refused(format!("bind {dead}: {e}")))?;
        }
        let _ = ch.close(200, "declared".into()).await;
        Ok(())
    }

    pub async fn publish(&self, exchange: &str, message: Message) -> Result<(), BrokerError> {
        let live = self.live().await?;
        let props = BasicProperties::default()
            .with_message_id(message.message_id.as_str().into())
            .with_content_type("application/json".into())
            .with_delivery_mode(if message.persistent { 2 } else { 1 });
        let not_confirmed =
            |reason: String| BrokerError::NotConfirmed { message_id: message.message_id.clone(), reason };
        let confirm = live
            .publish
            .basic_publish(
                exchange.into(),
                message.routing_key.as_str().into(),
                BasicPublishOptions::default(),
                &message.body,
                props,
            )
            .await
            .map_err(lost)?;
        let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
            .await
            .map_err(|_| not_confirmed("timed out".into()))?
            .map_err(|e| not_confirmed(e.to_string()))?;
        if confirmation.is_nack() {
            return Err(not_confirmed("nacked by the broker".into()));
        }
        Ok(())
    }

    pub async fn consume(&self, queue: &str, prefetch: u16) -> Result<Consumer, BrokerError> {
        let live = self.live().await?;
        let channel = live.connection.create_channel().await.map_err(lost)?;
        channel.basic_qos(prefetch, BasicQosOptions::default()).await.map_err(lost)?;
        let tag = format!("{queue}-{}", new_id());
        let inner = channel
            .basic_consume(queue.into(), tag.as_str().into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .map_err(|e| BrokerError::Refused(format!("consume {queue}: {e}")))?;
        Ok(Consumer { channel, inner, tag, unsettled: Unsettled::default() })
    }

    /// Close the connection (a stopping service; tests use it to play a dying consumer), waiting
    /// at most [`CLOSE_TIMEOUT`] for the broker's close-ok: over a link that holds every byte (a
    /// partition) it never comes, and a stopping service would hang until it is killed.
    pub async fn disconnect(&self) {
        let live = self.live.lock().expect("broker state").take();
        if let Some(live) = live {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, live.connection.close(320, "closed by client".into())).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Operator tools (`lastmile dlq`)
// ---------------------------------------------------------------------------------------------

/// Headers RabbitMQ sets when it dead-letters a message; a replayed message starts without them.
const DEATH_HEADERS: [&str; 7] = [
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
];

impl Client {
    /// A channel of its own for one admin operation (a refusal closes only it).
    async fn admin_channel(&self) -> Result<Channel, BrokerError> {
        let live = self.live().await?;
        live.connection.create_channel().await.map_err(lost)
    }

    pub async fn queue_len(&self, queue: &str) -> Result<Option<u32>, BrokerError> {
        let ch = self.admin_channel().await?;
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        match ch.queue_declare(queue.into(), passive, FieldTable::default()).await {
            Ok(q) => {
                let _ = ch.close(200, "counted".into()).await;
                Ok(Some(q.message_count()))
            }
            Err(e) if refused_with(&e, NOT_FOUND) => Ok(None),
            Err(e) => Err(admin_error(queue)(e)),
        }
    }

    pub async fn peek(&self, queue: &str, max: usize) -> Result<Vec<Peeked>, BrokerError> {
        let ch = self.admin_channel().await?;
        let peeked = async {
            let mut seen = Vec::new();
            let mut last_tag = None;
            // Take them all first, unacknowledged, then give them all back: getting one, putting
            // it back and getting again would see the same message again.
            while seen.len() < max {
                let got =
                    ch.basic_get(queue.into(), BasicGetOptions { no_ack: false }).await.map_err(admin_error(queue))?;
                let Some(got) = got else { break };
                last_tag = Some(got.delivery.delivery_tag);
                seen.push(peeked(&got.delivery));
            }
            if let Some(tag) = last_tag {
                let all = BasicNackOptions { multiple: true, requeue: true };
                ch.basic_nack(tag, all).await.map_err(admin_error(queue))?;
            }
            Ok(seen)
        }
        .await;
        // Closing the channel requeues whatever it still holds, also after an error.
        let _ = ch.close(200, "peeked".into()).await;
        peeked
    }

    pub async fn replay_dead_letters(&self, queue: &str, max: usize) -> Result<usize, BrokerError> {
        // The default exchange drops (and confirms!) a message for a queue that does not exist.
        if self.queue_len(queue).await?.is_none() {
            return Err(BrokerError::Refused(format!("{queue}: no such queue")));
        }
        let get = self.admin_channel().await?;
        let publish = self.admin_channel().await?;
        let moved = async {
            publish.confirm_select(ConfirmSelectOptions::default()).await.map_err(lost)?;
            let mut moved = 0;
            while moved < max {
                if !self.replay_one(queue, &get, &publish).await? {
                    break;
                }
                moved += 1;
            }
            Ok(moved)
        }
        .await;
        // Closing the channel requeues a dead letter it still holds, also after an error.
        let _ = get.close(200, "replayed".into()).await;
        let _ = publish.close(200, "replayed".into()).await;
        moved
    }

    /// Move the oldest dead letter of `queue` into it; `false` when there was none.
    async fn replay_one(&self, queue: &str, get: &Channel, publish: &Channel) -> Result<bool, BrokerError> {
        let dead = dead_letter_queue(queue);
        let got =
            get.basic_get(dead.as_str().into(), BasicGetOptions { no_ack: false }).await.map_err(admin_error(&dead))?;
        let Some(got) = got else { return Ok(false) };
        let d = &got.delivery;
        let mut props = d.properties.clone().with_delivery_mode(2);
        if let Some(headers) = d.properties.headers() {
            let mut kept = FieldTable::default();
            for (k, v) in headers.inner() {
                if !DEATH_HEADERS.contains(&k.as_str()) {
                    kept.insert(k.clone(), v.clone());
                }
            }
            props = props.with_headers(kept);
        }
        let id = d.properties.message_id().as_ref().map(|s| s.to_string()).unwrap_or_default();
        let not_confirmed = |reason: String| BrokerError::NotConfirmed { message_id: id.clone(), reason };
        // Confirmed into the work queue first, acknowledged here second: a crash in between
        // leaves the message in both (consumers deduplicate), never in neither.
        let confirmed = async {
            let mandatory = BasicPublishOptions { mandatory: true, ..Default::default() };
            let confirm =
                publish.basic_publish("".into(), queue.into(), mandatory, &d.data, props).await.map_err(lost)?;
            match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
                Err(_) => Err(not_confirmed("timed out".into())),
                Ok(Err(e)) => Err(not_confirmed(e.to_string())),
                Ok(Ok(Confirmation::Ack(None))) => Ok(()),
                // Mandatory and returned: routed to no queue.
                Ok(Ok(Confirmation::Ack(Some(_)))) => Err(not_confirmed(format!("{queue} took no message"))),
                Ok(Ok(_)) => Err(not_confirmed("nacked by the broker".into())),
            }
        }
        .await;
        if let Err(e) = confirmed {
            let _ = get.basic_nack(d.delivery_tag, BasicNackOptions { multiple: false, requeue: true }).await;
            return Err(e);
        }
        get.basic_ack(d.delivery_tag, BasicAckOptions::default()).await.map_err(lost)?;
        Ok(true)
    }

    pub async fn purge(&self, queue: &str) -> Result<u32, BrokerError> {
        let ch = self.admin_channel().await?;
        let dropped = ch.queue_purge(queue.into(), QueuePurgeOptions::default()).await.map_err(admin_error(queue))?;
        let _ = ch.close(200, "purged".into()).await;
        Ok(dropped)
    }

    pub async fn delete(&self, topology: &Topology) -> Result<(), BrokerError> {
        for q in &topology.queues {
            for name in [q.name.clone(), q.dead_letter_queue()] {
                let ch = self.admin_channel().await?;
                match ch.queue_delete(name.as_str().into(), QueueDeleteOptions::default()).await {
                    Ok(_) => {
                        let _ = ch.close(200, "deleted".into()).await;
                    }
                    Err(e) if refused_with(&e, NOT_FOUND) => {}
                    Err(e) => return Err(admin_error(&name)(e)),
                }
            }
        }
        for exchange in [&topology.exchange, &topology.dead_letter_exchange] {
            let ch = self.admin_channel().await?;
            match ch.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default()).await {
                Ok(()) => {
                    let _ = ch.close(200, "deleted".into()).await;
                }
                Err(e) if refused_with(&e, NOT_FOUND) => {}
                Err(e) => return Err(admin_error(exchange)(e)),
            }
        }
        Ok(())
    }
}

/// What [`Client::peek`] shows of a message got from a queue: the latest `x-death` entry, and
/// the routing key it was published with (a dead letter is delivered with the dead-letter
/// routing key, the name of the queue it died in).
fn peeked(d: &lapin::message::Delivery) -> Peeked {
    let mut message = message_of(&d.properties, d.routing_key.as_str(), d.data.clone());
    let latest = match d.properties.headers().as_ref().and_then(|h| h.inner().get("x-death")) {
        Some(AMQPValue::FieldArray(deaths)) => match deaths.as_slice().first() {
            Some(AMQPValue::FieldTable(t)) => Some(t.inner()),
            _ => None,
        },
        _ => None,
    };
    let death = latest.map(|t| {
        if let Some(AMQPValue::FieldArray(keys)) = t.get("routing-keys") {
            if let Some(key) = keys.as_slice().first().and_then(text) {
                message.routing_key = key;
            }
        }
        Death {
            reason: t.get("reason").and_then(text).unwrap_or_default(),
            count: t.get("count").and_then(number).unwrap_or(1),
            queue: t.get("queue").and_then(text).unwrap_or_default(),
        }
    });
    Peeked { message, death }
}

fn text(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

fn number(v: &AMQPValue) -> Option<u64> {
    match *v {
        AMQPValue::ShortShortInt(n) => u64::try_from(n).ok(),
        AMQPValue::ShortShortUInt(n) => Some(n.into()),
        AMQPValue::ShortInt(n) => u64::try_from(n).ok(),
        AMQPValue::ShortUInt(n) => Some(n.into()),
        AMQPValue::LongInt(n) => u64::try_from(n).ok(),
        AMQPValue::LongUInt(n) => Some(n.into()),
        AMQPValue::LongLongInt(n) => u64::try_from(n).ok(),
        AMQPValue::Timestamp(n) => Some(n),
        _ => None,
    }
}

/// A delivered message as a [`Message`].
fn message_of(properties: &BasicProperties, routing_key: &str, body: Vec<u8>) -> Message {
    Message {
        message_id: properties.message_id().as_ref().map(|s| s.to_string()).unwrap_or_default(),
        routing_key: routing_key.to_string(),
        body,
        persistent: properties.delivery_mode() == &Some(2),
    }
}

pub struct Consumer {
    channel: Channel,
    inner: lapin::Consumer,
    tag: String,
    unsettled: Unsettled,
}

/// The delivery tags a consumer has handed out and not yet acked or nacked, shared with their
/// ackers: an ack that covers several deliveries at once (`multiple`) may only cover these.
type Unsettled = Arc<Mutex<BTreeSet<u64>>>;

impl Consumer {
    pub async fn next(&mut self) -> Option<Delivery> {
        match self.inner.next().await? {
            Ok(d) => {
                let message = message_of(&d.properties, d.routing_key.as_str(), d.data);
                self.unsettled.lock().expect("unsettled tags").insert(d.delivery_tag);
                let acker = Acker { inner: d.acker, tag: d.delivery_tag, unsettled: self.unsettled.clone() };
                Some(Delivery { message, redelivered: d.redelivered, acker })
            }
            Err(e) => {
                tracing::warn!(error = %e, "consumer stream failed");
                None
            }
        }
    }

    /// Cancel: no new deliveries, while the channel stays open for the acks of those already
    /// delivered. Waits at most [`CLOSE_TIMEOUT`] for the broker's answer (over a link that
    /// holds every byte it never comes; unacked deliveries go back to the queue when the
    /// connection closes anyway). The channel closes when the consumer is dropped (lapin closes
    /// a channel once its last handle is gone).
    pub async fn cancel(&mut self) {
        let _ = tokio::time::timeout(
            CLOSE_TIMEOUT,
            self.channel.basic_cancel(self.tag.as_str().into(), BasicCancelOptions::default()),
        )
        .await;
    }
}

pub struct Acker {
    inner: lapin::Acker,
    tag: u64,
    unsettled: Unsettled,
}

impl Acker {
    fn settled(&self) {
        self.unsettled.lock().expect("unsettled tags").remove(&self.tag);
    }

    pub async fn ack(self) -> Result<(), BrokerError> {
        self.settled();
        self.inner.ack(BasicAckOptions::default()).await.map(|_| ()).map_err(lost)
    }

    pub async fn nack(self, requeue: bool) -> Result<(), BrokerError> {
        self.settled();
        self.inner.nack(BasicNackOptions { requeue, multiple: false }).await.map(|_| ()).map_err(lost)
    }

    /// Ack all of `ackers` (one consumer's): the run of them that are the consumer's oldest
    /// unsettled deliveries in one `basic.ack` with `multiple` — one frame, and one settlement in
    /// the quorum queue's log, instead of one each — and the rest one by one. A `multiple` ack
    /// covers every unsettled tag up to its own, so it is sent only when all of those are in
    /// `ackers`: a delivery still being worked on or retried is never acked with the others.
    pub async fn ack_all(mut ackers: Vec<Acker>) -> Result<(), BrokerError> {
        ackers.sort_by_key(|a| a.tag);
        let one_consumer = ackers.windows(2).all(|w| Arc::ptr_eq(&w[0].unsettled, &w[1].unsettled));
        let covered = match ackers.first() {
            Some(first) if one_consumer => {
                let mut unsettled = first.unsettled.lock().expect("unsettled tags");
                let run = oldest_run(&unsettled, ackers.iter().map(|a| a.tag));
                // One alone needs no `multiple`.
                let covered = if run >= 2 { run } else { 0 };
                for a in &ackers[..covered] {
                    unsettled.remove(&a.tag);
                }
                covered
            }
            _ => 0,
        };
        let rest = ackers.split_off(covered);
        if let Some(last) = ackers.pop() {
            last.inner.ack(BasicAckOptions { multiple: true }).await.map_err(lost)?;
        }
        for a in rest {
            a.ack().await?;
        }
        Ok(())
    }
}

/// How many of `batch` (ascending tags) are the oldest of `unsettled`, in a run from the first:
/// what one `multiple` ack of the last of them acknowledges, and nothing else.
fn oldest_run(unsettled: &BTreeSet<u64>, batch: impl Iterator<Item = u64>) -> usize {
    unsettled.iter().zip(batch).take_while(|(u, b)| **u == *b).count()
}

#[cfg(test)]
mod tests {
    use super::oldest_run;
    use std::collections::BTreeSet;

    #[test]
    fn a_multiple_ack_covers_only_the_oldest_unsettled_run() {
        let unsettled: BTreeSet<u64> = [3, 4, 5, 7, 9].into();
        // All of the oldest, in a run: one ack of 5 covers 3, 4, 5.
        assert_eq!(oldest_run(&unsettled, [3, 4, 5].into_iter()), 3);
        // 4 is still being worked on: only 3 may be covered; 5 and 7 are acked alone.
        assert_eq!(oldest_run(&unsettled, [3, 5, 7].into_iter()), 1);
        // The oldest (3) is not among them: nothing may be covered.
        assert_eq!(oldest_run(&unsettled, [4, 5].into_iter()), 0);
        assert_eq!(oldest_run(&unsettled, [].into_iter()), 0);
        assert_eq!(oldest_run(&unsettled, [3, 4, 5, 7, 9].into_iter()), 5);
    }
}
