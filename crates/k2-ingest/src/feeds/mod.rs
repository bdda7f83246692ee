//! Exchange WebSocket feeds: a venue's frames into K2's records, one connection kept
//! alive, and a feed captured into the log.
//!
//! Parsing is pure: a frame's text and the instant it was received in, records (or
//! nothing, for acknowledgements and heartbeats) or the reason the frame was refused out,
//! so the caller can dead-letter the raw frame. Every trade of a frame is kept. Ids are
//! deterministic (exchange + the venue's own trade or update id), so a trade seen twice —
//! a reconnect overlap, two captures of one feed — has one identity. Prices and
//! quantities are read from the frame's text exactly, never through a float.
//!
//! # Layout
//!
//! - [`Venue`] — the venues K2 captures, each a folder implementing [`VenueFeed`]
//!   (this file). Adding a venue is its folder and its arm of [`Venue::feed`].
//! - [`binance`], [`kraken`] — a venue's messages, parsing, subscription and frames.
//! - `values` — prices, quantities and ids read exactly; `json` — the cursor of the fast
//!   paths.
//! - [`config`] — the `[feeds]` section: connection policy, venues' tables.
//! - [`ws`] — the WebSocket client; [`connection`] — one connection, frames to events;
//!   [`supervisor`] — a feed kept connected; [`capture`] — a feed into the log.

pub mod binance;
pub mod capture;
pub mod config;
pub mod connection;
mod json;
pub mod kraken;
pub mod supervisor;
#[cfg(test)]
mod tests;
mod values;
pub mod ws;

use k2_model::MarketRecord;

/// Why a frame was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameError {
    /// `malformed` (not the venue's format) or `invalid` (well-formed, impossible values).
    pub kind: &'static str,
    pub reason: String,
}

impl FrameError {
    pub(crate) fn malformed(reason: impl Into<String>) -> Self {
        FrameError {
            kind: "malformed",
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        FrameError {
            kind: "invalid",
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.reason)
    }
}

impl std::error::Error for FrameError {}

/// What K2 knows of a venue's feed. Each venue implements it in its own folder.
pub trait VenueFeed: Sync {
    /// The venue's name in configuration, logs and metric labels: `binance`.
    fn name(&self) -> &'static str;
    /// The exchange code its records carry: `BINANCE`.
    fn exchange(&self) -> &'static str;
    /// The dead-letter stage of its refused frames: `feed.binance`.
    fn dead_letter_stage(&self) -> &'static str;
    /// Where K2 connects unless configured otherwise: the first, then the fallbacks.
    fn default_urls(&self) -> &'static [&'static str];
    /// What K2 captures unless configured otherwise.
    fn default_symbols(&self) -> &'static [&'static str];
    /// Whether the feed offers quotes (best bid and offer) beside trades.
    fn has_quotes(&self) -> bool;
    /// The URL a connection to `base` opens for `symbols`.
    fn connect_url(&self, base: &str, symbols: &[String], quotes: bool) -> String;
    /// The message a connection sends once open (None: the URL says it all).
    fn subscription(&self, symbols: &[String], quotes: bool) -> Option<String>;
    /// Appends to `out` the records of one frame received at `receive_us`; on an error
    /// `out` is left as it was.
    fn parse(
        &self,
        frame: &str,
        receive_us: i64,
        out: &mut Vec<MarketRecord>,
    ) -> Result<(), FrameError>;
    /// Frames in the venue's format holding `trades` made-up trades, ids from `first_id`
    /// (for the local simulator and benchmarks).
    fn trade_frames(&self, first_id: u64, trades: u64) -> Vec<String>;
}

/// A venue K2 captures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Venue {
    Binance,
    Kraken,
}

impl Venue {
    pub const ALL: [Venue; 2] = [Venue::Binance, Venue::Kraken];

    /// The venue's feed: the one place each venue is named.
    pub fn feed(self) -> &'static dyn VenueFeed {
        match self {
            Venue::Binance => &binance::Binance,
            Venue::Kraken => &kraken::Kraken,
        }
    }

    /// The venue named `name` (any case).
    pub fn from_name(name: &str) -> Option<Venue> {
        Venue::ALL
            .into_iter()
            .find(|v| v.name().eq_ignore_ascii_case(name))
    }

    pub fn name(self) -> &'static str {
        self.feed().name()
    }

    pub fn exchange(self) -> &'static str {
        self.feed().exchange()
    }
}

impl std::fmt::Display for Venue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the parsers' tests share.
#[cfg(test)]
pub(crate) mod testing {
    use k2_model::{MarketRecord, Trade};

    use super::{FrameError, Venue};

    /// The records of one frame of `venue`, as its parser appends them to an empty batch.
    pub fn records(venue: Venue, frame: &str, at: i64) -> Result<Vec<MarketRecord>, FrameError> {
        let mut out = Vec::new();
        venue.feed().parse(frame, at, &mut out).map(|()| out)
    }

    /// The trade a record is (a test fails on any other record).
    pub fn trade(r: &MarketRecord) -> &Trade {
        match r {
            MarketRecord::Trade(t) => t,
            other => panic!("not a trade: {other:?}"),
        }
    }
}

#[cfg(test)]
mod venue_tests {
    use super::*;

    #[test]
    fn every_venue_is_found_by_its_name_and_names_itself_once() {
        for v in Venue::ALL {
            assert_eq!(Venue::from_name(v.name()), Some(v));
            assert_eq!(Venue::from_name(&v.name().to_uppercase()), Some(v));
            assert!(!v.feed().default_urls().is_empty());
            assert!(!v.feed().default_symbols().is_empty());
            assert!(v.feed().dead_letter_stage().ends_with(v.name()));
        }
        assert_eq!(Venue::from_name("coinbase"), None);
    }

    #[test]
    fn every_venue_parses_its_own_frames() {
        for v in Venue::ALL {
            let frames = v.feed().trade_frames(1, 20);
            let mut out = Vec::new();
            for f in &frames {
                v.feed().parse(f, 1_700_000_000_000_000, &mut out).unwrap();
            }
            assert_eq!(out.len(), 20, "{v}");
            assert!(out.iter().all(|r| r.exchange() == v.exchange()), "{v}");
        }
    }
}
