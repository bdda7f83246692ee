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

use datafusion::common::ScalarValue;

use super::answer::SqlAnswer;
use super::pin::{Pin, Receipt};
use super::quality::{LedgerTable, LedgerView, SEQUENCED};
use super::sql_text::uuids_as_text_schema;
use super::{QueryEngine, read_only};
use crate::error::{LakeError, Result};
use crate::metrics;
use crate::scan::SnapshotTable;
use crate::tables::LakeTable;

/// A statement planned: its result's schema and its parameters in order, each with the
/// type the planner infers for it (None where nothing tells).
#[derive(Clone, Debug)]
pub struct Prepared {
    pub schema: arrow::datatypes::SchemaRef,
    pub parameters: Vec<(String, Option<arrow::datatypes::DataType>)>,
}

impl QueryEngine {
    /// Read-only SQL over all tables (`trades`, `quotes`, `reference_data.companies`): at
    /// most `max_rows` rows, and whether the result had more.
    pub async fn sql(&self, sql: &str) -> Result<SqlAnswer> {
        Ok(self.sql_at(sql, &Pin::Current).await?.0)
    }

    /// [`sql`](Self::sql) with every table read at the snapshot `pin` names in it, and
    /// the receipts of the snapshots read.
    pub async fn sql_at(&self, sql: &str, pin: &Pin) -> Result<(SqlAnswer, Vec<Receipt>)> {
        self.sql_with(sql, pin, Vec::new()).await
    }

    /// A statement planned, not run: the schema of its result and its parameters (`$1`,
    /// `$2`, … with the types the planner infers, None where it cannot). Read-only like
    /// every statement.
    pub async fn prepare(&self, sql: &str) -> Result<Prepared> {
        let (ctx, _) = self.sql_context(&Pin::Current).await?;
        let df = ctx
            .sql_with_options(sql, read_only())
            .await
            .map_err(|e| self.classify(e))?;
        let mut parameters: Vec<(String, Option<arrow::datatypes::DataType>)> = df
            .logical_plan()
            .get_parameter_types()
            .map_err(|e| self.classify(e))?
            .into_iter()
            .collect();
        // `$2` after `$1`, `$10` after `$9`.
        parameters.sort_by_key(|(name, _)| {
            (
                name.trim_start_matches('$')
                    .parse::<u64>()
                    .unwrap_or(u64::MAX),
                name.clone(),
            )
        });
        Ok(Prepared {
            schema: uuids_as_text_schema(df.schema().as_arrow()),
            parameters,
        })
    }

    /// [`sql_at`](Self::sql_at) with `params` bound to `$1`, `$2`, ….
    pub async fn sql_with(
        &self,
        sql: &str,
        pin: &Pin,
        params: Vec<ScalarValue>,
    ) -> Result<(SqlAnswer, Vec<Receipt>)> {
        let (ctx, receipts) = self.sql_context(pin).await?;
        // One row past the cap tells a cut answer from one that fits exactly.
        let max = self.options.max_rows;
        let mut batches = self
            .run("sql", &ctx, sql, params, Some(max.saturating_add(1)))
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

    /// A context holding every table at the snapshot `pin` names, and the receipts of the
    /// snapshots it holds.
    async fn sql_context(&self, pin: &Pin) -> Result<(SessionContext, Vec<Receipt>)> {
        let mut receipts = Vec::new();
        // The sequenced tables as pinned here, for the completeness ledger's tables.
        let mut sequenced = Vec::new();
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
                if SEQUENCED.contains(&table) {
                    sequenced.push((table, t.clone(), snapshot));
                }
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
        if let Some(state_root) = &self.state_root {
            let quality = Arc::new(MemorySchemaProvider::new());
            for view in LedgerView::ALL {
                let table = LedgerTable::new(view, sequenced.clone(), state_root.clone());
                quality
                    .register_table(view.name().to_string(), Arc::new(table))
                    .map_err(|e| LakeError::engine("registering the tables", e))?;
            }
            catalog
                .register_schema("quality", quality)
                .map_err(|e| LakeError::engine("registering the tables", e))?;
        }
        ctx.register_catalog("k2", Arc::new(catalog));
        Ok((ctx, receipts))
    }
}
