//! Writing a scenario back as a file: what `explore` keeps of a failing generated scenario and
//! what `shrink` and `--emit-scenario` write out. Every field is written, defaults included, so
//! the file says everything the run did; comments of the original are not kept.

use crate::faults::TimelineStep;
use crate::format::{Action, Scenario};
use std::fmt::Write;

/// A TOML string literal (JSON's escapes are TOML's).
fn text(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// A serde enum's name (`broker-restart`, `ride_requests_accepted`).
fn name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

fn list(items: impl IntoIterator<Item = String>) -> String {
    format!("[{}]", items.into_iter().collect::<Vec<_>>().join(", "))
}

/// `scenario` as a scenario file that parses back to the same scenario.
pub fn to_toml(scenario: &Scenario) -> String {
    let mut out = String::new();
    let s = scenario;
    let h = &s.scenario;
    let _ = writeln!(out, "[scenario]\nname = {}", text(&h.name));
    if !h.description.is_empty() {
        let _ = writeln!(out, "description = {}", text(&h.description));
    }
    let _ = writeln!(out, "duration_s = {}\nsettle_s = {}", h.duration_s.get_ref(), h.settle_s);
    if !s.deployment.is_empty() {
        let _ = writeln!(out, "\n[deployment]");
        for (service, n) in &s.deployment {
            let _ = writeln!(out, "{service} = {}", n.get_ref());
        }
    }
    let w = &s.workload;
    let _ = writeln!(
        out,
        "\n[workload]\nkind = {}\ndrivers = {}\nseats = {}\nriders_per_minute = {}\nunserved_share = {}\nride_ttl_s = {}\ndwell_s = {}\ntravel_s = {}\npoll_s = {}",
        text(&name(&w.kind)),
        w.drivers,
        w.seats,
        w.riders_per_minute,
        w.unserved_share,
        w.ride_ttl_s,
        w.dwell_s,
        w.travel_s,
        w.poll_s
    );
    if w.hostile_per_minute > 0.0 {
        let _ = writeln!(out, "hostile_per_minute = {}", w.hostile_per_minute);
    }
    for step in &s.steps {
        let _ = writeln!(out, "\n[[step]]\nat_s = {}\naction = {}", step.at_s.get_ref(), text(&name(&step.action)));
        if let Some(t) = &step.target {
            let _ = writeln!(out, "target = {}", text(t.get_ref()));
        }
        write_step_fields(
            &mut out,
            step.replicas,
            step.replica,
            step.peer.as_deref(),
            step.for_s,
            step.latency_ms,
            step.loss,
            step.point.map(|p| p.as_str()),
        );
        if step.random {
            let _ = writeln!(out, "random = true");
        }
    }
    for p in &s.phases {
        let _ = writeln!(out, "\n[[phase]]\nname = {}\nfrom_s = {}\nto_s = {}", text(&p.name), p.from_s, p.to_s);
    }
    for x in &s.expectations {
        let _ = writeln!(out, "\n[[expect]]\nphase = {}\nmetric = {}", text(x.phase.get_ref()), text(&name(&x.metric)));
        if let Some(m) = x.min {
            let _ = writeln!(out, "min = {m}");
        }
        if let Some(m) = x.max {
            let _ = writeln!(out, "max = {m}");
        }
        if let Some(p) = &x.probe {
            let _ = writeln!(out, "probe = {}", text(p));
        }
        if let Some(r) = &x.ratio_of {
            let _ = writeln!(out, "ratio_of = {}", text(r.get_ref()));
        }
    }
    for p in &s.probes {
        let _ = writeln!(
            out,
            "\n[[probe]]\nname = {}\ntarget = {}\npath = {}\nevery_s = {}",
            text(&p.name),
            text(&p.target),
            text(&p.path),
            p.every_s
        );
    }
    let rf = &s.random_faults;
    let _ = writeln!(
        out,
        "\n[random_faults]\nenabled = {}\nmax = {}\nactions = {}\ntargets = {}\nfrom_s = {}",
        rf.enabled,
        rf.max,
        list(rf.actions.iter().map(|a| text(&name(a)))),
        list(rf.targets.iter().map(|t| text(t))),
        rf.from_s
    );
    if let Some(to) = rf.to_s {
        let _ = writeln!(out, "to_s = {to}");
    }
    let _ = writeln!(out, "max_for_s = {}", rf.max_for_s);
    if !rf.deployment.is_empty() {
        let ranges = rf.deployment.iter().map(|(k, [lo, hi])| format!("{k} = [{lo}, {hi}]"));
        let _ = writeln!(out, "deployment = {{ {} }}", ranges.collect::<Vec<_>>().join(", "));
    }
    let _ = writeln!(out, "broker_restart_while_buffered = {}", rf.broker_restart_while_buffered);
    if s.options.naive_matching {
        let _ = writeln!(out, "\n[options]\nnaive_matching = true");
    }
    if !s.service_time.is_empty() {
        let _ = writeln!(out, "\n[service_time]");
        for (service, t) in &s.service_time {
            let t = t.get_ref();
            let (mean, jitter, n) = (t.mean_ms, t.jitter_ms, t.concurrency);
            let _ = writeln!(out, "{service} = {{ mean_ms = {mean}, jitter_ms = {jitter}, concurrency = {n} }}");
        }
    }
    out
}

#[allow(clippy::too_many_arguments)] // one per optional field of a step
fn write_step_fields(
    out: &mut String,
    replicas: Option<usize>,
    replica: Option<usize>,
    peer: Option<&str>,
    for_s: Option<f64>,
    latency_ms: Option<u64>,
    loss: Option<f64>,
    point: Option<&str>,
) {
    if let Some(n) = replicas {
        let _ = writeln!(out, "replicas = {n}");
    }
    if let Some(r) = replica {
        let _ = writeln!(out, "replica = {r}");
    }
    if let Some(p) = peer {
        let _ = writeln!(out, "peer = {}", text(p));
    }
    if let Some(f) = for_s {
        let _ = writeln!(out, "for_s = {f}");
    }
    if let Some(l) = latency_ms {
        let _ = writeln!(out, "latency_ms = {l}");
    }
    if let Some(l) = loss {
        let _ = writeln!(out, "loss = {l}");
    }
    if let Some(p) = point {
        let _ = writeln!(out, "point = {}", text(p));
    }
}

/// `scenario` with the seed's random faults written out as its own steps and random faults
/// turned off: the same run as `(scenario, seed)`, as a file a person can read and edit.
pub fn with_faults_explicit(scenario: &Scenario, seed: u64) -> String {
    let steps = crate::faults::timeline(scenario, seed, true);
    let mut explicit = scenario.clone();
    explicit.steps.clear();
    explicit.random_faults.enabled = false;
    let mut file = to_toml(&explicit);
    for step in &steps {
        file.push_str(&step_toml(step));
    }
    file
}

/// One timeline step as a `[[step]]` table.
pub fn step_toml(step: &TimelineStep) -> String {
    let mut out = format!("\n[[step]]\nat_s = {}\naction = {}\n", step.at_s, text(&name(&step.action)));
    if step.origin == crate::faults::Origin::Random {
        out.push_str("random = true\n");
    }
    if let Some(t) = &step.target {
        let _ = writeln!(out, "target = {}", text(t));
    }
    // A broker restart's default length is its own: write it only when it differs.
    let for_s = step.for_s.filter(|f| !(step.action == Action::BrokerRestart && *f == 5.0));
    write_step_fields(
        &mut out,
        step.replicas,
        step.replica,
        step.peer.as_deref(),
        for_s,
        step.latency_ms,
        step.loss,
        step.point.map(|p| p.as_str()),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::timeline;
    use crate::load::parse;

    fn shipped(name: &str) -> Scenario {
        let path = format!("{}/../{name}.toml", env!("CARGO_MANIFEST_DIR"));
        crate::load(std::path::Path::new(&path)).unwrap()
    }

    #[test]
    fn every_shipped_scenario_survives_a_round_trip() {
        for name in [
            "matching-outage",
            "scale-under-load",
            "non-critical-outage",
            "demo",
            "multi-station",
            "hostile-input",
            "capacity",
            "rolling-update",
        ] {
            let s = shipped(name);
            let written = to_toml(&s);
            let again = parse("written.toml", &written).unwrap_or_else(|e| panic!("{name}: {e}\n{written}"));
            assert_eq!(to_toml(&again), written, "{name}: writing is stable");
            for seed in [1, 7] {
                assert_eq!(timeline(&again, seed, true), timeline(&s, seed, true), "{name}: same runs");
            }
        }
    }

    #[test]
    fn written_out_random_faults_replay_the_same_timeline_without_the_seed() {
        let s = shipped("matching-outage");
        for seed in 1..6 {
            let explicit = parse("explicit.toml", &with_faults_explicit(&s, seed)).unwrap();
            assert!(!explicit.random_faults.enabled);
            assert_eq!(timeline(&s, seed, true), timeline(&explicit, 99, true), "seed {seed}");
        }
    }
}
