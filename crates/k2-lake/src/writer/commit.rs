//! A batch's task: its rows sorted and written as Parquet files, then committed to the
//! table by an Iceberg fast-append whose snapshot records the batch's log positions.
//!
//! A commit that fails retryably is tried again on the table as it is then: a commit whose
//! answer was lost shows as this very batch on top (success), and positions another
//! writer committed meanwhile stop the writer rather than store a row twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::SchemaRef;
use iceberg::Catalog;
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use k2_model::STAGE_SPANS;
use tracing::Instrument;
use tracing::field::Empty;

use super::dependencies::CommitDeps;
use super::files::write_files;
use super::state::load_table;
use crate::columns::Rows;
use crate::commit_marks::{self, Positions};
use crate::error::{LakeError, Result};
use crate::metrics;
use crate::tables::LakeTable;

/// One batch of a table, everything its task needs.
pub(super) struct Batch {
    pub t: LakeTable,
    pub table: Table,
    pub arrow_schema: SchemaRef,
    pub rows: Rows,
    pub name: String,
    pub properties: HashMap<String, String>,
    /// The next offset per partition of the batch (checked against the lake on a retry).
    pub ends: Positions,
    pub source: String,
    pub zstd_level: i32,
}

/// What a batch's task hands back.
pub(super) struct Committed {
    pub table: Table,
    /// The batch's rows, cleared: their chunks are reused.
    pub rows: Rows,
    pub files: usize,
    pub bytes: u64,
}

/// Sorts, writes and commits one batch: the task of a batch in flight.
pub(super) async fn write_and_commit(
    batch: Batch,
    catalog: &dyn Catalog,
    deps: &mut CommitDeps,
) -> Result<Committed> {
    let Batch {
        t,
        table,
        arrow_schema,
        rows,
        name,
        properties,
        ends,
        source,
        zstd_level,
    } = batch;
    // Fields a newer version of the record's schema added become the table's columns first.
    let (mut table, arrow_schema) = {
        let (table, arrow_schema, rows) = (&table, &arrow_schema, &rows);
        deps.catalog
            .call(|| super::evolve::with_added_columns(catalog, t, table, arrow_schema, rows))
            .await?
    };
    // The files' tasks share the rows, which come back for reuse once they are written.
    let rows = Arc::new(rows);
    let files = {
        let (rows, name, table, arrow_schema) = (&rows, &name, &table, &arrow_schema);
        let span = tracing::trace_span!(target: STAGE_SPANS, "write", table = %t, rows = rows.len(), files = Empty, bytes = Empty);
        let files = deps
            .storage
            .call(|| write_files(t, table, arrow_schema, rows, name, zstd_level))
            .instrument(span.clone())
            .await?;
        span.record("files", files.len());
        span.record(
            "bytes",
            files.iter().map(|f| f.file_size_in_bytes()).sum::<u64>(),
        );
        files
    };
    let mut rows = Arc::try_unwrap(rows).unwrap_or_default();
    let file_count = files.len();
    let bytes: u64 = files.iter().map(|f| f.file_size_in_bytes()).sum();
    let started = Instant::now();
    let mut attempt = 0;
    let span = tracing::trace_span!(target: STAGE_SPANS, "commit", table = %t, rows = rows.len(), attempts = Empty, snapshot = Empty);
    let table = async { loop {
        deps.catalog.permit().await;
        attempt += 1;
        let result = async {
            if attempt > 1 {
                // After a failure the table may have moved: reload it, and never append a
                // batch whose positions another writer committed meanwhile.
                table = load_table(catalog, t).await?;
                // A commit whose answer was lost (the connection dropped after the
                // catalog applied it) shows as this very batch on top: that is success.
                if let Some(current) = table.metadata().current_snapshot()
                    && commit_marks::batch_of(current) == Some(name.as_str())
                {
                    tracing::warn!(table = %t, snapshot = current.snapshot_id(), "an earlier commit attempt had succeeded");
                    return Ok(table.clone());
                }
                let now_committed = commit_marks::committed_offsets(&table, &source)?;
                if ends
                    .iter()
                    .any(|(k, v)| now_committed.get(k).is_some_and(|c| c >= v))
                {
                    return Err(LakeError::conflict(
                        t,
                        "positions of this batch were committed by another writer",
                    ));
                }
            }
            let tx = Transaction::new(&table);
            let action = tx
                .fast_append()
                .add_data_files(files.clone())
                .set_snapshot_properties(properties.clone());
            let tx = action
                .apply(tx)
                .map_err(|e| LakeError::catalog(format!("committing {} rows to {t}", rows.len()), e))?;
            tx.commit(catalog)
                .await
                .map_err(|e| LakeError::catalog(format!("committing {} rows to {t}", rows.len()), e))
        }
        .await;
        if result.is_err() {
            metrics::commit_failed(t.name());
        }
        if let Some(table) = deps.catalog.settle(result, attempt, started).await? {
            break Ok::<_, LakeError>(table);
        }
    } }
    .instrument(span.clone())
    .await?;
    span.record("attempts", attempt);
    if let Some(snapshot) = table.metadata().current_snapshot() {
        span.record("snapshot", snapshot.snapshot_id());
    }
    rows.clear();
    Ok(Committed {
        table,
        rows,
        files: file_count,
        bytes,
    })
}
