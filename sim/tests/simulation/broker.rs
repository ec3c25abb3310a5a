//! The simulated broker's RabbitMQ semantics across node failures.

use lastmile_platform::broker::{Broker, Message};
use lastmile_services::events::topology;
use lastmile_services::ServiceName;
use lastmile_sim::cluster::{ClusterConfig, SimCluster};
use madsim::net::NetSim;
use madsim::runtime::{Handle, Runtime};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

fn no_services() -> ClusterConfig {
    ClusterConfig { replicas: ServiceName::ALL.into_iter().map(|s| (s, 0)).collect(), ..ClusterConfig::default() }
}

fn message(id: &str, persistent: bool) -> Message {
    Message { message_id: id.into(), routing_key: "ride.requested".into(), body: b"{}".to_vec(), persistent }
}

/// Drain `queue`: wait up to ten seconds for the first message (a broker notices a silent
/// consumer only after its heartbeat timeout), then until it stays quiet for two seconds.
async fn drain(broker: &Broker, queue: &str) -> Vec<(String, bool)> {
    let mut consumer = broker.consume(queue, 50).await.expect("consume");
    let mut got = Vec::new();
    let mut wait = Duration::from_secs(10);
    while let Ok(Some(d)) = tokio::time::timeout(wait, consumer.next()).await {
        wait = Duration::from_secs(2);
        got.push((d.message.message_id.clone(), d.redelivered));
        d.ack().await.expect("ack");
    }
    got
}

#[test]
fn persistent_messages_survive_a_broker_restart_and_transient_ones_do_not() {
    let seed = 3;
    println!("seed {seed}");
    Runtime::with_seed_and_config(seed, madsim::Config::default()).block_on(async {
        let cluster = SimCluster::start(&no_services());
        let config = cluster.config().clone();
        let queue = config.names.queue(ServiceName::Matching.as_str());
        let exchange = config.names.events_exchange();
        let (url, q, ex) = (config.amqp_url.clone(), queue.clone(), exchange.clone());
        let names = config.names.clone();
        cluster
            .client_node()
            .spawn(async move {
                let broker = Broker::new(url);
                broker.declare(&topology(&names, None)).await.expect("declare");
                for (id, persistent) in [("p1", true), ("t1", false), ("p2", true), ("t2", false), ("p3", true)] {
                    broker.publish(&ex, message(id, persistent)).await.expect("confirmed");
                }
            })
            .await
            .unwrap();
        assert_eq!(cluster.broker_probe().stats().published, 5);
        cluster.kill_broker();
        tokio::time::sleep(Duration::from_secs(1)).await;
        cluster.restart_broker();
        let url = config.amqp_url.clone();
        let got = cluster
            .client_node()
            .spawn(async move {
                let broker = Broker::new(url);
                // The restarted broker needs a moment to bind; the client retries.
                let mut attempts = 0;
                while broker.connect().await.is_err() {
                    attempts += 1;
                    assert!(attempts < 50, "the broker did not come back");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                drain(&broker, &q).await
            })
            .await
            .unwrap();
        let ids: Vec<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(
            ids,
            ["p1", "p2", "p3"],
            "seed {seed}: persistent messages survive in order, transient ones are gone"
        );
        assert!(got.iter().all(|(_, redelivered)| *redelivered), "recovered messages are flagged redelivered");
    });
}

/// A consumer holding unacked deliveries is lost (`kill` or a network partition); the broker
/// requeues what it held, and the next consumer gets them flagged redelivered.
fn lost_consumer_work_is_requeued(seed: u64, partition: bool) {
    println!("seed {seed} partition {partition}");
    Runtime::with_seed_and_config(seed, madsim::Config::default()).block_on(async move {
        let cluster = SimCluster::start(&no_services());
        let config = cluster.config().clone();
        let queue = config.names.queue(ServiceName::Matching.as_str());
        let (url, q) = (config.amqp_url.clone(), queue.clone());
        let (held_tx, mut held_rx) = tokio::sync::mpsc::unbounded_channel();
        let consumer_node =
            Handle::current().create_node().name("doomed-consumer").ip(IpAddr::V4(Ipv4Addr::new(10, 0, 9, 2))).build();
        let names = config.names.clone();
        let exchange = config.names.events_exchange();
        cluster
            .client_node()
            .spawn({
                let url = url.clone();
                async move {
                    let broker = Broker::new(url);
                    broker.declare(&topology(&names, None)).await.expect("declare");
                    for i in 0..4 {
                        broker.publish(&exchange, message(&format!("m{i}"), true)).await.expect("confirmed");
                    }
                }
            })
            .await
            .unwrap();
        consumer_node.spawn(async move {
            let broker = Broker::new(url);
            let mut consumer = broker.consume(&q, 10).await.expect("consume");
            while let Some(d) = consumer.next().await {
                // Hold every delivery, never ack.
                let _ = held_tx.send(d.message.message_id.clone());
                std::mem::forget(d);
            }
        });
        for _ in 0..4 {
            tokio::time::timeout(Duration::from_secs(10), held_rx.recv()).await.expect("delivered").expect("delivered");
        }
        assert_eq!(cluster.broker_probe().depth(&queue), (0, 4), "every service queue is watched: four held unacked");
        if partition {
            NetSim::current().clog_node(consumer_node.id());
        } else {
            Handle::current().kill(consumer_node.id());
        }
        let url = config.amqp_url.clone();
        let got = cluster.client_node().spawn(async move { drain(&Broker::new(url), &queue).await }).await.unwrap();
        let ids: Vec<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["m0", "m1", "m2", "m3"], "seed {seed}: every held delivery comes back once");
        assert!(
            got.iter().all(|(_, redelivered)| *redelivered),
            "seed {seed}: requeued deliveries are flagged redelivered"
        );
    });
}

#[test]
fn a_killed_consumers_unacked_deliveries_are_requeued_as_redelivered() {
    lost_consumer_work_is_requeued(11, false);
}

#[test]
fn a_partitioned_consumer_misses_heartbeats_and_its_deliveries_are_requeued() {
    lost_consumer_work_is_requeued(12, true);
}
