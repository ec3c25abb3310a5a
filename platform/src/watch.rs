//! A deterministic single-value channel: a sender sets a value, receivers read it or wait until
//! it satisfies a condition.
//!
//! `tokio::sync::watch` registers each waiter on one of eight internal notifiers picked by
//! tokio's thread RNG, which is seeded per process, not per simulation: under madsim the wake-up
//! order — and so the whole run — would differ between two runs of the same seed in one process.
//! This one keeps its waiters in one `tokio::sync::Notify`, woken in order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

struct Shared<T> {
    value: Mutex<T>,
    notify: Notify,
    /// The sender is gone: the value will not change any more.
    closed: AtomicBool,
}

/// Sets the value. Dropping it wakes every waiter for good.
pub struct Sender<T>(Arc<Shared<T>>);

/// Reads the value or waits for it. Cheap to clone.
pub struct Receiver<T>(Arc<Shared<T>>);

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        Receiver(self.0.clone())
    }
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("watch::Sender")
    }
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("watch::Receiver")
    }
}

/// A channel holding `initial`.
pub fn channel<T>(initial: T) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared { value: Mutex::new(initial), notify: Notify::new(), closed: AtomicBool::new(false) });
    (Sender(shared.clone()), Receiver(shared))
}

impl<T> Sender<T> {
    /// Set the value and wake every waiter.
    pub fn send(&self, value: T) {
        *self.0.value.lock().expect("watch value") = value;
        self.0.notify.notify_waiters();
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }
}

impl<T: Clone> Receiver<T> {
    /// The current value.
    pub fn get(&self) -> T {
        self.0.value.lock().expect("watch value").clone()
    }

    /// Wait until the value satisfies `done` and return it; `None` if the sender went away first.
    pub async fn wait_for(&self, mut done: impl FnMut(&T) -> bool) -> Option<T> {
        loop {
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            // Register before looking, so a send between the look and the wait is not missed.
            notified.as_mut().enable();
            {
                let value = self.0.value.lock().expect("watch value");
                if done(&value) {
                    return Some(value.clone());
                }
            }
            if self.0.closed.load(Ordering::SeqCst) {
                return None;
            }
            notified.await;
        }
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_see_the_value_they_wait_for_and_a_dropped_sender() {
        let (tx, rx) = channel(0);
        let waiter = {
            let rx = rx.clone();
            tokio::spawn(async move { rx.wait_for(|v| *v >= 2).await })
        };
        tx.send(1);
        tx.send(2);
        assert_eq!(waiter.await.unwrap(), Some(2));
        assert_eq!(rx.get(), 2);
        let never = {
            let rx = rx.clone();
            tokio::spawn(async move { rx.wait_for(|v| *v == 9).await })
        };
        drop(tx);
        assert_eq!(never.await.unwrap(), None);
    }
}
