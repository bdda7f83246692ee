//! Binance spot's messages: combined-stream envelopes (`{"stream": …, "data": {…}}`),
//! trade events and book tickers, as serde reads them.

use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
pub(super) struct Envelope<'a> {
    #[serde(borrow)]
    pub data: Option<&'a RawValue>,
    #[serde(default)]
    pub result: Option<&'a RawValue>,
    #[serde(default)]
    pub id: Option<&'a RawValue>,
}

#[derive(Deserialize)]
pub(super) struct TradeEvent<'a> {
    pub e: &'a str,
    #[serde(rename = "E")]
    pub event_ms: i64,
    pub s: &'a str,
    pub t: i64,
    pub p: &'a str,
    pub q: &'a str,
    #[serde(rename = "T")]
    pub trade_ms: i64,
    pub m: bool,
}

#[derive(Deserialize)]
pub(super) struct BookTicker<'a> {
    pub u: i64,
    pub s: &'a str,
    pub b: &'a str,
    #[serde(rename = "B")]
    pub bid_qty: &'a str,
    pub a: &'a str,
    #[serde(rename = "A")]
    pub ask_qty: &'a str,
}

/// A payload the fast path recognised.
pub(super) enum Event<'a> {
    Trade(TradeEvent<'a>),
    Ticker(BookTicker<'a>),
}
