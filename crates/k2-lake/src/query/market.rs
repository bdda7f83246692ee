//! Trades and quotes: one page of a table's rows matching a filter, in the keyset order
//! (timestamp, sequence, message id), newest or oldest first, continued after a key.

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use datafusion::common::ScalarValue;

use super::QueryEngine;
use super::answer::MarketPage;
use super::request::{MarketFilter, RowKey, RowOrder};
use super::sql_text::{Conditions, K_ID, K_SEQ, K_TS, SEQ, default_columns, pick_fields, ts};
use crate::error::{LakeError, Result};
use crate::tables::LakeTable;
use crate::tail::Tail;

/// The parts of a market query's SQL that the lake and the tail share.
pub(super) struct Selection<'a> {
    /// The columns asked for, quoted.
    pub list: &'a str,
    /// The keyset columns appended to them.
    pub keys: &'a str,
    pub order: &'a str,
    pub conditions: &'a Conditions,
}

impl QueryEngine {
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

    pub(super) async fn market_rows(
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
                let selection = Selection {
                    list: &list,
                    keys: &keys,
                    order: &order,
                    conditions: &w,
                };
                self.merge_with_tail(kind, &ctx, table, filter, tail, selection)
                    .await?
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
                .map_err(|e| LakeError::arrow("projecting the answer", e))?;
        }
        Ok(MarketPage { batches, next })
    }
}

/// The key of row `i` of a market answer (its trailing key columns).
fn row_key(b: &RecordBatch, i: usize) -> Result<RowKey> {
    let bad =
        |what: &str| LakeError::CorruptData(format!("market answer lacks its {what} key column"));
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
            .map_err(|e| LakeError::CorruptData(format!("message id {}: {e}", id.value(i))))?,
    })
}
