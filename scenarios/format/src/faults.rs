//! The run's timeline: the scenario's steps plus, per seed, random faults drawn from what the
//! scenario allows (TigerBeetle's VOPR style). The draw happens before the run starts, from the
//! seed alone, so the plan can be printed first and replayed exactly.

use crate::format::{Action, CrashPoint, Scenario};
use lastmile_platform::rng::SeedRng;
use lastmile_platform::service::ServiceName;
use serde::{Deserialize, Serialize};

/// Where a step came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Written in the scenario file.
    Scenario,
    /// Drawn from the seed.
    Random,
}

/// Prefix of every poison message's id ([`TimelineStep::poison_message_id`]).
pub const POISON_PREFIX: &str = "poison-";

/// The services a poison step can target: those that consume from a queue of their own.
pub const CONSUMERS: [&str; 4] = ["matching-service", "notification-service", "trip-service", "location-service"];

/// One action of a run, with every parameter resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineStep {
    /// Seconds from the start.
    pub at_s: f64,
    /// What to do.
    pub action: Action,
    /// The service, if the action targets one.
    pub target: Option<String>,
    /// For scale.
    pub replicas: Option<usize>,
    /// For kill, pause, partition: which replica (taken modulo the replicas running then);
    /// `None` = the newest for kill, every replica for pause and partition.
    pub replica: Option<usize>,
    /// For partition: only the links to this peer (a service or `broker`).
    pub peer: Option<String>,
    /// How long the fault lasts; `None` = until the heal.
    pub for_s: Option<f64>,
    /// For latency.
    pub latency_ms: Option<u64>,
    /// For loss.
    pub loss: Option<f64>,
    /// For crash: where the replica dies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point: Option<CrashPoint>,
    /// File or seed.
    pub origin: Origin,
}

impl TimelineStep {
    /// `action` at `at_s`, every parameter still empty (set the ones it needs with struct update).
    pub fn new(at_s: f64, action: Action, origin: Origin) -> TimelineStep {
        TimelineStep {
            at_s,
            action,
            target: None,
            replicas: None,
            replica: None,
            peer: None,
            for_s: None,
            latency_ms: None,
            loss: None,
            point: None,
            origin,
        }
    }

    /// A `poison` step's message id (`poison-matching-service-90000`: its target and time), by
    /// which the target arms it and the checker looks for it among the dead letters.
    pub fn poison_message_id(&self) -> Option<String> {
        let target = self.target.as_deref().filter(|_| self.action == Action::Poison)?;
        Some(format!("{POISON_PREFIX}{target}-{}", (self.at_s * 1000.0).round() as u64))
    }

    /// The action as scenario files name it, with its target (`kill trip-service`).
    pub fn action_name(&self) -> String {
        let action = serde_json::to_value(self.action).ok().and_then(|v| v.as_str().map(String::from));
        let action = action.unwrap_or_default();
        match &self.target {
            Some(t) => format!("{action} {t}"),
            None => action,
        }
    }
}

impl std::fmt::Display for TimelineStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let action = serde_json::to_value(self.action).expect("serializes");
        write!(f, "t={:>6.1}s {:<14}", self.at_s, action.as_str().unwrap_or("?"))?;
        if let Some(t) = &self.target {
            write!(f, " {t}")?;
        }
        if let Some(n) = self.replicas {
            write!(f, " replicas={n}")?;
        }
        if let Some(r) = self.replica {
            write!(f, " replica={r}")?;
        }
        if let Some(p) = &self.peer {
            write!(f, " peer={p}")?;
        }
        if let Some(d) = self.for_s {
            write!(f, " for={d:.1}s")?;
        }
        if let Some(ms) = self.latency_ms {
            write!(f, " latency={ms}ms")?;
        }
        if let Some(l) = self.loss {
            write!(f, " loss={l:.2}")?;
        }
        if let Some(p) = self.point {
            write!(f, " point={p}")?;
        }
        if self.origin == Origin::Random {
            write!(f, " (random)")?;
        }
        Ok(())
    }
}

/// A step drawn from the seed at `at_s`, every parameter still empty.
fn random_step(at_s: f64) -> TimelineStep {
    TimelineStep::new(at_s, Action::Scale, Origin::Random)
}

/// Windows (seconds, with 5 s margins) in which the scenario keeps some service at 0 replicas:
/// its durable queue buffers messages then.
pub fn buffered_windows(scenario: &Scenario) -> Vec<(f64, f64)> {
    let mut windows = Vec::new();
    for service in ServiceName::NAMES {
        let mut steps: Vec<&crate::Step> = scenario
            .steps
            .iter()
            .filter(|s| s.action == Action::Scale && s.target.as_ref().is_some_and(|t| t.get_ref() == service))
            .collect();
        steps.sort_by(|a, b| a.at_s.get_ref().total_cmp(b.at_s.get_ref()));
        let mut down_since = (scenario.initial_replicas(service) == 0).then_some(0.0);
        for step in steps {
            let at = *step.at_s.get_ref();
            match (step.replicas, down_since) {
                (Some(0), None) => down_since = Some(at),
                (Some(n), Some(since)) if n > 0 => {
                    if at - since > 10.0 {
                        windows.push((since + 5.0, at - 5.0));
                    }
                    down_since = None;
                }
                _ => {}
            }
        }
    }
    windows.sort_by(|a, b| a.0.total_cmp(&b.0));
    windows
}

/// The scenario's steps, plus the seed's random faults when `random` is on and the scenario
/// enables them, in time order.
pub fn timeline(scenario: &Scenario, seed: u64, random: bool) -> Vec<TimelineStep> {
    let mut steps: Vec<TimelineStep> = scenario
        .steps
        .iter()
        .map(|s| TimelineStep {
            at_s: *s.at_s.get_ref(),
            action: s.action,
            target: s.target.as_ref().map(|t| t.get_ref().clone()),
            replicas: s.replicas,
            replica: s.replica,
            peer: s.peer.clone(),
            for_s: s.for_s.or(if s.action == Action::BrokerRestart { Some(5.0) } else { None }),
            latency_ms: s.latency_ms,
            loss: s.loss,
            point: s.point,
            origin: if s.random { Origin::Random } else { Origin::Scenario },
        })
        .collect();
    let rf = &scenario.random_faults;
    if random && rf.enabled && !rf.actions.is_empty() {
        let mut rng = SeedRng::new(seed);
        // The deployment size, drawn first and set at the start.
        for (service, [lo, hi]) in &rf.deployment {
            let replicas = *lo + rng.below((*hi - *lo + 1) as u64) as usize;
            steps.push(TimelineStep {
                action: Action::Scale,
                target: Some(service.clone()),
                replicas: Some(replicas),
                ..random_step(0.0)
            });
        }
        // Durability of buffered messages: restart the broker while a consumer is scaled away.
        let windows = buffered_windows(scenario);
        if rf.broker_restart_while_buffered
            && rf.actions.contains(&Action::BrokerRestart)
            && !windows.is_empty()
            && rng.below(2) == 0
        {
            let (from, to) = windows[rng.below(windows.len() as u64) as usize];
            steps.push(TimelineStep {
                action: Action::BrokerRestart,
                for_s: Some((rng.between(2.0, rf.max_for_s.clamp(2.0, 10.0)) * 10.0).round() / 10.0),
                ..random_step((rng.between(from, to) * 10.0).round() / 10.0)
            });
        }
        let count = rng.below(u64::from(rf.max) + 1);
        let to = rf.to_s.unwrap_or(scenario.duration_s());
        for _ in 0..count {
            let action = rf.actions[rng.below(rf.actions.len() as u64) as usize];
            // `scale` is not a random fault (the loader refuses it).
            let needs_target = action.targets_a_service();
            // A poison hits one of the targets that consume from a queue.
            let pool: Vec<&String> =
                rf.targets.iter().filter(|t| action != Action::Poison || CONSUMERS.contains(&t.as_str())).collect();
            if needs_target && pool.is_empty() {
                continue;
            }
            let target = needs_target.then(|| pool[rng.below(pool.len() as u64) as usize].clone());
            let at_s = (rng.between(rf.from_s, to) * 10.0).round() / 10.0;
            let for_s = (rng.between(2.0, rf.max_for_s.max(2.0)) * 10.0).round() / 10.0;
            steps.push(TimelineStep {
                at_s,
                action,
                target,
                replicas: None,
                replica: matches!(action, Action::Kill | Action::Pause | Action::Partition)
                    .then(|| rng.below(8) as usize),
                peer: None,
                // A poison stays one (the delivery limit must take it away).
                for_s: (action != Action::Poison).then_some(for_s),
                latency_ms: match action {
                    Action::Latency => Some(20 + rng.below(280)),
                    // 0.5 to 5 s more per sync: mostly past a client's 2 s patience, where a
                    // stall puts handlers that give up half way to the test.
                    Action::DiskStall => Some(500 + rng.below(4_500)),
                    _ => None,
                },
                loss: (action == Action::Loss).then(|| (rng.between(0.05, 0.3) * 100.0).round() / 100.0),
                point: (action == Action::Crash)
                    .then(|| CrashPoint::ALL[rng.below(CrashPoint::ALL.len() as u64) as usize]),
                origin: Origin::Random,
            });
        }
    }
    steps.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::parse;

    const FILE: &str = r#"
[scenario]
name = "t"
duration_s = 100
[workload]
kind = "load"
[[step]]
at_s = 50
action = "scale"
target = "matching-service"
replicas = 2
[random_faults]
enabled = true
max = 4
actions = ["kill", "latency"]
targets = ["matching-service"]
"#;

    #[test]
    fn the_plan_is_a_pure_function_of_the_seed() {
        let s = parse("t.toml", FILE).unwrap();
        assert_eq!(timeline(&s, 7, true), timeline(&s, 7, true));
        let plans: Vec<usize> = (0..20).map(|seed| timeline(&s, seed, true).len()).collect();
        assert!(plans.iter().any(|n| *n > 1), "some seed adds faults: {plans:?}");
        assert!(plans.iter().any(|n| *n != plans[0]), "seeds differ: {plans:?}");
        for seed in 0..20 {
            let plan = timeline(&s, seed, true);
            assert!(plan.windows(2).all(|w| w[0].at_s <= w[1].at_s), "in time order");
            assert!(plan.iter().all(|p| p.at_s <= 100.0));
            assert_eq!(timeline(&s, seed, false).len(), 1, "the switch turns random faults off");
        }
    }

    const OUTAGE: &str = r#"
[scenario]
name = "o"
duration_s = 200
[workload]
kind = "load"
[[step]]
at_s = 50
action = "scale"
target = "notification-service"
replicas = 0
[[step]]
at_s = 120
action = "scale"
target = "notification-service"
replicas = 1
[random_faults]
enabled = true
max = 0
actions = ["broker-restart"]
deployment = { matching-service = [1, 5] }
"#;

    #[test]
    fn a_seed_draws_the_deployment_size_and_restarts_the_broker_while_messages_are_buffered() {
        let s = parse("o.toml", OUTAGE).unwrap();
        assert_eq!(buffered_windows(&s), vec![(55.0, 115.0)]);
        let mut sizes = std::collections::BTreeSet::new();
        let mut buffered_restarts = 0;
        for seed in 0..40 {
            let plan = timeline(&s, seed, true);
            let scale = plan.iter().find(|p| p.origin == Origin::Random && p.action == Action::Scale).unwrap();
            assert_eq!((scale.at_s, scale.target.as_deref()), (0.0, Some("matching-service")));
            sizes.insert(scale.replicas.unwrap());
            for r in plan.iter().filter(|p| p.action == Action::BrokerRestart) {
                assert!((55.0..=115.0).contains(&r.at_s), "{r}");
                buffered_restarts += 1;
            }
        }
        assert_eq!(sizes, (1..=5).collect(), "every size from 1 to 5 is drawn");
        assert!((10..=30).contains(&buffered_restarts), "about half the seeds: {buffered_restarts}");
    }
}
