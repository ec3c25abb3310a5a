//! What every service shares: the broker topology at start, `/health`, `/ready` and `/metrics`,
//! the JSON fallback for unknown routes, and the runner with graceful shutdown.

use crate::config::{Config, ServiceName};
use crate::events::{topology, Event};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use lastmile_platform::auth;
use lastmile_platform::broker::outbox::Outbox;
use lastmile_platform::broker::worker::{self, Outcome, WorkerConfig};
use lastmile_platform::broker::Broker;
use lastmile_platform::capacity::Capacity;
use lastmile_platform::clock::jitter;
use lastmile_platform::faults::MAX_DISK_STALL_MS;
use lastmile_platform::http::{self, ApiError, ApiJson, HttpClient};
use lastmile_platform::metrics::{self, Metrics};
use lastmile_platform::shutdown::Shutdown;
use lastmile_platform::watch;
use serde::Deserialize;
use serde_json::json;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How often a service without a live broker connection tries to open one.
const RECONNECT_PERIOD: Duration = Duration::from_secs(2);
/// How long graceful shutdown waits for background work to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What a service's `start` gets: configuration, its broker client, the shutdown signal and the
/// moment the broker topology is in place.
#[derive(Clone)]
pub struct Context {
    /// The configuration.
    pub config: Config,
    /// The broker client shared by the service's publishers and consumers.
    pub broker: Broker,
    /// Fires on SIGTERM / Ctrl-C (or when a simulation stops the node).
    pub shutdown: Shutdown,
    /// Becomes true once the topology is declared.
    declared: watch::Receiver<bool>,
    /// Extra readiness conditions (e.g. a journal replayed).
    ready_flags: Vec<Arc<AtomicBool>>,
    /// The service's outboxes: a full one means it takes no new work.
    outboxes: Arc<std::sync::Mutex<Vec<Outbox>>>,
    /// What `GET /metrics` shows.
    pub metrics: Metrics,
    /// The replica's service time and permits, shared by its consumers and its own routes
    /// (`None`: work takes no added time).
    capacity: Option<Capacity>,
}

impl Context {
    /// Wait until the broker topology is declared (or shutdown).
    pub async fn declared(&self) {
        self.declared.wait_for(|d| *d).await;
    }

    /// `routes` as internal endpoints: with a service token configured, a call without it gets
    /// 401 (see [`lastmile_platform::auth`]).
    pub fn internal<S: Clone + Send + Sync + 'static>(&self, routes: Router<S>) -> Router<S> {
        routes.route_layer(axum::middleware::from_fn_with_state(self.config.service_token.clone(), auth::require))
    }

    /// A client for a peer service (presenting the service token, if configured).
    pub fn client(&self, peer: ServiceName) -> HttpClient {
        let url = match peer {
            ServiceName::User => &self.config.user_url,
            ServiceName::Location => &self.config.location_url,
            ServiceName::Trip => &self.config.trip_url,
            other => panic!("no service calls {other}"),
        };
        HttpClient::with_coverage(peer.as_str(), url, self.config.call_policy.clone(), self.config.coverage.clone())
            .with_token(self.config.service_token.clone())
    }

    /// Consume the service's queue once the topology is declared, handing each decoded event to
    /// `handler`; an undecodable message is dead-lettered without reaching it.
    pub fn spawn_consumer<H, F>(&self, service: ServiceName, mut handler: H) -> tokio::task::JoinHandle<()>
    where
        H: FnMut(Event) -> F + Send + 'static,
        F: Future<Output = Outcome> + Send + 'static,
    {
        let ctx = self.clone();
        let config = WorkerConfig {
            prefetch: ctx.config.prefetch,
            faults: ctx.config.faults.clone(),
            coverage: ctx.config.coverage.clone(),
            ..WorkerConfig::new(ctx.config.names.queue(service.as_str()))
        };
        tokio::spawn(async move {
            let mut stop = ctx.shutdown.clone();
            tokio::select! {
                biased;
                _ = stop.wait() => return,
                _ = ctx.declared() => {}
            }
            let capacity = ctx.capacity.clone();
            worker::run(ctx.broker.clone(), config, ctx.shutdown.clone(), move |message, _| {
                let work = Event::from_message(&message).map(&mut handler);
                let capacity = capacity.clone();
                async move {
                    if let Some(capacity) = capacity {
                        capacity.serve().await;
                    }
                    match work {
                        Ok(work) => work.await,
                        Err(reason) => Outcome::Poison(reason),
                    }
                }
            })
            .await
        })
    }

    /// An outbox publishing to the events exchange, bounded by `outbox_capacity`, its fill
    /// part of readiness. Confirmed message ids go to `confirmed`, if given.
    pub fn outbox(&self, confirmed: Option<tokio::sync::mpsc::UnboundedSender<String>>) -> Outbox {
        let outbox = Outbox::spawn(
            self.config.outbox_capacity,
            self.broker.clone(),
            self.config.names.events_exchange(),
            confirmed,
            self.config.faults.clone(),
            self.config.coverage.clone(),
            self.shutdown.clone(),
        );
        self.outboxes.lock().expect("outboxes").push(outbox.clone());
        outbox
    }

    /// A readiness condition that starts false; `/ready` waits for all of them.
    pub fn ready_flag(&mut self) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        self.ready_flags.push(flag.clone());
        flag
    }

    /// Whether the service can take work: the topology was declared (the broker was there at
    /// least once), its own flags are set (e.g. its journal replayed), and its outboxes have
    /// room. A broker outage alone does not make it unready: it keeps accepting work, which
    /// waits in the outbox, until the outbox is full (then new work gets 503 + Retry-After).
    pub fn is_ready(&self) -> bool {
        self.declared.get()
            && self.ready_flags.iter().all(|f| f.load(Ordering::SeqCst))
            && self.outboxes.lock().expect("outboxes").iter().all(Outbox::has_room)
    }
}

/// A started service: its HTTP routes and its background tasks.
pub struct Service {
    /// Which service.
    pub name: ServiceName,
    /// Every route, `/health` and `/ready` included.
    pub router: Router,
    /// Consumers and periodic jobs; they end on shutdown.
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The broker client, closed after the tasks finish.
    pub broker: Broker,
}

/// Start `name`: declare the topology (retrying until the broker answers), wire the service.
pub async fn start(name: ServiceName, config: &Config, shutdown: Shutdown) -> anyhow::Result<Service> {
    let broker = Broker::new(config.amqp_url.clone());
    let (declared_tx, declared) = watch::channel(false);
    let mut tasks = Vec::new();
    {
        let (broker, topology, mut shutdown) =
            (broker.clone(), topology(&config.names, config.queue_expires), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            let mut backoff = Duration::from_millis(50);
            loop {
                // A stopping service does not wait on a broker that does not answer.
                let declared = tokio::select! {
                    biased;
                    _ = shutdown.wait() => return,
                    declared = broker.declare(&topology) => declared,
                };
                match declared {
                    Ok(()) => {
                        declared_tx.send(true);
                        return;
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot declare the broker topology yet"),
                }
                tokio::select! {
                    biased;
                    _ = tokio::time::sleep(backoff + jitter(backoff)) => {}
                    _ = shutdown.wait() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }));
    }
    {
        // Keep a broker connection open even when the service has nothing to publish or
        // consume, so `/ready` recovers after a broker restart without waiting for traffic.
        let (broker, mut shutdown) = (broker.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    _ = shutdown.wait() => return,
                    _ = tokio::time::sleep(RECONNECT_PERIOD) => {}
                }
                if !broker.is_connected() {
                    tokio::select! {
                        biased;
                        _ = shutdown.wait() => return,
                        _ = broker.connect() => {}
                    }
                }
            }
        }));
    }
    if config.service_token.is_none() {
        tracing::warn!(service = %name, "no service token configured: internal endpoints are open to any caller");
    }
    let outboxes: Arc<std::sync::Mutex<Vec<Outbox>>> = Arc::default();
    let metrics = Metrics::new(config.coverage.clone());
    {
        let outboxes = outboxes.clone();
        metrics.gauge("lastmile_outbox_depth", "Events committed and not yet confirmed by the broker.", move || {
            outboxes.lock().expect("outboxes").iter().map(Outbox::pending).sum::<usize>() as f64
        });
    }
    let mut ctx = Context {
        config: config.clone(),
        broker: broker.clone(),
        shutdown,
        declared,
        ready_flags: Vec::new(),
        outboxes,
        metrics: metrics.clone(),
        capacity: config.service_time.map(Capacity::new),
    };
    let (routes, more) = match name {
        ServiceName::User => crate::user::start(&mut ctx).await?,
        ServiceName::Location => crate::location::start(&mut ctx).await?,
        ServiceName::Trip => crate::trip::start(&mut ctx).await?,
        ServiceName::Matching => crate::matching::start(&mut ctx).await?,
        ServiceName::Notification => crate::notification::start(&mut ctx).await?,
    };
    tasks.extend(more);
    // The service's own routes pay the service time; health, readiness and metrics do not
    // (probes must see a busy replica as alive and ready).
    let routes = match ctx.capacity.clone() {
        Some(c) => routes.layer(axum::middleware::from_fn_with_state(c, charge)),
        None => routes,
    };
    let routes = if config.harness_routes {
        routes.merge(ctx.internal(Router::new().route("/disk-stall", post(set_disk_stall))).with_state(ctx.clone()))
    } else {
        routes
    };
    let ready_ctx = ctx.clone();
    let scraped = ctx.metrics.clone();
    let router = routes
        .route("/health", get(move || async move { Json(json!({ "status": "ok", "service": name.as_str() })) }))
        .route(
            "/ready",
            get(move || {
                let ready = ready_ctx.is_ready();
                async move {
                    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                    (status, Json(json!({ "ready": ready, "service": name.as_str() })))
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let text = scraped.render();
                async move { ([(axum::http::header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text) }
            }),
        )
        .fallback(http::no_such_route)
        .method_not_allowed_fallback(http::wrong_method)
        .layer(axum::middleware::from_fn_with_state(metrics, metrics::count_requests));
    Ok(Service { name, router, tasks, broker })
}

/// The harness's own reads: measurement rather than the service's work, so they pay no service
/// time (a saturated matching replica still reports its counters on time). `POST /disk-stall`
/// is merged after the service time is layered on, so it pays none either.
const HARNESS_ROUTES: [&str; 3] = ["/export", "/summary", "/stats"];

/// `POST /disk-stall` (harness routes, internal): `{"latency_ms": n}` makes every journal sync
/// of this process wait `n` ms more, 0 ends the stall. The real world's `disk-stall` fault.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DiskStall {
    latency_ms: u64,
}

async fn set_disk_stall(
    axum::extract::State(ctx): axum::extract::State<Context>,
    ApiJson(body): ApiJson<DiskStall>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if body.latency_ms > MAX_DISK_STALL_MS {
        return Err(ApiError::unprocessable(
            "invalid_latency",
            format!("latency_ms must be at most {MAX_DISK_STALL_MS}, not {}", body.latency_ms),
        ));
    }
    if !ctx.config.faults.can_stall() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "disk_stall_unavailable",
            "this service's faults are off: its disk cannot be stalled",
        ));
    }
    ctx.config.faults.set_disk_stall(body.latency_ms);
    tracing::warn!(latency_ms = body.latency_ms, "disk stall set through the harness route");
    Ok(Json(json!({ "disk_stall_ms": body.latency_ms })))
}

/// Charge a request to the service's own routes one service time (see [`Config::service_time`]).
async fn charge(
    axum::extract::State(capacity): axum::extract::State<Capacity>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if !HARNESS_ROUTES.contains(&request.uri().path()) {
        capacity.serve().await;
    }
    next.run(request).await
}

/// Run `name` on `listener` until `shutdown` fires; then stop accepting, stop consuming, let the
/// work in flight finish (bounded), and close the broker connection.
pub async fn run(name: ServiceName, config: Config, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    let service = start(name, &config, shutdown.clone()).await?;
    let mut stop = shutdown.clone();
    http::serve(listener, service.router, async move { stop.wait().await }).await?;
    for task in service.tasks {
        if tokio::time::timeout(DRAIN_TIMEOUT, task).await.is_err() {
            tracing::warn!(service = %name, "a background task did not finish in time");
        }
    }
    service.broker.disconnect().await;
    Ok(())
}
