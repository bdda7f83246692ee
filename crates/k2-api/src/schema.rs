//! The shapes of the API's answers as the OpenAPI document states them. Rows of trades and
//! quotes are written by Arrow's JSON writer, not by these types: they exist to describe
//! exactly what it writes (decimals as exact text, times as RFC 3339, absent values left
//! out), and the conformance suite checks every answer against them.

#![allow(dead_code)]

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use crate::present::{BarRow, PriceLevelRow, SnapshotRow};

/// Exact decimal text: `36.5`, `119323`.
pub const DECIMAL_TEXT: &str = r"^-?[0-9]+(\.[0-9]+)?$";

/// A decimal as answers write it: exact text ([`DECIMAL_TEXT`]), never a JSON number.
pub struct Decimal;

impl utoipa::PartialSchema for Decimal {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(DECIMAL_TEXT))
            .description(Some("Exact decimal text, e.g. `36.5`"))
            .into()
    }
}

impl ToSchema for Decimal {}

/// Defines a market row: the members trades and quotes share, around `$own` members.
macro_rules! market_row {
    ($(#[$doc:meta])* $name:ident, $id:ident, { $($own:tt)* }) => {
        $(#[$doc])*
        #[derive(Serialize, ToSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            #[schema(format = "uuid")]
            pub message_id: Option<String>,
            /// The venue's own id of the event.
            pub $id: Option<String>,
            pub symbol: Option<String>,
            pub exchange: Option<String>,
            pub asset_class: Option<String>,
            #[schema(value_type = Option<String>, format = DateTime)]
            pub timestamp: Option<String>,
            /// The exchange's trading day, in its own time zone.
            #[schema(value_type = Option<String>, format = Date)]
            pub trade_date: Option<String>,
            #[schema(value_type = Option<String>, format = DateTime)]
            pub receive_timestamp: Option<String>,
            $($own)*
            pub currency: Option<String>,
            pub source_sequence: Option<i64>,
            #[schema(value_type = Option<String>, format = DateTime)]
            pub ingestion_timestamp: Option<String>,
            pub platform_sequence: Option<i64>,
            pub vendor_data: Option<BTreeMap<String, Option<String>>>,
        }
    };
}

market_row!(
    /// A trade. Which members are present depends on `fields` (the usual set unless
    /// asked); members without a value are left out. Decimals are exact text.
    TradeRow, trade_id, {
        #[schema(value_type = Option<Decimal>)]
        pub price: Option<String>,
        #[schema(value_type = Option<Decimal>)]
        pub quantity: Option<String>,
        /// `BUY`, `SELL` or `UNKNOWN`.
        pub side: Option<String>,
        pub trade_conditions: Option<Vec<Option<String>>>,
    }
);

market_row!(
    /// A quote (best bid and offer). Which members are present depends on `fields`;
    /// members without a value are left out. Decimals are exact text.
    QuoteRow, quote_id, {
        #[schema(value_type = Option<Decimal>)]
        pub bid_price: Option<String>,
        #[schema(value_type = Option<Decimal>)]
        pub bid_quantity: Option<String>,
        #[schema(value_type = Option<Decimal>)]
        pub ask_price: Option<String>,
        #[schema(value_type = Option<Decimal>)]
        pub ask_quantity: Option<String>,
    }
);

/// A row of a free SQL answer: one member per column of the statement, values as the
/// JSON format shows them.
#[derive(Serialize, ToSchema)]
pub struct SqlRow {}

/// Where a list answer stands.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Pagination {
    pub limit: u64,
    pub returned: u64,
    pub has_more: bool,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// What every data answer says about itself.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    pub request_id: String,
    /// The table snapshot the answer was read from (absent: the table has no snapshot,
    /// or the answer merged the live tail).
    pub snapshot_id: Option<i64>,
    /// The log positions the snapshot covers, `topic/partition` → next offset (present
    /// when the answer was read from one snapshot).
    pub log_offsets: Option<std::collections::BTreeMap<String, u64>>,
    pub elapsed_ms: f64,
    /// Present when the answer was cut: this many rows were kept of more.
    pub truncated_at: Option<u64>,
}

/// One page of rows.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub pagination: Pagination,
    pub meta: Meta,
}

/// One page of rows over the lake and the live tail.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LivePage<T> {
    pub data: Vec<T>,
    pub pagination: Pagination,
    /// Whether this server holds a live tail (`k2 up`); false: the lake alone answered.
    pub live: bool,
    pub meta: Meta,
}

/// One page of trades or quotes, as `data_type` asked.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum MarketPage {
    Trades(Page<TradeRow>),
    Quotes(Page<QuoteRow>),
}

/// An answer that is not paged.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Answer<T> {
    pub data: T,
    pub meta: Meta,
}

/// What a failed item of a batch says.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemError {
    pub code: String,
    pub message: String,
    pub field: Option<String>,
}

/// The answer to one request of a batch, in the order asked.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BarBatchItem {
    pub index: u64,
    pub symbol: String,
    pub timeframe: String,
    pub ok: bool,
    /// The bars, when `ok`.
    pub data: Option<Vec<BarRow>>,
    /// Why not, when not `ok`.
    pub error: Option<ItemError>,
}

/// One symbol over one interval: the metrics asked for.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AggregateRow {
    pub symbol: String,
    #[schema(format = DateTime)]
    pub interval_start: String,
    #[schema(format = DateTime)]
    pub interval_end: String,
    #[schema(value_type = Option<Decimal>)]
    pub open: Option<String>,
    #[schema(value_type = Option<Decimal>)]
    pub high: Option<String>,
    #[schema(value_type = Option<Decimal>)]
    pub low: Option<String>,
    #[schema(value_type = Option<Decimal>)]
    pub close: Option<String>,
    #[schema(value_type = Option<Decimal>)]
    pub volume: Option<String>,
    #[schema(value_type = Option<Decimal>)]
    pub vwap: Option<String>,
    #[schema(value_type = Option<Decimal>)]
    pub twap: Option<String>,
    pub trade_count: Option<i64>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AggregationsAnswer {
    pub data: Vec<AggregateRow>,
    /// Volume per price level and interval, when `volume_profile` was asked for.
    pub volume_profile: Option<Vec<PriceLevelRow>>,
    pub meta: Meta,
}

/// One table's state.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TableStats {
    /// The table's qualified name, e.g. `market_data.trades`.
    pub table: String,
    /// Rows at the current snapshot.
    pub rows: u64,
    pub snapshot_id: Option<i64>,
    pub snapshots: u64,
    #[schema(format = DateTime)]
    pub last_commit: Option<String>,
    /// Seconds since the last commit.
    pub freshness_seconds: Option<f64>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    pub tables: Vec<TableStats>,
    pub uptime_seconds: u64,
}

/// A snapshot, with the log positions its commit recorded.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotEntry {
    #[serde(flatten)]
    pub snapshot: SnapshotRow,
    /// The cumulative next offset of every log partition, as JSON text (K2's commits).
    pub log_offsets: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// Always `ok` while the process answers.
    pub status: String,
    pub version: String,
    pub uptime_seconds: u64,
}

/// One dependency's readiness.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DependencyCheck {
    /// `catalog`, `storage` or `log`.
    pub name: String,
    pub ok: bool,
    pub latency_ms: f64,
    pub detail: String,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Readiness {
    /// `ready`, or `not_ready` when a check failed.
    pub status: String,
    pub checks: Vec<DependencyCheck>,
}

/// What an error says.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    /// Stable and machine-readable: `invalid_parameter`, `missing_key`, `rate_limited`, …
    pub code: String,
    pub message: String,
    /// The input at fault, when one is.
    pub field: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorMeta {
    pub request_id: String,
}

/// The error envelope of every failed request.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorEnvelope {
    pub error: ErrorDetail,
    pub meta: ErrorMeta,
}
