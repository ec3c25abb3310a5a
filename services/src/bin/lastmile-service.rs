//! `lastmile-service <name>`: run one LastMile service (user, location, trip, matching,
//! notification) against a RabbitMQ broker. See `lastmile_services::config` for every setting.

use clap::Parser;
use lastmile_services::cli::{init_logging, ServiceArgs};

/// Run one LastMile service.
#[derive(Debug, Parser)]
#[command(name = "lastmile-service", version)]
struct Args {
    #[command(flatten)]
    service: ServiceArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    Args::parse().service.run().await
}
