//! Binance spot: combined streams of `<symbol>@trade` and `<symbol>@bookTicker`
//! (`/stream?streams=btcusdt@trade/btcusdt@bookTicker`), framed as
//! `{"stream": …, "data": {…}}`; bare payloads (single-stream connections) too.
//!
//! - `messages` — what Binance sends; `parse` — frames into trades and quotes.
//! - `subscribe` — the streams a connection opens; `frames` — frames in Binance's format.

mod frames;
mod messages;
mod parse;
mod subscribe;

use k2_model::MarketRecord;

use super::{FrameError, VenueFeed};

/// The exchange code of Binance's records.
pub const EXCHANGE: &str = "BINANCE";

/// Binance's feed.
pub struct Binance;

impl VenueFeed for Binance {
    fn name(&self) -> &'static str {
        "binance"
    }

    fn exchange(&self) -> &'static str {
        EXCHANGE
    }

    fn dead_letter_stage(&self) -> &'static str {
        "feed.binance"
    }

    fn default_urls(&self) -> &'static [&'static str] {
        &[
            "wss://stream.binance.com:9443",
            "wss://stream.binance.com:443",
            "wss://data-stream.binance.vision",
        ]
    }

    fn default_symbols(&self) -> &'static [&'static str] {
        &["BTCUSDT", "ETHUSDT"]
    }

    fn has_quotes(&self) -> bool {
        true
    }

    fn connect_url(&self, base: &str, symbols: &[String], quotes: bool) -> String {
        subscribe::connect_url(base, symbols, quotes)
    }

    fn subscription(&self, _symbols: &[String], _quotes: bool) -> Option<String> {
        None
    }

    fn parse(
        &self,
        frame: &str,
        receive_us: i64,
        out: &mut Vec<MarketRecord>,
    ) -> Result<(), FrameError> {
        parse::parse(frame, receive_us, out)
    }

    fn trade_frames(&self, first_id: u64, trades: u64) -> Vec<String> {
        frames::trades(first_id, trades)
    }
}
