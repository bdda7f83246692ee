//! What the writer holds for each table: its metadata, the positions it committed, the
//! rows and dead letters waiting for the next batch, and its integrity state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::SchemaRef;
use iceberg::Catalog;
use iceberg::table::Table;
use k2_log::DeadLetter;

use super::dependencies::Dependency;
use super::options::WriterOptions;
use crate::audit;
use crate::columns::Rows;
use crate::commit_marks::{self, Positions};
use crate::error::{LakeError, Result};
use crate::integrity::TableIntegrity;
use crate::tables::LakeTable;

pub(super) struct TableState {
    pub table: Table,
    pub arrow_schema: SchemaRef,
    /// The positions of this writer's newest commit.
    pub committed: Positions,
    pub pending: Rows,
    /// The chunks of the last batch that landed, reused by the next one (no fresh pages
    /// to fault in).
    pub spare: Rows,
    pub pending_letters: Vec<DeadLetter>,
    /// Next offset per partition covered by the pending rows and letters.
    pub pending_offsets: Positions,
    /// First offset of this batch per partition (names the files).
    pub batch_start: Positions,
    pub oldest: Option<Instant>,
    pub integrity: TableIntegrity,
    /// When this run last expired the table's old snapshots.
    pub expired_at: Option<Instant>,
    /// When this run last looked for data files no snapshot names, and that look if it
    /// is still going (it runs beside the writer: it reads every manifest of the table).
    pub swept_at: Option<Instant>,
    pub sweep: Option<tokio::task::JoinHandle<()>>,
}

/// The table's current metadata from the catalog.
pub(super) async fn load_table(catalog: &dyn Catalog, t: LakeTable) -> Result<Table> {
    catalog
        .load_table(&t.ident())
        .await
        .map_err(|e| LakeError::catalog(format!("loading {t}"), e))
}

impl TableState {
    /// The table as its newest commit left it: the positions to resume from, the audit
    /// file completed from the snapshots, and the integrity state restored.
    pub async fn load(
        t: LakeTable,
        catalog: &dyn Catalog,
        dep: &mut Dependency,
        options: &WriterOptions,
    ) -> Result<Self> {
        let table = dep.call(|| load_table(catalog, t)).await?;
        let arrow_schema = Arc::new(
            iceberg::arrow::schema_to_arrow_schema(table.metadata().current_schema())
                .map_err(|e| LakeError::catalog("arrow schema", e))?,
        );
        let committed = commit_marks::committed_offsets(&table, &options.source)?;
        if let Some(path) = &options.audit_path {
            let recovered = audit::reconcile(path, t, &table)?;
            if recovered > 0 {
                tracing::warn!(table = %t, commits = recovered, "audit lines recovered from snapshots");
            }
        }
        let integrity =
            TableIntegrity::restore(t, &table, &options.source, &options.integrity).await?;
        Ok(TableState {
            table,
            arrow_schema,
            committed,
            pending: Rows::default(),
            spare: Rows::default(),
            pending_letters: Vec::new(),
            pending_offsets: BTreeMap::new(),
            batch_start: BTreeMap::new(),
            oldest: None,
            integrity,
            expired_at: None,
            swept_at: None,
            sweep: None,
        })
    }
}
