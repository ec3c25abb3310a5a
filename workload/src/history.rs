//! The history of a run: every client operation with its outcome, on one clock.
//!
//! Timestamps are milliseconds since the history started, read from `tokio::time` (simulated
//! under madsim), so a simulated run's history — and its digest — is a pure function of the
//! scenario and the seed.

use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

/// How an operation ended (or that it started).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpPhase {
    /// The client sent it.
    Invoke,
    /// It succeeded.
    Ok,
    /// It definitely failed (an error answer).
    Fail,
    /// No answer: it may or may not have happened.
    Timeout,
}

/// One entry of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Milliseconds since the history started.
    pub at_ms: u64,
    /// Which client (a rider, a driver, a probe).
    pub client: String,
    /// What it did (`request_ride`, `location`, ...).
    pub action: String,
    /// Invoke or the outcome.
    pub phase: OpPhase,
    /// Arguments on invoke, the result (or the error as a string) on completion.
    pub detail: serde_json::Value,
}

/// An append-only, shareable operation log.
#[derive(Debug)]
pub struct History {
    start: Instant,
    ops: Mutex<Vec<Op>>,
}

impl History {
    /// An empty history starting now.
    pub fn new() -> Arc<History> {
        Arc::new(History { start: lastmile_platform::clock::instant_now(), ops: Mutex::new(Vec::new()) })
    }

    /// Milliseconds since the start.
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Append an entry stamped now.
    pub fn record(&self, client: &str, action: &str, phase: OpPhase, detail: serde_json::Value) {
        let op = Op { at_ms: self.now_ms(), client: client.to_string(), action: action.to_string(), phase, detail };
        self.ops.lock().expect("history").push(op);
    }

    /// A copy of every entry so far.
    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().expect("history").clone()
    }

    /// Entries so far.
    pub fn len(&self) -> usize {
        self.ops.lock().expect("history").len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A stable digest of the whole history (FNV-1a 64 over its JSON lines), in hex.
    pub fn digest(&self) -> String {
        digest_ops(&self.ops())
    }
}

/// The digest of a list of operations.
pub fn digest_ops(ops: &[Op]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for op in ops {
        for byte in serde_json::to_vec(op).expect("ops serialize").into_iter().chain([b'\n']) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_changes_with_any_entry() {
        let a = vec![Op {
            at_ms: 1,
            client: "r1".into(),
            action: "x".into(),
            phase: OpPhase::Ok,
            detail: serde_json::Value::Null,
        }];
        let mut b = a.clone();
        assert_eq!(digest_ops(&a), digest_ops(&b));
        b[0].at_ms = 2;
        assert_ne!(digest_ops(&a), digest_ops(&b));
    }
}
