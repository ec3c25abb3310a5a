//! Readiness means "can take work": through a broker outage a service stays ready and keeps
//! accepting work into its outbox; once the outbox is full it answers 503 with `Retry-After` and
//! reports not ready; when the broker is back everything accepted is published, nothing lost.

use crate::cluster::Cluster;
use lastmile_platform::broker::{Broker, QueueSpec, Topology};
use lastmile_platform::http::{CallPolicy, HttpClient, Method};
use lastmile_services::events::{Event, EventBody};
use lastmile_services::ServiceName;
use lastmile_workload::wait::wait_until;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A TCP relay between the services and RabbitMQ that the test can cut and restore: a broker
/// outage without touching the shared RabbitMQ.
struct Relay {
    port: u16,
    upstream: String,
    task: Option<JoinHandle<()>>,
}

impl Relay {
    async fn start(upstream: &str) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut relay = Relay { port, upstream: upstream.to_string(), task: None };
        relay.serve(listener);
        relay
    }

    fn serve(&mut self, listener: TcpListener) {
        let upstream = self.upstream.clone();
        self.task = Some(tokio::spawn(async move {
            let mut links = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                links.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        }));
    }

    /// The outage: every open link dropped, new connections refused.
    fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort(); // drops the listener and, with the JoinSet, every link
        }
    }

    async fn restore(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        self.serve(listener);
    }
}

async fn register(user: &HttpClient, id: &str) -> (u16, String) {
    let body = format!(r#"{{"rider_id": "{id}", "name": "R", "phone": "+91 99000 00001"}}"#);
    let (status, bytes) = user.call_raw(Method::POST, "/riders", Some(body.into_bytes())).await.unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// The status and the `Retry-After` header of a registration, read off a raw connection.
async fn retry_after(addr: &str, id: &str) -> (u16, Option<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = format!(r#"{{"rider_id": "{id}", "name": "R", "phone": "+91 99000 00001"}}"#);
    let mut s = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /riders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    let status = answer.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let header =
        answer.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("retry-after:").map(|v| v.trim().to_string()));
    (status, header)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_keeps_a_service_ready_until_its_outbox_is_full_and_loses_nothing() {
    const BOUND: usize = 5;
    let broker_url = crate::cluster::require_rabbitmq().await;
    let broker_addr = lastmile_platform::broker::broker_address(&broker_url);
    let mut relay = Relay::start(&broker_addr).await;
    let relayed = broker_url.replace(&broker_addr, &format!("127.0.0.1:{}", relay.port));
    let cluster = Cluster::start_with(&[ServiceName::User], Duration::from_secs(60), |c| {
        c.amqp_url = relayed;
        c.outbox_capacity = BOUND;
    })
    .await;
    let names = cluster.config.names.clone();
    let url = cluster.urls[&ServiceName::User].clone();
    let user = HttpClient::new("user", &url, CallPolicy { attempts: 1, ..CallPolicy::default() });
    let ready = || async { matches!(user.call_raw(Method::GET, "/ready", None).await, Ok((200, _))) };
    wait_until("user-service ready", Duration::from_secs(30), || async { ready().await.then_some(()) }).await.unwrap();
    // A witness queue on the real broker, bound to what user-service publishes.
    let witness_name = format!("{}.witness", names.queue("test"));
    let witness = Broker::new(broker_url.clone());
    let topology = Topology {
        exchange: names.events_exchange(),
        dead_letter_exchange: names.dead_letter_exchange(),
        queues: vec![QueueSpec {
            name: witness_name.clone(),
            binding_keys: vec!["user.registered".into()],
            delivery_limit: 10,
            expires_ms: Some(120_000),
        }],
    };
    witness.declare(&topology).await.unwrap();

    relay.cut();
    let mut accepted = BTreeSet::new();
    for i in 0..BOUND {
        let id = format!("u{i}");
        let (status, body) = register(&user, &id).await;
        assert_eq!(status, 201, "accepted into the outbox during the outage: {body}");
        accepted.insert(id);
        if i + 1 < BOUND {
            assert!(ready().await, "still ready with {} of {BOUND} events waiting", i + 1);
        }
    }
    let addr = url.trim_start_matches("http://");
    let (status, retry) = retry_after(addr, "u-late").await;
    assert_eq!((status, retry.as_deref()), (503, Some("5")), "a full outbox: 503 with Retry-After");
    assert!(!ready().await, "not ready while the outbox is full");

    relay.restore().await;
    wait_until("the outbox drained", Duration::from_secs(60), || async { ready().await.then_some(()) }).await.unwrap();
    let (status, body) = register(&user, "u-late").await;
    assert_eq!(status, 201, "taking work again: {body}");
    accepted.insert("u-late".into());

    let mut seen = BTreeSet::new();
    let mut consumer = witness.consume(&witness_name, 16).await.unwrap();
    while seen.len() < accepted.len() {
        let d = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .unwrap_or_else(|_| panic!("published so far: {seen:?} of {accepted:?}"))
            .unwrap();
        if let Ok(Event { body: EventBody::UserRegistered(u), .. }) = Event::from_message(&d.message) {
            seen.insert(u.user_id);
        }
        d.ack().await.unwrap();
    }
    assert_eq!(seen, accepted, "every accepted registration was published");
    witness.disconnect().await;
    cluster.stop().await;
}
