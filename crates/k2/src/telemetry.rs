//! Logs and metrics of the process: `tracing` to standard error (text or JSON), and a
//! Prometheus `/metrics` endpoint for long-running commands when configured.

use anyhow::Context;
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
        Ok(())
    }
}

/// `service`: a long-running command, which logs at `info` unless configured otherwise.
pub fn init_logs(config: &TelemetryConfig, service: bool) {
    let default = if !config.log_level.is_empty() {
        config.log_level.as_str()
    } else if service {
        "info"
    } else {
        "warn"
    };
    let filter = EnvFilter::try_from_env("K2_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours for a terminal only: a log file or collector gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if config.log_format == LogFormat::Json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Serves `/metrics` on the configured address (long-running commands only).
pub fn serve_metrics(config: &TelemetryConfig) -> anyhow::Result<()> {
    if config.metrics_listen.is_empty() {
        return Ok(());
    }
    let addr: std::net::SocketAddr = config.metrics_listen.parse().with_context(|| {
        format!(
            "telemetry.metrics_listen '{}' is not an address",
            config.metrics_listen
        )
    })?;
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .with_context(|| format!("serving metrics on {addr}"))?;
    describe_metrics();
    tracing::info!(%addr, "metrics served at /metrics");
    Ok(())
}

/// Installs the process's Prometheus recorder and returns the handle that renders it (for a
/// `/metrics` route of the process's own server). Durations are histograms with buckets
/// from 0.5 ms to 30 s.
pub fn recorder() -> anyhow::Result<metrics_exporter_prometheus::PrometheusHandle> {
    let buckets = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ];
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            &buckets,
        )
        .context("histogram buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    describe_metrics();
    Ok(handle)
}

/// The help text of every metric K2 emits, crate by crate, and the build's own.
fn describe_metrics() {
    k2_log::describe_metrics();
    k2_lake::describe_metrics();
    k2_ingest::describe_metrics();
    k2_api::describe_metrics();
    metrics::describe_gauge!(
        "k2_build_info",
        "Always 1; the version label names the running build."
    );
    metrics::gauge!("k2_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}
