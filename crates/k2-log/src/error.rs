//! The log crate's error type.

/// What can go wrong in a durable store. `Storage` failures may pass (disk full, a lock
/// held by another process) and are retryable; the rest are the caller's mistake.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
    #[error("topic '{topic}' has {partitions} partitions; partition {partition} does not exist")]
    UnknownPartition {
        topic: String,
        partitions: u32,
        partition: u32,
    },
    #[error("topic '{topic}' already exists with {existing} partitions, not {requested}")]
    PartitionMismatch {
        topic: String,
        existing: u32,
        requested: u32,
    },
    #[error("invalid topic spec: {0}")]
    InvalidSpec(String),
    #[error("{context}: {cause}")]
    Storage {
        context: String,
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("invalid schema: {0}")]
    InvalidSchema(String),
    #[error("schema refused for subject '{subject}': {reason}")]
    IncompatibleSchema { subject: String, reason: String },
    /// Refused for good by the broker or the stores (a record too large, an offset no
    /// longer kept, no permission): retrying cannot help.
    #[error("{0}")]
    Rejected(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl LogError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, LogError::Storage { .. })
    }

    pub(crate) fn storage(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        let context = context.into();
        if refuses_until_reopened(&source) {
            return LogError::Rejected(format!(
                "{context}: an earlier write to the store's file failed (a full disk, say), and \
                 the open file refuses all work from then on; free the space and restart K2"
            ));
        }
        LogError::Storage {
            context,
            cause: Box::new(source),
        }
    }
}

/// After a failed write, redb refuses every later call on that open file with
/// `PreviousIo` until it is opened again: retrying through the same handle cannot pass.
fn refuses_until_reopened(e: &dyn std::any::Any) -> bool {
    use redb::StorageError::PreviousIo;
    // redb's error types that carry a `StorageError` as their `Storage` variant.
    macro_rules! wrapped {
        ($($wrapper:ident),*) => {
            false $(|| matches!(e.downcast_ref(), Some(redb::$wrapper::Storage(PreviousIo))))*
        };
    }
    matches!(e.downcast_ref(), Some(PreviousIo))
        || matches!(e.downcast_ref(), Some(redb::Error::PreviousIo))
        || wrapped!(TransactionError, TableError, CommitError, DatabaseError)
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_poisoned_by_a_failed_write_is_not_retried() {
        for e in [
            LogError::storage("appending", redb::StorageError::PreviousIo),
            LogError::storage("appending", redb::Error::PreviousIo),
            LogError::storage(
                "committing",
                redb::CommitError::Storage(redb::StorageError::PreviousIo),
            ),
            LogError::storage(
                "opening",
                redb::TableError::Storage(redb::StorageError::PreviousIo),
            ),
        ] {
            assert!(!e.is_retryable(), "{e}");
            assert!(e.to_string().contains("restart K2"), "{e}");
        }
        let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
        let e = LogError::storage("appending", redb::StorageError::Io(full));
        assert!(e.is_retryable(), "a full disk itself may pass: {e}");
    }
}
