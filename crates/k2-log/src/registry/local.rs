//! The registry's own storage: its tables in a redb database. In embedded mode they live
//! in the log's database, because the ids describe the bytes in the log; with Kafka they
//! live in their own file in the data directory, and K2 serves them over the registry
//! REST API.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableTable, TableDefinition};

use super::compatibility::{Compatibility, parse};
use super::{SchemaStore, SubjectVersion};
use crate::error::{LogError, Result};
use crate::store::{blocking, failed, open_shared, reading, table};

const SCHEMAS: TableDefinition<u32, &str> = TableDefinition::new("schemas");
const SCHEMA_IDS: TableDefinition<&str, u32> = TableDefinition::new("schema_ids");
/// `subject\0version` → schema id.
const SUBJECT_VERSIONS: TableDefinition<&str, u32> = TableDefinition::new("subject_versions");
/// Subject (or "" for the global default) → compatibility level.
const COMPATIBILITY: TableDefinition<&str, &str> = TableDefinition::new("compatibility");

/// The registry's tables in a redb database. Cheap to clone.
#[derive(Clone)]
pub struct LocalSchemas {
    db: Arc<Database>,
}

fn version_key(subject: &str, version: u32) -> String {
    format!("{subject}\u{0}{version:010}")
}

fn err(context: &'static str) -> impl Fn(redb::Error) -> LogError {
    move |e| LogError::storage(context, e)
}

impl LocalSchemas {
    /// The registry in its own file (used with the Kafka backend).
    pub fn open(path: &Path) -> Result<LocalSchemas> {
        let db = open_shared(path, "schema registry", 8 * 1024 * 1024)?;
        Ok(LocalSchemas::in_database(Arc::new(db)))
    }

    /// The registry's tables inside an existing database.
    pub(crate) fn in_database(db: Arc<Database>) -> LocalSchemas {
        LocalSchemas { db }
    }

    /// Versions of a subject, oldest first: (version, id).
    fn versions_in<T: ReadableTable<&'static str, u32>>(
        table: &T,
        subject: &str,
    ) -> Result<Vec<(u32, u32)>> {
        let prefix = format!("{subject}\u{0}");
        let mut out = Vec::new();
        for entry in table
            .range(prefix.as_str()..)
            .map_err(|e| err("reading subject versions")(e.into()))?
        {
            let (k, v) = entry.map_err(|e| err("reading subject versions")(e.into()))?;
            let Some(version) = k.value().strip_prefix(prefix.as_str()) else {
                break;
            };
            let version: u32 = version
                .parse()
                .map_err(|_| LogError::Corrupt(format!("subject version key {:?}", k.value())))?;
            out.push((version, v.value()));
        }
        Ok(out)
    }

    fn compatibility_in<T: ReadableTable<&'static str, &'static str>>(
        table: &T,
        subject: &str,
    ) -> Result<Compatibility> {
        for key in [subject, ""] {
            if let Some(v) = table
                .get(key)
                .map_err(|e| err("reading compatibility")(e.into()))?
            {
                return Compatibility::parse(v.value()).ok_or_else(|| {
                    LogError::Corrupt(format!("compatibility level {:?}", v.value()))
                });
            }
        }
        Ok(Compatibility::Backward)
    }

    /// Registers `schema` under `subject` after checking it against the subject's
    /// compatibility level; the result is the subject's version holding it.
    pub fn register_blocking(&self, subject: &str, schema: &str) -> Result<SubjectVersion> {
        // Not Avro at all: refused before anything else.
        parse(schema)?;
        let e = err("registering schema");
        let txn = self.db.begin_write().map_err(|x| e(x.into()))?;
        let registered = {
            let mut schemas = txn.open_table(SCHEMAS).map_err(|x| e(x.into()))?;
            let mut ids = txn.open_table(SCHEMA_IDS).map_err(|x| e(x.into()))?;
            let mut versions = txn.open_table(SUBJECT_VERSIONS).map_err(|x| e(x.into()))?;
            let levels = txn.open_table(COMPATIBILITY).map_err(|x| e(x.into()))?;
            let existing = ids.get(schema).map_err(|x| e(x.into()))?.map(|v| v.value());
            let history = Self::versions_in(&versions, subject)?;
            if let Some(id) = existing
                && let Some(&(version, _)) = history.iter().find(|(_, i)| *i == id)
            {
                return Ok(SubjectVersion {
                    subject: subject.to_string(),
                    version,
                    id,
                    schema: schema.to_string(),
                });
            }
            let mut earlier = Vec::with_capacity(history.len());
            for (_, id) in &history {
                let text = schemas
                    .get(*id)
                    .map_err(|x| e(x.into()))?
                    .ok_or_else(|| LogError::Corrupt(format!("schema id {id} has no text")))?;
                earlier.push(text.value().to_string());
            }
            let level = Self::compatibility_in(&levels, subject)?;
            level
                .check(&earlier, schema)
                .map_err(|why| LogError::IncompatibleSchema {
                    subject: subject.to_string(),
                    reason: why,
                })?;
            let id = match existing {
                Some(id) => id,
                None => {
                    let id = schemas
                        .last()
                        .map_err(|x| e(x.into()))?
                        .map_or(1, |(k, _)| k.value() + 1);
                    schemas.insert(id, schema).map_err(|x| e(x.into()))?;
                    ids.insert(schema, id).map_err(|x| e(x.into()))?;
                    id
                }
            };
            let version = history.last().map_or(1, |(v, _)| v + 1);
            versions
                .insert(version_key(subject, version).as_str(), id)
                .map_err(|x| e(x.into()))?;
            tracing::info!(subject, id, version, "schema registered");
            SubjectVersion {
                subject: subject.to_string(),
                version,
                id,
                schema: schema.to_string(),
            }
        };
        txn.commit().map_err(|x| e(x.into()))?;
        Ok(registered)
    }

    /// The schema text of an id.
    pub fn schema_blocking(&self, id: u32) -> Result<Option<String>> {
        const WHAT: &str = "reading schema";
        let txn = reading(&self.db, WHAT)?;
        let Some(schemas) = table(&txn, SCHEMAS, WHAT)? else {
            return Ok(None);
        };
        Ok(schemas
            .get(id)
            .map_err(failed(WHAT))?
            .map(|v| v.value().to_string()))
    }

    /// Every subject with at least one version, sorted.
    pub fn subjects_blocking(&self) -> Result<Vec<String>> {
        const WHAT: &str = "listing subjects";
        let txn = reading(&self.db, WHAT)?;
        let Some(versions) = table(&txn, SUBJECT_VERSIONS, WHAT)? else {
            return Ok(Vec::new());
        };
        let mut out: Vec<String> = Vec::new();
        for entry in versions.iter().map_err(failed(WHAT))? {
            let (k, _) = entry.map_err(failed(WHAT))?;
            if let Some((subject, _)) = k.value().split_once('\u{0}')
                && out.last().map(String::as_str) != Some(subject)
            {
                out.push(subject.to_string());
            }
        }
        Ok(out)
    }

    /// A subject's versions, oldest first, with their ids and texts.
    pub fn versions_blocking(&self, subject: &str) -> Result<Vec<SubjectVersion>> {
        const WHAT: &str = "reading subject versions";
        let txn = reading(&self.db, WHAT)?;
        let (Some(versions), Some(schemas)) = (
            table(&txn, SUBJECT_VERSIONS, WHAT)?,
            table(&txn, SCHEMAS, WHAT)?,
        ) else {
            return Ok(Vec::new());
        };
        Self::versions_in(&versions, subject)?
            .into_iter()
            .map(|(version, id)| {
                let schema = schemas
                    .get(id)
                    .map_err(failed(WHAT))?
                    .ok_or_else(|| LogError::Corrupt(format!("schema id {id} has no text")))?
                    .value()
                    .to_string();
                Ok(SubjectVersion {
                    subject: subject.to_string(),
                    version,
                    id,
                    schema,
                })
            })
            .collect()
    }

    /// The compatibility level of a subject (its own, else the global one).
    pub fn compatibility_blocking(&self, subject: Option<&str>) -> Result<Compatibility> {
        const WHAT: &str = "reading compatibility";
        let txn = reading(&self.db, WHAT)?;
        match table(&txn, COMPATIBILITY, WHAT)? {
            Some(t) => Self::compatibility_in(&t, subject.unwrap_or("")),
            None => Ok(Compatibility::Backward),
        }
    }

    /// Sets the level of a subject, or the global default with `None`.
    pub fn set_compatibility_blocking(
        &self,
        subject: Option<&str>,
        level: Compatibility,
    ) -> Result<()> {
        let e = err("setting compatibility");
        let txn = self.db.begin_write().map_err(|x| e(x.into()))?;
        txn.open_table(COMPATIBILITY)
            .map_err(|x| e(x.into()))?
            .insert(subject.unwrap_or(""), level.as_str())
            .map_err(|x| e(x.into()))?;
        txn.commit().map_err(|x| e(x.into()))?;
        Ok(())
    }
}

impl SchemaStore for LocalSchemas {
    fn register(&self, subject: &str, schema: &str) -> impl Future<Output = Result<u32>> + Send {
        let this = self.clone();
        let (subject, schema) = (subject.to_string(), schema.to_string());
        blocking(move || Ok(this.register_blocking(&subject, &schema)?.id))
    }

    fn schema(&self, id: u32) -> impl Future<Output = Result<Option<String>>> + Send {
        let this = self.clone();
        blocking(move || this.schema_blocking(id))
    }
}

#[cfg(test)]
mod tests {
    use k2_model::{DataType, avro};

    use super::*;

    fn fresh() -> (tempfile::TempDir, LocalSchemas) {
        let dir = tempfile::tempdir().unwrap();
        let schemas = LocalSchemas::open(&dir.path().join("registry.redb")).unwrap();
        (dir, schemas)
    }

    const V1: &str = r#"{"type":"record","name":"T","fields":[{"name":"a","type":"long"}]}"#;
    const V2_DEFAULT: &str = r#"{"type":"record","name":"T","fields":[{"name":"a","type":"long"},{"name":"b","type":"string","default":""}]}"#;
    const V2_REQUIRED: &str = r#"{"type":"record","name":"T","fields":[{"name":"a","type":"long"},{"name":"c","type":"string"}]}"#;

    #[tokio::test]
    async fn ids_are_global_and_stable() {
        let (_d, s) = fresh();
        let a = s
            .register("t1-value", r#"{"type":"string"}"#)
            .await
            .unwrap();
        let again = s
            .register("t1-value", r#"{"type":"string"}"#)
            .await
            .unwrap();
        let other_subject = s
            .register("t2-value", r#"{"type":"string"}"#)
            .await
            .unwrap();
        let b = s.register("t3-value", r#"{"type":"long"}"#).await.unwrap();
        assert_eq!(a, again);
        assert_eq!(a, other_subject);
        assert_ne!(a, b);
        assert_eq!(
            s.schema(b).await.unwrap().as_deref(),
            Some(r#"{"type":"long"}"#)
        );
        assert_eq!(s.schema(999).await.unwrap(), None);
        assert_eq!(
            s.subjects_blocking().unwrap(),
            vec!["t1-value", "t2-value", "t3-value"]
        );
        assert_eq!(s.versions_blocking("t1-value").unwrap().len(), 1);
    }

    #[test]
    fn backward_by_default_refuses_a_field_without_default() {
        let (_d, s) = fresh();
        assert_eq!(s.register_blocking("x-value", V1).unwrap().version, 1);
        let err = s.register_blocking("x-value", V2_REQUIRED).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, LogError::IncompatibleSchema { .. }), "{text}");
        assert!(
            text.contains("BACKWARD") && text.contains("x-value"),
            "{text}"
        );
        let v2 = s.register_blocking("x-value", V2_DEFAULT).unwrap();
        assert_eq!(v2.version, 2);
        let versions = s.versions_blocking("x-value").unwrap();
        assert_eq!(
            versions.iter().map(|v| v.version).collect::<Vec<_>>(),
            [1, 2]
        );
        // Registering a known version again is a no-op returning it.
        assert_eq!(s.register_blocking("x-value", V1).unwrap().version, 1);
        assert_eq!(s.versions_blocking("x-value").unwrap().len(), 2);
    }

    #[test]
    fn levels_per_subject_and_global() {
        let (_d, s) = fresh();
        s.register_blocking("n-value", V1).unwrap();
        s.set_compatibility_blocking(Some("n-value"), Compatibility::None)
            .unwrap();
        s.register_blocking("n-value", r#"{"type":"string"}"#)
            .unwrap();
        // FORWARD: the old schema must read the new data, so removing a field without a
        // default from the reader's view is fine, adding a required one is too.
        s.set_compatibility_blocking(None, Compatibility::Forward)
            .unwrap();
        s.register_blocking("f-value", V1).unwrap();
        s.register_blocking("f-value", V2_REQUIRED).unwrap();
        assert_eq!(
            s.compatibility_blocking(Some("f-value")).unwrap(),
            Compatibility::Forward
        );
        assert_eq!(
            s.compatibility_blocking(Some("n-value")).unwrap(),
            Compatibility::None
        );
        assert!(matches!(
            s.register_blocking("bad-value", "{not json"),
            Err(LogError::InvalidSchema(_))
        ));
    }

    #[test]
    fn k2_schemas_are_valid_avro() {
        let (_d, s) = fresh();
        for dt in DataType::ALL {
            s.register_blocking(&format!("{dt}-value"), avro::schema_for(*dt))
                .unwrap();
        }
    }
}
