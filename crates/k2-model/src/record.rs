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

/// A record's text: symbols, venues, currencies and ids are short and kept inline (up to
/// 24 bytes) without an allocation; longer text goes to the heap.
pub type Text = compact_str::CompactString;

/// Free-form source fields kept verbatim (ASX qualifiers, venue, buyer id…): sorted by key,
/// each key once. A few entries at most, so a sorted vector (one allocation) and not a map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VendorData(Vec<(Text, Text)>);

impl VendorData {
    pub fn new() -> Self {
        VendorData(Vec::new())
    }

    /// Sets `key` to `value`; returns the value it replaces.
    pub fn insert(&mut self, key: impl Into<Text>, value: impl Into<Text>) -> Option<Text> {
        let key = key.into();
        match self.0.binary_search_by(|(k, _)| k.as_str().cmp(&key)) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value.into())),
            Err(i) => {
                self.0.insert(i, (key, value.into()));
                None
            }
        }
    }

    /// Appends an entry whose key sorts after every key held (as K2's own encoding
    /// writes them), with no search; any other key is inserted in its place.
    pub fn push(&mut self, key: Text, value: Text) {
        match self.0.last() {
            Some((last, _)) if last.as_str() >= key.as_str() => {
                self.insert(key, value);
            }
            _ => self.0.push((key, value)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.into_iter()
    }
}

impl<'a> IntoIterator for &'a VendorData {
    type Item = (&'a str, &'a str);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (Text, Text)>,
        fn(&'a (Text, Text)) -> (&'a str, &'a str),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl<K: Into<Text>, V: Into<Text>> FromIterator<(K, V)> for VendorData {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(entries: I) -> Self {
        let entries = entries.into_iter();
        let mut map = VendorData(Vec::with_capacity(entries.size_hint().0));
        for (k, v) in entries {
            map.insert(k, v);
        }
        map
    }
}

impl<K: Into<Text>, V: Into<Text>, const N: usize> From<[(K, V); N]> for VendorData {
    fn from(entries: [(K, V); N]) -> Self {
        entries.into_iter().collect()
    }
}

impl Serialize for VendorData {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for VendorData {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<Text, Text>::deserialize(deserializer)?;
        Ok(VendorData(map.into_iter().collect()))
    }
}

/// One executed trade.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trade {
    pub message_id: MessageId,
    pub trade_id: Text,
    pub symbol: Text,
    pub exchange: Text,
    pub asset_class: AssetClass,
    pub timestamp_us: i64,
    pub receive_timestamp_us: i64,
    pub price: Decimal8,
    pub quantity: Decimal8,
    pub currency: Text,
    pub side: TradeSide,
    pub trade_conditions: Vec<Text>,
    pub source_sequence: Option<i64>,
    pub ingestion_timestamp_us: i64,
    pub platform_sequence: Option<i64>,
    pub vendor_data: Option<VendorData>,
}

/// Best bid and offer. An empty side has price 0 and quantity 0, as the source sends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    pub message_id: MessageId,
    pub quote_id: Text,
    pub symbol: Text,
    pub exchange: Text,
    pub asset_class: AssetClass,
    pub timestamp_us: i64,
    pub receive_timestamp_us: i64,
    pub bid_price: Decimal8,
    pub bid_quantity: Decimal8,
    pub ask_price: Decimal8,
    pub ask_quantity: Decimal8,
    pub currency: Text,
    pub source_sequence: Option<i64>,
    pub ingestion_timestamp_us: i64,
    pub platform_sequence: Option<i64>,
    pub vendor_data: Option<VendorData>,
}

/// One listed instrument.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferenceData {
    pub message_id: MessageId,
    pub company_id: Text,
    pub symbol: Text,
    pub exchange: Text,
    pub asset_class: AssetClass,
    pub company_name: Text,
    pub isin: Option<Text>,
    pub currency: Option<Text>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_data_is_sorted_by_key_with_each_key_once() {
        let mut v: VendorData = [("venue", "X"), ("buyer_id", "7"), ("company_id", "7078")].into();
        assert_eq!(v.insert("venue", "Y").as_deref(), Some("X"));
        assert_eq!(v.insert("qualifiers", "0"), None);
        assert_eq!(
            v.iter().collect::<Vec<_>>(),
            [
                ("buyer_id", "7"),
                ("company_id", "7078"),
                ("qualifiers", "0"),
                ("venue", "Y")
            ]
        );
        assert_eq!(
            (v.get("venue"), v.get("absent"), v.len()),
            (Some("Y"), None, 4)
        );
        // Pushed entries keep the order and each key once, in order or not.
        let mut pushed = VendorData::new();
        for (k, v) in [("b", "1"), ("d", "2"), ("a", "3"), ("d", "4"), ("e", "5")] {
            pushed.push(k.into(), v.into());
        }
        assert_eq!(
            pushed.iter().collect::<Vec<_>>(),
            [("a", "3"), ("b", "1"), ("d", "4"), ("e", "5")]
        );
        // serde: a JSON object, read back the same whatever the order it is written in.
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(
            json,
            r#"{"buyer_id":"7","company_id":"7078","qualifiers":"0","venue":"Y"}"#
        );
        let back: VendorData = serde_json::from_str(
            r#"{"venue":"Y","qualifiers":"0","company_id":"7078","buyer_id":"7"}"#,
        )
        .unwrap();
        assert_eq!(back, v);
    }
}
