//! Reading an embedded log: assigned partitions read fairly, batch by batch, a batch a
//! poll stopped inside kept for the next poll; a waiting poll wakes on an append of this
//! process and looks for other processes' appends at a short interval.

use std::sync::Arc;
use std::time::Duration;

use redb::TableDefinition;

use super::batch::{Cursor, batch_len, decode_records};
use super::{CROSS_PROCESS_POLL, EmbeddedLog, partition_table};
use crate::error::{LogError, Result};
use crate::log::{ConsumedRecord, LogConsumer, PartitionOffset};
use crate::metrics;
use crate::store::{reading, table};

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
    /// Reads `assignment` (its partitions checked by the caller) from `log`.
    pub(super) fn new(log: EmbeddedLog, assignment: Vec<PartitionOffset>) -> Self {
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
        EmbeddedConsumer {
            log,
            positions,
            cursor: 0,
        }
    }

    fn read_available(&mut self, max: usize) -> Result<Vec<ConsumedRecord>> {
        let mut out = Vec::new();
        if self.positions.is_empty() || max == 0 {
            return Ok(out);
        }
        let txn = reading(&self.log.db, "reading log")?;
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
            let definition = TableDefinition::<u64, &[u8]>::new(&pos.table);
            // None: nothing was ever appended to the partition.
            let Some(table) = table(&txn, definition, "reading log")? else {
                pos.at_end = true;
                continue;
            };
            let limit = (out.len() + share).min(max);
            // Batches are contiguous (each starts where the previous one ended), so after
            // the first read every batch is fetched by its exact key: one page read per
            // batch. A range scan would also seek its open end, reading the newest batch.
            let (mut base, mut known) = match pos.batch {
                Some(base) => (base, true),
                // The batch holding `next` is the last one whose base is <= next; when
                // retention removed it (every group had committed it), the oldest kept.
                None => {
                    let read = |e| LogError::storage("reading log", e);
                    let below = table.range(..=pos.next).map_err(read)?.next_back();
                    match below.transpose().map_err(read)? {
                        Some((base, _)) => (base.value(), true),
                        None => match table.range(pos.next..).map_err(read)?.next() {
                            Some(first) => {
                                let first = first.map_err(read)?.0.value();
                                tracing::debug!(topic = %pos.topic, partition = pos.partition, from = pos.next, first, "reading from the oldest record retention kept");
                                pos.next = first;
                                (first, true)
                            }
                            None => (pos.next, false),
                        },
                    }
                }
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
