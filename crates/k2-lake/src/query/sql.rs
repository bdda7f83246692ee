//! Free SQL over every table (`trades`, `quotes`, `reference_data.companies`): read-only
//! (the planner refuses DDL, DML and statements), cut at `max_rows` rows and saying so.

use std::sync::Arc;

use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider};
use datafusion::prelude::SessionContext;

use super::QueryEngine;
use super::answer::SqlAnswer;
use crate::error::{LakeError, Result};
use crate::metrics;
use crate::scan::SnapshotTable;
use crate::tables::LakeTable;

impl QueryEngine {
    /// Read-only SQL over all tables (`trades`, `quotes`, `reference_data.companies`): at
    /// most `max_rows` rows, and whether the result had more.
    pub async fn sql(&self, sql: &str) -> Result<SqlAnswer> {
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
            let provider =
                SnapshotTable::new(self.table(table).await?, None, self.manifests.clone())
                    .await
                    .map_err(|e| LakeError::catalog(format!("reading {table}"), e))?;
            catalog
                .schema(&namespace)
                .expect("registered above")
                .register_table(ident.name().to_string(), Arc::new(provider))
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
        Ok(SqlAnswer {
            batches,
            truncated_at,
        })
    }
}
