//! The original demo over HTTP against RabbitMQ.

use crate::cluster::Cluster;
use lastmile_services::ServiceName;
use lastmile_workload::demo::{self, DemoTimeouts};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_matches_fifo_within_seats_and_notifies_once_per_event() {
    let cluster = Cluster::start(&ServiceName::ALL, Duration::from_secs(8)).await;
    let api = cluster.client();
    let report = demo::run(&api, &DemoTimeouts::default()).await.expect("the demo runs to the end");
    let violations = report.violations();
    assert!(violations.is_empty(), "demo expectations broken:\n{}", violations.join("\n"));
    assert_eq!(report.matches(), 4, "no matches: the test proves nothing");
    let summary = api.summary().await.expect("trip-service summary");
    assert_eq!(summary.rides.get("completed"), Some(&6));
    assert_eq!(summary.rides.get("expired"), Some(&1));
    cluster.stop().await;
}
