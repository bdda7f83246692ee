//! The embedded log backend: one redb database file in the data directory.
//!
//! Each partition is a redb table keyed by the base offset of a record batch (as Kafka
//! stores batches, one B-tree entry carries many records, which keeps appends cheap).
//! A produce is one redb write transaction with `Immediate` durability: when it returns,
//! the records and any source checkpoint are on disk together, or neither is. The file is
//! opened in redb's multi-writer mode, so an ingest process and a lake-writer process can
//! share it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{
    ConcurrencyMode, Database, ReadableDatabase, ReadableTable, TableDefinition, TableError,
};
use tokio::sync::Notify;

use crate::error::{LogError, Result};
use crate::log::{
    ConsumedRecord, Log, LogConsumer, PartitionOffset, Record, SourceCheckpoint, TopicBatch,
    TopicSpec,
};
use crate::metrics;
use crate::partitioner::partition_for;

const TOPICS: TableDefinition<&str, &str> = TableDefinition::new("topics");
const CHECKPOINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("source_checkpoints");
const GROUPS: TableDefinition<&str, u64> = TableDefinition::new("group_offsets");

/// How often a waiting consumer looks for records written by another process.
const CROSS_PROCESS_POLL: Duration = Duration::from_millis(50);

fn partition_table(topic: &str, partition: u32) -> String {
    format!("partition/{topic}/{partition}")
}

fn group_key(group: &str, topic: &str, partition: u32) -> String {
    format!("{group}\u{0}{topic}\u{0}{partition}")
}

/// The embedded log file's page cache: it fills as the log grows and stays at this bound
/// (`k2_log_embedded_cache_bytes` shows it).
const LOG_CACHE_BYTES: usize = 64 << 20;

/// The embedded log. Cheap to clone.
#[derive(Clone)]
pub struct EmbeddedLog {
    db: Arc<Database>,
    path: Arc<PathBuf>,
    appended: Arc<Notify>,
}

impl EmbeddedLog {
    /// Opens (creating if needed) the log file at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let db = open_shared(path, "log", LOG_CACHE_BYTES)?;
        let txn = db
            .begin_write()
            .map_err(|e| LogError::storage("initialising log", e))?;
        for result in [
            txn.open_table(TOPICS).map(drop),
            txn.open_table(CHECKPOINTS).map(drop),
            txn.open_table(GROUPS).map(drop),
        ] {
            result.map_err(|e| LogError::storage("initialising log tables", e))?;
        }
        txn.commit()
            .map_err(|e| LogError::storage("initialising log", e))?;
        Ok(EmbeddedLog {
            db: Arc::new(db),
            path: Arc::new(path.to_path_buf()),
            appended: Arc::new(Notify::new()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema registry tables, kept in the log's own database.
    pub fn schemas(&self) -> crate::schema_store::LocalSchemas {
        crate::schema_store::LocalSchemas::in_database(self.db.clone())
    }

    fn spec(&self, topic: &str) -> Result<TopicSpec> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| LogError::storage("reading topics", e))?;
        let table = txn
            .open_table(TOPICS)
            .map_err(|e| LogError::storage("reading topics", e))?;
        let raw = table
            .get(topic)
            .map_err(|e| LogError::storage("reading topics", e))?
            .ok_or_else(|| LogError::UnknownTopic(topic.to_string()))?;
        serde_json::from_str(raw.value())
            .map_err(|e| LogError::Corrupt(format!("topic spec of {topic}: {e}")))
    }

    fn produce_blocking(
        &self,
        batches: Vec<TopicBatch>,
        checkpoint: Option<SourceCheckpoint>,
    ) -> Result<()> {
        let started = Instant::now();
        let specs: Vec<TopicSpec> = batches
            .iter()
            .map(|b| self.spec(&b.topic))
            .collect::<Result<_>>()?;
        let txn = self
            .db
            .begin_write()
            .map_err(|e| LogError::storage("starting append", e))?;
        let mut appended = 0usize;
        for (batch, spec) in batches.iter().zip(&specs) {
            let mut by_partition: Vec<Vec<Record>> = vec![Vec::new(); spec.partitions as usize];
            for record in batch.iter() {
                by_partition[partition_for(record.key, spec.partitions) as usize].push(record);
            }
            for (partition, records) in by_partition.iter().enumerate() {
                if records.is_empty() {
                    continue;
                }
                let name = partition_table(&batch.topic, partition as u32);
                let mut table = txn
                    .open_table(TableDefinition::<u64, &[u8]>::new(&name))
                    .map_err(|e| LogError::storage(format!("opening {name}"), e))?;
                let mut base = end_offset(&table)?;
                for chunk in chunks(records) {
                    // Written in place, into the page the batch is stored in.
                    let mut slot = table
                        .insert_reserve(base, batch_size(chunk))
                        .map_err(|e| LogError::storage(format!("appending to {name}"), e))?;
                    write_batch(chunk, slot.as_mut());
                    base += chunk.len() as u64;
                }
                appended += records.len();
            }
            metrics::records_appended(&batch.topic, batch.len());
        }
        if let Some(cp) = checkpoint {
            let mut table = txn
                .open_table(CHECKPOINTS)
                .map_err(|e| LogError::storage("opening checkpoints", e))?;
            table
                .insert(cp.source.as_str(), cp.state.as_slice())
                .map_err(|e| LogError::storage("storing checkpoint", e))?;
        }
        txn.commit()
            .map_err(|e| LogError::storage("committing append", e))?;
        metrics::append_latency(started.elapsed());
        metrics::embedded_cache_bytes(self.db.cache_stats().used_bytes());
        tracing::debug!(records = appended, "log append committed");
        self.appended.notify_waiters();
        Ok(())
    }
}

fn end_offset<T: ReadableTable<u64, &'static [u8]>>(table: &T) -> Result<u64> {
    match table
        .last()
        .map_err(|e| LogError::storage("reading partition end", e))?
    {
        None => Ok(0),
        Some((base, batch)) => Ok(base.value() + u64::from(batch_len(batch.value())?)),
    }
}

/// The most bytes stored under one key, less room for the leaf page's own header: redb
/// gives a value a page of a power-of-two size, so one large batch of an append (a burst
/// of 600 KB on a 1 MiB page) wrote nearly twice its bytes, zeroed, copied and synced.
/// Chunks of this size fill their pages but for the last one (a million 185-byte records
/// in appends of 3 100: 354 MB written before, 206 MB now; 16 KiB chunks cost more in
/// B-tree work than they saved).
const CHUNK_BYTES: usize = 128 * 1024 - 64;

/// `records` in consecutive chunks of at most [`CHUNK_BYTES`] stored (a record larger
/// than that alone).
fn chunks<'a>(records: &'a [Record<'a>]) -> impl Iterator<Item = &'a [Record<'a>]> {
    let mut rest = records;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut size = 4;
        let n = rest
            .iter()
            .position(|r| {
                size += 16 + r.key.len() + r.value.len();
                size > CHUNK_BYTES
            })
            .unwrap_or(rest.len())
            .max(1);
        let (chunk, after) = rest.split_at(n);
        rest = after;
        Some(chunk)
    })
}

/// Batch layout: record count (u32 LE), then per record: timestamp (i64 LE),
/// key length (u32 LE), key, value length (u32 LE), value.
/// The stored size of a batch of `records`.
fn batch_size(records: &[Record]) -> usize {
    4 + records
        .iter()
        .map(|r| 16 + r.key.len() + r.value.len())
        .sum::<usize>()
}

/// Writes `records` as a batch into `out`, [`batch_size`] bytes long.
fn write_batch(records: &[Record], out: &mut [u8]) {
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        out[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(&(records.len() as u32).to_le_bytes());
    for r in records {
        put(&r.timestamp_ms.to_le_bytes());
        put(&(r.key.len() as u32).to_le_bytes());
        put(r.key);
        put(&(r.value.len() as u32).to_le_bytes());
        put(r.value);
    }
}

fn batch_len(bytes: &[u8]) -> Result<u32> {
    bytes
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| LogError::Corrupt("record batch shorter than its header".into()))
}

/// Where decoding a stored batch stands: the record at `offset` starts at byte `at`, and
/// `end` is one past the batch's last offset.
struct Cursor {
    at: usize,
    offset: u64,
    end: u64,
}

/// Decodes the records of a batch from `cursor` on, skipping those before `from`, until the
/// batch ends or `out` holds `max`; the cursor is left where decoding stopped.
fn decode_records(
    bytes: &[u8],
    cursor: &mut Cursor,
    from: u64,
    max: usize,
    (topic, partition): (&Arc<str>, u32),
    out: &mut Vec<ConsumedRecord>,
) -> Result<()> {
    let Cursor { at, offset, end } = cursor;
    while *offset < *end && out.len() < max {
        let here = *offset;
        let corrupt =
            || LogError::Corrupt(format!("record batch of {topic}/{partition} at {here}"));
        let mut take = |n: usize| -> Result<&[u8]> {
            let s = bytes.get(*at..*at + n).ok_or_else(corrupt)?;
            *at += n;
            Ok(s)
        };
        let ts = i64::from_le_bytes(take(8)?.try_into().map_err(|_| corrupt())?);
        let klen = u32::from_le_bytes(take(4)?.try_into().map_err(|_| corrupt())?) as usize;
        let key = take(klen)?;
        let vlen = u32::from_le_bytes(take(4)?.try_into().map_err(|_| corrupt())?) as usize;
        let value = take(vlen)?;
        *offset += 1;
        if here < from {
            continue;
        }
        out.push(ConsumedRecord {
            topic: topic.clone(),
            partition,
            offset: here,
            key: key.to_vec(),
            value: value.to_vec(),
            timestamp_ms: ts,
        });
    }
    Ok(())
}

/// Opens (creating it and its directory if needed) a redb file that several processes
/// use at once: an ingest, a lake writer, a registry server.
pub(crate) fn open_shared(path: &Path, what: &str, cache_bytes: usize) -> Result<Database> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| LogError::storage(format!("creating {}", dir.display()), e))?;
    }
    Database::builder()
        .set_cache_size(cache_bytes)
        .set_concurrency_mode(ConcurrencyMode::MultiWriter)
        .create(path)
        .map_err(|e| LogError::storage(format!("opening the {what} {}", path.display()), e))
}

/// Runs redb work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| LogError::storage("log worker thread", e))?
}

use std::future::Future;

impl Log for EmbeddedLog {
    type Consumer = EmbeddedConsumer;

    fn ensure_topic(&self, spec: &TopicSpec) -> impl Future<Output = Result<()>> + Send {
        let this = self.clone();
        let spec = spec.clone();
        blocking(move || {
            spec.validate()?;
            let txn = this
                .db
                .begin_write()
                .map_err(|e| LogError::storage("creating topic", e))?;
            {
                let mut table = txn
                    .open_table(TOPICS)
                    .map_err(|e| LogError::storage("creating topic", e))?;
                let existing = table
                    .get(spec.name.as_str())
                    .map_err(|e| LogError::storage("creating topic", e))?
                    .map(|v| v.value().to_string());
                if let Some(existing) = existing {
                    let existing: TopicSpec = serde_json::from_str(&existing).map_err(|e| {
                        LogError::Corrupt(format!("topic spec of {}: {e}", spec.name))
                    })?;
                    if existing.partitions != spec.partitions {
                        return Err(LogError::PartitionMismatch {
                            topic: spec.name.clone(),
                            existing: existing.partitions,
                            requested: spec.partitions,
                        });
                    }
                    return Ok(());
                }
                let json = serde_json::to_string(&spec).expect("topic spec serialises");
                table
                    .insert(spec.name.as_str(), json.as_str())
                    .map_err(|e| LogError::storage("creating topic", e))?;
                for p in 0..spec.partitions {
                    let name = partition_table(&spec.name, p);
                    txn.open_table(TableDefinition::<u64, &[u8]>::new(&name))
                        .map_err(|e| LogError::storage("creating partition", e))?;
                }
            }
            txn.commit()
                .map_err(|e| LogError::storage("creating topic", e))?;
            tracing::info!(topic = %spec.name, partitions = spec.partitions, "topic created");
            Ok(())
        })
    }

    fn topics(&self) -> impl Future<Output = Result<Vec<TopicSpec>>> + Send {
        let this = self.clone();
        blocking(move || {
            let txn = this
                .db
                .begin_read()
                .map_err(|e| LogError::storage("listing topics", e))?;
            let table = txn
                .open_table(TOPICS)
                .map_err(|e| LogError::storage("listing topics", e))?;
            let mut out = Vec::new();
            for entry in table
                .iter()
                .map_err(|e| LogError::storage("listing topics", e))?
            {
                let (name, spec) = entry.map_err(|e| LogError::storage("listing topics", e))?;
                out.push(serde_json::from_str(spec.value()).map_err(|e| {
                    LogError::Corrupt(format!("topic spec of {}: {e}", name.value()))
                })?);
            }
            Ok(out)
        })
    }

    fn produce(
        &self,
        batches: Vec<TopicBatch>,
        checkpoint: Option<SourceCheckpoint>,
    ) -> impl Future<Output = Result<()>> + Send {
        let this = self.clone();
        blocking(move || this.produce_blocking(batches, checkpoint))
    }

    fn atomic_checkpoints(&self) -> bool {
        true
    }

    fn source_checkpoints(
        &self,
        sources: &[String],
    ) -> impl Future<Output = Result<Vec<Option<Vec<u8>>>>> + Send {
        let this = self.clone();
        let sources = sources.to_vec();
        blocking(move || {
            let txn = this
                .db
                .begin_read()
                .map_err(|e| LogError::storage("reading checkpoint", e))?;
            let table = txn
                .open_table(CHECKPOINTS)
                .map_err(|e| LogError::storage("reading checkpoint", e))?;
            sources
                .iter()
                .map(|source| {
                    Ok(table
                        .get(source.as_str())
                        .map_err(|e| LogError::storage("reading checkpoint", e))?
                        .map(|v| v.value().to_vec()))
                })
                .collect()
        })
    }

    fn end_offsets(&self, topic: &str) -> impl Future<Output = Result<Vec<u64>>> + Send {
        let this = self.clone();
        let topic = topic.to_string();
        blocking(move || {
            let spec = this.spec(&topic)?;
            let txn = this
                .db
                .begin_read()
                .map_err(|e| LogError::storage("reading offsets", e))?;
            (0..spec.partitions)
                .map(|p| {
                    let name = partition_table(&topic, p);
                    match txn.open_table(TableDefinition::<u64, &[u8]>::new(&name)) {
                        Ok(table) => end_offset(&table),
                        Err(TableError::TableDoesNotExist(_)) => Ok(0),
                        Err(e) => Err(LogError::storage(format!("opening {name}"), e)),
                    }
                })
                .collect()
        })
    }

    fn consumer(&self, assignment: Vec<PartitionOffset>) -> Result<EmbeddedConsumer> {
        for a in &assignment {
            let spec = self.spec(&a.topic)?;
            if a.partition >= spec.partitions {
                return Err(LogError::UnknownPartition {
                    topic: a.topic.clone(),
                    partitions: spec.partitions,
                    partition: a.partition,
                });
            }
        }
        let positions = assignment
            .into_iter()
            .map(|a| Position {
                table: partition_table(&a.topic, a.partition),
                topic: a.topic.into(),
                partition: a.partition,
                next: a.offset,
                batch: None,
                held: None,
                at_end: false,
            })
            .collect();
        Ok(EmbeddedConsumer {
            log: self.clone(),
            positions,
            cursor: 0,
        })
    }

    fn commit_group(
        &self,
        group: &str,
        offsets: &[PartitionOffset],
    ) -> impl Future<Output = Result<()>> + Send {
        let this = self.clone();
        let group = group.to_string();
        let offsets = offsets.to_vec();
        blocking(move || {
            let txn = this
                .db
                .begin_write()
                .map_err(|e| LogError::storage("committing group offsets", e))?;
            {
                let mut table = txn
                    .open_table(GROUPS)
                    .map_err(|e| LogError::storage("committing group offsets", e))?;
                for o in &offsets {
                    table
                        .insert(group_key(&group, &o.topic, o.partition).as_str(), o.offset)
                        .map_err(|e| LogError::storage("committing group offsets", e))?;
                }
            }
            txn.commit()
                .map_err(|e| LogError::storage("committing group offsets", e))
        })
    }

    fn group_offsets(
        &self,
        group: &str,
        topic: &str,
    ) -> impl Future<Output = Result<Vec<Option<u64>>>> + Send {
        let this = self.clone();
        let group = group.to_string();
        let topic = topic.to_string();
        blocking(move || {
            let spec = this.spec(&topic)?;
            let txn = this
                .db
                .begin_read()
                .map_err(|e| LogError::storage("reading group offsets", e))?;
            let table = txn
                .open_table(GROUPS)
                .map_err(|e| LogError::storage("reading group offsets", e))?;
            (0..spec.partitions)
                .map(|p| {
                    Ok(table
                        .get(group_key(&group, &topic, p).as_str())
                        .map_err(|e| LogError::storage("reading group offsets", e))?
                        .map(|v| v.value()))
                })
                .collect()
        })
    }
}

struct Position {
    table: String,
    topic: Arc<str>,
    partition: u32,
    next: u64,
    /// Base offset of the batch holding `next`, once known.
    batch: Option<u64>,
    /// The batch holding `next`, when a poll stopped inside it.
    held: Option<Held>,
    /// Whether the last read of the partition found nothing after `next`.
    at_end: bool,
}

/// A stored batch a poll stopped inside, and where (the cursor's offset is the
/// position's `next`).
struct Held {
    bytes: Vec<u8>,
    cursor: Cursor,
}

/// Reads assigned partitions of an [`EmbeddedLog`].
pub struct EmbeddedConsumer {
    log: EmbeddedLog,
    positions: Vec<Position>,
    cursor: usize,
}

impl EmbeddedConsumer {
    fn read_available(&mut self, max: usize) -> Result<Vec<ConsumedRecord>> {
        let mut out = Vec::new();
        if self.positions.is_empty() || max == 0 {
            return Ok(out);
        }
        let txn = self
            .log
            .db
            .begin_read()
            .map_err(|e| LogError::storage("reading log", e))?;
        let n = self.positions.len();
        // Fair share per partition, starting where the last poll stopped.
        let share = max.div_ceil(n).max(1);
        for i in 0..n {
            if out.len() >= max {
                break;
            }
            let idx = (self.cursor + i) % n;
            let pos = &mut self.positions[idx];
            pos.at_end = false;
            let table = match txn.open_table(TableDefinition::<u64, &[u8]>::new(&pos.table)) {
                Ok(t) => t,
                // Nothing was ever appended to the partition.
                Err(TableError::TableDoesNotExist(_)) => {
                    pos.at_end = true;
                    continue;
                }
                Err(e) => return Err(LogError::storage(format!("opening {}", pos.table), e)),
            };
            let limit = (out.len() + share).min(max);
            // Batches are contiguous (each starts where the previous one ended), so after
            // the first read every batch is fetched by its exact key: one page read per
            // batch. A range scan would also seek its open end, reading the newest batch.
            let (mut base, mut known) = match pos.batch {
                Some(base) => (base, true),
                // The batch holding `next` is the last one whose base is <= next.
                None => table
                    .range(..=pos.next)
                    .map_err(|e| LogError::storage("reading log", e))?
                    .next_back()
                    .transpose()
                    .map_err(|e| LogError::storage("reading log", e))?
                    .map_or((pos.next, false), |(base, _)| (base.value(), true)),
            };
            while out.len() < limit {
                let coordinates = (&pos.topic, pos.partition);
                if let Some(held) = pos.held.as_mut() {
                    // The rest of a batch a poll stopped inside.
                    let cursor = &mut held.cursor;
                    decode_records(&held.bytes, cursor, pos.next, limit, coordinates, &mut out)?;
                    pos.next = cursor.offset;
                    if cursor.offset < cursor.end {
                        break;
                    }
                    base = cursor.end;
                    pos.held = None;
                    continue;
                }
                let Some(batch) = table
                    .get(base)
                    .map_err(|e| LogError::storage("reading log", e))?
                else {
                    // After a batch read, none at its end is the log's end; before one,
                    // `next` may lie below the oldest batch kept.
                    pos.at_end = known
                        || table
                            .range(pos.next..)
                            .map_err(|e| LogError::storage("reading log", e))?
                            .next()
                            .is_none();
                    break;
                };
                known = true;
                let bytes = batch.value();
                let mut cursor = Cursor {
                    at: 4,
                    offset: base,
                    end: base + u64::from(batch_len(bytes)?),
                };
                decode_records(bytes, &mut cursor, pos.next, limit, coordinates, &mut out)?;
                pos.next = pos.next.max(cursor.offset);
                if cursor.offset < cursor.end {
                    // The rest is for the next poll: kept, so that poll neither reads the
                    // batch again nor decodes it from the start up to here.
                    pos.held = Some(Held {
                        bytes: bytes.to_vec(),
                        cursor,
                    });
                    break;
                }
                base = cursor.end;
            }
            // Unknown until a batch is seen: the first one may start below `next`.
            pos.batch = known.then_some(base);
        }
        self.cursor = (self.cursor + 1) % n;
        Ok(out)
    }
}

impl LogConsumer for EmbeddedConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<ConsumedRecord>> {
        {
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                let notified = self.log.appended.clone();
                let notified = notified.notified();
                let records = self.read_available(max)?;
                if !records.is_empty() || tokio::time::Instant::now() >= deadline {
                    metrics::records_read(records.len());
                    return Ok(records);
                }
                let nap = deadline
                    .saturating_duration_since(tokio::time::Instant::now())
                    .min(CROSS_PROCESS_POLL);
                let _ = tokio::time::timeout(nap, notified).await;
            }
        }
    }

    fn positions(&self) -> Vec<PartitionOffset> {
        self.positions
            .iter()
            .map(|p| PartitionOffset {
                topic: p.topic.to_string(),
                partition: p.partition,
                offset: p.next,
            })
            .collect()
    }

    fn read_to_end(&self) -> bool {
        self.positions.iter().all(|p| p.at_end)
    }
}
