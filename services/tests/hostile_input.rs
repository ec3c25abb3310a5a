//! Hostile input never gets in and never gets a bare answer: every id a service takes from a
//! path, a query or a body is checked against the id rule (`lastmile_platform::id`) and a bad
//! one is a 422 JSON error naming the field, before any lookup, peer call or write; lists are
//! bounded; a wrong method, an unknown route and an oversized body get JSON errors too.
//!
//! No broker is needed: the five services run in-process on loopback ports with a broker address
//! nothing answers on (they buffer what they would publish), so this runs without RabbitMQ.

// Real sockets on real tokio (the normal build flavour only).
#![cfg(not(madsim))]

use lastmile_platform::auth::ServiceToken;
use lastmile_platform::http::{CallPolicy, ErrorBody, HttpClient, Method};
use lastmile_platform::shutdown;
use lastmile_services::{Config, ServiceName};
use std::collections::BTreeMap;

/// Ids that must be refused, as they would appear in JSON, and (percent-encoded) in a path.
const HOSTILE: [(&str, &str); 8] = [
    ("pr1?evil", "pr1%3Fevil"),
    ("a/../b", "a%2F..%2Fb"),
    ("has space", "has%20space"),
    ("new\nline", "new%0Aline"),
    ("nul\u{0}", "nul%00"),
    ("pct%3F", "pct%253F"),
    ("é", "%C3%A9"),
    ("", ""),
];

/// The service token of the in-process deployment.
const TOKEN: &str = "in-process-service-token";

fn token() -> ServiceToken {
    ServiceToken::new(TOKEN).unwrap()
}

struct Services {
    clients: BTreeMap<ServiceName, HttpClient>,
    urls: BTreeMap<ServiceName, String>,
    triggers: BTreeMap<ServiceName, shutdown::ShutdownTrigger>,
    runs: BTreeMap<ServiceName, tokio::task::JoinHandle<anyhow::Result<()>>>,
    data_dir: std::path::PathBuf,
}

async fn start() -> Services {
    start_with(|_| {}).await
}

async fn start_with(configure: impl FnOnce(&mut Config)) -> Services {
    let data_dir = std::env::temp_dir().join(format!("lastmile-hostile-{}", lastmile_platform::clock::new_id()));
    let mut listeners = BTreeMap::new();
    let mut urls = BTreeMap::new();
    for name in ServiceName::ALL {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        urls.insert(name, format!("http://{}", listener.local_addr().unwrap()));
        listeners.insert(name, listener);
    }
    let config = Config {
        // Nothing listens on port 1: the services run, buffering what they would publish.
        amqp_url: "amqp://127.0.0.1:1/%2f".into(),
        user_url: urls[&ServiceName::User].clone(),
        location_url: urls[&ServiceName::Location].clone(),
        trip_url: urls[&ServiceName::Trip].clone(),
        data_dir: data_dir.clone(),
        service_token: Some(ServiceToken::new(TOKEN).unwrap()),
        harness_routes: true,
        // As `lastmile service --harness-routes` has it: a disk the harness can stall.
        faults: lastmile_platform::faults::Faults::disk_stall_only(),
        ..Config::default()
    };
    let mut config = config;
    configure(&mut config);
    let (mut triggers, mut runs) = (BTreeMap::new(), BTreeMap::new());
    for (name, listener) in listeners {
        let (trigger, signal) = shutdown::channel();
        runs.insert(name, tokio::spawn(lastmile_services::run(name, config.clone(), listener, signal)));
        triggers.insert(name, trigger);
    }
    let policy = CallPolicy { attempts: 1, ..CallPolicy::default() };
    // The tests' clients present the token, as a peer does: what they send must be refused on
    // its own merits. (`outsider` below has none.)
    let clients = urls
        .iter()
        .map(|(name, url)| (*name, HttpClient::new(name.as_str(), url, policy.clone()).with_token(Some(token()))))
        .collect();
    Services { clients, urls, triggers, runs, data_dir }
}

impl Drop for Services {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Send and expect a 422 `code` whose message names `field`.
async fn refused(client: &HttpClient, method: Method, path: &str, body: Option<String>, code: &str, field: &str) {
    refused_with(client, method, path, body, (422, code), field).await
}

/// Send and expect `status` with a JSON error `code` whose message names `field`.
async fn refused_with(
    client: &HttpClient,
    method: Method,
    path: &str,
    body: Option<String>,
    (want, code): (u16, &str),
    field: &str,
) {
    let (status, bytes) = loop {
        match client.call_raw(method.clone(), path, body.clone().map(String::into_bytes)).await {
            Ok(answer) => break answer,
            // The service may still be binding its routes.
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    };
    let error: ErrorBody = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    assert_eq!((status, error.code.as_str()), (want, code), "{method} {path}: {}", error.error);
    assert!(error.error.contains(field), "{method} {path}: the error names {field}: {}", error.error);
}

/// Internal endpoints: only a caller with the service token gets past the door; everyone else
/// gets a 401 JSON error before any handler (and its id checks) runs. Public routes need none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_endpoints_answer_only_callers_with_the_service_token() {
    let s = start().await;
    let policy = CallPolicy { attempts: 1, ..CallPolicy::default() };
    let internal: [(ServiceName, Method, &str, Option<&str>); 10] = [
        (ServiceName::User, Method::GET, "/users/u1", None),
        (ServiceName::User, Method::GET, "/users/pr1%3Fevil", None),
        (ServiceName::Location, Method::GET, "/stations/ST101/drivers", None),
        (ServiceName::Trip, Method::GET, "/stations/ST101/candidates?driver_id=d1", None),
        (ServiceName::Trip, Method::POST, "/matches", Some("{}")),
        (ServiceName::Trip, Method::GET, "/export", None),
        (ServiceName::Trip, Method::GET, "/summary", None),
        (ServiceName::Matching, Method::GET, "/stats", None),
        (ServiceName::Trip, Method::POST, "/disk-stall", Some(r#"{"latency_ms": 60000}"#)),
        (ServiceName::Matching, Method::POST, "/disk-stall", Some(r#"{"latency_ms": 60000}"#)),
    ];
    let wrong = ServiceToken::new("in-process-service-tokeN").unwrap();
    for (who, presented) in [("no token", None), ("a wrong token", Some(wrong))] {
        for (service, method, path, body) in &internal {
            let outsider = HttpClient::new("outsider", &s.urls[service], policy.clone()).with_token(presented.clone());
            refused_with(
                &outsider,
                method.clone(),
                path,
                body.map(String::from),
                (401, "unauthorized"),
                "service token",
            )
            .await;
            let (status, _) = outsider.call_raw(method.clone(), path, None).await.unwrap();
            assert_eq!(status, 401, "{who}: {method} {path}");
        }
    }
    // With the token the same calls reach their handlers.
    let (status, _) = s.clients[&ServiceName::Trip].call_raw(Method::GET, "/summary", None).await.unwrap();
    assert_eq!(status, 200);
    let (status, _) = s.clients[&ServiceName::User].call_raw(Method::GET, "/users/u1", None).await.unwrap();
    assert_eq!(status, 404, "an unknown user, answered by the handler");
    // Public routes take no token; unknown routes stay 404, not 401.
    let outsider = HttpClient::new("outsider", &s.urls[&ServiceName::Trip], policy.clone());
    let (status, _) = outsider.call_raw(Method::GET, "/rides/r-unknown", None).await.unwrap();
    assert_eq!(status, 404);
    refused_with(&outsider, Method::GET, "/no/such/route", None, (404, "no_such_route"), "/no/such/route").await;
}

/// Send `request` as raw bytes and read the whole answer (the server closes the connection).
async fn raw(url: &str, request: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(url.trim_start_matches("http://")).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}

/// The harness's routes and the naive design's commit exist only where they are turned on: a
/// production deployment answers them 404, whoever asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_only_routes_are_absent_unless_turned_on() {
    let s = start_with(|c| c.harness_routes = false).await;
    let trip = &s.clients[&ServiceName::Trip];
    for (method, path) in [
        (Method::GET, "/export"),
        (Method::GET, "/summary"),
        (Method::POST, "/matches/unchecked"),
        (Method::POST, "/disk-stall"),
    ] {
        refused_with(trip, method, path, Some("{}".into()), (404, "no_such_route"), path).await;
    }
    refused_with(&s.clients[&ServiceName::Matching], Method::GET, "/stats", None, (404, "no_such_route"), "/stats")
        .await;
    let on = start().await;
    let (status, _) = on.clients[&ServiceName::Trip].call_raw(Method::GET, "/export", None).await.unwrap();
    assert_eq!(status, 200, "turned on, the harness reads the record");
}

/// The real world's `disk-stall` route takes one bounded number and nothing else; a stall it sets
/// holds every commit until it is set back to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_stall_route_takes_a_bounded_latency_and_holds_commits_until_set_back() {
    let s = start().await;
    let trip = &s.clients[&ServiceName::Trip];
    let bad: [(&str, (u16, &str), &str); 4] = [
        (r#"{"latency_ms": 60001}"#, (422, "invalid_latency"), "latency_ms"),
        (r#"{"latency_ms": -1}"#, (422, "invalid_body"), "latency_ms"),
        (r#"{"latency_ms": 5, "crash": "mid-sync"}"#, (422, "invalid_body"), "crash"),
        (r#"{"latency_ms": "#, (400, "malformed_json"), "EOF"),
    ];
    for (body, want, field) in bad {
        refused_with(trip, Method::POST, "/disk-stall", Some(body.into()), want, field).await;
    }
    let ride = |id: &str| {
        Some(
            serde_json::json!({ "ride_id": id, "rider_id": "r1", "station_id": "ST101", "destination": "ST104" })
                .to_string()
                .into_bytes(),
        )
    };
    let user = &s.clients[&ServiceName::User];
    let rider =
        serde_json::json!({ "rider_id": "r1", "name": "R", "phone": "+91 90000 00000" }).to_string().into_bytes();
    let (status, _) = user.call_raw(Method::POST, "/riders", Some(rider)).await.unwrap();
    assert_eq!(status, 201);
    // trip-service records a rider it checked in a journal of its own: done before the stall,
    // so the stalled sync below is the ride's commit itself.
    let (status, _) = trip.call_raw(Method::POST, "/rides", ride("before")).await.unwrap();
    assert_eq!(status, 201);

    let (status, body) =
        trip.call_raw(Method::POST, "/disk-stall", Some(br#"{"latency_ms": 1500}"#.to_vec())).await.unwrap();
    assert_eq!((status, String::from_utf8_lossy(&body).as_ref()), (200, r#"{"disk_stall_ms":1500}"#));
    let impatient = HttpClient::new(
        "impatient",
        &s.urls[&ServiceName::Trip],
        CallPolicy { attempts: 1, timeout: std::time::Duration::from_millis(300), ..CallPolicy::default() },
    )
    .with_token(Some(token()));
    assert!(impatient.call_raw(Method::POST, "/rides", ride("held")).await.is_err(), "answered through a 1.5 s stall");
    let (status, _) = trip.call_raw(Method::POST, "/disk-stall", Some(br#"{"latency_ms": 0}"#.to_vec())).await.unwrap();
    assert_eq!(status, 200);
    // The commit its caller gave up on lands once its sync went through: nothing lost.
    let mut found = 0;
    for _ in 0..50 {
        found = trip.call_raw(Method::GET, "/rides/held", None).await.map_or(0, |(status, _)| status);
        if found == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(found, 200, "the ride committed during the stall");

    // A service whose faults are off says so rather than pretend.
    let off = start_with(|c| c.faults = lastmile_platform::faults::Faults::default()).await;
    let body = Some(r#"{"latency_ms": 1500}"#.to_string());
    refused_with(
        &off.clients[&ServiceName::Trip],
        Method::POST,
        "/disk-stall",
        body,
        (409, "disk_stall_unavailable"),
        "off",
    )
    .await;
}

/// Too many or too large request headers: a JSON 431 naming the limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_or_too_large_headers_get_a_json_431() {
    let s = start().await;
    let url = &s.urls[&ServiceName::Trip];
    let many: String = (0..80).map(|i| format!("X-Filler-{i}: {i}\r\n")).collect();
    let large = format!("X-Large: {}\r\n", "a".repeat(20 * 1024));
    for headers in [many, large] {
        let request = format!("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n");
        let (status, body) = raw(url, request.as_bytes()).await;
        assert_eq!(status, 431, "{body}");
        let error: ErrorBody = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
        assert_eq!(error.code, "headers_too_large");
        assert!(error.error.contains("at most 64 headers"), "{}", error.error);
    }
    let (status, _) = raw(url, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status, 200, "an ordinary request still passes");
}

/// `GET /metrics`: requests by route template (never the raw path), recovery paths, the outbox
/// and the journal, in Prometheus's text format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_route_template_and_show_the_outbox_and_the_journal() {
    let s = start().await;
    let user = &s.clients[&ServiceName::User];
    refused(user, Method::GET, "/users/pr1%3Fevil", None, "invalid_id", "path parameter id").await;
    refused_with(user, Method::GET, "/no/such/route%0Aevil", None, (404, "no_such_route"), "/no/such").await;
    let driver = r#"{"driver_id": "d-metrics", "name": "D", "phone": "+91 99000 00002", "vehicle": "KA-01"}"#;
    let (status, _) = user.call_raw(Method::POST, "/drivers", Some(driver.as_bytes().to_vec())).await.unwrap();
    assert_eq!(status, 201);
    let (status, body) = user.call_raw(Method::GET, "/metrics", None).await.unwrap();
    assert_eq!(status, 200);
    let text = String::from_utf8(body.to_vec()).unwrap();
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse::<f64>()
            .unwrap()
    };
    let requests = "lastmile_http_requests_total";
    assert_eq!(line(&format!(r#"{requests}{{route="/users/{{id}}",method="GET",status="422"}}"#)), 1.0);
    assert_eq!(line(&format!(r#"{requests}{{route="unmatched",method="GET",status="404"}}"#)), 1.0);
    assert_eq!(line(&format!(r#"{requests}{{route="/drivers",method="POST",status="201"}}"#)), 1.0);
    assert!(!text.contains("evil"), "a raw path reached a label:\n{text}");
    // No broker answers: the registration's event waits in the outbox, and its commit is in
    // the journal.
    assert_eq!(line("lastmile_outbox_depth "), 1.0);
    assert!(line("lastmile_journal_bytes ") > 0.0);
    assert_eq!(line("lastmile_journal_records_since_snapshot "), 1.0);
    assert_eq!(line(r#"lastmile_recovery_total{path="cas_conflict"}"#), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_id_in_a_path_is_refused_with_422_naming_the_parameter() {
    let s = start().await;
    let routes: [(ServiceName, Method, &str); 13] = [
        (ServiceName::User, Method::GET, "/users/{}"),
        (ServiceName::Location, Method::POST, "/drivers/{}/location"),
        (ServiceName::Location, Method::GET, "/drivers/{}/position"),
        (ServiceName::Location, Method::GET, "/stations/{}/drivers"),
        (ServiceName::Trip, Method::PUT, "/drivers/{}/shift"),
        (ServiceName::Trip, Method::GET, "/drivers/{}"),
        (ServiceName::Trip, Method::GET, "/rides/{}"),
        (ServiceName::Trip, Method::POST, "/rides/{}/cancel"),
        (ServiceName::Trip, Method::GET, "/stations/{}/candidates?driver_id=d1"),
        (ServiceName::Trip, Method::GET, "/trips/{}"),
        (ServiceName::Trip, Method::POST, "/trips/{}/complete"),
        (ServiceName::Trip, Method::POST, "/trips/{}/cancel"),
        (ServiceName::Notification, Method::GET, "/users/{}/notifications"),
    ];
    for (service, method, route) in routes {
        for (_, encoded) in HOSTILE.iter().filter(|(raw, _)| !raw.is_empty()) {
            let path = route.replace("{}", encoded);
            refused(&s.clients[&service], method.clone(), &path, Some("{}".into()), "invalid_id", "path parameter id")
                .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_id_in_a_body_or_query_is_refused_with_422_naming_the_field() {
    let s = start().await;
    let (user, trip) = (&s.clients[&ServiceName::User], &s.clients[&ServiceName::Trip]);
    for (raw, encoded) in HOSTILE {
        let id = serde_json::to_string(raw).unwrap();
        let rider = format!(r#"{{"rider_id": {id}, "name": "R", "phone": "+91 99000 00001"}}"#);
        refused(user, Method::POST, "/riders", Some(rider), "invalid_body", "rider_id").await;
        let driver = format!(r#"{{"driver_id": {id}, "name": "D", "phone": "+91 99000 00002", "vehicle": "KA-01"}}"#);
        refused(user, Method::POST, "/drivers", Some(driver), "invalid_body", "driver_id").await;
        for field in ["ride_id", "rider_id", "station_id", "destination"] {
            if field == "destination" && !raw.is_empty() && !raw.contains(['\n', '\0']) {
                continue; // a place name, not an id: spaces and other letters are fine
            }
            let mut ride = serde_json::json!({
                "ride_id": "r-1", "rider_id": "rider-1", "station_id": "ST101", "destination": "ST104"
            });
            ride[field] = serde_json::Value::String(raw.to_string());
            refused(trip, Method::POST, "/rides", Some(ride.to_string()), "invalid_body", field).await;
        }
        let shift = format!(r#"{{"route": ["ST101", {id}], "destination": "ST104", "seats": 2}}"#);
        refused(trip, Method::PUT, "/drivers/d1/shift", Some(shift), "invalid_body", "route").await;
        let proposal =
            format!(r#"{{"proposal_id": "p1", "driver_id": "d1", "station_id": "ST101", "ride_ids": [{id}]}}"#);
        refused(trip, Method::POST, "/matches", Some(proposal), "invalid_body", "ride_ids").await;
        let query = format!("/stations/ST101/candidates?driver_id={encoded}");
        refused(trip, Method::GET, &query, None, "invalid_query", "driver_id").await;
    }
    // A long id too: 65 characters.
    let long = format!(r#"{{"rider_id": "{}", "name": "R", "phone": "+91 99000 00001"}}"#, "r".repeat(65));
    refused(user, Method::POST, "/riders", Some(long), "invalid_body", "rider_id").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_are_bounded_and_every_edge_error_is_json() {
    let s = start().await;
    let trip = &s.clients[&ServiceName::Trip];
    let long_route = serde_json::json!({ "route": vec!["ST101"; 40_000], "destination": "ST104", "seats": 2 });
    refused(trip, Method::PUT, "/drivers/d1/shift", Some(long_route.to_string()), "invalid_route", "1 to 64 stations")
        .await;
    let ride_ids: Vec<String> = (0..1_000).map(|i| format!("r-{i}")).collect();
    let proposal =
        serde_json::json!({ "proposal_id": "p1", "driver_id": "d1", "station_id": "ST101", "ride_ids": ride_ids });
    // The driver has no shift: the bound is checked first, or the 404 answers; either way no 5xx.
    let (status, _) = trip.call_raw(Method::POST, "/matches", Some(proposal.to_string().into_bytes())).await.unwrap();
    assert!(matches!(status, 404 | 422), "{status}");
    for service in ServiceName::ALL {
        let client = &s.clients[&service];
        refused_with(client, Method::DELETE, "/health", None, (405, "method_not_allowed"), "DELETE").await;
        refused_with(client, Method::GET, "/no/such/route", None, (404, "no_such_route"), "/no/such/route").await;
    }
    // Over the 2 MB body limit: 413 with a JSON error, not a 400.
    let big = format!(r#"{{"rider_id": "r1", "name": "{}", "phone": "1"}}"#, "x".repeat(3 << 20));
    refused_with(&s.clients[&ServiceName::User], Method::POST, "/riders", Some(big), (413, "body_too_large"), "length")
        .await;
}

/// A client that sends half a request and then nothing cannot keep a stopping service alive:
/// after the shutdown signal (SIGTERM in a deployment) the service stops within the drain
/// period plus 2 s, and a service that is not stopping cuts such a client after the
/// header-read timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_connection_does_not_hold_up_shutdown() {
    use lastmile_platform::http::{DRAIN_PERIOD, HEADER_READ_TIMEOUT};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = start().await;
    let trip = s.clients[&ServiceName::Trip].clone();
    lastmile_workload::wait::wait_until("trip-service answers", std::time::Duration::from_secs(10), || async {
        trip.call_raw(Method::GET, "/health", None).await.ok()
    })
    .await
    .unwrap();
    let addr = s.urls[&ServiceName::Trip].trim_start_matches("http://").to_string();
    let mut half_open = tokio::net::TcpStream::connect(&addr).await.unwrap();
    half_open.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut answer = [0u8; 12];
    idle.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200", "a kept-alive connection, now idle");

    s.triggers[&ServiceName::Trip].trigger();
    let run = s.runs.remove(&ServiceName::Trip).unwrap();
    let bound = DRAIN_PERIOD + std::time::Duration::from_secs(2);
    let ended = tokio::time::timeout(bound, run).await;
    assert!(ended.is_ok(), "trip-service still running {bound:?} after the shutdown signal");
    ended.unwrap().unwrap().unwrap();
    assert!(HEADER_READ_TIMEOUT <= DRAIN_PERIOD, "a half-open client is cut before the drain ends");
}

mod generated {
    //! Each service's routes driven with generated methods, paths, ids and bodies: never a 5xx
    //! (but `/ready`, which is 503 here by design: no broker was ever reached), and every error
    //! has a JSON body.

    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
    use serde_json::{json, Value};

    /// Cases per service.
    const CASES: u32 = 200;

    /// (method, path template with `{}` for an id, body template or none) per service.
    fn routes(service: ServiceName) -> Vec<(&'static str, &'static str, Option<Value>)> {
        let mut routes = vec![("GET", "/health", None), ("GET", "/ready", None), ("GET", "/{}", None)];
        routes.extend(match service {
            ServiceName::User => vec![
                ("POST", "/drivers", Some(json!({"driver_id": "d", "name": "D", "phone": "+91 1", "vehicle": "v"}))),
                ("POST", "/riders", Some(json!({"rider_id": "r", "name": "R", "phone": "+91 1"}))),
                ("GET", "/users/{}", None),
            ],
            ServiceName::Location => vec![
                ("POST", "/drivers/{}/location", Some(json!({"lat": 12.97, "lng": 77.6}))),
                ("GET", "/drivers/{}/position", None),
                ("GET", "/stations/{}/drivers", None),
            ],
            ServiceName::Trip => vec![
                ("PUT", "/drivers/{}/shift", Some(json!({"route": ["ST101", "ST104"], "destination": "ST104", "seats": 2}))),
                ("GET", "/drivers/{}", None),
                (
                    "POST",
                    "/rides",
                    Some(json!({"ride_id": "x", "rider_id": "r", "station_id": "ST101", "destination": "ST104", "max_wait_s": 60})),
                ),
                ("GET", "/rides/{}", None),
                ("POST", "/rides/{}/cancel", None),
                ("GET", "/stations/{}/candidates?driver_id=d", None),
                ("POST", "/matches", Some(json!({"proposal_id": "p", "driver_id": "d", "station_id": "ST101", "ride_ids": ["x"]}))),
                ("GET", "/trips/{}", None),
                ("POST", "/trips/{}/pickup", None),
                ("POST", "/trips/{}/complete", None),
                ("POST", "/trips/{}/cancel", None),
                ("GET", "/summary", None),
            ],
            ServiceName::Matching => vec![("GET", "/stats", None)],
            ServiceName::Notification => vec![("GET", "/users/{}/notifications", None)],
        });
        routes
    }

    /// A JSON value a hostile client might put anywhere.
    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            "[A-Za-z0-9]{1,8}".prop_map(Value::from),
            "ST1[01][0-9]".prop_map(Value::from),
            ".{0,80}".prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_filter("JSON has no NaN or infinity", |f| f.is_finite()).prop_map(Value::from),
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            proptest::collection::vec(".{0,12}".prop_map(Value::from), 0..5).prop_map(Value::from),
        ]
    }

    /// One request: method, path, body.
    fn request(service: ServiceName) -> impl Strategy<Value = (String, String, Option<Vec<u8>>)> {
        let routes = routes(service);
        let n = routes.len();
        (
            0..n,
            prop_oneof![
                Just(None),
                proptest::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH"]).prop_map(Some)
            ],
            prop_oneof![".{0,40}", "[A-Za-z0-9_.:-]{1,64}", "[A-Za-z0-9]{60,70}"],
            proptest::collection::vec((0..8usize, value()), 0..4),
            prop_oneof![
                3 => Just(0u8),
                1 => Just(1u8),
                1 => Just(2u8),
            ],
            ".{0,60}",
        )
            .prop_map(move |(i, method, id, edits, body_kind, junk)| {
                let (default_method, template, body) = &routes[i];
                let path = template.replace("{}", &lastmile_platform::http::path_segment(&id));
                let body = match (body_kind, body) {
                    (0, Some(body)) => {
                        let mut body = body.clone();
                        let keys: Vec<String> = body.as_object().unwrap().keys().cloned().collect();
                        for (k, v) in edits {
                            body[&keys[k % keys.len()]] = v;
                        }
                        Some(body.to_string().into_bytes())
                    }
                    (1, _) => Some(junk.into_bytes()),
                    _ => None,
                };
                (method.unwrap_or(default_method).to_string(), path, body)
            })
    }

    #[test]
    fn generated_requests_never_get_a_5xx_and_every_error_is_json() {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let services = runtime.block_on(start());
        for service in ServiceName::ALL {
            let client = services.clients[&service].clone();
            runtime
                .block_on(lastmile_workload::wait::wait_until("up", std::time::Duration::from_secs(10), || async {
                    client.call_raw(Method::GET, "/health", None).await.ok()
                }))
                .unwrap();
            let mut runner =
                TestRunner::new(RunnerConfig { cases: CASES, failure_persistence: None, ..RunnerConfig::default() });
            let result = runner.run(&request(service), |(method, path, body)| {
                let method: Method = method.parse().unwrap();
                let answer = runtime.block_on(client.call_raw(method.clone(), &path, body.clone()));
                let (status, bytes) =
                    answer.map_err(|e| TestCaseError::fail(format!("{method} {path}: no answer: {e}")))?;
                let shown = || {
                    format!(
                        "{service} {method} {path} {:?} -> {status} {}",
                        body.as_deref().map(String::from_utf8_lossy),
                        String::from_utf8_lossy(&bytes)
                    )
                };
                if path == "/ready" && method == Method::GET {
                    prop_assert!(status == 200 || status == 503, "{}", shown());
                    return Ok(());
                }
                prop_assert!(status < 500, "{}", shown());
                if status >= 400 {
                    prop_assert!(serde_json::from_slice::<ErrorBody>(&bytes).is_ok(), "not a JSON error: {}", shown());
                }
                Ok(())
            });
            if let Err(e) = result {
                panic!("{service}: {e}");
            }
        }
    }
}
