//! A fault proxy on loopback: the local target's stand-in for the network faults the simulation
//! injects (a partition of a node or of a link, latency, loss).
//!
//! Every connection between the processes of a local run passes through a [`Route`]: a loopback
//! listener labelled with who dials (`from`: the harness's clients, or one replica) and whom it
//! reaches (`to`: a service, or the broker). A route forwards each accepted connection to one
//! backend of `to`, round robin over the backend set the target keeps up to date — a replica
//! joins once ready and leaves before it is stopped, like a Kubernetes Service's endpoints.
//!
//! Faults act on each direction of a connection separately (upstream: dialer to backend;
//! downstream: back), chunk by chunk, the way Toxiproxy's toxics do, and change at run time:
//! - a [`Cut`] (partition) holds every byte on the links it matches, and holds new connections
//!   before the backend is dialled. Nothing is dropped: a real partition drops packets and TCP
//!   keeps retransmitting them, so held bytes flow again, in order, once the cut heals.
//! - latency `ms` delays each chunk by a draw uniform in `[ms, ms + ms/2]` (the simulation's
//!   jitter); order is kept per direction.
//! - loss `p`: TCP hides a lost segment behind its retransmission, so loss shows as delay, as in
//!   the simulation: each chunk waits [`RETRANSMIT_TIMEOUT`] (Linux's minimum retransmission
//!   timeout, 200 ms) with probability `p`, and each new connection is reset with probability
//!   `p` (its handshake lost for good).
//!
//! Every draw comes from one [`SeedRng`] seeded by the caller.

use lastmile_platform::clock::instant_now;
use lastmile_platform::rng::SeedRng;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// How long a "lost" chunk waits: Linux's minimum TCP retransmission timeout.
pub const RETRANSMIT_TIMEOUT: Duration = Duration::from_millis(200);
/// The most a connection reads at once.
const CHUNK_BYTES: usize = 16 * 1024;
/// Chunks read and not yet written, per direction, before reading pauses (TCP's window).
const CHUNKS_IN_FLIGHT: usize = 64;

/// One party of a link: `client`, `broker`, a service, or one replica of a service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// `client`, `broker` or a service's name.
    pub name: String,
    /// The replica's port, for one replica; `None` for a whole service (or the client, the broker).
    pub replica: Option<u16>,
}

impl Endpoint {
    /// The harness and the workload's clients.
    pub fn client() -> Endpoint {
        Endpoint::service("client")
    }

    /// The message broker.
    pub fn broker() -> Endpoint {
        Endpoint::service("broker")
    }

    /// A whole service (every replica of it).
    pub fn service(name: impl Into<String>) -> Endpoint {
        Endpoint { name: name.into(), replica: None }
    }

    /// One replica of a service, known by its port.
    pub fn replica(name: impl Into<String>, port: u16) -> Endpoint {
        Endpoint { name: name.into(), replica: Some(port) }
    }

    /// Whether `other` is this endpoint, or one of its replicas.
    fn covers(&self, other: &Endpoint) -> bool {
        self.name == other.name && (self.replica.is_none() || self.replica == other.replica)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.replica {
            Some(port) => write!(f, "{}@{port}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A connection's two ends: the route's dialer and the backend it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Who dialled.
    pub from: Endpoint,
    /// The backend reached.
    pub to: Endpoint,
}

/// A partition: `side` (a service or one replica) cut off from everything, or with `peer` only
/// from that peer (a service or `broker`), in both directions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The service or replica cut off.
    pub side: Endpoint,
    /// Only its links to this party; `None` = every link.
    pub peer: Option<String>,
}

impl Cut {
    /// `side` off the network.
    pub fn node(side: Endpoint) -> Cut {
        Cut { side, peer: None }
    }

    /// Only the links between `side` and `peer`.
    pub fn link(side: Endpoint, peer: impl Into<String>) -> Cut {
        Cut { side, peer: Some(peer.into()) }
    }

    /// Whether the cut holds `link`'s traffic, whichever end `side` is.
    pub fn matches(&self, link: &Link) -> bool {
        let one_way = |near: &Endpoint, far: &Endpoint| {
            self.side.covers(near) && self.peer.as_ref().is_none_or(|p| *p == far.name)
        };
        one_way(&link.from, &link.to) || one_way(&link.to, &link.from)
    }
}

/// The faults in force.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Partitions; a link matched by any of them forwards nothing.
    pub cuts: Vec<Cut>,
    /// Extra delay per chunk (plus up to half of it again as jitter).
    pub latency_ms: Option<u64>,
    /// Share of new connections reset and of chunks delayed by [`RETRANSMIT_TIMEOUT`].
    pub loss: f64,
}

impl Faults {
    /// Whether some cut holds `link`.
    pub fn holds(&self, link: &Link) -> bool {
        self.cuts.iter().any(|c| c.matches(link))
    }
}

/// The backends of one `to`, in the order they joined.
#[derive(Default)]
struct Backends {
    /// Each backend and its real address.
    members: Vec<(Endpoint, SocketAddr)>,
    /// The round robin's position.
    next: usize,
}

/// What every route and connection of a proxy shares.
struct Shared {
    /// The faults in force; connections held by a cut wait for its changes.
    faults: watch::Sender<Faults>,
    /// The seeded source of every jitter, loss and reset draw.
    rng: Mutex<SeedRng>,
    /// Backend sets by `to` name.
    backends: Mutex<HashMap<String, Backends>>,
}

/// A lock that a panicked holder left behind still guards plain data.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Whether a draw of probability `p` comes up (no draw at all when `p` is 0).
    fn draw(&self, p: f64) -> bool {
        p > 0.0 && lock(&self.rng).between(0.0, 1.0) < p
    }

    /// How long the next chunk waits before it is forwarded.
    fn chunk_delay(&self) -> Duration {
        let (latency_ms, loss) = {
            let f = self.faults.borrow();
            (f.latency_ms, f.loss)
        };
        let mut delay = match latency_ms {
            Some(ms) if ms > 0 => {
                let ms = ms as f64;
                Duration::from_secs_f64(lock(&self.rng).between(ms, ms * 1.5) / 1000.0)
            }
            _ => Duration::ZERO,
        };
        if self.draw(loss) {
            delay += RETRANSMIT_TIMEOUT;
        }
        delay
    }

    fn next_backend(&self, to: &str) -> Option<(Endpoint, SocketAddr)> {
        let mut backends = lock(&self.backends);
        let set = backends.get_mut(to)?;
        if set.members.is_empty() {
            return None;
        }
        let chosen = set.members[set.next % set.members.len()].clone();
        set.next = set.next.wrapping_add(1);
        Some(chosen)
    }
}

/// Loopback routes with faults: see the module docs.
#[derive(Clone)]
pub struct FaultProxy {
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// A proxy with no route, no backend and no fault; `seed` drives every random draw.
    pub fn new(seed: u64) -> FaultProxy {
        FaultProxy {
            shared: Arc::new(Shared {
                faults: watch::Sender::new(Faults::default()),
                rng: Mutex::new(SeedRng::new(seed)),
                backends: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A new route on a free loopback port: `from` dials it to reach a backend of `to`. It
    /// serves until dropped, and its connections end with it.
    pub async fn route(&self, from: Endpoint, to: &str) -> io::Result<Route> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let accept = tokio::spawn(accept(self.shared.clone(), listener, from.clone(), to.to_string()));
        Ok(Route { addr, from, to: to.to_string(), accept })
    }

    /// Add `backend` (or move it to `addr`) in the set of `backend.name`.
    pub fn join(&self, backend: Endpoint, addr: SocketAddr) {
        let mut backends = lock(&self.shared.backends);
        let set = backends.entry(backend.name.clone()).or_default();
        match set.members.iter_mut().find(|(e, _)| *e == backend) {
            Some(member) => member.1 = addr,
            None => set.members.push((backend, addr)),
        }
    }

    /// Take `backend` out of its set: new connections no longer reach it (open ones stay).
    pub fn leave(&self, backend: &Endpoint) {
        if let Some(set) = lock(&self.shared.backends).get_mut(&backend.name) {
            set.members.retain(|(e, _)| e != backend);
        }
    }

    /// The backends of `to`, in the order they joined.
    pub fn backends(&self, to: &str) -> Vec<Endpoint> {
        lock(&self.shared.backends)
            .get(to)
            .map_or_else(Vec::new, |s| s.members.iter().map(|(e, _)| e.clone()).collect())
    }

    /// Add a partition.
    pub fn cut(&self, cut: Cut) {
        self.shared.faults.send_modify(|f| f.cuts.push(cut));
    }

    /// Heal every partition: held connections and bytes flow again.
    pub fn clear_cuts(&self) {
        self.shared.faults.send_modify(|f| f.cuts.clear());
    }

    /// Set (or with `None` clear) the latency added to every chunk.
    pub fn set_latency_ms(&self, latency_ms: Option<u64>) {
        self.shared.faults.send_modify(|f| f.latency_ms = latency_ms);
    }

    /// Set the loss share (0 clears it), clamped to `[0, 1]`.
    pub fn set_loss(&self, loss: f64) {
        self.shared.faults.send_modify(|f| f.loss = loss.clamp(0.0, 1.0));
    }

    /// Clear every fault.
    pub fn heal(&self) {
        self.shared.faults.send_replace(Faults::default());
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.shared.faults.borrow().clone()
    }
}

/// A listening route of a [`FaultProxy`]; dropping it closes the listener and its connections.
pub struct Route {
    addr: SocketAddr,
    from: Endpoint,
    to: String,
    accept: JoinHandle<()>,
}

impl Route {
    /// Where `from` dials.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://` and the route's address.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "route {} -> {} on {}", self.from, self.to, self.addr)
    }
}

impl Drop for Route {
    fn drop(&mut self) {
        // The accept task owns the connections' JoinSet: aborting it ends them too.
        self.accept.abort();
    }
}

async fn accept(shared: Arc<Shared>, listener: TcpListener, from: Endpoint, to: String) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        match listener.accept().await {
            Ok((dialer, _)) => {
                connections.spawn(connection(shared.clone(), from.clone(), to.clone(), dialer));
            }
            // Out of descriptors, or a connection gone before it was accepted: try again soon.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Close with a reset (RST), as a refused or lost connection looks to its dialer.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn connection(shared: Arc<Shared>, from: Endpoint, to: String, dialer: TcpStream) {
    let loss = shared.faults.borrow().loss;
    if shared.draw(loss) {
        return reset(dialer);
    }
    // No backend (the service at 0 replicas): refused, as a Service without endpoints refuses.
    let Some((backend, addr)) = shared.next_backend(&to) else {
        return reset(dialer);
    };
    let link = Link { from, to: backend };
    let mut faults = shared.faults.subscribe();
    wait_uncut(&link, &mut faults).await;
    let Ok(upstream) = TcpStream::connect(addr).await else {
        return reset(dialer);
    };
    let _ = dialer.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (dialer_read, dialer_write) = dialer.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    // The first error in either direction ends both (the halves close when dropped).
    let _ = tokio::try_join!(
        pipe(&shared, &link, dialer_read, upstream_write),
        pipe(&shared, &link, upstream_read, dialer_write),
    );
}

/// Wait until no cut holds `link`.
async fn wait_uncut(link: &Link, faults: &mut watch::Receiver<Faults>) {
    while faults.borrow_and_update().holds(link) {
        if faults.changed().await.is_err() {
            return;
        }
    }
}

/// One direction of a connection: chunks read as they come, each written once its delay is over
/// and no cut holds the link, in the order read; the write side shut down after the last.
async fn pipe(shared: &Shared, link: &Link, mut source: OwnedReadHalf, mut sink: OwnedWriteHalf) -> io::Result<()> {
    let (chunks, mut due_chunks) = mpsc::channel::<(Vec<u8>, Instant)>(CHUNKS_IN_FLIGHT);
    let read = async move {
        let mut buf = vec![0; CHUNK_BYTES];
        loop {
            let n = source.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, io::Error>(());
            }
            let due = instant_now() + shared.chunk_delay();
            if chunks.send((buf[..n].to_vec(), due)).await.is_err() {
                return Ok(());
            }
        }
    };
    let write = async {
        let mut faults = shared.faults.subscribe();
        while let Some((chunk, due)) = due_chunks.recv().await {
            tokio::time::sleep_until(due).await;
            wait_uncut(link, &mut faults).await;
            sink.write_all(&chunk).await?;
        }
        sink.shutdown().await
    };
    tokio::try_join!(read, write).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::{Cut, Endpoint, Link};

    fn link(from: Endpoint, to: Endpoint) -> Link {
        Link { from, to }
    }

    #[test]
    fn cuts_match_their_side_in_both_directions_and_only_their_peer() {
        let m1 = Endpoint::replica("matching-service", 4001);
        let m2 = Endpoint::replica("matching-service", 4002);
        let trip = Endpoint::replica("trip-service", 5000);
        let user = Endpoint::replica("user-service", 6000);

        let node = Cut::node(m1.clone());
        assert!(node.matches(&link(m1.clone(), trip.clone())), "its outgoing links");
        assert!(node.matches(&link(Endpoint::client(), m1.clone())), "links to it as a backend");
        assert!(!node.matches(&link(m2.clone(), trip.clone())), "not another replica's");

        let service = Cut::node(Endpoint::service("matching-service"));
        assert!(service.matches(&link(m2.clone(), Endpoint::broker())));
        assert!(!service.matches(&link(Endpoint::client(), trip.clone())));

        let to_trip = Cut::link(m1.clone(), "trip-service");
        assert!(to_trip.matches(&link(m1.clone(), trip.clone())));
        assert!(to_trip.matches(&link(trip.clone(), m1.clone())), "both directions");
        assert!(!to_trip.matches(&link(m1.clone(), user.clone())), "not other peers");
        assert!(!to_trip.matches(&link(m1.clone(), Endpoint::broker())));
        assert!(!to_trip.matches(&link(Endpoint::client(), trip.clone())), "not others' links to the peer");

        let to_broker = Cut::link(Endpoint::service("matching-service"), "broker");
        assert!(to_broker.matches(&link(m2, Endpoint::broker())));
        assert!(!to_broker.matches(&link(m1, user)));
    }

    #[test]
    fn endpoints_read_as_service_at_port() {
        assert_eq!(Endpoint::replica("matching-service", 4001).to_string(), "matching-service@4001");
        assert_eq!(Endpoint::client().to_string(), "client");
    }
}
