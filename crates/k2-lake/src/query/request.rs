//! What a query asks: trades and quotes filters and their order, bar intervals, and
//! aggregation requests. Every value here is bound as a parameter, never formatted into
//! SQL text.

use crate::error::{LakeError, Result};

/// A trades or quotes query. Every value is bound as a parameter; column names come from
/// the table's own schema (see [`super::columns`]).
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

    pub(super) fn sql_interval(self) -> &'static str {
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
