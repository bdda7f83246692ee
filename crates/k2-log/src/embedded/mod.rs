//! The embedded log backend: one redb database file in the data directory.
//!
//! Each partition is a redb table keyed by the base offset of a record batch (as Kafka
//! stores batches, one B-tree entry carries many records, which keeps appends cheap).
//! A produce is one redb write transaction with `Immediate` durability: when it returns,
//! the records and any source checkpoint are on disk together, or neither is. The file is
//! opened in redb's multi-writer mode, so an ingest process and a lake-writer process can
//! share it. The schema registry's tables live in the same file.
//!
//! # Layout
//!
//! - [`EmbeddedLog`] — topics, appends, checkpoints, group offsets (this file).
//! - `batch` — the stored record batches; `consumer` — [`EmbeddedConsumer`].

mod batch;
mod consumer;
mod retention;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::Notify;

use self::batch::{batch_size, chunks, end_offset, write_batch};
pub use self::consumer::EmbeddedConsumer;
pub use self::retention::{Retention, Trimmed, trim_periodically};
use crate::error::{LogError, Result};
use crate::log::{Log, PartitionOffset, Record, SourceCheckpoint, TopicBatch, TopicSpec};
use crate::metrics;
use crate::partitioner::partition_for;
use crate::registry::{LocalSchemas, SchemaStore};
use crate::store::{blocking, failed, open_shared, reading, table};

const TOPICS: TableDefinition<&str, &str> = TableDefinition::new("topics");
const CHECKPOINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("source_checkpoints");
const GROUPS: TableDefinition<&str, u64> = TableDefinition::new("group_offsets");

/// How often a waiting consumer looks for records written by another process.
pub(super) const CROSS_PROCESS_POLL: Duration = Duration::from_millis(50);

pub(super) fn partition_table(topic: &str, partition: u32) -> String {
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
            txn.open_table(retention::PARTITION_BYTES).map(drop),
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
    pub fn schemas(&self) -> LocalSchemas {
        LocalSchemas::in_database(self.db.clone())
    }

    fn spec(&self, topic: &str) -> Result<TopicSpec> {
        const WHAT: &str = "reading topics";
        let txn = reading(&self.db, WHAT)?;
        let unknown = || LogError::UnknownTopic(topic.to_string());
        let topics = table(&txn, TOPICS, WHAT)?.ok_or_else(unknown)?;
        let raw = topics
            .get(topic)
            .map_err(failed(WHAT))?
            .ok_or_else(unknown)?;
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
                let fresh = base == 0;
                let mut bytes = 0u64;
                for chunk in chunks(records) {
                    bytes += batch_size(chunk) as u64;
                    // Written in place, into the page the batch is stored in.
                    let mut slot = table
                        .insert_reserve(base, batch_size(chunk))
                        .map_err(|e| LogError::storage(format!("appending to {name}"), e))?;
                    write_batch(chunk, slot.as_mut());
                    base += chunk.len() as u64;
                }
                appended += records.len();
                drop(table);
                // The partition's bytes, counted as they are written (see `retention`).
                let mut counts = txn
                    .open_table(retention::PARTITION_BYTES)
                    .map_err(|e| LogError::storage("counting log bytes", e))?;
                let held = counts
                    .get(name.as_str())
                    .map_err(|e| LogError::storage("counting log bytes", e))?
                    .map(|v| v.value());
                // A partition counted before (or empty so far) gets its bytes added; one
                // written before counts were kept is counted at the next retention pass.
                if held.is_some() || fresh {
                    counts
                        .insert(name.as_str(), held.unwrap_or(0) + bytes)
                        .map_err(|e| LogError::storage("counting log bytes", e))?;
                }
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
            const WHAT: &str = "listing topics";
            let txn = reading(&this.db, WHAT)?;
            let Some(topics) = table(&txn, TOPICS, WHAT)? else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            for entry in topics.iter().map_err(failed(WHAT))? {
                let (name, spec) = entry.map_err(failed(WHAT))?;
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
            const WHAT: &str = "reading checkpoints";
            let txn = reading(&this.db, WHAT)?;
            let Some(checkpoints) = table(&txn, CHECKPOINTS, WHAT)? else {
                return Ok(vec![None; sources.len()]);
            };
            sources
                .iter()
                .map(|source| {
                    Ok(checkpoints
                        .get(source.as_str())
                        .map_err(failed(WHAT))?
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
            const WHAT: &str = "reading offsets";
            let txn = reading(&this.db, WHAT)?;
            (0..spec.partitions)
                .map(|p| {
                    let name = partition_table(&topic, p);
                    match table(&txn, TableDefinition::<u64, &[u8]>::new(&name), WHAT)? {
                        Some(partition) => end_offset(&partition),
                        None => Ok(0),
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
        Ok(EmbeddedConsumer::new(self.clone(), assignment))
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
            const WHAT: &str = "reading group offsets";
            let txn = reading(&this.db, WHAT)?;
            let Some(groups) = table(&txn, GROUPS, WHAT)? else {
                return Ok(vec![None; spec.partitions as usize]);
            };
            (0..spec.partitions)
                .map(|p| {
                    Ok(groups
                        .get(group_key(&group, &topic, p).as_str())
                        .map_err(failed(WHAT))?
                        .map(|v| v.value()))
                })
                .collect()
        })
    }
}

impl SchemaStore for EmbeddedLog {
    async fn register(&self, subject: &str, schema: &str) -> Result<u32> {
        self.schemas().register(subject, schema).await
    }

    async fn schema(&self, id: u32) -> Result<Option<String>> {
        self.schemas().schema(id).await
    }
}
