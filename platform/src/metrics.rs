//! Prometheus metrics: counters and gauges a service exposes at `GET /metrics` in the text
//! exposition format (version 0.0.4).
//!
//! - `lastmile_http_requests_total{route, method, status}`: every answered request, by the
//!   route *template* it matched (`/rides/{id}`; `unmatched` for none) — never the raw path, so
//!   hostile input cannot reach a label or grow the series without bound;
//! - `lastmile_recovery_total{path}`: the recovery paths the service took ([`Coverage`]:
//!   consumer and call retries, dead letters, compare-and-set conflicts, replays, ...);
//! - gauges the service registers (outbox depth, journal size), read when scraped.
//!
//! Cheap to clone; clones share their counts. Nothing here reads a clock or a random number, so
//! it behaves the same under simulation.

use crate::coverage::{Coverage, RecoveryPath};
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

type Labels = Vec<(&'static str, String)>;
type Reader = Box<dyn Fn() -> f64 + Send + Sync>;

/// A gauge read at scrape time.
struct Gauge {
    name: &'static str,
    help: &'static str,
    read: Reader,
}

#[derive(Default)]
struct Inner {
    /// (name, labels) → count.
    counters: BTreeMap<(&'static str, Labels), u64>,
    help: BTreeMap<&'static str, &'static str>,
    gauges: Vec<Gauge>,
}

/// One service's metrics.
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Mutex<Inner>>,
    /// Recovery paths, rendered as `lastmile_recovery_total`.
    coverage: Coverage,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Metrics {
    /// Metrics that also report the recovery paths counted in `coverage`.
    pub fn new(coverage: Coverage) -> Metrics {
        Metrics { inner: Arc::default(), coverage }
    }

    /// Add one to counter `name` with `labels` (`help` describes the metric).
    pub fn inc(&self, name: &'static str, help: &'static str, labels: &[(&'static str, &str)]) {
        let labels = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
        let mut inner = self.inner.lock().expect("metrics");
        inner.help.insert(name, help);
        *inner.counters.entry((name, labels)).or_default() += 1;
    }

    /// A gauge `name`, read by `read` at every scrape.
    pub fn gauge(&self, name: &'static str, help: &'static str, read: impl Fn() -> f64 + Send + Sync + 'static) {
        self.inner.lock().expect("metrics").gauges.push(Gauge { name, help, read: Box::new(read) });
    }

    /// The current value of counter `name` with `labels` (0 if never counted).
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let inner = self.inner.lock().expect("metrics");
        inner
            .counters
            .iter()
            .find(|((n, l), _)| {
                *n == name && l.len() == labels.len() && l.iter().zip(labels).all(|(a, b)| a.0 == b.0 && a.1 == b.1)
            })
            .map_or(0, |(_, v)| *v)
    }

    /// Everything in the text exposition format.
    pub fn render(&self) -> String {
        let inner = self.inner.lock().expect("metrics");
        let mut out = String::new();
        let mut last = "";
        for ((name, labels), value) in &inner.counters {
            if *name != last {
                let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} counter", inner.help[name]);
                last = name;
            }
            let _ = writeln!(out, "{name}{} {value}", render_labels(labels));
        }
        let recovery = "lastmile_recovery_total";
        let _ = writeln!(
            out,
            "# HELP {recovery} Recovery paths taken (retries, dead letters, conflicts, replays).\n# TYPE {recovery} counter"
        );
        let counts = self.coverage.counts();
        for path in RecoveryPath::ALL {
            let value = counts.get(&path).copied().unwrap_or(0);
            let _ = writeln!(out, "{recovery}{} {value}", render_labels(&vec![("path", path.as_str().to_string())]));
        }
        for gauge in &inner.gauges {
            let _ = writeln!(out, "# HELP {0} {1}\n# TYPE {0} gauge\n{0} {2}", gauge.name, gauge.help, (gauge.read)());
        }
        out
    }
}

/// `{a="x",b="y"}` with values escaped as the format requires (`\\`, `\"`, `\n`).
fn render_labels(labels: &Labels) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", parts.join(","))
}

/// Middleware counting every answered request in `lastmile_http_requests_total`. Mount with
/// `axum::middleware::from_fn_with_state(metrics, count_requests)` as a `layer`, so requests
/// nothing routes are counted too (as `unmatched`).
pub async fn count_requests(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let method: &'static str = match request.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    let response = next.run(request).await;
    metrics.inc(
        "lastmile_http_requests_total",
        "HTTP requests answered, by route template, method and status.",
        &[("route", &route), ("method", method), ("status", response.status().as_str())],
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_gauges_and_recovery_paths_render_in_the_text_format() {
        let coverage = Coverage::default();
        let metrics = Metrics::new(coverage.clone());
        let labels = [("route", "/rides/{id}"), ("method", "GET"), ("status", "404")];
        metrics.inc("lastmile_http_requests_total", "Requests.", &labels);
        metrics.inc("lastmile_http_requests_total", "Requests.", &labels);
        metrics.inc("lastmile_http_requests_total", "Requests.", &[("route", "a\"b\\c\nd")]);
        coverage.hit(RecoveryPath::CasConflict);
        metrics.gauge("lastmile_outbox_depth", "Events waiting.", || 3.0);
        let text = metrics.render();
        assert!(text.contains("# TYPE lastmile_http_requests_total counter\n"), "{text}");
        assert_eq!(text.matches("# TYPE lastmile_http_requests_total").count(), 1, "one header per metric");
        assert!(text.contains("lastmile_http_requests_total{route=\"/rides/{id}\",method=\"GET\",status=\"404\"} 2\n"));
        assert!(text.contains(r#"lastmile_http_requests_total{route="a\"b\\c\nd"} 1"#), "{text}");
        assert!(text.contains("lastmile_recovery_total{path=\"cas_conflict\"} 1\n"));
        assert!(text.contains("lastmile_recovery_total{path=\"redelivered\"} 0\n"), "untaken paths show as 0");
        assert!(text.contains("# TYPE lastmile_outbox_depth gauge\nlastmile_outbox_depth 3\n"), "{text}");
        assert_eq!(metrics.counter("lastmile_http_requests_total", &labels), 2);
        assert_eq!(metrics.counter("lastmile_http_requests_total", &[("route", "x")]), 0);
    }
}
