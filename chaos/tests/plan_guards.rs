//! `--strict` and `--expect-faults` refuse a run whose timeline would skip a step or lacks the
//! fault kinds it was chosen for — before anything starts (no broker, no service process).

use std::process::{Command, Output};

fn lastmile(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lastmile"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn a_seed_without_the_expected_faults_is_refused_before_anything_starts() {
    // Seed 1 of matching-outage draws a crash and a poison, no partition.
    let out = lastmile(&[
        "chaos",
        "run",
        "scenarios/matching-outage.toml",
        "--seed",
        "1",
        "--expect-faults",
        "partition,broker-restart",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("the timeline of seed 1 has no partition step"), "{said}");
    assert!(!said.contains("starting"), "nothing may start: {said}");

    let out = lastmile(&["chaos", "run", "scenarios/matching-outage.toml", "--expect-faults", "earthquake"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("\"earthquake\" is not a step action"), "{}", text(&out));
}

#[test]
fn strict_refuses_a_step_the_target_would_skip() {
    // Seed 2 of matching-outage draws a broker restart: the shared broker cannot do it unless
    // its node is named.
    let out =
        lastmile(&["chaos", "run", "scenarios/matching-outage.toml", "--seed", "2", "--broker", "shared", "--strict"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("--strict: the Local target cannot carry out") && said.contains("broker-restart"), "{said}");
    assert!(!said.contains("starting"), "nothing may start: {said}");
}
