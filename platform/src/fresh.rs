//! Reads that concurrent callers share, each caller still getting an answer read after it asked.
//!
//! matching-service asks location-service which drivers are near a station for every ride
//! requested there. When a train empties, hundreds of riders ask at one station within seconds;
//! one read per ride would be one HTTP round trip each, all with the same answer. Sharing a read
//! that was already under way would be wrong: it may have been answered before the ride's
//! driver arrived, and the ride would wait for the next driver (the driver's own arrival event
//! looks for riders before the ride was committed). So a caller only takes the answer of a read
//! that *started after it asked*: one read at a time per key, callers queued in order, and each
//! caller either takes the answer of a read that began after it arrived or starts one itself.
//! Under load that is one read per round trip instead of one per caller.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

/// Shared fresh reads of values of type `T`, by key (see the module's documentation).
pub struct FreshReads<T> {
    keys: Mutex<BTreeMap<String, Arc<Key<T>>>>,
}

struct Key<T> {
    /// Held while a read runs; keeps the latest answer and the number of the read that gave it.
    turn: tokio::sync::Mutex<Option<(u64, T)>>,
    /// Reads started for this key, numbered from 1 (counted when a read begins, under `turn`).
    started: std::sync::atomic::AtomicU64,
}

impl<T> Default for FreshReads<T> {
    fn default() -> Self {
        FreshReads { keys: Mutex::default() }
    }
}

impl<T: Clone> FreshReads<T> {
    /// The answer of a read of `key` that started after this call did: the one another caller
    /// started meanwhile, or `read` run now. A failed read is an answer too (it failed after
    /// this caller asked). Keys nobody is reading are forgotten, so keys may be anything.
    pub async fn read<F, Fut>(&self, key: &str, read: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        use std::sync::atomic::Ordering::SeqCst;
        let slot = {
            let mut keys = self.keys.lock().expect("fresh reads");
            keys.entry(key.to_string())
                .or_insert_with(|| Arc::new(Key { turn: tokio::sync::Mutex::new(None), started: 0.into() }))
                .clone()
        };
        // Any read numbered above this one begins after this point.
        let asked = slot.started.load(SeqCst);
        let answer = {
            let mut latest = slot.turn.lock().await;
            match &*latest {
                Some((n, answer)) if *n > asked => answer.clone(),
                _ => {
                    let n = slot.started.fetch_add(1, SeqCst) + 1;
                    let answer = read().await;
                    *latest = Some((n, answer.clone()));
                    answer
                }
            }
        };
        let mut keys = self.keys.lock().expect("fresh reads");
        // The map's and ours: nobody else is reading or waiting.
        if Arc::strong_count(&slot) == 2 {
            keys.remove(key);
        }
        answer
    }

    /// Keys with a read under way or callers waiting for one.
    pub fn keys_in_use(&self) -> usize {
        self.keys.lock().expect("fresh reads").len()
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::FreshReads;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use tokio::sync::oneshot;

    #[tokio::test]
    async fn callers_share_only_a_read_that_started_after_they_asked() {
        let reads = Arc::new(FreshReads::<u64>::default());
        // The value the source holds; every read returns it and counts itself.
        let value = Arc::new(AtomicU64::new(1));
        let count = Arc::new(AtomicU64::new(0));
        let (release_first, first_released) = oneshot::channel::<()>();

        // A reads and is held in the middle of its read (answer 1).
        let a = {
            let (reads, value, count) = (reads.clone(), value.clone(), count.clone());
            tokio::spawn(async move {
                reads
                    .read("ST101", || async move {
                        count.fetch_add(1, Ordering::SeqCst);
                        let v = value.load(Ordering::SeqCst);
                        let _ = first_released.await;
                        v
                    })
                    .await
            })
        };
        tokio::task::yield_now().await;
        while count.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // The source changes while A's read is under way; B and C ask now.
        value.store(2, Ordering::SeqCst);
        let spawn_reader = |reads: Arc<FreshReads<u64>>, value: Arc<AtomicU64>, count: Arc<AtomicU64>| {
            tokio::spawn(async move {
                reads
                    .read("ST101", || async move {
                        count.fetch_add(1, Ordering::SeqCst);
                        value.load(Ordering::SeqCst)
                    })
                    .await
            })
        };
        let b = spawn_reader(reads.clone(), value.clone(), count.clone());
        let c = spawn_reader(reads.clone(), value.clone(), count.clone());
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(count.load(Ordering::SeqCst), 1, "B and C wait for A's read to end");
        release_first.send(()).unwrap();
        assert_eq!(a.await.unwrap(), 1);
        // Neither B nor C may take A's answer (it began before they asked): one new read, shared.
        assert_eq!(b.await.unwrap(), 2);
        assert_eq!(c.await.unwrap(), 2);
        assert_eq!(count.load(Ordering::SeqCst), 2, "B and C shared one read");
        assert_eq!(reads.keys_in_use(), 0, "a key nobody reads is forgotten");

        // Alone, a caller reads for itself (the kept answer is gone with the key).
        value.store(3, Ordering::SeqCst);
        assert_eq!(spawn_reader(reads.clone(), value.clone(), count.clone()).await.unwrap(), 3);
        assert_eq!(count.load(Ordering::SeqCst), 3);
    }
}
