//! Five in-process services on loopback ports, one isolated broker topology.

use lastmile_platform::auth::ServiceToken;
use lastmile_platform::broker::{Broker, Names};
use lastmile_platform::http::CallPolicy;
use lastmile_platform::shutdown::{self, ShutdownTrigger};
use lastmile_services::{Config, ServiceName};
use lastmile_workload::{Endpoints, History, LastMileClient};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The environment variable naming the test broker.
pub const AMQP_URL_VAR: &str = "LASTMILE_TEST_AMQP_URL";

/// The broker URL the tests use.
pub fn amqp_url() -> String {
    std::env::var(AMQP_URL_VAR).unwrap_or_else(|_| lastmile_services::config::DEFAULT_AMQP_URL.to_string())
}

/// Fail loudly (never skip) when no RabbitMQ answers.
pub async fn require_rabbitmq() -> String {
    let url = amqp_url();
    let broker = Broker::new(url.clone());
    match tokio::time::timeout(Duration::from_secs(10), broker.connect()).await {
        Ok(Ok(())) => {
            broker.disconnect().await;
            url
        }
        Ok(Err(e)) => panic!("{}", no_rabbitmq(&url, &e.to_string())),
        Err(_) => panic!("{}", no_rabbitmq(&url, "no answer within 10 s")),
    }
}

fn no_rabbitmq(url: &str, why: &str) -> String {
    format!(
        "these tests need RabbitMQ at {} ({why}). Start a local one with `rabbitmq-server -detached` \
         (or run `cargo xtask test`, which starts it), or set {AMQP_URL_VAR} to a broker you have.",
        lastmile_platform::broker::redacted(url)
    )
}

/// A running set of services.
pub struct Cluster {
    /// Where each service answers.
    pub urls: BTreeMap<ServiceName, String>,
    /// The configuration they share.
    pub config: Config,
    triggers: BTreeMap<ServiceName, ShutdownTrigger>,
    tasks: BTreeMap<ServiceName, tokio::task::JoinHandle<anyhow::Result<()>>>,
    data_dir: PathBuf,
}

impl Cluster {
    /// Start `services` against the test broker with a fresh topology.
    pub async fn start(services: &[ServiceName], ride_ttl: Duration) -> Cluster {
        Cluster::start_with(services, ride_ttl, |_| {}).await
    }

    /// [`Cluster::start`], with the configuration adjusted by `configure` first.
    pub async fn start_with(
        services: &[ServiceName],
        ride_ttl: Duration,
        configure: impl FnOnce(&mut Config),
    ) -> Cluster {
        let amqp_url = require_rabbitmq().await;
        let id = lastmile_platform::clock::new_id();
        let data_dir = std::env::temp_dir().join(format!("lastmile-test-{id}"));
        let mut listeners = BTreeMap::new();
        let mut urls = BTreeMap::new();
        for name in ServiceName::ALL {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
            urls.insert(name, format!("http://{}", listener.local_addr().unwrap()));
            listeners.insert(name, listener);
        }
        let mut config = Config {
            amqp_url,
            names: Names::new(format!("test-{id}")),
            user_url: urls[&ServiceName::User].clone(),
            location_url: urls[&ServiceName::Location].clone(),
            trip_url: urls[&ServiceName::Trip].clone(),
            data_dir: data_dir.clone(),
            ride_ttl,
            queue_expires: Some(Duration::from_secs(120)),
            service_token: Some(ServiceToken::random()),
            harness_routes: true,
            ..Config::default()
        };
        configure(&mut config);
        let mut cluster = Cluster { urls, config, triggers: BTreeMap::new(), tasks: BTreeMap::new(), data_dir };
        for name in services {
            cluster.start_service(*name, listeners.remove(name).expect("one listener per service"));
        }
        cluster
    }

    /// Start one more service (e.g. after the test played with the queue).
    pub fn start_service(&mut self, name: ServiceName, listener: tokio::net::TcpListener) {
        let (trigger, shutdown) = shutdown::channel();
        let config = self.config.clone();
        self.tasks.insert(name, tokio::spawn(lastmile_services::run(name, config, listener, shutdown)));
        self.triggers.insert(name, trigger);
    }

    /// Bind the port a not-yet-started service was given.
    pub async fn rebind(&self, name: ServiceName) -> tokio::net::TcpListener {
        let addr = self.urls[&name].trim_start_matches("http://").to_string();
        tokio::net::TcpListener::bind(addr).await.expect("the service's port is free")
    }

    /// A recording API client.
    pub fn client(&self) -> LastMileClient {
        let endpoints = Endpoints {
            user: self.urls[&ServiceName::User].clone(),
            location: self.urls[&ServiceName::Location].clone(),
            trip: self.urls[&ServiceName::Trip].clone(),
            notification: self.urls[&ServiceName::Notification].clone(),
            token: self.config.service_token.clone(),
        };
        LastMileClient::new(&endpoints, CallPolicy::default(), History::new())
    }

    /// A raw broker client on the cluster's broker.
    pub fn broker(&self) -> Broker {
        Broker::new(self.config.amqp_url.clone())
    }

    /// Gracefully stop every service and check none failed.
    pub async fn stop(mut self) {
        for trigger in self.triggers.values() {
            trigger.trigger();
        }
        for (name, task) in std::mem::take(&mut self.tasks) {
            let result = tokio::time::timeout(Duration::from_secs(30), task).await;
            match result {
                Ok(Ok(Ok(()))) => {}
                other => panic!("{name} did not stop cleanly: {other:?}"),
            }
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}
