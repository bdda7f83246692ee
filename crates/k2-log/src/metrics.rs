//! Metrics of the durable stores, declared in one place. Labels are bounded: topic names
//! come from configuration, dead-letter kinds from a closed set in the code.

use std::time::Duration;

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
