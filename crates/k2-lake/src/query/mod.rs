//! The query engine: DataFusion over the Iceberg tables.
//!
//! Market queries are fixed SQL texts whose only inputs are `$n` parameters: no user value
//! is ever formatted into SQL. Each runs against one table pinned at a snapshot (the
//! current one, or any earlier one for time travel), under a memory limit and a timeout.
//! Free SQL is read-only (DDL, DML and statements are refused by the planner).
//!
//! A "day" is the exchange's trading day (the `trade_date` column), so daily summaries and
//! 1d bars follow the exchange calendar, not the UTC date.
//!
//! # Layout
//!
//! - [`QueryEngine`] — the runtime, the table metadata cache, running a query within its
//!   limits (this file); `options` — [`QueryOptions`].
//! - `request`, `answer` — what a query asks and what it answers.
//! - `sql_text` — parameters, column lists and the keyset order of K2's SQL texts.
//! - `market` — trades and quotes; `live` — the same merged with the live tail.
//! - `bars` — daily summaries, bars and aggregations.
//! - `sql` — free read-only SQL; `catalogue` — symbols, snapshots, counts.
//! - `pin` — time travel: a snapshot by id, tag or instant, and an answer's receipt.
//! - `quality` — the completeness ledger as tables (`quality.streams`, `.gaps`,
//!   `.sessions`).

mod answer;
mod bars;
mod catalogue;
mod live;
mod market;
mod options;
mod pin;
mod quality;
mod request;
mod sql;
pub(crate) mod sql_text;

use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::cache::CacheAccessor;
use datafusion::execution::cache::DefaultFilesMetadataCache;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use iceberg::Catalog;
use iceberg::table::Table;

pub use self::answer::{
    AggregateRow, Aggregates, Bar, DailySummary, MarketPage, Ohlcv, PriceLevel, SnapshotInfo,
    SqlAnswer,
};
pub use self::options::QueryOptions;
pub use self::pin::{Pin, Receipt, tags};
pub use self::quality::{LedgerFilter, LedgerView, SEQUENCED};
pub use self::request::{AggregateRequest, BarInterval, MarketFilter, RowKey, RowOrder};
pub use self::sql::Prepared;
use self::sql_text::uuids_as_text;
pub use self::sql_text::{columns, default_columns};
use crate::error::{LakeError, Result};
use crate::metrics;
use crate::scan::{ManifestCache, SnapshotTable};
use crate::tables::LakeTable;
/// A parameter's value (`$1`, …) of [`QueryEngine::sql_with`].
pub use datafusion::common::ScalarValue;

/// The engine. Cheap to share behind an `Arc`.
pub struct QueryEngine {
    catalog: Arc<dyn Catalog>,
    runtime: Arc<RuntimeEnv>,
    /// The runtime's Parquet footer cache, kept to report its size.
    footers: Arc<DefaultFilesMetadataCache>,
    options: QueryOptions,
    tables: std::sync::Mutex<std::collections::HashMap<LakeTable, (Instant, Table)>>,
    /// The tables' manifests, kept across metadata refreshes.
    manifests: Arc<ManifestCache>,
    /// Receipts by snapshot: making one walks the snapshot's whole ancestry, which an
    /// answer kept in the API's cache must not pay at every request.
    receipts: std::sync::Mutex<std::collections::HashMap<(LakeTable, i64), Receipt>>,
    /// The writer's sequence-state directory, where the completeness ledger is read.
    state_root: Option<std::path::PathBuf>,
}

/// What every statement may be: neither DDL, nor DML, nor a statement such as `SET`.
pub(crate) fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Receipts kept at most (a snapshot's receipt never changes; the set is cleared when full).
const RECEIPTS_KEPT: usize = 1024;

impl QueryEngine {
    pub fn new(catalog: Arc<dyn Catalog>, options: QueryOptions) -> Result<Self> {
        let footers_limit = (options.file_metadata_cache_mb as usize) << 20;
        let footers = Arc::new(DefaultFilesMetadataCache::new(footers_limit));
        let runtime = RuntimeEnvBuilder::new()
            .with_cache_manager(
                // The manager sets the cache's limit from its own config, so both say it.
                CacheManagerConfig::default()
                    .with_file_metadata_cache(Some(footers.clone()))
                    .with_metadata_cache_limit(footers_limit),
            )
            .with_memory_limit((options.memory_limit_mb as usize) << 20, 1.0)
            // No spilling: a query over its memory budget fails with a clear error.
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()
            .map_err(|e| LakeError::engine("starting the query runtime", e))?;
        Ok(QueryEngine {
            catalog,
            runtime,
            footers,
            options,
            tables: Default::default(),
            manifests: Default::default(),
            receipts: Default::default(),
            state_root: None,
        })
    }

    /// The engine reading the completeness ledger from the writer's sequence-state
    /// directory `state_root` (the `quality` tables, [`QueryEngine::ledgers`]).
    pub fn with_ledger(mut self, state_root: std::path::PathBuf) -> Self {
        self.state_root = Some(state_root);
        self
    }

    /// The decoded Parquet footers kept between queries: (bytes, files).
    pub fn file_metadata_cache(&self) -> (usize, usize) {
        (self.footers.memory_used(), self.footers.len())
    }

    pub fn options(&self) -> &QueryOptions {
        &self.options
    }

    pub(crate) fn config() -> SessionConfig {
        SessionConfig::new()
            .with_default_catalog_and_schema("k2", "market_data")
            .with_information_schema(true)
            .with_target_partitions(2)
    }

    /// A context holding `table` as `t`, at `snapshot` or the current snapshot.
    /// The table's metadata, reused for `metadata_refresh` after loading it.
    pub(crate) async fn table(&self, table: LakeTable) -> Result<Table> {
        let refresh = self.options.metadata_refresh;
        if !refresh.is_zero()
            && let Some((at, t)) = self.tables.lock().expect("table cache lock").get(&table)
            && at.elapsed() < refresh
        {
            return Ok(t.clone());
        }
        let t = self
            .catalog
            .load_table(&table.ident())
            .await
            .map_err(|e| LakeError::catalog(format!("loading {table}"), e))?;
        self.tables
            .lock()
            .expect("table cache lock")
            .insert(table, (Instant::now(), t.clone()));
        Ok(t)
    }

    /// The snapshot `pin` names in `table` — None for the current one, which the query
    /// then reads as usual — and the receipt of what the answer will be read from.
    pub async fn pin(&self, table: LakeTable, pin: &Pin) -> Result<(Option<i64>, Receipt)> {
        let t = self.table(table).await?;
        let snapshot = pin.resolve(table, &t)?;
        let kept = snapshot.and_then(|id| {
            let receipts = self.receipts.lock().expect("receipt cache lock");
            receipts.get(&(table, id)).cloned()
        });
        let receipt = match kept {
            Some(r) => r,
            None => {
                let r = Receipt::of(table, &t, snapshot)?;
                if let Some(id) = snapshot {
                    let mut receipts = self.receipts.lock().expect("receipt cache lock");
                    if receipts.len() >= RECEIPTS_KEPT {
                        receipts.clear();
                    }
                    receipts.insert((table, id), r.clone());
                }
                r
            }
        };
        Ok((
            (*pin != Pin::Current).then_some(snapshot).flatten(),
            receipt,
        ))
    }

    pub(crate) async fn context_for(
        &self,
        table: LakeTable,
        snapshot: Option<i64>,
    ) -> Result<SessionContext> {
        let started = Instant::now();
        let t = self.table(table).await?;
        if let Some(id) = snapshot
            && t.metadata().snapshot_by_id(id).is_none()
        {
            return Err(LakeError::NotFound(format!("snapshot {id} of {table}")));
        }
        let provider = SnapshotTable::new(t, snapshot, self.manifests.clone())
            .await
            .map_err(|e| LakeError::catalog(format!("reading {table}"), e))?;
        let ctx = SessionContext::new_with_config_rt(Self::config(), self.runtime.clone());
        ctx.register_table("t", Arc::new(provider))
            .map_err(|e| LakeError::engine(format!("registering {table}"), e))?;
        tracing::debug!(%table, context_us = started.elapsed().as_micros() as u64, "query context");
        Ok(ctx)
    }

    /// Plans `sql` with its parameters and collects the result, within the limits; `uuid`
    /// columns come back as text.
    pub(crate) async fn run(
        &self,
        kind: &'static str,
        ctx: &SessionContext,
        sql: &str,
        params: Vec<ScalarValue>,
        limit: Option<usize>,
    ) -> Result<Vec<RecordBatch>> {
        self.run_raw(kind, ctx, sql, params, limit)
            .await?
            .iter()
            .map(|b| uuids_as_text(b).map_err(|e| self.classify(e)))
            .collect()
    }

    /// As [`run`](Self::run), with `uuid` columns as Arrow has them (16-byte binary).
    pub(crate) async fn run_raw(
        &self,
        kind: &'static str,
        ctx: &SessionContext,
        sql: &str,
        params: Vec<ScalarValue>,
        limit: Option<usize>,
    ) -> Result<Vec<RecordBatch>> {
        let started = Instant::now();
        let work = async {
            let mut df: DataFrame = ctx.sql_with_options(sql, read_only()).await?;
            if !params.is_empty() {
                df = df.with_param_values(params)?;
            }
            // EXPLAIN [ANALYZE] must stay the root of its plan; its output is small.
            let explain = matches!(
                df.logical_plan(),
                LogicalPlan::Explain(_) | LogicalPlan::Analyze(_)
            );
            if let Some(n) = limit.filter(|_| !explain) {
                df = df.limit(0, Some(n))?;
            }
            let planned = started.elapsed();
            let batches = df.collect().await?;
            tracing::debug!(
                kind,
                plan_us = planned.as_micros() as u64,
                run_us = (started.elapsed() - planned).as_micros() as u64,
                "query"
            );
            Ok(batches)
        };
        let result = match tokio::time::timeout(self.options.timeout, work).await {
            Err(_) => Err(LakeError::Timeout(self.options.timeout)),
            Ok(r) => r.map_err(|e| self.classify(e)),
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(LakeError::Timeout(_)) => "timeout",
            Err(LakeError::MemoryLimit { .. }) => "memory_limit",
            Err(_) => "error",
        };
        metrics::query(kind, outcome, started.elapsed());
        let (bytes, files) = self.file_metadata_cache();
        metrics::file_metadata_cache(bytes, files);
        result
    }

    pub(crate) fn classify(&self, e: DataFusionError) -> LakeError {
        match e.find_root() {
            DataFusionError::ResourcesExhausted(detail) => LakeError::MemoryLimit {
                limit_mb: self.options.memory_limit_mb,
                detail: detail.clone(),
            },
            DataFusionError::Plan(msg) if msg.contains("not supported") => {
                LakeError::NotReadOnly(msg.clone())
            }
            // The storage under the lake failed: not the caller's query, and may pass.
            DataFusionError::IoError(_) | DataFusionError::ObjectStore(_) => {
                LakeError::engine("reading the lake", e)
            }
            other => LakeError::Query(other.to_string()),
        }
    }

    /// The current snapshot of `table` (None while it has none), as the next query sees it.
    pub async fn current_snapshot(&self, table: LakeTable) -> Result<Option<i64>> {
        Ok(self
            .table(table)
            .await?
            .metadata()
            .current_snapshot()
            .map(|s| s.snapshot_id()))
    }
}
