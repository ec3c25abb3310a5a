//! A replica's capacity: a per-request service time.
//!
//! Without it a simulated replica is infinitely fast (madsim's CPU is free), so adding replicas
//! shows nothing. With a [`ServiceTime`], each unit of work a replica does (a consumed event, an
//! HTTP request) first waits a drawn time while holding one of `concurrency` permits of that
//! replica: work beyond `concurrency / mean` per second queues — in the broker's queue for a
//! consumer, since the worker's prefetch bounds what a replica takes ahead. The same setting
//! works in the real world (`--service-time mean_ms,jitter_ms,concurrency`). The time is drawn
//! with [`crate::clock::random_u64`]: from the run's seed under madsim, from the OS otherwise.

use crate::clock::random_u64;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// How long one unit of work takes and how many a replica does at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceTime {
    /// Mean milliseconds per unit of work.
    pub mean_ms: u64,
    /// Each draw is uniform in `mean_ms ± jitter_ms` (at most `mean_ms`). Default 0.
    #[serde(default)]
    pub jitter_ms: u64,
    /// Units of work one replica does at the same time (its threads, its cores). Default 1.
    #[serde(default = "one")]
    pub concurrency: u32,
}

fn one() -> u32 {
    1
}

impl ServiceTime {
    /// Why this setting cannot run, if it cannot.
    pub fn refused(&self) -> Option<String> {
        if self.mean_ms == 0 || self.mean_ms > 60_000 {
            Some(format!("mean_ms must be in 1..=60000, not {}", self.mean_ms))
        } else if self.jitter_ms > self.mean_ms {
            Some(format!("jitter_ms ({}) must not exceed mean_ms ({})", self.jitter_ms, self.mean_ms))
        } else if !(1..=1024).contains(&self.concurrency) {
            Some(format!("concurrency must be in 1..=1024, not {}", self.concurrency))
        } else {
            None
        }
    }

    /// Units of work per second one replica can do at most.
    pub fn capacity_per_s(&self) -> f64 {
        f64::from(self.concurrency) * 1000.0 / self.mean_ms as f64
    }

    /// One draw of the service time.
    fn draw(&self) -> Duration {
        let spread = 2 * self.jitter_ms + 1;
        let ms = self.mean_ms - self.jitter_ms + random_u64() % spread;
        Duration::from_millis(ms)
    }
}

/// `mean_ms,jitter_ms,concurrency` (the flag's form), e.g. `200,50,1`.
impl fmt::Display for ServiceTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{},{}", self.mean_ms, self.jitter_ms, self.concurrency)
    }
}

impl FromStr for ServiceTime {
    type Err = String;

    /// `mean_ms,jitter_ms,concurrency`; the last two may be left out (0 and 1).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        if parts.is_empty() || parts.len() > 3 {
            return Err(format!("{s:?}: expected mean_ms,jitter_ms,concurrency"));
        }
        let number = |i: usize, name: &str| -> Result<Option<u64>, String> {
            parts.get(i).map(|p| p.parse::<u64>().map_err(|e| format!("{s:?}: {name}: {e}"))).transpose()
        };
        let time = ServiceTime {
            mean_ms: number(0, "mean_ms")?.unwrap_or_default(),
            jitter_ms: number(1, "jitter_ms")?.unwrap_or(0),
            concurrency: match number(2, "concurrency")? {
                Some(c) => u32::try_from(c).map_err(|e| format!("{s:?}: concurrency: {e}"))?,
                None => 1,
            },
        };
        match time.refused() {
            Some(why) => Err(format!("{s:?}: {why}")),
            None => Ok(time),
        }
    }
}

/// One replica's capacity: its service time and its permits. Cheap to clone (shared permits).
#[derive(Debug, Clone)]
pub struct Capacity {
    /// The setting.
    time: ServiceTime,
    /// One per unit of work the replica may do at once; shared by its consumers and its HTTP
    /// routes, as threads of one process are.
    permits: Arc<tokio::sync::Semaphore>,
}

impl Capacity {
    /// A replica's capacity under `time`.
    pub fn new(time: ServiceTime) -> Capacity {
        Capacity { time, permits: Arc::new(tokio::sync::Semaphore::new(time.concurrency as usize)) }
    }

    /// The setting.
    pub fn time(&self) -> ServiceTime {
        self.time
    }

    /// Spend one unit of work's service time: wait for a permit, then hold it for a drawn time.
    pub async fn serve(&self) {
        let Ok(_permit) = self.permits.acquire().await else { return };
        tokio::time::sleep(self.time.draw()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::ServiceTime;

    #[test]
    fn the_flag_form_parses_with_defaults_and_round_trips() {
        let t: ServiceTime = "200,50,2".parse().unwrap();
        assert_eq!(t, ServiceTime { mean_ms: 200, jitter_ms: 50, concurrency: 2 });
        assert_eq!(t.to_string().parse::<ServiceTime>().unwrap(), t);
        assert_eq!("80".parse::<ServiceTime>().unwrap(), ServiceTime { mean_ms: 80, jitter_ms: 0, concurrency: 1 });
        assert_eq!(t.capacity_per_s(), 10.0);
    }

    #[test]
    fn a_setting_that_cannot_run_is_refused_with_the_reason() {
        for (text, why) in [
            ("0,0,1", "mean_ms"),
            ("100,150,1", "jitter_ms"),
            ("100,0,0", "concurrency"),
            ("fast", "mean_ms"),
            ("1,2,3,4", "expected"),
        ] {
            let e = text.parse::<ServiceTime>().unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    // A runtime in both flavours: under madsim the draws come from the simulation's seeded RNG.
    #[tokio::test]
    async fn draws_stay_within_the_jitter() {
        let t = ServiceTime { mean_ms: 100, jitter_ms: 20, concurrency: 1 };
        for _ in 0..1_000 {
            let d = t.draw().as_millis();
            assert!((80..=120).contains(&d), "{d}");
        }
    }
}
