//! Bars and aggregations of trades: daily summaries, OHLCV bars over trading days, and
//! per-interval OHLCV, VWAP, TWAP and volume profiles. Sums are exact: prices times
//! quantities accumulate in 38-digit decimals and come back as wide integers.

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{Decimal128Type, Int64Type, TimestampMicrosecondType};
use chrono::NaiveDate;
use datafusion::common::ScalarValue;
use k2_model::exchange;

use super::QueryEngine;
use super::answer::{
    AggregateRow, Aggregates, Bar, DailySummary, Ohlcv, PriceLevel, div_round_half_even,
};
use super::request::{AggregateRequest, BarInterval};
use super::sql_text::{Conditions, ORDER, ts};
use crate::error::{LakeError, Result};
use crate::tables::LakeTable;

impl QueryEngine {
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
        // Trading days `[from, to]`: none when the range ends before it starts.
        if to < from {
            return Ok(Vec::new());
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
        // `[lo, hi)` holds nothing when it ends before it starts.
        if hi <= lo {
            return Ok(Aggregates::default());
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
            let (num, num_scale) = extra(9).ok_or_else(|| {
                LakeError::CorruptData("the TWAP sum of an aggregation is not decimal".into())
            })?;
            let den = b.column(10).as_primitive::<Int64Type>();
            let (sum, sum_scale) = extra(11).ok_or_else(|| {
                LakeError::CorruptData("the price sum of an aggregation is not decimal".into())
            })?;
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
        let (mut levels, mut levels_truncated_at) = (Vec::new(), None);
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
            // Like a SQL answer: cut at `max_rows`, and saying so.
            if levels.len() > limit {
                levels.truncate(limit);
                levels_truncated_at = Some(limit);
            }
        }
        Ok(Aggregates {
            rows,
            levels,
            levels_truncated_at,
        })
    }
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
                .ok_or_else(|| {
                    LakeError::CorruptData(format!("column {i} of an OHLCV answer is not decimal"))
                })
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
        Err(LakeError::CorruptData(format!(
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
        Bucket::None => Err(LakeError::CorruptData(
            "a grouped answer without its bucket".into(),
        )),
    }
}

fn day_from_epoch(days: i32) -> Result<NaiveDate> {
    NaiveDate::from_num_days_from_ce_opt(days + 719_163)
        .ok_or_else(|| LakeError::CorruptData(format!("bad trade_date {days}")))
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
