//! Retention of the embedded log: old records go once every consumer group reading a
//! partition has committed past them — the lake writers record their committed positions
//! as their group's, so a record is removed only after it is in the lake.
//!
//! Within that bound, a partition's oldest batches go when their newest record is older
//! than `log.retention`, and (oldest first across partitions) while the log holds more
//! than `log.retention_bytes`. A partition's last batch always stays: it carries the
//! partition's end offset, which must never move back. redb reuses the freed pages for
//! later appends, so the file stops growing once appends and removals balance.
//!
//! The bytes the log holds are counted per partition in the file itself, in the same
//! transaction as each append and removal (counting them by walking the B-trees would read
//! the whole file).

use std::collections::BTreeMap;
use std::time::Duration;

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};

use super::batch::{batch_len, batch_newest_ms};
use super::{EmbeddedLog, GROUPS, TOPICS, partition_table};
use crate::error::{LogError, Result};
use crate::log::TopicSpec;
use crate::metrics;
use crate::store::failed;

/// Bytes of record batches stored, by partition table name.
pub(super) const PARTITION_BYTES: TableDefinition<&str, u64> =
    TableDefinition::new("partition_bytes");

/// Batches removed per transaction at most (a removal never holds the file for long).
const MAX_REMOVED: usize = 20_000;

/// How long records are kept.
#[derive(Clone, Copy, Debug, Default)]
pub struct Retention {
    /// Records whose batch is older than this go (zero: kept however old).
    pub age: Duration,
    /// Oldest records go while the log holds more than this (zero: no bound).
    pub bytes: u64,
}

/// What one pass of retention did and found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trimmed {
    pub batches: usize,
    pub records: u64,
    pub bytes: u64,
    /// Bytes of record batches the log holds afterwards.
    pub held_bytes: u64,
    /// The producer time of the oldest record kept, ms.
    pub oldest_ms: Option<i64>,
}

/// One partition while trimming.
struct Partition {
    name: String,
    /// Every group's committed position: nothing at or past it goes.
    floor: u64,
    bytes: u64,
}

impl EmbeddedLog {
    /// Removes what `policy` lets go (see the module); `now_ms` is the current time.
    pub fn trim(&self, policy: Retention, now_ms: i64) -> Result<Trimmed> {
        let txn = self
            .db
            .begin_write()
            .map_err(|e| LogError::storage("starting retention", e))?;
        let trimmed = trim_in(&txn, policy, now_ms)?;
        txn.commit()
            .map_err(|e| LogError::storage("committing retention", e))?;
        metrics::log_held(trimmed.held_bytes, trimmed.oldest_ms, self.file_bytes());
        if trimmed.batches > 0 {
            metrics::log_trimmed(trimmed.records, trimmed.bytes);
            tracing::info!(
                batches = trimmed.batches,
                records = trimmed.records,
                bytes = trimmed.bytes,
                held_bytes = trimmed.held_bytes,
                "log retention removed records every writer had committed"
            );
        }
        Ok(trimmed)
    }

    /// The log file's size on disk.
    pub fn file_bytes(&self) -> u64 {
        std::fs::metadata(self.path()).map_or(0, |m| m.len())
    }
}

/// How often a writer process applies retention.
pub const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Applies `policy` every [`TRIM_EVERY`] until `stop` (and once at the start). A failure is
/// logged and tried again at the next turn.
pub async fn trim_periodically(
    log: EmbeddedLog,
    policy: Retention,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        let log = log.clone();
        let now_ms = chrono::Utc::now().timestamp_millis();
        match tokio::task::spawn_blocking(move || log.trim(policy, now_ms)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "log retention failed; trying again later"),
            Err(e) => tracing::warn!(error = %e, "log retention's worker ended"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(TRIM_EVERY) => {}
        }
    }
}

fn trim_in(txn: &WriteTransaction, policy: Retention, now_ms: i64) -> Result<Trimmed> {
    const WHAT: &str = "log retention";
    let mut partitions = Vec::new();
    {
        let topics = txn
            .open_table(TOPICS)
            .map_err(|e| LogError::storage(WHAT, e))?;
        let groups = txn
            .open_table(GROUPS)
            .map_err(|e| LogError::storage(WHAT, e))?;
        // Each partition's lowest committed position over the groups that read it.
        let mut floors: BTreeMap<(String, u32), u64> = BTreeMap::new();
        for entry in groups.iter().map_err(failed(WHAT))? {
            let (key, offset) = entry.map_err(failed(WHAT))?;
            let mut parts = key.value().split('\u{0}');
            let (Some(_), Some(topic), Some(p)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            let Ok(p) = p.parse::<u32>() else { continue };
            let floor = floors.entry((topic.to_string(), p)).or_insert(u64::MAX);
            *floor = (*floor).min(offset.value());
        }
        for entry in topics.iter().map_err(failed(WHAT))? {
            let (name, spec) = entry.map_err(failed(WHAT))?;
            let spec: TopicSpec = serde_json::from_str(spec.value())
                .map_err(|e| LogError::Corrupt(format!("topic spec of {}: {e}", name.value())))?;
            for p in 0..spec.partitions {
                // A partition no group has committed from keeps everything.
                let floor = floors.get(&(spec.name.clone(), p)).copied().unwrap_or(0);
                partitions.push(Partition {
                    name: partition_table(&spec.name, p),
                    floor,
                    bytes: 0,
                });
            }
        }
    }
    let mut counts = txn
        .open_table(PARTITION_BYTES)
        .map_err(|e| LogError::storage(WHAT, e))?;
    for p in &mut partitions {
        let table = txn
            .open_table(TableDefinition::<u64, &[u8]>::new(&p.name))
            .map_err(|e| LogError::storage(WHAT, e))?;
        p.bytes = match counts.get(p.name.as_str()).map_err(failed(WHAT))? {
            Some(n) => n.value(),
            None => {
                // A log written before the count was kept: counted once.
                let mut n = 0;
                for entry in table.iter().map_err(failed(WHAT))? {
                    n += entry.map_err(failed(WHAT))?.1.value().len() as u64;
                }
                n
            }
        };
    }
    let cutoff = (!policy.age.is_zero()).then(|| now_ms - policy.age.as_millis() as i64);
    let mut held: u64 = partitions.iter().map(|p| p.bytes).sum();
    let mut done = Trimmed::default();
    // Oldest batch first across partitions, while one may go.
    loop {
        let mut oldest: Option<(i64, usize, u64, u64, u64)> = None; // (newest ms, partition, base, records, bytes)
        for (i, p) in partitions.iter().enumerate() {
            let table = txn
                .open_table(TableDefinition::<u64, &[u8]>::new(&p.name))
                .map_err(|e| LogError::storage(WHAT, e))?;
            if table.len().map_err(failed(WHAT))? < 2 {
                continue;
            }
            let Some((base, batch)) = table.first().map_err(failed(WHAT))? else {
                continue;
            };
            let (base, bytes) = (base.value(), batch.value());
            let records = u64::from(batch_len(bytes)?);
            if base + records > p.floor {
                continue;
            }
            let newest = batch_newest_ms(bytes)?;
            if oldest.is_none_or(|o| newest < o.0) {
                oldest = Some((newest, i, base, records, bytes.len() as u64));
            }
        }
        let Some((newest, i, base, records, bytes)) = oldest else {
            break;
        };
        let too_old = cutoff.is_some_and(|c| newest < c);
        let too_big = policy.bytes > 0 && held > policy.bytes;
        if !(too_old || too_big) || done.batches >= MAX_REMOVED {
            break;
        }
        let p = &mut partitions[i];
        let mut table = txn
            .open_table(TableDefinition::<u64, &[u8]>::new(&p.name))
            .map_err(|e| LogError::storage(WHAT, e))?;
        table.remove(base).map_err(failed(WHAT))?;
        p.bytes = p.bytes.saturating_sub(bytes);
        held = held.saturating_sub(bytes);
        done.batches += 1;
        done.records += records;
        done.bytes += bytes;
    }
    for p in &partitions {
        counts
            .insert(p.name.as_str(), p.bytes)
            .map_err(failed(WHAT))?;
        let table = txn
            .open_table(TableDefinition::<u64, &[u8]>::new(&p.name))
            .map_err(|e| LogError::storage(WHAT, e))?;
        if let Some((_, batch)) = table.first().map_err(failed(WHAT))? {
            let first = super::batch::batch_oldest_ms(batch.value())?;
            done.oldest_ms = Some(done.oldest_ms.map_or(first, |o: i64| o.min(first)));
        }
    }
    done.held_bytes = held;
    Ok(done)
}
