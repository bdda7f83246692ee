//! K2's lake: Iceberg tables, the exactly-once writer that fills them from the log, and
//! the DataFusion query engine that answers from them.
//!
//! # Layout
//!
//! - [`tables`] — the table definitions and the SQL catalog (SQLite) they live in.
//! - [`audit`] — one line per Iceberg commit, in an append-only file.
//! - [`columns`] — records → Arrow batches in the tables' exact Arrow schema.
//! - [`writer`] — log → Parquet → Iceberg fast-append, log positions in the snapshot.
//! - [`integrity`] — dedup by message id and sequence tracking, restored from each snapshot.
//! - [`query`] — parameterised market queries, time travel, read-only SQL, limits.
//! - [`replay`] — a time range in order across symbols, by a k-way merge, paced or at full speed.
//! - [`retention`] — snapshot expiry: the time-travel window, and the metadata let go.
//! - [`scan`] — a table at a snapshot: Iceberg picks the files, DataFusion reads them.
//! - [`error`] — `LakeError`.

pub mod audit;
pub mod columns;
pub mod error;
mod guard;
pub mod integrity;
#[cfg(test)]
mod lake_tests;
mod metrics;
pub mod query;
pub mod replay;
pub mod retention;
pub mod scan;
pub mod tables;
pub mod tail;
pub mod writer;

pub use error::{LakeError, Result};
pub use tables::{LakeTable, ensure_tables, open_catalog, open_catalog_at};
pub use writer::{RedisTarget, WriterOptions, WriterSummary};
