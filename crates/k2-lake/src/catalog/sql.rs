//! Iceberg's SQL catalog, on SQLite or PostgreSQL.

use std::path::Path;
use std::sync::Arc;

use iceberg::CatalogBuilder;
use iceberg_catalog_sql::{SqlBindStyle, SqlCatalog, SqlCatalogBuilder};

use super::redact;
use crate::error::{LakeError, Result};
use crate::warehouse::Warehouse;

pub(crate) fn sqlite_uri(path: &Path) -> String {
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
