//! Schema registry storage for the embedded log: Avro schemas by id and subjects by name,
//! with the semantics of the Confluent Schema Registry (ids are global and stable: the same
//! schema text registered under any subject gets the same id; a subject keeps versions).
//! It lives in the log's database because the ids describe the bytes in the log.

use std::collections::HashMap;
use std::future::Future;

use k2_model::{DataType, MarketRecord, avro};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::embedded::{EmbeddedLog, blocking};
use crate::error::{LogError, Result};

const SCHEMAS: TableDefinition<u32, &str> = TableDefinition::new("schemas");
const SCHEMA_IDS: TableDefinition<&str, u32> = TableDefinition::new("schema_ids");
/// `subject\0version` → schema id.
const SUBJECT_VERSIONS: TableDefinition<&str, u32> = TableDefinition::new("subject_versions");

/// Where schemas are registered and looked up.
pub trait SchemaStore: Send + Sync {
    /// Registers `schema` under `subject`; returns its global id (existing if already known).
    fn register(&self, subject: &str, schema: &str) -> impl Future<Output = Result<u32>> + Send;
    /// The schema text of an id.
    fn schema(&self, id: u32) -> impl Future<Output = Result<Option<String>>> + Send;
}

fn version_key(subject: &str, version: u32) -> String {
    format!("{subject}\u{0}{version:010}")
}

impl EmbeddedLog {
    fn register_blocking(&self, subject: &str, schema: &str) -> Result<u32> {
        let err = |e: redb::Error| LogError::storage("registering schema", e);
        let txn = self.db().begin_write().map_err(|e| err(e.into()))?;
        let id = {
            let mut schemas = txn.open_table(SCHEMAS).map_err(|e| err(e.into()))?;
            let mut ids = txn.open_table(SCHEMA_IDS).map_err(|e| err(e.into()))?;
            let mut versions = txn
                .open_table(SUBJECT_VERSIONS)
                .map_err(|e| err(e.into()))?;
            let existing = ids
                .get(schema)
                .map_err(|e| err(e.into()))?
                .map(|v| v.value());
            let id = match existing {
                Some(id) => id,
                None => {
                    let id = schemas
                        .last()
                        .map_err(|e| err(e.into()))?
                        .map_or(1, |(k, _)| k.value() + 1);
                    schemas.insert(id, schema).map_err(|e| err(e.into()))?;
                    ids.insert(schema, id).map_err(|e| err(e.into()))?;
                    id
                }
            };
            let prefix = format!("{subject}\u{0}");
            let mut latest: Option<(u32, u32)> = None;
            for entry in versions
                .range(prefix.as_str()..)
                .map_err(|e| err(e.into()))?
            {
                let (k, v) = entry.map_err(|e| err(e.into()))?;
                let Some(version) = k.value().strip_prefix(prefix.as_str()) else {
                    break;
                };
                let version: u32 = version.parse().map_err(|_| {
                    LogError::Corrupt(format!("subject version key {:?}", k.value()))
                })?;
                latest = Some((version, v.value()));
            }
            match latest {
                Some((_, latest_id)) if latest_id == id => {}
                other => {
                    let next = other.map_or(1, |(v, _)| v + 1);
                    versions
                        .insert(version_key(subject, next).as_str(), id)
                        .map_err(|e| err(e.into()))?;
                    tracing::info!(subject, id, version = next, "schema registered");
                }
            }
            id
        };
        txn.commit().map_err(|e| err(e.into()))?;
        Ok(id)
    }

    fn schema_blocking(&self, id: u32) -> Result<Option<String>> {
        let err = |e: redb::Error| LogError::storage("reading schema", e);
        let txn = self.db().begin_read().map_err(|e| err(e.into()))?;
        let schemas = match txn.open_table(SCHEMAS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(err(e.into())),
        };
        Ok(schemas
            .get(id)
            .map_err(|e| err(e.into()))?
            .map(|v| v.value().to_string()))
    }
}

impl SchemaStore for EmbeddedLog {
    fn register(&self, subject: &str, schema: &str) -> impl Future<Output = Result<u32>> + Send {
        let this = self.clone();
        let (subject, schema) = (subject.to_string(), schema.to_string());
        blocking(move || this.register_blocking(&subject, &schema))
    }

    fn schema(&self, id: u32) -> impl Future<Output = Result<Option<String>>> + Send {
        let this = self.clone();
        blocking(move || this.schema_blocking(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ids_are_global_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(&dir.path().join("log.redb")).unwrap();
        let a = log
            .register("t1-value", r#"{"type":"string"}"#)
            .await
            .unwrap();
        let again = log
            .register("t1-value", r#"{"type":"string"}"#)
            .await
            .unwrap();
        let other_subject = log
            .register("t2-value", r#"{"type":"string"}"#)
            .await
            .unwrap();
        let b = log
            .register("t1-value", r#"{"type":"long"}"#)
            .await
            .unwrap();
        assert_eq!(a, again);
        assert_eq!(a, other_subject);
        assert_ne!(a, b);
        assert_eq!(
            log.schema(b).await.unwrap().as_deref(),
            Some(r#"{"type":"long"}"#)
        );
        assert_eq!(log.schema(999).await.unwrap(), None);
    }
}

/// Why a payload could not be read: a dead-letter kind and a sentence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Undecodable {
    pub kind: &'static str,
    pub reason: String,
}

/// Reads K2 records in the Confluent framing (magic byte, schema id, Avro datum),
/// remembering what record type each schema id is.
#[derive(Default)]
pub struct PayloadDecoder {
    known: HashMap<u32, Option<DataType>>,
}

impl PayloadDecoder {
    /// The record, or why the payload is not a `expected` record. Only a failure to reach
    /// the schema store is an error.
    pub async fn decode<S: SchemaStore>(
        &mut self,
        store: &S,
        payload: &[u8],
        expected: DataType,
    ) -> Result<std::result::Result<MarketRecord, Undecodable>> {
        let bad = |kind, reason| Ok(Err(Undecodable { kind, reason }));
        let id = match avro::schema_id(payload) {
            Ok(id) => id,
            Err(e) => return bad("framing", e.to_string()),
        };
        let known = match self.known.get(&id) {
            Some(known) => *known,
            None => {
                let dt = store.schema(id).await?.and_then(|text| {
                    DataType::ALL
                        .iter()
                        .copied()
                        .find(|&dt| avro::schema_for(dt) == text)
                });
                // An unknown id is not cached: it may be registered later (dead-letter replay).
                if dt.is_some() {
                    self.known.insert(id, dt);
                }
                dt
            }
        };
        let Some(dt) = known else {
            return bad(
                "unknown_schema",
                format!("schema id {id} is not a K2 record schema"),
            );
        };
        if dt != expected {
            return bad("wrong_type", format!("a {dt} record on a {expected} topic"));
        }
        Ok(
            avro::decode_datum(dt, &payload[avro::HEADER_LEN..]).map_err(|e| Undecodable {
                kind: "undecodable",
                reason: e.to_string(),
            }),
        )
    }
}
