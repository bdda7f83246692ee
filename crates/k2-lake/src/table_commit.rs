//! Table updates K2 builds itself — a tag on a snapshot, its removal — committed the way
//! Iceberg's SQL catalog commits any update: the requirements checked against the table's
//! current metadata, the updates applied to it, the new metadata file written next to the
//! old one, and the catalog's pointer moved by a compare-and-swap on the old location (a
//! commit that lost a race fails as a retryable conflict, and nothing is half done).
//!
//! iceberg-rust 0.10 commits only through its own transaction actions (a `TableCommit`
//! cannot be built outside the crate) and has no action for references; the catalog's
//! table layout (`iceberg_tables`) is the one every Iceberg SQL catalog shares.

use std::str::FromStr;
use std::sync::Arc;

use iceberg::table::Table;
use iceberg::{Catalog, MetadataLocation, TableRequirement, TableUpdate};
use sqlx::AnyPool;

use crate::error::{LakeError, Result};
use crate::tables::LakeTable;

/// Commits updates to the tables of one SQL catalog.
#[derive(Clone)]
pub struct TableCommitter {
    catalog: Arc<dyn Catalog>,
    pool: AnyPool,
    /// The catalog's name inside the database.
    name: String,
    dollar_params: bool,
}

impl TableCommitter {
    /// A committer for `catalog`, whose rows are in the database at `uri` under `name`.
    pub async fn open(catalog: Arc<dyn Catalog>, uri: &str, name: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let pool = sqlx::pool::PoolOptions::new()
            .max_connections(2)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(uri)
            .await
            .map_err(|e| database("opening the catalog database", e))?;
        Ok(TableCommitter {
            catalog,
            pool,
            name: name.to_string(),
            dollar_params: uri.starts_with("postgres"),
        })
    }

    /// Applies `updates` to `table` if `requirements` hold of its current metadata;
    /// returns the table as committed.
    pub async fn commit(
        &self,
        table: LakeTable,
        requirements: Vec<TableRequirement>,
        updates: Vec<TableUpdate>,
    ) -> Result<Table> {
        let ident = table.ident();
        let current = self
            .catalog
            .load_table(&ident)
            .await
            .map_err(|e| LakeError::catalog(format!("loading {table}"), e))?;
        let failed =
            |what: &str, e: iceberg::Error| LakeError::catalog(format!("{what} {table}"), e);
        for requirement in &requirements {
            requirement
                .check(Some(current.metadata()))
                .map_err(|e| LakeError::conflict(table, e.message().to_string()))?;
        }
        let old_location = current
            .metadata_location_result()
            .map_err(|e| failed("locating the metadata of", e))?
            .to_string();
        let mut builder = current
            .metadata()
            .clone()
            .into_builder(Some(old_location.clone()));
        for update in updates {
            builder = update
                .apply(builder)
                .map_err(|e| LakeError::InvalidArgument(format!("{table}: {}", e.message())))?;
        }
        let metadata = builder
            .build()
            .map_err(|e| LakeError::InvalidArgument(format!("{table}: {}", e.message())))?
            .metadata;
        let new_location = MetadataLocation::from_str(&old_location)
            .map_err(|e| failed("reading the metadata location of", e))?
            .with_next_version()
            .with_new_metadata(&metadata);
        metadata
            .write_to(current.file_io(), &new_location)
            .await
            .map_err(|e| failed("writing the metadata of", e))?;
        let new_location = new_location.to_string();
        let sql = "UPDATE iceberg_tables SET metadata_location = ?, previous_metadata_location = ? \
                   WHERE catalog_name = ? AND table_namespace = ? AND table_name = ? \
                   AND (iceberg_type = 'TABLE' OR iceberg_type IS NULL) AND metadata_location = ?";
        let sql = if self.dollar_params {
            numbered(sql)
        } else {
            sql.to_string()
        };
        let moved = sqlx::query(&sql)
            .bind(&new_location)
            .bind(&old_location)
            .bind(&self.name)
            .bind(ident.namespace().join("."))
            .bind(ident.name())
            .bind(&old_location)
            .execute(&self.pool)
            .await
            .map_err(|e| database(&format!("committing {table}"), e))?;
        if moved.rows_affected() == 0 {
            return Err(LakeError::conflict(
                table,
                "another commit moved the table first; nothing was changed",
            ));
        }
        self.catalog
            .load_table(&ident)
            .await
            .map_err(|e| LakeError::catalog(format!("loading {table}"), e))
    }
}

/// A failure of the catalog's database, as the catalog reports its own.
fn database(what: &str, e: sqlx::Error) -> LakeError {
    LakeError::catalog(
        what,
        iceberg::Error::new(iceberg::ErrorKind::Unexpected, e.to_string()),
    )
}

/// `?` placeholders as PostgreSQL's `$1`, `$2`, ….
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(super::numbered("a = ? AND b = ?"), "a = $1 AND b = $2");
    }
}
