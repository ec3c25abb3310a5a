//! The real broker: RabbitMQ through lapin.
//!
//! Work queues are quorum queues: durable, replicated where a cluster exists, and the only
//! RabbitMQ queue type that counts deliveries (`x-delivery-limit`) and dead-letters a message
//! that keeps failing. One connection per client; a confirm-mode channel for publishing and one
//! channel per consumer (so each consumer has its own prefetch).

use super::{BrokerError, Delivery, Message, Topology};
use crate::clock::new_id;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a publish may wait for its confirm before it counts as failed.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

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
            ch.queue_declare(dead.as_str().into(), opts, dead_args)
                .await
                .map_err(|e| BrokerError::Refused(format!("queue {dead}: {e}")))?;
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
        Ok(Consumer { channel, inner, tag })
    }

    /// Close the connection abruptly (tests use it to play a dying consumer).
    pub async fn disconnect(&self) {
        let live = self.live.lock().expect("broker state").take();
        if let Some(live) = live {
            let _ = live.connection.close(320, "closed by client".into()).await;
        }
    }
}

pub struct Consumer {
    channel: Channel,
    inner: lapin::Consumer,
    tag: String,
}

impl Consumer {
    pub async fn next(&mut self) -> Option<Delivery> {
        match self.inner.next().await? {
            Ok(d) => {
                let message = Message {
                    message_id: d.properties.message_id().as_ref().map(|s| s.to_string()).unwrap_or_default(),
                    routing_key: d.routing_key.to_string(),
                    body: d.data,
                    persistent: d.properties.delivery_mode() == &Some(2),
                };
                Some(Delivery { message, redelivered: d.redelivered, acker: Acker(d.acker) })
            }
            Err(e) => {
                tracing::warn!(error = %e, "consumer stream failed");
                None
            }
        }
    }

    pub async fn cancel(self) {
        let _ = self.channel.basic_cancel(self.tag.as_str().into(), BasicCancelOptions::default()).await;
        let _ = self.channel.close(200, "consumer stopped".into()).await;
    }
}

pub struct Acker(lapin::Acker);

impl Acker {
    pub async fn ack(self) -> Result<(), BrokerError> {
        self.0.ack(BasicAckOptions::default()).await.map(|_| ()).map_err(lost)
    }

    pub async fn nack(self, requeue: bool) -> Result<(), BrokerError> {
        self.0.nack(BasicNackOptions { requeue, multiple: false }).await.map(|_| ()).map_err(lost)
    }
}
