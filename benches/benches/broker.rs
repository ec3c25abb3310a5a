//! The simulated broker's queue semantics (`BrokerCore`, the state machine inside the simulated
//! broker node): publish → deliver → ack round trips per second, with one consumer and with five
//! competing consumers (matching-service at 5 replicas). Elements/s is round trips per second.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lastmile_platform::broker::core::{BrokerCore, Message, QueueSpec, Topology};
use std::hint::black_box;

/// Messages published per iteration, then delivered and acked.
const BATCH: u64 = 1_000;

fn core_with(consumers: u64, prefetch: u32) -> BrokerCore {
    let mut core = BrokerCore::new();
    core.declare(&Topology {
        exchange: "events".into(),
        dead_letter_exchange: "dead".into(),
        queues: vec![QueueSpec {
            name: "matching".into(),
            binding_keys: vec!["ride.*".into(), "driver.*".into()],
            delivery_limit: 10,
            expires_ms: None,
        }],
    });
    for c in 0..consumers {
        core.consume(c, "worker", "matching", prefetch).expect("queue exists");
    }
    core
}

fn round_trips(c: &mut Criterion) {
    let mut group = c.benchmark_group("broker_round_trip");
    group.throughput(Throughput::Elements(BATCH));
    let body = br#"{"event_id":"0123456789abcdef","kind":"ride_requested","data":{}}"#.to_vec();
    for consumers in [1u64, 5] {
        group.bench_with_input(BenchmarkId::new("consumers", consumers), &consumers, |b, &consumers| {
            let mut core = core_with(consumers, 8);
            let mut n = 0u64;
            b.iter(|| {
                for _ in 0..BATCH {
                    n += 1;
                    let message = Message {
                        message_id: n.to_string(),
                        routing_key: "ride.requested".into(),
                        body: body.clone(),
                        persistent: true,
                    };
                    black_box(core.publish("events", message).expect("exchange exists"));
                    for out in core.next_deliveries() {
                        black_box(core.ack(out.connection, out.delivery_tag).expect("held by its consumer"));
                    }
                }
            });
        });
    }
    group.finish();
}

criterion_group!(benches, round_trips);
criterion_main!(benches);
