//! What the lake writer checks before a record reaches a table: dedup by message id, then
//! the source sequence of each (exchange, symbol) stream.
//!
//! Both survive a restart without a false alarm, each anchored in the table's current
//! snapshot so that what is restored always matches what was committed:
//!
//! - **Dedup** is rebuilt from the lake itself: the ids of the rows that arrived inside
//!   the window (`k2.dedup-from-us` in the snapshot summary; Iceberg's column metrics prune
//!   the older files). The lake is the record of what was stored, so nothing can disagree.
//! - **Sequence state** is a JSON file under `state/<table>/`, written (durably) before the
//!   commit and named in the snapshot summary (`k2.state`). A crash between the file and
//!   the commit leaves an orphan file that the next commit removes; the restart restores
//!   the file the committed snapshot names.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::TimestampMicrosecondType;
use datafusion::prelude::{SessionContext, col, lit};
use datafusion::scalar::ScalarValue;
use futures::TryStreamExt;
use iceberg::table::Table;
use k2_model::MarketRecord;
use k2_pipeline::shared::{RedisDedup, RedisSequenceTracker};
use k2_pipeline::{Deduplicator, Event, GapRange, SequenceTracker};
use serde::{Deserialize, Serialize};

use crate::error::{LakeError, Result};
use crate::scan::SnapshotTable;
use crate::tables::LakeTable;
use crate::writer::WriterOptions;

/// Snapshot summary key: the sequence-state file of the committed snapshot.
pub const STATE_PROPERTY: &str = "k2.state";
/// Snapshot summary key: the oldest arrival time the dedup window held at the commit.
pub const DEDUP_FROM_PROPERTY: &str = "k2.dedup-from-us";

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
    /// In this process, persisted with each commit (see the module notes).
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

/// The persisted part of a table's integrity state.
#[derive(Serialize, Deserialize)]
struct StateFile {
    table: String,
    /// The batch whose commit this state belongs to.
    batch: String,
    sequence: serde_json::Value,
    /// Duplicates dropped per (exchange, symbol) stream since the table began.
    duplicates: Vec<(String, String, u64)>,
}

/// Dedup claims in Redis, shared with the other writers of the table.
struct SharedDedup {
    client: RedisDedup,
    lease: std::time::Duration,
    window: std::time::Duration,
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
    /// State as of the newest snapshot this writer's source committed (the current one
    /// for a single writer): ids reloaded from the lake, sequence state from the file the
    /// snapshot names (when a state directory is configured) or in Redis
    /// (`options.sequence_redis`). With `options.dedup_redis`, the ids of each batch are
    /// also claimed in Redis before it is written.
    pub async fn restore(t: LakeTable, table: &Table, options: &WriterOptions) -> Result<Self> {
        let dedup = options.dedup.clone();
        let sequence = options.sequence.clone();
        let shared = match &options.dedup_redis {
            None => None,
            Some(target) => Some(SharedDedup {
                client: RedisDedup::connect(
                    &target.addr,
                    &format!("{}:{}", target.prefix, t.name()),
                )
                .await
                .map_err(|e| {
                    LakeError::redis(format!("connecting to Redis at {}", target.addr), e)
                })?,
                lease: options.dedup_lease,
                window: std::time::Duration::from_micros(dedup.window_us.max(1) as u64),
            }),
        };
        let sequences = match &options.sequence_redis {
            None => Sequences::Local(SequenceTracker::new(sequence.clone())),
            Some(target) => Sequences::Redis {
                tracker: Box::new(
                    RedisSequenceTracker::connect(
                        &target.addr,
                        &format!("{}:{}", target.prefix, t.name()),
                        sequence.clone(),
                    )
                    .await
                    .map_err(|e| {
                        LakeError::redis(format!("connecting to Redis at {}", target.addr), e)
                    })?,
                ),
                pending: Vec::new(),
            },
        };
        let mut me = TableIntegrity {
            table: t,
            dedup: Deduplicator::new(dedup),
            shared,
            sequences,
            events: PollEvents::default(),
            duplicates: BTreeMap::new(),
            state_dir: options.state_dir.as_ref().map(|d| d.join(t.name())),
        };
        let Some(snapshot) = crate::writer::source_snapshot(table, &options.source) else {
            return Ok(me);
        };
        let props = &snapshot.summary().additional_properties;
        let from_us = match props.get(DEDUP_FROM_PROPERTY) {
            Some(v) => Some(v.parse::<i64>().map_err(|e| {
                LakeError::Query(format!("{t}: unreadable {DEDUP_FROM_PROPERTY} '{v}': {e}"))
            })?),
            None => None,
        };
        let started = std::time::Instant::now();
        let loaded = me.reload_ids(table, from_us).await?;
        tracing::info!(
            table = %t, ids = loaded, from_us, ms = started.elapsed().as_millis() as u64,
            "dedup window reloaded from the lake"
        );
        if let (Some(dir), Some(name)) = (&me.state_dir, props.get(STATE_PROPERTY)) {
            let path = dir.join(name);
            match std::fs::read(&path) {
                Ok(bytes) => {
                    let file: StateFile = serde_json::from_slice(&bytes).map_err(|e| {
                        LakeError::Query(format!("state file {}: {e}", path.display()))
                    })?;
                    if let Sequences::Local(tracker) = &mut me.sequences
                        && !file.sequence.is_null()
                    {
                        *tracker = SequenceTracker::restore(
                            &serde_json::to_vec(&file.sequence).expect("JSON value serialises"),
                            sequence,
                        )
                        .map_err(|e| {
                            LakeError::Query(format!("state file {}: {e}", path.display()))
                        })?;
                    }
                    me.duplicates = file
                        .duplicates
                        .into_iter()
                        .map(|(e, s, n)| ((e, s), n))
                        .collect();
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => tracing::warn!(
                    table = %t, file = %path.display(),
                    "sequence state of the committed snapshot is missing; streams start afresh"
                ),
                Err(e) => {
                    return Err(LakeError::Query(format!("reading {}: {e}", path.display())));
                }
            }
        }
        Ok(me)
    }

    /// Feeds the ids of the rows that arrived at or after `from_us` (all rows when None).
    async fn reload_ids(&mut self, table: &Table, from_us: Option<i64>) -> Result<u64> {
        let t = self.table;
        let err = |e: datafusion::error::DataFusionError| {
            LakeError::Query(format!("reloading {t} message ids: {e}"))
        };
        let provider = SnapshotTable::new(table.clone(), None, Default::default())
            .await
            .map_err(|e| LakeError::catalog(format!("reading {t}"), e))?;
        let ctx = SessionContext::new();
        let mut df = ctx.read_table(Arc::new(provider)).map_err(err)?;
        if let Some(from) = from_us {
            df =
                df.filter(col("ingestion_timestamp").gt_eq(lit(
                    ScalarValue::TimestampMicrosecond(Some(from), Some("+00:00".into())),
                )))
                .map_err(err)?;
        }
        let mut stream = df
            .select_columns(&["message_id", "ingestion_timestamp"])
            .map_err(err)?
            .execute_stream()
            .await
            .map_err(err)?;
        let mut n = 0;
        while let Some(batch) = stream.try_next().await.map_err(err)? {
            let ids = batch.column(0).as_fixed_size_binary();
            let times = batch.column(1).as_primitive::<TimestampMicrosecondType>();
            for i in 0..batch.num_rows() {
                let bytes: [u8; 16] = ids
                    .value(i)
                    .try_into()
                    .map_err(|_| LakeError::Query(format!("{t}: a message id is not 16 bytes")))?;
                let at = if times.is_null(i) { 0 } else { times.value(i) };
                self.dedup.remember(u128::from_be_bytes(bytes), at);
                n += 1;
            }
        }
        Ok(n)
    }

    /// Dedups the record, then checks its source sequence.
    pub fn admit(&mut self, record: &MarketRecord) -> Result<Verdict> {
        let id = record.message_id().as_u128();
        if !self.dedup.check(id, record.ingestion_time_us()) {
            self.count_duplicate(record);
            return Ok(Verdict::Duplicate);
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
        Ok(Verdict::Keep)
    }

    /// The sequence events of the records admitted since the last call (with Redis, the
    /// collected checks run now, in one round trip).
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

    /// Writes the state the commit of `batch` will name, durably; returns the snapshot
    /// summary properties to commit with it.
    pub fn save(&self, batch: &str) -> Result<Vec<(String, String)>> {
        let mut props = Vec::new();
        if let Some(from) = self.dedup.window_start_us() {
            props.push((DEDUP_FROM_PROPERTY.to_string(), from.to_string()));
        }
        let Some(dir) = &self.state_dir else {
            return Ok(props);
        };
        let io = |what: &str, path: &Path, e: std::io::Error| {
            LakeError::Query(format!("{what} {}: {e}", path.display()))
        };
        std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
        let name = format!("sequence-{batch}.json");
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
        let tmp = dir.join(format!("{name}.tmp"));
        let path = dir.join(&name);
        {
            let mut f = std::fs::File::create(&tmp).map_err(|e| io("creating", &tmp, e))?;
            f.write_all(&serde_json::to_vec(&file).expect("state serialises"))
                .and_then(|()| f.sync_all())
                .map_err(|e| io("writing", &tmp, e))?;
        }
        std::fs::rename(&tmp, &path).map_err(|e| io("renaming", &tmp, e))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("syncing", dir, e))?;
        props.push((STATE_PROPERTY.to_string(), name));
        Ok(props)
    }

    /// After the commit of `batch`: state files of other batches are no longer named by
    /// the current snapshot (older ones, or orphans of a crash before a commit).
    pub fn committed(&self, batch: &str) {
        let Some(dir) = &self.state_dir else { return };
        let keep = format!("sequence-{batch}.json");
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_name() != keep.as_str()
                && let Err(e) = std::fs::remove_file(entry.path())
            {
                tracing::warn!(file = %entry.path().display(), error = %e, "could not remove old state");
            }
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
    pub fn claim_lease(&self) -> Option<std::time::Duration> {
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
