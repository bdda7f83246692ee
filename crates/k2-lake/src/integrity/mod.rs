//! What the lake writer checks before a record reaches a table: dedup by message id, then
//! the source sequence of each (exchange, symbol) stream.
//!
//! The writer sees a small interface: [`TableIntegrity::restore`] at start,
//! [`admit`](TableIntegrity::admit) per record, [`prepare`](TableIntegrity::prepare)
//! before a commit (the state the commit stands for, made durable) and
//! [`committed`](TableIntegrity::committed) after it; with dedup shared in Redis, the
//! batch's message ids are claimed in between.
//!
//! Both survive a restart without a false alarm, each anchored in the table's committed
//! snapshot so that what is restored always matches what was committed:
//!
//! - **Dedup** is rebuilt from the lake itself ([`reload`]).
//! - **Sequence state** is a file named in the snapshot ([`state_file`]), or lives in Redis
//!   shared by several writers ([`shared_sequence`]).
//!
//! # Layout
//!
//! - [`options`] — what the integrity checks are configured with.
//! - [`ledger`] — the completeness ledger of a table as of a snapshot, read back as data.
//! - [`reload`] — the dedup window rebuilt from the lake.
//! - [`state_file`] — the sequence state written with each commit.
//! - [`redis`], [`shared_sequence`], [`shared_dedup`] — the shared form in Redis.

pub mod ledger;
mod options;
pub mod redis;
mod reload;
pub mod shared_dedup;
pub mod shared_sequence;
#[cfg(test)]
mod shared_tests;
mod state_file;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use iceberg::table::Table;
use k2_model::MarketRecord;
use k2_pipeline::{Deduplicator, Event, GapRange, SequenceTracker};

pub use self::options::{DedupSection, IntegrityOptions, SequenceSection};
pub use self::redis::RedisTarget;
use self::shared_dedup::RedisDedup;
use self::shared_sequence::RedisSequenceTracker;
use self::state_file::StateFile;
use crate::commit_marks::{self, IntegrityMarks};
use crate::error::{LakeError, Result};
use crate::tables::LakeTable;

/// What became of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Seen before (same message id): dropped, counted for its stream.
    Duplicate,
    /// New: it goes to the table (its sequence check is collected, see
    /// [`TableIntegrity::take_events`]).
    Keep,
}

/// Where the sequence state of the streams lives.
enum Sequences {
    /// In this process, persisted with each commit.
    Local(SequenceTracker),
    /// In Redis, shared by every writer pointed at it; messages are checked in one
    /// pipelined round trip per poll.
    Redis {
        tracker: Box<RedisSequenceTracker>,
        pending: Vec<(String, String, u64, i64)>,
    },
}

/// The sequence events of a poll: counts by event, and the gaps with their stream.
#[derive(Debug, Default)]
pub struct PollEvents {
    pub counts: BTreeMap<&'static str, u64>,
    pub gaps: Vec<(String, String, GapRange)>,
}

impl PollEvents {
    fn add(&mut self, exchange: &str, symbol: &str, event: Event) {
        *self.counts.entry(event.as_str()).or_default() += 1;
        if let Event::Gap(gap) = event {
            self.gaps
                .push((exchange.to_string(), symbol.to_string(), gap));
        }
    }
}

/// Dedup claims in Redis, shared with the other writers of the table.
struct SharedDedup {
    client: RedisDedup,
    lease: Duration,
    window: Duration,
}

/// Dedup and sequence tracking of one table.
pub struct TableIntegrity {
    table: LakeTable,
    dedup: Deduplicator,
    shared: Option<SharedDedup>,
    sequences: Sequences,
    events: PollEvents,
    duplicates: BTreeMap<(String, String), u64>,
    state_dir: Option<PathBuf>,
}

impl TableIntegrity {
    /// State as of the newest snapshot `source` committed (the current one for a single
    /// writer): ids reloaded from the lake, sequence state from the file the snapshot
    /// names (when a state directory is configured) or in Redis. With shared dedup, the
    /// ids of each batch are also claimed in Redis before it is written.
    pub async fn restore(
        t: LakeTable,
        table: &Table,
        source: &str,
        options: &IntegrityOptions,
    ) -> Result<Self> {
        let connecting = |target: &RedisTarget| format!("connecting to Redis at {}", target.addr);
        let shared = match &options.dedup_redis {
            None => None,
            Some(target) => Some(SharedDedup {
                client: RedisDedup::connect(target, t.name())
                    .await
                    .map_err(|e| LakeError::redis(connecting(target), e))?,
                lease: options.dedup_lease,
                window: Duration::from_micros(options.dedup.window_us.max(1) as u64),
            }),
        };
        let sequences = match &options.sequence_redis {
            None => Sequences::Local(SequenceTracker::new(options.sequence.clone())),
            Some(target) => Sequences::Redis {
                tracker: Box::new(
                    RedisSequenceTracker::connect(target, t.name(), options.sequence.clone())
                        .await
                        .map_err(|e| LakeError::redis(connecting(target), e))?,
                ),
                pending: Vec::new(),
            },
        };
        let mut me = TableIntegrity {
            table: t,
            dedup: Deduplicator::new(options.dedup.clone()),
            shared,
            sequences,
            events: PollEvents::default(),
            duplicates: BTreeMap::new(),
            state_dir: options.state_dir.as_ref().map(|d| d.join(t.name())),
        };
        let Some(snapshot) = commit_marks::source_snapshot(table, source) else {
            return Ok(me);
        };
        let marks = commit_marks::integrity_of(snapshot)?;
        let started = std::time::Instant::now();
        let loaded = reload::reload_ids(t, table, marks.dedup_from_us, &mut me.dedup).await?;
        tracing::info!(
            table = %t, ids = loaded, from_us = marks.dedup_from_us,
            ms = started.elapsed().as_millis() as u64,
            "dedup window reloaded from the lake"
        );
        if let (Some(dir), Some(name)) = (&me.state_dir, &marks.state_file) {
            match state_file::read(dir, name)? {
                Some((path, file)) => {
                    if let Sequences::Local(tracker) = &mut me.sequences
                        && !file.sequence.is_null()
                    {
                        *tracker = SequenceTracker::restore(
                            &serde_json::to_vec(&file.sequence).expect("JSON value serialises"),
                            options.sequence.clone(),
                        )
                        .map_err(|e| LakeError::CorruptFile {
                            path,
                            detail: e.to_string(),
                        })?;
                    }
                    me.duplicates = file
                        .duplicates
                        .into_iter()
                        .map(|(e, s, n)| ((e, s), n))
                        .collect();
                }
                None => tracing::warn!(
                    table = %t, file = %dir.join(name).display(),
                    "sequence state of the committed snapshot is missing; streams start afresh"
                ),
            }
        }
        Ok(me)
    }

    /// Dedups the record, then collects its sequence check.
    pub fn admit(&mut self, record: &MarketRecord) -> Verdict {
        let id = record.message_id().as_u128();
        if !self.dedup.check(id, record.ingestion_time_us()) {
            self.count_duplicate(record);
            return Verdict::Duplicate;
        }
        if let (Some(seq), Some(at_us)) = (record.source_sequence(), record.event_time_us())
            && let Ok(seq) = u64::try_from(seq)
        {
            let (exchange, symbol) = (record.exchange(), record.symbol());
            match &mut self.sequences {
                Sequences::Local(tracker) => {
                    let event = tracker.check_named(exchange, symbol, seq, at_us);
                    self.events.add(exchange, symbol, event);
                }
                Sequences::Redis { pending, .. } => {
                    pending.push((exchange.to_string(), symbol.to_string(), seq, at_us));
                }
            }
        }
        Verdict::Keep
    }

    /// The sequence events of the records admitted since the last call (with Redis, the
    /// collected checks run now, in one round trip; a failed round trip keeps them for the
    /// retry).
    pub async fn take_events(&mut self) -> Result<PollEvents> {
        if let Sequences::Redis { tracker, pending } = &mut self.sequences
            && !pending.is_empty()
        {
            let messages: Vec<_> = pending
                .iter()
                .map(|(e, s, q, t)| (e.as_str(), s.as_str(), *q, *t))
                .collect();
            let events = tracker
                .check_batch(&messages)
                .await
                .map_err(|e| LakeError::redis("checking sequences in Redis", e))?;
            for ((exchange, symbol, _, _), event) in pending.iter().zip(events) {
                self.events.add(exchange, symbol, event);
            }
            pending.clear();
        }
        Ok(std::mem::take(&mut self.events))
    }

    /// Before the commit of `batch`: makes the state it stands for durable, and returns
    /// what the commit records of it.
    pub fn prepare(&self, batch: &str) -> Result<IntegrityMarks> {
        let mut marks = IntegrityMarks {
            state_file: None,
            dedup_from_us: self.dedup.window_start_us(),
        };
        let Some(dir) = &self.state_dir else {
            return Ok(marks);
        };
        let file = StateFile {
            table: self.table.name().to_string(),
            batch: batch.to_string(),
            // With Redis the streams' state lives there, shared; only the counts are here.
            sequence: match &self.sequences {
                Sequences::Local(tracker) => {
                    serde_json::from_slice(&tracker.snapshot()).expect("tracker snapshot is JSON")
                }
                Sequences::Redis { .. } => serde_json::Value::Null,
            },
            duplicates: self
                .duplicates
                .iter()
                .map(|((e, s), n)| (e.clone(), s.clone(), *n))
                .collect(),
        };
        marks.state_file = Some(state_file::write(dir, &file)?);
        Ok(marks)
    }

    /// After the commit of `batch`: the state of older commits goes (but the newest few,
    /// for readers of the ledger that are a commit behind).
    pub fn committed(&self, batch: &str) {
        if let Some(dir) = &self.state_dir {
            state_file::prune(dir, batch);
        }
    }

    /// A record found stored by another writer (its claim resolved to a committed batch).
    pub fn count_duplicate(&mut self, record: &MarketRecord) {
        let key = (record.exchange().to_string(), record.symbol().to_string());
        *self.duplicates.entry(key).or_default() += 1;
    }

    /// Whether ids are claimed in Redis before each batch is written.
    pub fn shares_dedup(&self) -> bool {
        self.shared.is_some()
    }

    /// The claim's lease, with shared dedup.
    pub fn claim_lease(&self) -> Option<Duration> {
        self.shared.as_ref().map(|s| s.lease)
    }

    /// Claims the ids for `token` (see [`RedisDedup::claim`]); None per id now claimed,
    /// else the token that holds it.
    pub async fn claim(
        &mut self,
        ids: Vec<(u128, Option<String>)>,
        token: String,
    ) -> Result<Vec<Option<String>>> {
        let Some(shared) = &mut self.shared else {
            return Ok(vec![None; ids.len()]);
        };
        let ids: Vec<(u128, Option<&str>)> = ids.iter().map(|(i, r)| (*i, r.as_deref())).collect();
        shared
            .client
            .claim(&ids, &token, shared.lease)
            .await
            .map_err(|e| LakeError::redis("claiming message ids in Redis", e))
    }

    /// After the commit: the claims last the dedup window. Returns how many `token` held.
    pub async fn keep_claims(&mut self, ids: Vec<u128>, token: String) -> Result<u64> {
        let Some(shared) = &mut self.shared else {
            return Ok(0);
        };
        shared
            .client
            .keep(&ids, &token, shared.window)
            .await
            .map_err(|e| LakeError::redis("keeping message-id claims in Redis", e))
    }

    /// Gives the claims up (the batch waits for another writer's).
    pub async fn release_claims(&mut self, ids: Vec<u128>, token: String) -> Result<u64> {
        let Some(shared) = &mut self.shared else {
            return Ok(0);
        };
        shared
            .client
            .release(&ids, &token)
            .await
            .map_err(|e| LakeError::redis("releasing message-id claims in Redis", e))
    }

    pub fn dedup(&self) -> &Deduplicator {
        &self.dedup
    }

    /// Duplicates dropped per (exchange, symbol) stream.
    pub fn duplicates(&self) -> &BTreeMap<(String, String), u64> {
        &self.duplicates
    }
}
