//! The lake crate's error type. Every variant says whether retrying can help: catalog,
//! storage, log and Redis failures may pass; bad queries, corrupt data and conflicts
//! between writers do not. A message carries its cause (`context: cause`), so the cause is
//! not repeated as the error's `source()`.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("{context}: {cause}")]
    Catalog {
        context: String,
        cause: Box<iceberg::Error>,
    },
    /// A local file (state, audit, warehouse on disk) could not be read or written.
    #[error("{context}: {cause}")]
    Io {
        context: String,
        cause: std::io::Error,
    },
    /// The warehouse's object store (a local directory or an S3 bucket) failed a request.
    #[error("{context}: {cause}")]
    Storage {
        context: String,
        cause: Box<object_store::Error>,
    },
    #[error("{context}: {cause}")]
    Arrow {
        context: String,
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Log(#[from] k2_log::LogError),
    /// The query engine could not plan or run a caller's query (SQL text, a filter).
    #[error("query failed: {0}")]
    Query(String),
    /// The engine failed on a query of K2's own: a fault of K2 or of the storage under
    /// it, never of the caller.
    #[error("{context}: {cause}")]
    Engine {
        context: String,
        cause: Box<datafusion::error::DataFusionError>,
    },
    #[error("only read-only queries are allowed: {0}")]
    NotReadOnly(String),
    #[error("query exceeded its {0:?} timeout; narrow the time range or raise query.timeout")]
    Timeout(Duration),
    #[error(
        "query exceeded the query memory limit of {limit_mb} MiB; narrow the query or raise query.memory_limit_mb ({detail})"
    )]
    MemoryLimit { limit_mb: u64, detail: String },
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{context}: {cause}")]
    Redis {
        context: String,
        cause: redis::RedisError,
    },
    /// A snapshot's K2 marks cannot be read: resuming from it would be a guess.
    #[error("snapshot {snapshot_id} has an unreadable {key}: {detail}")]
    CorruptSnapshot {
        snapshot_id: i64,
        key: &'static str,
        detail: String,
    },
    /// A file K2 wrote (state, audit) cannot be read back.
    #[error("{}: {detail}", path.display())]
    CorruptFile { path: PathBuf, detail: String },
    /// Data read from the lake or built for it is not in the shape K2 writes.
    #[error("{0}")]
    CorruptData(String),
    /// Another writer moved the table under this one (or this writer's claims lapsed):
    /// the writer stops uncommitted and a restart resumes from the lake.
    #[error("{table}: {detail}; restart to resume")]
    Conflict { table: String, detail: String },
    /// A task of the lake's own ended without its answer (it panicked or was cancelled).
    #[error("{what} ended without finishing: {detail}")]
    Task { what: String, detail: String },
    #[error(
        "{dependency} still failing after {attempts} attempts over {seconds:.1}s, giving up: {last}"
    )]
    Exhausted {
        dependency: &'static str,
        attempts: u32,
        seconds: f64,
        last: Box<LakeError>,
    },
    /// Told to stop while a dependency was failing: no retry is waited for. Nothing was
    /// committed past the last commit; what was read stays in the log for the next start.
    #[error("stopped while {dependency} was failing (not retried): {last}")]
    Stopped {
        dependency: &'static str,
        last: String,
    },
}

impl LakeError {
    pub fn is_retryable(&self) -> bool {
        match self {
            LakeError::Catalog { cause, .. } => {
                cause.retryable() || matches!(cause.kind(), iceberg::ErrorKind::Unexpected)
            }
            LakeError::Io { .. } => true,
            // Bad configuration (no such bucket, refused credentials) does not pass.
            LakeError::Storage { cause, .. } => !matches!(
                **cause,
                object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
                    | object_store::Error::NotSupported { .. }
                    | object_store::Error::NotImplemented { .. }
                    | object_store::Error::UnknownConfigurationKey { .. }
            ),
            LakeError::Log(e) => e.is_retryable(),
            LakeError::Timeout(_) => true,
            LakeError::Engine { cause, .. } => matches!(
                cause.find_root(),
                datafusion::error::DataFusionError::IoError(_)
                    | datafusion::error::DataFusionError::ObjectStore(_)
            ),
            LakeError::Redis { cause, .. } => crate::integrity::redis::is_retryable(cause),
            LakeError::Arrow { .. }
            | LakeError::Query(_)
            | LakeError::NotReadOnly(_)
            | LakeError::MemoryLimit { .. }
            | LakeError::InvalidArgument(_)
            | LakeError::NotFound(_)
            | LakeError::CorruptSnapshot { .. }
            | LakeError::CorruptFile { .. }
            | LakeError::CorruptData(_)
            | LakeError::Conflict { .. }
            | LakeError::Task { .. }
            | LakeError::Exhausted { .. }
            | LakeError::Stopped { .. } => false,
        }
    }

    pub(crate) fn catalog(context: impl Into<String>, source: iceberg::Error) -> Self {
        LakeError::Catalog {
            context: context.into(),
            cause: Box::new(source),
        }
    }

    pub(crate) fn redis(context: impl Into<String>, source: redis::RedisError) -> Self {
        LakeError::Redis {
            context: context.into(),
            cause: source,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        LakeError::Io {
            context: context.into(),
            cause: source,
        }
    }

    pub(crate) fn storage(context: impl Into<String>, source: object_store::Error) -> Self {
        LakeError::Storage {
            context: context.into(),
            cause: Box::new(source),
        }
    }

    pub(crate) fn arrow(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        LakeError::Arrow {
            context: context.into(),
            cause: Box::new(source),
        }
    }

    /// A query of K2's own (not a user's SQL) that the engine could not run.
    pub(crate) fn engine(
        context: impl std::fmt::Display,
        source: datafusion::error::DataFusionError,
    ) -> Self {
        LakeError::Engine {
            context: context.to_string(),
            cause: Box::new(source),
        }
    }

    /// A task that ended without its answer.
    pub(crate) fn task(what: impl Into<String>, e: tokio::task::JoinError) -> Self {
        LakeError::Task {
            what: what.into(),
            detail: e.to_string(),
        }
    }

    pub(crate) fn conflict(table: impl std::fmt::Display, detail: impl Into<String>) -> Self {
        LakeError::Conflict {
            table: table.to_string(),
            detail: detail.into(),
        }
    }
}

pub type Result<T, E = LakeError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_may_pass_and_the_rest_does_not() {
        let io = LakeError::io("writing", std::io::ErrorKind::StorageFull.into());
        assert!(io.is_retryable());
        let refused = LakeError::redis(
            "claiming",
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into(),
        );
        assert!(refused.is_retryable(), "{refused}");
        for permanent in [
            LakeError::CorruptData("a stored id is not 16 bytes".into()),
            LakeError::conflict("trades", "positions committed by another writer"),
            LakeError::CorruptSnapshot {
                snapshot_id: 7,
                key: "k2.log-offsets",
                detail: "expected value".into(),
            },
            LakeError::Task {
                what: "the trades commit".into(),
                detail: "panicked".into(),
            },
        ] {
            assert!(!permanent.is_retryable(), "{permanent}");
        }
        assert_eq!(
            LakeError::conflict("trades", "claims lapsed").to_string(),
            "trades: claims lapsed; restart to resume"
        );
    }
}
