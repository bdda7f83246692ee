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
    describe_gauge!(
        "k2_log_embedded_held_bytes",
        Unit::Bytes,
        "Bytes of records the embedded log holds (what retention bounds)."
    );
    describe_gauge!(
        "k2_log_embedded_file_bytes",
        Unit::Bytes,
        "Size of the embedded log's file on disk (freed pages are reused, so it stops growing under retention)."
    );
    describe_gauge!(
        "k2_log_oldest_record_timestamp_seconds",
        Unit::Seconds,
        "Producer time of the oldest record the embedded log holds, seconds since the epoch."
    );
    describe_counter!(
        "k2_log_retention_removed_records_total",
        "Records removed from the embedded log by retention (all already committed to the lake)."
    );
    describe_counter!(
        "k2_log_retention_removed_bytes_total",
        Unit::Bytes,
        "Bytes removed from the embedded log by retention."
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

pub(crate) fn log_held(bytes: u64, oldest_ms: Option<i64>, file_bytes: u64) {
    metrics::gauge!("k2_log_embedded_held_bytes").set(bytes as f64);
    metrics::gauge!("k2_log_embedded_file_bytes").set(file_bytes as f64);
    if let Some(ms) = oldest_ms {
        metrics::gauge!("k2_log_oldest_record_timestamp_seconds").set(ms as f64 / 1e3);
    }
}

pub(crate) fn log_trimmed(records: u64, bytes: u64) {
    metrics::counter!("k2_log_retention_removed_records_total").increment(records);
    metrics::counter!("k2_log_retention_removed_bytes_total").increment(bytes);
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
