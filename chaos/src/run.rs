//! Running scenarios against a real deployment: the local processes or the Kubernetes
//! deployment, judged by the simulation's checkers; Ctrl-C stops a run and leaves nothing
//! behind (processes stopped, replica counts put back).

use crate::cli::{usage, BrokerKind, RunArgs, TargetKind};
use crate::kubernetes::{self, Cluster, KubeRun, KubeTarget, Recorded};
use crate::local::{BrokerChoice, LocalOptions, LocalTarget};
use lastmile_harness::report::{human, judge, RunReport};
use lastmile_harness::{RunConfig, Target};
use lastmile_scenarios::faults::timeline;
use lastmile_scenarios::{Action, Scenario};
use lastmile_services::ServiceName;
use std::path::Path;
use std::process::ExitCode;

/// Ctrl-C or SIGTERM.
pub(crate) async fn interrupted() {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// How one run ended.
enum Ended {
    /// It ran and was judged.
    Judged(Box<RunReport>),
    /// It could not run (the message says why).
    Failed(String),
    /// Ctrl-C or SIGTERM.
    Interrupted,
}

/// Run the scenarios one after the other; one verdict each, and one for all.
pub async fn run_all(scenarios: Vec<(String, Scenario)>, run: &RunArgs) -> ExitCode {
    if run.time_scale <= 0.0 {
        return usage("--time-scale must be positive");
    }
    if run.naive_matching && run.target == TargetKind::Kube {
        return usage("--naive-matching needs the local target (a cluster runs what its manifests say)");
    }
    let id = lastmile_platform::clock::new_id();
    let work_dir = run.work_dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("lastmile-{}", &id[..12])));
    let mut verdicts = Vec::new();
    let many = scenarios.len() > 1;
    for (i, (label, scenario)) in scenarios.into_iter().enumerate() {
        let scenario = scenario.time_scaled(run.time_scale);
        if let Some(why) = refused_plan(&scenario, run) {
            eprintln!("{label}: {why}");
            verdicts.push((label, false));
            continue;
        }
        let dir = if many { work_dir.join(&scenario.scenario.name) } else { work_dir.clone() };
        let prefix = format!("lm-{}-{i}", &id[..12]);
        let ended = match run.target {
            TargetKind::Local => run_local(&label, &scenario, run, &dir, &prefix).await,
            TargetKind::Kube => run_kube(&label, &scenario, run, &dir).await,
        };
        match ended {
            Ended::Judged(report) => {
                print!("{}", human(&report, None));
                if let Some(path) = &run.json {
                    let path = if many {
                        path.with_extension(format!("{}.json", scenario.scenario.name))
                    } else {
                        path.clone()
                    };
                    let text = serde_json::to_string_pretty(&report).expect("reports serialize");
                    if let Err(e) = std::fs::write(&path, text + "\n") {
                        eprintln!("cannot write {}: {e}", path.display());
                    }
                }
                verdicts.push((label, report.passed()));
            }
            Ended::Failed(e) => {
                eprintln!("{label}: cannot run: {e}");
                verdicts.push((label, false));
            }
            Ended::Interrupted => return ExitCode::from(130),
        }
    }
    let passed = verdicts.iter().filter(|(_, ok)| *ok).count();
    if many {
        println!("summary:");
        for (label, ok) in &verdicts {
            println!("  {label}: {}", if *ok { "PASS" } else { "FAIL" });
        }
    }
    println!(
        "verdict: {} ({passed}/{} passed)",
        if passed == verdicts.len() { "PASS" } else { "FAIL" },
        verdicts.len()
    );
    if passed == verdicts.len() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Why `run_all` would refuse to run `scenario` (as loaded) with these arguments, if it would:
/// `--strict` or `--expect-faults` refusing its timeline.
pub fn refusal(scenario: &Scenario, run: &RunArgs) -> Option<String> {
    refused_plan(&scenario.time_scaled(run.time_scale), run)
}

/// Why `--strict` or `--expect-faults` refuses the run's (time-scaled) timeline, if either does.
fn refused_plan(scenario: &Scenario, run: &RunArgs) -> Option<String> {
    let config = config(scenario, run);
    let steps = timeline(scenario, config.seed, config.random_faults);
    let name = |a: Action| serde_json::to_value(a).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
    for wanted in &run.expect_faults {
        if serde_json::from_value::<Action>(serde_json::Value::String(wanted.clone())).is_err() {
            return Some(format!("--expect-faults: {wanted:?} is not a step action"));
        }
        if !steps.iter().any(|s| name(s.action) == *wanted) {
            return Some(format!(
                "--expect-faults: the timeline of seed {} has no {wanted} step (its steps: {})",
                config.seed,
                steps.iter().map(|s| name(s.action)).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    if run.strict {
        let broker = broker_choice(run);
        let can = |a: Action| match run.target {
            TargetKind::Local => LocalTarget::can(&broker, a),
            TargetKind::Kube => KubeTarget::can(a),
        };
        if let Some(step) = steps.iter().find(|s| !can(s.action)) {
            return Some(format!("--strict: the {:?} target cannot carry out {step}", run.target));
        }
    }
    None
}

fn broker_choice(run: &RunArgs) -> BrokerChoice {
    match run.broker {
        BrokerKind::Own => BrokerChoice::Own,
        BrokerKind::Shared => BrokerChoice::Shared { restart_node: run.restart_shared_broker.clone() },
    }
}

fn config(scenario: &Scenario, run: &RunArgs) -> RunConfig {
    RunConfig {
        seed: run.seed,
        random_faults: !run.no_random_faults,
        naive_matching: run.naive_matching || scenario.options.naive_matching,
        planted_bug: false,
    }
}

fn announce(
    label: &str,
    scenario: &Scenario,
    config: &RunConfig,
    target: &str,
    can: &dyn Fn(Action) -> bool,
    dir: &Path,
    time_scale: f64,
) {
    println!(
        "lastmile: {label} — scenario {} seed {} target {target}, time scale {time_scale}",
        scenario.scenario.name, config.seed
    );
    println!("  {}", scenario.scenario.description);
    println!("  logs and journals in {}", dir.display());
    println!("  timeline:");
    for step in timeline(scenario, config.seed, config.random_faults) {
        let skipped = if can(step.action) { "" } else { "  (skipped: not possible on this target)" };
        println!("    {step}{skipped}");
    }
}

/// Wall time is what a real run takes; this is the harness, not simulated code.
#[allow(clippy::disallowed_methods)]
pub(crate) fn wall_clock() -> std::time::Instant {
    std::time::Instant::now()
}

fn initial_replicas(scenario: &Scenario) -> std::collections::BTreeMap<ServiceName, usize> {
    ServiceName::ALL.into_iter().map(|s| (s, scenario.initial_replicas(s.as_str()))).collect()
}

async fn run_local(label: &str, scenario: &Scenario, run: &RunArgs, dir: &Path, prefix: &str) -> Ended {
    let config = config(scenario, run);
    let binary = match std::env::current_exe() {
        Ok(b) => b,
        Err(e) => return Ended::Failed(format!("cannot find the lastmile binary to run services with: {e}")),
    };
    let broker = broker_choice(run);
    announce(label, scenario, &config, "local", &|a| LocalTarget::can(&broker, a), dir, run.time_scale);
    let options = LocalOptions {
        binary,
        amqp_url: run.amqp_url.clone(),
        prefix: prefix.to_string(),
        work_dir: dir.to_path_buf(),
        naive_matching: config.naive_matching,
        service_time: ServiceName::ALL
            .into_iter()
            .filter_map(|s| Some((s, scenario.service_time(s.as_str())?)))
            .collect(),
        seed: config.seed,
        broker,
        direct: false,
    };
    let started = wall_clock();
    if options.broker == BrokerChoice::Own {
        println!("  starting a RabbitMQ node of the run's own, then the services...");
    } else {
        println!("  starting the services...");
    }
    // Ctrl-C while starting drops the half-built target: its broker node and every process it
    // started are stopped.
    let replicas = initial_replicas(scenario);
    let starting = tokio::select! {
        biased;
        _ = interrupted() => {
            eprintln!("interrupted while starting: every process the run started is gone");
            return Ended::Interrupted;
        }
        started = LocalTarget::start(options, &replicas) => started,
    };
    let mut local = match starting {
        Ok(t) => t,
        Err(e) => return Ended::Failed(format!("cannot start the services: {e}")),
    };
    println!("  every service ready after {:.0} s; running", started.elapsed().as_secs_f64());
    let evidence = tokio::select! {
        biased;
        _ = interrupted() => {
            // Stop every service process before leaving: nothing of the run outlives it.
            drop(local);
            eprintln!("interrupted: the run was stopped and every service process it started is gone");
            return Ended::Interrupted;
        }
        evidence = lastmile_harness::run(scenario, &config, &mut local) => evidence,
    };
    let report = judge(scenario, &evidence);
    log_problems(&local, &report).await;
    drop(local);
    println!("  wall time {:.0} s", started.elapsed().as_secs_f64());
    Ended::Judged(Box::new(report))
}

/// On a failed run, the warnings and errors the services logged (last few per replica), so the
/// first look needs no digging.
async fn log_problems<T: Target>(target: &T, report: &RunReport) {
    if report.passed() {
        return;
    }
    println!("  what the services logged (warnings and errors, last {PROBLEM_LINES} per replica):");
    for s in ServiceName::ALL {
        match target.logs(s).await {
            Ok(logs) => {
                for (replica, text) in logs {
                    let problems: Vec<&str> =
                        text.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect();
                    for line in &problems[problems.len().saturating_sub(PROBLEM_LINES)..] {
                        println!("    {replica}: {line}");
                    }
                }
            }
            Err(e) => println!("    {s}: {e}"),
        }
    }
}

/// Log lines [`log_problems`] shows per replica.
const PROBLEM_LINES: usize = 5;

/// Delete the run's Chaos Mesh objects and put the recorded replica counts back; a second Ctrl-C
/// leaves them, printing how to do it by hand.
async fn restore(target: &mut KubeTarget) {
    println!("  deleting the run's faults and restoring the replica counts recorded before the run...");
    let commands = target.manual_commands();
    tokio::select! {
        biased;
        _ = interrupted() => {
            eprintln!("interrupted again: the faults and replica counts are NOT restored; restore them with:");
            for c in commands {
                eprintln!("  {c}");
            }
        }
        restored = target.restore() => match restored {
            Ok(done) => println!("  {done}"),
            Err(e) => {
                eprintln!("  restoring failed: {e}; restore by hand with:");
                for c in commands {
                    eprintln!("  {c}");
                }
            }
        },
    }
}

async fn save_logs(target: &KubeTarget, dir: &Path) {
    let logs_dir = dir.join("logs");
    if let Err(e) = std::fs::create_dir_all(&logs_dir) {
        eprintln!("cannot keep the pods' logs in {}: {e}", logs_dir.display());
        return;
    }
    let logs = target.all_logs().await;
    for (pod, text) in &logs {
        let _ = std::fs::write(logs_dir.join(format!("{pod}.log")), text);
    }
    println!("  logs of {} pods in {}", logs.len(), logs_dir.display());
}

async fn run_kube(label: &str, scenario: &Scenario, run: &RunArgs, dir: &Path) -> Ended {
    let config = config(scenario, run);
    let options = run.kube.options();
    let target = format!("kube (namespace {})", options.namespace);
    announce(label, scenario, &config, &target, &KubeTarget::can, dir, run.time_scale);
    let client = match kubernetes::connect(&options).await {
        Ok(c) => c,
        Err(e) => return Ended::Failed(e.to_string()),
    };
    let started = wall_clock();
    let cluster = Cluster::new(client, &options.namespace, options.ready_timeout);
    let recorded = match Recorded::read(&cluster).await {
        Ok(r) => r,
        Err(e) => return Ended::Failed(e.to_string()),
    };
    let counts: Vec<String> = recorded.0.iter().map(|(w, n)| format!("{w}={n}")).collect();
    println!("  recorded replicas: {}", counts.join(" "));
    println!("  scaling to the scenario's counts and waiting until every pod is ready...");
    let replicas = initial_replicas(scenario);
    let run_plan = KubeRun::new(&timeline(scenario, config.seed, config.random_faults));
    println!("  run id {} (label lastmile.run of its Chaos Mesh objects)", run_plan.id);
    let start = tokio::select! {
        biased;
        _ = interrupted() => {
            eprintln!("interrupted while starting");
            match recorded.restore(&cluster).await {
                Ok(done) => eprintln!("  {done}"),
                Err(e) => {
                    eprintln!("  restoring failed: {e}; restore by hand with:");
                    for c in recorded.manual_commands(&options.namespace) {
                        eprintln!("  {c}");
                    }
                }
            }
            return Ended::Interrupted;
        }
        target = KubeTarget::start(cluster.clone(), recorded.clone(), &options.namespace, &replicas, run_plan) => target,
    };
    let mut target = match start {
        Ok(t) => t,
        Err(e) => return Ended::Failed(e.to_string()),
    };
    println!("  ready after {:.0} s; running", started.elapsed().as_secs_f64());
    let evidence = tokio::select! {
        biased;
        _ = interrupted() => None,
        evidence = lastmile_harness::run(scenario, &config, &mut target) => Some(evidence),
    };
    let _ = std::fs::create_dir_all(dir);
    save_logs(&target, dir).await;
    let report = evidence.map(|e| judge(scenario, &e));
    if let Some(report) = &report {
        log_problems(&target, report).await;
    }
    restore(&mut target).await;
    let Some(report) = report else {
        eprintln!("interrupted: the run was stopped, its faults deleted and the recorded replica counts put back");
        return Ended::Interrupted;
    };
    println!("  wall time {:.0} s", started.elapsed().as_secs_f64());
    Ended::Judged(Box::new(report))
}
