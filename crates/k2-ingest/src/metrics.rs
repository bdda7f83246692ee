//! Metrics of the sources (file ingest and live feeds), declared in one place. Labels are
//! bounded: stages, venues, record types and refusal kinds are closed sets.

use std::time::Duration;

use k2_pipeline::BreakerState;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Registers the help text of every metric below (the Prometheus `# HELP` lines).
pub fn describe() {
    describe_counter!(
        "k2_ingest_rows_total",
        "File rows ingested, by stage and outcome (produced, dead_lettered)."
    );
    describe_counter!(
        "k2_ingest_files_failed_total",
        "Files an ingest could not finish, by stage."
    );
    describe_counter!(
        "k2_feed_connections_total",
        "Feed connections ended, by venue and how (closed, stalled, refused, broken, retired)."
    );
    describe_gauge!(
        "k2_feed_breaker_state",
        "Circuit breaker of a feed's connections: 0 closed, 1 half-open, 2 open."
    );
    describe_counter!(
        "k2_feed_rotations_total",
        "Rotations of long-lived feed connections, by venue and outcome."
    );
    describe_gauge!(
        "k2_feed_buffer_fill",
        "How full the buffer between a feed's connection and the log is (1: reading waits)."
    );
    describe_gauge!(
        "k2_feed_cpu_seconds",
        Unit::Seconds,
        "CPU seconds used by a feed's thread since it started; its rate is the share of a core."
    );
    describe_counter!(
        "k2_feed_refused_total",
        "Feed frames refused (dead-lettered), by venue and kind."
    );
    describe_histogram!(
        "k2_feed_append_seconds",
        Unit::Seconds,
        "Time of an append of a feed's records to the log, by venue."
    );
    describe_histogram!(
        "k2_feed_to_log_seconds",
        Unit::Seconds,
        "Time from a record's receipt to its append to the log, for the oldest record of each append, by venue."
    );
    describe_gauge!(
        "k2_feed_connections_open",
        "Connections of a feed that are open now (2 while a rotation overlaps), by venue."
    );
    describe_gauge!(
        "k2_feed_last_message_timestamp_seconds",
        Unit::Seconds,
        "When a feed's connection last received anything, data or pong (Unix time), by venue."
    );
    describe_gauge!(
        "k2_feed_failures_in_a_row",
        "Failed connections of a feed since its last healthy one; the feed gives up at feeds.max_failures."
    );
    describe_counter!(
        "k2_feed_records_total",
        "Feed records appended to the log, by venue and data type."
    );
}

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

/// CPU time of the feed's thread; a rate of 1 per second is a full core.
pub(crate) fn feed_cpu(venue: &'static str, micros: u64) {
    metrics::gauge!("k2_feed_cpu_seconds", "venue" => venue).increment(micros as f64 / 1e6);
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

/// One open connection of a feed, counted while it lives.
pub(crate) struct OpenConnection(&'static str);

impl OpenConnection {
    pub(crate) fn new(venue: &'static str) -> Self {
        metrics::gauge!("k2_feed_connections_open", "venue" => venue).increment(1.0);
        OpenConnection(venue)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!("k2_feed_connections_open", "venue" => self.0).decrement(1.0);
    }
}

/// A feed's connection received something now.
pub(crate) fn feed_heard(venue: &'static str) {
    metrics::gauge!("k2_feed_last_message_timestamp_seconds", "venue" => venue).set(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
    );
}

pub(crate) fn feed_failures_in_a_row(venue: &'static str, n: u32) {
    metrics::gauge!("k2_feed_failures_in_a_row", "venue" => venue).set(f64::from(n));
}

/// A feed starts with no connection open (the series exists before the first connects).
pub(crate) fn feed_started(venue: &'static str) {
    metrics::gauge!("k2_feed_connections_open", "venue" => venue).increment(0.0);
}

/// A feed paused by degradation: it takes no new data until the level falls.
pub(crate) fn feed_paused() {
    metrics::counter!("k2_degradation_actions_total", "action" => "pause_feeds").increment(1);
}
