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
    #[error("{context}: {source}")]
    Storage {
        context: String,
        source: Box<dyn std::error::Error + Send + Sync>,
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
        LogError::Storage {
            context: context.into(),
            source: Box::new(source),
        }
    }
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;
