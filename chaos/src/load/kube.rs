//! `lastmile load --target kube`: the load generator as a Job inside the cluster.
//!
//! Measured from this machine through port-forwards, every figure would be the tunnels' (one
//! websocket per connection through the API server), not the services'. So the generator runs
//! where the services' other callers do, in a pod of the deployment's namespace, and this module
//! only orchestrates, the way [`crate::sweep`] does for its Indexed Job:
//! 1. the Job is rendered from `k8s/load/job.yaml` (the single source: this module fills in the
//!    name, the image and the container's `args`; the `command` that names the Services' DNS
//!    names, the Secrets and the scratch volume stay as the file has them) and created;
//! 2. the Job is watched (list, then watch, by [`kubernetes::wait_for`]; never a sleep) until it
//!    completes or fails, or the run's time is up;
//! 3. the pod's log — the report and the verdict of `lastmile load --target endpoints` — is read
//!    and printed; the exit status is that verdict's, as for a local run;
//! 4. the Job is deleted with its pod — when the run ends, fails, times out or is interrupted.

use crate::cli::{usage, LoadArgs};
use crate::kubernetes;
use crate::run::{interrupted, wall_clock};
use crate::sweep::JOB_NAME_LABEL;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

/// The Job template: `k8s/load/job.yaml`, built into the binary.
pub const TEMPLATE: &str = include_str!("../../../k8s/load/job.yaml");
/// The container of the template that runs the generator.
pub const CONTAINER: &str = "load";
/// The `app.kubernetes.io/name` of the generator's pods: the NetworkPolicies let this name in.
pub const POD_NAME_LABEL: &str = "lastmile-load";

/// The Job of one load run: what the template is filled in with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadJob {
    /// The Job's name: `lastmile-load-<run id>`.
    pub name: String,
    /// The image holding `lastmile`.
    pub image: String,
    /// The container's `args`: the run's own flags, after the template's `command`.
    pub args: Vec<String>,
}

impl LoadJob {
    /// The Job for `args`, tagged `run_id` (already validated by `parse_run_id`).
    pub fn new(args: &LoadArgs, run_id: &str) -> Result<LoadJob, String> {
        let image = args.image.trim();
        if image.is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("--image {:?} is not an image reference", args.image));
        }
        let args = [
            ("--rate", args.rate.to_string()),
            ("--duration-s", args.duration_s.to_string()),
            ("--max-in-flight", args.max_in_flight.to_string()),
            ("--match-rides", args.match_rides.to_string()),
            ("--run-id", run_id.to_string()),
        ];
        Ok(LoadJob {
            name: format!("lastmile-load-{run_id}"),
            image: image.to_string(),
            args: args.into_iter().flat_map(|(flag, value)| [flag.to_string(), value]).collect(),
        })
    }

    /// The template with this run filled in.
    pub fn job(&self, namespace: &str) -> Result<Job, String> {
        let mut job: Job = serde_yaml::from_str(TEMPLATE).map_err(|e| format!("k8s/load/job.yaml is no Job: {e}"))?;
        job.metadata.name = Some(self.name.clone());
        job.metadata.namespace = Some(namespace.to_string());
        let pod = job.spec.as_mut().and_then(|s| s.template.spec.as_mut()).ok_or("the template has no pod spec")?;
        let container = crate::kubernetes::template_container(pod, CONTAINER)?;
        container.image = Some(self.image.clone());
        container.args = Some(self.args.clone());
        Ok(job)
    }
}

/// How long a run may take at most: the pod's start (`--ready-timeout-s`), then the generator's
/// own bound — the readiness checks, the probes, the match phase with every ride waited for in
/// full, twice the throughput phase — and a minute to spare.
pub fn run_bound(args: &LoadArgs) -> Duration {
    let rides = args.match_rides as f64;
    let generator_s = 4.0 * 30.0 + 4.0 + rides * (0.1 + 5.0) + 2.0 * args.duration_s + 60.0;
    Duration::from_secs(args.kube.ready_timeout_s) + Duration::from_secs_f64(generator_s)
}

/// How following the Job ended.
enum Followed {
    /// The Job finished: complete (`true`) or failed, with the reason its condition gives.
    Finished(bool, String),
    /// The Job could not be created or followed.
    Failed(String),
    /// The run's time was up.
    TimedOut(String),
    /// Ctrl-C or SIGTERM.
    Interrupted,
}

/// A finished (or, after a timeout, running) pod of the Job: its name, exit code and log.
struct PodEnd {
    name: String,
    exit_code: Option<i32>,
    log: Result<String, String>,
}

/// `lastmile load --target kube`: the run, cleaned up whatever happens.
pub async fn command(args: &LoadArgs) -> ExitCode {
    let run_id = args.run_id.clone().unwrap_or_else(super::fresh_run_id);
    let plan = match LoadJob::new(args, &run_id) {
        Ok(p) => p,
        Err(e) => return usage(e),
    };
    let namespace = args.kube.namespace.clone();
    let job = match plan.job(&namespace) {
        Ok(j) => j,
        Err(e) => return usage(e),
    };
    let client = match kubernetes::connect(&args.kube.options()).await {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let timeout = args.timeout_s.map(Duration::from_secs).unwrap_or_else(|| run_bound(args));
    println!(
        "lastmile load --target kube: {} rides to waiting drivers, then {} ride requests/s for {} s (at most {} in \
         flight), generated inside the cluster",
        args.match_rides, args.rate, args.duration_s, args.max_in_flight
    );
    println!(
        "  Job {} in namespace {} (image {}; run {run_id}); gives up after {} s",
        plan.name,
        namespace,
        plan.image,
        timeout.as_secs()
    );
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    let followed = tokio::select! {
        biased;
        _ = interrupted() => Followed::Interrupted,
        followed = async {
            if let Err(e) = jobs.create(&PostParams::default(), &job).await {
                return Followed::Failed(format!("cannot create the Job {}: {e}", plan.name));
            }
            follow(&jobs, &plan.name, timeout).await
        } => followed,
    };
    // The log before the Job goes: its pod goes with it.
    let ends = match followed {
        Followed::Interrupted | Followed::Failed(_) => Vec::new(),
        _ => pod_ends(&pods, &plan.name).await,
    };
    // Whatever happened, nothing of the run stays on the cluster.
    let problem = delete(&jobs, &plan.name).await;
    match &problem {
        None => println!("  Job {} deleted", plan.name),
        Some(p) => eprintln!("  {p}; delete by hand: kubectl -n {namespace} delete job {}", plan.name),
    }
    let mut verdicts = Vec::new();
    for end in &ends {
        let exit = end.exit_code.map_or("still running".to_string(), |c| format!("exit {c}"));
        println!("  log of {} ({exit}):", end.name);
        match &end.log {
            Ok(log) => {
                print!("{log}");
                if !log.ends_with('\n') && !log.is_empty() {
                    println!();
                }
                verdicts.extend(log.lines().filter(|l| l.starts_with("verdict: ")).map(str::to_string));
            }
            Err(e) => println!("  cannot read it: {e}"),
        }
    }
    let pod_passed = verdicts.len() == 1 && verdicts[0].starts_with("verdict: PASS");
    let pod_failed = verdicts.iter().any(|v| v.starts_with("verdict: FAIL"));
    match followed {
        Followed::Interrupted => {
            match problem {
                None => eprintln!("interrupted: the load Job was deleted"),
                Some(_) => eprintln!("interrupted: the load Job could not be deleted (above)"),
            }
            ExitCode::from(130)
        }
        Followed::Failed(e) => {
            eprintln!("lastmile load: {e}");
            ExitCode::FAILURE
        }
        Followed::Finished(true, _) if pod_passed && problem.is_none() => ExitCode::SUCCESS,
        Followed::Finished(true, _) if pod_passed => {
            println!("verdict: FAIL — the run passed, but its Job could not be deleted");
            ExitCode::FAILURE
        }
        // The pod's own FAIL verdict is above, with its report.
        Followed::Finished(_, _) if pod_failed => ExitCode::FAILURE,
        Followed::Finished(complete, reason) => {
            let how = if complete { "completed".to_string() } else { format!("failed ({reason})") };
            let codes: Vec<String> =
                ends.iter().map(|e| e.exit_code.map_or("no exit code".into(), |c| format!("exit {c}"))).collect();
            println!(
                "verdict: FAIL — the load Job {how} without a verdict in its log (pod: {}); is the image's lastmile \
                 this one? (--image)",
                if codes.is_empty() { "none found".to_string() } else { codes.join(", ") }
            );
            ExitCode::FAILURE
        }
        Followed::TimedOut(e) => {
            println!("verdict: FAIL — no result: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Whether the Job has finished: `Some((complete, reason))` once a Complete or Failed condition
/// is true.
fn finished(job: &Job) -> Option<(bool, String)> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions.iter().find_map(|c| {
        let done = c.status == "True" && (c.type_ == "Complete" || c.type_ == "Failed");
        done.then(|| (c.type_ == "Complete", c.reason.clone().or(c.message.clone()).unwrap_or_default()))
    })
}

/// Follow the Job until it finishes (a line when its pod starts), or `timeout` passes.
async fn follow(jobs: &Api<Job>, name: &str, timeout: Duration) -> Followed {
    let started = wall_clock();
    // The Job as last seen (`None`: gone), and whether its pod was announced.
    let last: Mutex<(Option<Job>, bool)> = Mutex::new((None, false));
    let selector = ListParams::default().fields(&format!("metadata.name={name}"));
    let waited = kubernetes::wait_for(jobs, &selector, &format!("the Job {name} to finish"), timeout, |found| {
        let mut last = last.lock().expect("not poisoned");
        let Some(job) = found.first() else {
            last.0 = None;
            return true;
        };
        let active = job.status.as_ref().and_then(|s| s.active).unwrap_or(0);
        if active > 0 && !last.1 {
            last.1 = true;
            println!(
                "  [{:>4.0} s] the load pod runs; its report follows when it ends",
                started.elapsed().as_secs_f64()
            );
        }
        last.0 = Some(job.clone());
        finished(job).is_some()
    })
    .await;
    if let Err(e) = waited {
        return Followed::TimedOut(e.to_string());
    }
    let job = last.into_inner().expect("not poisoned").0;
    match job.as_ref().and_then(finished) {
        Some((complete, reason)) => Followed::Finished(complete, reason),
        None => Followed::Failed(format!("the Job {name} is gone (deleted by someone else?)")),
    }
}

/// The Job's pods (one: the Job is not retried), oldest first, with their exit codes and logs.
async fn pod_ends(pods: &Api<Pod>, name: &str) -> Vec<PodEnd> {
    let selector = format!("{JOB_NAME_LABEL}={name}");
    let mut found = match pods.list(&ListParams::default().labels(&selector)).await {
        Ok(list) => list.items,
        Err(e) => {
            return vec![PodEnd {
                name: format!("the pods of {name}"),
                exit_code: None,
                log: Err(format!("cannot list them: {e}")),
            }]
        }
    };
    found.sort_by_key(|p| (p.metadata.creation_timestamp.clone(), p.metadata.name.clone()));
    let mut ends = Vec::new();
    for pod in found {
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let exit_code = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.name == CONTAINER))
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.terminated.as_ref())
            .map(|t| t.exit_code);
        let params = LogParams { container: Some(CONTAINER.to_string()), ..LogParams::default() };
        let log = pods.logs(&pod_name, &params).await.map_err(|e| e.to_string());
        ends.push(PodEnd { name: pod_name, exit_code, log });
    }
    ends
}

/// Delete the Job with its pod; a Job that is not there is no problem.
async fn delete(jobs: &Api<Job>, name: &str) -> Option<String> {
    match jobs.delete(name, &DeleteParams::background()).await {
        Ok(_) => None,
        Err(kube::Error::Api(s)) if s.code == 404 => None,
        Err(e) => Some(format!("cannot delete the Job {name}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command, LoadTarget};
    use clap::Parser;

    fn args(line: &str) -> LoadArgs {
        let argv = ["lastmile", "load"].into_iter().map(String::from).chain(line.split_whitespace().map(String::from));
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Load(args) => args,
            other => panic!("not load: {other:?}"),
        }
    }

    /// The pod runs the template's command with the args filled in: that line must be one the
    /// `lastmile` of the image accepts, as an endpoints run against the Services' DNS names.
    #[test]
    fn the_rendered_pod_runs_an_endpoints_load_against_the_services_dns_names() {
        let plan =
            LoadJob::new(&args("--target kube --rate 5000 --duration-s 30 --match-rides 50"), "ab12cd34ef56").unwrap();
        assert_eq!(plan.name, "lastmile-load-ab12cd34ef56");
        let job = plan.job("lastmile").unwrap();
        assert_eq!(job.metadata.name.as_deref(), Some(plan.name.as_str()));
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let c = pod.containers.iter().find(|c| c.name == CONTAINER).unwrap();
        assert_eq!(c.image.as_deref(), Some("lastmile:dev"));
        let words: Vec<String> = c.command.clone().unwrap().into_iter().chain(c.args.clone().unwrap()).collect();
        assert_eq!(words[..2], ["lastmile", "load"]);
        let parsed = args(&words[2..].join(" "));
        assert_eq!(parsed.target, LoadTarget::Endpoints);
        assert_eq!(parsed.user_url.as_deref(), Some("http://user-service:8081"));
        assert_eq!(parsed.location_url.as_deref(), Some("http://location-service:8082"));
        assert_eq!(parsed.trip_url.as_deref(), Some("http://trip-service:8083"));
        assert_eq!(parsed.disk_dir.as_deref(), Some(std::path::Path::new("/scratch")));
        assert_eq!((parsed.rate, parsed.duration_s, parsed.match_rides), (5000.0, 30.0, 50));
        assert_eq!(parsed.run_id.as_deref(), Some("ab12cd34ef56"));
        assert_eq!(crate::load::refuse_misplaced(&parsed), Ok(()));
        // The pods carry the name the NetworkPolicies let in.
        let labels = job.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().labels.clone().unwrap();
        assert_eq!(labels.get(kubernetes::NAME_LABEL).map(String::as_str), Some(POD_NAME_LABEL));
    }

    #[test]
    fn an_image_that_is_no_reference_is_refused() {
        let mut a = args("--target kube");
        for bad in ["", "lastmile:dev --privileged", "a\nb"] {
            a.image = bad.to_string();
            assert!(LoadJob::new(&a, "x1").is_err(), "{bad:?}");
        }
        a.image = "registry.example/lastmile@sha256:0123".into();
        assert!(LoadJob::new(&a, "x1").is_ok());
    }

    #[test]
    fn the_run_bound_covers_the_pods_start_and_the_generators_worst_case() {
        let a = args("--target kube --duration-s 10 --match-rides 100 --ready-timeout-s 180");
        let bound = run_bound(&a).as_secs();
        // 180 s start + 120 s readiness + 4 s probes + 510 s match phase + 20 s + 60 s.
        assert!((890..=900).contains(&bound), "{bound}");
    }
}
