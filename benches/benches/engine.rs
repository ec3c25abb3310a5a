//! One driver event — `select` for a driver reaching a station — against 100 .. 100k waiting
//! riders, engine vs the naive linear scan. Throughput is one decision per iteration, so
//! criterion's elements/s is decisions per second.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lastmile_benches::workload::SEATS_MAX;
use lastmile_benches::{driver_offer, waiting_rides, SeedRng};
use lastmile_engine::{naive_select, DriverOffer, MatchingEngine};

const SIZES: [usize; 4] = [100, 1_000, 10_000, 100_000];
/// Drivers cycled through, so the numbers are an average over stations and routes, not one
/// lucky station.
const OFFERS: u64 = 256;
const RIDES_SEED: u64 = 0x5eed_0001;
const OFFERS_SEED: u64 = 0x5eed_0002;

fn driver_event(c: &mut Criterion) {
    let mut rng = SeedRng::new(OFFERS_SEED);
    let offers: Vec<DriverOffer> = (0..OFFERS).map(|n| driver_offer(&mut rng, n, SEATS_MAX)).collect();

    let mut group = c.benchmark_group("driver_event");
    group.throughput(Throughput::Elements(1));
    for size in SIZES {
        let rides = waiting_rides(size, RIDES_SEED);
        let mut engine = MatchingEngine::new();
        for ride in rides.iter().cloned() {
            engine.insert(ride);
        }
        let matched: usize = offers.iter().map(|o| engine.select(o).len()).sum();
        eprintln!(
            "driver_event/{size}: {:.2} riders matched per event (seats {SEATS_MAX})",
            matched as f64 / offers.len() as f64
        );

        group.bench_with_input(BenchmarkId::new("engine", size), &engine, |b, engine| {
            let mut offers = offers.iter().cycle();
            b.iter(|| engine.select(black_box(offers.next().expect("cycle is endless"))));
        });
        group.bench_with_input(BenchmarkId::new("naive", size), &rides, |b, rides| {
            let mut offers = offers.iter().cycle();
            b.iter(|| naive_select(rides, black_box(offers.next().expect("cycle is endless"))));
        });
    }
    group.finish();
}

criterion_group!(benches, driver_event);
criterion_main!(benches);
