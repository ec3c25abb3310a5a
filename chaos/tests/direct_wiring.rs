//! A local deployment without the fault proxy (`LocalOptions::direct`, what `lastmile load`
//! measures): clients and services reach each replica on its own port, a ride goes through end
//! to end, and what needs the proxy (network faults, more replicas) is refused rather than
//! silently not done. Needs RabbitMQ (`LASTMILE_TEST_AMQP_URL`, default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`).

use lastmile_chaos::local::{BrokerChoice, LocalOptions, LocalTarget};
use lastmile_harness::target::Target;
use lastmile_platform::http::CallPolicy;
use lastmile_scenarios::Action;
use lastmile_services::ServiceName;
use lastmile_workload::history::History;
use lastmile_workload::LastMileClient;

#[tokio::test]
async fn a_direct_deployment_wires_every_service_to_its_peers_without_the_proxy() {
    let id = lastmile_platform::clock::new_id();
    let work_dir = std::env::temp_dir().join(format!("lastmile-direct-{}", &id[..12]));
    let options = LocalOptions {
        binary: env!("CARGO_BIN_EXE_lastmile").into(),
        amqp_url: std::env::var("LASTMILE_TEST_AMQP_URL")
            .unwrap_or_else(|_| lastmile_services::config::DEFAULT_AMQP_URL.to_string()),
        prefix: format!("test-direct-{}", &id[..8]),
        work_dir: work_dir.clone(),
        naive_matching: false,
        service_time: Default::default(),
        seed: 0,
        broker: BrokerChoice::Shared { restart_node: None },
        direct: true,
    };
    let replicas = ServiceName::ALL.into_iter().map(|s| (s, 1)).collect();
    let mut target = LocalTarget::start(options, &replicas)
        .await
        .expect("the services start (is RabbitMQ running? `cargo xtask rabbitmq` starts it)");

    // Each endpoint is the one replica's own address: nothing stands between.
    let endpoints = target.endpoints();
    for (service, endpoint) in [
        (ServiceName::User, &endpoints.user),
        (ServiceName::Location, &endpoints.location),
        (ServiceName::Trip, &endpoints.trip),
        (ServiceName::Notification, &endpoints.notification),
    ] {
        let replicas = target.replica_urls(service);
        assert_eq!(replicas.len(), 1, "{service}: one replica");
        assert_eq!(&replicas[0].1, endpoint, "{service} is reached on its replica's port");
    }

    // The peers and the broker are wired: a rider registered at user-service gets a ride
    // accepted by trip-service (which checks the rider with user-service).
    let api = LastMileClient::new(&endpoints, CallPolicy::default(), History::new());
    api.register_rider("direct-rider", "Direct Rider", "+91 90000 00000").await.expect("rider registered");
    let ride = serde_json::json!({
        "ride_id": "direct-ride-1", "rider_id": "direct-rider", "station_id": "ST101", "destination": "ST104"
    });
    let trips = lastmile_platform::http::HttpClient::new("trip-service", &endpoints.trip, CallPolicy::default())
        .with_token(endpoints.token.clone());
    let (status, body) = trips
        .call_raw(lastmile_platform::http::Method::POST, "/rides", Some(ride.to_string().into_bytes()))
        .await
        .expect("trip-service answers");
    assert_eq!(status, 201, "ride accepted: {}", String::from_utf8_lossy(&body));

    // Without the proxy there is nowhere to cut or slow a link: refused, not skipped silently.
    for action in [Action::Partition, Action::Latency, Action::Loss] {
        assert!(!target.supports(action), "{action:?} needs the fault proxy");
    }
    assert!(target.supports(Action::Kill) && target.supports(Action::Restart));
    let more = target.scale(ServiceName::Matching, 2).await;
    assert!(more.is_err(), "a second replica has no port of its own to be reached on");
    assert_eq!(target.replica_urls(ServiceName::Matching).len(), 1);

    drop(target);
    let _ = std::fs::remove_dir_all(&work_dir);
}
