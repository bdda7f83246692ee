//! The sections of `k2.toml` this crate owns: `[log]` (with `[log.kafka]`), `[registry]`
//! and `[dlq]`: their types, defaults and checks.

use k2_model::Secret;
use std::path::PathBuf;
use std::time::Duration;

use k2_model::ConfigError;
use serde::Deserialize;

use crate::kafka::KafkaOptions;
use crate::registry::RegistryAccess;

/// Which log keeps the records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogBackend {
    /// redb files in the data directory: no external service.
    #[default]
    Embedded,
    /// A Kafka-protocol cluster (`[log.kafka]`).
    Kafka,
}

impl LogBackend {
    pub fn name(self) -> &'static str {
        match self {
            LogBackend::Embedded => "embedded",
            LogBackend::Kafka => "kafka",
        }
    }
}

/// `[log]`: where records are kept between capture and the lake.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub backend: LogBackend,
    /// The cluster, when `backend = "kafka"`.
    pub kafka: KafkaOptions,
    /// Partitions of the trades and quotes topics when K2 creates them.
    pub partitions: u32,
    /// Rows per append when ingesting files.
    pub ingest_chunk_rows: usize,
    /// Embedded log: records older than this go once every lake writer committed them
    /// (`0s`: kept however old). A Kafka cluster applies its own topics' retention.
    #[serde(with = "humantime_serde")]
    pub retention: std::time::Duration,
    /// Embedded log: the oldest committed records go while the log holds more than this
    /// many bytes (0: no bound).
    pub retention_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            backend: LogBackend::Embedded,
            kafka: KafkaOptions::default(),
            partitions: 4,
            ingest_chunk_rows: 50_000,
            retention: std::time::Duration::from_secs(24 * 3600),
            retention_bytes: 0,
        }
    }
}

impl LogConfig {
    /// What the embedded log keeps.
    pub fn retention(&self) -> crate::embedded::Retention {
        crate::embedded::Retention {
            age: self.retention,
            bytes: self.retention_bytes,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.backend == LogBackend::Kafka {
            self.kafka.validate()?;
        }
        if !(1..=1024).contains(&self.partitions) {
            return Err(ConfigError::new(
                "log.partitions",
                format!("must be between 1 and 1024, not {}", self.partitions),
            ));
        }
        if self.ingest_chunk_rows == 0 {
            return Err(ConfigError::new(
                "log.ingest_chunk_rows",
                "must be positive",
            ));
        }
        Ok(())
    }
}

/// `[registry]`: where schemas are registered and resolved.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// A Confluent-compatible registry shared by several deployments
    /// (`http://host:8081`), with `log.backend = "kafka"`. Empty: K2's own registry in the
    /// data directory (served by `k2 registry serve`). `https://` verifies the server's
    /// certificate against the public web roots and `ca_file`.
    pub url: String,
    /// A PEM file of further certificate authorities to trust (a private CA). Empty: the
    /// public web roots only.
    pub ca_file: String,
    /// HTTP basic credentials for the registry (Confluent Cloud: an API key and its
    /// secret; pass the secret as `K2_REGISTRY__PASSWORD`). Empty: none.
    pub username: String,
    pub password: Secret,
}

impl RegistryConfig {
    pub fn validate(&self, backend: LogBackend) -> Result<(), ConfigError> {
        if self.url.is_empty()
            && !(self.ca_file.is_empty() && self.username.is_empty() && self.password.is_empty())
        {
            return Err(ConfigError::new(
                "registry",
                "ca_file, username and password apply to a shared registry: set registry.url",
            ));
        }
        if !self.url.is_empty() && backend != LogBackend::Kafka {
            return Err(ConfigError::new(
                "registry.url",
                "needs log.backend = 'kafka': the embedded log keeps its schemas with its records",
            ));
        }
        Ok(())
    }

    /// How to reach the shared registry, each request bounded by `timeout`.
    pub fn access(&self, timeout: Duration) -> RegistryAccess {
        RegistryAccess {
            url: self.url.clone(),
            timeout,
            ca_file: (!self.ca_file.is_empty()).then(|| PathBuf::from(&self.ca_file)),
            username: self.username.clone(),
            password: self.password.clone(),
        }
    }
}

/// `[dlq]`: the dead-letter store.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DlqConfig {
    /// Letters kept; the oldest go first beyond it.
    pub max_entries: u64,
}

impl Default for DlqConfig {
    fn default() -> Self {
        DlqConfig {
            max_entries: 1_000_000,
        }
    }
}

impl DlqConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_entries == 0 {
            return Err(ConfigError::new("dlq.max_entries", "must be positive"));
        }
        Ok(())
    }
}
