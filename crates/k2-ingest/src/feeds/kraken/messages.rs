//! Kraken WebSocket API v2 messages: `{"channel": "trade", "type": "snapshot"|"update",
//! "data": [trade, …]}`, method answers, heartbeats and status, as serde reads them; and a
//! trade's members as either parser reads them.

use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
pub(super) struct Frame<'a> {
    #[serde(default)]
    pub channel: Option<&'a str>,
    #[serde(default)]
    pub method: Option<&'a str>,
    #[serde(default)]
    pub success: Option<bool>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default, borrow)]
    pub data: Option<Vec<&'a RawValue>>,
}

#[derive(Deserialize)]
pub(super) struct TradeItem<'a> {
    pub symbol: &'a str,
    pub side: &'a str,
    pub price: &'a RawValue,
    pub qty: &'a RawValue,
    pub trade_id: i64,
    pub timestamp: &'a str,
    #[serde(default)]
    pub ord_type: Option<&'a str>,
}

/// A trade's members, as read from the frame.
pub(super) struct Fields<'a> {
    pub symbol: &'a str,
    pub side: &'a str,
    pub price: &'a str,
    pub qty: &'a str,
    pub trade_id: i64,
    pub timestamp: &'a str,
    pub ord_type: Option<&'a str>,
}
