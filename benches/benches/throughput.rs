//! A stream of mixed events — ride requests (insert), driver arrivals (take) and cancellations
//! (remove) — over a backlog of waiting riders, in events per second. Trip completions do not
//! touch the matching engine, so they are not part of the stream.

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use lastmile_benches::{apply, apply_naive, workload, Workload};
use lastmile_engine::MatchingEngine;

const BACKLOG: usize = 10_000;
const EVENTS: usize = 10_000;
const SEED: u64 = 0x5eed_0003;

fn event_stream(c: &mut Criterion) {
    let Workload { backlog, events } = workload(BACKLOG, EVENTS, SEED);
    let mut engine = MatchingEngine::new();
    for ride in backlog.iter().cloned() {
        engine.insert(ride);
    }
    {
        let mut after = engine.clone();
        let matched: usize = events.iter().map(|e| apply(&mut after, e)).sum();
        eprintln!("event_stream: {EVENTS} events, {matched} riders matched, backlog {BACKLOG} -> {}", after.len());
    }

    let mut group = c.benchmark_group("event_stream");
    group.throughput(Throughput::Elements(events.len() as u64));
    // The naive replay takes a sizeable fraction of a second per stream.
    group.sample_size(10);
    group.bench_function(BenchmarkId::new("engine", BACKLOG), |b| {
        b.iter_batched(
            || engine.clone(),
            |mut engine| {
                for event in &events {
                    apply(&mut engine, event);
                }
                engine
            },
            BatchSize::LargeInput,
        );
    });
    group.bench_function(BenchmarkId::new("naive", BACKLOG), |b| {
        b.iter_batched(
            || backlog.clone(),
            |mut waiting| {
                for event in &events {
                    apply_naive(&mut waiting, event);
                }
                waiting
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

criterion_group!(benches, event_stream);
criterion_main!(benches);
