//! Whole-scenario simulation speed: how many simulated seconds of LastMile (five services, the
//! broker, the workload, faults) one wall-clock second buys. Criterion's elements/s is simulated
//! seconds per wall second. Run with `cargo simbench` (the madsim flavour).

#[cfg(madsim)]
mod imp {
    use criterion::{BenchmarkId, Criterion, Throughput};
    use lastmile_harness::RunConfig;
    use lastmile_sim::runs;

    pub fn scenarios(c: &mut Criterion) {
        let mut group = c.benchmark_group("simulated_seconds");
        group.sample_size(10);
        for name in ["demo", "matching-outage", "scale-under-load"] {
            let file = format!("{}/../scenarios/{name}.toml", env!("CARGO_MANIFEST_DIR"));
            let scenario = lastmile_scenarios::load(std::path::Path::new(&file)).expect("shipped scenarios are valid");
            let config = RunConfig { seed: 1, random_faults: true, naive_matching: false, planted_bug: false };
            // A run is deterministic: its simulated length is known before measuring.
            let simulated = runs::run(&scenario, &config).report.end_at_s;
            group.throughput(Throughput::Elements(simulated.round() as u64));
            group.bench_with_input(BenchmarkId::new("scenario", name), &scenario, |b, scenario| {
                b.iter(|| runs::run(scenario, &config))
            });
        }
        group.finish();
    }
}

#[cfg(madsim)]
criterion::criterion_group!(benches, imp::scenarios);
#[cfg(madsim)]
criterion::criterion_main!(benches);

#[cfg(not(madsim))]
fn main() {
    eprintln!("the simulation benchmark runs in the madsim flavour: `cargo simbench`");
}
