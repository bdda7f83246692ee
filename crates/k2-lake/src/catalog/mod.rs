//! `[catalog]`: which Iceberg catalog holds K2's tables, and opening it.
//!
//! - [`sql`] — Iceberg's SQL catalog: SQLite in the data directory by default, or a
//!   PostgreSQL database shared by several writers and readers.
//! - [`rest`] — any Iceberg REST catalog (`k2 catalog serve`, or another implementation of
//!   the spec), with a bearer token or OAuth2 client credentials.
//!
//! Either way the tables' files are in the [`Warehouse`].

pub mod rest;
pub mod sql;

use k2_model::Secret;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use iceberg::Catalog;
use k2_model::ConfigError;
use serde::Deserialize;

use crate::error::Result;
use crate::table_commit::TableCommitter;
use crate::tables::ensure_tables;
use crate::warehouse::Warehouse;

pub use sql::{open_catalog, open_catalog_at};

/// `[catalog]`: where the Iceberg catalog lives.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// Empty: SQLite in the data directory. Else `postgres://user[:password]@host:port/db`
    /// (or a `sqlite:` URI) for the SQL catalog, or `http(s)://host:port[/path]` for a REST
    /// catalog.
    pub uri: String,
    /// Catalog name inside the database (deployments sharing a database differ by name);
    /// for a REST catalog, the warehouse name sent to it.
    pub name: String,
    /// REST: a bearer token sent with every request.
    pub token: Secret,
    /// REST: OAuth2 client credentials `ID:SECRET`, exchanged for a token at the catalog's
    /// `/v1/oauth/tokens`.
    pub credential: Secret,
    /// REST: the longest one request to the catalog may take.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig {
            uri: String::new(),
            name: "k2".into(),
            token: Secret::default(),
            credential: Secret::default(),
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl std::fmt::Debug for CatalogConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogConfig")
            .field("uri", &redact(&self.uri))
            .field("name", &self.name)
            .field("token", &self.token)
            .field("credential", &self.credential)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// Which kind of catalog a `[catalog]` section names.
enum Kind {
    Sql,
    Rest,
}

impl CatalogConfig {
    fn kind(&self) -> Option<Kind> {
        let sql = ["sqlite:", "postgres://", "postgresql://"];
        if self.uri.is_empty() || sql.iter().any(|p| self.uri.starts_with(p)) {
            Some(Kind::Sql)
        } else if self.uri.starts_with("http://") || self.uri.starts_with("https://") {
            Some(Kind::Rest)
        } else {
            None
        }
    }

    pub fn is_rest(&self) -> bool {
        matches!(self.kind(), Some(Kind::Rest))
    }

    pub fn validate(&self) -> std::result::Result<(), ConfigError> {
        match self.kind() {
            None => {
                return Err(ConfigError::new(
                    "catalog.uri",
                    format!(
                        "'{}' is none of sqlite:, postgres:// (a SQL catalog) or http(s):// \
                         (a REST catalog)",
                        redact(&self.uri)
                    ),
                ));
            }
            Some(Kind::Sql) if !self.token.is_empty() || !self.credential.is_empty() => {
                return Err(ConfigError::new(
                    "catalog.token",
                    "token and credential are for a REST catalog (catalog.uri = http(s)://…)",
                ));
            }
            _ => {}
        }
        if !self.token.is_empty() && !self.credential.is_empty() {
            return Err(ConfigError::new(
                "catalog.credential",
                "give either a token or a credential, not both",
            ));
        }
        if self.name.is_empty() {
            return Err(ConfigError::new("catalog.name", "must not be empty"));
        }
        if self.request_timeout.is_zero() {
            return Err(ConfigError::new(
                "catalog.request_timeout",
                "must be above 0",
            ));
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
        let catalog: Arc<dyn Catalog> = match self.kind() {
            Some(Kind::Rest) => rest::open(self, warehouse).await?,
            _ if self.uri.is_empty() => open_catalog(sqlite_path, warehouse).await?,
            _ => open_catalog_at(&self.uri, &self.name, warehouse).await?,
        };
        ensure_tables(catalog.as_ref()).await?;
        Ok(catalog)
    }

    /// A committer of K2's own table updates (tags, compactions) to this catalog.
    pub async fn committer(
        &self,
        catalog: Arc<dyn Catalog>,
        sqlite_path: &Path,
    ) -> Result<TableCommitter> {
        match self.kind() {
            Some(Kind::Rest) => TableCommitter::rest(catalog, rest::RestAccess::open(self).await?),
            _ if self.uri.is_empty() => {
                TableCommitter::sql(catalog, &sql::sqlite_uri(sqlite_path), &self.name).await
            }
            _ => TableCommitter::sql(catalog, &self.uri, &self.name).await,
        }
    }
}

/// A database URI without its password, for messages.
pub(crate) fn redact(uri: &str) -> String {
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
