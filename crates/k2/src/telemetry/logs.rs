//! Log lines to standard error, text or JSON, filtered by `telemetry.log_level` or
//! `K2_LOG`; the subscriber also holds the slot of the optional trace exporter.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use super::{LogFormat, TelemetryConfig, traces};

/// Targets whose debug events carry credentials (found by `tests/secrets.rs`, which
/// searches a debug-level run for known secrets).
const CREDENTIAL_PRINTERS: &[&str] = &["reqsign", "reqsign_core", "reqsign_aws_v4"];

/// `service`: a long-running command, which logs at `info` unless configured otherwise.
pub fn init_logs(config: &TelemetryConfig, service: bool) {
    let default = if !config.log_level.is_empty() {
        config.log_level.as_str()
    } else if service {
        "info"
    } else {
        "warn"
    };
    let mut filter = EnvFilter::try_from_env("K2_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // Libraries that print credentials in their debug events stay at `warn`, whatever
    // level is asked for: the object store's request signer logs its static credentials
    // (access key and secret) at debug.
    for quiet in CREDENTIAL_PRINTERS {
        filter = filter.add_directive(format!("{quiet}=warn").parse().expect("a directive"));
    }
    // Colours for a terminal only: a log file or collector gets plain text.
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let lines = if config.log_format == LogFormat::Json {
        lines.json().boxed()
    } else {
        lines.boxed()
    };
    // The filter is the log lines' own: the trace exporter, when on, picks its spans
    // with a filter of its own.
    tracing_subscriber::registry()
        .with(traces::slot())
        .with(lines.with_filter(filter))
        .init();
}
