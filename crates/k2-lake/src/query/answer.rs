//! What a query answers: pages of trades and quotes, SQL results, bars, daily summaries,
//! aggregations and snapshot listings. Prices are in units of 10^-8 throughout.

use arrow::array::RecordBatch;
use chrono::NaiveDate;
use serde::Serialize;

use super::request::RowKey;

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

pub(super) fn div_round_half_even(n: i128, d: i128) -> i128 {
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
    /// `Some(max_rows)` when the volume profile had more price levels and was cut there.
    pub levels_truncated_at: Option<usize>,
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
    /// The tags naming this snapshot (`k2 snapshot tag`), sorted.
    pub tags: Vec<String>,
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
