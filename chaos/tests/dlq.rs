//! `lastmile dlq` and the dead-letter bound against a real RabbitMQ (`LASTMILE_TEST_AMQP_URL`,
//! default `amqp://guest:guest@127.0.0.1:5672/%2f`; fails, with directions, when none answers).
//! Each test declares LastMile's topology under a prefix of its own and deletes it at the end.

use lastmile_chaos::dlq;
use lastmile_platform::broker::{dead_letter_queue, Broker, Message, Names, Topology};
use lastmile_workload::wait::wait_until;
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

fn amqp_url() -> String {
    std::env::var("LASTMILE_TEST_AMQP_URL").unwrap_or_else(|_| lastmile_services::config::DEFAULT_AMQP_URL.to_string())
}

/// A broker client for a fresh topology under its own prefix, dead-letter queues bounded at
/// `dead_letter_max_len`.
async fn fresh(dead_letter_max_len: u32) -> (Broker, Names, Topology) {
    let url = amqp_url();
    let broker = match dlq::connect(&url).await {
        Ok(b) => b,
        Err(e) => panic!(
            "this test needs RabbitMQ ({e:#}): start one with `rabbitmq-server -detached` or set \
             LASTMILE_TEST_AMQP_URL"
        ),
    };
    let names = Names::new(format!("test-dlq-{}", &lastmile_platform::clock::new_id()[..12]));
    // Queues expire when unused too, in case a failing test never reaches its cleanup.
    let topology = lastmile_services::events::topology(&names, Some(Duration::from_secs(120)));
    broker.declare_with_dead_letter_max_len(&topology, dead_letter_max_len).await.unwrap();
    (broker, names, topology)
}

fn message(id: &str, body: &[u8]) -> Message {
    Message { message_id: id.into(), routing_key: "ride.requested".into(), body: body.to_vec(), persistent: true }
}

/// Publish the messages (they reach matching-service's queue) and reject each without requeue,
/// as a consumer does with poison; wait until `expect_dead` sit in the dead-letter queue.
async fn dead_letter(broker: &Broker, names: &Names, messages: &[Message], expect_dead: u32) {
    let queue = names.queue("matching-service");
    for m in messages {
        broker.publish(&names.events_exchange(), m.clone()).await.unwrap();
    }
    let mut consumer = broker.consume(&queue, 1).await.unwrap();
    for _ in messages {
        let d = tokio::time::timeout(WAIT, consumer.next()).await.expect("delivered in time").expect("a delivery");
        d.nack(false).await.unwrap();
    }
    consumer.cancel().await;
    let dead = dead_letter_queue(&queue);
    wait_until(&format!("{expect_dead} dead letters"), WAIT, || async {
        (broker.queue_len(&dead).await.unwrap() == Some(expect_dead)).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_peeked_replayed_and_purged() {
    let (broker, names, topology) = fresh(100).await;
    let queue = names.queue("matching-service");
    let dead = dead_letter_queue(&queue);
    let hostile = "\u{1b}[2J\u{1b}]0;owned\u{7}\r\n\u{202e}".as_bytes();
    let sent = [message("m0", b"{ not an event 0"), message("m1", hostile), message("m2", b"{ not an event 2")];
    dead_letter(&broker, &names, &sent, 3).await;

    // list: the count per work queue, and a peek that leaves everything in place.
    let listing = dlq::list(&broker, &names.prefix, 2).await.unwrap();
    assert_eq!(listing.queues.len(), 4, "one entry per LastMile work queue");
    let entry = listing.queues.iter().find(|q| q.queue == queue).expect("matching-service's queue is listed");
    assert_eq!(entry.count, Some(3));
    let peeked: Vec<&str> = entry.peeked.iter().map(|p| p.message.message_id.as_str()).collect();
    assert_eq!(peeked, ["m0", "m1"], "the first two, oldest first");
    assert_eq!(entry.peeked[1].message.body, hostile);
    assert_eq!(entry.peeked[0].message.routing_key, "ride.requested", "the key it was published with");
    let death = entry.peeked[0].death.as_ref().expect("RabbitMQ's x-death header");
    assert_eq!((death.reason.as_str(), death.count, death.queue.as_str()), ("rejected", 1, queue.as_str()));
    assert!(listing.queues.iter().filter(|q| q.queue != queue).all(|q| q.count == Some(0)), "{listing:?}");
    assert_eq!(broker.queue_len(&dead).await.unwrap(), Some(3), "peeking took nothing");
    let shown = listing.to_string();
    assert!(
        !shown.chars().any(|c| c.is_control() && c != '\n'),
        "raw control characters reach the terminal: {shown:?}"
    );
    assert!(shown.contains(r"\u{1b}[2J") && shown.contains(r#""rejected" x1"#), "{shown}");

    // The binary: the URL from a file, the password never printed, the same listing.
    let url_file = std::env::temp_dir().join(format!("lastmile-dlq-test-{}.url", names.prefix));
    std::fs::write(&url_file, amqp_url()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lastmile"))
        .args(["dlq", "list", "--prefix", &names.prefix, "--peek", "3", "--amqp-url-file"])
        .arg(&url_file)
        .env_remove("LASTMILE_AMQP_URL")
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&url_file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("{dead} ")) && stdout.contains("#3 id \"m2\""), "{stdout}");
    assert!(!stdout.contains('\u{1b}'), "{stdout:?}");
    if let Some((_, password)) = amqp_url().split_once("://").and_then(|(_, r)| r.split_once('@')?.0.split_once(':')) {
        assert!(!stdout.contains(&format!(":{password}@")), "the password was printed: {stdout}");
        assert!(stdout.contains(":***@"), "{stdout}");
    }
    assert_eq!(broker.queue_len(&dead).await.unwrap(), Some(3), "listing took nothing");

    // replay --max 2: exactly the two oldest go back into the work queue, same ids and bodies.
    assert_eq!(dlq::replay(&broker, &queue, Some(2)).await.unwrap(), 2);
    assert_eq!(broker.queue_len(&dead).await.unwrap(), Some(1));
    let mut consumer = broker.consume(&queue, 10).await.unwrap();
    for expected in &sent[..2] {
        let d = tokio::time::timeout(WAIT, consumer.next()).await.expect("replayed in time").expect("a delivery");
        assert_eq!(d.message.message_id, expected.message_id);
        assert_eq!(d.message.body, expected.body);
        assert!(d.message.persistent, "replayed persistent");
        d.ack().await.unwrap();
    }
    consumer.cancel().await;
    assert_eq!(broker.queue_len(&queue).await.unwrap(), Some(0), "nothing more was replayed");

    // purge: the last one goes.
    assert_eq!(dlq::purge(&broker, &queue).await.unwrap(), 1);
    assert_eq!(broker.queue_len(&dead).await.unwrap(), Some(0));
    assert_eq!(dlq::replay(&broker, &queue, None).await.unwrap(), 0, "nothing left to replay");

    broker.delete(&topology).await.unwrap();
    assert_eq!(broker.queue_len(&dead).await.unwrap(), None, "cleaned up");
    broker.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_dead_letter_queue_drops_its_oldest_message() {
    const BOUND: u32 = 3;
    let (broker, names, topology) = fresh(BOUND).await;
    let queue = names.queue("matching-service");
    let dead = dead_letter_queue(&queue);
    let sent: Vec<Message> = (0..5).map(|i| message(&format!("b{i}"), format!("poison {i}").as_bytes())).collect();
    dead_letter(&broker, &names, &sent, BOUND).await;
    // The last one may still be on its way while the count is already at the bound.
    let kept = wait_until("the newest dead letter", WAIT, || async {
        let ids: Vec<String> =
            broker.peek(&dead, 10).await.unwrap().into_iter().map(|p| p.message.message_id).collect();
        (ids.last().map(String::as_str) == Some("b4")).then_some(ids)
    })
    .await
    .unwrap();
    assert_eq!(kept, ["b2", "b3", "b4"], "the two oldest were dropped");
    broker.delete(&topology).await.unwrap();
    broker.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_or_missing_queue_is_a_clear_error() {
    let (broker, names, topology) = fresh(10).await;
    let e = dlq::replay(&broker, "x\u{1b}[31m", None).await.unwrap_err();
    assert!(format!("{e:#}").contains("not a queue name"), "{e:#}");
    let missing = format!("{}.nobody", names.prefix);
    let e = dlq::replay(&broker, &missing, None).await.unwrap_err();
    assert!(format!("{e:#}").contains(&format!("no queue {missing}.dead")), "{e:#}");
    let e = dlq::purge(&broker, &missing).await.unwrap_err();
    assert!(format!("{e:#}").contains("no queue"), "{e:#}");
    let e = dlq::purge(&broker, &dead_letter_queue(&names.queue("matching-service"))).await.unwrap_err();
    assert!(format!("{e:#}").contains("not its dead-letter queue"), "{e:#}");
    broker.delete(&topology).await.unwrap();

    // The binary: a clear message and a failing status, no panic.
    let out = Command::new(env!("CARGO_BIN_EXE_lastmile"))
        .args(["dlq", "purge", &missing, "--amqp-url", &amqp_url()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no queue") && !stderr.contains("panicked"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_lastmile")).args(["dlq", "replay", "a/b"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not a queue name"), "{stderr}");
    broker.disconnect().await;
}

/// RabbitMQ refuses to redeclare a queue with other arguments: a deployment whose dead-letter
/// queues predate the bound (or had another one) is told what to do, not just refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_queue_with_another_bound_is_refused_with_directions() {
    let (broker, _names, topology) = fresh(10).await;
    let e = broker.declare_with_dead_letter_max_len(&topology, 20).await.unwrap_err().to_string();
    assert!(e.contains("PRECONDITION") && e.contains("docs/hardening.md"), "{e}");
    broker.delete(&topology).await.unwrap();
    broker.disconnect().await;
}
