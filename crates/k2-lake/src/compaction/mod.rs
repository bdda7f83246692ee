//! Compaction: the small files of a day partition rewritten into files of a target size,
//! sorted by (symbol, timestamp), and committed as an Iceberg `replace` snapshot.
//!
//! - `plan` — which files of the current snapshot to rewrite, in bins per partition.
//! - `rewrite` — a bin's rows read, sorted and written as new data files.
//! - `commit` — the manifests and manifest list of the `replace` snapshot, committed with
//!   the current snapshot as its requirement; a writer's commit in between is answered by
//!   building the snapshot again on top of the new one (the writers only append, so every
//!   replaced file is still there), a few times, then giving up with nothing changed.
//!
//! iceberg-rust 0.10 has no rewrite action, so the snapshot is built here from its public
//! manifest and manifest-list writers and committed through [`TableCommitter`].
//!
//! Exactly once is untouched: a compaction snapshot carries no commit marks, and a writer
//! resumes from its own newest snapshot (`commit_marks::source_snapshot` walks past
//! compactions); the rows are the same rows, so every answer is the same. A snapshot taken
//! before the compaction still names the old files, which stay until expiry lets that
//! snapshot go (see `retention`).

mod commit;
mod plan;
mod rewrite;

use std::time::{Duration, Instant};

use iceberg::Catalog;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::error::{LakeError, Result};
use crate::metrics;
use crate::table_commit::TableCommitter;
use crate::tables::LakeTable;

pub use plan::{Bin, day_of, files_per_day};

/// What to compact and how.
#[derive(Clone, Debug)]
pub struct CompactOptions {
    /// Files are written up to this size; files under 3/4 of it count as small.
    pub target_file_bytes: u64,
    /// A partition is compacted once it has this many small files.
    pub min_files: usize,
    /// Only this partition (the UTC day, as days since 1970-01-01).
    pub day: Option<i32>,
    pub zstd_level: i32,
    /// Commits attempted before giving up to a busy writer.
    pub attempts: u32,
}

impl Default for CompactOptions {
    fn default() -> Self {
        CompactOptions {
            target_file_bytes: 64 << 20,
            min_files: 8,
            day: None,
            zstd_level: 1,
            attempts: 5,
        }
    }
}

/// What one compaction of a table did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Compacted {
    pub table: String,
    pub partitions: usize,
    pub files_before: usize,
    pub files_after: usize,
    pub rows: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// The `replace` snapshot; None when nothing was worth compacting.
    pub snapshot_id: Option<i64>,
    /// Commits that lost a race to a writer and were built again.
    pub retries: u32,
    pub seconds: f64,
}

/// Compacts table `t`: every partition with at least `min_files` small files (or the one
/// `options.day` names). Returns what it did; nothing is committed when nothing is due.
pub async fn compact(
    catalog: &dyn Catalog,
    committer: &TableCommitter,
    t: LakeTable,
    options: &CompactOptions,
) -> Result<Compacted> {
    prepare(catalog, t, options)
        .await?
        .commit(catalog, committer, options.attempts)
        .await
}

/// A compaction written and not yet committed: the new files, and the files they replace.
pub struct Prepared {
    t: LakeTable,
    table: iceberg::table::Table,
    bins: Vec<Bin>,
    written: Vec<iceberg::spec::DataFile>,
    done: Compacted,
    started: Instant,
}

/// Plans `t`'s compaction and writes its new files (see [`compact`]).
pub async fn prepare(
    catalog: &dyn Catalog,
    t: LakeTable,
    options: &CompactOptions,
) -> Result<Prepared> {
    let started = Instant::now();
    let table = catalog
        .load_table(&t.ident())
        .await
        .map_err(|e| LakeError::catalog(format!("loading {t}"), e))?;
    let mut done = Compacted {
        table: t.to_string(),
        ..Default::default()
    };
    let bins = plan::plan(&table, options).await?;
    let mut written = Vec::new();
    for bin in &bins {
        done.files_before += bin.files.len();
        done.bytes_before += bin.bytes();
        done.rows += bin.rows();
        match rewrite::rewrite(&table, bin, options).await {
            Ok(files) => written.extend(files),
            Err(e) => {
                rewrite::discard(&table, &written).await;
                metrics::compaction_failed(t.name());
                return Err(e);
            }
        }
    }
    let mut partitions: Vec<_> = bins.iter().map(|b| b.day).collect();
    partitions.dedup();
    done.partitions = partitions.len();
    done.files_after = written.len();
    done.bytes_after = written.iter().map(|f| f.file_size_in_bytes()).sum();
    let rows_after: u64 = written.iter().map(|f| f.record_count()).sum();
    if rows_after != done.rows {
        rewrite::discard(&table, &written).await;
        metrics::compaction_failed(t.name());
        return Err(LakeError::InvalidArgument(format!(
            "compacting {t}: {} rows read but {rows_after} written; nothing committed",
            done.rows
        )));
    }
    Ok(Prepared {
        t,
        table,
        bins,
        written,
        done,
        started,
    })
}

impl Prepared {
    /// Commits the `replace` snapshot, built again on top of any commit that came first,
    /// up to `attempts` times; on failure the new files are deleted and nothing changed.
    pub async fn commit(
        self,
        catalog: &dyn Catalog,
        committer: &TableCommitter,
        attempts: u32,
    ) -> Result<Compacted> {
        let Prepared {
            t,
            table,
            bins,
            written,
            mut done,
            started,
        } = self;
        if bins.is_empty() {
            done.seconds = started.elapsed().as_secs_f64();
            return Ok(done);
        }
        match commit::commit(catalog, committer, t, &bins, &written, attempts).await {
            Ok((snapshot_id, retries)) => {
                done.snapshot_id = Some(snapshot_id);
                done.retries = retries;
            }
            Err(e) => {
                // Nothing names the new files: they go now rather than at the orphan sweep.
                rewrite::discard(&table, &written).await;
                metrics::compaction_failed(t.name());
                return Err(e);
            }
        }
        done.seconds = started.elapsed().as_secs_f64();
        metrics::compacted(
            t.name(),
            done.files_before,
            done.files_after,
            done.bytes_after,
        );
        tracing::info!(
            table = %t,
            partitions = done.partitions,
            files_before = done.files_before,
            files_after = done.files_after,
            rows = done.rows,
            snapshot = done.snapshot_id,
            retries = done.retries,
            seconds = done.seconds,
            "compacted"
        );
        Ok(done)
    }
}

/// Compacts every market table each `every`, beside a writer, until `stop`. A failure is
/// logged and counted and tried again at the next turn: the lake is whole either way.
pub async fn run_periodically(
    catalog: std::sync::Arc<dyn Catalog>,
    committer: TableCommitter,
    options: CompactOptions,
    every: Duration,
    paused: Option<(std::sync::Arc<k2_pipeline::Pressure>, k2_pipeline::Level)>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if let Some((pressure, from)) = &paused
            && pressure.level() >= *from
        {
            // Optional work waits while the process is degraded; the next turn tries again.
            tracing::info!(
                level = pressure.level().as_str(),
                "compaction skipped: degraded"
            );
            crate::metrics::degradation_action("skip_compaction");
            continue;
        }
        for t in [LakeTable::Trades, LakeTable::Quotes] {
            let work = compact(catalog.as_ref(), &committer, t, &options);
            // A compaction in flight at a stop is abandoned: its files are discarded or
            // swept, and nothing was committed.
            let outcome = tokio::select! {
                _ = stop.cancelled() => return,
                outcome = work => outcome,
            };
            if let Err(e) = outcome {
                tracing::warn!(table = %t, error = %e, "compaction failed; trying again at the next turn");
            }
        }
    }
}
