//! K2's sources: they read market data where it is published and append it to the log.
//!
//! # Layout
//!
//! - [`asx`] — parsing of the ASX sample files (trades, quotes, company info) into records.
//! - [`ingest`] — `ingest asx`, exactly once into the log with per-file checkpoints.
//! - [`feeds`] — live exchange feeds: one folder per venue (Binance, Kraken), the
//!   WebSocket client, one connection, a feed kept connected, a feed captured into the log.
//! - [`producer`] — records encoded for the log: topics, schemas, the wire format.
//! - [`replay`] — dead letters run again through the current parser and decoder.
//! - [`simulator`] — a local exchange speaking the venues' WebSocket protocol (tests and
//!   `k2 bench feed`).
//! - [`synthetic`] — deterministic ASX-format data of any size, for benchmarks.
//! - `metrics` — every metric the sources emit.

pub mod asx;
pub mod feeds;
pub mod ingest;
mod metrics;
pub mod producer;
pub mod replay;
pub mod simulator;
pub mod synthetic;

pub use feeds::capture::{CaptureError, CaptureOptions, CaptureStats, capture};
pub use feeds::config::{FeedPolicy, FeedsConfig, VenueConfig};
pub use feeds::connection::{FeedConfig, Pause};
pub use feeds::supervisor::Reconnect;
pub use feeds::{Venue, VenueFeed};
pub use ingest::{FileSummary, IngestError, IngestOptions, IngestSummary, Progress, ingest_asx};
pub use metrics::describe as describe_metrics;
pub use producer::topic_specs;
pub use replay::{ReplayReport, replay_dead_letters};
