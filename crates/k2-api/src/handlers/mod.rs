//! The endpoints, grouped by resource. Each handler validates its input with
//! [`crate::params`] (naming the field at fault), resolves the snapshot it answers from,
//! and runs its query through the gate on the query runtime.
//!
//! - `market` — trades and quotes, pages of them, as of snapshots, replay pages.
//! - `replay` — streamed replays (NDJSON, WebSocket).
//! - `analytics` — daily summaries, bars, aggregations.
//! - `catalogue` — symbols, table stats, snapshots.
//! - `sql` — read-only SQL.
//! - `quality` — the completeness ledger: streams and gaps.
//! - `dead_letters` — rejected records by reason, and each in full.
//! - `operations` — health, readiness, metrics.

pub mod analytics;
pub mod catalogue;
pub mod dead_letters;
pub mod market;
pub mod operations;
pub mod quality;
pub mod replay;
pub mod sql;
