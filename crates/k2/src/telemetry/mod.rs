//! What the process tells about itself: logs (`tracing` to standard error, text or JSON),
//! metrics (a Prometheus `/metrics` endpoint) and, when configured, OTLP traces of the
//! pipeline's stages and the API's requests.

mod logs;
mod metrics;
pub mod traces;

pub use logs::init_logs;
pub use metrics::{recorder, serve_metrics};

use k2_model::ConfigError;
use serde::Deserialize;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[telemetry]`: logs and the metrics endpoint.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    /// A tracing filter, e.g. `info` or `k2_lake=debug,info`. Empty: `info` for the
    /// services (ingest, consume, feed, serve, up), `warn` for interactive commands.
    pub log_level: String,
    /// Address for the Prometheus `/metrics` endpoint of long-running commands; empty: off.
    pub metrics_listen: String,
    /// An OTLP/HTTP collector (e.g. `http://127.0.0.1:4318`) that receives a span per
    /// pipeline stage and per API request; empty: off, and the spans cost nothing.
    pub otlp_endpoint: String,
}

impl TelemetryConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.log_level.is_empty() && EnvFilter::try_new(&self.log_level).is_err() {
            return Err(ConfigError::new(
                "telemetry.log_level",
                format!("'{}' is not a tracing filter", self.log_level),
            ));
        }
        if !self.metrics_listen.is_empty()
            && self.metrics_listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(ConfigError::new(
                "telemetry.metrics_listen",
                format!("'{}' is not an address (host:port)", self.metrics_listen),
            ));
        }
        if !self.otlp_endpoint.is_empty() {
            traces::check_endpoint(&self.otlp_endpoint)
                .map_err(|why| ConfigError::new("telemetry.otlp_endpoint", why))?;
        }
        Ok(())
    }
}
