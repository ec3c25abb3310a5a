//! Reading a scenario file: TOML syntax and shape first, then the meaning of each field. Every
//! error names the file, the line and the field.

use crate::format::{Action, CrashPoint, Metric, Scenario, WorkloadKind};
use crate::ServiceName;
use lastmile_platform::faults::MAX_DISK_STALL_MS;
use std::ops::Range;
use std::path::Path;

/// A scenario file that cannot be run, located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {field}: {message}")]
pub struct ScenarioError {
    /// The file.
    pub file: String,
    /// 1-based line (0 when the file could not be read at all).
    pub line: usize,
    /// The field, as a path (`step[1].target`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Read and validate the scenario at `path`.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
        file: file.clone(),
        line: 0,
        field: "(file)".into(),
        message: format!("cannot read: {e}"),
    })?;
    parse(&file, &text)
}

/// Parse and validate scenario `text`; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Scenario, ScenarioError> {
    let scenario: Scenario = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let line = line_of(text, span.start);
        let line_text = text.lines().nth(line.saturating_sub(1)).unwrap_or("");
        let key_on_line = line_text
            .split_once('=')
            .map(|(k, _)| k.trim().trim_matches('"').to_string())
            .filter(|k| !k.is_empty() && !k.starts_with('[') && !k.contains(' '));
        let name = if e.message().contains("missing field") { quoted(e.message()) } else { key_on_line };
        let field = match (table_at(text, line), name) {
            (Some(table), Some(name)) => format!("{table}.{name}"),
            (Some(table), None) => table,
            (None, Some(name)) => name,
            (None, None) => "(syntax)".into(),
        };
        ScenarioError { file: file.to_string(), line, field, message: e.message().trim().to_string() }
    })?;
    Validator { file, text, errors: Vec::new() }.validate(&scenario)?;
    Ok(scenario)
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

/// The first `backquoted` word of a message (serde names fields that way).
fn quoted(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

/// The table header in force at `line` (`step[2]`, `workload`, ...).
fn table_at(text: &str, line: usize) -> Option<String> {
    let mut current = None;
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for (i, raw) in text.lines().enumerate() {
        if i + 1 > line {
            break;
        }
        let l = raw.trim();
        if let Some(name) = l.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
            let n = counts.entry(name.trim().to_string()).or_default();
            current = Some(format!("{}[{}]", name.trim(), n));
            *n += 1;
        } else if let Some(name) = l.strip_prefix('[').and_then(|r| r.split(']').next()) {
            current = Some(name.trim().to_string());
        }
    }
    current
}

struct Validator<'a> {
    file: &'a str,
    text: &'a str,
    errors: Vec<ScenarioError>,
}

impl Validator<'_> {
    fn fail(&mut self, span: Range<usize>, field: impl Into<String>, message: impl Into<String>) {
        let line = line_of(self.text, span.start);
        self.errors.push(ScenarioError {
            file: self.file.to_string(),
            line,
            field: field.into(),
            message: message.into(),
        });
    }

    /// The line of `key` inside the `index`-th `[[table]]` (or `[table]`), for fields that carry
    /// no span of their own.
    fn span_of(&self, table: &str, index: Option<usize>, key: &str) -> Range<usize> {
        let mut seen = 0;
        let mut inside = false;
        let mut offset = 0;
        for raw in self.text.split_inclusive('\n') {
            let l = raw.trim();
            if l.starts_with('[') {
                let name = l.trim_start_matches('[').split(']').next().unwrap_or("").trim();
                inside = name == table
                    && match index {
                        Some(i) => {
                            seen += 1;
                            seen == i + 1
                        }
                        None => true,
                    };
            } else if inside && l.split('=').next().map(str::trim) == Some(key) {
                return offset..offset;
            }
            offset += raw.len();
        }
        0..0
    }

    fn service(&mut self, span: Range<usize>, field: &str, name: &str) {
        if !ServiceName::NAMES.contains(&name) {
            self.fail(span, field, format!("unknown service {name:?}; expected one of {}", ServiceName::all_names()));
        }
    }

    fn validate(mut self, s: &Scenario) -> Result<(), ScenarioError> {
        let duration = s.duration_s();
        if duration.is_nan() || duration <= 0.0 {
            self.fail(s.scenario.duration_s.span(), "scenario.duration_s", "must be positive");
        }
        if s.scenario.settle_s < 0.0 {
            let span = self.span_of("scenario", None, "settle_s");
            self.fail(span, "scenario.settle_s", "must not be negative");
        }
        for (name, replicas) in &s.deployment {
            self.service(replicas.span(), &format!("deployment.{name}"), name);
            if let Some(why) = crate::replicas_refused(name, *replicas.get_ref()) {
                self.fail(replicas.span(), format!("deployment.{name}"), why);
            }
        }
        self.workload(s);
        for (name, time) in &s.service_time {
            self.service(time.span(), &format!("service_time.{name}"), name);
            if let Some(why) = time.get_ref().refused() {
                self.fail(time.span(), format!("service_time.{name}"), why);
            }
        }
        for (i, step) in s.steps.iter().enumerate() {
            let at = *step.at_s.get_ref();
            if !(0.0..=duration).contains(&at) {
                self.fail(
                    step.at_s.span(),
                    format!("step[{i}].at_s"),
                    format!("{at} is outside the run (0..={duration})"),
                );
            }
            let needs_target = step.action.targets_a_service();
            match (&step.target, needs_target) {
                (Some(t), true) => self.service(t.span(), &format!("step[{i}].target"), t.get_ref()),
                (None, true) => self.fail(
                    step.at_s.span(),
                    format!("step[{i}].target"),
                    format!("{:?} needs a target service", step.action),
                ),
                (Some(t), false) => self.fail(
                    t.span(),
                    format!("step[{i}].target"),
                    format!("{:?} acts on the whole network, not a service", step.action),
                ),
                (None, false) => {}
            }
            let span = step.at_s.span();
            match step.action {
                Action::Scale => match step.replicas {
                    None => self.fail(span.clone(), format!("step[{i}].replicas"), "scale needs replicas"),
                    Some(n) => {
                        let target = step.target.as_ref().map(|t| t.get_ref().as_str()).unwrap_or_default();
                        if let Some(why) = crate::replicas_refused(target, n) {
                            self.fail(span.clone(), format!("step[{i}].replicas"), why);
                        }
                    }
                },
                Action::Pause | Action::Partition | Action::Latency | Action::Loss | Action::DiskStall
                    if step.for_s.is_none() =>
                {
                    self.fail(
                        span.clone(),
                        format!("step[{i}].for_s"),
                        format!("{:?} needs for_s (how long it lasts)", step.action),
                    )
                }
                _ => {}
            }
            match (step.action, step.point) {
                (Action::Crash, None) => self.fail(
                    span.clone(),
                    format!("step[{i}].point"),
                    format!(
                        "crash needs a point: {}",
                        CrashPoint::ALL.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                ),
                (Action::Crash, Some(_)) | (_, None) => {}
                (_, Some(_)) => self.fail(span.clone(), format!("step[{i}].point"), "only a crash takes a point"),
            }
            if step.action == Action::Poison && step.for_s.is_some() {
                self.fail(
                    span.clone(),
                    format!("step[{i}].for_s"),
                    "a poison stays one to the end of the run (the broker's delivery limit must take it away): no for_s",
                );
            }
            if step.action == Action::Poison {
                if let Some(t) =
                    step.target.as_ref().filter(|t| !crate::faults::CONSUMERS.contains(&t.get_ref().as_str()))
                {
                    self.fail(
                        t.span(),
                        format!("step[{i}].target"),
                        format!(
                            "poison needs a service that consumes from a queue ({}), not {:?}",
                            crate::faults::CONSUMERS.join(", "),
                            t.get_ref()
                        ),
                    );
                }
            }
            if step.action == Action::Latency && step.latency_ms.is_none() {
                self.fail(span.clone(), format!("step[{i}].latency_ms"), "latency needs latency_ms");
            }
            if step.action == Action::DiskStall
                && !step.latency_ms.is_some_and(|ms| (1..=MAX_DISK_STALL_MS).contains(&ms))
            {
                self.fail(
                    span.clone(),
                    format!("step[{i}].latency_ms"),
                    format!("disk-stall needs latency_ms (what each sync takes more, 1..={MAX_DISK_STALL_MS})"),
                );
            }
            if step.action == Action::Loss && !step.loss.is_some_and(|l| l > 0.0 && l < 1.0) {
                self.fail(span.clone(), format!("step[{i}].loss"), "loss needs a share between 0 and 1");
            }
            if let Some(peer) = &step.peer {
                if step.action != Action::Partition {
                    self.fail(span.clone(), format!("step[{i}].peer"), "only a partition takes a peer");
                } else if peer != "broker" {
                    self.service(span.clone(), &format!("step[{i}].peer"), peer);
                }
            }
            if step.for_s.is_some_and(|f| f < 0.0) {
                self.fail(span, format!("step[{i}].for_s"), "must not be negative");
            }
        }
        let end = duration + s.scenario.settle_s;
        for (i, phase) in s.phases.iter().enumerate() {
            let span = self.span_of("phase", Some(i), "name");
            if phase.from_s.is_nan() || phase.from_s >= phase.to_s || phase.from_s < 0.0 || phase.to_s > end {
                self.fail(span.clone(), format!("phase[{i}]"), format!("needs 0 <= from_s < to_s <= {end}"));
            }
            if s.phases[..i].iter().any(|p| p.name == phase.name) {
                self.fail(span, format!("phase[{i}].name"), format!("phase {:?} is defined twice", phase.name));
            }
        }
        for (i, e) in s.expectations.iter().enumerate() {
            if !s.phases.iter().any(|p| &p.name == e.phase.get_ref()) {
                let known: Vec<&str> = s.phases.iter().map(|p| p.name.as_str()).collect();
                self.fail(
                    e.phase.span(),
                    format!("expect[{i}].phase"),
                    format!("no phase {:?}; phases: {}", e.phase.get_ref(), known.join(", ")),
                );
            }
            if e.min.is_none() && e.max.is_none() {
                self.fail(e.phase.span(), format!("expect[{i}]"), "needs min or max");
            }
            if let Some(other) = &e.ratio_of {
                if !s.phases.iter().any(|p| &p.name == other.get_ref()) {
                    let known: Vec<&str> = s.phases.iter().map(|p| p.name.as_str()).collect();
                    self.fail(
                        other.span(),
                        format!("expect[{i}].ratio_of"),
                        format!("no phase {:?}; phases: {}", other.get_ref(), known.join(", ")),
                    );
                } else if !e.metric.has_ratio() {
                    self.fail(
                        other.span(),
                        format!("expect[{i}].ratio_of"),
                        format!("{:?} can be negative: a ratio of it means nothing", e.metric),
                    );
                }
            }
            if e.metric == Metric::ProbeSuccess {
                match &e.probe {
                    Some(p) if s.probes.iter().any(|q| &q.name == p) => {}
                    Some(p) => self.fail(e.phase.span(), format!("expect[{i}].probe"), format!("no probe {p:?}")),
                    None => self.fail(e.phase.span(), format!("expect[{i}].probe"), "probe_success needs a probe name"),
                }
            }
        }
        for (i, p) in s.probes.iter().enumerate() {
            let span = self.span_of("probe", Some(i), "target");
            self.service(span.clone(), &format!("probe[{i}].target"), &p.target);
            if !p.path.starts_with('/') {
                self.fail(span.clone(), format!("probe[{i}].path"), "must start with /");
            }
            if p.every_s.is_nan() || p.every_s <= 0.0 {
                self.fail(span, format!("probe[{i}].every_s"), "must be positive");
            }
        }
        let rf = &s.random_faults;
        for (j, target) in rf.targets.iter().enumerate() {
            let span = self.span_of("random_faults", None, "targets");
            self.service(span, &format!("random_faults.targets[{j}]"), target);
        }
        for action in &rf.actions {
            if *action == Action::Scale {
                let span = self.span_of("random_faults", None, "actions");
                self.fail(span, "random_faults.actions", format!("{action:?} is not a random fault"));
            }
            let consumers = rf.targets.iter().filter(|t| crate::faults::CONSUMERS.contains(&t.as_str())).count();
            if *action == Action::Poison && consumers == 0 {
                let span = self.span_of("random_faults", None, "targets");
                self.fail(
                    span,
                    "random_faults.targets",
                    format!(
                        "a random poison hits a target that consumes from a queue ({}); none is listed",
                        crate::faults::CONSUMERS.join(", ")
                    ),
                );
            }
        }
        for (service, [lo, hi]) in &rf.deployment {
            let span = self.span_of("random_faults", None, "deployment");
            self.service(span.clone(), &format!("random_faults.deployment.{service}"), service);
            if lo > hi {
                self.fail(span, format!("random_faults.deployment.{service}"), "needs [lo, hi] with lo <= hi");
            } else if let Some(why) = crate::replicas_refused(service, *hi) {
                self.fail(span, format!("random_faults.deployment.{service}"), why);
            }
        }
        if rf.enabled && rf.actions.is_empty() {
            let span = self.span_of("random_faults", None, "enabled");
            self.fail(span, "random_faults.actions", "enabled random faults need at least one action");
        }
        match self.errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn workload(&mut self, s: &Scenario) {
        let w = &s.workload;
        let mut check = |ok: bool, key: &str, message: &str| {
            if !ok {
                let span = self.span_of("workload", None, key);
                self.fail(span, format!("workload.{key}"), message);
            }
        };
        check(w.kind != WorkloadKind::Load || w.drivers >= 1, "drivers", "a load needs at least one driver");
        check((1..=8).contains(&w.seats), "seats", "seats must be 1..=8");
        check(w.riders_per_minute > 0.0, "riders_per_minute", "must be positive");
        check((0.0..1.0).contains(&w.unserved_share), "unserved_share", "must be in [0, 1)");
        check(w.ride_ttl_s > 0.0, "ride_ttl_s", "must be positive");
        check(w.dwell_s > 0.0, "dwell_s", "must be positive");
        check(w.travel_s > 0.0, "travel_s", "must be positive");
        check(w.poll_s > 0.0, "poll_s", "must be positive");
        check((0.0..=600.0).contains(&w.hostile_per_minute), "hostile_per_minute", "must be in [0, 600]");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[scenario]
name = "t"
duration_s = 60

[workload]
kind = "load"

[[step]]
at_s = 10
action = "scale"
target = "matching-service"
replicas = 0

[[phase]]
name = "outage"
from_s = 10
to_s = 50

[[expect]]
phase = "outage"
metric = "ride_requests_accepted"
min = 0.99
"#;

    #[test]
    fn a_good_file_parses_with_defaults() {
        let s = parse("good.toml", GOOD).unwrap();
        assert_eq!(s.scenario.settle_s, 120.0);
        assert_eq!(s.workload.seats, 3);
        assert_eq!(s.final_replicas("matching-service"), 0);
        assert_eq!(s.initial_replicas("trip-service"), 1);
    }

    #[test]
    fn an_unknown_target_names_file_line_and_field() {
        let bad = GOOD.replace("target = \"matching-service\"", "target = \"matchng-service\"");
        let e = parse("scenarios/x.toml", &bad).unwrap_err();
        assert_eq!((e.file.as_str(), e.line, e.field.as_str()), ("scenarios/x.toml", 12, "step[0].target"));
        assert!(e.message.contains("matchng-service"), "{e}");
        assert_eq!(e.to_string().split(':').take(2).collect::<Vec<_>>(), ["scenarios/x.toml", "12"]);
    }

    #[test]
    fn a_wrong_type_and_an_unknown_field_are_located() {
        let e = parse("x.toml", &GOOD.replace("replicas = 0", "replicas = \"zero\"")).unwrap_err();
        assert_eq!(e.line, 13, "{e}");
        assert!(e.field.starts_with("step[0]"), "{e}");
        let e = parse("x.toml", &GOOD.replace("kind = \"load\"", "kind = \"load\"\nriders = 5")).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (8, "workload.riders"), "{e}");
        let e = parse("x.toml", &GOOD.replace("kind = \"load\"", "kind = \"rush-hour\"")).unwrap_err();
        assert_eq!(e.line, 7, "{e}");
    }

    #[test]
    fn semantic_errors_are_located() {
        let e = parse("x.toml", &GOOD.replace("at_s = 10", "at_s = 99")).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (10, "step[0].at_s"), "{e}");
        let e = parse("x.toml", &GOOD.replace("phase = \"outage\"", "phase = \"outgae\"")).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (21, "expect[0].phase"), "{e}");
        let e = parse("x.toml", &GOOD.replace("kind = \"load\"", "kind = \"load\"\nseats = 0")).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (8, "workload.seats"), "{e}");
        let e = parse("x.toml", &GOOD.replace("min = 0.99", "")).unwrap_err();
        assert_eq!(e.field, "expect[0]", "{e}");
        let two_trips =
            GOOD.replace("target = \"matching-service\"\nreplicas = 0", "target = \"trip-service\"\nreplicas = 2");
        let e = parse("x.toml", &two_trips).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (10, "step[0].replicas"), "{e}");
        assert!(e.message.contains("one journal"), "{e}");
    }

    #[test]
    fn a_disk_stall_needs_a_service_a_duration_and_a_latency() {
        let stall = |extra: &str| {
            GOOD.replace(
                "action = \"scale\"\ntarget = \"matching-service\"\nreplicas = 0",
                &format!("action = \"disk-stall\"\ntarget = \"trip-service\"\n{extra}"),
            )
        };
        let s = parse("x.toml", &stall("latency_ms = 2500\nfor_s = 30")).unwrap();
        assert_eq!((s.steps[0].action, s.steps[0].latency_ms), (Action::DiskStall, Some(2500)));
        let e = parse("x.toml", &stall("for_s = 30")).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (10, "step[0].latency_ms"), "{e}");
        assert!(e.message.contains("disk-stall needs latency_ms"), "{e}");
        let e = parse("x.toml", &stall("latency_ms = 0\nfor_s = 30")).unwrap_err();
        assert_eq!(e.field, "step[0].latency_ms", "{e}");
        let e = parse("x.toml", &stall("latency_ms = 2500")).unwrap_err();
        assert_eq!(e.field, "step[0].for_s", "{e}");
    }

    #[test]
    fn a_poison_needs_a_consuming_service_and_no_duration() {
        let poison = |target: &str, extra: &str| {
            GOOD.replace(
                "action = \"scale\"\ntarget = \"matching-service\"\nreplicas = 0",
                &format!("action = \"poison\"\ntarget = \"{target}\"\n{extra}"),
            )
        };
        let s = parse("x.toml", &poison("notification-service", "")).unwrap();
        assert_eq!(s.steps[0].action, Action::Poison);
        let e = parse("x.toml", &poison("user-service", "")).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (12, "step[0].target"), "{e}");
        assert!(e.message.contains("consumes from a queue"), "{e}");
        let e = parse("x.toml", &poison("matching-service", "for_s = 10")).unwrap_err();
        assert_eq!(e.field, "step[0].for_s", "{e}");
        let random = |targets: &str| {
            format!(
                "{GOOD}\n[random_faults]\nenabled = true\nactions = [\"poison\"]\ntargets = [{targets}]\nfrom_s = 10\n"
            )
        };
        parse("x.toml", &random("\"user-service\", \"trip-service\"")).unwrap();
        let e = parse("x.toml", &random("\"user-service\"")).unwrap_err();
        assert_eq!(e.field, "random_faults.targets", "{e}");
    }

    #[test]
    fn every_shipped_scenario_file_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut checked = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                load(&path).unwrap_or_else(|e| panic!("{e}"));
                checked.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
        checked.sort();
        assert_eq!(
            checked,
            [
                "capacity.toml",
                "demo.toml",
                "hostile-input.toml",
                "matching-outage.toml",
                "multi-station.toml",
                "non-critical-outage.toml",
                "rolling-update.toml",
                "scale-under-load.toml"
            ]
        );
    }

    #[test]
    fn service_times_and_ratios_are_validated_and_located() {
        let timed = format!(
            "{GOOD}ratio_of = \"outage\"\n\n[service_time]\nmatching-service = {{ mean_ms = 400, jitter_ms = 100 }}\n"
        );
        let s = parse("x.toml", &timed).unwrap();
        let t = s.service_time("matching-service").unwrap();
        assert_eq!((t.mean_ms, t.jitter_ms, t.concurrency), (400, 100, 1));
        assert_eq!(s.expectations[0].ratio_of.as_ref().map(|r| r.get_ref().as_str()), Some("outage"));
        let half = s.time_scaled(0.5).service_time("matching-service").unwrap();
        assert_eq!((half.mean_ms, half.jitter_ms), (200, 50), "the same saturation in half the time");

        let e = parse("x.toml", &timed.replace("jitter_ms = 100", "jitter_ms = 500")).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (27, "service_time.matching-service"), "{e}");
        assert!(e.message.contains("jitter_ms"), "{e}");
        let e = parse("x.toml", &timed.replace("matching-service = {", "matchng-service = {")).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (27, "service_time.matchng-service"), "{e}");
        let e = parse("x.toml", &timed.replace("jitter_ms = 100", "jitter = 100")).unwrap_err();
        assert_eq!(e.line, 27, "{e}");
        assert!(e.message.contains("jitter"), "{e}");
        let e = parse("x.toml", &timed.replace("ratio_of = \"outage\"", "ratio_of = \"outgae\"")).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (24, "expect[0].ratio_of"), "{e}");
        let signed = timed.replace("ride_requests_accepted", "backlog_change");
        let e = parse("x.toml", &signed).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (24, "expect[0].ratio_of"), "{e}");
    }

    #[test]
    fn a_time_scaled_scenario_keeps_its_shape_in_less_time() {
        let s = parse("good.toml", GOOD).unwrap();
        let half = s.time_scaled(0.5);
        assert_eq!(half.duration_s(), 30.0);
        assert_eq!(*half.steps[0].at_s.get_ref(), 5.0);
        assert_eq!((half.phases[0].from_s, half.phases[0].to_s), (5.0, 25.0));
        assert_eq!(half.workload.riders_per_minute, 24.0, "twice the rate in half the time");
        assert_eq!(half.expectations[0].min, Some(0.99), "shares do not scale");
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = load(Path::new("no/such/scenario.toml")).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("no/such/scenario.toml", 0));
    }
}
