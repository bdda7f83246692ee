//! The limits of the query runtime.

use std::time::Duration;

/// Limits of the query runtime.
#[derive(Clone, Debug)]
pub struct QueryOptions {
    /// Memory the query operators may reserve, in MiB. Exceeding it fails the query.
    pub memory_limit_mb: u64,
    /// Wall-clock limit per query.
    pub timeout: Duration,
    /// Largest result a free SQL query may return.
    pub max_rows: usize,
    /// How long loaded table metadata is reused before the catalog is asked again. Reuse
    /// keeps Iceberg's manifest cache warm; a commit becomes visible within this time.
    /// Zero asks the catalog on every query.
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
