//! The records K2 carries: trades, quotes and reference data.
//!
//! Timestamps are UTC microseconds since the Unix epoch (`*_us` in Rust, `timestamp-micros`
//! in Avro, `timestamptz` in Iceberg). Every market record keeps three clocks: the
//! exchange's (`timestamp`), when K2 received it (`receive_timestamp`) and when K2 appended
//! it to its log (`ingestion_timestamp`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::decimal::Decimal8;
use crate::enums::{AssetClass, DataType, TradeSide};
use crate::ids::MessageId;

/// Free-form source fields kept verbatim (ASX qualifiers, venue, buyer id…), sorted by key.
pub type VendorData = BTreeMap<String, String>;

/// One executed trade.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trade {
    pub message_id: MessageId,
    pub trade_id: String,
    pub symbol: String,
    pub exchange: String,
    pub asset_class: AssetClass,
    pub timestamp_us: i64,
    pub receive_timestamp_us: i64,
    pub price: Decimal8,
    pub quantity: Decimal8,
    pub currency: String,
    pub side: TradeSide,
    pub trade_conditions: Vec<String>,
    pub source_sequence: Option<i64>,
    pub ingestion_timestamp_us: i64,
    pub platform_sequence: Option<i64>,
    pub vendor_data: Option<VendorData>,
}

/// Best bid and offer. An empty side has price 0 and quantity 0, as the source sends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    pub message_id: MessageId,
    pub quote_id: String,
    pub symbol: String,
    pub exchange: String,
    pub asset_class: AssetClass,
    pub timestamp_us: i64,
    pub receive_timestamp_us: i64,
    pub bid_price: Decimal8,
    pub bid_quantity: Decimal8,
    pub ask_price: Decimal8,
    pub ask_quantity: Decimal8,
    pub currency: String,
    pub source_sequence: Option<i64>,
    pub ingestion_timestamp_us: i64,
    pub platform_sequence: Option<i64>,
    pub vendor_data: Option<VendorData>,
}

/// One listed instrument.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferenceData {
    pub message_id: MessageId,
    pub company_id: String,
    pub symbol: String,
    pub exchange: String,
    pub asset_class: AssetClass,
    pub company_name: String,
    pub isin: Option<String>,
    pub currency: Option<String>,
    pub listing_date_us: Option<i64>,
    pub delisting_date_us: Option<i64>,
    pub is_active: bool,
    pub receive_timestamp_us: i64,
    pub ingestion_timestamp_us: i64,
    pub vendor_data: Option<VendorData>,
}

/// Any record K2 carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MarketRecord {
    Trade(Trade),
    Quote(Quote),
    Reference(ReferenceData),
}

impl MarketRecord {
    pub fn data_type(&self) -> DataType {
        match self {
            MarketRecord::Trade(_) => DataType::Trades,
            MarketRecord::Quote(_) => DataType::Quotes,
            MarketRecord::Reference(_) => DataType::ReferenceData,
        }
    }

    pub fn message_id(&self) -> MessageId {
        match self {
            MarketRecord::Trade(t) => t.message_id,
            MarketRecord::Quote(q) => q.message_id,
            MarketRecord::Reference(r) => r.message_id,
        }
    }

    pub fn symbol(&self) -> &str {
        match self {
            MarketRecord::Trade(t) => &t.symbol,
            MarketRecord::Quote(q) => &q.symbol,
            MarketRecord::Reference(r) => &r.symbol,
        }
    }

    pub fn exchange(&self) -> &str {
        match self {
            MarketRecord::Trade(t) => &t.exchange,
            MarketRecord::Quote(q) => &q.exchange,
            MarketRecord::Reference(r) => &r.exchange,
        }
    }

    pub fn asset_class(&self) -> AssetClass {
        match self {
            MarketRecord::Trade(t) => t.asset_class,
            MarketRecord::Quote(q) => q.asset_class,
            MarketRecord::Reference(r) => r.asset_class,
        }
    }

    /// Exchange time of a trade or quote (reference data has none).
    pub fn event_time_us(&self) -> Option<i64> {
        match self {
            MarketRecord::Trade(t) => Some(t.timestamp_us),
            MarketRecord::Quote(q) => Some(q.timestamp_us),
            MarketRecord::Reference(_) => None,
        }
    }

    /// When K2 took the record in (every record has one).
    pub fn ingestion_time_us(&self) -> i64 {
        match self {
            MarketRecord::Trade(t) => t.ingestion_timestamp_us,
            MarketRecord::Quote(q) => q.ingestion_timestamp_us,
            MarketRecord::Reference(r) => r.ingestion_timestamp_us,
        }
    }

    /// The source's own sequence of a trade or quote, where it has one.
    pub fn source_sequence(&self) -> Option<i64> {
        match self {
            MarketRecord::Trade(t) => t.source_sequence,
            MarketRecord::Quote(q) => q.source_sequence,
            MarketRecord::Reference(_) => None,
        }
    }

    /// The log key: the symbol for market data (per-symbol ordering), the company id for
    /// reference data (so a compacted topic keeps the latest per company).
    pub fn partition_key(&self) -> &str {
        match self {
            MarketRecord::Reference(r) => &r.company_id,
            other => other.symbol(),
        }
    }

    /// Sets the time the record was appended to the log.
    pub fn set_ingestion_timestamp(&mut self, us: i64) {
        match self {
            MarketRecord::Trade(t) => t.ingestion_timestamp_us = us,
            MarketRecord::Quote(q) => q.ingestion_timestamp_us = us,
            MarketRecord::Reference(r) => r.ingestion_timestamp_us = us,
        }
    }
}
