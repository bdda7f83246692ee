//! The redb files K2 keeps in the data directory (the embedded log, the schema registry,
//! the dead letters): opened for several processes at once, worked on off the async
//! threads, and read through one pattern.

use std::path::Path;

use redb::{
    ConcurrencyMode, Database, Key, ReadOnlyTable, ReadTransaction, ReadableDatabase,
    TableDefinition, TableError, Value,
};

use crate::error::{LogError, Result};

/// Opens (creating it and its directory if needed) a redb file that several processes
/// use at once: an ingest, a lake writer, a registry server.
pub(crate) fn open_shared(path: &Path, what: &str, cache_bytes: usize) -> Result<Database> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| LogError::storage(format!("creating {}", dir.display()), e))?;
    }
    Database::builder()
        .set_cache_size(cache_bytes)
        .set_concurrency_mode(ConcurrencyMode::MultiWriter)
        .create(path)
        .map_err(|e| LogError::storage(format!("opening the {what} {}", path.display()), e))
}

/// Runs redb work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| LogError::storage("a storage worker thread", e))?
}

/// A read transaction of `db`; `context` says what is being read, for errors.
pub(crate) fn reading(db: &Database, context: &str) -> Result<ReadTransaction> {
    db.begin_read()
        .map_err(|e| LogError::storage(context.to_string(), e))
}

/// Table `def` in `txn`; None when no write ever created it.
pub(crate) fn table<K: Key + 'static, V: Value + 'static>(
    txn: &ReadTransaction,
    def: TableDefinition<K, V>,
    context: &str,
) -> Result<Option<ReadOnlyTable<K, V>>> {
    match txn.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(LogError::storage(context.to_string(), e)),
    }
}

/// A failed read of a table, as the log's error.
pub(crate) fn failed(context: &str) -> impl Fn(redb::StorageError) -> LogError + '_ {
    move |e| LogError::storage(context.to_string(), e)
}
