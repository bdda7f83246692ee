//! K2's domain model: the records that flow from sources through the log into the lake.
//!
//! Pure code: no I/O, no async. Everything here is deterministic, so it is tested with
//! property tests and cross-checked against reference implementations.
//!
//! # Layout
//!
//! - [`decimal`] — `Decimal8`, fixed-point `i64` at 10^-8 ↔ `decimal(18,8)`.
//! - [`enums`] — asset class, trade side, data type.
//! - [`ids`] — deterministic message ids derived from the source identity.
//! - [`record`] — `Trade`, `Quote`, `ReferenceData` and the `MarketRecord` sum.
//! - [`exchange`] — exchange time zones and trading days.
//! - [`topic`] — topic names `market.{asset_class}.{data_type}.{exchange}`.
//! - [`avro`] — Avro binary codec in the Confluent wire format, schemas from `schemas/avro/`.
//! - [`config`] — `ConfigError`, what every configuration section answers when a key is wrong.
//! - [`error`] — `ModelError`.

pub mod avro;
pub mod config;
pub mod decimal;
pub mod enums;
pub mod error;
pub mod exchange;
pub mod ids;
pub mod record;
pub mod topic;

#[cfg(test)]
mod avro_tests;

pub use config::{ConfigError, Secret};
pub use decimal::Decimal8;
pub use enums::{AssetClass, DataType, TradeSide};
pub use error::ModelError;
pub use ids::MessageId;
pub use record::{MarketRecord, Quote, ReferenceData, Text, Trade, VendorData};
pub use topic::TopicName;

/// The `tracing` target of the spans that time the pipeline's stages (parse, append,
/// decode, write, commit) and the API's requests. They are at `trace` level, which logs
/// leave out, and are exported as OTLP traces when `telemetry.otlp_endpoint` is set.
pub const STAGE_SPANS: &str = "k2::stage";
