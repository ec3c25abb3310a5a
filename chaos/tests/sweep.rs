//! `lastmile sweep --kube` against the in-process Kubernetes API (`support/fake_kube.rs`), whose
//! Job controller runs each index as a pod and lets the test decide how each pod ends and what it
//! logs. The pods' logs are made from the container command as rendered: the test runs it with
//! `/bin/sh` and a stub `lastmile-sim` that prints its arguments, so the index → seeds mapping
//! proven is the template's own shell arithmetic.

mod support;

use lastmile_chaos::sweep::{SweepArgs, SweepPlan};
use lastmile_harness::sweep::{SeedRange, SeedSummary, SummaryLine};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::cli::{finish, text};
use support::fake_kube::{FakeKube, JobPodOutcome, JobPodRun};

fn work_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lastmile-sweep-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn scenario_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/demo.toml")
}

/// A directory holding a `lastmile-sim` that prints its arguments, one per line.
fn stub_dir(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let stub_dir = dir.join("stub");
    std::fs::create_dir_all(&stub_dir).unwrap();
    let stub = stub_dir.join("lastmile-sim");
    std::fs::write(&stub, "#!/bin/sh\nfor a in \"$@\"; do echo \"$a\"; done\n").unwrap();
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    stub_dir
}

/// Run a pod's container command (command + args + env, as the Job controller made them) with
/// the stub simulator first on the PATH: the arguments `lastmile-sim` would get.
fn simulator_args(pod: &Value, stub_dir: &Path) -> Vec<String> {
    let container = &pod["spec"]["containers"][0];
    let words: Vec<String> = container["command"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(container["args"].as_array().into_iter().flatten())
        .map(|w| w.as_str().unwrap().to_string())
        .collect();
    let mut command = Command::new(&words[0]);
    command.args(&words[1..]).env_clear().env("PATH", format!("{}:/usr/bin:/bin", stub_dir.display()));
    for e in container["env"].as_array().into_iter().flatten() {
        command.env(e["name"].as_str().unwrap(), e["value"].as_str().unwrap_or(""));
    }
    let out = command.output().unwrap();
    assert!(out.status.success(), "the container command failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(String::from).collect()
}

fn flag(args: &[String], name: &str) -> String {
    let at = args.iter().position(|a| a == name).unwrap_or_else(|| panic!("no {name} in {args:?}"));
    args[at + 1].clone()
}

/// What a pod of the real image would log for `seeds`: progress on stderr (in the same log), the
/// range, a line per seed; the seeds in `failing` fail a rule.
fn pod_log(scenario: &str, replay_file: &str, seeds: SeedRange, failing: &[u64]) -> String {
    let mut log = format!("lastmile-sim: scenario {scenario} seeds {seeds} on 1 jobs\n");
    log += &(SummaryLine::Range { scenario: scenario.into(), seeds }.to_line() + "\n");
    for seed in seeds.start..seeds.end {
        let passed = !failing.contains(&seed);
        let line = SummaryLine::Seed(SeedSummary {
            scenario: scenario.into(),
            seed,
            passed,
            failed_checks: if passed { vec![] } else { vec!["no_double_match".into()] },
            first_violation: (!passed).then(|| format!("ride r-{seed} is on two live trips")),
            replay: format!("cargo sim run {replay_file} --seed {seed}"),
        });
        log += &format!("[{:>3}/{}] seed {seed}: ...\n{}\n", seed - seeds.start + 1, seeds.len(), line.to_line());
    }
    log
}

/// The seeds each index ran, by what its container command passed to the simulator.
type Ran = Arc<Mutex<Vec<(u64, u32, Vec<String>)>>>;

/// A hook playing the image: each pod runs the rendered command against the stub and logs what
/// the simulator would; `fails(index, attempt)` makes a pod die (exit 1) after half its seeds.
fn play_the_image(
    fake: &FakeKube,
    dir: &Path,
    failing_seeds: Vec<u64>,
    fails: impl Fn(u64, u32) -> bool + Send + Sync + 'static,
) -> Ran {
    let ran: Ran = Arc::default();
    let stub = stub_dir(dir);
    let seen = ran.clone();
    fake.on_job_pod(move |run: &JobPodRun| {
        let args = simulator_args(&run.pod, &stub);
        seen.lock().unwrap().push((run.index, run.attempt, args.clone()));
        let seeds = SeedRange::parse(&flag(&args, "--seeds")).unwrap();
        let log = pod_log("demo", &flag(&args, "--replay-file"), seeds, &failing_seeds);
        Some(if fails(run.index, run.attempt) {
            let half: String = log.lines().take(2 + seeds.len() as usize).map(|l| format!("{l}\n")).collect();
            JobPodOutcome { exit_code: 1, log: half + "the node went away\n" }
        } else {
            JobPodOutcome { exit_code: 0, log }
        })
    });
    ran
}

fn lastmile(fake: &FakeKube, dir: &Path, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_lastmile"))
        .args(args)
        .env("KUBECONFIG", fake.kubeconfig(dir))
        .env_remove("LASTMILE_NAMESPACE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The Job and its ConfigMap are gone, deleted by the sweep (the Job with its pods).
fn nothing_left(fake: &FakeKube, job: &str, out: &str) {
    assert!(fake.jobs().is_empty(), "a Job is left: {out}");
    assert!(fake.config_maps().is_empty(), "a ConfigMap is left: {out}");
    assert!(fake.job_pods(job).is_empty(), "pods of the Job are left: {out}");
    assert_eq!(fake.job_deletions(), [(job.to_string(), Some("Background".to_string()))], "{out}");
    assert_eq!(fake.config_map_deletions(), [job.to_string()], "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_failing_once_is_retried_and_the_summary_lists_failed_seeds_with_replay_commands() {
    let fake = FakeKube::start(&[]).await;
    let dir = work_dir("retried");
    // Index 1 (seeds 15..20) loses its pod once; seeds 13 and 27 fail a rule.
    let ran = play_the_image(&fake, &dir, vec![13, 27], |index, attempt| index == 1 && attempt == 0);
    let file = scenario_file().display().to_string();
    let out_file = dir.join("sweep.jsonl");
    let args = [
        "sweep",
        "--kube",
        &file,
        "--seeds",
        "10..30",
        "--seeds-per-index",
        "5",
        "--parallelism",
        "2",
        "--out",
        out_file.to_str().unwrap(),
    ];
    let out = finish(lastmile(&fake, &dir, &args)).await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "failing seeds fail the sweep: {shown}");

    // The Job as created: an Indexed Job of 4 indexes, 2 at once, retried per index.
    let jobs = fake.created_jobs();
    assert_eq!(jobs.len(), 1, "{shown}");
    let job = &jobs[0];
    let name = job["metadata"]["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("sweep-demo-"), "{name}");
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"], "Indexed");
    assert_eq!((spec["completions"].as_u64(), spec["parallelism"].as_u64()), (Some(4), Some(2)));
    assert_eq!(spec["backoffLimitPerIndex"].as_u64(), Some(2));
    assert_eq!(spec["maxFailedIndexes"].as_u64(), Some(1));
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["containers"][0]["image"], "lastmile:dev");
    assert_eq!(pod["volumes"][0]["configMap"]["name"], name.as_str(), "the scenario's ConfigMap is mounted");
    let maps = fake.created_config_maps();
    assert_eq!(maps.len(), 1);
    assert_eq!(maps[0]["metadata"]["name"], name.as_str());
    let scenario_text = std::fs::read_to_string(scenario_file()).unwrap();
    assert_eq!(maps[0]["data"]["scenario.toml"], scenario_text.as_str(), "the pods get the user's file");

    // Each index ran its own seeds (the template's arithmetic), the mounted file, replays naming
    // the user's path; index 1 twice.
    let ran = ran.lock().unwrap().clone();
    let mut seeds: Vec<(u64, u32, String)> = ran.iter().map(|(i, a, args)| (*i, *a, flag(args, "--seeds"))).collect();
    seeds.sort();
    assert_eq!(
        seeds,
        [(0, 0, "10..15"), (1, 0, "15..20"), (1, 1, "15..20"), (2, 0, "20..25"), (3, 0, "25..30")].map(|(i, a, s)| (
            i,
            a,
            s.to_string()
        ))
    );
    for (_, _, args) in &ran {
        assert_eq!(args[..2], ["run", "/etc/lastmile/scenario/scenario.toml"]);
        assert_eq!(flag(args, "--replay-file"), file);
        assert!(args.contains(&"--summary-lines".to_string()), "{args:?}");
    }
    let runs: Vec<(u64, u32, i32)> = fake.job_pod_runs().into_iter().map(|(_, i, a, code)| (i, a, code)).collect();
    assert!(runs.contains(&(1, 0, 1)) && runs.contains(&(1, 1, 0)), "index 1 failed once, then passed: {runs:?}");

    // One summary: every seed, the two failures with their replay commands, nothing missing.
    assert!(shown.contains("summary: 20 seeds run, 18 passed, 2 failed, 0 missing"), "{shown}");
    for seed in [13, 27] {
        assert!(shown.contains(&format!("demo seed {seed}: FAIL [no_double_match]")), "{shown}");
        assert!(shown.contains(&format!("replay: cargo sim run {file} --seed {seed}")), "{shown}");
    }
    assert!(shown.contains("4/4 indexes done"), "progress lines: {shown}");
    assert!(shown.contains("verdict: FAIL"), "{shown}");
    // The lines kept for later merges merge to the same summary.
    let kept = std::fs::read_to_string(&out_file).unwrap();
    let merged = lastmile_harness::sweep::merge(kept.lines(), &[]);
    assert_eq!((merged.runs, merged.passed, merged.failed.len(), merged.missing_seeds()), (20, 18, 2, 0));
    nothing_left(&fake, &name, &shown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_failing_for_good_is_reported_as_missing_seeds_and_the_job_is_deleted() {
    let fake = FakeKube::start(&[]).await;
    let dir = work_dir("for-good");
    // Index 2 (seeds 20..25) dies every time, after logging seeds 20 and 21.
    let _ran = play_the_image(&fake, &dir, vec![], |index, _| index == 2);
    let file = scenario_file().display().to_string();
    let args = [
        "sweep",
        "--kube",
        &file,
        "--seeds",
        "10..30",
        "--seeds-per-index",
        "5",
        "--parallelism",
        "3",
        "--backoff-limit-per-index",
        "1",
    ];
    let out = finish(lastmile(&fake, &dir, &args)).await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    let attempts: Vec<u32> = fake.job_pod_runs().into_iter().filter(|r| r.1 == 2).map(|r| r.2).collect();
    assert_eq!(attempts, [0, 1], "one retry for index 2 (--backoff-limit-per-index 1)");
    assert_eq!(shown.matches("index 2 (seeds 20..25) failed for good").count(), 1, "said once: {shown}");
    // What the failed pods logged before dying counts; the rest of the index is missing.
    assert!(shown.contains("summary: 17 seeds run, 17 passed, 0 failed, 3 missing"), "{shown}");
    assert!(shown.contains("demo: no result for seeds 22..25"), "{shown}");
    assert!(shown.contains("the Job failed (FailedIndexes)"), "{shown}");
    let name = fake.created_jobs()[0]["metadata"]["name"].as_str().unwrap().to_string();
    nothing_left(&fake, &name, &shown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_job_and_an_interrupted_sweep_leave_nothing_behind() {
    // The Job is refused: the ConfigMap created before it is deleted again.
    let fake = FakeKube::start(&[]).await;
    let dir = work_dir("refused");
    fake.fail_job_create();
    let file = scenario_file().display().to_string();
    let out = finish(lastmile(&fake, &dir, &["sweep", "--kube", &file, "--seeds", "1..10"])).await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(shown.contains("cannot create the Job"), "{shown}");
    assert!(fake.config_maps().is_empty() && fake.jobs().is_empty(), "{shown}");
    assert_eq!(fake.config_map_deletions().len(), 1, "{shown}");

    // Ctrl-C while the pods run: the Job (with its pods) and the ConfigMap are deleted.
    let fake = FakeKube::start(&[]).await;
    let dir = work_dir("interrupted");
    fake.on_job_pod(|_| None); // every pod runs until deleted
    let child = lastmile(&fake, &dir, &["sweep", "--kube", &file, "--seeds", "1..10", "--parallelism", "2"]);
    let mut running = false;
    for _ in 0..600 {
        if let Some(job) = fake.jobs().first() {
            if fake.job_pods(job).len() == 2 {
                running = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(running, "the Job's pods never started");
    let name = fake.jobs()[0].clone();
    // SAFETY: signalling a child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = finish(child).await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(130), "{shown}");
    assert!(shown.contains("interrupted: the Job and its ConfigMap were deleted"), "{shown}");
    nothing_left(&fake, &name, &shown);
}

/// Nothing reaches the cluster before the scenario file passed the project's loader, and the
/// command says where sweeps run without `--kube`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_scenario_is_refused_before_anything_is_created() {
    let fake = FakeKube::start(&[]).await;
    let dir = work_dir("broken");
    let broken = dir.join("broken.toml");
    std::fs::write(&broken, "[scenario]\nname = \"x\"\nduration_s = \"long\"\n").unwrap();
    let out = finish(lastmile(&fake, &dir, &["sweep", "--kube", broken.to_str().unwrap(), "--seeds", "1..10"])).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("broken.toml"), "the loader's error names the file: {}", text(&out));
    assert!(fake.created_jobs().is_empty() && fake.created_config_maps().is_empty());

    let file = scenario_file().display().to_string();
    let out = finish(lastmile(&fake, &dir, &["sweep", &file, "--seeds", "1..10"])).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--kube") && text(&out).contains("cargo sim run"), "{}", text(&out));
}

/// The template's shell arithmetic and [`SweepPlan::index_seeds`] agree for every index,
/// including a last index cut short; the flags reach the simulator.
#[test]
fn the_container_command_runs_the_seeds_the_plan_gives_each_index() {
    use clap::Parser;
    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: SweepArgs,
    }
    let line = "sweep --kube scenarios/demo.toml --seeds 7..=100 --seeds-per-index 8 --no-random-faults";
    let args = Wrap::parse_from(line.split_whitespace()).args;
    let plan = SweepPlan::new(&args, "demo", "0123456789abcdef").unwrap();
    assert_eq!(plan.indexes, 12);
    let job = serde_json::to_value(plan.job("lastmile").unwrap()).unwrap();
    let stub = stub_dir(&work_dir("command"));
    for index in 0..plan.indexes {
        let mut pod = job["spec"]["template"].clone();
        let env = pod["spec"]["containers"][0]["env"].as_array_mut().unwrap();
        env.push(serde_json::json!({ "name": "JOB_COMPLETION_INDEX", "value": index.to_string() }));
        let got = simulator_args(&pod, &stub);
        assert_eq!(flag(&got, "--seeds"), plan.index_seeds(index).to_string(), "index {index}");
        assert_eq!(flag(&got, "--replay-file"), "scenarios/demo.toml");
        assert_eq!(got.last().map(String::as_str), Some("--no-random-faults"));
    }
    assert_eq!(plan.index_seeds(11).to_string(), "95..101", "the last index stops at the sweep's end");
}
