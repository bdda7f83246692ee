//! The live merge: trades or quotes over the lake's current snapshot and the live tail
//! together, each event once. The tail holds what the feeds delivered and the writer has
//! not committed yet; the two are merged by the same keyset order, and an event both hold
//! is kept once.

use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use k2_model::{MarketRecord, exchange};

use super::QueryEngine;
use super::answer::MarketPage;
use super::market::Selection;
use super::request::{MarketFilter, RowOrder};
use super::sql_text::{K_ID, ts};
use crate::columns::Row;
use crate::error::{LakeError, Result};
use crate::tables::LakeTable;
use crate::tail::Tail;

impl QueryEngine {
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

    /// The first `limit` rows of lake ∪ tail in the answer's order.
    pub(super) async fn merge_with_tail(
        &self,
        kind: &'static str,
        ctx: &SessionContext,
        table: LakeTable,
        filter: &MarketFilter,
        tail: &Tail,
        s: Selection<'_>,
    ) -> Result<Vec<RecordBatch>> {
        let held = tail.select(table, filter);
        // The newest `limit` rows of lake ∪ tail are no older than the tail's own
        // `limit`-th newest: the lake is asked only from there, so Iceberg prunes every
        // older file and the cost no longer grows with the table.
        let mut lake = s.conditions.clone();
        if let Some(floor) = newest_first_floor(&held, filter) {
            lake.add(r#""timestamp" >= ?"#, ts(floor));
        }
        register_tail(ctx, table, held).await?;
        let n = filter.limit;
        let (list, keys, order) = (s.list, s.keys, s.order);
        let (lake_clause, clause) = (lake.clause(), s.conditions.clause());
        let sql = format!(
            "SELECT {list}, {keys} FROM ((SELECT * FROM t {lake_clause} {order} LIMIT {n}) UNION ALL (SELECT * FROM tail {clause} {order} LIMIT {n})) {order}"
        );
        let merged = self
            .run(kind, ctx, &sql, lake.params, Some(n.saturating_mul(2)))
            .await?;
        once_each(merged, n)
    }
}

/// The tail's rows that `filter` may select, as table `tail` beside `t` (same schema).
/// For a first newest-first page whose every condition the tail applies itself (symbol,
/// exchange, time; no price or quantity bounds): the event time of the `limit`-th newest
/// of `held`, when the tail holds that many.
fn newest_first_floor(held: &[MarketRecord], filter: &MarketFilter) -> Option<i64> {
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
        .filter_map(MarketRecord::event_time_us)
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
    held: Vec<MarketRecord>,
) -> Result<()> {
    let schema = ctx
        .table_provider("t")
        .await
        .map_err(|e| LakeError::engine("registering the live tail", e))?
        .schema();
    let rows: Vec<Row> = held
        .into_iter()
        .map(|record| {
            let tz = exchange::time_zone(record.exchange());
            let day = exchange::trading_day(tz, record.event_time_us().unwrap_or(0));
            Row {
                record,
                trade_date: crate::columns::days_since_epoch(day),
                extras: Vec::new(),
            }
        })
        .collect();
    let refs: Vec<&Row> = rows.iter().collect();
    let batch = crate::columns::to_batch(table, &schema, &refs)?;
    let mem = MemTable::try_new(schema, vec![vec![batch]])
        .map_err(|e| LakeError::engine("registering the live tail", e))?;
    ctx.register_table("tail", Arc::new(mem))
        .map_err(|e| LakeError::engine("registering the live tail", e))?;
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
        .ok_or_else(|| LakeError::CorruptData("market answer lacks its message id key".into()))?;
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
