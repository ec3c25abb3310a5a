//! RabbitMQ's reliability semantics through our broker layer: unacked deliveries of a dead
//! consumer come back redelivered and are processed once; poison messages are dead-lettered.

use crate::cluster::Cluster;
use lastmile_platform::broker::{Broker, Message};
use lastmile_services::domain::{Network, RideStatus, Trip, TripStatus};
use lastmile_services::events::{topology, Event, EventBody};
use lastmile_services::trip::{RideRequest, ShiftRequest};
use lastmile_services::ServiceName;
use lastmile_workload::wait::wait_until;
use lastmile_workload::LastMileClient;
use std::time::Duration;

/// Driver `d1` (a shift at ST101 towards `destination`, one seat) and rider `u1`, registered.
async fn driver_and_rider(api: &LastMileClient, destination: &str) {
    api.register_driver("d1", "Driver", "+91 98450 00001", "car").await.unwrap();
    api.register_rider("u1", "Rider", "+91 99000 00001").await.unwrap();
    let shift = ShiftRequest { route: vec!["ST101".into()], destination: destination.into(), seats: 1 };
    api.start_shift("d1", &shift).await.unwrap();
}

/// `u1` asks for a ride at ST101 to `destination`, `d1` arrives there, and the ride must be
/// matched within `within`.
async fn ride_matched(api: &LastMileClient, destination: &str, within: Duration) {
    let request = RideRequest {
        ride_id: "ride-1".into(),
        rider_id: "u1".into(),
        station_id: "ST101".into(),
        destination: destination.into(),
        max_wait_s: None,
    };
    api.request_ride(&request).await.unwrap();
    let station = Network::default_network().get("ST101").unwrap().clone();
    api.arrive_at("d1", &station).await.unwrap();
    wait_until(&format!("ride-1 matched within {within:?}"), within, || async {
        let ride = api.ride("ride-1").await.ok()?;
        matches!(ride.status, RideStatus::Matched { .. }).then_some(())
    })
    .await
    .unwrap();
}

fn match_found(n: usize) -> Event {
    let trip = Trip {
        trip_id: format!("trip-{n}"),
        proposal_id: format!("p-{n}"),
        driver_id: "d1".into(),
        station_id: "ST101".into(),
        ride_ids: vec![format!("ride-{n}")],
        rider_ids: vec![format!("u{n}")],
        status: TripStatus::Scheduled,
        created_at_ms: 0,
        closed_at_ms: None,
    };
    Event { event_id: format!("event-{n}"), occurred_at_ms: 0, body: EventBody::MatchFound(trip) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_consumers_unacked_deliveries_are_redelivered_and_processed_once() {
    // Everything but notification-service: its queue is ours to play with first.
    let mut cluster = Cluster::start(&[], Duration::from_secs(60)).await;
    let names = cluster.config.names.clone();
    let queue = names.queue(ServiceName::Notification.as_str());
    let publisher = cluster.broker();
    publisher.declare(&topology(&names, cluster.config.queue_expires)).await.unwrap();

    // A consumer takes three deliveries and dies without acking them.
    let doomed = cluster.broker();
    let mut consumer = doomed.consume(&queue, 10).await.unwrap();
    for n in 0..3 {
        publisher.publish(&names.events_exchange(), match_found(n).to_message()).await.unwrap();
    }
    for _ in 0..3 {
        let d = tokio::time::timeout(Duration::from_secs(10), consumer.next()).await.unwrap().expect("a delivery");
        assert!(!d.redelivered, "a first delivery is not marked redelivered");
    }
    doomed.disconnect().await;

    // They come back marked redelivered. Requeue them (counted against the delivery limit).
    let watcher = cluster.broker();
    let mut consumer = watcher.consume(&queue, 10).await.unwrap();
    for _ in 0..3 {
        let d = tokio::time::timeout(Duration::from_secs(10), consumer.next()).await.unwrap().expect("a redelivery");
        assert!(d.redelivered, "{} came back without the redelivered flag", d.message.message_id);
        d.nack(true).await.unwrap();
    }
    watcher.disconnect().await;
    // A duplicate publish of an event (at-least-once publishing) must not show twice.
    publisher.publish(&names.events_exchange(), match_found(0).to_message()).await.unwrap();

    let listener = cluster.rebind(ServiceName::Notification).await;
    cluster.start_service(ServiceName::Notification, listener);
    let api = cluster.client();
    for n in 0..3 {
        let user = format!("u{n}");
        let inbox = wait_until("the rider's notification", Duration::from_secs(20), || async {
            let inbox = api.inbox(&user).await.ok()?;
            (!inbox.notifications.is_empty()).then_some(inbox)
        })
        .await
        .unwrap();
        assert_eq!(inbox.notifications.len(), 1, "{user} must see event-{n} once: {:?}", inbox.notifications);
        assert_eq!(inbox.notifications[0].event_id, format!("event-{n}"));
    }
    // The driver is told about each of the three trips exactly once.
    let driver = wait_until("the driver's notifications", Duration::from_secs(20), || async {
        let inbox = api.inbox("d1").await.ok()?;
        (inbox.notifications.len() >= 3).then_some(inbox)
    })
    .await
    .unwrap();
    assert_eq!(driver.notifications.len(), 3);
    publisher.disconnect().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_message_is_dead_lettered_and_the_consumer_keeps_working() {
    let cluster = Cluster::start(
        &[ServiceName::User, ServiceName::Location, ServiceName::Trip, ServiceName::Matching],
        Duration::from_secs(60),
    )
    .await;
    let names = cluster.config.names.clone();
    let publisher = cluster.broker();
    publisher.declare(&topology(&names, cluster.config.queue_expires)).await.unwrap();
    let poison = Message {
        message_id: "poison-1".into(),
        routing_key: "ride.requested".into(),
        body: b"{ this is not an event".to_vec(),
        persistent: true,
    };
    publisher.publish(&names.events_exchange(), poison).await.unwrap();

    let dead_queue = format!("{}.dead", names.queue(ServiceName::Matching.as_str()));
    let inspector = Broker::new(cluster.config.amqp_url.clone());
    let mut dead = inspector.consume(&dead_queue, 1).await.unwrap();
    let d = tokio::time::timeout(Duration::from_secs(20), dead.next())
        .await
        .expect("dead-lettered in time")
        .expect("a dead letter");
    assert_eq!(d.message.message_id, "poison-1");
    d.ack().await.unwrap();

    // matching-service is still alive and consuming: a real ride still gets matched.
    let api = cluster.client();
    wait_until("services ready", Duration::from_secs(30), || async {
        let ready = api.summary().await.is_ok();
        ready.then_some(())
    })
    .await
    .unwrap();
    driver_and_rider(&api, "Whitefield").await;
    ride_matched(&api, "Whitefield", Duration::from_secs(20)).await;
    inspector.disconnect().await;
    publisher.disconnect().await;
    cluster.stop().await;
}

/// A flood of 200 messages no one can process (100 undecodable, 50 with hostile ids, 50 rides at
/// a station nobody knows) delays a valid match by less than 2 s: poison is dead-lettered at
/// once, so is work a peer refused (its 404 will not change on retry), and nothing waits
/// behind a message being retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_poison_and_hostile_messages_does_not_delay_a_valid_match() {
    let cluster = Cluster::start(
        &[ServiceName::User, ServiceName::Location, ServiceName::Trip, ServiceName::Matching],
        Duration::from_secs(60),
    )
    .await;
    let api = cluster.client();
    wait_until("services ready", Duration::from_secs(30), || async { api.summary().await.ok() }).await.unwrap();
    let names = cluster.config.names.clone();
    let publisher = cluster.broker();
    publisher.declare(&topology(&names, cluster.config.queue_expires)).await.unwrap();
    driver_and_rider(&api, "ST104").await;

    for i in 0..200 {
        let (routing_key, body) = match i % 4 {
            0 | 1 => ("ride.requested", format!("{{ not an event {i}").into_bytes()),
            2 => (
                "driver.near_station",
                format!(r#"{{"event_id":"h{i}","occurred_at_ms":1,"kind":"driver_near_station","data":{{"driver_id":"x?{i}","station_id":"ST101"}}}}"#)
                    .into_bytes(),
            ),
            _ => {
                // Decodable, valid ids, but a station no one knows: location-service answers 404,
                // which no retry can change.
                let ride = lastmile_services::domain::Ride {
                    ride_id: format!("lost-{i}"),
                    rider_id: "u1".into(),
                    station_id: "ST999".into(),
                    destination: "ST104".into(),
                    seq: i,
                    requested_at_ms: 1,
                    max_wait_ms: None,
                    status: lastmile_services::domain::RideStatus::Waiting,
                };
                let message = Event::new(EventBody::RideRequested(ride)).to_message();
                ("ride.requested", message.body)
            }
        };
        let message =
            Message { message_id: format!("flood-{i}"), routing_key: routing_key.into(), body, persistent: true };
        publisher.publish(&names.events_exchange(), message).await.unwrap();
    }

    ride_matched(&api, "ST104", Duration::from_secs(2)).await;

    // Every one of the 200 was dead-lettered, each with a warning naming it.
    let dead_queue = format!("{}.dead", names.queue(ServiceName::Matching.as_str()));
    let inspector = Broker::new(cluster.config.amqp_url.clone());
    let mut dead = inspector.consume(&dead_queue, 200).await.unwrap();
    let mut ids = std::collections::BTreeSet::new();
    while ids.len() < 200 {
        let d = tokio::time::timeout(Duration::from_secs(20), dead.next()).await.expect("dead letters").unwrap();
        ids.insert(d.message.message_id.clone());
        d.ack().await.unwrap();
    }
    assert!(ids.iter().all(|id| id.starts_with("flood-")), "{ids:?}");
    inspector.disconnect().await;
    publisher.disconnect().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_of_several_deliveries_never_acks_one_still_being_worked_on() {
    // No service: notification-service's queue is ours.
    let cluster = Cluster::start(&[], Duration::from_secs(60)).await;
    let names = cluster.config.names.clone();
    let queue = names.queue(ServiceName::Notification.as_str());
    let publisher = cluster.broker();
    publisher.declare(&topology(&names, cluster.config.queue_expires)).await.unwrap();
    for n in 0..6 {
        publisher.publish(&names.events_exchange(), match_found(n).to_message()).await.unwrap();
    }

    // Six deliveries; 0, 1, 3 and 5 are done, 2 and 4 are still being worked on. 0 and 1 can
    // go in one `multiple` ack; 3 and 5 must not (a `multiple` ack of 3 would take 2 with it).
    let worker = cluster.broker();
    let mut consumer = worker.consume(&queue, 10).await.unwrap();
    let mut deliveries = Vec::new();
    for _ in 0..6 {
        deliveries
            .push(tokio::time::timeout(Duration::from_secs(10), consumer.next()).await.unwrap().expect("a delivery"));
    }
    let ids: Vec<String> = deliveries.iter().map(|d| d.message.message_id.clone()).collect();
    assert_eq!(ids, (0..6).map(|n| format!("event-{n}")).collect::<Vec<_>>(), "delivered in order");
    let mut still_working = Vec::new();
    let mut done = Vec::new();
    for (n, d) in deliveries.into_iter().enumerate() {
        if n == 2 || n == 4 {
            still_working.push(d);
        } else {
            done.push(d);
        }
    }
    // Given out of order: the ack sorts them.
    done.reverse();
    lastmile_platform::broker::Delivery::ack_all(done).await.unwrap();
    // The worker dies before finishing 2 and 4.
    drop(still_working);
    worker.disconnect().await;

    // Exactly 2 and 4 come back.
    let watcher = cluster.broker();
    let mut consumer = watcher.consume(&queue, 10).await.unwrap();
    let mut back = Vec::new();
    while let Ok(Some(d)) = tokio::time::timeout(Duration::from_secs(3), consumer.next()).await {
        assert!(d.redelivered, "{} came back without the redelivered flag", d.message.message_id);
        back.push(d.message.message_id.clone());
        d.ack().await.unwrap();
    }
    assert_eq!(back, ["event-2", "event-4"], "what was acked stays acked, what was not comes back");
    watcher.disconnect().await;
    publisher.disconnect().await;
    cluster.stop().await;
}
