//! Time and randomness. Under madsim both are simulated and derived from the run's seed, so
//! service code that uses only this module (and `tokio::time`) is deterministic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch: real time, or simulated time inside a simulation.
pub fn now_ms() -> u64 {
    let now = system_now();
    now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis() as u64
}

#[cfg(madsim)]
fn system_now() -> SystemTime {
    madsim::time::TimeHandle::current().now_time()
}

#[cfg(not(madsim))]
#[allow(clippy::disallowed_methods)] // the one place the real world reads the wall clock
fn system_now() -> SystemTime {
    SystemTime::now()
}

/// A uniformly random `u64`: seeded by the simulation under madsim, from the OS otherwise.
#[allow(clippy::disallowed_methods)] // madsim's RNG: the run's seeded RNG inside a simulation
pub fn random_u64() -> u64 {
    use madsim::rand::Rng;
    madsim::rand::thread_rng().gen()
}

/// A random duration in `[0, max)`, used for retry jitter.
pub fn jitter(max: Duration) -> Duration {
    let max_us = max.as_micros().max(1) as u64;
    Duration::from_micros(random_u64() % max_us)
}

/// A fresh 128-bit identifier in hex, for event and message ids.
pub fn new_id() -> String {
    format!("{:016x}{:016x}", random_u64(), random_u64())
}

/// The current instant of `tokio::time`: simulated under madsim (where madsim makes
/// `Instant::now` read the simulated clock), real otherwise.
#[allow(clippy::disallowed_methods)] // the one sanctioned read of the monotonic clock
pub fn instant_now() -> tokio::time::Instant {
    tokio::time::Instant::now()
}
