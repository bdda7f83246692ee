//! Table updates K2 builds itself — a tag on a snapshot, its removal, a compaction —
//! committed to a REST catalog as the spec's commit request, and to a SQL catalog the way
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
use iceberg::{Catalog, MetadataLocation, TableIdent, TableRequirement, TableUpdate};
use sqlx::AnyPool;

use crate::catalog::rest::{Refused, RestAccess};
use crate::error::{LakeError, Result};

/// Commits updates to the tables of one catalog.
#[derive(Clone)]
pub struct TableCommitter {
    catalog: Arc<dyn Catalog>,
    target: Arc<Target>,
}

enum Target {
    /// The rows of a SQL catalog, moved by compare-and-swap.
    Sql {
        pool: AnyPool,
        /// The catalog's name inside the database.
        name: String,
        dollar_params: bool,
    },
    /// A REST catalog, which checks and applies the updates itself.
    Rest(RestAccess),
}

impl TableCommitter {
    /// A committer for the SQL `catalog`, whose rows are in the database at `uri` under
    /// `name`.
    pub async fn sql(catalog: Arc<dyn Catalog>, uri: &str, name: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let pool = sqlx::pool::PoolOptions::new()
            .max_connections(2)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(uri)
            .await
            .map_err(|e| database("opening the catalog database", e))?;
        Ok(TableCommitter {
            catalog,
            target: Arc::new(Target::Sql {
                pool,
                name: name.to_string(),
                dollar_params: uri.starts_with("postgres"),
            }),
        })
    }

    /// A committer for the REST `catalog`, posting through `access`.
    pub fn rest(catalog: Arc<dyn Catalog>, access: RestAccess) -> Result<Self> {
        Ok(TableCommitter {
            catalog,
            target: Arc::new(Target::Rest(access)),
        })
    }

    /// Applies `updates` to `table` if `requirements` hold of its current metadata;
    /// returns the table as committed. A requirement that fails, or a commit that another
    /// one overtook, is a [`LakeError::Conflict`] and changes nothing.
    pub async fn commit(
        &self,
        table: &TableIdent,
        requirements: Vec<TableRequirement>,
        updates: Vec<TableUpdate>,
    ) -> Result<Table> {
        match self.target.as_ref() {
            Target::Rest(access) => {
                match access.commit(table, requirements, updates).await {
                    Ok(()) => {}
                    Err(Refused::Conflict(detail)) => {
                        return Err(LakeError::conflict(table, detail));
                    }
                    Err(Refused::Failed(e)) => return Err(e),
                }
                self.catalog
                    .load_table(table)
                    .await
                    .map_err(|e| LakeError::catalog(format!("loading {table}"), e))
            }
            Target::Sql {
                pool,
                name,
                dollar_params,
            } => {
                self.commit_sql(table, requirements, updates, pool, name, *dollar_params)
                    .await
            }
        }
    }

    async fn commit_sql(
        &self,
        table: &TableIdent,
        requirements: Vec<TableRequirement>,
        updates: Vec<TableUpdate>,
        pool: &AnyPool,
        name: &str,
        dollar_params: bool,
    ) -> Result<Table> {
        let current = self
            .catalog
            .load_table(table)
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
        let sql = if dollar_params {
            numbered(sql)
        } else {
            sql.to_string()
        };
        let moved = sqlx::query(&sql)
            .bind(&new_location)
            .bind(&old_location)
            .bind(name)
            .bind(table.namespace().join("."))
            .bind(table.name())
            .bind(&old_location)
            .execute(pool)
            .await
            .map_err(|e| database(&format!("committing {table}"), e))?;
        if moved.rows_affected() == 0 {
            return Err(LakeError::conflict(
                table,
                "another commit moved the table first; nothing was changed",
            ));
        }
        Table::builder()
            .identifier(table.clone())
            .file_io(current.file_io().clone())
            .metadata(metadata)
            .metadata_location(new_location)
            .runtime(iceberg::Runtime::current())
            .build()
            .map_err(|e| failed("reading back", e))
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
