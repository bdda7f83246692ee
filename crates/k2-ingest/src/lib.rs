//! K2's sources: they read market data where it is published and append it to the log.
//!
//! # Layout
//!
//! - [`asx`] — parsing of the ASX sample files (trades, quotes, company info) into records.
//! - [`feeds`] — exchange WebSocket frames (Binance, Kraken) into records.
//! - [`live`] — one live connection to an exchange feed, frames to records.
//! - [`simulator`] — a local exchange speaking the venues' WebSocket formats, for tests.
//! - [`capture`] — a live feed into the log, refused frames into the dead-letter queue.
//! - [`ingest`] — `ingest asx`, exactly once into the log with per-file checkpoints.
//! - [`replay`] — dead letters run again through the current parser and decoder.
//! - [`synthetic`] — deterministic ASX-format data of any size, for benchmarks.

pub mod asx;
pub mod capture;
pub mod feeds;
pub mod ingest;
#[cfg(test)]
mod ingest_tests;
pub mod live;
mod metrics;
pub mod replay;
pub mod simulator;
pub mod synthetic;
pub mod ws;

pub use capture::{CaptureError, CaptureOptions, CaptureStats, capture};
pub use ingest::{
    FileSummary, IngestError, IngestOptions, IngestSummary, Progress, ingest_asx, topic_specs,
};
pub use replay::{ReplayReport, replay_dead_letters};
