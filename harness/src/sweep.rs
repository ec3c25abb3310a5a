//! Sweep results as lines, and their merge: what a sweep over many seeds leaves behind, wherever
//! its seeds ran (one machine, the pods of a Kubernetes Job, several runs on several days).
//!
//! A sweep writes one JSON object per line (`lastmile-sim run FILE --seeds A..B --summary-lines`):
//! first a [`SummaryLine::Range`] declaring the seeds it set out to run, then a
//! [`SummaryLine::Seed`] per seed as it finishes. Lines that are not summary lines (a pod log's
//! progress output) are skipped and counted. [`merge`] folds any number of such streams into one
//! [`SweepSummary`]: seeds run, passed, failed with their replay commands, and the seeds of the
//! declared ranges that no line reports (a worker that died, an index of a Job that failed for
//! good).
//!
//! The same `(scenario, seed)` reported twice counts once. **A failure wins**: a run is a pure
//! function of its seed, so two verdicts that differ mean a nondeterminism or two different builds,
//! and hiding the failing one would hide exactly that; such seeds are listed as conflicts too.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// Seeds `start..end` (end exclusive), as `--seeds` takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeedRange {
    /// The first seed.
    pub start: u64,
    /// One past the last seed.
    pub end: u64,
}

impl SeedRange {
    /// Parse `A..B` (end exclusive) or `A..=B`; an empty range is refused.
    pub fn parse(text: &str) -> Result<SeedRange, String> {
        let bad = || format!("--seeds {text:?}: expected A..B or A..=B with A < B");
        let (a, b) = text.split_once("..").ok_or_else(bad)?;
        let start: u64 = a.trim().parse().map_err(|_| bad())?;
        let end = match b.strip_prefix('=') {
            Some(b) => b.trim().parse::<u64>().map_err(|_| bad())?.checked_add(1).ok_or_else(bad)?,
            None => b.trim().parse().map_err(|_| bad())?,
        };
        if end <= start {
            return Err(bad());
        }
        Ok(SeedRange { start, end })
    }

    /// How many seeds.
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether it holds no seed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Display for SeedRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

/// The verdict of one seed, as one line of a sweep's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedSummary {
    /// The scenario's name (`[scenario] name`): with the seed, what identifies the run.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// Whether every rule and expectation held.
    pub passed: bool,
    /// The rules that failed (`"crashed"` when the simulation itself died).
    pub failed_checks: Vec<String>,
    /// The first violation's message, or why the run crashed: enough to triage without replaying.
    pub first_violation: Option<String>,
    /// The one command that replays the run.
    pub replay: String,
}

/// One line of a sweep's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SummaryLine {
    /// The seeds a sweep set out to run: what makes a missing seed visible.
    Range {
        /// The scenario's name.
        scenario: String,
        /// The seeds.
        seeds: SeedRange,
    },
    /// One seed's verdict.
    Seed(SeedSummary),
}

impl SummaryLine {
    /// The line as written: one JSON object, no newline.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("summary lines serialize")
    }

    /// A summary line, or `None` for any other line (progress output in a pod's log).
    pub fn parse(line: &str) -> Option<SummaryLine> {
        let line = line.trim();
        if !line.starts_with('{') {
            return None;
        }
        serde_json::from_str(line).ok()
    }
}

/// Every seed of several sweeps, merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepSummary {
    /// Distinct `(scenario, seed)` runs reported.
    pub runs: u64,
    /// Of those, the ones that passed (every report of them passed).
    pub passed: u64,
    /// The failing runs, by scenario and seed, each with its replay command.
    pub failed: Vec<SeedSummary>,
    /// Per scenario, the seeds of its declared ranges no line reports, as ranges.
    pub missing: BTreeMap<String, Vec<SeedRange>>,
    /// Runs reported both passing and failing (the failure is what counts; see the module docs).
    pub conflicts: Vec<(String, u64)>,
    /// Seed lines beyond the first for the same run.
    pub duplicates: u64,
    /// Lines that were not summary lines.
    pub other_lines: u64,
}

impl SweepSummary {
    /// Seeds of declared ranges that no line reports.
    pub fn missing_seeds(&self) -> u64 {
        self.missing.values().flatten().map(SeedRange::len).sum()
    }

    /// Whether every run passed and no declared seed is missing.
    pub fn all_passed(&self) -> bool {
        self.failed.is_empty() && self.missing.is_empty() && self.runs > 0
    }

    /// The summary for a reader: counts, then every failing seed with its replay command, then
    /// the missing ranges.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let missing = self.missing_seeds();
        let _ = writeln!(
            out,
            "summary: {} seeds run, {} passed, {} failed, {missing} missing",
            self.runs,
            self.passed,
            self.failed.len()
        );
        for s in &self.failed {
            let why = s.first_violation.as_deref().unwrap_or("");
            let _ = writeln!(out, "  {} seed {}: FAIL [{}] {why}", s.scenario, s.seed, s.failed_checks.join(", "));
            let _ = writeln!(out, "    replay: {}", s.replay);
        }
        for (scenario, ranges) in &self.missing {
            let shown: Vec<String> = ranges.iter().map(SeedRange::to_string).collect();
            let _ = writeln!(out, "  {scenario}: no result for seeds {}", shown.join(", "));
        }
        for (scenario, seed) in &self.conflicts {
            let _ = writeln!(
                out,
                "  {scenario} seed {seed}: reported both passing and failing (a nondeterminism, or two builds)"
            );
        }
        if self.duplicates > 0 {
            let _ = writeln!(out, "  {} seed lines repeated a run already reported", self.duplicates);
        }
        if self.runs == 0 {
            let _ = writeln!(out, "  no seed line at all: nothing was judged");
        }
        out
    }
}

/// Merge summary lines from any number of sources (already split into lines; other lines are
/// skipped and counted). `declared` adds ranges to those the lines declare, for a caller that
/// knows what should have run even where no worker started.
pub fn merge<'a>(lines: impl IntoIterator<Item = &'a str>, declared: &[(String, SeedRange)]) -> SweepSummary {
    let mut ranges: BTreeMap<String, Vec<SeedRange>> = BTreeMap::new();
    for (scenario, range) in declared {
        ranges.entry(scenario.clone()).or_default().push(*range);
    }
    let mut seeds: BTreeMap<(String, u64), SeedSummary> = BTreeMap::new();
    let mut conflicts = BTreeSet::new();
    let mut summary = SweepSummary::default();
    for line in lines {
        match SummaryLine::parse(line) {
            None if line.trim().is_empty() => {}
            None => summary.other_lines += 1,
            Some(SummaryLine::Range { scenario, seeds }) => ranges.entry(scenario).or_default().push(seeds),
            Some(SummaryLine::Seed(s)) => {
                let key = (s.scenario.clone(), s.seed);
                match seeds.get_mut(&key) {
                    None => {
                        seeds.insert(key, s);
                    }
                    Some(kept) => {
                        summary.duplicates += 1;
                        if kept.passed != s.passed {
                            conflicts.insert(key);
                        }
                        // A failure wins over a pass; between two failures the first stays.
                        if kept.passed && !s.passed {
                            *kept = s;
                        }
                    }
                }
            }
        }
    }
    summary.runs = seeds.len() as u64;
    summary.passed = seeds.values().filter(|s| s.passed).count() as u64;
    summary.failed = seeds.values().filter(|s| !s.passed).cloned().collect();
    summary.conflicts = conflicts.into_iter().collect();
    for (scenario, declared) in ranges {
        let reported: BTreeSet<u64> =
            seeds.range((scenario.clone(), 0)..=(scenario.clone(), u64::MAX)).map(|(k, _)| k.1).collect();
        let missing = gaps(&declared, &reported);
        if !missing.is_empty() {
            summary.missing.insert(scenario, missing);
        }
    }
    summary
}

/// The seeds of `declared` (possibly overlapping ranges) not in `reported`, as sorted,
/// non-overlapping ranges.
fn gaps(declared: &[SeedRange], reported: &BTreeSet<u64>) -> Vec<SeedRange> {
    let mut sorted = declared.to_vec();
    sorted.sort();
    // Union of the declared ranges first, so an overlap is not reported twice.
    let mut union: Vec<SeedRange> = Vec::new();
    for r in sorted.into_iter().filter(|r| !r.is_empty()) {
        match union.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => union.push(r),
        }
    }
    let mut missing = Vec::new();
    for r in union {
        let mut next = r.start;
        for &seed in reported.range(r.start..r.end) {
            if seed > next {
                missing.push(SeedRange { start: next, end: seed });
            }
            next = seed + 1;
        }
        if next < r.end {
            missing.push(SeedRange { start: next, end: r.end });
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(scenario: &str, seed: u64, passed: bool) -> String {
        SummaryLine::Seed(SeedSummary {
            scenario: scenario.into(),
            seed,
            passed,
            failed_checks: if passed { vec![] } else { vec!["no_double_match".into()] },
            first_violation: (!passed).then(|| format!("ride r{seed} on two trips")),
            replay: format!("cargo sim run scenarios/{scenario}.toml --seed {seed}"),
        })
        .to_line()
    }

    fn range(scenario: &str, start: u64, end: u64) -> String {
        SummaryLine::Range { scenario: scenario.into(), seeds: SeedRange { start, end } }.to_line()
    }

    #[test]
    fn the_same_seed_twice_counts_once_and_a_failure_wins_over_a_pass() {
        let lines = [
            range("demo", 1, 4),
            seed("demo", 1, true),
            seed("demo", 2, true),
            seed("demo", 2, false), // a later failure wins
            seed("demo", 3, false),
            seed("demo", 3, true), // a later pass does not hide the failure
            seed("demo", 1, true), // a plain repeat
        ];
        let s = merge(lines.iter().map(String::as_str), &[]);
        assert_eq!((s.runs, s.passed, s.duplicates), (3, 1, 3));
        assert_eq!(s.failed.iter().map(|f| f.seed).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(s.failed[0].replay, "cargo sim run scenarios/demo.toml --seed 2");
        assert_eq!(s.conflicts, [("demo".to_string(), 2), ("demo".to_string(), 3)]);
        assert!(s.missing.is_empty());
        assert!(!s.all_passed());
        let text = s.human();
        assert!(text.contains("summary: 3 seeds run, 1 passed, 2 failed, 0 missing"), "{text}");
        assert!(text.contains("replay: cargo sim run scenarios/demo.toml --seed 3"), "{text}");
    }

    #[test]
    fn seeds_of_declared_ranges_nobody_reported_are_missing_as_ranges() {
        let mut lines = vec![range("demo", 10, 20), range("demo", 15, 25), range("other", 1, 3)];
        lines.extend([10, 11, 14, 15, 19, 24].map(|n| seed("demo", n, true)));
        lines.push(seed("other", 1, true));
        lines.push(seed("other", 2, true));
        lines.push("[  3/10] seed 4: pass (progress output)".into());
        let declared = [("demo".to_string(), SeedRange { start: 30, end: 32 })];
        let s = merge(lines.iter().map(String::as_str), &declared);
        let shown: Vec<String> = s.missing["demo"].iter().map(SeedRange::to_string).collect();
        assert_eq!(shown, ["12..14", "16..19", "20..24", "30..32"]);
        assert!(!s.missing.contains_key("other"), "every declared seed of `other` is reported");
        assert_eq!(s.missing_seeds(), 2 + 3 + 4 + 2);
        assert_eq!((s.runs, s.passed, s.other_lines), (8, 8, 1));
        assert!(s.human().contains("demo: no result for seeds 12..14, 16..19, 20..24, 30..32"), "{}", s.human());
        assert!(!s.all_passed(), "missing seeds fail the sweep");
    }

    #[test]
    fn nothing_run_is_not_a_pass_and_ranges_parse_like_the_sweep_flag() {
        assert!(!merge([], &[]).all_passed());
        assert_eq!(SeedRange::parse("1..100000"), Ok(SeedRange { start: 1, end: 100000 }));
        assert_eq!(SeedRange::parse("1..=5"), Ok(SeedRange { start: 1, end: 6 }));
        assert!(SeedRange::parse("5..5").is_err() && SeedRange::parse("x..3").is_err());
        let line = seed("demo", 7, false);
        assert_eq!(SummaryLine::parse(&line).map(|l| l.to_line()), Some(line.clone()));
        assert!(line.starts_with(r#"{"kind":"seed","scenario":"demo","seed":7,"passed":false"#), "{line}");
    }
}
