//! How K2 talks to a Kafka cluster: the `[log.kafka]` section, and the librdkafka
//! settings of K2's producer and consumers.

use std::time::Duration;

use k2_model::ConfigError;
use rdkafka::config::ClientConfig;
use serde::Deserialize;

/// Compression of the batches K2 produces (librdkafka is built without zstd).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Lz4,
    Gzip,
    Snappy,
    None,
}

impl Compression {
    /// librdkafka's name of it.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Lz4 => "lz4",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::None => "none",
        }
    }
}

/// A duration as librdkafka's millisecond properties take it.
fn millis(d: Duration) -> String {
    d.as_millis().to_string()
}

/// How K2 talks to a Kafka cluster: the `[log.kafka]` section of K2's configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaOptions {
    /// `host:port[,host:port…]`.
    pub bootstrap_servers: String,
    /// Group whose offsets the lake writer commits (lag monitoring only); set from
    /// `writer.group`.
    #[serde(skip)]
    pub group: String,
    /// Compression of produced batches.
    pub compression: Compression,
    /// How long the producer waits to fill a batch.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// Upper bound of a producer batch, in bytes.
    pub batch_bytes: u64,
    /// How long a record may take to be delivered, retries included, before its produce
    /// fails.
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// How long K2 waits for the cluster when starting and for admin calls.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long a fetch may wait at the broker for records (`fetch.wait.max.ms`). A Kafka
    /// broker answers as soon as records are there, so this is only how often an idle
    /// consumer asks; a broker that holds every fetch this long, records or not (tansu),
    /// is read no faster than one fetch per wait, hence a short default.
    #[serde(with = "humantime_serde")]
    pub fetch_wait: Duration,
    /// Replication factor of topics K2 creates; 0 picks min(3, brokers).
    pub replication_factor: u32,
    /// Further librdkafka properties (e.g. `"security.protocol" = "ssl"`), passed through
    /// unchanged.
    pub properties: std::collections::BTreeMap<String, String>,
}

impl Default for KafkaOptions {
    fn default() -> Self {
        KafkaOptions {
            bootstrap_servers: "127.0.0.1:9092".into(),
            group: "k2-lake-writer".into(),
            compression: Compression::Lz4,
            linger: Duration::from_millis(5),
            batch_bytes: 1_000_000,
            delivery_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(10),
            fetch_wait: Duration::from_millis(10),
            replication_factor: 0,
            properties: Default::default(),
        }
    }
}

impl KafkaOptions {
    pub(super) fn base(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers);
        c.set("client.id", "k2");
        c.set("socket.timeout.ms", millis(self.request_timeout));
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// The section's own checks (the log section checks it only with the Kafka backend).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err(ConfigError::new(
                "log.kafka.bootstrap_servers",
                "must name the cluster when log.backend = 'kafka'",
            ));
        }
        for (key, d) in [
            ("delivery_timeout", self.delivery_timeout),
            ("request_timeout", self.request_timeout),
            ("fetch_wait", self.fetch_wait),
        ] {
            if d.is_zero() {
                return Err(ConfigError::new(
                    format!("log.kafka.{key}"),
                    "must be positive",
                ));
            }
        }
        Ok(())
    }

    /// The producer's settings: idempotent, acknowledged by all replicas, compressed.
    pub fn producer_config(&self) -> ClientConfig {
        let mut c = self.base();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", self.compression.name())
            .set("linger.ms", millis(self.linger))
            .set("batch.size", self.batch_bytes.to_string())
            .set("message.timeout.ms", millis(self.delivery_timeout))
            .set("queue.buffering.max.kbytes", "262144");
        c
    }

    /// The consumer's settings, in group `group` (positions are assigned, never
    /// subscribed).
    pub fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut c = self.base();
        c.set("group.id", group)
            .set("fetch.wait.max.ms", millis(self.fetch_wait))
            // The writer drains the fetched queue in polls of tens of thousands of records,
            // so the queue often runs past `queued.min.messages`; librdkafka then pauses
            // fetching for `fetch.queue.backoff.ms`, 1 s by default, and the writer sat
            // idle waiting for records already on the broker.
            .set("fetch.queue.backoff.ms", "10")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            // K2 never writes transactions, so both levels see the same records; reading
            // up to the high watermark avoids depending on the broker's stable-offset logic.
            .set("isolation.level", "read_uncommitted")
            // An assigned offset the broker no longer has must be an error, not a jump.
            .set("auto.offset.reset", "error");
        c
    }
}
