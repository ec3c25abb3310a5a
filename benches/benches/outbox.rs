//! The outbox against the real RabbitMQ (`LASTMILE_TEST_AMQP_URL`, default the local guest
//! broker): events handed to an [`Outbox`] until the broker has confirmed every one, as a
//! durable service publishes them. Elements/s is confirmed events per second. Needs RabbitMQ
//! running (`cargo xtask rabbitmq` starts an installed one); it says so and stops otherwise.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lastmile_platform::broker::core::Topology;
use lastmile_platform::broker::outbox::{Outbox, WINDOW};
use lastmile_platform::broker::{Broker, Message};
use lastmile_platform::coverage::Coverage;
use lastmile_platform::faults::Faults;
use lastmile_platform::shutdown;

/// Events per iteration: a burst, as a busy trip-service hands them over.
const BURST: u64 = 1_000;
const EXCHANGE: &str = "lastmile-bench.events";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime")
}

fn confirmed_bursts(c: &mut Criterion) {
    let rt = runtime();
    let url =
        std::env::var("LASTMILE_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string());
    let broker = Broker::new(url);
    let topology = Topology {
        exchange: EXCHANGE.into(),
        dead_letter_exchange: "lastmile-bench.dead-letter".into(),
        queues: Vec::new(),
    };
    if let Err(e) = rt.block_on(broker.declare(&topology)) {
        panic!("the outbox bench needs RabbitMQ (cargo xtask rabbitmq): {e}");
    }
    let (trigger, stop) = shutdown::channel();
    let (confirmed_tx, mut confirmed) = tokio::sync::mpsc::unbounded_channel();
    let outbox = rt.block_on(async {
        Outbox::spawn(
            usize::MAX,
            broker.clone(),
            EXCHANGE.into(),
            Some(confirmed_tx),
            Faults::default(),
            Coverage::default(),
            stop,
        )
    });
    let mut group = c.benchmark_group("outbox");
    group.throughput(Throughput::Elements(BURST));
    let mut n = 0u64;
    group.bench_function(format!("burst_confirmed/window_{WINDOW}"), |b| {
        b.iter(|| {
            rt.block_on(async {
                for _ in 0..BURST {
                    n += 1;
                    outbox.send(Message {
                        message_id: format!("bench-{n}"),
                        routing_key: "bench.event".into(),
                        body: br#"{"event_id":"0123456789abcdef","kind":"ride_requested"}"#.to_vec(),
                        persistent: true,
                    });
                }
                for _ in 0..BURST {
                    confirmed.recv().await.expect("the publisher runs");
                }
            })
        })
    });
    group.finish();
    trigger.trigger();
    rt.block_on(broker.disconnect());
}

criterion_group!(benches, confirmed_bursts);
criterion_main!(benches);
