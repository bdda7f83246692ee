//! How K2 talks to a Kafka cluster: the `[log.kafka]` section, and the librdkafka
//! settings of K2's producer and consumers.

use std::time::Duration;

use k2_model::{ConfigError, Secret};
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

/// How K2's clients reach the brokers (librdkafka's `security.protocol`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// How K2's clients prove who they are over SASL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum SaslMechanism {
    #[default]
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
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
    /// `plaintext`, `ssl` (TLS), `sasl_plaintext` or `sasl_ssl` (SASL over TLS).
    pub security_protocol: SecurityProtocol,
    /// TLS: a PEM file of the authorities to trust (a private CA); empty: the system's.
    pub ssl_ca_file: String,
    /// TLS: a client certificate (PEM) and its private key, for clusters that require one.
    pub ssl_certificate_file: String,
    pub ssl_key_file: String,
    /// TLS: the password of `ssl_key_file`, when it is encrypted (a credential).
    pub ssl_key_password: Secret,
    /// SASL: `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub sasl_mechanism: SaslMechanism,
    pub sasl_username: String,
    /// SASL: the password (a credential: `env:NAME` or `file:PATH`).
    pub sasl_password: Secret,
    /// Further librdkafka properties, passed through unchanged (credentials belong in the
    /// keys above, which are never shown).
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
            security_protocol: SecurityProtocol::Plaintext,
            ssl_ca_file: String::new(),
            ssl_certificate_file: String::new(),
            ssl_key_file: String::new(),
            ssl_key_password: Secret::default(),
            sasl_mechanism: SaslMechanism::Plain,
            sasl_username: String::new(),
            sasl_password: Secret::default(),
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
        c.set("security.protocol", self.security_protocol.name());
        if self.security_protocol.tls() {
            for (key, value) in [
                ("ssl.ca.location", &self.ssl_ca_file),
                ("ssl.certificate.location", &self.ssl_certificate_file),
                ("ssl.key.location", &self.ssl_key_file),
            ] {
                if !value.is_empty() {
                    c.set(key, value);
                }
            }
            if !self.ssl_key_password.is_empty() {
                c.set("ssl.key.password", self.ssl_key_password.expose());
            }
        }
        if self.security_protocol.sasl() {
            c.set("sasl.mechanisms", self.sasl_mechanism.name())
                .set("sasl.username", &self.sasl_username)
                .set("sasl.password", self.sasl_password.expose());
        }
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
        let tls = [
            ("ssl_ca_file", &self.ssl_ca_file),
            ("ssl_certificate_file", &self.ssl_certificate_file),
            ("ssl_key_file", &self.ssl_key_file),
        ];
        for (key, file) in tls {
            if file.is_empty() {
                continue;
            }
            if !self.security_protocol.tls() {
                return Err(ConfigError::new(
                    format!("log.kafka.{key}"),
                    "applies to TLS: set log.kafka.security_protocol = \"ssl\" or \"sasl_ssl\"",
                ));
            }
            if !std::path::Path::new(file).is_file() {
                return Err(ConfigError::new(
                    format!("log.kafka.{key}"),
                    format!("{file} is not a readable file"),
                ));
            }
        }
        if self.ssl_certificate_file.is_empty() != self.ssl_key_file.is_empty() {
            return Err(ConfigError::new(
                "log.kafka.ssl_certificate_file",
                "a client certificate needs its key (ssl_key_file), and a key its certificate",
            ));
        }
        let sasl_set = !self.sasl_username.is_empty() || !self.sasl_password.is_empty();
        if sasl_set != self.security_protocol.sasl() {
            return Err(ConfigError::new(
                "log.kafka.security_protocol",
                if sasl_set {
                    "sasl_username and sasl_password apply to SASL: set \"sasl_plaintext\" or \"sasl_ssl\""
                } else {
                    "SASL needs log.kafka.sasl_username and log.kafka.sasl_password"
                },
            ));
        }
        if let Some(key) = self.properties.keys().find(|k| k.contains("password")) {
            return Err(ConfigError::new(
                format!("log.kafka.properties.\"{key}\""),
                "a password among the pass-through properties would be shown with them: use log.kafka.sasl_password or ssl_key_password",
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
