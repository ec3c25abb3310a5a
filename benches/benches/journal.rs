//! The journal on this machine's disk (real files, `fdatasync`): what one durable commit costs
//! alone, and what group commit makes of many committers at once. Elements/s is commits per
//! second. The data folder is `LASTMILE_BENCH_DIR` (default: the temp dir) — put it on the disk
//! you want measured.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lastmile_platform::storage::Journal;
use std::sync::Arc;

/// A ride-request-sized record (a trip-service commit is about this long).
const RECORD: &[u8] = br#"{"record":"commit","changes":[{"change":"ride_accepted","ride":{"ride_id":"r-000000","rider_id":"rider-000","station_id":"ST101","destination":"ST104","seq":1,"requested_at_ms":1,"status":"waiting"}}],"events":[{"event_id":"0123456789abcdef0123456789abcdef","occurred_at_ms":1,"kind":"ride_requested"}]}"#;

fn scratch(name: &str) -> std::path::PathBuf {
    let base = std::env::var_os("LASTMILE_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    base.join(format!("lastmile-bench-{name}-{}", std::process::id()))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime")
}

/// One committer: write, then wait until durable — one fsync per commit.
fn alone(c: &mut Criterion) {
    let rt = runtime();
    let dir = scratch("alone");
    let (mut journal, _) = rt.block_on(Journal::open(dir.join("log"))).expect("open");
    let mut group = c.benchmark_group("journal_commit");
    group.throughput(Throughput::Elements(1));
    group.bench_function("alone", |b| b.iter(|| rt.block_on(journal.append(RECORD)).expect("append")));
    group.finish();
    drop(journal);
    let _ = std::fs::remove_dir_all(dir);
}

/// `committers` tasks committing at once, as a store's handlers do: write under the lock, wait
/// outside it. Each iteration is one commit per committer.
fn concurrent(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("journal_commit");
    for committers in [8u64, 64, 256] {
        let dir = scratch(&format!("concurrent-{committers}"));
        let (journal, _) = rt.block_on(Journal::open(dir.join("log"))).expect("open");
        let journal = Arc::new(tokio::sync::Mutex::new(journal));
        group.throughput(Throughput::Elements(committers));
        group.bench_with_input(BenchmarkId::new("concurrent", committers), &committers, |b, &committers| {
            b.iter(|| {
                rt.block_on(async {
                    let tasks: Vec<_> = (0..committers)
                        .map(|_| {
                            let journal = journal.clone();
                            tokio::spawn(async move {
                                let (ticket, handle) = {
                                    let mut j = journal.lock().await;
                                    (j.write(RECORD).expect("write"), j.handle())
                                };
                                handle.durable(ticket).await.expect("durable");
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.expect("a committer");
                    }
                })
            })
        });
        let syncs = rt.block_on(journal.lock()).syncs();
        eprintln!("journal_commit/concurrent/{committers}: {syncs} syncs in all");
        drop(journal);
        let _ = std::fs::remove_dir_all(dir);
    }
    group.finish();
}

/// The raw disk: `fdatasync` after a small write, straight on the file — the limit a commit
/// that syncs alone cannot beat.
fn raw_fdatasync(c: &mut Criterion) {
    use std::io::Write;
    let dir = scratch("raw");
    std::fs::create_dir_all(&dir).expect("dir");
    let mut file = std::fs::File::create(dir.join("raw")).expect("file");
    let mut group = c.benchmark_group("disk");
    group.throughput(Throughput::Elements(1));
    group.bench_function("write_fdatasync", |b| {
        b.iter(|| {
            file.write_all(RECORD).expect("write");
            file.sync_data().expect("fdatasync");
        })
    });
    group.finish();
    drop(file);
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(benches, raw_fdatasync, alone, concurrent);
criterion_main!(benches);
