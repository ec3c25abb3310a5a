//! A run as one self-contained HTML page (inline SVG and CSS, no scripts, nothing fetched): a
//! timeline of the phases, every step and fault, each service's success rate and slowest call
//! per 5 s, the matches, and every violation marked where it happened; then the work per
//! matching replica, the expectations, the rules and the recovery paths taken. Hovering any
//! mark shows its details (SVG `<title>`).

use crate::metrics::match_observations;
use crate::report::RunReport;
use crate::runner::Evidence;
use lastmile_scenarios::faults::Origin;
use lastmile_workload::history::OpPhase;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Width of one time bucket of the service lanes.
const BUCKET_MS: u64 = 5_000;
/// Pixels of the timeline's time axis.
const WIDTH: f64 = 1100.0;
/// Left margin for lane names.
const LEFT: f64 = 215.0;
const LANE: f64 = 26.0;

fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Which service a client operation talks to.
fn service_of(action: &str, client: &str) -> Option<&'static str> {
    Some(match action {
        "location" => "location-service",
        "request_ride" | "get_ride" | "get_driver" | "get_trip" | "pickup" | "complete" | "cancel_trip"
        | "start_shift" | "summary" => "trip-service",
        "register_driver" | "register_rider" => "user-service",
        "inbox" => "notification-service",
        "probe" if client.starts_with("probe:") => "probes",
        _ => return None,
    })
}

/// The page for one run.
pub fn render(evidence: &Evidence, report: &RunReport) -> String {
    let end_ms = evidence.end_at_ms.max(1);
    let x = |ms: u64| LEFT + WIDTH * ms.min(end_ms) as f64 / end_ms as f64;
    let t = |ms: u64| format!("{:.1} s", ms as f64 / 1000.0);
    let scenario_ms = |at: u64| at.saturating_sub(evidence.t0_ms);
    let mut svg = String::new();
    let mut y = 30.0;
    let lane = |svg: &mut String, y: f64, name: &str| {
        let _ = write!(
            svg,
            r#"<text x="8" y="{:.0}" class="lane">{}</text><line x1="{LEFT}" x2="{}" y1="{:.0}" y2="{:.0}" class="grid"/>"#,
            y + 16.0,
            esc(name),
            LEFT + WIDTH,
            y + LANE,
            y + LANE
        );
    };
    // Time axis every 30 s, and the heal.
    for s in (0..=end_ms / 1000).step_by(30) {
        let _ = write!(svg, r#"<text x="{:.0}" y="18" class="tick">{s} s</text>"#, x(s * 1000) - 8.0);
    }
    let _ = write!(
        svg,
        r#"<line x1="{0:.1}" x2="{0:.1}" y1="22" y2="100%" class="heal"><title>heal at {1}</title></line>"#,
        x(evidence.heal_at_ms),
        t(evidence.heal_at_ms)
    );
    // Phases.
    lane(&mut svg, y, "phases");
    for (i, p) in report.phases.iter().enumerate() {
        let (a, b) = (x((p.from_s * 1000.0) as u64), x((p.to_s * 1000.0) as u64));
        let _ = write!(
            svg,
            r#"<rect x="{a:.1}" y="{:.0}" width="{:.1}" height="18" class="phase p{}"><title>phase {} {:.0}-{:.0} s</title></rect><text x="{:.1}" y="{:.0}" class="label">{}</text>"#,
            y + 4.0,
            (b - a).max(1.0),
            i % 4,
            esc(&p.name),
            p.from_s,
            p.to_s,
            a + 3.0,
            y + 17.0,
            esc(&p.name)
        );
    }
    y += LANE;
    // Steps and faults, one lane each so overlapping faults stay readable.
    for step in &evidence.timeline {
        lane(
            &mut svg,
            y,
            &format!("{}{}", if step.origin == Origin::Random { "random " } else { "" }, step.action_name()),
        );
        let from = (step.at_s * 1000.0) as u64;
        let to = step.for_s.map_or(from + 1_000, |f| from + (f * 1000.0) as u64);
        let _ = write!(
            svg,
            r#"<rect x="{:.1}" y="{:.0}" width="{:.1}" height="18" class="fault {}"><title>{}</title></rect>"#,
            x(from),
            y + 4.0,
            (x(to) - x(from)).max(3.0),
            if step.origin == Origin::Random { "random" } else { "scripted" },
            esc(&step.to_string())
        );
        y += LANE;
    }
    // Per service: success share and slowest call per bucket.
    let mut buckets: BTreeMap<&str, BTreeMap<u64, (u64, u64, u64)>> = BTreeMap::new();
    let mut invoked: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for op in &evidence.history {
        let Some(service) = service_of(&op.action, &op.client) else { continue };
        let at = scenario_ms(op.at_ms);
        match op.phase {
            OpPhase::Invoke => {
                invoked.insert((op.client.as_str(), op.action.as_str()), at);
            }
            phase => {
                let started = invoked.remove(&(op.client.as_str(), op.action.as_str())).unwrap_or(at);
                let b = buckets.entry(service).or_default().entry(at / BUCKET_MS).or_default();
                b.0 += u64::from(phase == OpPhase::Ok);
                b.1 += 1;
                b.2 = b.2.max(at.saturating_sub(started));
            }
        }
    }
    for (service, per) in &buckets {
        lane(&mut svg, y, service);
        for (bucket, (ok, all, slowest)) in per {
            let share = *ok as f64 / (*all).max(1) as f64;
            let from = bucket * BUCKET_MS;
            let _ = write!(
                svg,
                r#"<rect x="{:.1}" y="{:.0}" width="{:.1}" height="18" class="{}" opacity="{:.2}"><title>{service} {}-{}: {ok}/{all} ok, slowest {} ms</title></rect>"#,
                x(from),
                y + 4.0,
                (x(from + BUCKET_MS) - x(from) - 1.0).max(1.0),
                if share >= 0.99 { "ok" } else { "bad" },
                if share >= 0.99 { 0.35 + 0.65 * (*slowest as f64 / 2_000.0).min(1.0) } else { 1.0 - share * 0.6 },
                t(from),
                t(from + BUCKET_MS),
                slowest
            );
        }
        y += LANE;
    }
    // Matches as seen by their riders.
    lane(&mut svg, y, "matches");
    for (ride, (at, accepted)) in match_observations(evidence) {
        let _ = write!(
            svg,
            r#"<line x1="{0:.1}" x2="{0:.1}" y1="{1:.0}" y2="{2:.0}" class="match"><title>{3} matched at {4}, waited {5}</title></line>"#,
            x(at),
            y + 4.0,
            y + 22.0,
            esc(&ride),
            t(at),
            t(at.saturating_sub(accepted))
        );
    }
    y += LANE;
    // Violations where they happened (those without a time at the end).
    lane(&mut svg, y, "violations");
    for v in report.violations() {
        let at = v.at_ms.unwrap_or(evidence.end_at_ms);
        let _ = write!(
            svg,
            r#"<circle cx="{:.1}" cy="{:.0}" r="6" class="violation"><title>{}: {}</title></circle>"#,
            x(at),
            y + 13.0,
            esc(&v.rule),
            esc(&v.message)
        );
    }
    y += LANE + 10.0;

    let mut page = format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>{name} seed {seed}: {verdict}</title><style>
body{{font:14px system-ui,sans-serif;margin:20px;color:#222}} h1{{font-size:20px}} .pass{{color:#177a2c}} .fail{{color:#b3261e}}
svg{{background:#fafafa;border:1px solid #ddd}} .lane{{font-size:12px;fill:#444}} .tick{{font-size:11px;fill:#888}} .label{{font-size:11px;fill:#fff}}
.grid{{stroke:#e4e4e4}} .heal{{stroke:#555;stroke-dasharray:4 3}} .phase.p0{{fill:#5b7db1}} .phase.p1{{fill:#8a6bb0}} .phase.p2{{fill:#4f9d8f}} .phase.p3{{fill:#b0875b}}
.fault.scripted{{fill:#e07b39}} .fault.random{{fill:#c94f7c}} .ok{{fill:#2e8b57}} .bad{{fill:#d23b2f}} .match{{stroke:#2a6fdb;stroke-width:1.5}} .violation{{fill:#d23b2f;stroke:#fff}}
table{{border-collapse:collapse;margin:8px 0 18px}} td,th{{border:1px solid #ddd;padding:3px 8px;text-align:left}} th{{background:#f0f0f0}}
</style></head><body><h1>{name} — seed {seed} — <span class="{verdict}">{verdict_upper}</span></h1>
<p>{ops} operations; {acc} rides accepted, {matched} matched, {expired} expired; {trips} trips. Healed at {heal:.1} s, ended at {end:.1} s. History digest {digest}.</p>
<p>Lanes: phases; each step (scripted orange, random pink); per service the share of calls that succeeded in each 5 s (green, darker = slower; red = failures); matches as riders saw them; violations (red dots). Hover for details.</p>
"#,
        name = esc(&report.scenario),
        seed = report.seed,
        verdict = esc(&report.verdict),
        verdict_upper = esc(&report.verdict.to_uppercase()),
        ops = report.totals.operations,
        acc = report.totals.rides_accepted,
        matched = report.totals.rides_matched,
        expired = report.totals.rides_expired,
        trips = report.totals.trips,
        heal = report.heal_at_s,
        end = report.end_at_s,
        digest = esc(&report.history_digest),
    );
    let _ = write!(
        page,
        r#"<svg width="{:.0}" height="{:.0}" xmlns="http://www.w3.org/2000/svg">{svg}</svg>"#,
        LEFT + WIDTH + 20.0,
        y
    );
    page.push_str("<h2>Rules</h2><table><tr><th>rule</th><th>verdict</th><th>violations</th></tr>");
    for c in &report.checks {
        let first: Vec<String> = c.violations.iter().take(3).map(|v| esc(&v.message)).collect();
        let _ = write!(
            page,
            r#"<tr><td>{}</td><td class="{}">{}</td><td>{}</td></tr>"#,
            esc(&c.rule),
            if c.ok { "pass" } else { "fail" },
            if c.ok { "ok" } else { "FAIL" },
            first.join("<br>")
        );
    }
    page.push_str("</table><h2>Expectations</h2><table><tr><th>phase</th><th>metric</th><th>bound</th><th>value</th><th>judged</th></tr>");
    for x in &report.expectations {
        let metric = serde_json::to_value(x.metric).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        let bound = format!(
            "{}{}",
            x.min.map_or(String::new(), |m| format!("≥ {m} ")),
            x.max.map_or(String::new(), |m| format!("≤ {m}"))
        );
        let _ = write!(
            page,
            r#"<tr><td>{}</td><td>{metric}</td><td>{bound}</td><td class="{}">{}</td><td>{:.0}%{}</td></tr>"#,
            esc(&x.phase),
            if x.ok { "pass" } else { "fail" },
            x.value.map_or("—".into(), |v| format!("{v:.3}")),
            x.judged_share * 100.0,
            x.note.as_ref().map_or(String::new(), |n| format!(" ({})", esc(n)))
        );
    }
    page.push_str(
        "</table><h2>Work per matching replica</h2><table><tr><th>phase</th><th>events handled per replica</th></tr>",
    );
    for p in &report.phases {
        let work: Vec<String> = p.work_per_replica.iter().map(|(r, n)| format!("{} {n}", esc(r))).collect();
        let _ = write!(page, "<tr><td>{}</td><td>{}</td></tr>", esc(&p.name), work.join(", "));
    }
    page.push_str("</table>");
    if let Some(coverage) = &report.coverage {
        page.push_str("<h2>Recovery paths</h2><table><tr><th>path</th><th>times taken</th></tr>");
        for (path, n) in coverage {
            let _ = write!(
                page,
                r#"<tr><td>{path}</td><td class="{}">{n}</td></tr>"#,
                if *n > 0 { "pass" } else { "fail" }
            );
        }
        page.push_str("</table>");
    }
    page.push_str("</body></html>\n");
    page
}
