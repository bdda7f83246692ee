//! How the writer batches, where it stops, and what it reports of a run: the `[writer]`
//! section of `k2.toml`, the options a run takes, its summary.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k2_model::ConfigError;
use k2_pipeline::{BreakerConfig, RetryPolicy};
use serde::{Deserialize, Serialize};

use crate::integrity::IntegrityOptions;

/// `[writer]`: the lake writer's batches, retries and snapshot retention.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WriterConfig {
    /// Commit a table once this many rows are waiting.
    pub max_rows: usize,
    /// Commit a table once its oldest waiting row is this old.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// zstd level of the Parquet files (1–22).
    pub zstd_level: i32,
    /// Consumer group under which the writer's positions are reported (monitoring only).
    pub group: String,
    /// Attempts at a call to the catalog, object store, log or Redis that fails retryably.
    pub retry_attempts: u32,
    /// First backoff; doubles per attempt (jittered) up to `retry_max`.
    #[serde(with = "humantime_serde")]
    pub retry_base: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Consecutive failures that open a dependency's circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker waits before a trial call.
    #[serde(with = "humantime_serde")]
    pub breaker_open: Duration,
    /// Names this writer's log when several writers, each with its own log, write the
    /// same tables (its positions are recorded under the name). Empty: the only writer.
    pub source: String,
    /// Snapshots older than this expire (time travel reaches this far back); `0s` keeps
    /// every snapshot.
    #[serde(with = "humantime_serde")]
    pub snapshot_retention: Duration,
    /// How often `k2 consume` and `k2 up` compact the market tables' small files; `0s`:
    /// never in the background (`k2 compact` still does).
    #[serde(with = "humantime_serde")]
    pub compact_every: Duration,
    /// Compacted files are written up to this size, MiB; files under 3/4 of it are small.
    pub compact_target_file_mb: u64,
    /// A day partition is compacted once it holds this many small files.
    pub compact_min_files: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        let (retry, breaker) = (RetryPolicy::default(), BreakerConfig::default());
        WriterConfig {
            max_rows: 1_000_000,
            max_age: Duration::from_secs(10),
            zstd_level: 1,
            group: "k2-lake-writer".into(),
            retry_attempts: retry.attempts,
            retry_base: retry.base,
            retry_max: retry.max_delay,
            breaker_failures: breaker.failure_threshold,
            breaker_open: breaker.open_for,
            source: String::new(),
            snapshot_retention: Duration::from_secs(24 * 3600),
            compact_every: Duration::from_secs(600),
            compact_target_file_mb: 64,
            compact_min_files: 8,
        }
    }
}

impl WriterConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=22).contains(&self.zstd_level) {
            return Err(ConfigError::new(
                "writer.zstd_level",
                format!("must be between 1 and 22, not {}", self.zstd_level),
            ));
        }
        if self.max_rows == 0 || self.max_age.is_zero() {
            return Err(ConfigError::new(
                "writer.max_rows",
                "writer.max_rows and writer.max_age must be positive",
            ));
        }
        if self.compact_target_file_mb == 0 || self.compact_min_files < 2 {
            return Err(ConfigError::new(
                "writer.compact_min_files",
                "writer.compact_target_file_mb must be positive and writer.compact_min_files at least 2",
            ));
        }
        if self.retry_attempts == 0 || self.breaker_failures == 0 {
            return Err(ConfigError::new(
                "writer.retry_attempts",
                "writer.retry_attempts and writer.breaker_failures must be at least 1",
            ));
        }
        // An hour at least: a writer sharing dedup in Redis looks up the batches other
        // writers hold claims for among the snapshots, and a query pinned to a snapshot
        // should not see it vanish mid-session.
        let kept = self.snapshot_retention;
        if !(kept.is_zero() || kept >= Duration::from_secs(3600)) {
            return Err(ConfigError::new(
                "writer.snapshot_retention",
                format!(
                    "must be 0s (keep every snapshot) or at least 1h, not {}",
                    humantime::format_duration(kept)
                ),
            ));
        }
        Ok(())
    }

    /// How compactions run, on every partition (`day`: only that one).
    pub fn compact_options(&self, day: Option<i32>) -> crate::compaction::CompactOptions {
        crate::compaction::CompactOptions {
            target_file_bytes: self.compact_target_file_mb << 20,
            min_files: self.compact_min_files,
            day,
            zstd_level: self.zstd_level,
            ..Default::default()
        }
    }

    /// The options of a run of this writer: its integrity checks, and the audit file.
    pub fn options(
        &self,
        integrity: IntegrityOptions,
        audit_path: Option<PathBuf>,
    ) -> WriterOptions {
        WriterOptions {
            max_rows: self.max_rows,
            max_age: self.max_age,
            poll_records: POLL_RECORDS,
            zstd_level: self.zstd_level,
            group: self.group.clone(),
            until_caught_up: false,
            retry: RetryPolicy {
                attempts: self.retry_attempts,
                base: self.retry_base,
                max_delay: self.retry_max,
            },
            breaker: BreakerConfig {
                failure_threshold: self.breaker_failures,
                open_for: self.breaker_open,
            },
            integrity,
            audit_path,
            source: self.source.clone(),
            snapshot_retention: (!self.snapshot_retention.is_zero())
                .then_some(self.snapshot_retention),
            degradation: None,
        }
    }
}

/// Records taken from the log per poll.
const POLL_RECORDS: usize = 50_000;

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
    /// The process's degradation: the writer reports its lag and commit times to it, and
    /// defers tables' streams at its level. None: no degradation.
    pub degradation: Option<Degradation>,
}

/// What the writer does under the process's degradation level.
#[derive(Clone, Debug)]
pub struct Degradation {
    pub pressure: std::sync::Arc<k2_pipeline::Pressure>,
    /// From this level on, the streams of `defer` are left in the log (not read, so not
    /// landed) until the level falls below it again; their records stay in the log and
    /// land then, exactly once like any other.
    pub defer_from: k2_pipeline::Level,
    pub defer: Vec<crate::tables::LakeTable>,
}

impl Degradation {
    /// Whether `table`'s streams are left in the log now.
    pub fn defers(&self, table: crate::tables::LakeTable) -> bool {
        self.deferring() && self.defer.contains(&table)
    }

    pub fn deferring(&self) -> bool {
        self.pressure.level() >= self.defer_from && !self.defer.is_empty()
    }
}

/// How often, at most, the writer expires a table's old snapshots: each expiry is a
/// catalog commit of its own.
pub const EXPIRE_EVERY: Duration = Duration::from_secs(600);

impl Default for WriterOptions {
    /// The `[writer]` defaults, without the audit file, keeping every snapshot.
    fn default() -> Self {
        WriterOptions {
            snapshot_retention: None,
            ..WriterConfig::default().options(IntegrityOptions::default(), None)
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
