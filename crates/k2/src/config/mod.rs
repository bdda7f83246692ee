//! Configuration: each crate's sections composed, read from defaults, then a TOML file,
//! then `K2_…` environment variables, parsed and validated once at start.
//!
//! Every section is owned by the crate that uses it (its type, defaults and checks); this
//! module only composes them, knows the data directory's layout, and accepts the keys of
//! the previous release for one more (`legacy`).
//!
//! An environment variable names a key by its path, sections separated by a double
//! underscore: `K2_DATA_DIR=/var/k2`, `K2_QUERY__TIMEOUT=5s`. Unknown keys are errors (a
//! typo must not silently fall back to a default).

mod env;
mod legacy;
mod secrets;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use anyhow::Context;
use k2_api::{ApiConfig, CatalogServerConfig};
use k2_ingest::FeedsConfig;
use k2_lake::query::QueryOptions;
use k2_lake::{
    CatalogConfig, DedupSection, IntegrityOptions, SequenceSection, Warehouse, WarehouseConfig,
    WriterConfig,
};
use k2_log::{DlqConfig, LogBackend, LogConfig, RegistryConfig};
use serde::Deserialize;

use crate::telemetry::TelemetryConfig;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the log, the catalog, the warehouse and the dead letters live.
    pub data_dir: PathBuf,
    /// After SIGINT/SIGTERM a command has this long to land what it holds (the feeds'
    /// frames into the log, the writer's batch into the lake, the API's answers in
    /// flight); then the process exits with status 1 whatever it is doing.
    #[serde(with = "humantime_serde")]
    pub stop_grace: std::time::Duration,
    pub log: LogConfig,
    pub registry: RegistryConfig,
    pub dlq: DlqConfig,
    pub catalog: CatalogConfig,
    pub warehouse: WarehouseConfig,
    pub writer: WriterConfig,
    pub dedup: DedupSection,
    pub sequence: SequenceSection,
    pub query: QueryOptions,
    pub api: ApiConfig,
    pub catalog_server: CatalogServerConfig,
    pub feeds: FeedsConfig,
    pub telemetry: TelemetryConfig,
    pub degradation: crate::degradation::DegradationConfig,
    /// Keys of the previous release found in the file or environment, each with what to
    /// write instead (logged once the logs are set up).
    #[serde(skip)]
    pub warnings: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("data"),
            stop_grace: std::time::Duration::from_secs(30),
            log: LogConfig::default(),
            registry: RegistryConfig::default(),
            dlq: DlqConfig::default(),
            catalog: CatalogConfig::default(),
            warehouse: WarehouseConfig::default(),
            writer: WriterConfig::default(),
            dedup: DedupSection::default(),
            sequence: SequenceSection::default(),
            query: QueryOptions::default(),
            api: ApiConfig::default(),
            catalog_server: CatalogServerConfig::default(),
            feeds: FeedsConfig::default(),
            telemetry: TelemetryConfig::default(),
            degradation: Default::default(),
            warnings: Vec::new(),
        }
    }
}

impl Config {
    /// Loads `file` (if given, else `k2.toml` when present), then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(file, &env)
    }

    pub fn load_from(file: Option<&Path>, vars: &[(String, String)]) -> anyhow::Result<Config> {
        let mut table = toml::Table::new();
        let default_file = Path::new("k2.toml");
        let path = file.or(default_file.exists().then_some(default_file));
        if let Some(path) = path {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config {}", path.display()))?;
            table = text
                .parse()
                .with_context(|| format!("parsing config {}", path.display()))?;
        }
        let in_clear = secrets::written_in_clear(&table);
        env::overlay(&mut table, vars)?;
        let mut warnings = legacy::upgrade(&mut table)?;
        secrets::resolve(&mut table, |name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })?;
        let mut config: Config = toml::Value::Table(table)
            .try_into()
            .context("invalid configuration (file or K2_… environment variables)")?;
        if !in_clear.is_empty() {
            let advice = format!(
                "{} written in the configuration file: write env:NAME or file:PATH instead",
                in_clear.join(", ")
            );
            if config.api.production {
                anyhow::bail!("{advice} (api.production refuses credentials in clear)");
            }
            warnings.push(advice);
        }
        config.warnings = warnings;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.stop_grace < std::time::Duration::from_secs(1) {
            anyhow::bail!("stop_grace: at least 1s (the time a stop has to land what is in hand)");
        }
        self.log.validate()?;
        self.registry.validate(self.log.backend)?;
        self.dlq.validate()?;
        self.catalog.validate()?;
        self.warehouse.validate()?;
        self.writer.validate()?;
        self.dedup.validate()?;
        self.sequence.validate()?;
        self.query.validate()?;
        self.api.validate()?;
        self.feeds.validate()?;
        self.telemetry.validate()?;
        self.degradation.validate()?;
        Ok(())
    }

    pub fn kafka(&self) -> bool {
        self.log.backend == LogBackend::Kafka
    }

    /// How to reach the shared registry named by `registry.url`.
    pub fn registry_access(&self) -> k2_log::RegistryAccess {
        self.registry.access(self.log.kafka.request_timeout)
    }

    pub fn kafka_options(&self) -> k2_log::KafkaOptions {
        k2_log::KafkaOptions {
            group: self.writer.group.clone(),
            ..self.log.kafka.clone()
        }
    }

    pub fn writer_options(&self) -> k2_lake::WriterOptions {
        let integrity =
            IntegrityOptions::build(&self.dedup, &self.sequence, Some(self.state_dir()));
        self.writer.options(integrity, Some(self.audit_path()))
    }

    // The data directory's layout.

    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join("log").join("log.redb")
    }
    /// The schema registry's own file, when the log is Kafka (embedded: inside the log).
    pub fn registry_path(&self) -> PathBuf {
        self.data_dir.join("registry").join("registry.redb")
    }
    pub fn dlq_path(&self) -> PathBuf {
        self.data_dir.join("dlq").join("dead_letters.redb")
    }
    pub fn catalog_path(&self) -> PathBuf {
        self.data_dir.join("catalog.db")
    }
    /// The local warehouse directory (used when `warehouse.uri` is empty).
    pub fn warehouse_dir(&self) -> PathBuf {
        self.data_dir.join("warehouse")
    }
    /// Where the tables' files live: `warehouse.uri`, or the local directory.
    pub fn warehouse(&self) -> k2_lake::Result<Warehouse> {
        self.warehouse.open(&self.warehouse_dir())
    }
    pub fn state_dir(&self) -> PathBuf {
        self.data_dir.join("state")
    }
    pub fn audit_path(&self) -> PathBuf {
        self.data_dir.join("audit").join("commits.jsonl")
    }
}
