//! `lastmile sweep --kube`: a sweep over more seeds than one machine runs in a day, as an Indexed
//! Job on the cluster.
//!
//! Why here and not in `lastmile-sim`: the simulator is built with `--cfg madsim`, where madsim
//! replaces tokio's runtime, and the `kube` client needs the real one. So the simulator runs
//! *inside* the pods (`lastmile-sim run --seeds A..B --summary-lines`, one seed range per index),
//! and this module — normal build — orchestrates:
//! 1. the scenario file is validated with the project's loader, then sent to the pods in a
//!    ConfigMap (the pods read the user's file, not one baked into the image);
//! 2. the Job is rendered from `k8s/sweep/indexed-job.yaml` (the single source: this module only
//!    fills in names, counts, image and seeds) and created;
//! 3. the Job is watched (list, then watch; never a sleep): a progress line per change, and as
//!    each index completes or fails for good, its pods' logs are read for their summary lines;
//!    retries are the Job controller's (`backoffLimitPerIndex`);
//! 4. the lines are merged by `lastmile_harness::sweep` (the code `lastmile-sim merge` uses) with
//!    the whole seed range declared, so an index that failed for good shows as missing seeds;
//! 5. the Job (its pods with it) and the ConfigMap are deleted — when the sweep ends, fails, or
//!    is interrupted.

use crate::cli::usage;
use crate::kubernetes::{self, KubeOptions};
use crate::run::{interrupted, wall_clock};
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, EnvVar, Pod};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams, WatchEvent, WatchParams};
use kube::Client;
use lastmile_harness::sweep::{self, SeedRange, SummaryLine, SweepSummary};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The Job template: `k8s/sweep/indexed-job.yaml`, built into the binary.
pub const TEMPLATE: &str = include_str!("../../k8s/sweep/indexed-job.yaml");
/// The container of the template that runs the simulator.
pub const CONTAINER: &str = "sweep";
/// The key of the scenario file in the ConfigMap (the template mounts it by this name).
pub const SCENARIO_KEY: &str = "scenario.toml";
/// The label the Job controller puts on its pods: the Job's name.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
/// The label the Job controller puts on the pods of an Indexed Job: the index.
pub const INDEX_LABEL: &str = "batch.kubernetes.io/job-completion-index";
/// Kubernetes refuses more indexes than this when `backoffLimitPerIndex` is set.
pub const MAX_INDEXES: u64 = 100_000;

/// `lastmile sweep`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct SweepArgs {
    /// Run the sweep as an Indexed Job on the cluster of the kubeconfig (the only way this
    /// command runs; on this machine a sweep is `cargo sim run <file> --seeds A..B --jobs J`).
    #[arg(long)]
    pub kube: bool,
    /// The scenario file (validated here, sent to the pods in a ConfigMap).
    pub file: PathBuf,
    /// The seeds, `A..B` (end exclusive) or `A..=B`.
    #[arg(long)]
    pub seeds: String,
    /// Pods running at once.
    #[arg(long, default_value_t = 10)]
    pub parallelism: u32,
    /// Seeds per index, i.e. per pod (default: a quarter of an even share per pod, 1 to 100).
    #[arg(long)]
    pub seeds_per_index: Option<u64>,
    /// Retries of a failed index, per index.
    #[arg(long, default_value_t = 2)]
    pub backoff_limit_per_index: i32,
    /// The image holding `lastmile-sim` (the Dockerfile's).
    #[arg(long, default_value = "lastmile:dev")]
    pub image: String,
    /// Do not add each seed's random faults.
    #[arg(long)]
    pub no_random_faults: bool,
    /// Run the original matching design.
    #[arg(long)]
    pub naive_matching: bool,
    /// Write every summary line collected here (for `cargo sim merge`); default: a file named
    /// after the Job in the temp dir.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Give up (delete the Job, merge what finished) after this many seconds.
    #[arg(long, default_value_t = 86_400)]
    pub timeout_s: u64,
    /// Kubernetes namespace to run the Job in.
    #[arg(long, env = "LASTMILE_NAMESPACE", default_value = "lastmile")]
    pub namespace: String,
    /// kubeconfig context (default: the current one).
    #[arg(long)]
    pub context: Option<String>,
}

/// What a sweep runs: the numbers the Job is rendered from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepPlan {
    /// The Job's (and ConfigMap's) name.
    pub name: String,
    /// The scenario's name (summary lines carry it).
    pub scenario: String,
    /// The path replay commands name: the user's file.
    pub replay_file: String,
    /// Every seed of the sweep.
    pub seeds: SeedRange,
    /// Seeds per index.
    pub seeds_per_index: u64,
    /// Indexes (the Job's completions).
    pub indexes: u64,
    /// Pods at once.
    pub parallelism: u32,
    /// Retries per index.
    pub backoff_limit_per_index: i32,
    /// Indexes failed for good after which the Job stops: a tenth, at least one.
    pub max_failed_indexes: u64,
    /// The image.
    pub image: String,
    /// Further `lastmile-sim run` flags.
    pub run_flags: Vec<String>,
}

impl SweepPlan {
    /// The plan for `args` and a scenario named `scenario`; `id` makes the Job's name unique.
    pub fn new(args: &SweepArgs, scenario: &str, id: &str) -> Result<SweepPlan, String> {
        let seeds = SeedRange::parse(&args.seeds)?;
        if args.parallelism == 0 {
            return Err("--parallelism must be at least 1".into());
        }
        if args.backoff_limit_per_index < 0 {
            return Err("--backoff-limit-per-index must not be negative".into());
        }
        let seeds_per_index = match args.seeds_per_index {
            Some(0) => return Err("--seeds-per-index must be at least 1".into()),
            Some(n) => n,
            None => seeds.len().div_ceil(u64::from(args.parallelism) * 4).clamp(1, 100),
        };
        let indexes = seeds.len().div_ceil(seeds_per_index);
        if indexes > MAX_INDEXES {
            return Err(format!(
                "{indexes} indexes: Kubernetes takes at most {MAX_INDEXES}; give a larger --seeds-per-index"
            ));
        }
        let mut run_flags = Vec::new();
        if args.no_random_faults {
            run_flags.push("--no-random-faults".to_string());
        }
        if args.naive_matching {
            run_flags.push("--naive-matching".to_string());
        }
        Ok(SweepPlan {
            name: job_name(scenario, id),
            scenario: scenario.to_string(),
            replay_file: args.file.display().to_string(),
            seeds,
            seeds_per_index,
            indexes,
            parallelism: args.parallelism.min(u32::try_from(indexes).unwrap_or(u32::MAX)),
            backoff_limit_per_index: args.backoff_limit_per_index,
            max_failed_indexes: indexes.div_ceil(10).max(1),
            image: args.image.clone(),
            run_flags,
        })
    }

    /// The seeds index `index` runs — what the template's container command computes from
    /// `JOB_COMPLETION_INDEX`.
    pub fn index_seeds(&self, index: u64) -> SeedRange {
        let start = self.seeds.start + index * self.seeds_per_index;
        SeedRange { start, end: (start + self.seeds_per_index).min(self.seeds.end) }
    }

    /// The template with this plan filled in.
    pub fn job(&self, namespace: &str) -> Result<Job, String> {
        let mut job: Job =
            serde_yaml::from_str(TEMPLATE).map_err(|e| format!("k8s/sweep/indexed-job.yaml is no Job: {e}"))?;
        job.metadata.name = Some(self.name.clone());
        job.metadata.namespace = Some(namespace.to_string());
        let spec = job.spec.as_mut().ok_or("the template has no spec")?;
        let count = |n: u64| i32::try_from(n).map_err(|_| format!("{n} does not fit a Job"));
        spec.completions = Some(count(self.indexes)?);
        spec.parallelism = Some(count(u64::from(self.parallelism))?);
        spec.backoff_limit_per_index = Some(self.backoff_limit_per_index);
        spec.max_failed_indexes = Some(count(self.max_failed_indexes)?);
        let pod = spec.template.spec.as_mut().ok_or("the template has no pod spec")?;
        for volume in pod.volumes.iter_mut().flatten() {
            if let Some(config_map) = volume.config_map.as_mut() {
                config_map.name = self.name.clone();
            }
        }
        let container = kubernetes::template_container(pod, CONTAINER)?;
        container.image = Some(self.image.clone());
        let env = container.env.get_or_insert_with(Vec::new);
        let values = [
            ("SWEEP_FIRST_SEED", self.seeds.start.to_string()),
            ("SWEEP_END_SEED", self.seeds.end.to_string()),
            ("SWEEP_SEEDS_PER_INDEX", self.seeds_per_index.to_string()),
            ("SWEEP_REPLAY_FILE", self.replay_file.clone()),
            ("SWEEP_RUN_FLAGS", self.run_flags.join(" ")),
        ];
        for (name, value) in values {
            env.retain(|e| e.name != name);
            env.push(EnvVar { name: name.to_string(), value: Some(value), ..EnvVar::default() });
        }
        Ok(job)
    }

    /// The ConfigMap holding the scenario file's text.
    pub fn config_map(&self, namespace: &str, scenario_text: &str) -> ConfigMap {
        let mut map = ConfigMap::default();
        map.metadata.name = Some(self.name.clone());
        map.metadata.namespace = Some(namespace.to_string());
        map.metadata.labels = Some(BTreeMap::from([
            ("app.kubernetes.io/name".to_string(), "lastmile-sweep".to_string()),
            ("app.kubernetes.io/part-of".to_string(), "lastmile".to_string()),
        ]));
        map.data = Some(BTreeMap::from([(SCENARIO_KEY.to_string(), scenario_text.to_string())]));
        map
    }
}

/// `sweep-<scenario>-<id>`, within the 63 characters a label value (the pods' job-name) allows.
fn job_name(scenario: &str, id: &str) -> String {
    let clean: String =
        scenario.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let clean: String = clean.trim_matches('-').chars().take(30).collect();
    let id: String = id.chars().filter(char::is_ascii_alphanumeric).take(8).collect::<String>().to_ascii_lowercase();
    format!("sweep-{}-{id}", clean.trim_end_matches('-'))
}

/// Parse an index list as the Job status writes it: `1,3-5,7`.
pub fn parse_indexes(text: &str) -> Result<BTreeSet<u64>, String> {
    let bad = || format!("not an index list: {text:?}");
    let mut out = BTreeSet::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                out.extend(a..=b);
            }
            None => {
                out.insert(part.parse().map_err(|_| bad())?);
            }
        }
    }
    Ok(out)
}

/// The Job's state as the sweep follows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct JobState {
    completed: BTreeSet<u64>,
    failed: BTreeSet<u64>,
    active: i32,
    failed_pods: i32,
    /// `Some(true)` once Complete, `Some(false)` once Failed (with the reason).
    finished: Option<(bool, String)>,
}

impl JobState {
    fn of(job: &Job) -> Result<JobState, String> {
        let Some(status) = job.status.as_ref() else { return Ok(JobState::default()) };
        let finished = status.conditions.iter().flatten().find_map(|c| {
            let done = c.status == "True" && (c.type_ == "Complete" || c.type_ == "Failed");
            done.then(|| (c.type_ == "Complete", c.reason.clone().or(c.message.clone()).unwrap_or_default()))
        });
        Ok(JobState {
            completed: parse_indexes(status.completed_indexes.as_deref().unwrap_or(""))?,
            failed: parse_indexes(status.failed_indexes.as_deref().unwrap_or(""))?,
            active: status.active.unwrap_or(0),
            failed_pods: status.failed.unwrap_or(0),
            finished,
        })
    }
}

/// What the sweep has gathered so far.
#[derive(Default)]
struct Gathered {
    /// Summary lines read from the pods' logs.
    lines: Vec<String>,
    /// Indexes whose pods' logs were read.
    read_indexes: BTreeSet<u64>,
    /// Pods whose logs were read.
    read_pods: BTreeSet<String>,
    /// Indexes reported as failed for good.
    announced_failed: BTreeSet<u64>,
    /// Seeds passed and failed in the lines so far (repeats included), for progress.
    passed: u64,
    failed: u64,
    /// The last progress line printed.
    last: String,
}

/// A sweep in progress on the cluster.
struct Sweep {
    plan: SweepPlan,
    jobs: Api<Job>,
    pods: Api<Pod>,
    config_maps: Api<ConfigMap>,
    started: std::time::Instant,
}

impl Sweep {
    fn new(client: Client, namespace: &str, plan: SweepPlan) -> Sweep {
        Sweep {
            plan,
            jobs: Api::namespaced(client.clone(), namespace),
            pods: Api::namespaced(client.clone(), namespace),
            config_maps: Api::namespaced(client, namespace),
            started: wall_clock(),
        }
    }

    /// Create the ConfigMap, then the Job (the ConfigMap is deleted again when that fails).
    async fn create(&self, job: &Job, config_map: &ConfigMap) -> Result<(), String> {
        let name = &self.plan.name;
        self.config_maps
            .create(&PostParams::default(), config_map)
            .await
            .map_err(|e| format!("cannot create the ConfigMap {name}: {e}"))?;
        self.jobs
            .create(&PostParams::default(), job)
            .await
            .map_err(|e| format!("cannot create the Job {name}: {e}"))?;
        Ok(())
    }

    /// Delete the Job with its pods, and the ConfigMap; what was not there is no error.
    async fn delete(&self) -> Vec<String> {
        let name = &self.plan.name;
        let mut problems = Vec::new();
        let gone = |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 404);
        if let Err(e) = self.jobs.delete(name, &DeleteParams::background()).await {
            if !gone(&e) {
                problems.push(format!("cannot delete the Job {name}: {e}"));
            }
        }
        if let Err(e) = self.config_maps.delete(name, &DeleteParams::default()).await {
            if !gone(&e) {
                problems.push(format!("cannot delete the ConfigMap {name}: {e}"));
            }
        }
        problems
    }

    /// Follow the Job until it is finished: list it, then watch it, re-listing when a watch ends.
    async fn follow(&self, gathered: &mut Gathered) -> Result<(bool, String), String> {
        let name = &self.plan.name;
        let by_name = format!("metadata.name={name}");
        loop {
            let list = self
                .jobs
                .list(&ListParams::default().fields(&by_name))
                .await
                .map_err(|e| format!("cannot read the Job {name}: {e}"))?;
            let version = list.metadata.resource_version.clone().unwrap_or_else(|| "0".into());
            let Some(job) = list.items.into_iter().next() else {
                return Err(format!("the Job {name} is gone (deleted by someone else?)"));
            };
            if let Some(end) = self.observe(&job, gathered).await? {
                return Ok(end);
            }
            let params = WatchParams::default().fields(&by_name).timeout(290);
            let events = match self.jobs.watch(&params, &version).await {
                Ok(events) => events,
                Err(e) => return Err(format!("cannot watch the Job {name}: {e}")),
            };
            let mut events = events.boxed();
            loop {
                match events.try_next().await {
                    Ok(Some(WatchEvent::Added(job) | WatchEvent::Modified(job))) => {
                        if let Some(end) = self.observe(&job, gathered).await? {
                            return Ok(end);
                        }
                    }
                    Ok(Some(WatchEvent::Deleted(_))) => {
                        return Err(format!("the Job {name} was deleted by someone else"));
                    }
                    Ok(Some(WatchEvent::Bookmark(_))) => {}
                    // A version too old, a stream cut: list again.
                    Ok(Some(WatchEvent::Error(_))) | Ok(None) | Err(_) => break,
                }
            }
        }
    }

    /// Read the logs of indexes newly completed or failed for good, print progress when
    /// anything changed, and answer how the Job ended once it has.
    async fn observe(&self, job: &Job, gathered: &mut Gathered) -> Result<Option<(bool, String)>, String> {
        let state = JobState::of(job)?;
        let done: Vec<u64> =
            state.completed.union(&state.failed).filter(|i| !gathered.read_indexes.contains(i)).copied().collect();
        for index in done {
            self.read_index(index, gathered).await?;
            gathered.read_indexes.insert(index);
        }
        for index in &state.failed {
            if gathered.announced_failed.insert(*index) {
                println!("  index {index} (seeds {}) failed for good", self.plan.index_seeds(*index));
            }
        }
        let line = format!(
            "{}/{} indexes done, {} failed for good; {} running, {} pods failed; seeds so far: {} passed, {} failed",
            state.completed.len(),
            self.plan.indexes,
            state.failed.len(),
            state.active,
            state.failed_pods,
            gathered.passed,
            gathered.failed
        );
        if line != gathered.last {
            println!("  [{:>5.0} s] {line}", self.started.elapsed().as_secs_f64());
            gathered.last = line;
        }
        Ok(state.finished)
    }

    /// The summary lines of every finished pod of one index (a retried index's failed attempts
    /// too: what they reported before failing counts, duplicates are merged away).
    async fn read_index(&self, index: u64, gathered: &mut Gathered) -> Result<(), String> {
        let selector = format!("{JOB_NAME_LABEL}={},{INDEX_LABEL}={index}", self.plan.name);
        let pods = self
            .pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| format!("cannot list the pods of index {index}: {e}"))?;
        for pod in pods.items {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
            if !matches!(phase, "Succeeded" | "Failed") || gathered.read_pods.contains(&name) {
                continue;
            }
            let params = LogParams { container: Some(CONTAINER.to_string()), ..LogParams::default() };
            let text = match self.pods.logs(&name, &params).await {
                Ok(text) => text,
                Err(e) => {
                    println!("  cannot read the log of {name} (index {index}): {e}");
                    continue;
                }
            };
            for line in text.lines() {
                if let Some(parsed) = SummaryLine::parse(line) {
                    if let SummaryLine::Seed(s) = &parsed {
                        if s.passed {
                            gathered.passed += 1;
                        } else {
                            gathered.failed += 1;
                        }
                    }
                    gathered.lines.push(parsed.to_line());
                }
            }
            gathered.read_pods.insert(name);
        }
        Ok(())
    }

    /// Every line gathered, the whole sweep's range declared first, merged.
    fn merge(&self, gathered: &Gathered) -> (Vec<String>, SweepSummary) {
        let declared = SummaryLine::Range { scenario: self.plan.scenario.clone(), seeds: self.plan.seeds }.to_line();
        let mut lines = vec![declared];
        lines.extend(gathered.lines.iter().cloned());
        let summary = sweep::merge(lines.iter().map(String::as_str), &[]);
        (lines, summary)
    }
}

/// How the following ended.
enum Followed {
    Finished(bool, String),
    Failed(String),
    TimedOut,
    Interrupted,
}

/// `lastmile sweep --kube FILE --seeds A..B`: the whole sweep, cleaned up whatever happens.
pub async fn command(args: &SweepArgs) -> ExitCode {
    if !args.kube {
        return usage(
            "lastmile sweep runs on Kubernetes: add --kube (on this machine: cargo sim run FILE --seeds A..B --jobs J)",
        );
    }
    let scenario = match lastmile_scenarios::load(&args.file) {
        Ok(s) => s,
        Err(e) => return usage(e),
    };
    let text = match std::fs::read_to_string(&args.file) {
        Ok(t) => t,
        Err(e) => return usage(format!("cannot read {}: {e}", args.file.display())),
    };
    let id = lastmile_platform::clock::new_id();
    let plan = match SweepPlan::new(args, &scenario.scenario.name, &id) {
        Ok(p) => p,
        Err(e) => return usage(e),
    };
    let job = match plan.job(&args.namespace) {
        Ok(j) => j,
        Err(e) => return usage(e),
    };
    let config_map = plan.config_map(&args.namespace, &text);
    let options =
        KubeOptions { namespace: args.namespace.clone(), context: args.context.clone(), ..KubeOptions::default() };
    let client = match kubernetes::connect(&options).await {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    println!(
        "lastmile sweep: scenario {} ({}) seeds {}: {} indexes of {} seeds, {} pods at once, {} retries per index",
        plan.scenario,
        plan.replay_file,
        plan.seeds,
        plan.indexes,
        plan.seeds_per_index,
        plan.parallelism,
        plan.backoff_limit_per_index
    );
    println!("  Job {} in namespace {} (image {})", plan.name, args.namespace, plan.image);
    let out = args.out.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("{}.jsonl", plan.name)));
    let sweep = Sweep::new(client, &args.namespace, plan);
    let mut gathered = Gathered::default();
    let followed = tokio::select! {
        biased;
        _ = interrupted() => Followed::Interrupted,
        followed = async {
            if let Err(e) = sweep.create(&job, &config_map).await {
                return Followed::Failed(e);
            }
            match tokio::time::timeout(Duration::from_secs(args.timeout_s), sweep.follow(&mut gathered)).await {
                Ok(Ok((complete, reason))) => Followed::Finished(complete, reason),
                Ok(Err(e)) => Followed::Failed(e),
                Err(_) => Followed::TimedOut,
            }
        } => followed,
    };
    // Whatever happened, nothing of the sweep stays on the cluster.
    let problems = sweep.delete().await;
    if problems.is_empty() {
        println!("  Job {} and its ConfigMap deleted", sweep.plan.name);
    }
    for p in &problems {
        eprintln!("  {p}; delete by hand: kubectl -n {} delete job,configmap {}", args.namespace, sweep.plan.name);
    }
    let (lines, summary) = sweep.merge(&gathered);
    match std::fs::write(&out, lines.join("\n") + "\n") {
        Ok(()) => println!("  summary lines in {} (merge with others: cargo sim merge FILE...)", out.display()),
        Err(e) => eprintln!("  cannot write {}: {e}", out.display()),
    }
    match &followed {
        Followed::Finished(true, _) => println!("  the Job completed"),
        Followed::Finished(false, reason) => println!("  the Job failed ({reason}): its unfinished seeds are missing"),
        Followed::Failed(e) => eprintln!("  the sweep failed: {e}"),
        Followed::TimedOut => println!("  gave up after {} s: the unfinished seeds are missing", args.timeout_s),
        Followed::Interrupted => eprintln!("interrupted: the Job and its ConfigMap were deleted"),
    }
    print!("{}", summary.human());
    match followed {
        Followed::Interrupted => ExitCode::from(130),
        Followed::Failed(_) => ExitCode::FAILURE,
        _ if summary.all_passed() && problems.is_empty() => {
            println!("verdict: PASS");
            ExitCode::SUCCESS
        }
        _ => {
            println!("verdict: FAIL");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: SweepArgs,
    }

    fn args(line: &str) -> SweepArgs {
        Wrap::parse_from(std::iter::once("sweep").chain(line.split_whitespace())).args
    }

    #[test]
    fn indexes_cover_the_seeds_once_and_the_last_one_is_cut_at_the_end() {
        let plan =
            SweepPlan::new(&args("--kube s.toml --seeds 1..100000 --parallelism 50"), "demo", "ab12cd34ef").unwrap();
        assert_eq!((plan.seeds_per_index, plan.indexes, plan.max_failed_indexes), (100, 1000, 100));
        let plan = SweepPlan::new(&args("--kube s.toml --seeds 10..=110 --seeds-per-index 25"), "demo", "x").unwrap();
        assert_eq!(plan.indexes, 5);
        let ranges: Vec<String> = (0..plan.indexes).map(|i| plan.index_seeds(i).to_string()).collect();
        assert_eq!(ranges, ["10..35", "35..60", "60..85", "85..110", "110..111"]);
        assert_eq!(plan.parallelism, 5, "never more pods than indexes");
        assert!(SweepPlan::new(&args("--kube s.toml --seeds 1..200001 --seeds-per-index 1"), "d", "x").is_err());
        assert_eq!(job_name("Matching Outage!", "0123ABCDEF"), "sweep-matching-outage-0123abcd");
    }

    #[test]
    fn job_status_index_lists_parse() {
        assert_eq!(parse_indexes("1,3-5,7").unwrap().into_iter().collect::<Vec<_>>(), [1, 3, 4, 5, 7]);
        assert!(parse_indexes("").unwrap().is_empty());
        assert!(parse_indexes("1,x").is_err());
    }
}
