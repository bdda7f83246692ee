//! K2's durable stores: the message log (embedded or Kafka), the schema registry and the
//! dead-letter store.
//!
//! # Layout
//!
//! - [`log`] — the `Log` / `LogConsumer` traits, shaped so Kafka can implement them.
//! - [`any`] — the backend chosen by configuration, behind the same traits.
//! - [`embedded`] — the embedded backend on redb (the default, no external services).
//! - [`kafka`] — the Kafka backend on librdkafka.
//! - [`registry`] — schemas with the Confluent registry's semantics: K2's own tables, a
//!   client of a shared registry, and the payload decoder.
//! - [`partitioner`] — Kafka-compatible key → partition mapping.
//! - [`dead_letter`] — rejected records with their raw bytes, source position and reason.
//! - [`config`] — the `[log]`, `[registry]` and `[dlq]` sections of `k2.toml`.
//! - `store` — the redb files in the data directory; [`error`] — `LogError`; `metrics`.

pub mod any;
pub mod config;
#[cfg(test)]
pub mod conformance;
pub mod dead_letter;
pub mod embedded;
pub mod error;
pub mod kafka;
pub mod log;
mod metrics;
pub mod partitioner;
pub mod registry;
mod store;

pub use any::{AnyConsumer, AnyLog};
pub use config::{DlqConfig, LogBackend, LogConfig, RegistryConfig};
pub use dead_letter::{Census, DeadLetter, DeadLetterStore, LAKE_DECODE_STAGE};
pub use embedded::{EmbeddedConsumer, EmbeddedLog};
pub use error::{LogError, Result};
pub use kafka::{
    Compression, KafkaConsumer, KafkaLog, KafkaOptions, SaslMechanism, SecurityProtocol,
};
pub use log::{
    CleanupPolicy, ConsumedRecord, Log, LogConsumer, PartitionOffset, Record, SourceCheckpoint,
    TopicBatch, TopicSpec,
};
pub use metrics::describe as describe_metrics;
pub use registry::{
    Compatibility, Decoded, ExtraType, ExtraValue, Extras, LocalSchemas, PayloadDecoder, Registry,
    RegistryAccess, RegistryClient, SchemaStore, SubjectVersion, Undecodable,
};
