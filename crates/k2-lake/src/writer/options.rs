//! How the writer batches, where it stops, and what it reports of a run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k2_pipeline::{BreakerConfig, RetryPolicy};
use serde::Serialize;

use crate::integrity::IntegrityOptions;

/// How the writer batches and where it stops.
#[derive(Clone, Debug)]
pub struct WriterOptions {
    /// Commit a table once this many rows are waiting. The next batch fills while one is
    /// written and committed, so up to twice this many rows are held.
    pub max_rows: usize,
    /// Commit a table once its oldest waiting row is this old.
    pub max_age: Duration,
    /// Records taken from the log per poll.
    pub poll_records: usize,
    /// zstd level of the Parquet files.
    pub zstd_level: i32,
    /// Consumer group name under which positions are reported (monitoring only).
    pub group: String,
    /// Stop once every assigned partition is fully committed (batch mode).
    pub until_caught_up: bool,
    /// Retries of a retryable failure of the catalog, the object store, the log or Redis.
    pub retry: RetryPolicy,
    /// Circuit breaker of each of those dependencies.
    pub breaker: BreakerConfig,
    /// Dedup and sequence tracking, and where their state lives.
    pub integrity: IntegrityOptions,
    /// The append-only commit audit file (None: commits are only logged).
    pub audit_path: Option<PathBuf>,
    /// Names this writer's log when several writers, each reading its own log (say, two
    /// captures of one feed), write the same tables: its positions are recorded under
    /// this name (see `commit_marks`). Empty for the single writer.
    pub source: String,
    /// Snapshots older than this are expired (see [`crate::retention`]), checked after a
    /// commit at most every [`EXPIRE_EVERY`]; None keeps every snapshot.
    pub snapshot_retention: Option<Duration>,
}

/// How often, at most, the writer expires a table's old snapshots: each expiry is a
/// catalog commit of its own.
pub const EXPIRE_EVERY: Duration = Duration::from_secs(600);

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            max_rows: 1_000_000,
            max_age: Duration::from_secs(10),
            poll_records: 50_000,
            zstd_level: 1,
            group: "k2-lake-writer".into(),
            until_caught_up: false,
            retry: RetryPolicy::default(),
            breaker: BreakerConfig::default(),
            integrity: IntegrityOptions::default(),
            audit_path: None,
            source: String::new(),
            snapshot_retention: None,
        }
    }
}

/// What a writer run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WriterSummary {
    /// Records read from the log. When the run ends caught up (or stopped cleanly):
    /// `records_consumed = rows committed + dead_lettered + duplicates_dropped`.
    pub records_consumed: u64,
    pub rows_committed: BTreeMap<String, u64>,
    pub commits: u64,
    pub dead_lettered: u64,
    /// Records dropped because their message id was already stored or seen.
    pub duplicates_dropped: u64,
    /// Sequence-tracker events of the market records consumed (in order, gap, late fill,
    /// duplicate, session reset, too old), summed over the (exchange, symbol) streams of
    /// each table.
    pub sequence_events: BTreeMap<&'static str, u64>,
    /// Source sequences found missing by gaps.
    pub sequence_missing: u64,
    /// Retries per dependency (catalog, storage, log, redis).
    pub retries: BTreeMap<&'static str, u64>,
    /// Circuit-breaker transitions in order, e.g. `catalog:open`.
    pub breaker_transitions: Vec<String>,
    pub seconds: f64,
}
