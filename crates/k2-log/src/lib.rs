//! K2's durable stores in the data directory: the message log and the dead-letter store.
//!
//! # Layout
//!
//! - [`log`] — the `Log` / `LogConsumer` traits, shaped so Kafka can implement them.
//! - [`any`] — the backend chosen by configuration, behind the same traits.
//! - [`embedded`] — the embedded backend on redb (the default, no external services).
//! - [`kafka`] — the Kafka backend on librdkafka.
//! - [`registry_client`] — a client of a Confluent-compatible schema registry.
//! - [`partitioner`] — Kafka-compatible key → partition mapping.
//! - [`dead_letter`] — rejected records with their raw bytes, source position and reason.
//! - [`error`] — `LogError`.

pub mod any;
#[cfg(test)]
pub mod conformance;
pub mod dead_letter;
pub mod embedded;
#[cfg(test)]
mod embedded_tests;
pub mod error;
pub mod kafka;
#[cfg(test)]
mod kafka_tests;
pub mod log;
mod metrics;
pub mod partitioner;
pub mod registry_client;
pub mod schema_store;

pub use any::{AnyConsumer, AnyLog};
pub use dead_letter::{DeadLetter, DeadLetterStore, LAKE_DECODE_STAGE};
pub use embedded::{EmbeddedConsumer, EmbeddedLog};
pub use error::{LogError, Result};
pub use kafka::{KafkaConsumer, KafkaLog, KafkaOptions};
pub use log::{
    CleanupPolicy, ConsumedRecord, Log, LogConsumer, PartitionOffset, Record, SourceCheckpoint,
    TopicBatch, TopicSpec,
};
pub use registry_client::{Registry, RegistryAccess, RegistryClient};
pub use schema_store::{
    Compatibility, LocalSchemas, PayloadDecoder, SchemaStore, SubjectVersion, Undecodable,
};
