//! `[query]`: the limits of the query runtime.

use std::time::Duration;

use k2_model::ConfigError;
use serde::Deserialize;

/// `[query]`: limits of the query runtime.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryOptions {
    /// Memory the query operators may reserve, in MiB. Exceeding it fails the query.
    pub memory_limit_mb: u64,
    /// Wall-clock limit per query.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Largest result a free SQL query may return.
    pub max_rows: usize,
    /// How long loaded table metadata is reused before the catalog is asked again. Reuse
    /// keeps Iceberg's manifest cache warm; a commit becomes visible within this time.
    /// Zero asks the catalog on every query.
    #[serde(with = "humantime_serde")]
    pub metadata_refresh: Duration,
    /// Parquet footers (with their page indexes) kept decoded between queries, in MiB;
    /// least recently used first out. Zero keeps none.
    pub file_metadata_cache_mb: u64,
}

impl Default for QueryOptions {
    fn default() -> Self {
        QueryOptions {
            memory_limit_mb: 1024,
            timeout: Duration::from_secs(30),
            max_rows: 100_000,
            metadata_refresh: Duration::from_secs(1),
            file_metadata_cache_mb: 64,
        }
    }
}

impl QueryOptions {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, ok) in [
            ("memory_limit_mb", self.memory_limit_mb > 0),
            ("timeout", !self.timeout.is_zero()),
            ("max_rows", self.max_rows > 0),
        ] {
            if !ok {
                return Err(ConfigError::new(format!("query.{key}"), "must be positive"));
            }
        }
        Ok(())
    }
}
