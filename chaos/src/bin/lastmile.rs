//! `lastmile`: LastMile's command line for real deployments and scenario files.
//!
//! ```text
//! lastmile scenario check scenarios/*.toml
//! lastmile chaos run scenarios/matching-outage.toml --target local|kube [--time-scale 0.5] [--seed 7]
//! lastmile resilience [service...] --target local|kube     # each to 0 and back; the rest keeps working
//! lastmile scale matching-service 3                        # kube: scale, wait ready (rolled back on failure)
//! lastmile scale matching-service --sequence 1,2,3,4,5,1 --target local|kube
//! lastmile demo simulation|multi-station --target local|kube
//! lastmile port-forward [--base-port 8081]                 # kube: a local port per service
//! lastmile service trip --listen 127.0.0.1:8083            # one service (what the local target runs)
//! lastmile dlq list [--prefix lastmile] [--peek 3]          # dead letters per work queue
//! lastmile dlq replay lastmile.matching-service [--max 10]  # dead letters back into their queue
//! lastmile dlq purge lastmile.matching-service              # drop them
//! ```
//! (Simulated runs are `cargo sim run ...`.)

use clap::{Args, Parser, Subcommand, ValueEnum};
use lastmile_chaos::dlq::{self, DlqArgs};
use lastmile_chaos::forward::Forwarder;
use lastmile_chaos::jobs;
use lastmile_chaos::kubernetes::{self, Cluster, KubeOptions, KubeTarget, Recorded, Workload};
use lastmile_chaos::local::{LocalOptions, LocalTarget};
use lastmile_harness::report::{human, judge, Journal};
use lastmile_harness::{RunConfig, Target};
use lastmile_scenarios::faults::timeline;
use lastmile_scenarios::{Action, Scenario};
use lastmile_services::cli::{init_logging, ServiceArgs};
use lastmile_services::ServiceName;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// LastMile's command line.
#[derive(Debug, Parser)]
#[command(name = "lastmile", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Scenario files.
    Scenario {
        #[command(subcommand)]
        command: ScenarioCommand,
    },
    /// Run scenarios against real deployments.
    Chaos {
        #[command(subcommand)]
        command: ChaosCommand,
    },
    /// Scale each service (default: all five) to 0 under load, check the rest keeps working,
    /// restore it and wait until it is ready; one verdict per service.
    Resilience {
        /// The services (user-service, location-service, trip-service, matching-service,
        /// notification-service).
        services: Vec<String>,
        /// Seconds each service stays at 0.
        #[arg(long, default_value_t = 40.0)]
        outage_s: f64,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Scale a service of the Kubernetes deployment to N and wait until N replicas are ready
    /// (put back when that fails) — or, with --sequence, run a load through several counts.
    Scale {
        /// The service.
        service: String,
        /// The replica count (Kubernetes only).
        #[arg(required_unless_present = "sequence")]
        replicas: Option<usize>,
        /// Replica counts to go through under load, e.g. 1,2,3,4,5,1.
        #[arg(long, conflicts_with = "replicas")]
        sequence: Option<String>,
        /// Seconds at each count of the sequence.
        #[arg(long, default_value_t = 30.0)]
        step_s: f64,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Run one of the two demo workloads against a deployment.
    Demo {
        /// Which demo.
        #[arg(value_enum)]
        which: DemoKind,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Reach the services of the Kubernetes deployment from this machine: a local port per
    /// service, each connection to the next ready pod. Runs until Ctrl-C.
    PortForward {
        /// The first local port (user-service; then location, trip, matching, notification);
        /// 0 takes free ports (printed).
        #[arg(long, default_value_t = 8081)]
        base_port: u16,
        #[command(flatten)]
        kube: KubeArgs,
    },
    /// Run one service (user, location, trip, matching, notification).
    Service(ServiceArgs),
    /// Dead-letter queues: list (and peek), replay into the work queue, purge.
    Dlq(DlqArgs),
}

#[derive(Debug, Subcommand)]
enum ScenarioCommand {
    /// Validate scenario files: the file, line and field of the first problem in each.
    Check {
        /// The files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ChaosCommand {
    /// Run a scenario file for real and judge it with the simulation's checkers.
    Run {
        /// The scenario file.
        file: PathBuf,
        #[command(flatten)]
        run: RunArgs,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DemoKind {
    /// The original mixed demo (scenarios/demo.toml).
    Simulation,
    /// Many stations, many drivers (scenarios/multi-station.toml).
    MultiStation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TargetKind {
    /// Every service as a process of this machine, against a real RabbitMQ.
    Local,
    /// The deployment of k8s/ on the cluster of the kubeconfig.
    Kube,
}

/// Where the cluster is.
#[derive(Debug, Clone, Args)]
struct KubeArgs {
    /// Kubernetes namespace of the deployment.
    #[arg(long, env = "LASTMILE_NAMESPACE", default_value = "lastmile")]
    namespace: String,
    /// kubeconfig context (default: the current one).
    #[arg(long)]
    context: Option<String>,
    /// Seconds a scale or restart may take until every replica is ready.
    #[arg(long, default_value_t = 180)]
    ready_timeout_s: u64,
}

impl KubeArgs {
    fn options(&self) -> KubeOptions {
        KubeOptions {
            namespace: self.namespace.clone(),
            context: self.context.clone(),
            ready_timeout: Duration::from_secs(self.ready_timeout_s),
        }
    }
}

/// How a scenario is run.
#[derive(Debug, Clone, Args)]
struct RunArgs {
    /// Where to run it.
    #[arg(long, value_enum, default_value = "local")]
    target: TargetKind,
    /// The seed of the workload and the random faults.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Multiply every duration of the scenario (0.5 runs it in half the time).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Do not add the seed's random faults.
    #[arg(long)]
    no_random_faults: bool,
    /// Run the original matching design (local target only).
    #[arg(long)]
    naive_matching: bool,
    /// RabbitMQ for the services (local target).
    #[arg(long, env = "LASTMILE_AMQP_URL", hide_env_values = true, default_value = lastmile_services::config::DEFAULT_AMQP_URL)]
    amqp_url: String,
    /// Where journals and service logs go (default: a fresh folder under the temp dir).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Write the JSON journal here.
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    kube: KubeArgs,
}

fn main() -> ExitCode {
    let command = Cli::parse().command;
    if let Command::Scenario { command: ScenarioCommand::Check { files } } = command {
        return check(files);
    }
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match command {
        Command::Scenario { .. } => unreachable!("handled above"),
        Command::Dlq(args) => match runtime.block_on(dlq::run(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Service(args) => {
            init_logging();
            match runtime.block_on(args.run()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Chaos { command: ChaosCommand::Run { file, run } } => match lastmile_scenarios::load(&file) {
            Ok(scenario) => runtime.block_on(run_all(vec![(file.display().to_string(), scenario)], &run)),
            Err(e) => usage(e),
        },
        Command::Resilience { services, outage_s, run } => {
            let services = if services.is_empty() {
                ServiceName::ALL.to_vec()
            } else {
                match services.iter().map(|s| s.parse::<ServiceName>()).collect() {
                    Ok(s) => s,
                    Err(e) => return usage(e),
                }
            };
            let mut scenarios = Vec::new();
            for s in services {
                match jobs::resilience(s, outage_s) {
                    Ok(scenario) => scenarios.push((format!("resilience {s}"), scenario)),
                    Err(e) => return usage(e),
                }
            }
            runtime.block_on(run_all(scenarios, &run))
        }
        Command::Scale { service, replicas, sequence, step_s, run } => {
            let service: ServiceName = match service.parse() {
                Ok(s) => s,
                Err(e) => return usage(e),
            };
            if let Some(why) = replicas.and_then(|n| lastmile_scenarios::replicas_refused(service.as_str(), n)) {
                return usage(why);
            }
            match (replicas, sequence) {
                (Some(n), _) if run.target == TargetKind::Kube => runtime.block_on(scale(service, n, &run.kube)),
                (Some(_), _) => usage(
                    "`scale <service> <N>` changes a running Kubernetes deployment: add --target kube \
                     (for a local run under load use --sequence)",
                ),
                (None, Some(sequence)) => {
                    let scenario = jobs::parse_sequence(&sequence)
                        .and_then(|counts| jobs::sequence(service, &counts, step_s).map_err(|e| e.to_string()));
                    match scenario {
                        Ok(s) => runtime.block_on(run_all(vec![(format!("scale --sequence {sequence}"), s)], &run)),
                        Err(e) => usage(e),
                    }
                }
                (None, None) => usage("give a replica count or --sequence"),
            }
        }
        Command::Demo { which, run } => {
            let builtin = match which {
                DemoKind::Simulation => jobs::DEMO,
                DemoKind::MultiStation => jobs::MULTI_STATION,
            };
            match jobs::builtin(builtin) {
                Ok(s) => runtime.block_on(run_all(vec![(builtin.0.to_string(), s)], &run)),
                Err(e) => usage(e),
            }
        }
        Command::PortForward { base_port, kube } => runtime.block_on(port_forward(base_port, &kube)),
    }
}

fn usage(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("{e}");
    ExitCode::from(2)
}

/// Ctrl-C or SIGTERM.
async fn interrupted() {
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn check(files: Vec<PathBuf>) -> ExitCode {
    let mut ok = true;
    for file in files {
        match lastmile_scenarios::load(&file) {
            Ok(s) => println!(
                "{}: ok ({}: {} steps, {} phases, {} expectations, random faults {})",
                file.display(),
                s.scenario.name,
                s.steps.len(),
                s.phases.len(),
                s.expectations.len(),
                if s.random_faults.enabled { "on" } else { "off" }
            ),
            Err(e) => {
                ok = false;
                eprintln!("{e}");
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

/// How one run ended.
enum Ended {
    /// It ran and was judged.
    Judged(Box<Journal>),
    /// It could not run (the message says why).
    Failed(String),
    /// Ctrl-C or SIGTERM.
    Interrupted,
}

/// Run the scenarios one after the other; one verdict each, and one for all.
async fn run_all(scenarios: Vec<(String, Scenario)>, run: &RunArgs) -> ExitCode {
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
        let dir = if many { work_dir.join(&scenario.scenario.name) } else { work_dir.clone() };
        let prefix = format!("lm-{}-{i}", &id[..12]);
        let ended = match run.target {
            TargetKind::Local => run_local(&label, &scenario, run, &dir, &prefix).await,
            TargetKind::Kube => run_kube(&label, &scenario, run, &dir).await,
        };
        match ended {
            Ended::Judged(journal) => {
                print!("{}", human(&journal, None));
                if let Some(path) = &run.json {
                    let path = if many {
                        path.with_extension(format!("{}.json", scenario.scenario.name))
                    } else {
                        path.clone()
                    };
                    let text = serde_json::to_string_pretty(&journal).expect("journals serialize");
                    if let Err(e) = std::fs::write(&path, text + "\n") {
                        eprintln!("cannot write {}: {e}", path.display());
                    }
                }
                verdicts.push((label, journal.passed()));
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
    can: fn(Action) -> bool,
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
fn wall_clock() -> std::time::Instant {
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
    announce(label, scenario, &config, "local", LocalTarget::can, dir, run.time_scale);
    let options = LocalOptions {
        binary,
        amqp_url: run.amqp_url.clone(),
        prefix: prefix.to_string(),
        work_dir: dir.to_path_buf(),
        naive_matching: config.naive_matching,
    };
    let started = wall_clock();
    println!("  starting the services...");
    let mut local = match LocalTarget::start(options, &initial_replicas(scenario)).await {
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
    let journal = judge(scenario, &evidence);
    log_problems(&local, &journal).await;
    drop(local);
    println!("  wall time {:.0} s", started.elapsed().as_secs_f64());
    Ended::Judged(Box::new(journal))
}

/// On a failed run, the warnings and errors the services logged (last few per replica), so the
/// first look needs no digging.
async fn log_problems<T: Target>(target: &T, journal: &Journal) {
    if journal.passed() {
        return;
    }
    println!("  what the services logged (warnings and errors, last {PROBLEM_LINES} per replica):");
    for s in ServiceName::ALL {
        match target.logs(s.as_str()).await {
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

/// Put the recorded replica counts back; a second Ctrl-C leaves them, printing how to do it by hand.
async fn restore(target: &mut KubeTarget) {
    println!("  restoring the replica counts recorded before the run...");
    let commands = target.recorded().manual_commands(target.namespace());
    tokio::select! {
        biased;
        _ = interrupted() => {
            eprintln!("interrupted again: the replica counts are NOT restored; restore them with:");
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
    announce(label, scenario, &config, &target, KubeTarget::can, dir, run.time_scale);
    let client = match kubernetes::connect(&options).await {
        Ok(c) => c,
        Err(e) => return Ended::Failed(e),
    };
    let started = wall_clock();
    let cluster = Cluster::new(client, &options.namespace, options.ready_timeout);
    let recorded = match Recorded::read(&cluster).await {
        Ok(r) => r,
        Err(e) => return Ended::Failed(e),
    };
    let counts: Vec<String> = recorded.0.iter().map(|(w, n)| format!("{w}={n}")).collect();
    println!("  recorded replicas: {}", counts.join(" "));
    println!("  scaling to the scenario's counts and waiting until every pod is ready...");
    let replicas = initial_replicas(scenario);
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
        target = KubeTarget::start(cluster.clone(), recorded.clone(), &options.namespace, &replicas) => target,
    };
    let mut target = match start {
        Ok(t) => t,
        Err(e) => return Ended::Failed(e),
    };
    println!("  ready after {:.0} s; running", started.elapsed().as_secs_f64());
    let evidence = tokio::select! {
        biased;
        _ = interrupted() => None,
        evidence = lastmile_harness::run(scenario, &config, &mut target) => Some(evidence),
    };
    let _ = std::fs::create_dir_all(dir);
    save_logs(&target, dir).await;
    let journal = evidence.map(|e| judge(scenario, &e));
    if let Some(journal) = &journal {
        log_problems(&target, journal).await;
    }
    restore(&mut target).await;
    let Some(journal) = journal else {
        eprintln!("interrupted: the run was stopped and the recorded replica counts put back");
        return Ended::Interrupted;
    };
    println!("  wall time {:.0} s", started.elapsed().as_secs_f64());
    Ended::Judged(Box::new(journal))
}

/// `scale <service> <N>` on Kubernetes: scale, watch until N replicas are ready, and put the
/// old count back when they are not (or on Ctrl-C).
async fn scale(service: ServiceName, n: usize, kube: &KubeArgs) -> ExitCode {
    let options = kube.options();
    let client = match kubernetes::connect(&options).await {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let cluster = Cluster::new(client, &options.namespace, options.ready_timeout);
    let w = Workload::Service(service);
    let before = match cluster.replicas(w).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}\n(is LastMile deployed in namespace {}? see README.md)", options.namespace);
            return ExitCode::FAILURE;
        }
    };
    let started = wall_clock();
    println!("lastmile scale: {service} {before} -> {n} (namespace {})", options.namespace);
    let scaled = async {
        cluster.set_replicas(w, n as i32).await?;
        cluster.wait_ready(w, n as i32).await
    };
    let ticker = async {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            if let Ok(pods) = cluster.list_pods(w).await {
                let ready = pods.iter().filter(|p| kubernetes::pod_ready(p)).count();
                println!(
                    "  [{:>4.0} s] {ready} ready of {} pods, want {n}",
                    started.elapsed().as_secs_f64(),
                    pods.len()
                );
            }
        }
    };
    let result = tokio::select! {
        biased;
        _ = interrupted() => Err("interrupted".to_string()),
        r = scaled => r,
        _ = ticker => unreachable!("the ticker never ends"),
    };
    match result {
        Ok(()) => {
            println!("verdict: PASS — {service} runs {n} ready replicas ({:.0} s)", started.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("  {e}; putting {service} back to {before}");
            match cluster.scale(w, before).await {
                Ok(()) => eprintln!("  {service} is back at {before} ready replicas"),
                Err(r) => eprintln!(
                    "  the rollback failed too: {r}\n  by hand: kubectl -n {} scale deployment/{service} --replicas={before}",
                    options.namespace
                ),
            }
            println!("verdict: FAIL — {service} did not reach {n} ready replicas");
            if e == "interrupted" {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// `port-forward`: a local port per service until Ctrl-C, with a line of traffic now and then.
async fn port_forward(base_port: u16, kube: &KubeArgs) -> ExitCode {
    let options = kube.options();
    let client = match kubernetes::connect(&options).await {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let cluster = Cluster::new(client, &options.namespace, options.ready_timeout);
    let base = (base_port != 0).then_some(base_port);
    let forwarder = match Forwarder::start(cluster.pods().clone(), base).await {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    println!("lastmile port-forward (namespace {}); Ctrl-C to stop", options.namespace);
    for (service, addr) in forwarder.fronts() {
        let pods: Vec<String> = forwarder.ready_pods(service).into_iter().map(|p| p.name).collect();
        println!("  http://{addr}  {service}  ({} ready: {})", pods.len(), pods.join(", "));
    }
    let report = async {
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let (per_pod, failed) = forwarder.forwarded();
            let total: u64 = per_pod.values().sum();
            println!("  {total} connections forwarded ({} pods), {failed} found no ready pod", per_pod.len());
        }
    };
    tokio::select! {
        _ = interrupted() => {}
        _ = report => {}
    }
    let (per_pod, failed) = forwarder.forwarded();
    let total: u64 = per_pod.values().sum();
    println!("stopped: {total} connections forwarded, {failed} found no ready pod");
    for (pod, n) in per_pod {
        println!("  {pod}: {n}");
    }
    if failed == 0 {
        println!("verdict: PASS — every connection reached a ready pod");
        ExitCode::SUCCESS
    } else {
        println!("verdict: FAIL — {failed} connections found no ready pod (a service at 0, or pods not ready)");
        ExitCode::FAILURE
    }
}
