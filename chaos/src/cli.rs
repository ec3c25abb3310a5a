//! `lastmile`'s command line: the arguments and what each command does. The binary only parses
//! and calls [`dispatch`]; the runs live in [`crate::run`], the cluster operations in
//! [`crate::operate`].
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
//! lastmile sweep --kube scenarios/demo.toml --seeds 1..100000 --parallelism 50  # an Indexed Job
//! lastmile load --rate 5000                                 # a local deployment of its own, measured
//! lastmile load --target kube --rate 5000                   # the generator as a Job in the cluster
//! ```
//! (Simulated runs are `cargo sim run ...`.)

use crate::dlq::{self, DlqArgs};
use crate::jobs;
use crate::kubernetes::KubeOptions;
use crate::operate;
use crate::run::run_all;
use clap::{Args, Parser, Subcommand, ValueEnum};
use lastmile_services::cli::{init_logging, ServiceArgs};
use lastmile_services::ServiceName;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// LastMile's command line.
#[derive(Debug, Parser)]
#[command(name = "lastmile", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
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
    /// Measure the services: open-loop ride requests at a constant rate (latency from each
    /// request's due time), request -> match with drivers waiting, and the disk's fdatasync rate
    /// and RabbitMQ's publish -> confirm round trip in the same run. `--target local` starts a
    /// deployment of its own on this machine (release build recommended: `cargo
    /// lastmile-release`); `--target kube` runs the generator as a Job inside the cluster, next
    /// to the services (k8s/load/job.yaml); `--target endpoints` loads a deployment already
    /// running at the URLs given (what that Job's pod runs).
    Load(LoadArgs),
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
    /// Sweep a scenario over many seeds as an Indexed Job on Kubernetes (the simulator in the
    /// image, a seed range per index), then merge the pods' results into one summary with
    /// replay commands; the Job is deleted at the end.
    Sweep(crate::sweep::SweepArgs),
}

/// `lastmile scenario ...`.
#[derive(Debug, Subcommand)]
pub enum ScenarioCommand {
    /// Validate scenario files: the file, line and field of the first problem in each.
    Check {
        /// The files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// `lastmile chaos ...`.
#[derive(Debug, Subcommand)]
pub enum ChaosCommand {
    /// Run a scenario file for real and judge it with the simulation's checkers.
    Run {
        /// The scenario file.
        file: PathBuf,
        #[command(flatten)]
        run: RunArgs,
    },
}

/// The demo workloads.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DemoKind {
    /// The original mixed demo (scenarios/demo.toml).
    Simulation,
    /// Many stations, many drivers (scenarios/multi-station.toml).
    MultiStation,
}

/// Where a run goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetKind {
    /// Every service as a process of this machine, against a real RabbitMQ.
    Local,
    /// The deployment of k8s/ on the cluster of the kubeconfig.
    Kube,
}

/// Whose RabbitMQ a local run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BrokerKind {
    /// A RabbitMQ node of the run's own (own name, port and data dir under the work dir; needs
    /// RabbitMQ installed, not running): broker restarts happen for real.
    Own,
    /// The broker at --amqp-url: broker restarts are skipped, unless --restart-shared-broker.
    Shared,
}

/// Where the cluster is.
#[derive(Debug, Clone, Args)]
pub struct KubeArgs {
    /// Kubernetes namespace of the deployment.
    #[arg(long, env = "LASTMILE_NAMESPACE", default_value = "lastmile")]
    pub namespace: String,
    /// kubeconfig context (default: the current one).
    #[arg(long)]
    pub context: Option<String>,
    /// Seconds a scale or restart may take until every replica is ready.
    #[arg(long, default_value_t = 180)]
    pub ready_timeout_s: u64,
}

impl KubeArgs {
    /// The cluster options these arguments name.
    pub fn options(&self) -> KubeOptions {
        KubeOptions {
            namespace: self.namespace.clone(),
            context: self.context.clone(),
            ready_timeout: Duration::from_secs(self.ready_timeout_s),
        }
    }
}

/// Where `lastmile load`'s generator runs, and what it loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LoadTarget {
    /// A deployment of the run's own on this machine (every service once, wired direct), and
    /// the generator beside it.
    Local,
    /// The Kubernetes deployment: the generator runs as a Job in its namespace
    /// (k8s/load/job.yaml), next to the services — through port-forwards it would measure the
    /// tunnels. The Job's report is printed here; the Job is deleted at the end.
    Kube,
    /// A deployment already running at --user-url, --location-url and --trip-url (what the
    /// kube target's pod runs, against the cluster's DNS names).
    Endpoints,
}

/// `lastmile load`'s arguments.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Where the generator runs, and against what.
    #[arg(long, value_enum, default_value = "local")]
    pub target: LoadTarget,
    /// Ride requests per second.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Seconds of ride requests.
    #[arg(long, default_value_t = 10.0)]
    pub duration_s: f64,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 256)]
    pub max_in_flight: usize,
    /// Rides in the request -> match phase (10 a second).
    #[arg(long, default_value_t = 100)]
    pub match_rides: usize,
    /// RabbitMQ: the services' with --target local; the one whose publish -> confirm round trip
    /// is measured with --target endpoints.
    #[arg(long, env = "LASTMILE_AMQP_URL", hide_env_values = true, default_value = lastmile_services::config::DEFAULT_AMQP_URL)]
    pub amqp_url: String,
    /// A file holding the RabbitMQ URL (a mounted Secret); wins over --amqp-url.
    #[arg(long, env = "LASTMILE_AMQP_URL_FILE")]
    pub amqp_url_file: Option<PathBuf>,
    /// Where journals and service logs go (default: a fresh folder under the temp dir); its disk
    /// is the one measured. --target local only.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// user-service's base URL, `http://host:port` (--target endpoints; checked by
    /// `load::parse_service_url`, whose errors never echo a password in the URL).
    #[arg(long, value_name = "URL")]
    pub user_url: Option<String>,
    /// location-service's base URL (--target endpoints).
    #[arg(long, value_name = "URL")]
    pub location_url: Option<String>,
    /// trip-service's base URL (--target endpoints).
    #[arg(long, value_name = "URL")]
    pub trip_url: Option<String>,
    /// notification-service's base URL (--target endpoints; optional: the load does not call it,
    /// it is only checked to be ready).
    #[arg(long, value_name = "URL")]
    pub notification_url: Option<String>,
    /// A file holding the deployment's service token (a mounted Secret), presented with every
    /// call (--target endpoints). Or the token itself in the environment variable
    /// LASTMILE_SERVICE_TOKEN — never a flag, never printed.
    #[arg(long, env = "LASTMILE_SERVICE_TOKEN_FILE")]
    pub service_token_file: Option<PathBuf>,
    /// Prefix of the services' exchanges: the broker probe publishes to their events exchange
    /// (--target endpoints).
    #[arg(long, env = "LASTMILE_PREFIX", default_value = "lastmile")]
    pub prefix: String,
    /// The folder whose disk the fdatasync probe measures (--target endpoints; default: a fresh
    /// folder under the temp dir): the generator's own disk, not the services' volumes.
    #[arg(long)]
    pub disk_dir: Option<PathBuf>,
    /// The run's tag in every rider, driver and ride id, so that runs against a long-lived
    /// deployment never collide (--target endpoints and kube; default: a fresh one).
    #[arg(long, value_parser = crate::load::parse_run_id)]
    pub run_id: Option<String>,
    /// The image holding `lastmile` (the Dockerfile's; --target kube).
    #[arg(long, default_value = "lastmile:dev")]
    pub image: String,
    /// Give up after this many seconds and delete the Job (--target kube; default: the time the
    /// pod may take to start, --ready-timeout-s, plus a bound of the run's own length).
    #[arg(long)]
    pub timeout_s: Option<u64>,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// How a scenario is run.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Where to run it.
    #[arg(long, value_enum, default_value = "local")]
    pub target: TargetKind,
    /// The seed of the workload and the random faults.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Multiply every duration of the scenario (0.5 runs it in half the time).
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// Do not add the seed's random faults.
    #[arg(long)]
    pub no_random_faults: bool,
    /// Run the original matching design (local target only).
    #[arg(long)]
    pub naive_matching: bool,
    /// Whose RabbitMQ the services use (local target).
    #[arg(long, value_enum, default_value = "own")]
    pub broker: BrokerKind,
    /// RabbitMQ for the services with --broker shared.
    #[arg(long, env = "LASTMILE_AMQP_URL", hide_env_values = true, default_value = lastmile_services::config::DEFAULT_AMQP_URL)]
    pub amqp_url: String,
    /// With --broker shared: carry out broker restarts as `rabbitmqctl -n NODE stop_app` and
    /// `start_app` of the shared node (everything else using that broker sees them).
    #[arg(long, value_name = "NODE")]
    pub restart_shared_broker: Option<String>,
    /// Where journals and service logs go (default: a fresh folder under the temp dir).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Refuse to run when the target cannot carry out a step of the timeline (instead of
    /// running it with the step skipped and recorded as skipped).
    #[arg(long)]
    pub strict: bool,
    /// Refuse to run unless the timeline (the scenario's steps and the seed's random faults)
    /// holds each of these fault kinds, e.g. `partition,latency,broker-restart`: a guard for a
    /// seed chosen to exercise them.
    #[arg(long, value_delimiter = ',', value_name = "ACTIONS")]
    pub expect_faults: Vec<String>,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// What `lastmile chaos run` with these arguments (without the program name) would refuse before
/// starting anything: arguments that do not parse, a scenario file that does not load, a
/// timeline `--strict` or `--expect-faults` refuses. `Ok` when the run would start.
pub fn preflight<I, S>(args: I) -> Result<(), String>
where
    I: IntoIterator<Item = S>,
    S: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::try_parse_from(std::iter::once("lastmile".into()).chain(args.into_iter().map(Into::into)))
        .map_err(|e| e.to_string())?;
    let Command::Chaos { command: ChaosCommand::Run { file, run } } = cli.command else {
        return Err("not a `chaos run` command line".into());
    };
    let scenario = lastmile_scenarios::load(&file).map_err(|e| e.to_string())?;
    match crate::run::refusal(&scenario, &run) {
        Some(why) => Err(format!("{}: {why}", file.display())),
        None => Ok(()),
    }
}

/// Carry out a parsed command line.
pub fn dispatch(cli: Cli) -> ExitCode {
    let command = cli.command;
    if let Command::Scenario { command: ScenarioCommand::Check { files } } = command {
        return check(&files);
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
                (Some(n), _) if run.target == TargetKind::Kube => {
                    runtime.block_on(operate::scale(service, n, &run.kube))
                }
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
        Command::PortForward { base_port, kube } => runtime.block_on(operate::port_forward(base_port, &kube)),
        Command::Load(args) => runtime.block_on(crate::load::command(&args)),
        Command::Sweep(args) => runtime.block_on(crate::sweep::command(&args)),
    }
}

/// A usage error: the message and exit status 2.
pub(crate) fn usage(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("{e}");
    ExitCode::from(2)
}

/// `scenario check`: each file's summary, or the file, line and field of its first problem.
fn check(files: &[PathBuf]) -> ExitCode {
    let mut ok = true;
    for file in files {
        match lastmile_scenarios::check(file) {
            Ok(summary) => println!("{summary}"),
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
