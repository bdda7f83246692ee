//! Metrics of the lake writer and the query engine, declared in one place. Labels are
//! bounded: table names and query kinds are closed sets.

use std::time::Duration;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Registers the help text of every metric below (the Prometheus `# HELP` lines).
pub fn describe() {
    describe_counter!(
        "k2_lake_records_consumed_total",
        "Records the lake writer read from the log."
    );
    describe_counter!(
        "k2_lake_rows_committed_total",
        "Rows committed to the lake, by table."
    );
    describe_counter!(
        "k2_lake_files_committed_total",
        "Parquet data files committed to the lake, by table."
    );
    describe_counter!(
        "k2_lake_bytes_committed_total",
        Unit::Bytes,
        "Bytes of the Parquet data files committed to the lake, by table."
    );
    describe_counter!(
        "k2_lake_commits_total",
        "Iceberg commits of the lake writer, by table."
    );
    describe_histogram!(
        "k2_lake_commit_seconds",
        Unit::Seconds,
        "Time to write and commit a batch, by table."
    );
    describe_gauge!(
        "k2_lake_last_commit_timestamp_seconds",
        Unit::Seconds,
        "When the lake writer last committed to the table (Unix time), by table."
    );
    describe_histogram!(
        "k2_lake_freshness_seconds",
        Unit::Seconds,
        "Per commit: from when K2 received the oldest record in it (feed receipt or file read) to the commit that made it queryable, by table."
    );
    describe_counter!(
        "k2_degradation_actions_total",
        "Degradation actions taken, by action (defer_streams, skip_compaction, refuse_query, pause_feeds)."
    );
    describe_gauge!(
        "k2_degradation_streams_deferred",
        "1 while the lake writer leaves the deferred streams (degradation.defer) in the log."
    );
    describe_counter!(
        "k2_lake_decode_errors_total",
        "Log records the writer could not decode (dead-lettered), by kind."
    );
    describe_counter!(
        "k2_lake_commit_failures_total",
        "Commits that failed, by table."
    );
    describe_counter!(
        "k2_lake_columns_added_total",
        "Columns added to a table because a newer, compatible record schema carried them, by table."
    );
    describe_counter!(
        "k2_lake_compactions_total",
        "Compactions committed (a replace snapshot each), by table."
    );
    describe_counter!(
        "k2_lake_compaction_failures_total",
        "Compactions that failed or gave up to busy writers (nothing committed), by table."
    );
    describe_counter!(
        "k2_lake_compacted_files_total",
        "Data files compactions replaced (`stage` = `replaced`) and wrote (`stage` = `written`), by table."
    );
    describe_counter!(
        "k2_lake_compacted_bytes_total",
        "Bytes of the data files compactions wrote, by table."
    );
    describe_counter!(
        "k2_lake_snapshots_expired_total",
        "Snapshots expired past writer.snapshot_retention, by table."
    );
    describe_counter!(
        "k2_lake_expiry_files_deleted_total",
        "Files deleted with expired snapshots, by table."
    );
    describe_counter!(
        "k2_lake_orphan_files_deleted_total",
        "Data files written but never committed, deleted once older than the retention, by table."
    );
    describe_counter!(
        "k2_lake_expiry_failures_total",
        "Snapshot expiries that failed (retried at the next commit), by table."
    );
    describe_gauge!(
        "k2_lake_lag_records",
        "Records in the log the writer has not committed yet, by table."
    );
    describe_gauge!(
        "k2_log_consumer_lag_records",
        "Records in a log partition after the writer's committed position, by topic and partition."
    );
    describe_counter!(
        "k2_query_total",
        "Queries run by the engine, by kind and outcome."
    );
    describe_histogram!(
        "k2_query_seconds",
        Unit::Seconds,
        "Time a query took in the engine, by kind."
    );
    describe_counter!(
        "k2_query_sql_truncated_total",
        "SQL answers cut at query.max_rows."
    );
    describe_gauge!(
        "k2_query_file_metadata_cache_bytes",
        Unit::Bytes,
        "Bytes of decoded Parquet footers kept between queries."
    );
    describe_gauge!(
        "k2_query_file_metadata_cache_files",
        "Parquet files whose decoded footers are kept between queries."
    );
    describe_gauge!(
        "k2_query_manifest_cache_manifests",
        "Manifests held for the tables' current snapshots."
    );
    describe_gauge!(
        "k2_query_manifest_cache_files",
        "Data files listed by the manifests held."
    );
    describe_counter!(
        "k2_sequence_events_total",
        "Source-sequence events of market records (in_order, gap, late_fill, duplicate, reset, too_old), by table."
    );
    describe_counter!(
        "k2_dedup_duplicates_total",
        "Records dropped because their message id was already stored or seen, by table."
    );
    describe_gauge!(
        "k2_dedup_ids",
        "Message ids remembered by the dedup window, by table."
    );
    describe_gauge!(
        "k2_dedup_memory_bytes",
        Unit::Bytes,
        "Memory of the dedup window, by table."
    );
    describe_gauge!(
        "k2_dedup_bloom_false_positives",
        "Bloom-filter hits the exact tier did not confirm since the writer started, by table."
    );
    describe_gauge!(
        "k2_dedup_evicted_ids",
        "Ids forgotten early to respect dedup.max_ids since the writer started, by table."
    );
    describe_gauge!(
        "k2_circuit_breaker_state",
        "Circuit breaker of a dependency: 0 closed, 1 half-open, 2 open."
    );
    describe_counter!(
        "k2_circuit_breaker_transitions_total",
        "Circuit breaker transitions, by dependency and new state."
    );
    describe_counter!(
        "k2_dependency_failures_total",
        "Failed calls to a dependency (catalog, storage, log, redis)."
    );
    describe_counter!(
        "k2_dedup_claims_total",
        "Message ids of batches claimed in Redis, by table and outcome."
    );
    describe_histogram!(
        "k2_dedup_claim_seconds",
        Unit::Seconds,
        "Time to claim a batch's message ids in Redis, waits included, by table."
    );
    describe_counter!(
        "k2_replay_rows_total",
        "Rows replayed in timestamp order, by table."
    );
    describe_counter!(
        "k2_replay_windows_total",
        "Replay windows read and merged into order, by table."
    );
    describe_histogram!(
        "k2_replay_window_seconds",
        Unit::Seconds,
        "Time to read and merge one replay window, by table."
    );
    describe_counter!(
        "k2_tail_events_total",
        "Events offered to the live tail, by outcome (held, evicted, no_room)."
    );
    describe_gauge!("k2_tail_events", "Events the live tail holds.");
}

pub(crate) fn rows_committed(
    table: &'static str,
    rows: usize,
    files: usize,
    bytes: u64,
    elapsed: Duration,
) {
    metrics::counter!("k2_lake_rows_committed_total", "table" => table).increment(rows as u64);
    metrics::counter!("k2_lake_bytes_committed_total", "table" => table).increment(bytes);
    metrics::counter!("k2_lake_files_committed_total", "table" => table).increment(files as u64);
    metrics::counter!("k2_lake_commits_total", "table" => table).increment(1);
    metrics::histogram!("k2_lake_commit_seconds", "table" => table).record(elapsed.as_secs_f64());
    metrics::gauge!("k2_lake_last_commit_timestamp_seconds", "table" => table)
        .set(chrono::Utc::now().timestamp_micros() as f64 / 1e6);
}

/// Whether the writer leaves deferred streams in the log now.
pub(crate) fn streams_deferred(deferring: bool) {
    metrics::gauge!("k2_degradation_streams_deferred").set(if deferring { 1.0 } else { 0.0 });
    if deferring {
        degradation_action("defer_streams");
    }
}

/// A degradation action taken: `defer_streams`, `skip_compaction`, `refuse_query`.
pub fn degradation_action(action: &'static str) {
    metrics::counter!("k2_degradation_actions_total", "action" => action).increment(1);
}

/// The writer's counters exist from its start at zero, so an alert on their rate sees a
/// writer that has not committed yet.
pub(crate) fn writer_started(tables: &[crate::tables::LakeTable]) {
    for t in tables {
        metrics::counter!("k2_lake_commits_total", "table" => t.name()).increment(0);
        metrics::counter!("k2_lake_commit_failures_total", "table" => t.name()).increment(0);
    }
}

/// A commit made rows queryable `us` after K2 received the oldest of them.
pub(crate) fn freshness(table: &'static str, us: i64) {
    metrics::histogram!("k2_lake_freshness_seconds", "table" => table)
        .record(us.max(0) as f64 / 1e6);
}

pub(crate) fn records_consumed(n: usize) {
    metrics::counter!("k2_lake_records_consumed_total").increment(n as u64);
}

pub(crate) fn decode_failed(kind: &'static str) {
    metrics::counter!("k2_lake_decode_errors_total", "kind" => kind).increment(1);
}

pub(crate) fn commit_failed(table: &'static str) {
    metrics::counter!("k2_lake_commit_failures_total", "table" => table).increment(1);
}

/// Columns a newer version of a record's schema added to a table.
pub(crate) fn columns_added(table: &'static str, n: usize) {
    metrics::counter!("k2_lake_columns_added_total", "table" => table).increment(n as u64);
}

pub(crate) fn compacted(table: &'static str, replaced: usize, written: usize, bytes: u64) {
    metrics::counter!("k2_lake_compactions_total", "table" => table).increment(1);
    metrics::counter!("k2_lake_compacted_files_total", "table" => table, "stage" => "replaced")
        .increment(replaced as u64);
    metrics::counter!("k2_lake_compacted_files_total", "table" => table, "stage" => "written")
        .increment(written as u64);
    metrics::counter!("k2_lake_compacted_bytes_total", "table" => table).increment(bytes);
}

pub(crate) fn compaction_failed(table: &'static str) {
    metrics::counter!("k2_lake_compaction_failures_total", "table" => table).increment(1);
}

pub(crate) fn snapshots_expired(table: &'static str, snapshots: usize, files: usize) {
    metrics::counter!("k2_lake_snapshots_expired_total", "table" => table)
        .increment(snapshots as u64);
    metrics::counter!("k2_lake_expiry_files_deleted_total", "table" => table)
        .increment(files as u64);
}

/// Data files a writer wrote and never committed, deleted once older than the retention.
pub(crate) fn orphan_files_deleted(table: &'static str, files: usize) {
    metrics::counter!("k2_lake_orphan_files_deleted_total", "table" => table)
        .increment(files as u64);
}

pub(crate) fn expiry_failed(table: &'static str) {
    metrics::counter!("k2_lake_expiry_failures_total", "table" => table).increment(1);
}

pub(crate) fn lag(table: &'static str, records: u64) {
    metrics::gauge!("k2_lake_lag_records", "table" => table).set(records as f64);
}

/// Labels are bounded by the topics K2 writes and their partition counts.
pub(crate) fn partition_lag(topic: &str, partition: u32, records: u64) {
    metrics::gauge!(
        "k2_log_consumer_lag_records",
        "topic" => topic.to_string(),
        "partition" => partition.to_string()
    )
    .set(records as f64);
}

pub(crate) fn query(kind: &'static str, outcome: &'static str, elapsed: Duration) {
    metrics::counter!("k2_query_total", "kind" => kind, "outcome" => outcome).increment(1);
    metrics::histogram!("k2_query_seconds", "kind" => kind).record(elapsed.as_secs_f64());
}

/// A SQL answer cut at `query.max_rows` (the caller is told so).
pub(crate) fn sql_truncated() {
    metrics::counter!("k2_query_sql_truncated_total").increment(1);
}

/// The decoded Parquet footers kept between queries (bounded by
/// `query.file_metadata_cache_mb`).
pub(crate) fn file_metadata_cache(bytes: usize, files: usize) {
    metrics::gauge!("k2_query_file_metadata_cache_bytes").set(bytes as f64);
    metrics::gauge!("k2_query_file_metadata_cache_files").set(files as f64);
}

/// The manifests held between queries for the tables' current snapshots, and the data
/// files they list.
pub(crate) fn manifest_cache(manifests: usize, files: usize) {
    metrics::gauge!("k2_query_manifest_cache_manifests").set(manifests as f64);
    metrics::gauge!("k2_query_manifest_cache_files").set(files as f64);
}

pub(crate) fn sequence_events(table: &'static str, event: &'static str, n: u64) {
    metrics::counter!("k2_sequence_events_total", "table" => table, "event" => event).increment(n);
}

pub(crate) fn duplicates_dropped(table: &'static str, n: u64) {
    metrics::counter!("k2_dedup_duplicates_total", "table" => table).increment(n);
}

pub(crate) fn dedup_held(table: &'static str, dedup: &k2_pipeline::Deduplicator) {
    metrics::gauge!("k2_dedup_ids", "table" => table).set(dedup.len() as f64);
    metrics::gauge!("k2_dedup_memory_bytes", "table" => table).set(dedup.memory_bytes() as f64);
    let stats = dedup.stats();
    // Since the writer started: Bloom hits the exact tier did not confirm (passed), and
    // ids forgotten early to respect the memory cap.
    metrics::gauge!("k2_dedup_bloom_false_positives", "table" => table)
        .set(stats.false_positives as f64);
    metrics::gauge!("k2_dedup_evicted_ids", "table" => table).set(stats.evicted as f64);
}

pub(crate) fn breaker_state(dependency: &'static str, state: k2_pipeline::BreakerState) {
    metrics::gauge!("k2_circuit_breaker_state", "dependency" => dependency)
        .set(f64::from(state.level()));
    metrics::counter!(
        "k2_circuit_breaker_transitions_total",
        "dependency" => dependency,
        "to" => state.as_str()
    )
    .increment(1);
}

pub(crate) fn dependency_failure(dependency: &'static str) {
    metrics::counter!("k2_dependency_failures_total", "dependency" => dependency).increment(1);
}

/// Shared dedup: ids claimed for a batch, found stored by another writer, taken over from
/// this writer's abandoned batch, or waited for (held by a batch in flight elsewhere);
/// and how long a batch's claims took, waits included.
pub(crate) fn dedup_claims(table: &'static str, outcome: &'static str, n: u64) {
    metrics::counter!("k2_dedup_claims_total", "table" => table, "outcome" => outcome).increment(n);
}

pub(crate) fn dedup_claim_seconds(table: &'static str, elapsed: Duration) {
    metrics::histogram!("k2_dedup_claim_seconds", "table" => table).record(elapsed.as_secs_f64());
}

pub(crate) fn replayed(table: &'static str, rows: usize) {
    metrics::counter!("k2_replay_rows_total", "table" => table).increment(rows as u64);
}

/// A replay window read and merged into order.
pub(crate) fn replay_window(table: &'static str, elapsed: Duration) {
    metrics::counter!("k2_replay_windows_total", "table" => table).increment(1);
    metrics::histogram!("k2_replay_window_seconds", "table" => table).record(elapsed.as_secs_f64());
}

/// The live tail: events held, let go (count or age bound), and refused (no room for
/// another stream); and how many it holds.
pub(crate) fn tail_events(held: u64, evicted: u64, refused: u64, total: usize) {
    metrics::counter!("k2_tail_events_total", "outcome" => "held").increment(held);
    metrics::counter!("k2_tail_events_total", "outcome" => "evicted").increment(evicted);
    metrics::counter!("k2_tail_events_total", "outcome" => "no_room").increment(refused);
    metrics::gauge!("k2_tail_events").set(total as f64);
}
