//! Schemas, with the semantics of the Confluent Schema Registry: ids are global and stable
//! (the same schema text registered under any subject gets the same id), a subject keeps
//! numbered versions, and a new version must be compatible with what the subject already
//! holds (BACKWARD by default).
//!
//! # Layout
//!
//! - [`SchemaStore`] — where schemas are registered and looked up (this file), and
//!   [`Registry`], the store of a Kafka deployment.
//! - [`local`] — the registry's own tables ([`LocalSchemas`]).
//! - [`client`] — a client of a shared Confluent-compatible registry.
//! - [`compatibility`] — compatibility levels between versions.
//! - [`decoder`] — payloads in the Confluent framing back into records.

pub mod client;
pub mod compatibility;
pub mod decoder;
pub mod local;

use std::future::Future;

pub use self::client::{RegistryAccess, RegistryClient};
pub use self::compatibility::{Compatibility, canonical};
pub use self::decoder::{Decoded, ExtraType, ExtraValue, Extras, PayloadDecoder, Undecodable};
pub use self::local::LocalSchemas;
use crate::error::Result;

/// Where schemas are registered and looked up.
pub trait SchemaStore: Send + Sync {
    /// Registers `schema` under `subject`; returns its global id (existing if already known).
    fn register(&self, subject: &str, schema: &str) -> impl Future<Output = Result<u32>> + Send;
    /// The schema text of an id.
    fn schema(&self, id: u32) -> impl Future<Output = Result<Option<String>>> + Send;
}

/// One version of a subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectVersion {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    pub schema: String,
}

/// Where a Kafka deployment keeps its schemas: its own registry file, or a shared registry.
#[derive(Clone)]
pub enum Registry {
    Local(LocalSchemas),
    Remote(RegistryClient),
}

impl SchemaStore for Registry {
    async fn register(&self, subject: &str, schema: &str) -> Result<u32> {
        match self {
            Registry::Local(l) => l.register(subject, schema).await,
            Registry::Remote(r) => r.register(subject, schema).await,
        }
    }

    async fn schema(&self, id: u32) -> Result<Option<String>> {
        match self {
            Registry::Local(l) => l.schema(id).await,
            Registry::Remote(r) => r.schema(id).await,
        }
    }
}
