//! HTTP in both worlds: serving an axum `Router`, JSON errors at the edge, and the one client
//! services use to call each other.
//!
//! Serving: real world `axum::serve`; simulation hyper's HTTP/1 connection API over madsim's
//! `TcpStream`. The client is the same code in both worlds (hyper over `tokio::net::TcpStream`,
//! which is madsim's under simulation) with a timeout per attempt, jittered exponential retries
//! (the jitter is seeded under simulation) and a circuit breaker per peer.

use crate::id::Id;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::request::Parts;
pub use axum::http::Method;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// Serve `router` on `listener` until `shutdown` resolves, then stop accepting and return.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    imp::serve(listener, router.layer(axum::middleware::from_fn(limit_headers)), shutdown).await
}

/// Most request headers we read; more get a JSON 431.
pub const MAX_HEADER_COUNT: usize = 64;
/// Most bytes of request headers (names and values) we read; more get a JSON 431.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// hyper's own limits, far above ours, so that a request over ours still reaches
/// [`limit_headers`] and gets a JSON answer. Beyond these hyper answers a bare 431 and closes the
/// connection: the request is not read into memory to explain why.
const HYPER_MAX_HEADERS: usize = 256;
const HYPER_MAX_BUF: usize = 256 * 1024;

/// Middleware: a request with more than [`MAX_HEADER_COUNT`] headers or [`MAX_HEADER_BYTES`]
/// of them gets 431 `headers_too_large` as a JSON error.
pub async fn limit_headers(request: Request, next: axum::middleware::Next) -> Response {
    let headers = request.headers();
    let bytes: usize = headers.iter().map(|(name, value)| name.as_str().len() + value.len()).sum();
    if headers.len() > MAX_HEADER_COUNT || bytes > MAX_HEADER_BYTES {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "{} headers of {bytes} bytes; at most {MAX_HEADER_COUNT} headers and {MAX_HEADER_BYTES} bytes",
                headers.len()
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// Connections served at once; the next waits in the listen backlog until one closes.
pub const MAX_CONNECTIONS: usize = 1024;
/// How long a client may take to send a request's headers (a slow or half-open client is cut).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// After shutdown fires: how long connections under way may finish before they are dropped.
pub const DRAIN_PERIOD: Duration = Duration::from_secs(10);

#[cfg(not(madsim))]
mod imp {
    use super::*;
    use hyper_util::rt::TokioTimer;
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    /// hyper's HTTP/1 server per connection: a header-read timeout, at most
    /// [`MAX_CONNECTIONS`] at once, and on shutdown a graceful close of every connection
    /// (idle keep-alive ones at once, busy ones after their response) bounded by
    /// [`DRAIN_PERIOD`], so a stuck client cannot keep a stopping service alive.
    pub async fn serve(
        listener: TcpListener,
        router: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let graceful = GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let slot = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            };
            let stream = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, do not spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_headers(HYPER_MAX_HEADERS)
                .max_buf_size(HYPER_MAX_BUF)
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router.clone()));
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                let _ = connection.await;
                drop(slot);
            });
        }
        drop(listener);
        tokio::select! {
            _ = graceful.shutdown() => {}
            _ = tokio::time::sleep(DRAIN_PERIOD) => {
                tracing::warn!(drain_s = DRAIN_PERIOD.as_secs(), "connections still open after the drain period; dropping them");
            }
        }
        Ok(())
    }
}

#[cfg(madsim)]
mod imp {
    use super::*;
    use hyper_util::service::TowerToHyperService;

    pub async fn serve(
        listener: TcpListener,
        router: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                accepted = listener.accept() => {
                    let (stream, _) = accepted?;
                    let service = TowerToHyperService::new(router.clone());
                    tokio::spawn(async move {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .max_headers(HYPER_MAX_HEADERS)
                            .max_buf_size(HYPER_MAX_BUF)
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                _ = &mut shutdown => return Ok(()),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors at the edge
// ---------------------------------------------------------------------------------------------

/// The JSON body of every error response: `{"error": "...", "code": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
    /// A stable machine-readable code (`malformed_json`, `unknown_rider`, ...).
    pub code: String,
}

/// An error response: a status code and an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The machine-readable code.
    pub code: &'static str,
    /// The message.
    pub message: String,
    /// Seconds after which a retry may succeed (`Retry-After`), for a 503 that is backpressure.
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    /// An error with a status, a code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), retry_after_s: None }
    }
    /// 404 for an entity that does not exist.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }
    /// 422 for a well-formed request that makes no sense.
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }
    /// 409 for a request that conflicts with the current state.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }
    /// 503 when a dependency needed for this request is unavailable.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }
    /// The same error, telling the client to come back after `seconds` (`Retry-After`).
    pub fn retry_after(self, seconds: u64) -> ApiError {
        ApiError { retry_after_s: Some(seconds), ..self }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: self.message, code: self.code.to_string() };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after_s {
            response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        response
    }
}

/// A JSON body extractor whose rejections are JSON errors: 400 for syntax, 422 for a body of the
/// wrong shape, 415 for a missing content type.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(match &rejection {
                JsonRejection::JsonSyntaxError(_) => {
                    ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", rejection.body_text())
                }
                JsonRejection::JsonDataError(_) => ApiError::unprocessable("invalid_body", rejection.body_text()),
                JsonRejection::MissingJsonContentType(_) => {
                    ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "not_json", rejection.body_text())
                }
                // Over the body limit (413), unreadable body (400), ...: the rejection's own status.
                _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", rejection.body_text())
                }
                _ => ApiError::new(rejection.status(), "bad_request", rejection.body_text()),
            }),
        }
    }
}

/// The one `{id}` of a route's path, checked against the id rule ([`crate::id`]): a bad id is a
/// 422 JSON error naming the parameter, before any handler runs.
#[derive(Debug, Clone)]
pub struct PathId(pub Id);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_path", e.body_text()))?;
        let mut params = params.iter();
        let (Some((name, value)), None) = (params.next(), params.next()) else {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "bad_route",
                "the route has not one parameter",
            ));
        };
        Id::new(value)
            .map(PathId)
            .map_err(|e| ApiError::unprocessable("invalid_id", format!("path parameter {name}: {e}")))
    }
}

/// A query-string extractor whose rejections are 422 JSON errors naming the field. Every value
/// arrives as a string (the query types hold ids and names).
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(parts.uri.query().unwrap_or_default())
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", format!("query: {e}")))?;
        let object: serde_json::Map<String, serde_json::Value> =
            pairs.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
        serde_path_to_error::deserialize(serde_json::Value::Object(object))
            .map(ApiQuery)
            .map_err(|e| ApiError::unprocessable("invalid_query", format!("query {}: {}", e.path(), e.inner())))
    }
}

/// The fallback for unknown routes: a JSON 404 rather than an empty body.
pub async fn no_such_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found("no_such_route", format!("no route for {method} {}", shown_path(uri.path())))
}

/// The fallback for a known route asked with the wrong method: a JSON 405.
pub async fn wrong_method(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", shown_path(uri.path())),
    )
}

/// A request path to echo in an error, cut to 200 bytes (a URI path is printable ASCII, with
/// anything else already percent-encoded by the client).
fn shown_path(path: &str) -> &str {
    match path.char_indices().nth(200) {
        Some((cut, _)) => &path[..cut],
        None => path,
    }
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

/// Why a call to another service failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The peer's circuit breaker is open after repeated failures; no request was sent.
    #[error("{peer}: circuit open after repeated failures")]
    CircuitOpen { peer: String },
    /// No connection could be made, or it broke mid-request.
    #[error("{peer}: unreachable: {reason}")]
    Unreachable { peer: String, reason: String },
    /// No answer within the per-attempt timeout.
    #[error("{peer}: timed out")]
    Timeout { peer: String },
    /// The peer answered with an error status.
    #[error("{peer}: HTTP {status}: {body}")]
    Status { peer: String, status: u16, body: String },
    /// The peer answered 2xx with a body we could not decode.
    #[error("{peer}: undecodable response: {reason}")]
    Decode { peer: String, reason: String },
    /// The request could not be built (e.g. a path that is no URI): our mistake, not the
    /// peer's state; nothing was sent, and the breaker does not count it.
    #[error("{peer}: cannot build the request: {reason}")]
    Request { peer: String, reason: String },
}

impl CallError {
    /// The HTTP status if the peer answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            CallError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the peer is (or may be) down, as opposed to having given an answer.
    pub fn is_unavailable(&self) -> bool {
        match self {
            CallError::Status { status, .. } => *status >= 500,
            CallError::Decode { .. } | CallError::Request { .. } => false,
            _ => true,
        }
    }

    /// Whether asking again cannot help: the peer refused the request itself (a 4xx other
    /// than 408 and 429) or it could not be built. A consumer dead-letters such work at once
    /// rather than retrying it.
    pub fn is_permanent(&self) -> bool {
        match self {
            CallError::Status { status, .. } => (400..500).contains(status) && !matches!(status, 408 | 429),
            CallError::Request { .. } => true,
            _ => false,
        }
    }

    /// The error code of a JSON error body, if the peer sent one.
    pub fn code(&self) -> Option<String> {
        match self {
            CallError::Status { body, .. } => serde_json::from_str::<ErrorBody>(body).ok().map(|b| b.code),
            _ => None,
        }
    }
}

/// `id` as one URL path segment (or one query value): letters, digits and `-_.~` stay, every
/// other byte is percent-encoded, so an id can never add a path, a query parameter or a
/// fragment to a peer's URL. Every id in a URL a service builds goes through this.
pub fn path_segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Timeouts, retries and the circuit breaker of a [`HttpClient`].
#[derive(Debug, Clone, PartialEq)]
pub struct CallPolicy {
    /// Limit of one attempt, connect to last byte.
    pub timeout: Duration,
    /// Attempts per call (1 = no retry).
    pub attempts: u32,
    /// First retry delay; doubles per attempt, plus up to as much jitter.
    pub backoff: Duration,
    /// Consecutive failed calls that open the breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker fails calls fast before letting one through.
    pub breaker_cooldown: Duration,
}

impl Default for CallPolicy {
    /// 2 s per attempt, 3 attempts from 50 ms backoff, breaker opens after 5 failures for 2 s.
    fn default() -> Self {
        CallPolicy {
            timeout: Duration::from_secs(2),
            attempts: 3,
            backoff: Duration::from_millis(50),
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Default)]
struct Breaker {
    consecutive_failures: u32,
    open_until: Option<Instant>,
}

/// A client for one peer service. Cheap to clone; clones share the breaker.
#[derive(Debug, Clone)]
pub struct HttpClient {
    inner: Arc<ClientInner>,
}

#[derive(Debug)]
struct ClientInner {
    /// The peer's name, for errors and logs.
    peer: String,
    /// `host:port` to connect to (a Kubernetes Service name, or a simulated virtual address).
    authority: String,
    policy: CallPolicy,
    breaker: Mutex<Breaker>,
    /// Counts retries and breaker trips.
    coverage: crate::coverage::Coverage,
    /// Presented on every request, for the peer's internal endpoints.
    token: Option<crate::auth::ServiceToken>,
    /// Idle keep-alive connections to the peer (real world only; at most `max_idle`).
    idle: Mutex<Vec<Sender>>,
    /// Idle connections kept at most ([`MAX_IDLE`] unless [`HttpClient::with_pool`] says).
    max_idle: usize,
}

/// How a send on a connection failed: before the request left (safe to send again
/// elsewhere) or after (the peer may have it: the retry policy decides).
enum Failed {
    NotSent(CallError),
    Sent(CallError),
}

impl Failed {
    fn into_error(self) -> CallError {
        match self {
            Failed::NotSent(e) | Failed::Sent(e) => e,
        }
    }
}

/// One HTTP/1 connection's request side.
type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Idle connections a client keeps to its peer. Real world only: the simulation opens a
/// connection per call, as it always did, so a seed's run does not change with pooling.
pub const MAX_IDLE: usize = 16;

impl HttpClient {
    /// A client for `peer` at `base_url` (`http://host:port` or `host:port`).
    pub fn new(peer: impl Into<String>, base_url: &str, policy: CallPolicy) -> HttpClient {
        let authority = base_url.trim_start_matches("http://").trim_end_matches('/').to_string();
        HttpClient {
            inner: Arc::new(ClientInner {
                peer: peer.into(),
                authority,
                policy,
                breaker: Mutex::new(Breaker::default()),
                coverage: crate::coverage::Coverage::default(),
                token: None,
                idle: Mutex::new(Vec::new()),
                max_idle: MAX_IDLE,
            }),
        }
    }

    /// A client for `peer` whose retries and breaker trips are counted in `coverage`.
    pub fn with_coverage(
        peer: impl Into<String>,
        base_url: &str,
        policy: CallPolicy,
        coverage: crate::coverage::Coverage,
    ) -> HttpClient {
        let mut client = HttpClient::new(peer, base_url, policy);
        Arc::get_mut(&mut client.inner).expect("a new client is not shared").coverage = coverage;
        client
    }

    /// The same client presenting `token` (if any) on every request. Call before cloning.
    pub fn with_token(mut self, token: Option<crate::auth::ServiceToken>) -> HttpClient {
        Arc::get_mut(&mut self.inner).expect("a new client is not shared").token = token;
        self
    }

    /// The same client keeping up to `max_idle` idle connections (a load generator keeps as
    /// many as it has calls in flight). Call before cloning.
    pub fn with_pool(mut self, max_idle: usize) -> HttpClient {
        Arc::get_mut(&mut self.inner).expect("a new client is not shared").max_idle = max_idle;
        self
    }

    /// The peer's name.
    pub fn peer(&self) -> &str {
        &self.inner.peer
    }

    /// `GET path`, decoding a JSON answer.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        self.call(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body, decoding a JSON answer.
    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, CallError> {
        let bytes = serde_json::to_vec(body).expect("request bodies serialize");
        self.call(Method::POST, path, Some(bytes)).await
    }

    /// Send a request with retries and the breaker; decode a 2xx JSON body.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, CallError> {
        let (status, bytes) = self.call_raw(method, path, body).await?;
        if !(200..300).contains(&status) {
            return Err(CallError::Status {
                peer: self.inner.peer.clone(),
                status,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| CallError::Decode { peer: self.inner.peer.clone(), reason: e.to_string() })
    }

    /// Send a request with retries and the breaker; return any status with its raw body.
    pub async fn call_raw(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<(u16, Bytes), CallError> {
        let policy = &self.inner.policy;
        self.check_breaker()?;
        let mut last = None;
        for attempt in 0..policy.attempts.max(1) {
            if attempt > 0 {
                self.inner.coverage.hit(crate::coverage::RecoveryPath::CallRetry);
                let delay = policy.backoff * 2u32.pow(attempt - 1);
                tokio::time::sleep(delay + crate::clock::jitter(delay)).await;
            }
            let result = match tokio::time::timeout(policy.timeout, self.once(&method, path, body.clone())).await {
                Ok(r) => r,
                Err(_) => Err(CallError::Timeout { peer: self.inner.peer.clone() }),
            };
            match result {
                Ok((status, bytes)) if status < 500 => {
                    self.record(true);
                    return Ok((status, bytes));
                }
                // Our own mistake: the same request would fail again, and the peer is fine.
                Err(e @ CallError::Request { .. }) => return Err(e),
                Ok((status, bytes)) => {
                    last = Some(Ok((status, bytes)));
                }
                Err(e) => last = Some(Err(e)),
            }
        }
        self.record(false);
        last.expect("at least one attempt")
    }

    async fn once(&self, method: &Method, path: &str, body: Option<Vec<u8>>) -> Result<(u16, Bytes), CallError> {
        let request = || self.request(method, path, body.clone());
        // A pooled connection first; one the peer closed meanwhile (an idle timeout, a restart)
        // fails before anything reaches the peer, so the request goes again on a fresh one.
        if let Some(sender) = self.take_idle() {
            match self.send(sender, request()?).await {
                Ok(answer) => return Ok(answer),
                Err(Failed::NotSent(_)) => {}
                Err(Failed::Sent(e)) => return Err(e),
            }
        }
        let peer = &self.inner.peer;
        let unreachable = |reason: String| CallError::Unreachable { peer: peer.clone(), reason };
        let stream = TcpStream::connect(self.inner.authority.as_str()).await.map_err(|e| unreachable(e.to_string()))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        self.send(sender, request()?).await.map_err(Failed::into_error)
    }

    fn request(
        &self,
        method: &Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Request<Full<Bytes>>, CallError> {
        let mut request = hyper::Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, self.inner.authority.as_str());
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(token) = &self.inner.token {
            request = request.header(header::AUTHORIZATION, token.header_value());
        }
        request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| CallError::Request { peer: self.inner.peer.clone(), reason: e.to_string() })
    }

    /// Send on `sender`, read the whole answer, and keep the connection for the next call.
    async fn send(&self, mut sender: Sender, request: hyper::Request<Full<Bytes>>) -> Result<(u16, Bytes), Failed> {
        let unreachable =
            |e: hyper::Error| CallError::Unreachable { peer: self.inner.peer.clone(), reason: e.to_string() };
        sender.ready().await.map_err(|e| Failed::NotSent(unreachable(e)))?;
        let response = sender.send_request(request).await.map_err(|e| {
            // Canceled: the connection was gone before the request went out.
            if e.is_canceled() {
                Failed::NotSent(unreachable(e))
            } else {
                Failed::Sent(unreachable(e))
            }
        })?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.map_err(|e| Failed::Sent(unreachable(e)))?.to_bytes();
        self.put_idle(sender);
        Ok((status, bytes))
    }

    fn take_idle(&self) -> Option<Sender> {
        let mut idle = self.inner.idle.lock().expect("idle connections");
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn put_idle(&self, sender: Sender) {
        if cfg!(madsim) || sender.is_closed() {
            return;
        }
        let mut idle = self.inner.idle.lock().expect("idle connections");
        if idle.len() < self.inner.max_idle {
            idle.push(sender);
        }
    }

    /// Idle connections kept now.
    pub fn idle_connections(&self) -> usize {
        self.inner.idle.lock().expect("idle connections").len()
    }

    fn check_breaker(&self) -> Result<(), CallError> {
        let mut breaker = self.inner.breaker.lock().expect("breaker");
        if let Some(until) = breaker.open_until {
            if crate::clock::instant_now() < until {
                self.inner.coverage.hit(crate::coverage::RecoveryPath::CircuitRejected);
                return Err(CallError::CircuitOpen { peer: self.inner.peer.clone() });
            }
            // Half-open: let this call through; its result decides.
            breaker.open_until = None;
        }
        Ok(())
    }

    fn record(&self, success: bool) {
        let mut breaker = self.inner.breaker.lock().expect("breaker");
        if success {
            breaker.consecutive_failures = 0;
            return;
        }
        breaker.consecutive_failures += 1;
        if breaker.consecutive_failures >= self.inner.policy.breaker_threshold {
            breaker.open_until = Some(crate::clock::instant_now() + self.inner.policy.breaker_cooldown);
            self.inner.coverage.hit(crate::coverage::RecoveryPath::CircuitOpened);
            breaker.consecutive_failures = 0;
        }
    }
}

#[cfg(all(test, not(madsim)))]
mod pool_tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A relay to `backend` that counts the connections it accepts and can cut them all.
    async fn counting_relay(
        backend: std::net::SocketAddr,
    ) -> (String, Arc<AtomicUsize>, Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (count, links) = (Arc::new(AtomicUsize::new(0)), Arc::new(Mutex::new(Vec::new())));
        let (c, l) = (count.clone(), links.clone());
        tokio::spawn(async move {
            loop {
                let (mut inbound, _) = listener.accept().await.unwrap();
                c.fetch_add(1, Ordering::SeqCst);
                l.lock().unwrap().push(tokio::spawn(async move {
                    let mut outbound = TcpStream::connect(backend).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }));
            }
        });
        (url, count, links)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_reuse_a_pooled_connection_and_a_connection_the_peer_cut_is_replaced() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = listener.local_addr().unwrap();
        let router = Router::new().route("/n", axum::routing::get(|| async { "ok" }));
        tokio::spawn(serve(listener, router, std::future::pending()));
        let (url, accepted, links) = counting_relay(backend).await;
        let client = HttpClient::new("peer", &url, CallPolicy { attempts: 1, ..CallPolicy::default() });
        for _ in 0..20 {
            assert_eq!(client.call_raw(Method::GET, "/n", None).await.unwrap().0, 200);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "twenty calls, one connection");
        assert_eq!(client.idle_connections(), 1);
        // The peer side goes away (a restart, an idle timeout): the pooled connection is dead.
        for link in links.lock().unwrap().drain(..) {
            link.abort();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(client.call_raw(Method::GET, "/n", None).await.unwrap().0, 200, "a fresh connection, no error");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        // Calls at once open what they need, and at most MAX_IDLE stay.
        let calls: Vec<_> = (0..40)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move { client.call_raw(Method::GET, "/n", None).await.unwrap().0 })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.unwrap(), 200);
        }
        assert!(client.idle_connections() <= MAX_IDLE);
    }
}

#[cfg(test)]
mod tests {
    use super::{path_segment, CallError};

    #[test]
    fn a_refusal_is_permanent_and_not_an_outage() {
        let status = |status| CallError::Status { peer: "p".into(), status, body: String::new() };
        for s in [400, 404, 409, 422] {
            assert!(status(s).is_permanent() && !status(s).is_unavailable(), "{s}");
        }
        for s in [408, 429] {
            assert!(!status(s).is_permanent(), "{s} is worth asking again");
        }
        assert!(!status(503).is_permanent() && status(503).is_unavailable());
        let unbuildable = CallError::Request { peer: "p".into(), reason: "bad uri".into() };
        assert!(unbuildable.is_permanent() && !unbuildable.is_unavailable());
        let down = CallError::Unreachable { peer: "p".into(), reason: "refused".into() };
        assert!(!down.is_permanent() && down.is_unavailable());
    }

    #[test]
    fn an_id_stays_one_path_segment() {
        assert_eq!(path_segment("rider-1_a.b~"), "rider-1_a.b~");
        assert_eq!(path_segment("pr1?evil"), "pr1%3Fevil");
        assert_eq!(path_segment("a/../b#x y"), "a%2F..%2Fb%23x%20y");
        assert_eq!(path_segment("é"), "%C3%A9");
    }
}
