//! How K2 talks to a Kafka cluster: the `[log.kafka]` section, and the librdkafka
//! settings of K2's producer and consumers.

use std::time::Duration;

use rdkafka::config::ClientConfig;

/// How K2 talks to a Kafka cluster: the `[log.kafka]` section of K2's configuration.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaOptions {
    /// `host:port[,host:port…]`.
    pub bootstrap_servers: String,
    /// Group whose offsets the lake writer commits (lag monitoring only); set from
    /// `writer.group`.
    #[serde(skip)]
    pub group: String,
    /// `lz4`, `gzip`, `snappy` or `none` (librdkafka is built without zstd).
    pub compression: String,
    /// How long the producer waits to fill a batch.
    pub linger_ms: u64,
    /// Upper bound of a producer batch, in bytes.
    pub batch_bytes: u64,
    /// How long a record may take to be delivered, retries included, before its produce
    /// fails.
    pub delivery_timeout_ms: u64,
    /// How long K2 waits for the cluster when starting and for admin calls.
    pub request_timeout_ms: u64,
    /// How long a fetch may wait at the broker for records (`fetch.wait.max.ms`). A Kafka
    /// broker answers as soon as records are there, so this is only how often an idle
    /// consumer asks; tansu 0.6.0 holds every fetch this long, records or not, so it
    /// bounds the read rate there (500, librdkafka's default, read about 160 k
    /// records/s; 10 reads 270 k).
    pub fetch_wait_ms: u64,
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
            compression: "lz4".into(),
            linger_ms: 5,
            batch_bytes: 1_000_000,
            delivery_timeout_ms: 120_000,
            request_timeout_ms: 10_000,
            fetch_wait_ms: 10,
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
        c.set("socket.timeout.ms", self.request_timeout_ms.to_string());
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    pub(super) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The producer's settings: idempotent, acknowledged by all replicas, compressed.
    pub fn producer_config(&self) -> ClientConfig {
        let mut c = self.base();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", &self.compression)
            .set("linger.ms", self.linger_ms.to_string())
            .set("batch.size", self.batch_bytes.to_string())
            .set("message.timeout.ms", self.delivery_timeout_ms.to_string())
            .set("queue.buffering.max.kbytes", "262144");
        c
    }

    /// The consumer's settings, in group `group` (positions are assigned, never
    /// subscribed).
    pub fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut c = self.base();
        c.set("group.id", group)
            .set("fetch.wait.max.ms", self.fetch_wait_ms.to_string())
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
