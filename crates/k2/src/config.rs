//! Configuration: defaults, then a TOML file, then `K2_…` environment variables, parsed
//! and validated once at start.
//!
//! An environment variable names a key by its path, sections separated by a double
//! underscore: `K2_DATA_DIR=/var/k2`, `K2_QUERY__TIMEOUT_SECONDS=5`. Unknown keys are
//! errors (a typo must not silently fall back to a default).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

/// Environment variables that are not configuration keys.
const NOT_KEYS: &[&str] = &["K2_CONFIG", "K2_LOG"];
/// `K2_TEST_…` variables belong to the test suite (which services to use), not to K2.
const TEST_PREFIX: &str = "K2_TEST_";

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the log, the catalog, the warehouse and the dead letters live.
    pub data_dir: PathBuf,
    pub log: LogConfig,
    pub catalog: CatalogConfig,
    pub writer: WriterConfig,
    pub query: QueryConfig,
    pub dlq: DlqConfig,
    pub dedup: DedupConfig,
    pub sequence: SequenceConfig,
    pub registry: RegistryConfig,
    pub telemetry: TelemetryConfig,
    /// The query API of `k2 serve` (see `k2_api::ApiConfig`).
    pub api: k2_api::ApiConfig,
    /// Live exchange feeds (`k2 feed`, `k2 up`).
    pub feeds: FeedsConfig,
}

/// Live exchange feeds: how each stays connected, and where each venue is.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedsConfig {
    /// The venues `k2 up` captures (`binance`, `kraken`).
    pub run: Vec<String>,
    /// No frame (pongs included) for this long and a connection is given up as stalled.
    pub stale_after_seconds: f64,
    /// A WebSocket ping goes out this often.
    pub ping_every_seconds: f64,
    /// Failed connections in a row after which the feed gives up and the process exits
    /// non-zero (for its supervisor to restart it).
    pub max_failures: u32,
    /// First reconnect backoff; doubles per failure, jittered, up to `backoff_max_ms`.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Consecutive connect failures that open the feed's circuit breaker, and how long it
    /// stays open.
    pub breaker_failures: u32,
    pub breaker_open_ms: u64,
    /// A connection that lasted this long was healthy: the failure count starts over.
    pub healthy_after_seconds: f64,
    /// A connection this old is replaced by a fresh one (make before break); 0: never.
    pub rotate_after_hours: f64,
    /// Records held between a connection and the log, at most.
    pub buffer_events: usize,
    pub binance: VenueConfig,
    pub kraken: VenueConfig,
}

/// Where a venue's feed is and what to take from it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VenueConfig {
    /// `wss://…` in production; a local simulator's `ws://127.0.0.1:PORT` in tests.
    pub url: String,
    /// Tried in turn when `url` fails.
    pub fallback_urls: Vec<String>,
    /// Binance `BTCUSDT`, Kraken `BTC/USD`.
    pub symbols: Vec<String>,
    /// Binance: best bid/offer (`bookTicker`) as quotes too.
    pub quotes: bool,
}

impl Default for FeedsConfig {
    fn default() -> Self {
        FeedsConfig {
            run: Vec::new(),
            stale_after_seconds: 30.0,
            ping_every_seconds: 10.0,
            max_failures: 20,
            backoff_base_ms: 250,
            backoff_max_ms: 30_000,
            breaker_failures: 5,
            breaker_open_ms: 10_000,
            healthy_after_seconds: 60.0,
            rotate_after_hours: 12.0,
            buffer_events: 32768,
            binance: VenueConfig {
                url: "wss://stream.binance.com:9443".into(),
                fallback_urls: vec![
                    "wss://stream.binance.com:443".into(),
                    "wss://data-stream.binance.vision".into(),
                ],
                symbols: vec!["BTCUSDT".into(), "ETHUSDT".into()],
                quotes: true,
            },
            kraken: VenueConfig {
                url: "wss://ws.kraken.com/v2".into(),
                fallback_urls: Vec::new(),
                symbols: vec!["BTC/USD".into(), "ETH/USD".into()],
                quotes: false,
            },
        }
    }
}

/// A venue by its configuration name.
pub fn venue(name: &str) -> anyhow::Result<k2_ingest::Venue> {
    k2_ingest::Venue::from_name(name).with_context(|| {
        let known: Vec<&str> = k2_ingest::Venue::ALL.iter().map(|v| v.name()).collect();
        format!("no feed for venue '{name}'; K2 has {}", known.join(", "))
    })
}

/// Where schemas are registered and resolved.
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
    pub password: String,
}

/// Dedup of each table by message id (see `k2_pipeline::dedup`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupConfig {
    /// How long an id is remembered after the record arrived.
    pub window_seconds: u64,
    /// Ids are forgotten a bucket of this width at a time.
    pub bucket_seconds: u64,
    /// Most ids remembered per table (about 30 bytes each).
    pub max_ids: usize,
    /// `host:port` of a Redis in which every batch's ids are claimed before it is
    /// written, so that writers sharing the tables store a record once (each writer
    /// then needs its own `writer.source`). Empty: dedup within this writer.
    pub redis: String,
    /// Prefix of K2's keys in that Redis.
    pub redis_prefix: String,
    /// How long a claim holds while its batch is written and committed.
    pub redis_lease_seconds: u64,
}

/// Sequence tracking of each (exchange, symbol) stream (see `k2_pipeline::sequence`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SequenceConfig {
    /// How far behind the newest sequence a message is still a duplicate or late fill.
    pub window: u64,
    /// A pause (exchange time) after which a drop back is a session reset.
    pub reset_after_seconds: u64,
    /// Sequences a session starts from: a drop back to them is a reset.
    pub restart_max: u64,
    /// Open gaps kept per stream.
    pub max_open_gaps: usize,
    /// `host:port` of a Redis holding the streams' state, shared by several writers.
    /// Empty: in the writer's process, persisted in the data directory with each commit.
    pub redis: String,
    /// Prefix of K2's keys in that Redis (deployments sharing a Redis differ by prefix).
    pub redis_prefix: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `embedded` (the default, no external services) or `kafka`.
    pub backend: String,
    /// The cluster, when `backend = "kafka"` (see `k2_log::KafkaOptions`).
    pub kafka: k2_log::KafkaOptions,
    /// Partitions of the trades and quotes topics when K2 creates them.
    pub partitions: u32,
    /// Rows per append when ingesting files.
    pub ingest_chunk_rows: usize,
}

/// Where the Iceberg SQL catalog lives.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// Empty: SQLite in the data directory. Else `postgres://user[:password]@host:port/db`
    /// (or a `sqlite:` URI).
    pub uri: String,
    /// Catalog name inside the database (deployments sharing a database differ by name).
    pub name: String,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig {
            uri: String::new(),
            name: "k2".into(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WriterConfig {
    pub max_rows: usize,
    pub max_age_seconds: f64,
    pub zstd_level: i32,
    pub group: String,
    /// Attempts at a call to the catalog, object store or log that fails retryably.
    pub retry_attempts: u32,
    /// First backoff; doubles per attempt (jittered) up to `retry_max_ms`.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// Consecutive failures that open a dependency's circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker waits before a trial call.
    pub breaker_open_ms: u64,
    /// Names this writer's log when several writers, each with its own log, write the
    /// same tables (its positions are recorded under the name). Empty: the only writer.
    pub source: String,
    /// Snapshots older than this expire (time travel reaches this far back); 0 keeps
    /// every snapshot.
    pub snapshot_retention_hours: f64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    pub memory_limit_mb: u64,
    pub timeout_seconds: f64,
    pub max_rows: usize,
    /// Reuse of loaded table metadata, in milliseconds (0: ask the catalog every query).
    pub metadata_refresh_ms: u64,
    /// Decoded Parquet footers kept between queries, MiB (0: none).
    pub file_metadata_cache_mb: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DlqConfig {
    pub max_entries: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `text` or `json`.
    pub log_format: String,
    /// A tracing filter, e.g. `info` or `k2_lake=debug,info`. Empty: `info` for the
    /// services (ingest, consume), `warn` for interactive commands.
    pub log_level: String,
    /// Address for the Prometheus `/metrics` endpoint of long-running commands; empty: off.
    pub metrics_listen: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("data"),
            log: LogConfig::default(),
            catalog: CatalogConfig::default(),
            writer: WriterConfig::default(),
            query: QueryConfig::default(),
            dlq: DlqConfig::default(),
            dedup: DedupConfig::default(),
            sequence: SequenceConfig::default(),
            registry: RegistryConfig::default(),
            telemetry: TelemetryConfig::default(),
            api: k2_api::ApiConfig::default(),
            feeds: FeedsConfig::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            backend: "embedded".into(),
            kafka: k2_log::KafkaOptions::default(),
            partitions: 4,
            ingest_chunk_rows: 50_000,
        }
    }
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            max_rows: 1_000_000,
            max_age_seconds: 10.0,
            zstd_level: 1,
            group: "k2-lake-writer".into(),
            retry_attempts: 8,
            retry_base_ms: 100,
            retry_max_ms: 5_000,
            breaker_failures: 3,
            breaker_open_ms: 2_000,
            source: String::new(),
            snapshot_retention_hours: 24.0,
        }
    }
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            memory_limit_mb: 1024,
            timeout_seconds: 30.0,
            max_rows: 100_000,
            metadata_refresh_ms: 1000,
            file_metadata_cache_mb: 64,
        }
    }
}

impl Default for DlqConfig {
    fn default() -> Self {
        DlqConfig {
            max_entries: 1_000_000,
        }
    }
}

impl Default for DedupConfig {
    fn default() -> Self {
        let d = k2_pipeline::DedupConfig::default();
        DedupConfig {
            window_seconds: (d.window_us / 1_000_000) as u64,
            bucket_seconds: (d.bucket_us / 1_000_000) as u64,
            max_ids: d.max_ids,
            redis: String::new(),
            redis_prefix: "k2".into(),
            redis_lease_seconds: 300,
        }
    }
}

impl Default for SequenceConfig {
    fn default() -> Self {
        let s = k2_pipeline::SequenceConfig::default();
        SequenceConfig {
            window: s.window,
            reset_after_seconds: (s.reset_after_us / 1_000_000) as u64,
            restart_max: s.restart_max,
            max_open_gaps: s.max_open_gaps,
            redis: String::new(),
            redis_prefix: "k2".into(),
        }
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_format: "text".into(),
            log_level: String::new(),
            metrics_listen: String::new(),
        }
    }
}

impl Config {
    /// Loads `file` (if given, else `k2.toml` when present), then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(file, &env)
    }

    pub fn load_from(file: Option<&Path>, env: &[(String, String)]) -> anyhow::Result<Config> {
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
        for (name, value) in env {
            let Some(key) = name.strip_prefix("K2_") else {
                continue;
            };
            if NOT_KEYS.contains(&name.as_str()) || name.starts_with(TEST_PREFIX) || key.is_empty()
            {
                continue;
            }
            let path: Vec<String> = key.split("__").map(str::to_ascii_lowercase).collect();
            set(&mut table, &path, parse_env_value(value))
                .with_context(|| format!("environment variable {name}"))?;
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .context("invalid configuration (file or K2_… environment variables)")?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        match self.log.backend.as_str() {
            "embedded" => {}
            "kafka" => {
                if self.log.kafka.bootstrap_servers.trim().is_empty() {
                    bail!(
                        "log.kafka.bootstrap_servers must name the cluster when log.backend = 'kafka'"
                    );
                }
                if !matches!(
                    self.log.kafka.compression.as_str(),
                    "lz4" | "gzip" | "snappy" | "none"
                ) {
                    bail!(
                        "log.kafka.compression must be lz4, gzip, snappy or none (librdkafka is built without zstd), not '{}'",
                        self.log.kafka.compression
                    );
                }
            }
            other => bail!("log.backend '{other}' is not available; use 'embedded' or 'kafka'"),
        }
        if self.registry.url.is_empty()
            && !(self.registry.ca_file.is_empty()
                && self.registry.username.is_empty()
                && self.registry.password.is_empty())
        {
            bail!(
                "registry.ca_file, registry.username and registry.password apply to a shared registry: set registry.url"
            );
        }
        if !self.registry.url.is_empty() && self.log.backend != "kafka" {
            bail!(
                "registry.url needs log.backend = 'kafka': the embedded log keeps its schemas with its records"
            );
        }
        if self.log.partitions == 0 || self.log.partitions > 1024 {
            bail!(
                "log.partitions must be between 1 and 1024, not {}",
                self.log.partitions
            );
        }
        if !(1..=22).contains(&self.writer.zstd_level) {
            bail!(
                "writer.zstd_level must be between 1 and 22, not {}",
                self.writer.zstd_level
            );
        }
        if self.writer.max_rows == 0 || self.writer.max_age_seconds <= 0.0 {
            bail!("writer.max_rows and writer.max_age_seconds must be positive");
        }
        // An hour at least: a writer sharing dedup in Redis looks up the batches other
        // writers hold claims for among the snapshots, and a query pinned to a snapshot
        // should not see it vanish mid-session.
        let hours = self.writer.snapshot_retention_hours;
        if !(hours == 0.0 || (1.0..=f64::MAX).contains(&hours)) {
            bail!(
                "writer.snapshot_retention_hours must be 0 (keep every snapshot) or at least 1, not {hours}"
            );
        }
        if self.writer.retry_attempts == 0 || self.writer.breaker_failures == 0 {
            bail!("writer.retry_attempts and writer.breaker_failures must be at least 1");
        }
        if self.query.timeout_seconds <= 0.0
            || self.query.memory_limit_mb == 0
            || self.query.max_rows == 0
        {
            bail!(
                "query.timeout_seconds, query.memory_limit_mb and query.max_rows must be positive"
            );
        }
        if self.dedup.bucket_seconds == 0
            || self.dedup.window_seconds < self.dedup.bucket_seconds
            || self.dedup.max_ids == 0
        {
            bail!(
                "dedup.bucket_seconds and dedup.max_ids must be positive and dedup.window_seconds at least one bucket"
            );
        }
        if self.sequence.window == 0 || self.sequence.max_open_gaps == 0 {
            bail!("sequence.window and sequence.max_open_gaps must be positive");
        }
        let f = &self.feeds;
        if f.stale_after_seconds <= 0.0
            || f.ping_every_seconds <= 0.0
            || f.max_failures == 0
            || f.breaker_failures == 0
            || f.buffer_events == 0
            || f.rotate_after_hours < 0.0
        {
            bail!(
                "feeds.stale_after_seconds, ping_every_seconds, max_failures, breaker_failures and buffer_events must be positive (rotate_after_hours at least 0)"
            );
        }
        for name in &f.run {
            let v = venue(name).context("feeds.run")?;
            self.feed(v, None, None)?;
        }
        if !matches!(self.telemetry.log_format.as_str(), "text" | "json") {
            bail!(
                "telemetry.log_format must be 'text' or 'json', not '{}'",
                self.telemetry.log_format
            );
        }
        Ok(())
    }

    /// One venue's feed as configured, with the symbols and URL given on the command line
    /// taking the place of the configured ones.
    pub fn feed(
        &self,
        venue: k2_ingest::Venue,
        symbols: Option<Vec<String>>,
        url: Option<String>,
    ) -> anyhow::Result<(k2_ingest::FeedConfig, k2_ingest::Reconnect)> {
        use k2_ingest::{FeedConfig, Reconnect, Venue};
        let f = &self.feeds;
        let (key, v) = match venue {
            Venue::Binance => ("binance", &f.binance),
            Venue::Kraken => ("kraken", &f.kraken),
        };
        let symbols = symbols.unwrap_or_else(|| v.symbols.clone());
        if symbols.is_empty() || symbols.iter().any(|s| s.trim().is_empty()) {
            bail!("feeds.{key}.symbols (or --symbols) must name at least one symbol");
        }
        let fallback_urls = if url.is_some() {
            Vec::new()
        } else {
            v.fallback_urls.clone()
        };
        let url = url.unwrap_or_else(|| v.url.clone());
        for u in std::iter::once(&url).chain(&fallback_urls) {
            if !(u.starts_with("wss://") || u.starts_with("ws://")) {
                bail!("feeds.{key}: '{u}' is not a WebSocket URL (ws:// or wss://)");
            }
        }
        let secs = Duration::from_secs_f64;
        Ok((
            FeedConfig {
                venue,
                url,
                symbols,
                quotes: v.quotes,
                stale_after: secs(f.stale_after_seconds),
                ping_every: secs(f.ping_every_seconds),
            },
            Reconnect {
                fallback_urls,
                retry: k2_pipeline::RetryPolicy {
                    attempts: f.max_failures,
                    base: Duration::from_millis(f.backoff_base_ms),
                    max_delay: Duration::from_millis(f.backoff_max_ms),
                },
                breaker: k2_pipeline::BreakerConfig {
                    failure_threshold: f.breaker_failures,
                    open_for: Duration::from_millis(f.breaker_open_ms),
                },
                healthy_after: secs(f.healthy_after_seconds),
                rotate_after: (f.rotate_after_hours > 0.0)
                    .then(|| secs(f.rotate_after_hours * 3600.0)),
                overlap: Duration::from_secs(2),
            },
        ))
    }

    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join("log").join("log.redb")
    }
    /// The schema registry's own file, when the log is Kafka (embedded: inside the log).
    pub fn registry_path(&self) -> PathBuf {
        self.data_dir.join("registry").join("registry.redb")
    }
    /// How to reach the shared registry named by `registry.url`.
    pub fn registry_access(&self) -> k2_log::RegistryAccess {
        k2_log::RegistryAccess {
            url: self.registry.url.clone(),
            timeout: std::time::Duration::from_millis(self.log.kafka.request_timeout_ms),
            ca_file: (!self.registry.ca_file.is_empty())
                .then(|| PathBuf::from(&self.registry.ca_file)),
            username: self.registry.username.clone(),
            password: self.registry.password.clone(),
        }
    }

    pub fn kafka_options(&self) -> k2_log::KafkaOptions {
        k2_log::KafkaOptions {
            group: self.writer.group.clone(),
            ..self.log.kafka.clone()
        }
    }
    pub fn dlq_path(&self) -> PathBuf {
        self.data_dir.join("dlq").join("dead_letters.redb")
    }
    pub fn catalog_path(&self) -> PathBuf {
        self.data_dir.join("catalog.db")
    }
    pub fn warehouse_dir(&self) -> PathBuf {
        self.data_dir.join("warehouse")
    }
    pub fn state_dir(&self) -> PathBuf {
        self.data_dir.join("state")
    }
    pub fn audit_path(&self) -> PathBuf {
        self.data_dir.join("audit").join("commits.jsonl")
    }

    pub fn writer_options(&self) -> k2_lake::WriterOptions {
        k2_lake::WriterOptions {
            max_rows: self.writer.max_rows,
            max_age: Duration::from_secs_f64(self.writer.max_age_seconds),
            zstd_level: self.writer.zstd_level,
            group: self.writer.group.clone(),
            integrity: k2_lake::IntegrityOptions {
                dedup: k2_pipeline::DedupConfig {
                    window_us: seconds_us(self.dedup.window_seconds),
                    bucket_us: seconds_us(self.dedup.bucket_seconds),
                    max_ids: self.dedup.max_ids,
                },
                sequence: k2_pipeline::SequenceConfig {
                    window: self.sequence.window,
                    reset_after_us: seconds_us(self.sequence.reset_after_seconds),
                    restart_max: self.sequence.restart_max,
                    max_open_gaps: self.sequence.max_open_gaps,
                },
                state_dir: Some(self.state_dir()),
                sequence_redis: (!self.sequence.redis.is_empty()).then(|| k2_lake::RedisTarget {
                    addr: self.sequence.redis.clone(),
                    prefix: self.sequence.redis_prefix.clone(),
                    timeout: Duration::from_secs(5),
                }),
                dedup_redis: (!self.dedup.redis.is_empty()).then(|| k2_lake::RedisTarget {
                    addr: self.dedup.redis.clone(),
                    prefix: self.dedup.redis_prefix.clone(),
                    timeout: Duration::from_secs(5),
                }),
                dedup_lease: Duration::from_secs(self.dedup.redis_lease_seconds.max(1)),
            },
            retry: k2_pipeline::RetryPolicy {
                attempts: self.writer.retry_attempts,
                base: Duration::from_millis(self.writer.retry_base_ms),
                max_delay: Duration::from_millis(self.writer.retry_max_ms),
            },
            breaker: k2_pipeline::BreakerConfig {
                failure_threshold: self.writer.breaker_failures,
                open_for: Duration::from_millis(self.writer.breaker_open_ms),
            },
            audit_path: Some(self.audit_path()),
            source: self.writer.source.clone(),
            snapshot_retention: (self.writer.snapshot_retention_hours > 0.0)
                .then(|| Duration::from_secs_f64(self.writer.snapshot_retention_hours * 3600.0)),
            ..Default::default()
        }
    }

    pub fn query_options(&self) -> k2_lake::query::QueryOptions {
        k2_lake::query::QueryOptions {
            memory_limit_mb: self.query.memory_limit_mb,
            timeout: Duration::from_secs_f64(self.query.timeout_seconds),
            max_rows: self.query.max_rows,
            metadata_refresh: Duration::from_millis(self.query.metadata_refresh_ms),
            file_metadata_cache_mb: self.query.file_metadata_cache_mb,
        }
    }
}

fn seconds_us(s: u64) -> i64 {
    i64::try_from(s.saturating_mul(1_000_000)).unwrap_or(i64::MAX)
}

fn parse_env_value(raw: &str) -> toml::Value {
    // Numbers and booleans keep their type; anything else is a string.
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .filter(|v| !matches!(v, toml::Value::Table(_)))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

fn set(table: &mut toml::Table, path: &[String], value: toml::Value) -> anyhow::Result<()> {
    match path {
        [] => bail!("empty key"),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [head, rest @ ..] => {
            let entry = table
                .entry(head.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => set(t, rest, value),
                _ => bail!("'{head}' is not a section"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/k2.example.toml");
        let config = Config::load_from(Some(&path), &[]).unwrap();
        assert_eq!(config.log.backend, "embedded");
        assert_eq!(config.query.timeout_seconds, 30.0);
    }

    #[test]
    fn environment_overrides_the_file() {
        let config = Config::load_from(
            None,
            &env(&[
                ("K2_DATA_DIR", "/tmp/k2x"),
                ("K2_QUERY__TIMEOUT_SECONDS", "5"),
                ("K2_WRITER__GROUP", "g1"),
                ("K2_CONFIG", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/tmp/k2x"));
        assert_eq!(config.query.timeout_seconds, 5.0);
        assert_eq!(config.writer.group, "g1");
    }

    #[test]
    fn typos_and_bad_values_are_errors() {
        let err = Config::load_from(None, &env(&[("K2_QUERY__TIMEOUT_SECOND", "5")])).unwrap_err();
        assert!(format!("{err:#}").contains("timeout_second"), "{err:#}");
        assert!(Config::load_from(None, &env(&[("K2_WRITER__ZSTD_LEVEL", "99")])).is_err());
        assert!(Config::load_from(None, &env(&[("K2_LOG__BACKEND", "zookeeper")])).is_err());
        let retention = |hours: &str| {
            Config::load_from(
                None,
                &env(&[("K2_WRITER__SNAPSHOT_RETENTION_HOURS", hours)]),
            )
        };
        let err = retention("0.5").unwrap_err();
        assert!(
            format!("{err:#}").contains("writer.snapshot_retention_hours must be 0"),
            "{err:#}"
        );
        assert!(retention("-1").is_err() && retention("NaN").is_err());
        let kept = |hours| {
            retention(hours)
                .unwrap()
                .writer_options()
                .snapshot_retention
        };
        assert_eq!(kept("0"), None);
        assert_eq!(kept("2"), Some(std::time::Duration::from_secs(7_200)));
        let kafka = |more: &[(&str, &str)]| {
            let mut vars = vec![("K2_LOG__BACKEND", "kafka")];
            vars.extend_from_slice(more);
            Config::load_from(None, &env(&vars))
        };
        let ok = kafka(&[("K2_LOG__KAFKA__BOOTSTRAP_SERVERS", "b1:9092,b2:9092")]).unwrap();
        assert_eq!(ok.kafka_options().bootstrap_servers, "b1:9092,b2:9092");
        assert_eq!(ok.kafka_options().group, ok.writer.group);
        let err = kafka(&[("K2_LOG__KAFKA__COMPRESSION", "zstd")]).unwrap_err();
        assert!(
            format!("{err:#}").contains("log.kafka.compression"),
            "{err:#}"
        );
        assert!(kafka(&[("K2_LOG__KAFKA__BOOTSTRAP_SERVERS", " ")]).is_err());
        assert!(
            kafka(&[("K2_LOG__KAFKA__LINGER", "5")]).is_err(),
            "unknown key"
        );
        let err =
            Config::load_from(None, &env(&[("K2_REGISTRY__URL", "http://r:8081")])).unwrap_err();
        assert!(format!("{err:#}").contains("registry.url needs"), "{err:#}");
        let err = kafka(&[("K2_REGISTRY__PASSWORD", "secret")]).unwrap_err();
        assert!(
            format!("{err:#}").contains("apply to a shared registry"),
            "{err:#}"
        );
        let remote = kafka(&[
            ("K2_REGISTRY__URL", "https://r:8081"),
            ("K2_REGISTRY__CA_FILE", "ca.pem"),
            ("K2_REGISTRY__USERNAME", "key"),
            ("K2_REGISTRY__PASSWORD", "secret"),
        ])
        .unwrap()
        .registry_access();
        assert_eq!(remote.ca_file.as_deref(), Some(Path::new("ca.pem")));
        assert_eq!(
            (remote.username.as_str(), remote.password.as_str()),
            ("key", "secret")
        );
    }
}
