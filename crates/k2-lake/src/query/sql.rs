//! Free SQL over every table (`trades`, `quotes`, `reference_data.companies`, and the
//! completeness ledger's `quality.streams`, `quality.gaps`, `quality.sessions`):
//! read-only (the planner refuses DDL, DML and statements), cut at `max_rows` rows and
//! saying so.

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::catalog::{
    CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider, SchemaProvider,
};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

use super::QueryEngine;
use super::answer::SqlAnswer;
use super::pin::{Pin, Receipt};
use super::quality::LedgerView;
use crate::error::{LakeError, Result};
use crate::metrics;
use crate::scan::SnapshotTable;
use crate::tables::LakeTable;

impl QueryEngine {
    /// Read-only SQL over all tables (`trades`, `quotes`, `reference_data.companies`): at
    /// most `max_rows` rows, and whether the result had more.
    pub async fn sql(&self, sql: &str) -> Result<SqlAnswer> {
        Ok(self.sql_at(sql, &Pin::Current).await?.0)
    }

    /// [`sql`](Self::sql) with every table read at the snapshot `pin` names in it, and
    /// the receipts of the snapshots read.
    pub async fn sql_at(&self, sql: &str, pin: &Pin) -> Result<(SqlAnswer, Vec<Receipt>)> {
        let mut receipts = Vec::new();
        let ctx = SessionContext::new_with_config_rt(Self::config(), self.runtime.clone());
        let catalog = MemoryCatalogProvider::new();
        for table in LakeTable::ALL {
            let ident = table.ident();
            let namespace = ident.namespace().to_url_string();
            if catalog.schema(&namespace).is_none() {
                catalog
                    .register_schema(&namespace, Arc::new(MemorySchemaProvider::new()))
                    .map_err(|e| LakeError::engine("registering the tables", e))?;
            }
            let t = self.table(table).await?;
            let provider: Arc<dyn TableProvider> = if pin.before_first_commit(&t) {
                // Before its first commit the table was empty.
                let empty = SnapshotTable::new(t, None, self.manifests.clone())
                    .await
                    .map_err(|e| LakeError::catalog(format!("reading {table}"), e))?
                    .schema();
                Arc::new(
                    MemTable::try_new(empty, vec![vec![]])
                        .map_err(|e| LakeError::engine("registering the tables", e))?,
                )
            } else {
                let (snapshot, receipt) = self.pin(table, pin).await?;
                receipts.push(receipt);
                Arc::new(
                    SnapshotTable::new(t, snapshot, self.manifests.clone())
                        .await
                        .map_err(|e| LakeError::catalog(format!("reading {table}"), e))?,
                )
            };
            catalog
                .schema(&namespace)
                .expect("registered above")
                .register_table(ident.name().to_string(), provider)
                .map_err(|e| LakeError::engine("registering the tables", e))?;
        }
        // The completeness ledger, when this engine sees the writer's state: read only if
        // the query scans it.
        if self.state_root.is_some() {
            let quality = Arc::new(MemorySchemaProvider::new());
            for view in LedgerView::ALL {
                quality
                    .register_table(
                        view.name().to_string(),
                        Arc::new(self.ledger_table(view, pin).await?),
                    )
                    .map_err(|e| LakeError::engine("registering the tables", e))?;
            }
            catalog
                .register_schema("quality", quality)
                .map_err(|e| LakeError::engine("registering the tables", e))?;
        }
        ctx.register_catalog("k2", Arc::new(catalog));
        // One row past the cap tells a cut answer from one that fits exactly.
        let max = self.options.max_rows;
        let mut batches = self
            .run("sql", &ctx, sql, vec![], Some(max.saturating_add(1)))
            .await?;
        let mut rows = 0;
        let mut truncated_at = None;
        if let Some(i) = batches.iter().position(|b| {
            rows += b.num_rows();
            rows > max
        }) {
            let keep = batches[i].num_rows() - (rows - max);
            batches[i] = batches[i].slice(0, keep);
            batches.truncate(i + 1);
            truncated_at = Some(max);
            metrics::sql_truncated();
        }
        Ok((
            SqlAnswer {
                batches,
                truncated_at,
            },
            receipts,
        ))
    }
}
