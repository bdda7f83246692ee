//! The query engine: DataFusion over the Iceberg tables.
//!
//! Market queries are fixed SQL texts whose only inputs are `$n` parameters: no user value
//! is ever formatted into SQL. Each runs against one table pinned at a snapshot (the
//! current one, or any earlier one for time travel), under a memory limit and a timeout.
//! Free SQL is read-only (DDL, DML and statements are refused by the planner).
//!
//! A "day" is the exchange's trading day (the `trade_date` column), so daily summaries and
//! 1d bars follow the exchange calendar, not the UTC date.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType as ArrowType, Decimal128Type, Int64Type, Schema, TimestampMicrosecondType,
};
use chrono::NaiveDate;
use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
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
use k2_model::exchange;
use serde::Serialize;

use crate::columns::Row;
use crate::error::{LakeError, Result};
use crate::metrics;
use crate::scan::{ManifestCache, SnapshotTable};
use crate::tables::LakeTable;
use crate::tail::Tail;

/// Limits of the query runtime.
#[derive(Clone, Debug)]
pub struct QueryOptions {
    /// Memory the query operators may reserve, in MiB. Exceeding it fails the query.
    pub memory_limit_mb: u64,
    /// Wall-clock limit per query.
    pub timeout: Duration,
    /// Largest result a free SQL query may return.
    pub max_rows: usize,
    /// How long loaded table metadata is reused before the catalog is asked again. Reuse
    /// keeps Iceberg's manifest cache warm; a commit becomes visible within this time.
    /// Zero asks the catalog on every query.
    pub metadata_refresh: Duration,
    /// Parquet footers (with their page indexes) kept decoded between queries, in MiB;
    /// least recently used first out. Zero keeps none.
    pub file_metadata_cache_mb: u64,
}

impl Default for QueryOptions {
    fn default() -> Self {
        QueryOptions {
            memory_limit_mb: 1024,
            timeout: Duration::from_secs(30),
            max_rows: 100_000,
            metadata_refresh: Duration::from_secs(1),
            file_metadata_cache_mb: 64,
        }
    }
}

/// A trades or quotes query. Every value is bound as a parameter; column names come from
/// the table's own schema (see [`MarketTable::columns`]).
#[derive(Clone, Debug, Default)]
pub struct MarketFilter {
    /// Any of these symbols (empty: all).
    pub symbols: Vec<String>,
    /// Any of these exchanges, case-insensitive (empty: all).
    pub exchanges: Vec<String>,
    /// Inclusive start, UTC microseconds.
    pub start_us: Option<i64>,
    /// Exclusive end, UTC microseconds.
    pub end_us: Option<i64>,
    /// Inclusive price bounds in units of 10^-8 (trades only).
    pub min_price: Option<i64>,
    pub max_price: Option<i64>,
    /// Inclusive quantity bounds in units of 10^-8 (trades only).
    pub min_quantity: Option<i64>,
    pub max_quantity: Option<i64>,
    /// Columns to return (empty: the default set of the table).
    pub fields: Vec<String>,
    /// Newest first (the default) or oldest first.
    pub order: RowOrder,
    /// Continue after this row (keyset pagination): rows strictly beyond it in `order`.
    pub after: Option<RowKey>,
    pub limit: usize,
}

/// The direction of a trades or quotes answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RowOrder {
    #[default]
    NewestFirst,
    OldestFirst,
}

/// The position of one row in the total order of a market table: (timestamp, source
/// sequence, message id). A missing sequence counts as -1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RowKey {
    pub timestamp_us: i64,
    pub sequence: i64,
    pub message_id: uuid::Uuid,
}

/// The answer to a SQL statement.
#[derive(Clone, Debug)]
pub struct SqlAnswer {
    pub batches: Vec<RecordBatch>,
    /// `Some(query.max_rows)` when the result had more rows and was cut there.
    pub truncated_at: Option<usize>,
}

/// One page of a trades or quotes answer.
#[derive(Clone, Debug)]
pub struct MarketPage {
    pub batches: Vec<RecordBatch>,
    /// The last row's key when the page is full (there may be more rows after it).
    pub next: Option<RowKey>,
}

impl MarketPage {
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Bar intervals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarInterval {
    M1,
    M5,
    M15,
    M30,
    H1,
    D1,
}

impl BarInterval {
    pub const ALL: [BarInterval; 6] = [
        BarInterval::M1,
        BarInterval::M5,
        BarInterval::M15,
        BarInterval::M30,
        BarInterval::H1,
        BarInterval::D1,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BarInterval::M1 => "1m",
            BarInterval::M5 => "5m",
            BarInterval::M15 => "15m",
            BarInterval::M30 => "30m",
            BarInterval::H1 => "1h",
            BarInterval::D1 => "1d",
        }
    }

    pub fn parse(text: &str) -> Result<Self> {
        BarInterval::ALL
            .into_iter()
            .find(|i| i.as_str() == text)
            .ok_or_else(|| {
                LakeError::InvalidArgument(format!(
                    "interval '{text}' is not one of 1m, 5m, 15m, 30m, 1h, 1d"
                ))
            })
    }

    /// The length of a sub-day interval (a trading day's length varies: see `day_bounds_us`).
    pub fn micros(self) -> i64 {
        const MINUTE: i64 = 60_000_000;
        match self {
            BarInterval::M1 => MINUTE,
            BarInterval::M5 => 5 * MINUTE,
            BarInterval::M15 => 15 * MINUTE,
            BarInterval::M30 => 30 * MINUTE,
            BarInterval::H1 => 60 * MINUTE,
            BarInterval::D1 => 24 * 60 * MINUTE,
        }
    }

    fn sql_interval(self) -> &'static str {
        match self {
            BarInterval::M1 => "INTERVAL '1 minute'",
            BarInterval::M5 => "INTERVAL '5 minutes'",
            BarInterval::M15 => "INTERVAL '15 minutes'",
            BarInterval::M30 => "INTERVAL '30 minutes'",
            BarInterval::H1 => "INTERVAL '1 hour'",
            BarInterval::D1 => "INTERVAL '1 day'",
        }
    }
}

/// Open, high, low, close, volume and VWAP of a set of trades. Prices are in units of
/// 10^-8; volume and notional are exact wide integers (units of 10^-8 and 10^-16).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Ohlcv {
    pub open: i64,
    pub high: i64,
    pub low: i64,
    pub close: i64,
    pub volume: i128,
    pub trade_count: i64,
    pub notional: i128,
}

impl Ohlcv {
    /// Volume-weighted average price in units of 10^-8, rounded half to even.
    pub fn vwap(&self) -> i64 {
        if self.volume == 0 {
            return 0;
        }
        div_round_half_even(self.notional, self.volume) as i64
    }
}

fn div_round_half_even(n: i128, d: i128) -> i128 {
    let (q, r) = (n / d, n % d);
    let twice = 2 * r.abs();
    match twice.cmp(&d.abs()) {
        std::cmp::Ordering::Less => q,
        std::cmp::Ordering::Greater => q + n.signum() * d.signum(),
        std::cmp::Ordering::Equal => {
            if q % 2 == 0 {
                q
            } else {
                q + n.signum() * d.signum()
            }
        }
    }
}

/// A day of one symbol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DailySummary {
    pub symbol: String,
    pub date: NaiveDate,
    pub ohlcv: Ohlcv,
}

/// One bar; `start_us` is the bar's opening instant (for 1d bars, the trading day's start).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Bar {
    pub start_us: i64,
    pub ohlcv: Ohlcv,
}

/// What `aggregate` summarises.
#[derive(Clone, Debug)]
pub struct AggregateRequest {
    /// Any of these symbols (empty: all).
    pub symbols: Vec<String>,
    pub exchange: Option<String>,
    pub interval: BarInterval,
    /// Inclusive start and exclusive end, UTC microseconds.
    pub start_us: i64,
    pub end_us: i64,
}

/// One symbol over one interval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AggregateRow {
    pub symbol: String,
    pub start_us: i64,
    pub end_us: i64,
    pub ohlcv: Ohlcv,
    /// Time-weighted average price, units of 10^-8.
    pub twap: i64,
}

/// Volume traded at one price in one interval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PriceLevel {
    pub symbol: String,
    pub start_us: i64,
    pub price: i64,
    pub volume: i128,
    pub trade_count: i64,
}

#[derive(Clone, Debug, Default)]
pub struct Aggregates {
    pub rows: Vec<AggregateRow>,
    pub levels: Vec<PriceLevel>,
}

/// One snapshot of a table.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotInfo {
    pub snapshot_id: i64,
    pub parent_id: Option<i64>,
    pub timestamp_ms: i64,
    pub operation: String,
    pub added_records: Option<u64>,
    pub total_records: Option<u64>,
    pub added_files: Option<u64>,
    pub log_offsets: Option<String>,
}

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
}

const ORDER: &str = r#""timestamp" ASC, source_sequence ASC, message_id ASC"#;
/// The sequence as the keyset order sees it.
const SEQ: &str = "coalesce(source_sequence, -1)";
const K_TS: &str = "k2_key_ts";
const K_SEQ: &str = "k2_key_seq";
const K_ID: &str = "k2_key_id";

/// Every column of a table, in schema order (the table's Iceberg schema is the one list).
pub fn columns(table: LakeTable) -> Vec<String> {
    table
        .schema()
        .as_struct()
        .fields()
        .iter()
        .map(|f| f.name.clone())
        .collect()
}

/// The columns a trades or quotes answer shows unless asked for others.
pub fn default_columns(table: LakeTable) -> &'static [&'static str] {
    match table {
        LakeTable::Trades => &[
            "timestamp",
            "symbol",
            "exchange",
            "price",
            "quantity",
            "side",
            "trade_conditions",
            "source_sequence",
            "trade_id",
            "message_id",
        ],
        LakeTable::Quotes => &[
            "timestamp",
            "symbol",
            "exchange",
            "bid_price",
            "bid_quantity",
            "ask_price",
            "ask_quantity",
            "source_sequence",
            "quote_id",
            "message_id",
        ],
        LakeTable::Companies => &[],
    }
}

/// The columns `requested` of `table`, each once and in the order asked (`default` when
/// none are); an unknown name is refused with the list of the table's columns.
pub(crate) fn pick_fields(
    table: LakeTable,
    requested: &[String],
    default: &[&str],
) -> Result<Vec<String>> {
    if requested.is_empty() {
        return Ok(default.iter().map(|c| c.to_string()).collect());
    }
    let all = columns(table);
    let mut chosen: Vec<String> = Vec::with_capacity(requested.len());
    for f in requested {
        if !all.contains(f) {
            return Err(LakeError::InvalidArgument(format!(
                "unknown field '{f}' of {table}; fields are: {}",
                all.join(", ")
            )));
        }
        if !chosen.contains(f) {
            chosen.push(f.clone());
        }
    }
    Ok(chosen)
}

/// The key of row `i` of a market answer (its trailing key columns).
fn row_key(b: &RecordBatch, i: usize) -> Result<RowKey> {
    let bad = |what: &str| LakeError::Query(format!("market answer lacks its {what} key column"));
    let ts = b
        .column_by_name(K_TS)
        .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
        .ok_or_else(|| bad("timestamp"))?;
    let seq = b
        .column_by_name(K_SEQ)
        .and_then(|c| c.as_primitive_opt::<Int64Type>())
        .ok_or_else(|| bad("sequence"))?;
    let id = b
        .column_by_name(K_ID)
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| bad("message id"))?;
    Ok(RowKey {
        timestamp_us: ts.value(i),
        sequence: seq.value(i),
        message_id: id
            .value(i)
            .parse()
            .map_err(|e| LakeError::Query(format!("message id {}: {e}", id.value(i))))?,
    })
}

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
            .map_err(|e| LakeError::Query(e.to_string()))?;
        Ok(QueryEngine {
            catalog,
            runtime,
            footers,
            options,
            tables: Default::default(),
            manifests: Default::default(),
        })
    }

    /// The decoded Parquet footers kept between queries: (bytes, files).
    pub fn file_metadata_cache(&self) -> (usize, usize) {
        (self.footers.memory_used(), self.footers.len())
    }

    pub fn options(&self) -> &QueryOptions {
        &self.options
    }

    fn config() -> SessionConfig {
        SessionConfig::new()
            .with_default_catalog_and_schema("k2", "market_data")
            .with_information_schema(true)
            .with_target_partitions(2)
    }

    /// A context holding `table` as `t`, at `snapshot` or the current snapshot.
    /// The table's metadata, reused for `metadata_refresh` after loading it.
    async fn table(&self, table: LakeTable) -> Result<Table> {
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
            .map_err(|e| LakeError::Query(e.to_string()))?;
        tracing::debug!(%table, context_us = started.elapsed().as_micros() as u64, "query context");
        Ok(ctx)
    }

    /// Plans `sql` with its parameters and collects the result, within the limits; `uuid`
    /// columns come back as text.
    async fn run(
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
            let options = SQLOptions::new()
                .with_allow_ddl(false)
                .with_allow_dml(false)
                .with_allow_statements(false);
            let mut df: DataFrame = ctx.sql_with_options(sql, options).await?;
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

    /// Trades matching `filter`.
    pub async fn trades(&self, filter: &MarketFilter, snapshot: Option<i64>) -> Result<MarketPage> {
        self.market_rows("trades", LakeTable::Trades, filter, snapshot, None)
            .await
    }

    /// Quotes matching `filter`.
    pub async fn quotes(&self, filter: &MarketFilter, snapshot: Option<i64>) -> Result<MarketPage> {
        self.market_rows("quotes", LakeTable::Quotes, filter, snapshot, None)
            .await
    }

    /// Trades or quotes matching `filter` over the lake's current snapshot and the live
    /// tail together: each side's first `limit` rows in the answer's order, merged by the
    /// keyset order, an event both hold once, the limit applied after the merge.
    pub async fn market_with_tail(
        &self,
        table: LakeTable,
        filter: &MarketFilter,
        tail: &Tail,
    ) -> Result<MarketPage> {
        let kind = match table {
            LakeTable::Quotes => "quotes_recent",
            _ => "trades_recent",
        };
        self.market_rows(kind, table, filter, None, Some(tail))
            .await
    }

    async fn market_rows(
        &self,
        kind: &'static str,
        table: LakeTable,
        filter: &MarketFilter,
        snapshot: Option<i64>,
        tail: Option<&Tail>,
    ) -> Result<MarketPage> {
        let fields = pick_fields(table, &filter.fields, default_columns(table))?;
        let mut w = Conditions::default();
        w.any_of("symbol", filter.symbols.iter().map(|s| s.as_str().into()));
        w.any_of(
            "exchange",
            filter
                .exchanges
                .iter()
                .map(|x| x.to_ascii_uppercase().as_str().into()),
        );
        if let Some(s) = filter.start_us {
            w.add(r#""timestamp" >= ?"#, ts(s));
        }
        if let Some(e) = filter.end_us {
            w.add(r#""timestamp" < ?"#, ts(e));
        }
        let bounds = [
            ("price >= ?", filter.min_price),
            ("price <= ?", filter.max_price),
            ("quantity >= ?", filter.min_quantity),
            ("quantity <= ?", filter.max_quantity),
        ];
        for (cond, value) in bounds {
            if let Some(v) = value {
                if table != LakeTable::Trades {
                    return Err(LakeError::InvalidArgument(
                        "price and quantity bounds apply to trades only".into(),
                    ));
                }
                w.add(cond, ScalarValue::Decimal128(Some(v as i128), 18, 8));
            }
        }
        let (cmp, dir) = match filter.order {
            RowOrder::NewestFirst => ("<", "DESC"),
            RowOrder::OldestFirst => (">", "ASC"),
        };
        if let Some(k) = &filter.after {
            // (timestamp, sequence, id) strictly beyond the key, as one row comparison.
            let n = w.params.len();
            w.params.extend([
                ts(k.timestamp_us),
                ScalarValue::Int64(Some(k.sequence)),
                ScalarValue::FixedSizeBinary(16, Some(k.message_id.as_bytes().to_vec())),
            ]);
            let (a, b, c) = (n + 1, n + 2, n + 3);
            w.conds.push(format!(
                r#"("timestamp" {cmp} ${a} OR ("timestamp" = ${a} AND ({SEQ} {cmp} ${b} OR ({SEQ} = ${b} AND message_id {cmp} ${c}))))"#
            ));
        }
        let ctx = self.context_for(table, snapshot).await?;
        let list = fields
            .iter()
            .map(|f| format!(r#""{f}""#))
            .collect::<Vec<_>>()
            .join(", ");
        let order = format!(r#"ORDER BY "timestamp" {dir}, {SEQ} {dir}, message_id {dir}"#);
        let keys = format!(r#""timestamp" AS {K_TS}, {SEQ} AS {K_SEQ}, message_id AS {K_ID}"#);
        let clause = w.clause();
        let mut batches = match tail {
            None => {
                let sql = format!("SELECT {list}, {keys} FROM t {clause} {order}");
                self.run(kind, &ctx, &sql, w.params, Some(filter.limit))
                    .await?
            }
            Some(tail) => {
                let held = tail.select(table, filter);
                // The newest `limit` rows of lake ∪ tail are no older than the tail's own
                // `limit`-th newest: the lake is asked only from there, so Iceberg prunes
                // every older file and the cost no longer grows with the table.
                let mut lake = w.clone();
                if let Some(floor) = newest_first_floor(&held, filter) {
                    lake.add(r#""timestamp" >= ?"#, ts(floor));
                }
                register_tail(&ctx, table, held).await?;
                let n = filter.limit;
                let lake_clause = lake.clause();
                let sql = format!(
                    "SELECT {list}, {keys} FROM ((SELECT * FROM t {lake_clause} {order} LIMIT {n}) UNION ALL (SELECT * FROM tail {clause} {order} LIMIT {n})) {order}"
                );
                let merged = self
                    .run(kind, &ctx, &sql, lake.params, Some(n.saturating_mul(2)))
                    .await?;
                once_each(merged, n)?
            }
        };
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let next = if rows >= filter.limit && rows > 0 {
            let last = batches.iter().rev().find(|b| b.num_rows() > 0);
            last.map(|b| row_key(b, b.num_rows() - 1)).transpose()?
        } else {
            None
        };
        for b in &mut batches {
            let keep: Vec<usize> = (0..fields.len()).collect();
            *b = b
                .project(&keep)
                .map_err(|e| LakeError::Query(e.to_string()))?;
        }
        Ok(MarketPage { batches, next })
    }

    /// Open/high/low/close/volume/VWAP of one symbol over one trading day; `None` when it
    /// has no trades that day.
    pub async fn daily_summary(
        &self,
        symbol: &str,
        date: NaiveDate,
        exchange: Option<&str>,
        snapshot: Option<i64>,
    ) -> Result<Option<DailySummary>> {
        let (lo, hi) = day_window(date, exchange);
        let mut params = vec![
            ScalarValue::from(symbol),
            ScalarValue::Date32(Some(crate::columns::days_since_epoch(date))),
            ts(lo),
            ts(hi),
        ];
        let mut sql = format!(
            r#"SELECT {aggs} FROM t WHERE symbol = $1 AND trade_date = $2 AND "timestamp" >= $3 AND "timestamp" < $4"#,
            aggs = ohlcv_aggregates()
        );
        if let Some(x) = exchange {
            params.push(ScalarValue::from(x.to_ascii_uppercase().as_str()));
            sql.push_str(" AND exchange = $5");
        }
        let ctx = self.context_for(LakeTable::Trades, snapshot).await?;
        let batches = self.run("summary", &ctx, &sql, params, None).await?;
        let mut rows = read_ohlcv(&batches, 0)?;
        Ok(rows
            .pop()
            .filter(|(_, o)| o.trade_count > 0)
            .map(|(_, ohlcv)| DailySummary {
                symbol: symbol.to_string(),
                date,
                ohlcv,
            }))
    }

    /// Bars of one symbol over the trading days `[from, to]`.
    pub async fn ohlcv(
        &self,
        symbol: &str,
        interval: BarInterval,
        from: NaiveDate,
        to: NaiveDate,
        exchange: Option<&str>,
        snapshot: Option<i64>,
    ) -> Result<Vec<Bar>> {
        if to < from {
            return Err(LakeError::InvalidArgument(format!(
                "range ends ({to}) before it starts ({from})"
            )));
        }
        let (lo, _) = day_window(from, exchange);
        let (_, hi) = day_window(to, exchange);
        let mut params = vec![
            ScalarValue::from(symbol),
            ScalarValue::Date32(Some(crate::columns::days_since_epoch(from))),
            ScalarValue::Date32(Some(crate::columns::days_since_epoch(to))),
            ts(lo),
            ts(hi),
        ];
        let tz = exchange.map_or(chrono_tz::UTC, exchange::time_zone);
        // Sub-day bars are aligned to the exchange's local midnight of the first day.
        let origin = exchange::day_bounds_us(tz, from).0;
        let bucket = match interval {
            BarInterval::D1 => "trade_date".to_string(),
            other => {
                params.push(ts(origin));
                format!(r#"date_bin({}, "timestamp", $6)"#, other.sql_interval())
            }
        };
        let mut sql = format!(
            r#"SELECT {bucket} AS bucket, {aggs} FROM t WHERE symbol = $1 AND trade_date >= $2 AND trade_date <= $3 AND "timestamp" >= $4 AND "timestamp" < $5"#,
            aggs = ohlcv_aggregates()
        );
        if let Some(x) = exchange {
            params.push(ScalarValue::from(x.to_ascii_uppercase().as_str()));
            sql.push_str(&format!(" AND exchange = ${}", params.len()));
        }
        sql.push_str(" GROUP BY 1 ORDER BY 1");
        let ctx = self.context_for(LakeTable::Trades, snapshot).await?;
        let batches = self.run("ohlcv", &ctx, &sql, params, None).await?;
        let rows = read_ohlcv(&batches, 1)?;
        let mut bars = Vec::with_capacity(rows.len());
        for (bucket, ohlcv) in rows {
            let start_us = match bucket {
                Bucket::Day(days) => exchange::day_bounds_us(tz, day_from_epoch(days)?).0,
                Bucket::Instant(us) => us,
                Bucket::None => continue,
            };
            bars.push(Bar { start_us, ohlcv });
        }
        Ok(bars)
    }

    /// Per symbol and interval: OHLCV, VWAP and TWAP over `[start_us, end_us)`; and, when
    /// `profile` is set, the volume traded at each price level (at most
    /// `QueryOptions::max_rows` levels in all).
    ///
    /// TWAP treats the last trade's price as holding until the next trade of the same
    /// interval and averages that step function from the interval's first trade to its last;
    /// an interval whose trades share one instant has their plain mean.
    pub async fn aggregate(
        &self,
        request: &AggregateRequest,
        profile: bool,
        snapshot: Option<i64>,
    ) -> Result<Aggregates> {
        let (lo, hi) = (request.start_us, request.end_us);
        if hi <= lo {
            return Err(LakeError::InvalidArgument(
                "the time range is empty (end is not after start)".into(),
            ));
        }
        let exchange = request.exchange.as_deref();
        let tz = exchange.map_or(chrono_tz::UTC, exchange::time_zone);
        let mut w = Conditions::default();
        w.any_of("symbol", request.symbols.iter().map(|s| s.as_str().into()));
        w.add(r#""timestamp" >= ?"#, ts(lo));
        w.add(r#""timestamp" < ?"#, ts(hi));
        if let Some(x) = exchange {
            w.add("exchange = ?", x.to_ascii_uppercase().as_str().into());
        }
        let bucket = match request.interval {
            BarInterval::D1 => "trade_date".to_string(),
            other => {
                let first_day = chrono::DateTime::from_timestamp_micros(lo)
                    .map(|t| t.with_timezone(&tz).date_naive())
                    .ok_or_else(|| LakeError::InvalidArgument(format!("start {lo} µs")))?;
                w.params.push(ts(exchange::day_bounds_us(tz, first_day).0));
                format!(
                    r#"date_bin({}, "timestamp", ${})"#,
                    other.sql_interval(),
                    w.params.len()
                )
            }
        };
        let clause = w.clause();
        let sql = format!(
            r#"WITH x AS (SELECT symbol, {bucket} AS bucket, price, quantity, "timestamp", source_sequence, message_id, arrow_cast("timestamp", 'Int64') AS us FROM t {clause}),
            y AS (SELECT *, lead(us) OVER (PARTITION BY symbol, bucket ORDER BY {ORDER}) - us AS held FROM x)
            SELECT symbol, bucket, {aggs},
              sum(CAST(price AS DECIMAL(38,8)) * CAST(coalesce(held, 0) AS DECIMAL(38,0))) AS twap_num,
              sum(coalesce(held, 0)) AS twap_den,
              sum(CAST(price AS DECIMAL(38,8))) AS price_sum
            FROM y GROUP BY symbol, bucket ORDER BY symbol, bucket"#,
            aggs = ohlcv_aggregates()
        );
        let ctx = self.context_for(LakeTable::Trades, snapshot).await?;
        let batches = self
            .run("aggregate", &ctx, &sql, w.params.clone(), None)
            .await?;
        let mut rows = Vec::new();
        for b in &batches {
            let symbols = b.column(0).as_string::<i32>();
            let extra = |i: usize| {
                b.column(i)
                    .as_primitive_opt::<Decimal128Type>()
                    .map(|c| (c, decimal_scale(c.data_type())))
            };
            let (num, num_scale) = extra(9).ok_or_else(|| LakeError::Query("twap".into()))?;
            let den = b.column(10).as_primitive::<Int64Type>();
            let (sum, sum_scale) = extra(11).ok_or_else(|| LakeError::Query("mean".into()))?;
            let parsed = read_ohlcv(std::slice::from_ref(b), 2)?;
            for (r, (bucket, ohlcv)) in parsed.into_iter().enumerate() {
                let (start_us, end_us) = bucket_bounds(bucket, request.interval, tz)?;
                let twap = if den.value(r) > 0 {
                    div_round_half_even(rescale(num.value(r), num_scale, 8), den.value(r) as i128)
                } else {
                    div_round_half_even(
                        rescale(sum.value(r), sum_scale, 8),
                        ohlcv.trade_count.max(1) as i128,
                    )
                } as i64;
                rows.push(AggregateRow {
                    symbol: symbols.value(r).to_string(),
                    start_us,
                    end_us,
                    ohlcv,
                    twap,
                });
            }
        }
        let mut levels = Vec::new();
        if profile {
            let limit = self.options.max_rows;
            let sql = format!(
                r#"SELECT symbol, {bucket} AS bucket, price, sum(quantity) AS volume, count(*) AS trade_count FROM t {clause} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"#
            );
            let batches = self
                .run("volume_profile", &ctx, &sql, w.params, Some(limit + 1))
                .await?;
            for b in &batches {
                let symbols = b.column(0).as_string::<i32>();
                let price = b.column(2).as_primitive::<Decimal128Type>();
                let volume = b.column(3).as_primitive::<Decimal128Type>();
                let vol_scale = decimal_scale(volume.data_type());
                let count = b.column(4).as_primitive::<Int64Type>();
                for r in 0..b.num_rows() {
                    let bucket = bucket_at(b.column(1), r)?;
                    levels.push(PriceLevel {
                        symbol: symbols.value(r).to_string(),
                        start_us: bucket_bounds(bucket, request.interval, tz)?.0,
                        price: price.value(r) as i64,
                        volume: rescale(volume.value(r), vol_scale, 8),
                        trade_count: count.value(r),
                    });
                }
            }
            if levels.len() > limit {
                return Err(LakeError::InvalidArgument(format!(
                    "the volume profile has more than {limit} price levels; narrow the symbols, the time range or use a longer interval"
                )));
            }
        }
        Ok(Aggregates { rows, levels })
    }

    /// Distinct symbols with trades or quotes, optionally on one exchange.
    pub async fn symbols(&self, exchange: Option<&str>) -> Result<Vec<String>> {
        let mut out = std::collections::BTreeSet::new();
        for table in [LakeTable::Trades, LakeTable::Quotes] {
            let (sql, params) = match exchange {
                Some(x) => (
                    "SELECT DISTINCT symbol FROM t WHERE exchange = $1",
                    vec![ScalarValue::from(x.to_ascii_uppercase().as_str())],
                ),
                None => ("SELECT DISTINCT symbol FROM t", vec![]),
            };
            let ctx = self.context_for(table, None).await?;
            for batch in self.run("symbols", &ctx, sql, params, None).await? {
                let col = batch.column(0).as_string::<i32>();
                out.extend(col.iter().flatten().map(str::to_string));
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Snapshots of a table, oldest first.
    pub async fn snapshots(&self, table: LakeTable) -> Result<Vec<SnapshotInfo>> {
        let t = self
            .catalog
            .load_table(&table.ident())
            .await
            .map_err(|e| LakeError::catalog(format!("loading {table}"), e))?;
        let mut out: Vec<SnapshotInfo> = t
            .metadata()
            .snapshots()
            .map(|s| {
                let props = &s.summary().additional_properties;
                let num = |k: &str| props.get(k).and_then(|v| v.parse().ok());
                SnapshotInfo {
                    snapshot_id: s.snapshot_id(),
                    parent_id: s.parent_snapshot_id(),
                    timestamp_ms: s.timestamp_ms(),
                    operation: format!("{:?}", s.summary().operation).to_lowercase(),
                    added_records: num("added-records"),
                    total_records: num("total-records"),
                    added_files: num("added-data-files"),
                    log_offsets: props.get(crate::writer::OFFSETS_PROPERTY).cloned(),
                }
            })
            .collect();
        out.sort_by_key(|s| (s.timestamp_ms, s.snapshot_id));
        Ok(out)
    }

    /// Row count of a table (at a snapshot, or now).
    pub async fn count(&self, table: LakeTable, snapshot: Option<i64>) -> Result<u64> {
        let ctx = self.context_for(table, snapshot).await?;
        let batches = self
            .run("count", &ctx, "SELECT count(*) FROM t", vec![], None)
            .await?;
        Ok(batches.first().map_or(0, |b| {
            b.column(0).as_primitive::<Int64Type>().value(0) as u64
        }))
    }

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
                    .map_err(|e| LakeError::Query(e.to_string()))?;
            }
            let provider =
                SnapshotTable::new(self.table(table).await?, None, self.manifests.clone())
                    .await
                    .map_err(|e| LakeError::catalog(format!("reading {table}"), e))?;
            catalog
                .schema(&namespace)
                .expect("registered above")
                .register_table(ident.name().to_string(), Arc::new(provider))
                .map_err(|e| LakeError::Query(e.to_string()))?;
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

/// The tail's rows that `filter` may select, as table `tail` beside `t` (same schema).
/// For a first newest-first page whose every condition the tail applies itself (symbol,
/// exchange, time; no price or quantity bounds): the event time of the `limit`-th newest
/// of `held`, when the tail holds that many.
fn newest_first_floor(held: &[k2_model::MarketRecord], filter: &MarketFilter) -> Option<i64> {
    let bounded = [
        filter.min_price,
        filter.max_price,
        filter.min_quantity,
        filter.max_quantity,
    ]
    .iter()
    .any(Option::is_some);
    if filter.order != RowOrder::NewestFirst
        || filter.after.is_some()
        || bounded
        || filter.limit == 0
        || held.len() < filter.limit
    {
        return None;
    }
    let mut times: Vec<i64> = held
        .iter()
        .filter_map(k2_model::MarketRecord::event_time_us)
        .collect();
    if times.len() < filter.limit {
        return None;
    }
    let (_, floor, _) = times.select_nth_unstable_by(filter.limit - 1, |a, b| b.cmp(a));
    Some(*floor)
}

async fn register_tail(
    ctx: &SessionContext,
    table: LakeTable,
    held: Vec<k2_model::MarketRecord>,
) -> Result<()> {
    let schema = ctx
        .table_provider("t")
        .await
        .map_err(|e| LakeError::Query(e.to_string()))?
        .schema();
    let rows: Vec<Row> = held
        .into_iter()
        .map(|record| {
            let tz = exchange::time_zone(record.exchange());
            let day = exchange::trading_day(tz, record.event_time_us().unwrap_or(0));
            Row {
                record,
                trade_date: crate::columns::days_since_epoch(day),
            }
        })
        .collect();
    let refs: Vec<&Row> = rows.iter().collect();
    let batch = crate::columns::to_batch(table, &schema, &refs)?;
    let mem = MemTable::try_new(schema, vec![vec![batch]])
        .map_err(|e| LakeError::Query(e.to_string()))?;
    ctx.register_table("tail", Arc::new(mem))
        .map_err(|e| LakeError::Query(e.to_string()))?;
    Ok(())
}

/// Rows in keyset order with an event held by both the lake and the tail twice in a row
/// (same key): each once, the first `limit`.
fn once_each(batches: Vec<RecordBatch>, limit: usize) -> Result<Vec<RecordBatch>> {
    let Some(first) = batches.first() else {
        return Ok(batches);
    };
    let all = arrow::compute::concat_batches(&first.schema(), &batches)
        .map_err(|e| LakeError::arrow("merging lake and tail", e))?;
    let ids = all
        .column_by_name(K_ID)
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| LakeError::Query("market answer lacks its message id key".into()))?;
    let mut kept = 0;
    let keep: arrow::array::BooleanArray = (0..all.num_rows())
        .map(|i| {
            let new = i == 0 || ids.value(i) != ids.value(i - 1);
            let take = new && kept < limit;
            kept += usize::from(take);
            Some(take)
        })
        .collect();
    let once = arrow::compute::filter_record_batch(&all, &keep)
        .map_err(|e| LakeError::arrow("merging lake and tail", e))?;
    Ok(vec![once])
}

/// `len` 16-byte ids (None: null) as lower-case hyphenated uuid text.
pub(crate) fn uuid_text<'a>(
    len: usize,
    ids: impl Iterator<Item = Option<&'a [u8]>>,
) -> arrow::array::StringArray {
    let mut text = arrow::array::StringBuilder::with_capacity(len, len * 36);
    for id in ids {
        match id {
            Some(id) => {
                let bytes: [u8; 16] = id.try_into().expect("16 bytes");
                let id = k2_model::MessageId::from_u128(u128::from_be_bytes(bytes));
                text.append_value(std::str::from_utf8(&id.uuid_text()).expect("hex is ASCII"));
            }
            None => text.append_null(),
        }
    }
    text.finish()
}

/// Results show Iceberg `uuid` columns (16-byte fixed binary in Arrow) in their text form.
pub(crate) fn uuids_as_text(
    batch: &RecordBatch,
) -> std::result::Result<RecordBatch, DataFusionError> {
    let schema = batch.schema();
    if !schema
        .fields()
        .iter()
        .any(|f| f.data_type() == &ArrowType::FixedSizeBinary(16))
    {
        return Ok(batch.clone());
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if field.data_type() == &ArrowType::FixedSizeBinary(16) {
            let ids = column.as_fixed_size_binary();
            let text = uuid_text(
                ids.len(),
                (0..ids.len()).map(|i| ids.is_valid(i).then(|| ids.value(i))),
            );
            fields.push(Arc::new(
                field.as_ref().clone().with_data_type(ArrowType::Utf8),
            ));
            columns.push(Arc::new(text) as ArrayRef);
        } else {
            fields.push(field.clone());
            columns.push(column.clone());
        }
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())),
        columns,
    )?)
}

/// A WHERE clause built from fixed condition texts, each value bound as a `$n` parameter.
#[derive(Clone, Default)]
pub(crate) struct Conditions {
    pub(crate) conds: Vec<String>,
    pub(crate) params: Vec<ScalarValue>,
}

impl Conditions {
    /// `cond` holds one `?`, replaced by the next parameter's placeholder.
    pub(crate) fn add(&mut self, cond: &str, value: ScalarValue) {
        self.params.push(value);
        self.conds
            .push(cond.replace('?', &format!("${}", self.params.len())));
    }

    /// `column` equal to any of `values` (no condition when there are none).
    pub(crate) fn any_of(&mut self, column: &str, values: impl Iterator<Item = ScalarValue>) {
        let mut marks = Vec::new();
        for v in values {
            self.params.push(v);
            marks.push(format!("${}", self.params.len()));
        }
        match marks.len() {
            0 => {}
            1 => self.conds.push(format!("{column} = {}", marks[0])),
            _ => self
                .conds
                .push(format!("{column} IN ({})", marks.join(", "))),
        }
    }

    pub(crate) fn clause(&self) -> String {
        if self.conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.conds.join(" AND "))
        }
    }
}

pub(crate) fn ts(us: i64) -> ScalarValue {
    ScalarValue::TimestampMicrosecond(Some(us), Some("+00:00".into()))
}

/// UTC window that surely holds a trading day: the exchange's day bounds, or, for an
/// unknown exchange, every time zone's version of that date.
fn day_window(date: NaiveDate, exchange: Option<&str>) -> (i64, i64) {
    match exchange {
        Some(x) => exchange::day_bounds_us(exchange::time_zone(x), date),
        None => {
            let (start, end) = exchange::day_bounds_us(chrono_tz::UTC, date);
            (start - 14 * 3_600_000_000, end + 12 * 3_600_000_000)
        }
    }
}

fn ohlcv_aggregates() -> String {
    format!(
        "first_value(price ORDER BY {ORDER}) AS open, max(price) AS high, min(price) AS low, \
         last_value(price ORDER BY {ORDER}) AS close, sum(quantity) AS volume, count(*) AS trade_count, \
         sum(CAST(price AS DECIMAL(38,8)) * CAST(quantity AS DECIMAL(38,8))) AS notional"
    )
}

#[derive(Clone, Copy)]
enum Bucket {
    None,
    Day(i32),
    Instant(i64),
}

/// Reads rows of (optional bucket, open, high, low, close, volume, trade_count, notional).
fn read_ohlcv(batches: &[RecordBatch], first: usize) -> Result<Vec<(Bucket, Ohlcv)>> {
    let mut out = Vec::new();
    for b in batches {
        let dec = |i: usize| {
            b.column(first + i)
                .as_primitive_opt::<Decimal128Type>()
                .ok_or_else(|| LakeError::Query(format!("column {i} is not decimal")))
        };
        let (open, high, low, close, volume) = (dec(0)?, dec(1)?, dec(2)?, dec(3)?, dec(4)?);
        let count = b.column(first + 5).as_primitive::<Int64Type>();
        let notional = dec(6)?;
        let vol_scale = decimal_scale(volume.data_type());
        let notional_scale = decimal_scale(notional.data_type());
        for r in 0..b.num_rows() {
            let bucket = if first == 0 {
                Bucket::None
            } else {
                bucket_at(b.column(first - 1), r)?
            };
            if open.is_null(r) {
                out.push((
                    bucket,
                    Ohlcv {
                        open: 0,
                        high: 0,
                        low: 0,
                        close: 0,
                        volume: 0,
                        trade_count: 0,
                        notional: 0,
                    },
                ));
                continue;
            }
            out.push((
                bucket,
                Ohlcv {
                    open: open.value(r) as i64,
                    high: high.value(r) as i64,
                    low: low.value(r) as i64,
                    close: close.value(r) as i64,
                    volume: rescale(volume.value(r), vol_scale, 8),
                    trade_count: count.value(r),
                    notional: rescale(notional.value(r), notional_scale, 16),
                },
            ));
        }
    }
    Ok(out)
}

fn bucket_at(col: &ArrayRef, r: usize) -> Result<Bucket> {
    if let Some(d) = col.as_primitive_opt::<arrow::datatypes::Date32Type>() {
        Ok(Bucket::Day(d.value(r)))
    } else if let Some(t) = col.as_primitive_opt::<TimestampMicrosecondType>() {
        Ok(Bucket::Instant(t.value(r)))
    } else if let Some(t) = col.as_primitive_opt::<arrow::datatypes::TimestampNanosecondType>() {
        Ok(Bucket::Instant(t.value(r).div_euclid(1000)))
    } else {
        Err(LakeError::Query(format!(
            "unexpected bucket type {}",
            col.data_type()
        )))
    }
}

/// The instants an interval's bucket covers: `[start, end)`.
fn bucket_bounds(bucket: Bucket, interval: BarInterval, tz: chrono_tz::Tz) -> Result<(i64, i64)> {
    match bucket {
        Bucket::Day(days) => {
            let date = day_from_epoch(days)?;
            Ok(exchange::day_bounds_us(tz, date))
        }
        Bucket::Instant(us) => Ok((us, us + interval.micros())),
        Bucket::None => Err(LakeError::Query(
            "a grouped answer without its bucket".into(),
        )),
    }
}

fn day_from_epoch(days: i32) -> Result<NaiveDate> {
    NaiveDate::from_num_days_from_ce_opt(days + 719_163)
        .ok_or_else(|| LakeError::Query(format!("bad trade_date {days}")))
}

fn decimal_scale(t: &arrow::datatypes::DataType) -> i8 {
    match t {
        arrow::datatypes::DataType::Decimal128(_, s) => *s,
        _ => 0,
    }
}

fn rescale(v: i128, from: i8, to: i8) -> i128 {
    match from.cmp(&to) {
        std::cmp::Ordering::Equal => v,
        std::cmp::Ordering::Less => v * 10i128.pow((to - from) as u32),
        std::cmp::Ordering::Greater => v / 10i128.pow((from - to) as u32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vwap_rounds_half_to_even() {
        assert_eq!(div_round_half_even(5, 2), 2);
        assert_eq!(div_round_half_even(7, 2), 4);
        assert_eq!(div_round_half_even(-5, 2), -2);
        assert_eq!(div_round_half_even(10, 3), 3);
        assert_eq!(div_round_half_even(11, 3), 4);
    }
}
