//! K2's lake: Iceberg tables, the exactly-once writer that fills them from the log, and
//! the DataFusion query engine that answers from them.
//!
//! # Layout
//!
//! - [`tables`] — the table definitions.
//! - [`catalog`] — the `[catalog]` section and opening the SQL catalog (SQLite or
//!   PostgreSQL).
//! - [`warehouse`] — the `[warehouse]` section: the tables' files on a local disk or in
//!   an S3 bucket, and the object stores that list, read and delete them.
//! - [`table_commit`] — committing updates iceberg-rust has no action for (tags).
//! - [`commit_marks`] — what a K2 commit records in its snapshot, and reading it back.
//! - [`writer`] — log → Parquet → Iceberg fast-append, log positions in the snapshot.
//! - [`integrity`] — dedup by message id and sequence tracking, restored from each
//!   snapshot, in process or shared in Redis.
//! - [`columns`] — records → Arrow batches in the tables' exact Arrow schema.
//! - [`audit`] — one line per Iceberg commit, in an append-only file.
//! - [`retention`] — snapshot expiry: the time-travel window, and the files let go.
//! - [`query`] — parameterised market queries, bars, time travel, read-only SQL, limits.
//! - [`tail`] — the live tail: events in the log the lake has not committed yet.
//! - [`replay`] — a time range in order across symbols, by a k-way merge, paced or not.
//! - [`scan`] — a table at a snapshot: Iceberg picks the files, DataFusion reads them.
//! - [`error`] — `LakeError`; `metrics` — every metric the lake emits.

pub mod audit;
pub mod catalog;
pub mod columns;
pub mod commit_marks;
pub mod compaction;
pub mod error;
pub mod integrity;
mod metrics;
pub mod query;
pub mod replay;
pub mod retention;
pub mod scan;
pub mod table_commit;
pub mod tables;
pub mod tail;
pub mod warehouse;
pub mod writer;

pub use catalog::{CatalogConfig, open_catalog, open_catalog_at};
pub use error::{LakeError, Result};
pub use integrity::{DedupSection, IntegrityOptions, RedisTarget, SequenceSection};
pub use metrics::describe as describe_metrics;
pub use tables::{LakeTable, ensure_tables};
pub use warehouse::{S3Options, Warehouse, WarehouseConfig};
pub use writer::{WriterConfig, WriterOptions, WriterSummary};
