//! A RabbitMQ node of the run's own (`lastmile_chaos::broker`): killed hard and started again it
//! keeps every confirmed persistent message, and several run beside the shared RabbitMQ
//! (`LASTMILE_TEST_AMQP_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f`) without
//! disturbing it. Needs RabbitMQ installed; a node takes ~10 s to start here.

use lastmile_chaos::broker::BrokerNode;
use lastmile_platform::broker::{Broker, Message, Names, Topology};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// Messages published before the kill.
const MESSAGES: usize = 200;

/// A fresh directory for one node, removed by the test once the node is dropped.
fn node_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lastmile-{name}-{}", lastmile_platform::clock::new_id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// LastMile's topology (durable quorum queues) under a prefix of the test's own, and the queue
/// of matching-service, which `ride.requested` events reach.
fn topology() -> (Names, Topology, String) {
    let names = Names::new(format!("test-node-{}", &lastmile_platform::clock::new_id()[..8]));
    let topology = lastmile_services::events::topology(&names, None);
    let queue = names.queue("matching-service");
    (names, topology, queue)
}

fn ride_requested(i: usize) -> Message {
    Message {
        message_id: format!("ride-{i:04}"),
        routing_key: "ride.requested".into(),
        body: format!("{{\"ride\":{i}}}").into_bytes(),
        persistent: true,
    }
}

async fn shared_broker_answers() -> Result<(), String> {
    let url = std::env::var("LASTMILE_TEST_AMQP_URL")
        .unwrap_or_else(|_| lastmile_services::config::DEFAULT_AMQP_URL.to_string());
    let shared = Broker::new(url);
    let answered = shared.connect().await.map_err(|e| e.to_string());
    shared.disconnect().await;
    answered
}

async fn accepts_connections(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_kill_keeps_every_confirmed_persistent_message_exactly_once() {
    let dir = node_dir("kill");
    let mut node = BrokerNode::start(&dir).await.unwrap();
    println!("{node:?}");
    let (names, topology, queue) = topology();
    let publisher = Broker::new(node.url());
    publisher.declare(&topology).await.unwrap();
    let mut published = Vec::new();
    for i in 0..MESSAGES {
        let message = ride_requested(i);
        // Returns once the broker confirmed it: from here on the message must survive.
        publisher.publish(&names.events_exchange(), message.clone()).await.unwrap();
        published.push(message);
    }
    assert_eq!(publisher.queue_len(&queue).await.unwrap(), Some(MESSAGES as u32), "nobody consumes: all buffered");
    publisher.disconnect().await;

    node.kill().unwrap();
    assert!(!node.is_running());
    assert!(!accepts_connections(node.amqp_port()).await, "a killed node accepts no connections");

    node.start_again().await.unwrap();
    let consumer_side = Broker::new(node.url());
    let mut consumer = consumer_side.consume(&queue, 50).await.unwrap();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    while seen.values().sum::<usize>() < MESSAGES {
        let delivery = tokio::time::timeout(WAIT, consumer.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {MESSAGES} messages came back", seen.len()))
            .expect("a delivery");
        let original = published.iter().find(|m| m.message_id == delivery.message.message_id);
        assert_eq!(Some(&delivery.message), original, "a message came back different or from nowhere");
        *seen.entry(delivery.message.message_id.clone()).or_default() += 1;
        delivery.ack().await.unwrap();
    }
    consumer.cancel().await;
    let twice: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(seen.len(), MESSAGES, "every confirmed message came back");
    assert_eq!(consumer_side.queue_len(&queue).await.unwrap(), Some(0), "nothing left over after the acks");
    consumer_side.disconnect().await;

    drop(node);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_run_beside_the_shared_broker_without_disturbing_it() {
    if let Err(e) = shared_broker_answers().await {
        panic!(
            "this test checks the shared RabbitMQ is left alone, so it needs one ({e}): start one with \
             `rabbitmq-server -detached` or set LASTMILE_TEST_AMQP_URL"
        );
    }
    let (dir_a, dir_b) = (node_dir("a"), node_dir("b"));
    let (a, b) = tokio::join!(BrokerNode::start(&dir_a), BrokerNode::start(&dir_b));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.node_name(), b.node_name());
    assert_ne!(a.amqp_port(), b.amqp_port());
    assert!(!format!("{a:?}").contains("guest:guest"), "Debug shows no password: {a:?}");

    // The same topology on both: each node holds only what was published to it.
    let (names, topology, queue) = topology();
    let (client_a, client_b) = (Broker::new(a.url()), Broker::new(b.url()));
    for (client, count) in [(&client_a, 1), (&client_b, 2)] {
        client.declare(&topology).await.unwrap();
        for i in 0..count {
            client.publish(&names.events_exchange(), ride_requested(i)).await.unwrap();
        }
    }
    assert_eq!(client_a.queue_len(&queue).await.unwrap(), Some(1));
    assert_eq!(client_b.queue_len(&queue).await.unwrap(), Some(2));
    assert_eq!(shared_broker_answers().await, Ok(()), "the shared broker answers beside two nodes");

    // Restarting b's application (rabbitmqctl stop_app / start_app) leaves a and the shared one be.
    client_b.disconnect().await;
    b.restart_app().await.unwrap();
    assert_eq!(client_b.queue_len(&queue).await.unwrap(), Some(2), "durable messages survive stop_app/start_app");
    assert_eq!(client_a.queue_len(&queue).await.unwrap(), Some(1), "a's connection outlived b's restart");
    client_a.disconnect().await;
    client_b.disconnect().await;

    let ports = [a.amqp_port(), b.amqp_port()];
    drop((a, b));
    for port in ports {
        assert!(!accepts_connections(port).await, "a dropped node is stopped (port {port})");
    }
    assert_eq!(shared_broker_answers().await, Ok(()), "the shared broker still answers");
    for dir in [dir_a, dir_b] {
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
