//! `[catalog]`: which Iceberg catalog holds K2's tables, and opening it. The SQL catalog
//! lives in SQLite in the data directory by default, or in a PostgreSQL database shared by
//! several writers and readers; the tables' files are in the [`Warehouse`].

use std::path::Path;
use std::sync::Arc;

use iceberg::{Catalog, CatalogBuilder};
use iceberg_catalog_sql::{SqlBindStyle, SqlCatalog, SqlCatalogBuilder};
use k2_model::ConfigError;
use serde::Deserialize;

use crate::error::{LakeError, Result};
use crate::table_commit::TableCommitter;
use crate::tables::ensure_tables;
use crate::warehouse::Warehouse;

/// `[catalog]`: where the Iceberg SQL catalog lives.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// Empty: SQLite in the data directory. Else `postgres://user[:password]@host:port/db`
    /// (or a `sqlite:` URI).
    pub uri: String,
    /// Catalog name inside the database (deployments sharing a database differ by name).
    pub name: String,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig {
            uri: String::new(),
            name: "k2".into(),
        }
    }
}

impl CatalogConfig {
    pub fn validate(&self) -> std::result::Result<(), ConfigError> {
        let known = ["sqlite:", "postgres://", "postgresql://"];
        if !self.uri.is_empty() && !known.iter().any(|p| self.uri.starts_with(p)) {
            return Err(ConfigError::new(
                "catalog.uri",
                format!("'{}' is neither sqlite: nor postgres://", redact(&self.uri)),
            ));
        }
        if self.name.is_empty() {
            return Err(ConfigError::new("catalog.name", "must not be empty"));
        }
        Ok(())
    }

    /// The catalog, with K2's tables in it: SQLite at `sqlite_path` when no URI is
    /// configured; new tables in `warehouse`.
    pub async fn open(
        &self,
        sqlite_path: &Path,
        warehouse: &Warehouse,
    ) -> Result<Arc<dyn Catalog>> {
        let catalog = if self.uri.is_empty() {
            open_catalog(sqlite_path, warehouse).await?
        } else {
            open_catalog_at(&self.uri, &self.name, warehouse).await?
        };
        ensure_tables(catalog.as_ref()).await?;
        Ok(catalog)
    }
}

impl CatalogConfig {
    /// A committer of K2's own table updates (tags) to the catalog's database.
    pub async fn committer(
        &self,
        catalog: Arc<dyn Catalog>,
        sqlite_path: &Path,
    ) -> Result<TableCommitter> {
        let uri = if self.uri.is_empty() {
            sqlite_uri(sqlite_path)
        } else {
            self.uri.clone()
        };
        TableCommitter::open(catalog, &uri, &self.name).await
    }
}

fn sqlite_uri(path: &Path) -> String {
    format!("sqlite:{}?mode=rwc", path.display())
}

/// Opens the SQL catalog on SQLite at `catalog_path`, creating new tables in `warehouse`.
pub async fn open_catalog(catalog_path: &Path, warehouse: &Warehouse) -> Result<Arc<SqlCatalog>> {
    if let Some(parent) = catalog_path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| LakeError::io(format!("creating {}", parent.display()), e))?;
    }
    open_catalog_at(&sqlite_uri(catalog_path), "k2", warehouse).await
}

/// The Iceberg SQL catalog in the database at `uri` — `sqlite:PATH?mode=rwc` or
/// `postgres://user@host:port/db` — under the catalog `name` (several K2 deployments can
/// share one database under different names).
pub async fn open_catalog_at(
    uri: &str,
    name: &str,
    warehouse: &Warehouse,
) -> Result<Arc<SqlCatalog>> {
    let bind_style = if uri.starts_with("postgres://") || uri.starts_with("postgresql://") {
        SqlBindStyle::DollarNumeric
    } else if uri.starts_with("sqlite:") {
        SqlBindStyle::QMark
    } else {
        return Err(LakeError::InvalidArgument(format!(
            "catalog uri '{}' is neither sqlite: nor postgres://",
            redact(uri)
        )));
    };
    let catalog = SqlCatalogBuilder::default()
        .uri(uri)
        .warehouse_location(warehouse.location())
        .sql_bind_style(bind_style)
        .with_storage_factory(warehouse.storage())
        .load(name, warehouse.props().clone())
        .await
        .map_err(|e| LakeError::catalog(format!("opening the catalog at {}", redact(uri)), e))?;
    Ok(Arc::new(catalog))
}

/// A database URI without its password, for messages.
fn redact(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &uri[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &uri[..scheme + 3], &uri[at..]),
                None => uri.to_string(),
            }
        }
        _ => uri.to_string(),
    }
}
