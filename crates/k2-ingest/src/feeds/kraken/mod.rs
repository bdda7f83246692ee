//! Kraken's WebSocket API v2, `trade` channel: a subscription message after connecting,
//! then frames of many trades each; heartbeats, status and method answers carry no
//! records.
//!
//! - `messages` — what Kraken sends; `parse` — frames into trades.
//! - `subscribe` — the subscription message; `frames` — frames in Kraken's format.

mod frames;
mod messages;
mod parse;
mod subscribe;

use k2_model::MarketRecord;

use super::{FrameError, VenueFeed};

/// The exchange code of Kraken's records.
pub const EXCHANGE: &str = "KRAKEN";

/// Kraken's feed.
pub struct Kraken;

impl VenueFeed for Kraken {
    fn name(&self) -> &'static str {
        "kraken"
    }

    fn exchange(&self) -> &'static str {
        EXCHANGE
    }

    fn dead_letter_stage(&self) -> &'static str {
        "feed.kraken"
    }

    fn default_urls(&self) -> &'static [&'static str] {
        &["wss://ws.kraken.com/v2"]
    }

    fn default_symbols(&self) -> &'static [&'static str] {
        &["BTC/USD", "ETH/USD"]
    }

    fn has_quotes(&self) -> bool {
        false
    }

    fn connect_url(&self, base: &str, _symbols: &[String], _quotes: bool) -> String {
        base.trim_end_matches('/').to_string()
    }

    fn subscription(&self, symbols: &[String], _quotes: bool) -> Option<String> {
        Some(subscribe::message(symbols))
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
