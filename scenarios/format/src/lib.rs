//! LastMile's scenario files: one format both worlds run (the simulation and real processes).
//!
//! A scenario says what runs (a workload on a deployment), what happens to it (a timeline of
//! steps: scale, kill, partition, ...), how long the system gets to converge afterwards, and
//! what must hold: steady-state probes and expectations per phase. It follows Chaos Toolkit's
//! shape — steady-state hypothesis, method, rollbacks — where the rollback is implicit: after
//! the timeline every fault is healed and the deployment restored, then the liveness phase runs.
//!
//! A broken file is rejected with its file name, line and field:
//! `scenarios/x.toml:14: step[1].target: unknown service "matchng-service"`.
//!
//! # Layout
//! - [`format`]: the file format, every field documented.
//! - [`load`]: parsing and validation with located errors.
//! - [`faults`]: seeded random fault mixes added on top of a scenario's timeline.
//! - [`write`]: a scenario written back as a file (explore, shrink, `--emit-scenario`).

pub mod faults;
pub mod format;
pub mod load;
pub mod write;

pub use format::{Action, CrashPoint, Expectation, Metric, Phase, Probe, Scenario, Step, Workload, WorkloadKind};
pub use load::{load, parse, ScenarioError};

pub use lastmile_platform::service::ServiceName;

/// Validate the scenario file at `path`: a one-line summary when it is sound, else the error
/// naming the file, line and field. The one check behind `lastmile scenario check` and
/// `lastmile-sim check`.
pub fn check(path: &std::path::Path) -> Result<String, ScenarioError> {
    let s = load(path)?;
    Ok(format!(
        "{}: ok ({}: {} steps, {} phases, {} expectations, random faults {})",
        path.display(),
        s.scenario.name,
        s.steps.len(),
        s.phases.len(),
        s.expectations.len(),
        if s.random_faults.enabled { "on" } else { "off" }
    ))
}

/// Why `service` cannot run `replicas`, if it cannot.
pub fn replicas_refused(service: &str, replicas: usize) -> Option<String> {
    if replicas > 10 {
        Some("at most 10 replicas".to_string())
    } else if replicas > 1 && service.parse::<ServiceName>().is_ok_and(ServiceName::single_replica) {
        Some(format!("{service} keeps its records in one journal: 0 or 1 replicas, not {replicas}"))
    } else if replicas > 1 && service == ServiceName::Location.as_str() {
        // Found by scenarios/rolling-update.toml with two location replicas (seed 1 failed
        // prompt_match): each replica knows only the positions sent to it, so a driver's visit
        // to a station is seen by neither or twice. Positions shared between replicas would lift it.
        Some(format!(
            "{service} keeps drivers' positions in its memory, and replicas would split them: 0 or 1 replicas, not \
             {replicas}"
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::replicas_refused;

    #[test]
    fn only_services_that_can_share_their_work_scale_out() {
        assert_eq!(replicas_refused("matching-service", 5), None);
        assert_eq!(replicas_refused("location-service", 1), None);
        for single in ["user-service", "trip-service", "notification-service", "location-service"] {
            assert_eq!(replicas_refused(single, 0), None, "{single} may be scaled to 0");
            let why = replicas_refused(single, 2).unwrap_or_else(|| panic!("{single} at 2 replicas is refused"));
            assert!(why.contains("0 or 1 replicas"), "{why}");
        }
        assert!(replicas_refused("matching-service", 11).is_some());
    }
}
