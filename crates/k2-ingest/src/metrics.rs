//! Metrics of the sources (file ingest and live feeds), declared in one place. Labels are
//! bounded: stages, venues, record types and refusal kinds are closed sets.

use std::time::Duration;

use k2_pipeline::BreakerState;

pub(crate) fn rows(stage: &'static str, produced: u64, dead_lettered: u64) {
    metrics::counter!("k2_ingest_rows_total", "stage" => stage, "outcome" => "produced")
        .increment(produced);
    metrics::counter!("k2_ingest_rows_total", "stage" => stage, "outcome" => "dead_lettered")
        .increment(dead_lettered);
}

pub(crate) fn file_failed(stage: &'static str) {
    metrics::counter!("k2_ingest_files_failed_total", "stage" => stage).increment(1);
}

/// How a feed connection ended: `closed`, `stalled`, `refused`, `broken`, `retired`.
pub(crate) fn feed_connection_ended(venue: &'static str, end: &'static str) {
    metrics::counter!("k2_feed_connections_total", "venue" => venue, "end" => end).increment(1);
}

pub(crate) fn feed_breaker(venue: &'static str, state: BreakerState) {
    metrics::gauge!("k2_feed_breaker_state", "venue" => venue).set(f64::from(state.level()));
}

/// A rotation of a long-lived connection: `done` or `failed`.
pub(crate) fn feed_rotation(venue: &'static str, outcome: &'static str) {
    metrics::counter!("k2_feed_rotations_total", "venue" => venue, "outcome" => outcome)
        .increment(1);
}

/// How full the buffer between the connection and the log is (1: reading waits).
pub(crate) fn feed_buffer_fill(venue: &'static str, fill: f64) {
    metrics::gauge!("k2_feed_buffer_fill", "venue" => venue).set(fill);
}

/// CPU time of the feed's thread; a rate of 10^6 per second is a full core.
pub(crate) fn feed_cpu(venue: &'static str, micros: u64) {
    metrics::counter!("k2_feed_cpu_microseconds_total", "venue" => venue).increment(micros);
}

pub(crate) fn feed_refused(venue: &'static str, kind: &'static str) {
    metrics::counter!("k2_feed_refused_total", "venue" => venue, "kind" => kind).increment(1);
}

/// An append of the feed's records: how long it took, and how long its oldest record had
/// waited since it was received.
pub(crate) fn feed_appended(venue: &'static str, took: Duration, oldest_waited: Duration) {
    metrics::histogram!("k2_feed_append_seconds", "venue" => venue).record(took.as_secs_f64());
    metrics::histogram!("k2_feed_to_log_seconds", "venue" => venue)
        .record(oldest_waited.as_secs_f64());
}

pub(crate) fn feed_records(venue: &'static str, data_type: &'static str, n: u64) {
    metrics::counter!("k2_feed_records_total", "venue" => venue, "data_type" => data_type)
        .increment(n);
}
