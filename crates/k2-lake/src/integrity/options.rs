//! What the integrity checks are configured with: the `[dedup]` and `[sequence]` sections
//! of `k2.toml`, and the options the writer runs them with.

use std::path::PathBuf;
use std::time::Duration;

use k2_model::ConfigError;
use k2_pipeline::{DedupConfig, SequenceConfig};
use serde::Deserialize;

use super::redis::RedisTarget;

/// `[dedup]`: dedup of each table by message id (see `k2_pipeline::dedup`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupSection {
    /// How long an id is remembered after the record arrived.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Ids are forgotten a bucket of this width at a time.
    #[serde(with = "humantime_serde")]
    pub bucket: Duration,
    /// Most ids remembered per table (about 30 bytes each).
    pub max_ids: usize,
    /// `host:port` of a Redis in which every batch's ids are claimed before it is
    /// written, so that writers sharing the tables store a record once (each writer then
    /// needs its own `writer.source`). Empty: dedup within this writer.
    pub redis: String,
    /// Prefix of K2's keys in that Redis.
    pub redis_prefix: String,
    /// How long a claim holds while its batch is written and committed.
    #[serde(with = "humantime_serde")]
    pub redis_lease: Duration,
    /// Bound of a connection attempt and of every answer from that Redis.
    #[serde(with = "humantime_serde")]
    pub redis_timeout: Duration,
}

impl Default for DedupSection {
    fn default() -> Self {
        let d = DedupConfig::default();
        DedupSection {
            window: Duration::from_micros(d.window_us as u64),
            bucket: Duration::from_micros(d.bucket_us as u64),
            max_ids: d.max_ids,
            redis: String::new(),
            redis_prefix: "k2".into(),
            redis_lease: Duration::from_secs(300),
            redis_timeout: Duration::from_secs(5),
        }
    }
}

impl DedupSection {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.bucket < Duration::from_secs(1) {
            return Err(ConfigError::new("dedup.bucket", "must be at least 1s"));
        }
        if self.window < self.bucket {
            return Err(ConfigError::new(
                "dedup.window",
                "must hold at least one bucket (dedup.bucket)",
            ));
        }
        if self.max_ids == 0 {
            return Err(ConfigError::new("dedup.max_ids", "must be positive"));
        }
        if self.redis_lease < Duration::from_secs(1) || self.redis_timeout.is_zero() {
            return Err(ConfigError::new(
                "dedup.redis_lease",
                "the lease must be at least 1s and redis_timeout positive",
            ));
        }
        Ok(())
    }

    fn config(&self) -> DedupConfig {
        DedupConfig {
            window_us: micros(self.window),
            bucket_us: micros(self.bucket),
            max_ids: self.max_ids,
        }
    }
}

/// `[sequence]`: sequence tracking of each (exchange, symbol) stream (see
/// `k2_pipeline::sequence`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SequenceSection {
    /// How far behind the newest sequence a message is still a duplicate or late fill.
    pub window: u64,
    /// A pause (exchange time) after which a drop back is a session reset.
    #[serde(with = "humantime_serde")]
    pub reset_after: Duration,
    /// Sequences a session starts from: a drop back to them is a reset.
    pub restart_max: u64,
    /// Open gaps kept per stream.
    pub max_open_gaps: usize,
    /// `host:port` of a Redis holding the streams' state, shared by several writers.
    /// Empty: in the writer's process, persisted in the data directory with each commit.
    pub redis: String,
    /// Prefix of K2's keys in that Redis (deployments sharing a Redis differ by prefix).
    pub redis_prefix: String,
    /// Bound of a connection attempt and of every answer from that Redis.
    #[serde(with = "humantime_serde")]
    pub redis_timeout: Duration,
}

impl Default for SequenceSection {
    fn default() -> Self {
        let s = SequenceConfig::default();
        SequenceSection {
            window: s.window,
            reset_after: Duration::from_micros(s.reset_after_us as u64),
            restart_max: s.restart_max,
            max_open_gaps: s.max_open_gaps,
            redis: String::new(),
            redis_prefix: "k2".into(),
            redis_timeout: Duration::from_secs(5),
        }
    }
}

impl SequenceSection {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.window == 0 {
            return Err(ConfigError::new("sequence.window", "must be positive"));
        }
        if self.max_open_gaps == 0 {
            return Err(ConfigError::new(
                "sequence.max_open_gaps",
                "must be positive",
            ));
        }
        if self.redis_timeout.is_zero() {
            return Err(ConfigError::new(
                "sequence.redis_timeout",
                "must be positive",
            ));
        }
        Ok(())
    }

    fn config(&self) -> SequenceConfig {
        SequenceConfig {
            window: self.window,
            reset_after_us: micros(self.reset_after),
            restart_max: self.restart_max,
            max_open_gaps: self.max_open_gaps,
        }
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// How the writer checks each table.
#[derive(Clone, Debug)]
pub struct IntegrityOptions {
    /// Dedup window and memory bound (per table).
    pub dedup: DedupConfig,
    /// Sequence tracking of each (exchange, symbol) stream.
    pub sequence: SequenceConfig,
    /// Where sequence state is kept between runs (None: in this process only, so a
    /// restart starts every stream afresh).
    pub state_dir: Option<PathBuf>,
    /// Keep sequence state in Redis, shared by several writers (None: in this process,
    /// persisted with each commit).
    pub sequence_redis: Option<RedisTarget>,
    /// Claim every batch's message ids in this Redis before writing it, so that records
    /// reaching several writers are stored once (None: dedup within this writer only).
    pub dedup_redis: Option<RedisTarget>,
    /// How long a claim holds while its batch is written and committed; a writer that
    /// dies mid-batch blocks those ids this long.
    pub dedup_lease: Duration,
}

impl Default for IntegrityOptions {
    fn default() -> Self {
        IntegrityOptions::build(&DedupSection::default(), &SequenceSection::default(), None)
    }
}

impl IntegrityOptions {
    /// The options of the configured sections, the sequence state kept under `state_dir`.
    pub fn build(
        dedup: &DedupSection,
        sequence: &SequenceSection,
        state_dir: Option<PathBuf>,
    ) -> Self {
        let target = |addr: &str, prefix: &str, timeout: Duration| {
            (!addr.is_empty()).then(|| RedisTarget {
                addr: addr.to_string(),
                prefix: prefix.to_string(),
                timeout,
            })
        };
        IntegrityOptions {
            dedup: dedup.config(),
            sequence: sequence.config(),
            state_dir,
            sequence_redis: target(
                &sequence.redis,
                &sequence.redis_prefix,
                sequence.redis_timeout,
            ),
            dedup_redis: target(&dedup.redis, &dedup.redis_prefix, dedup.redis_timeout),
            dedup_lease: dedup.redis_lease,
        }
    }
}
