//! `lastmile-service <name>`: run one LastMile service (user, location, trip, matching,
//! notification) against a RabbitMQ broker. See `lastmile_services::config` for every setting.

use anyhow::Context as _;
use clap::Parser;
use lastmile_platform::broker::Names;
use lastmile_services::{config::DEFAULT_AMQP_URL, Config, ServiceName};
use std::path::PathBuf;
use std::time::Duration;

/// Run one LastMile service.
#[derive(Debug, Parser)]
#[command(name = "lastmile-service", version)]
struct Args {
    /// Which service: user, location, trip, matching or notification.
    service: ServiceName,
    /// Address to listen on (default: 0.0.0.0 and the service's port, 8081..8085).
    #[arg(long, env = "LASTMILE_LISTEN")]
    listen: Option<String>,
    /// RabbitMQ URL.
    #[arg(long, env = "LASTMILE_AMQP_URL", default_value = DEFAULT_AMQP_URL)]
    amqp_url: String,
    /// Prefix of every exchange and queue name.
    #[arg(long, env = "LASTMILE_PREFIX", default_value = "lastmile")]
    prefix: String,
    /// Base URL of user-service.
    #[arg(long, env = "LASTMILE_USER_URL", default_value = "http://127.0.0.1:8081")]
    user_url: String,
    /// Base URL of location-service.
    #[arg(long, env = "LASTMILE_LOCATION_URL", default_value = "http://127.0.0.1:8082")]
    location_url: String,
    /// Base URL of trip-service.
    #[arg(long, env = "LASTMILE_TRIP_URL", default_value = "http://127.0.0.1:8083")]
    trip_url: String,
    /// Folder for the journals of durable services.
    #[arg(long, env = "LASTMILE_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Seconds a ride request may wait before it expires.
    #[arg(long, env = "LASTMILE_RIDE_TTL_SECS", default_value_t = 300)]
    ride_ttl_secs: u64,
    /// Radius in metres within which a driver is near a station.
    #[arg(long, env = "LASTMILE_NEAR_RADIUS_M", default_value_t = 300.0)]
    near_radius_m: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,lapin=warn".into()),
        )
        .init();
    let args = Args::parse();
    let config = Config {
        amqp_url: args.amqp_url,
        names: Names::new(args.prefix),
        user_url: args.user_url,
        location_url: args.location_url,
        trip_url: args.trip_url,
        data_dir: args.data_dir,
        ride_ttl: Duration::from_secs(args.ride_ttl_secs),
        near_radius_m: args.near_radius_m,
        ..Config::default()
    };
    let listen = args.listen.unwrap_or_else(|| format!("0.0.0.0:{}", args.service.default_port()));
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("{}: cannot listen on {listen}", args.service))?;
    tracing::info!(service = %args.service, %listen, "starting");
    let shutdown = lastmile_platform::shutdown::on_termination();
    lastmile_services::run(args.service, config, listener, shutdown)
        .await
        .with_context(|| format!("{} stopped with an error", args.service))?;
    tracing::info!(service = %args.service, "stopped");
    Ok(())
}
