//! Metrics of the durable stores, declared in one place. Labels are bounded: topic names
//! come from configuration, dead-letter kinds from a closed set in the code.

use std::time::Duration;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Registers the help text of every metric below (the Prometheus `# HELP` lines).
pub fn describe() {
    describe_counter!(
        "k2_log_records_appended_total",
        "Records appended to the log, by topic."
    );
    describe_histogram!(
        "k2_log_append_seconds",
        Unit::Seconds,
        "Time of a durable append to the log."
    );
    describe_gauge!(
        "k2_log_embedded_cache_bytes",
        Unit::Bytes,
        "Page cache of the embedded log's file."
    );
    describe_counter!(
        "k2_log_records_read_total",
        "Records read from the log by consumers."
    );
    describe_counter!(
        "k2_dead_letters_total",
        "Records refused into the dead-letter store, by stage and kind."
    );
    describe_counter!(
        "k2_log_consumer_errors_total",
        "Errors a log consumer met while polling."
    );
    describe_counter!(
        "k2_log_retries_total",
        "Retried calls to the log, by backend."
    );
}

pub(crate) fn records_appended(topic: &str, n: usize) {
    metrics::counter!("k2_log_records_appended_total", "topic" => topic.to_string())
        .increment(n as u64);
}

pub(crate) fn append_latency(elapsed: Duration) {
    metrics::histogram!("k2_log_append_seconds").record(elapsed.as_secs_f64());
}

/// The embedded log file's page cache (bounded, see `embedded::LOG_CACHE_BYTES`).
pub(crate) fn embedded_cache_bytes(bytes: usize) {
    metrics::gauge!("k2_log_embedded_cache_bytes").set(bytes as f64);
}

pub(crate) fn records_read(n: usize) {
    if n > 0 {
        metrics::counter!("k2_log_records_read_total").increment(n as u64);
    }
}

pub(crate) fn dead_lettered(stage: &str, kind: &str) {
    metrics::counter!("k2_dead_letters_total", "stage" => stage.to_string(), "kind" => kind.to_string()).increment(1);
}

pub(crate) fn consumer_error() {
    metrics::counter!("k2_log_consumer_errors_total").increment(1);
}

pub(crate) fn retried(backend: &'static str) {
    metrics::counter!("k2_log_retries_total", "backend" => backend).increment(1);
}
