//! A batch's flight: cut from a table's pending rows, written and committed on a task of
//! its own while the writer reads on, then landed (audited, counted, its positions
//! reported). One batch is in flight at a time, so commits stay in order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use iceberg::Catalog;
use k2_log::{DeadLetterStore, Log, PartitionOffset};

use super::claims::{Claims, claim_batch};
use super::commit::{Batch, Committed, write_and_commit};
use super::dependencies::{CommitDeps, Deps};
use super::options::{WriterOptions, WriterSummary};
use super::state::TableState;
use crate::audit::{self, AuditEntry};
use crate::commit_marks::{CommitMarks, parse_offset_key};
use crate::error::{LakeError, Result};
use crate::metrics;
use crate::tables::LakeTable;
use tracing::Instrument;

/// Where rejected records go: the store in the data directory, then the log's
/// dead-letter topic (Kafka).
pub(super) struct Letters<'a, L> {
    pub store: &'a DeadLetterStore,
    pub log: &'a L,
}

/// A table's batch being written and committed on its own task while the writer reads
/// and decodes on: Parquet encoding and the catalog's round trips overlap the next poll.
pub(super) struct Flight {
    pub table: LakeTable,
    pub task: tokio::task::JoinHandle<(CommitDeps, Result<Committed>)>,
    /// With dedup shared in Redis: the ids the batch claimed (renewed by the writer while
    /// the batch is in flight).
    pub claims: Option<Claims>,
    pub name: String,
    pub rows: u64,
    /// Where the batch's positions start, and every partition's next offset once it lands.
    pub offsets_from: BTreeMap<String, u64>,
    pub offsets_to: BTreeMap<String, u64>,
    pub snapshot_before: Option<i64>,
    pub started: Instant,
    /// When K2 received the batch's oldest record (feed receipt or file read), µs.
    pub oldest_ingested_us: Option<i64>,
}

impl Drop for Flight {
    /// A writer that stops on an error does not leave a commit running behind it: like a
    /// crash, the batch is committed or not, and a restart resumes from the lake.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Cuts a table's pending rows into a batch and starts writing and committing it; `None`
/// when there is nothing to commit (the batch held only dead letters and duplicates).
pub(super) async fn take_off<L: Log>(
    t: LakeTable,
    state: &mut TableState,
    catalog: &Arc<dyn Catalog>,
    letters_to: &Letters<'_, L>,
    options: &WriterOptions,
    deps: &mut Deps,
    summary: &mut WriterSummary,
) -> Result<Option<Flight>> {
    let started = Instant::now();
    // Dead letters are durable before the commit that moves past them. All count for the
    // run's accounting, also those the store already held from a run that stopped early.
    let letters = std::mem::take(&mut state.pending_letters);
    letters_to.store.append(&letters)?;
    let log = letters_to.log;
    deps.log
        .call(|| async { Ok(log.publish_dead_letters(&letters).await?) })
        .await?;
    summary.dead_lettered += letters.len() as u64;
    if state.pending.is_empty() {
        // Nothing to append: an Iceberg snapshot needs data files, so the positions of a
        // batch made only of dead letters and duplicates are covered by the next real
        // commit (a restart before it re-reads them: the dead-letter store ignores repeats
        // and the duplicates are dropped again).
        state.oldest = None;
        return Ok(None);
    }
    let name = batch_name(&state.batch_start, &state.pending_offsets);
    let token = format!("{}|{name}", options.source);
    let claims = if state.integrity.shares_dedup() {
        let ids = claim_batch(t, state, catalog.as_ref(), &token, options, deps, summary).await?;
        if state.pending.is_empty() {
            // Every row was stored by another writer: as for a batch of duplicates.
            state.oldest = None;
            return Ok(None);
        }
        Some(Claims {
            ids,
            token,
            at: Instant::now(),
        })
    } else {
        None
    };
    // The next batch fills the chunks of the last one that landed, if it has landed.
    let rows = std::mem::replace(&mut state.pending, std::mem::take(&mut state.spare));
    let ends = std::mem::take(&mut state.pending_offsets);
    let mut offsets_to = state.committed.clone();
    offsets_to.extend(ends.iter().map(|(k, v)| (k.clone(), *v)));
    let marks = CommitMarks {
        offsets: offsets_to.clone(),
        batch: name.clone(),
        source: options.source.clone(),
        // The integrity state this snapshot stands for (every record admitted up to the
        // cut) is durable before the commit.
        integrity: state.integrity.prepare(&name)?,
    };
    state.oldest = None;
    let oldest_ingested_us = rows.iter().map(|r| r.record.ingestion_time_us()).min();
    let flight = Flight {
        table: t,
        claims,
        name: name.clone(),
        rows: rows.len() as u64,
        offsets_from: std::mem::take(&mut state.batch_start),
        offsets_to,
        snapshot_before: state.table.metadata().current_snapshot_id(),
        started,
        oldest_ingested_us,
        task: {
            let batch = Batch {
                t,
                table: state.table.clone(),
                arrow_schema: state.arrow_schema.clone(),
                rows,
                name,
                properties: marks.properties(),
                ends,
                source: options.source.clone(),
                zstd_level: options.zstd_level,
            };
            let mut commit_deps = deps.commit.take().expect("one batch in flight at a time");
            let catalog = catalog.clone();
            // The batch's trace: its write and its commit.
            let span = tracing::trace_span!(target: k2_model::STAGE_SPANS, "batch", table = %t, rows = batch.rows.len(), batch = %batch.name);
            tokio::spawn(
                async move {
                    let committed =
                        write_and_commit(batch, catalog.as_ref(), &mut commit_deps).await;
                    (commit_deps, committed)
                }
                .instrument(span),
            )
        },
    };
    Ok(Some(flight))
}

/// Waits for the batch in flight (renewing its claims meanwhile) and books its commit.
/// Returns the table's committed positions.
pub(super) async fn land(
    mut flight: Flight,
    states: &mut BTreeMap<LakeTable, TableState>,
    options: &WriterOptions,
    deps: &mut Deps,
    summary: &mut WriterSummary,
) -> Result<Vec<PartitionOffset>> {
    let t = flight.table;
    let state = states.get_mut(&t).expect("every table has a state");
    let (commit_deps, committed) = loop {
        let renew_in = match &flight.claims {
            Some(c) => c.renew_in(&state.integrity),
            None => Duration::MAX,
        };
        tokio::select! {
            done = &mut flight.task => {
                break done.map_err(|e| LakeError::task(format!("the {t} commit"), e))?;
            }
            () = tokio::time::sleep(renew_in.min(Duration::from_secs(3600))) => {
                if let Some(c) = &mut flight.claims {
                    c.renew(t, &mut state.integrity, &mut deps.redis).await?;
                }
            }
        }
    };
    deps.commit = Some(commit_deps);
    deps.report(summary);
    let committed = committed?;
    state.table = committed.table;
    if let Some(c) = flight.claims.take() {
        c.keep(t, &mut state.integrity, &mut deps.redis).await?;
    }
    let elapsed = flight.started.elapsed();
    let entry = AuditEntry {
        committed_at_us: chrono::Utc::now().timestamp_micros(),
        table: t.qualified(),
        snapshot_before: flight.snapshot_before,
        snapshot_after: state
            .table
            .metadata()
            .current_snapshot_id()
            .unwrap_or_default(),
        rows: flight.rows,
        files: committed.files as u64,
        bytes: committed.bytes,
        offsets_from: std::mem::take(&mut flight.offsets_from),
        offsets_to: flight.offsets_to.clone(),
        batch: flight.name.clone(),
        duration_ms: Some(elapsed.as_millis() as u64),
        recovered: false,
    };
    if let Some(path) = &options.audit_path {
        audit::append(path, std::slice::from_ref(&entry))?;
    }
    state.integrity.committed(&flight.name);
    metrics::dedup_held(t.name(), state.integrity.dedup());
    state.spare = committed.rows;
    state.committed = std::mem::take(&mut flight.offsets_to);
    metrics::rows_committed(
        t.name(),
        flight.rows as usize,
        committed.files,
        committed.bytes,
        elapsed,
    );
    if let Some(us) = flight.oldest_ingested_us {
        metrics::freshness(t.name(), entry.committed_at_us - us);
    }
    *summary.rows_committed.entry(t.qualified()).or_default() += flight.rows;
    summary.commits += 1;
    tracing::info!(
        table = %t,
        rows = flight.rows,
        files = committed.files,
        bytes = committed.bytes,
        snapshot_before = entry.snapshot_before.unwrap_or_default(),
        snapshot = entry.snapshot_after,
        batch = %entry.batch,
        offsets = %serde_json::to_string(&entry.offsets_to).unwrap_or_default(),
        ms = elapsed.as_millis() as u64,
        "lake commit"
    );
    let positions: Vec<PartitionOffset> = state
        .committed
        .iter()
        .filter_map(|(k, &offset)| {
            let (topic, partition) = parse_offset_key(&options.source, k)?;
            Some(PartitionOffset {
                topic: topic.into(),
                partition,
                offset,
            })
        })
        .collect();
    Ok(positions)
}

/// A name for the batch derived from the log positions it covers.
fn batch_name(start: &BTreeMap<String, u64>, end: &BTreeMap<String, u64>) -> String {
    let mut key = String::new();
    for (k, e) in end {
        key.push_str(&format!("{k}:{}-{e};", start.get(k).copied().unwrap_or(0)));
    }
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(key.as_bytes()))
}
