//! The command line of one service, shared by `lastmile-service` and `lastmile service`.

use crate::config::{Config, ServiceName, DEFAULT_AMQP_URL};
use anyhow::Context as _;
use lastmile_platform::auth::ServiceToken;
use lastmile_platform::broker::Names;
use std::path::PathBuf;
use std::time::Duration;

/// Run one LastMile service against a RabbitMQ broker (flags or `LASTMILE_*` environment).
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// Which service: user, location, trip, matching or notification.
    pub service: ServiceName,
    /// Address to listen on (default: 0.0.0.0 and the service's port, 8081..8085).
    #[arg(long, env = "LASTMILE_LISTEN")]
    pub listen: Option<String>,
    /// RabbitMQ URL.
    #[arg(long, env = "LASTMILE_AMQP_URL", hide_env_values = true, default_value = DEFAULT_AMQP_URL)]
    pub amqp_url: String,
    /// A file holding the RabbitMQ URL (a mounted Secret); wins over `--amqp-url`.
    #[arg(long, env = "LASTMILE_AMQP_URL_FILE")]
    pub amqp_url_file: Option<PathBuf>,
    /// A file holding the service token internal endpoints require (a mounted Secret).
    #[arg(long, env = "LASTMILE_SERVICE_TOKEN_FILE")]
    pub service_token_file: Option<PathBuf>,
    /// The service token itself (for local runs; a file is safer).
    #[arg(
        long,
        env = "LASTMILE_SERVICE_TOKEN",
        hide_env_values = true,
        conflicts_with = "service_token_file",
        value_parser = |s: &str| ServiceToken::new(s)
    )]
    pub service_token: Option<ServiceToken>,
    /// Prefix of every exchange and queue name.
    #[arg(long, env = "LASTMILE_PREFIX", default_value = "lastmile")]
    pub prefix: String,
    /// Base URL of user-service.
    #[arg(long, env = "LASTMILE_USER_URL", default_value = "http://127.0.0.1:8081")]
    pub user_url: String,
    /// Base URL of location-service.
    #[arg(long, env = "LASTMILE_LOCATION_URL", default_value = "http://127.0.0.1:8082")]
    pub location_url: String,
    /// Base URL of trip-service.
    #[arg(long, env = "LASTMILE_TRIP_URL", default_value = "http://127.0.0.1:8083")]
    pub trip_url: String,
    /// Folder for the journals of durable services.
    #[arg(long, env = "LASTMILE_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Seconds a ride request may wait before it expires.
    #[arg(long, env = "LASTMILE_RIDE_TTL_SECS", default_value_t = 300.0)]
    pub ride_ttl_secs: f64,
    /// Radius in metres within which a driver is near a station.
    #[arg(long, env = "LASTMILE_NEAR_RADIUS_M", default_value_t = 300.0)]
    pub near_radius_m: f64,
    /// Delete this service's queues after this many seconds unused (isolated test topologies).
    #[arg(long, env = "LASTMILE_QUEUE_EXPIRES_SECS")]
    pub queue_expires_secs: Option<u64>,
    /// Serve the harness's routes (`/export`, `/summary`, `/stats`, `/disk-stall`): for chaos runs.
    #[arg(long, env = "LASTMILE_HARNESS_ROUTES")]
    pub harness_routes: bool,
    /// The original LastMile matching design, for demonstrations only.
    #[arg(long, env = "LASTMILE_NAIVE_MATCHING")]
    pub naive_matching: bool,
    /// Service time of each consumed event and request: `mean_ms,jitter_ms,concurrency` (off
    /// when absent).
    #[arg(long, env = "LASTMILE_SERVICE_TIME")]
    pub service_time: Option<lastmile_platform::capacity::ServiceTime>,
    /// Events that may wait for the broker before the service answers new work with 503.
    #[arg(long, env = "LASTMILE_OUTBOX_CAPACITY", default_value_t = crate::config::DEFAULT_OUTBOX_CAPACITY)]
    pub outbox_capacity: usize,
    /// Journal records between compactions of a durable service's journal.
    #[arg(long, env = "LASTMILE_COMPACT_AFTER", default_value_t = crate::config::DEFAULT_COMPACT_AFTER)]
    pub compact_after: usize,
    /// Deliveries a consumer takes ahead of its acks (handled concurrently).
    #[arg(long, env = "LASTMILE_PREFETCH", default_value_t = crate::config::DEFAULT_PREFETCH,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub prefetch: u16,
}

impl ServiceArgs {
    /// The configuration these arguments describe (reading the broker URL's file, if named).
    pub fn config(&self) -> anyhow::Result<Config> {
        let amqp_url = match &self.amqp_url_file {
            Some(file) => std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the broker URL from {}", file.display()))?
                .trim()
                .to_string(),
            None => self.amqp_url.clone(),
        };
        let service_token = match &self.service_token_file {
            Some(file) => {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read the service token from {}", file.display()))?;
                Some(ServiceToken::new(&text).with_context(|| format!("the service token in {}", file.display()))?)
            }
            None => self.service_token.clone(),
        };
        Ok(Config {
            amqp_url,
            service_token,
            names: Names::new(self.prefix.clone()),
            user_url: self.user_url.clone(),
            location_url: self.location_url.clone(),
            trip_url: self.trip_url.clone(),
            data_dir: self.data_dir.clone(),
            ride_ttl: Duration::from_secs_f64(self.ride_ttl_secs),
            near_radius_m: self.near_radius_m,
            queue_expires: self.queue_expires_secs.map(Duration::from_secs),
            naive_matching: self.naive_matching,
            service_time: self.service_time,
            harness_routes: self.harness_routes,
            // The one fault a real harness may set (crash points stay simulation only).
            faults: if self.harness_routes {
                lastmile_platform::faults::Faults::disk_stall_only()
            } else {
                lastmile_platform::faults::Faults::default()
            },
            outbox_capacity: self.outbox_capacity,
            compact_after: self.compact_after,
            prefetch: self.prefetch,
            ..Config::default()
        })
    }

    /// Bind, run until SIGTERM or Ctrl-C, stop gracefully.
    pub async fn run(self) -> anyhow::Result<()> {
        let listen = self.listen.clone().unwrap_or_else(|| format!("0.0.0.0:{}", self.service.default_port()));
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("{}: cannot listen on {listen}", self.service))?;
        tracing::info!(service = %self.service, %listen, "starting");
        let shutdown = lastmile_platform::shutdown::on_termination();
        crate::run(self.service, self.config()?, listener, shutdown)
            .await
            .with_context(|| format!("{} stopped with an error", self.service))?;
        tracing::info!(service = %self.service, "stopped");
        Ok(())
    }
}

/// How log lines look: text for people, or one JSON object per line for a log pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `2026-11-28T18:00:00Z  INFO lastmile_services::api: starting service=trip-service`.
    Text,
    /// `{"timestamp":...,"level":"INFO","fields":{"message":"starting","service":"trip-service"},...}`.
    Json,
}

impl LogFormat {
    /// From `LASTMILE_LOG_FORMAT` (`json` or `text`; anything else, or nothing, is text).
    pub fn from_env() -> LogFormat {
        match std::env::var("LASTMILE_LOG_FORMAT").as_deref().map(str::trim) {
            Ok(f) if f.eq_ignore_ascii_case("json") => LogFormat::Json,
            _ => LogFormat::Text,
        }
    }
}

/// A subscriber writing `format` lines to `writer`, filtered by `filter` (`RUST_LOG` syntax).
pub fn log_subscriber<W>(format: LogFormat, filter: &str, writer: W) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let builder =
        tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::new(filter)).with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.finish()),
        // JSON escapes whatever a field holds (a hostile id included): one line per event.
        LogFormat::Json => Box::new(builder.json().flatten_event(true).with_current_span(false).finish()),
    }
}

/// Log to stderr (`RUST_LOG` filters, default `info,lapin=warn`; `LASTMILE_LOG_FORMAT=json` for
/// JSON lines).
pub fn init_logging() {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info,lapin=warn".into());
    let _ = tracing::subscriber::set_global_default(log_subscriber(LogFormat::from_env(), &filter, std::io::stderr));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_logs_are_one_object_per_line_with_hostile_values_escaped() {
        let buffer = Buffer::default();
        let out = buffer.clone();
        let subscriber = log_subscriber(LogFormat::Json, "info", move || out.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(ride_id = "r1\n{\"forged\":true}", count = 3, "ride refused");
            tracing::debug!("filtered out");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "one event, one line: {text}");
        let event: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(event["level"], "INFO");
        assert_eq!(event["message"], "ride refused");
        assert_eq!(event["ride_id"], "r1\n{\"forged\":true}", "the value survives whole, inside its field");
        assert_eq!(event["count"], 3);
        assert!(event["timestamp"].is_string());
    }

    #[test]
    fn the_log_format_comes_from_the_environment_variable_and_defaults_to_text() {
        // One test owns the variable (tests run in threads of one process).
        std::env::remove_var("LASTMILE_LOG_FORMAT");
        assert_eq!(LogFormat::from_env(), LogFormat::Text);
        std::env::set_var("LASTMILE_LOG_FORMAT", "JSON");
        assert_eq!(LogFormat::from_env(), LogFormat::Json);
        std::env::set_var("LASTMILE_LOG_FORMAT", "xml");
        assert_eq!(LogFormat::from_env(), LogFormat::Text);
        std::env::remove_var("LASTMILE_LOG_FORMAT");
    }
}
