//! The simulated broker: a broker node on madsim's network and the client services use to
//! reach it. Only compiled under `--cfg madsim`.
//!
//! The node runs [`BrokerCore`] behind a small framed protocol (u32 length + JSON) over madsim's
//! `TcpStream`, writes durable state to its simulated disk (which survives a node restart) before
//! confirming, and detects dead clients the way RabbitMQ does: by missed heartbeats or a closed
//! connection, after which every delivery the client held is requeued.

use super::core::{BrokerCore, ConnectionId, DeliveryTag, JournalOp, Message, Topology};
use super::{BrokerError, Delivery};
use crate::clock::new_id;
use crate::storage::Journal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// Interval between heartbeats in both directions.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Silence after which a peer is declared dead (RabbitMQ's heartbeat timeout, scaled down).
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(4);
/// How long a client waits for the reply to a request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Serialize, Deserialize)]
enum ClientFrame {
    Declare { req: u64, topology: Topology },
    Publish { req: u64, exchange: String, message: Message },
    Consume { req: u64, queue: String, tag: String, prefetch: u32 },
    Cancel { req: u64, tag: String },
    Ack { tag: DeliveryTag },
    Nack { tag: DeliveryTag, requeue: bool },
    Heartbeat,
}

#[derive(Debug, Serialize, Deserialize)]
enum ServerFrame {
    Done { req: u64 },
    Failed { req: u64, error: String },
    Deliver { consumer_tag: String, delivery_tag: DeliveryTag, message: Message, redelivered: bool },
    Heartbeat,
}

async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(w: &mut W, frame: &T) -> std::io::Result<()> {
    let body = serde_json::to_vec(frame).map_err(std::io::Error::other)?;
    w.write_all(&(body.len() as u32).to_be_bytes()).await?;
    w.write_all(&body).await?;
    // madsim's TcpStream buffers writes until flushed.
    w.flush().await
}

async fn read_frame<R: AsyncRead + Unpin, T: for<'de> Deserialize<'de>>(r: &mut R) -> std::io::Result<T> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    r.read_exact(&mut body).await?;
    serde_json::from_slice(&body).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

type Pending = Arc<Mutex<BTreeMap<u64, oneshot::Sender<Result<(), String>>>>>;
type Consumers = Arc<Mutex<BTreeMap<String, mpsc::UnboundedSender<(DeliveryTag, Message, bool)>>>>;

/// One live connection to the broker node.
struct Session {
    tx: mpsc::UnboundedSender<ClientFrame>,
    pending: Pending,
    consumers: Consumers,
    alive: Arc<AtomicBool>,
    next_req: AtomicU64,
}

impl Session {
    async fn open(addr: &str) -> Result<Arc<Session>, BrokerError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| BrokerError::Unreachable { url: addr.to_string(), reason: e.to_string() })?;
        let (mut reader, mut writer) = tokio::io::split(stream);
        let (tx, mut rx) = mpsc::unbounded_channel::<ClientFrame>();
        let session = Arc::new(Session {
            tx,
            pending: Pending::default(),
            consumers: Consumers::default(),
            alive: Arc::new(AtomicBool::new(true)),
            next_req: AtomicU64::new(1),
        });
        // Writer: frames in order, plus heartbeats. Ends when the session is dropped or dies.
        let alive = session.alive.clone();
        tokio::spawn(async move {
            let mut beat = tokio::time::interval(HEARTBEAT_INTERVAL);
            loop {
                let frame = tokio::select! {
                    biased;
                    f = rx.recv() => match f { Some(f) => f, None => break },
                    _ = beat.tick() => ClientFrame::Heartbeat,
                };
                if !alive.load(Ordering::SeqCst) || write_frame(&mut writer, &frame).await.is_err() {
                    break;
                }
            }
            alive.store(false, Ordering::SeqCst);
        });
        // Reader: replies, deliveries, heartbeats; silence or EOF kills the session.
        let (pending, consumers, alive) = (session.pending.clone(), session.consumers.clone(), session.alive.clone());
        tokio::spawn(async move {
            loop {
                let frame =
                    match tokio::time::timeout(HEARTBEAT_TIMEOUT, read_frame::<_, ServerFrame>(&mut reader)).await {
                        Ok(Ok(frame)) => frame,
                        _ => break,
                    };
                if !alive.load(Ordering::SeqCst) {
                    break;
                }
                match frame {
                    ServerFrame::Done { req } => {
                        if let Some(w) = pending.lock().unwrap().remove(&req) {
                            let _ = w.send(Ok(()));
                        }
                    }
                    ServerFrame::Failed { req, error } => {
                        if let Some(w) = pending.lock().unwrap().remove(&req) {
                            let _ = w.send(Err(error));
                        }
                    }
                    ServerFrame::Deliver { consumer_tag, delivery_tag, message, redelivered } => {
                        if let Some(c) = consumers.lock().unwrap().get(&consumer_tag) {
                            let _ = c.send((delivery_tag, message, redelivered));
                        }
                    }
                    ServerFrame::Heartbeat => {}
                }
            }
            alive.store(false, Ordering::SeqCst);
            // Wake every waiter: their requests fail, consumer streams end.
            pending.lock().unwrap().clear();
            consumers.lock().unwrap().clear();
        });
        Ok(session)
    }

    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    fn kill(&self) {
        self.alive.store(false, Ordering::SeqCst);
        self.pending.lock().unwrap().clear();
        self.consumers.lock().unwrap().clear();
        // Wake the writer so it notices and drops its half of the stream.
        let _ = self.tx.send(ClientFrame::Heartbeat);
    }

    async fn request(&self, make: impl FnOnce(u64) -> ClientFrame) -> Result<(), BrokerError> {
        let req = self.next_req.fetch_add(1, Ordering::SeqCst);
        let (w, r) = oneshot::channel();
        self.pending.lock().unwrap().insert(req, w);
        if !self.is_alive() || self.tx.send(make(req)).is_err() {
            self.pending.lock().unwrap().remove(&req);
            return Err(BrokerError::ConnectionLost("session closed".into()));
        }
        match tokio::time::timeout(REQUEST_TIMEOUT, r).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(error))) => Err(BrokerError::Refused(error)),
            Ok(Err(_)) => Err(BrokerError::ConnectionLost("session closed".into())),
            Err(_) => {
                self.pending.lock().unwrap().remove(&req);
                Err(BrokerError::ConnectionLost("request timed out".into()))
            }
        }
    }
}

pub struct Client {
    url: String,
    addr: String,
    /// The shared session for declare and publish.
    session: Mutex<Option<Arc<Session>>>,
    /// Every session this client opened, so `disconnect` can kill consumers' sessions too.
    all: Mutex<Vec<Arc<Session>>>,
}

impl Client {
    pub fn new(url: String) -> Client {
        Client { addr: super::broker_address(&url), url, session: Mutex::new(None), all: Mutex::new(Vec::new()) }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn is_connected(&self) -> bool {
        // Any live session counts: a consumer's own session proves the broker answers too.
        self.session.lock().unwrap().as_ref().is_some_and(|s| s.is_alive())
            || self.all.lock().unwrap().iter().any(|s| s.is_alive())
    }

    async fn open(&self) -> Result<Arc<Session>, BrokerError> {
        let session = Session::open(&self.addr).await?;
        let mut all = self.all.lock().unwrap();
        all.retain(|s| s.is_alive());
        all.push(session.clone());
        Ok(session)
    }

    async fn shared(&self) -> Result<Arc<Session>, BrokerError> {
        if let Some(s) = self.session.lock().unwrap().clone().filter(|s| s.is_alive()) {
            return Ok(s);
        }
        let session = self.open().await?;
        *self.session.lock().unwrap() = Some(session.clone());
        Ok(session)
    }

    pub async fn connect(&self) -> Result<(), BrokerError> {
        self.shared().await.map(|_| ())
    }

    pub async fn declare(&self, topology: &Topology) -> Result<(), BrokerError> {
        let topology = topology.clone();
        self.shared().await?.request(|req| ClientFrame::Declare { req, topology }).await
    }

    pub async fn publish(&self, exchange: &str, message: Message) -> Result<(), BrokerError> {
        let id = message.message_id.clone();
        let exchange = exchange.to_string();
        self.shared()
            .await?
            .request(|req| ClientFrame::Publish { req, exchange, message })
            .await
            .map_err(|e| BrokerError::NotConfirmed { message_id: id, reason: e.to_string() })
    }

    pub async fn consume(&self, queue: &str, prefetch: u16) -> Result<Consumer, BrokerError> {
        // Like a channel per consumer: its own session, so its death requeues only its work.
        let session = self.open().await?;
        let tag = format!("{queue}-{}", new_id());
        let (tx, rx) = mpsc::unbounded_channel();
        session.consumers.lock().unwrap().insert(tag.clone(), tx);
        let (queue, t) = (queue.to_string(), tag.clone());
        session.request(|req| ClientFrame::Consume { req, queue, tag: t, prefetch: prefetch as u32 }).await?;
        Ok(Consumer { session, tag, rx })
    }

    pub async fn disconnect(&self) {
        for s in self.all.lock().unwrap().drain(..) {
            s.kill();
        }
        *self.session.lock().unwrap() = None;
    }
}

pub struct Consumer {
    session: Arc<Session>,
    tag: String,
    rx: mpsc::UnboundedReceiver<(DeliveryTag, Message, bool)>,
}

impl Consumer {
    pub async fn next(&mut self) -> Option<Delivery> {
        let (tag, message, redelivered) = self.rx.recv().await?;
        Some(Delivery { message, redelivered, acker: Acker { session: self.session.clone(), tag } })
    }

    pub async fn cancel(&mut self) {
        let tag = self.tag.clone();
        let _ = self.session.request(|req| ClientFrame::Cancel { req, tag }).await;
    }
}

pub struct Acker {
    session: Arc<Session>,
    tag: DeliveryTag,
}

impl Acker {
    fn send(&self, frame: ClientFrame) -> Result<(), BrokerError> {
        if !self.session.is_alive() || self.session.tx.send(frame).is_err() {
            return Err(BrokerError::ConnectionLost("session closed before the ack".into()));
        }
        Ok(())
    }

    pub async fn ack(self) -> Result<(), BrokerError> {
        self.send(ClientFrame::Ack { tag: self.tag })
    }

    pub async fn nack(self, requeue: bool) -> Result<(), BrokerError> {
        self.send(ClientFrame::Nack { tag: self.tag, requeue })
    }

    /// One ack frame each: the simulated broker's frames cost nothing to batch.
    pub async fn ack_all(ackers: Vec<Acker>) -> Result<(), BrokerError> {
        for a in ackers {
            a.ack().await?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Broker node
// ---------------------------------------------------------------------------------------------

enum Event {
    Opened(ConnectionId, mpsc::UnboundedSender<ServerFrame>),
    Frame(ConnectionId, ClientFrame),
    Closed(ConnectionId),
}

/// Counters and queue depths of a running broker node, readable from outside the node.
#[derive(Debug, Default, Clone)]
pub struct BrokerProbe {
    inner: Arc<Mutex<ProbeState>>,
}

#[derive(Debug, Default, Clone)]
struct ProbeState {
    stats: super::core::Stats,
    depths: BTreeMap<String, (usize, usize)>,
    dead: BTreeMap<String, Vec<Message>>,
}

impl BrokerProbe {
    /// Counters since the node last started.
    pub fn stats(&self) -> super::core::Stats {
        self.inner.lock().unwrap().stats
    }
    /// (ready, unacked) of a queue.
    pub fn depth(&self, queue: &str) -> (usize, usize) {
        self.inner.lock().unwrap().depths.get(queue).copied().unwrap_or((0, 0))
    }
    /// Messages sitting in a dead-letter queue.
    pub fn dead_letters(&self, queue: &str) -> Vec<Message> {
        self.inner.lock().unwrap().dead.get(queue).cloned().unwrap_or_default()
    }
}

/// Run the broker node: listen on `addr`, keep durable state in the journal at `journal_path` on
/// this node's disk, and serve until the node is killed. Restarting the node replays the journal.
pub async fn run_broker_node(addr: SocketAddr, journal_path: &str, probe: BrokerProbe) -> std::io::Result<()> {
    let (mut journal, records) = Journal::open(journal_path).await?;
    let ops = records.iter().filter_map(|r| serde_json::from_slice::<JournalOp>(r).ok());
    let mut core = BrokerCore::replay(ops);
    let listener = TcpListener::bind(addr).await?;
    let (events_tx, mut events) = mpsc::unbounded_channel::<Event>();

    let accept_tx = events_tx.clone();
    tokio::spawn(async move {
        let mut next_id: ConnectionId = 1;
        while let Ok((stream, _)) = listener.accept().await {
            let id = next_id;
            next_id += 1;
            serve_connection(id, stream, accept_tx.clone());
        }
    });

    let mut connections: BTreeMap<ConnectionId, mpsc::UnboundedSender<ServerFrame>> = BTreeMap::new();
    while let Some(event) = events.recv().await {
        let mut replies = Vec::new();
        let ops = match event {
            Event::Opened(id, tx) => {
                connections.insert(id, tx);
                Vec::new()
            }
            Event::Closed(id) => {
                connections.remove(&id);
                core.disconnect(id)
            }
            Event::Frame(id, frame) => match frame {
                ClientFrame::Heartbeat => Vec::new(),
                ClientFrame::Declare { req, topology } => {
                    replies.push((id, ServerFrame::Done { req }));
                    core.declare(&topology)
                }
                ClientFrame::Publish { req, exchange, message } => match core.publish(&exchange, message) {
                    Ok(ops) => {
                        replies.push((id, ServerFrame::Done { req }));
                        ops
                    }
                    Err(e) => {
                        replies.push((id, ServerFrame::Failed { req, error: e.to_string() }));
                        Vec::new()
                    }
                },
                ClientFrame::Consume { req, queue, tag, prefetch } => {
                    match core.consume(id, &tag, &queue, prefetch) {
                        Ok(()) => replies.push((id, ServerFrame::Done { req })),
                        Err(e) => replies.push((id, ServerFrame::Failed { req, error: e.to_string() })),
                    }
                    Vec::new()
                }
                ClientFrame::Cancel { req, tag } => {
                    core.cancel(id, &tag);
                    replies.push((id, ServerFrame::Done { req }));
                    Vec::new()
                }
                // An ack for a tag the broker no longer knows (e.g. after a requeue) is ignored,
                // as RabbitMQ closes the channel: the message was already requeued.
                ClientFrame::Ack { tag } => core.ack(id, tag).unwrap_or_default(),
                ClientFrame::Nack { tag, requeue } => core.nack(id, tag, requeue).unwrap_or_default(),
            },
        };
        // Durable before confirmed: journal first, then reply.
        for op in &ops {
            let record = serde_json::to_vec(op).map_err(std::io::Error::other)?;
            journal.append(&record).await?;
        }
        for (id, frame) in replies {
            if let Some(tx) = connections.get(&id) {
                let _ = tx.send(frame);
            }
        }
        for out in core.next_deliveries() {
            let frame = ServerFrame::Deliver {
                consumer_tag: out.consumer_tag,
                delivery_tag: out.delivery_tag,
                message: out.message,
                redelivered: out.redelivered,
            };
            match connections.get(&out.connection) {
                Some(tx) if tx.send(frame).is_ok() => {}
                // The connection is gone; its Closed event will requeue the delivery.
                _ => {}
            }
        }
        update_probe(&core, &probe);
    }
    Ok(())
}

fn update_probe(core: &BrokerCore, probe: &BrokerProbe) {
    let mut state = probe.inner.lock().unwrap();
    state.stats = core.stats();
    let names: Vec<String> = state.depths.keys().cloned().collect();
    for name in names {
        state.depths.insert(name.clone(), core.queue_depth(&name));
    }
    let dead: Vec<String> = state.dead.keys().cloned().collect();
    for name in dead {
        state.dead.insert(name.clone(), core.peek(&name));
    }
}

impl BrokerProbe {
    /// Start tracking the depth of `queue` and the contents of its dead-letter queue.
    pub fn watch(&self, queue: &str) {
        let mut state = self.inner.lock().unwrap();
        state.depths.entry(queue.to_string()).or_default();
        state.dead.entry(super::core::dead_letter_queue(queue)).or_default();
    }
}

fn serve_connection(id: ConnectionId, stream: TcpStream, events: mpsc::UnboundedSender<Event>) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::unbounded_channel::<ServerFrame>();
    let _ = events.send(Event::Opened(id, tx));
    let closed = Arc::new(AtomicBool::new(false));
    let writer_closed = closed.clone();
    tokio::spawn(async move {
        let mut beat = tokio::time::interval(HEARTBEAT_INTERVAL);
        loop {
            let frame = tokio::select! {
                biased;
                f = rx.recv() => match f { Some(f) => f, None => break },
                _ = beat.tick() => ServerFrame::Heartbeat,
            };
            if writer_closed.load(Ordering::SeqCst) || write_frame(&mut writer, &frame).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        // EOF, garbage or a silent peer ends the loop: the connection is dead.
        while let Ok(Ok(frame)) =
            tokio::time::timeout(HEARTBEAT_TIMEOUT, read_frame::<_, ClientFrame>(&mut reader)).await
        {
            if events.send(Event::Frame(id, frame)).is_err() {
                break;
            }
        }
        closed.store(true, Ordering::SeqCst);
        let _ = events.send(Event::Closed(id));
    });
}
