//! A local deployment without the fault proxy (`LocalOptions::direct`, what `lastmile load`
//! measures): clients and services reach each replica on its own port, a ride goes through end
//! to end, and what needs the proxy (network faults, more replicas) is refused rather than
//! silently not done; and `lastmile load --target endpoints` measures such a deployment, which
//! it did not start, given only its URLs (what the pod of `load --target kube` does). Needs
//! RabbitMQ (`LASTMILE_TEST_AMQP_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f`).

use lastmile_chaos::local::{BrokerChoice, LocalOptions, LocalTarget};
use lastmile_harness::target::Target;
use lastmile_platform::http::CallPolicy;
use lastmile_scenarios::Action;
use lastmile_services::ServiceName;
use lastmile_workload::history::History;
use lastmile_workload::LastMileClient;

fn amqp_url() -> String {
    std::env::var("LASTMILE_TEST_AMQP_URL").unwrap_or_else(|_| lastmile_services::config::DEFAULT_AMQP_URL.to_string())
}

/// Every service once, wired direct, under a prefix and work dir of the test's own.
async fn direct_deployment(id: &str, work_dir: &std::path::Path) -> LocalTarget {
    let options = LocalOptions {
        binary: env!("CARGO_BIN_EXE_lastmile").into(),
        amqp_url: amqp_url(),
        prefix: format!("test-direct-{}", &id[..8]),
        work_dir: work_dir.to_path_buf(),
        naive_matching: false,
        service_time: Default::default(),
        seed: 0,
        broker: BrokerChoice::Shared { restart_node: None },
        direct: true,
    };
    let replicas = ServiceName::ALL.into_iter().map(|s| (s, 1)).collect();
    LocalTarget::start(options, &replicas)
        .await
        .expect("the services start (is RabbitMQ running? `cargo xtask rabbitmq` starts it)")
}

#[tokio::test]
async fn a_direct_deployment_wires_every_service_to_its_peers_without_the_proxy() {
    let id = lastmile_platform::clock::new_id();
    let work_dir = std::env::temp_dir().join(format!("lastmile-direct-{}", &id[..12]));
    let mut target = direct_deployment(&id, &work_dir).await;

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

/// The deployment is only URLs to `load --target endpoints`: it registers its riders and drivers
/// under the run's tag, measures, names the disk it measured as its own, takes the token from
/// the environment and shows it nowhere.
#[tokio::test]
async fn load_against_endpoints_measures_a_running_deployment_and_never_shows_its_token() {
    let id = lastmile_platform::clock::new_id();
    let work_dir = std::env::temp_dir().join(format!("lastmile-direct-load-{}", &id[..12]));
    let target = direct_deployment(&id, &work_dir).await;
    let endpoints = target.endpoints();
    let token = endpoints.token.clone().expect("the local target has a token").expose().to_string();
    let disk = work_dir.join("generator-disk");
    let run = format!("t{}", &id[..8]);
    let args: Vec<String> = [
        "load",
        "--target",
        "endpoints",
        "--user-url",
        &endpoints.user,
        "--location-url",
        &endpoints.location,
        "--trip-url",
        &endpoints.trip,
        "--notification-url",
        &endpoints.notification,
        "--rate",
        "50",
        "--duration-s",
        "1",
        "--match-rides",
        "5",
        "--disk-dir",
        disk.to_str().unwrap(),
        "--prefix",
        &format!("test-direct-{}", &id[..8]),
        "--run-id",
        &run,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let secret = token.clone();
    // The services' output pipes are read by the runtime's tasks: the CLI is waited for off it.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_lastmile"))
            .args(&args)
            .env("LASTMILE_SERVICE_TOKEN", secret)
            .env("LASTMILE_AMQP_URL", amqp_url())
            .env_remove("LASTMILE_SERVICE_TOKEN_FILE")
            .env_remove("LASTMILE_AMQP_URL_FILE")
            .env_remove("LASTMILE_PREFIX")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let shown = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("ride requests: 50 sent, 50 accepted"), "the load did something: {shown}");
    assert!(!shown.contains("not matched"), "{shown}");
    assert!(shown.contains("(5 measured)"), "five rides matched to waiting drivers: {shown}");
    assert!(shown.contains("verdict: PASS"), "{shown}");
    assert!(shown.contains("service token: from LASTMILE_SERVICE_TOKEN"), "{shown}");
    assert!(
        shown.contains(&format!("on {} (the load generator's disk, not the services' volumes)", disk.display())),
        "whose disk: {shown}"
    );
    assert!(!shown.contains(&token), "the token was printed: {shown}");
    assert!(!shown.contains("guest:guest"), "the broker's password was printed: {shown}");

    // Its rides and riders carry the run's tag: a second run never takes their ids.
    let api = LastMileClient::new(&endpoints, CallPolicy::default(), History::new());
    let ride = api.ride(&format!("{run}-load-0")).await.expect("the first ride of the run, under its tag");
    assert_eq!(ride.rider_id, format!("{run}-load-rider-0"));
    assert!(api.ride(&format!("{run}-match-4")).await.is_ok());

    drop(target);
    let _ = std::fs::remove_dir_all(&work_dir);
}
