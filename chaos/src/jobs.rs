//! The original scripts' jobs as scenarios: `lastmile resilience`, `lastmile scale --sequence`
//! and `lastmile demo` build a scenario (in the same file format, parsed by the same loader) and
//! run it like `lastmile chaos run`, so the same checkers give the verdict.

use lastmile_scenarios::{Scenario, ScenarioError};
use lastmile_services::ServiceName;
use std::fmt::Write;

/// The demo workloads, as the scenario files in `scenarios/` (built in, so the command runs
/// from anywhere).
pub const DEMO: (&str, &str) = ("scenarios/demo.toml", include_str!("../../scenarios/demo.toml"));
/// The multi-station demo.
pub const MULTI_STATION: (&str, &str) =
    ("scenarios/multi-station.toml", include_str!("../../scenarios/multi-station.toml"));

/// A built-in scenario file.
pub fn builtin((file, text): (&str, &str)) -> Result<Scenario, ScenarioError> {
    lastmile_scenarios::parse(file, text)
}

/// The steady load the generated scenarios run (a little more than one rider every 5 s).
const LOAD: &str = r#"
[workload]
kind = "load"
drivers = 6
seats = 3
riders_per_minute = 12
unserved_share = 0.05
ride_ttl_s = 900
"#;

fn expect(out: &mut String, phase: &str, metric: &str, min: f64, probe: Option<&str>) {
    let _ = write!(out, "\n[[expect]]\nphase = \"{phase}\"\nmetric = \"{metric}\"\nmin = {min}\n");
    if let Some(p) = probe {
        let _ = writeln!(out, "probe = \"{p}\"");
    }
}

fn phase(out: &mut String, name: &str, from_s: f64, to_s: f64) {
    let _ = write!(out, "\n[[phase]]\nname = \"{name}\"\nfrom_s = {from_s}\nto_s = {to_s}\n");
}

fn scale(out: &mut String, at_s: f64, service: ServiceName, replicas: usize) {
    let _ = write!(
        out,
        "\n[[step]]\nat_s = {at_s}\naction = \"scale\"\ntarget = \"{}\"\nreplicas = {replicas}\n",
        service.as_str()
    );
}

/// What keeps working while `down` is at 0: the workload metrics that do not need it.
fn unaffected(down: ServiceName) -> &'static [&'static str] {
    match down {
        // Riders and drivers registered before keep requesting and reporting; trips go on.
        ServiceName::User | ServiceName::Notification => &["ride_requests_accepted", "location_updates_accepted"],
        // Nothing is matched, but requests and location updates are accepted and wait.
        ServiceName::Matching => &["ride_requests_accepted", "location_updates_accepted"],
        // Drivers cannot report, so no match; riders can still ask.
        ServiceName::Location => &["ride_requests_accepted"],
        // Trip-service is the system of record of rides; drivers can still report.
        ServiceName::Trip => &["location_updates_accepted"],
    }
}

/// `resilience <service>`: a baseline, `service` scaled to 0 for `outage_s`, then restored.
/// During the outage every other service stays ready and the work that does not need the one
/// that is down is accepted; after the restore, rides are matched again. The usual checkers
/// (no double match, no lost request, ...) judge the whole run.
pub fn resilience(down: ServiceName, outage_s: f64) -> Result<Scenario, ScenarioError> {
    let (baseline, recovery) = (30.0, 60.0);
    let (from, to) = (baseline, baseline + outage_s);
    let end = to + recovery;
    let mut text = format!(
        "[scenario]\nname = \"resilience-{down}\"\ndescription = \"{down} scaled to 0 and back under load; the rest keeps working\"\nduration_s = {end}\nsettle_s = 120\n{LOAD}",
        down = down.as_str()
    );
    scale(&mut text, from, down, 0);
    scale(&mut text, to, down, 1);
    for other in ServiceName::ALL.into_iter().filter(|s| *s != down) {
        let _ = write!(
            text,
            "\n[[probe]]\nname = \"{o}-ready\"\ntarget = \"{o}\"\npath = \"/ready\"\nevery_s = 2\n",
            o = other.as_str()
        );
    }
    phase(&mut text, "baseline", 0.0, from);
    phase(&mut text, "outage", from, to);
    phase(&mut text, "recovery", to, end);
    for metric in unaffected(down) {
        expect(&mut text, "outage", metric, 0.99, None);
    }
    for other in ServiceName::ALL.into_iter().filter(|s| *s != down) {
        expect(&mut text, "outage", "probe_success", 0.95, Some(&format!("{}-ready", other.as_str())));
    }
    expect(&mut text, "recovery", "matches", 1.0, None);
    lastmile_scenarios::parse(&format!("resilience {}", down.as_str()), &text)
}

/// `scale <service> --sequence a,b,c`: the service at each count in turn for `step_s` under a
/// steady load. Each step is a phase; for matching-service every replica of a step must take
/// part of the work.
pub fn sequence(service: ServiceName, counts: &[usize], step_s: f64) -> Result<Scenario, ScenarioError> {
    let first = counts.first().copied().unwrap_or(1);
    let end = step_s * counts.len() as f64;
    let name = format!("scale-sequence-{}", service.as_str());
    let listed: Vec<String> = counts.iter().map(usize::to_string).collect();
    let mut text = format!(
        "[scenario]\nname = \"{name}\"\ndescription = \"{} through {} replicas under load\"\nduration_s = {end}\nsettle_s = 120\n\n[deployment]\n{} = {first}\n{LOAD}",
        service.as_str(),
        listed.join(", "),
        service.as_str()
    );
    for (i, n) in counts.iter().enumerate().skip(1) {
        scale(&mut text, step_s * i as f64, service, *n);
    }
    for (i, n) in counts.iter().enumerate() {
        let (from, to) = (step_s * i as f64, step_s * (i + 1) as f64);
        let phase_name = format!("step-{}-at-{n}", i + 1);
        phase(&mut text, &phase_name, from, to);
        if *n > 0 {
            expect(&mut text, &phase_name, "ride_requests_accepted", 0.99, None);
        }
        if service == ServiceName::Matching && *n > 1 {
            expect(&mut text, &phase_name, "active_replicas", *n as f64, None);
        }
    }
    lastmile_scenarios::parse(&format!("scale --sequence {}", listed.join(",")), &text)
}

/// Parse `1,2,3,4,5,1`.
pub fn parse_sequence(text: &str) -> Result<Vec<usize>, String> {
    let counts: Result<Vec<usize>, _> = text.split(',').map(|n| n.trim().parse::<usize>()).collect();
    match counts {
        Ok(c) if !c.is_empty() && c.iter().all(|n| *n <= 20) => Ok(c),
        Ok(_) => Err(format!("--sequence {text}: give 1 to 20 replicas per step, e.g. 1,2,3,4,5,1")),
        Err(e) => Err(format!("--sequence {text}: {e} (expected e.g. 1,2,3,4,5,1)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lastmile_scenarios::Action;

    #[test]
    fn a_resilience_scenario_takes_one_service_down_and_back_and_watches_the_others() {
        for down in ServiceName::ALL {
            let s = resilience(down, 40.0).unwrap();
            let scales: Vec<(f64, usize)> = s
                .steps
                .iter()
                .filter(|st| st.action == Action::Scale)
                .map(|st| (*st.at_s.get_ref(), st.replicas.unwrap()))
                .collect();
            assert_eq!(scales, vec![(30.0, 0), (70.0, 1)], "{down}");
            assert_eq!(s.probes.len(), 4, "a probe per other service");
            assert!(s.probes.iter().all(|p| p.target != down.as_str()));
            assert_eq!(s.final_replicas(down.as_str()), 1);
        }
    }

    #[test]
    fn a_sequence_scenario_has_a_phase_per_step_and_expects_every_matching_replica_to_work() {
        let s = sequence(ServiceName::Matching, &[1, 2, 3, 4, 5, 1], 30.0).unwrap();
        assert_eq!(s.phases.len(), 6);
        assert_eq!(s.initial_replicas("matching-service"), 1);
        assert_eq!(s.final_replicas("matching-service"), 1);
        assert_eq!(s.duration_s(), 180.0);
        let active: Vec<f64> = s
            .expectations
            .iter()
            .filter(|x| matches!(x.metric, lastmile_scenarios::Metric::ActiveReplicas))
            .map(|x| x.min.unwrap())
            .collect();
        assert_eq!(active, vec![2.0, 3.0, 4.0, 5.0]);
    }

    #[test]
    fn a_sequence_is_parsed_or_refused_with_an_example() {
        assert_eq!(parse_sequence("1,2, 3").unwrap(), vec![1, 2, 3]);
        assert!(parse_sequence("1,,2").unwrap_err().contains("1,2,3,4,5,1"));
        assert!(parse_sequence("1,99").is_err());
    }

    #[test]
    fn the_built_in_demos_are_the_scenario_files() {
        assert_eq!(builtin(DEMO).unwrap().scenario.name, "demo");
        assert_eq!(builtin(MULTI_STATION).unwrap().scenario.name, "multi-station");
    }
}
