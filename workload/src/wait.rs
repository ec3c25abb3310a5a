//! Wait for a condition, never for a fixed time.

use std::future::Future;
use std::time::Duration;

/// How often a condition is polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The condition did not hold in time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {timeout:?} waiting for {what}")]
pub struct WaitTimeout {
    /// What was waited for.
    pub what: String,
    /// How long.
    pub timeout: Duration,
}

/// Poll `check` until it yields `Some`, or fail after `timeout`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T, WaitTimeout>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = lastmile_platform::clock::instant_now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if lastmile_platform::clock::instant_now() >= deadline {
            return Err(WaitTimeout { what: what.to_string(), timeout });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
