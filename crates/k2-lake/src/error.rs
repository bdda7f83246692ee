//! The lake crate's error type. Every variant says whether retrying can help: catalog,
//! storage and log failures may pass; bad queries and corrupt data do not.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("{context}: {source}")]
    Catalog {
        context: String,
        source: Box<iceberg::Error>,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Arrow {
        context: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Log(#[from] k2_log::LogError),
    #[error("query failed: {0}")]
    Query(String),
    #[error("only read-only queries are allowed: {0}")]
    NotReadOnly(String),
    #[error(
        "query exceeded its {0:?} timeout; narrow the time range or raise query.timeout_seconds"
    )]
    Timeout(Duration),
    #[error(
        "query exceeded the query memory limit of {limit_mb} MiB; narrow the query or raise query.memory_limit_mb ({detail})"
    )]
    MemoryLimit { limit_mb: u64, detail: String },
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{context}: {source}")]
    Redis {
        context: String,
        source: k2_pipeline::redis::RedisError,
    },
    #[error(
        "{dependency} still failing after {attempts} attempts over {seconds:.1}s, giving up: {source}"
    )]
    Exhausted {
        dependency: &'static str,
        attempts: u32,
        seconds: f64,
        source: Box<LakeError>,
    },
}

impl LakeError {
    pub fn is_retryable(&self) -> bool {
        match self {
            LakeError::Catalog { source, .. } => {
                source.retryable() || matches!(source.kind(), iceberg::ErrorKind::Unexpected)
            }
            LakeError::Io { .. } => true,
            LakeError::Log(e) => e.is_retryable(),
            LakeError::Timeout(_) => true,
            LakeError::Redis { source, .. } => source.is_retryable(),
            _ => false,
        }
    }

    pub(crate) fn catalog(context: impl Into<String>, source: iceberg::Error) -> Self {
        LakeError::Catalog {
            context: context.into(),
            source: Box::new(source),
        }
    }

    pub(crate) fn redis(
        context: impl Into<String>,
        source: k2_pipeline::redis::RedisError,
    ) -> Self {
        LakeError::Redis {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        LakeError::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn arrow(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        LakeError::Arrow {
            context: context.into(),
            source: Box::new(source),
        }
    }
}

pub type Result<T, E = LakeError> = std::result::Result<T, E>;
