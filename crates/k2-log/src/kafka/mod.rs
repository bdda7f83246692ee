//! The Kafka backend: the same `Log` trait over any Kafka-protocol cluster, through
//! librdkafka.
//!
//! - **Producer**: idempotent (`acks=all`, ordered retries), compressed, batched by
//!   librdkafka. K2 chooses each record's partition itself with Kafka's Java default
//!   (`murmur2`), so K2 and stock Java producers agree, and `produce` returns only once every
//!   record's delivery report came back positive.
//! - **Consumer**: *assigned* the partitions it reads, at the offsets the lake's snapshot
//!   recorded. Group offsets are committed only for lag monitoring; correctness never
//!   depends on them. An assigned offset that the broker no longer has (deleted by
//!   retention before the lake took it) is an error, never a silent skip.
//! - **Source checkpoints** go to a compacted topic after the records they cover are
//!   delivered (Kafka cannot commit them atomically with the records without transactions,
//!   which K2 does not use): a crash in between re-sends one chunk, which the lake's dedup
//!   drops by message id.

//!
//! # Layout
//!
//! - [`KafkaLog`] — the client, its connection and the `Log` trait (this file).
//! - `options` — [`KafkaOptions`], librdkafka settings.
//! - `producer` — produce calls and their delivery reports.
//! - `admin` — topics; `ends` — partition ends and fetch starts.
//! - `positions` — source checkpoints and consumer-group offsets.
//! - `consumer` — [`KafkaConsumer`] and its reading thread; `queue` — the C queue it reads.

mod admin;
mod consumer;
mod ends;
mod options;
mod positions;
mod producer;
mod queue;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{Producer, ThreadedProducer};

pub use self::consumer::KafkaConsumer;
pub use self::options::{Compression, KafkaOptions, SaslMechanism, SecurityProtocol};
use self::producer::Deliveries;
use crate::error::{LogError, Result};
use crate::log::{CleanupPolicy, Log, PartitionOffset, SourceCheckpoint, TopicBatch, TopicSpec};
use crate::metrics;
use crate::registry::{Registry, SchemaStore};

/// The compacted topic holding source checkpoints (one record per source, latest wins).
pub const CHECKPOINT_TOPIC: &str = "k2.source-checkpoints";
/// The dead-letter topic: one JSON record per rejected record (stage, source, kind,
/// reason, raw bytes, time), keyed by its source position.
pub const DEAD_LETTER_TOPIC: &str = "k2.dead-letters";
/// How long the dead-letter topic keeps letters.
const DEAD_LETTER_RETENTION_MS: i64 = 30 * 24 * 3_600_000;

/// How long a probe fetch waits for a record known to exist.
/// (Only a broker that skipped a batch leaves it empty; a slow one costs a step back.)
const PROBE_WAIT: Duration = Duration::from_millis(300);
/// The first step back: librdkafka puts at most `batch.num.messages` (10 000 by
/// default) records in a batch, so one step reaches the start of any batch K2 wrote.
const FIRST_STEP_BACK: u64 = 10_000;

/// The Kafka log. Cheap to clone.
#[derive(Clone)]
pub struct KafkaLog {
    producer: Arc<ThreadedProducer<Deliveries>>,
    admin: Arc<AdminClient<DefaultClientContext>>,
    /// One consumer per group name, used only to commit and read group offsets.
    groups: Arc<Mutex<HashMap<String, Arc<BaseConsumer>>>>,
    /// Reads the last records of a partition to find its true end (see `watermarks`).
    probe: Arc<Mutex<Option<BaseConsumer>>>,
    /// Per partition: the last reported high watermark and the true end found for it.
    #[allow(clippy::type_complexity)]
    ends: Arc<Mutex<HashMap<(String, u32), (i64, i64)>>>,
    /// Partition count per topic K2 produced to, read from the cluster once: a metadata
    /// round trip per append would stall every produce before its first record is sent.
    /// Dropped when a produce to the topic fails, so a recreated topic is read again.
    partition_counts: Arc<Mutex<HashMap<String, u32>>>,
    /// Cleanup policy and retention per topic, as read from the cluster.
    #[allow(clippy::type_complexity)]
    configs: Arc<Mutex<HashMap<String, (CleanupPolicy, Option<i64>)>>>,
    options: Arc<KafkaOptions>,
    schemas: Registry,
}

fn kafka_error(context: impl Into<String>, e: KafkaError) -> LogError {
    let retryable = match e.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::InvalidConfig
            | RDKafkaErrorCode::InvalidArgument
            | RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::OffsetOutOfRange,
        ) => false,
        _ => !matches!(
            e,
            KafkaError::ClientConfig(..) | KafkaError::ClientCreation(..)
        ),
    };
    if retryable {
        LogError::storage(context, e)
    } else {
        LogError::Rejected(format!("{}: {e}", context.into()))
    }
}

impl KafkaLog {
    /// Connects to the cluster (failing with the bootstrap servers named if it does not
    /// answer within the request timeout) and ensures the checkpoint topic exists.
    /// Schemas are kept in `schemas`.
    pub async fn connect(options: KafkaOptions, schemas: Registry) -> Result<KafkaLog> {
        let producer: ThreadedProducer<Deliveries> = options
            .producer_config()
            .create_with_context(Deliveries::default())
            .map_err(|e| kafka_error("creating the Kafka producer", e))?;
        let admin: AdminClient<DefaultClientContext> = options
            .base()
            .create()
            .map_err(|e| kafka_error("creating the Kafka admin client", e))?;
        let log = KafkaLog {
            producer: Arc::new(producer),
            admin: Arc::new(admin),
            groups: Arc::default(),
            probe: Arc::default(),
            partition_counts: Arc::default(),
            configs: Arc::default(),
            ends: Arc::default(),
            options: Arc::new(options),
            schemas,
        };
        // Once, without the retries of later calls: a cluster that is not there at start
        // is a configuration or deployment error to report now.
        let probe = log.clone();
        let brokers = tokio::task::spawn_blocking(move || {
            let md = probe
                .producer
                .client()
                .fetch_metadata(None, probe.options.request_timeout)
                .map_err(|e| {
                    let last = probe.producer.context().last_error.lock().expect("error lock").clone();
                    let because = last.map_or_else(String::new, |r| format!("; the client's last error: {r}"));
                    LogError::storage(
                        format!(
                            "no Kafka broker answered at {} within {:?} (log.kafka.request_timeout){because}",
                            probe.options.bootstrap_servers, probe.options.request_timeout
                        ),
                        e,
                    )
                })?;
            Ok::<_, LogError>(md.brokers().len())
        })
        .await
        .map_err(|e| LogError::storage("Kafka client thread", e))??;
        tracing::info!(bootstrap = %log.options.bootstrap_servers, brokers, "connected to Kafka");
        log.ensure_topic(&TopicSpec {
            name: CHECKPOINT_TOPIC.into(),
            partitions: 1,
            cleanup: CleanupPolicy::Compact,
            retention_ms: None,
        })
        .await?;
        log.ensure_topic(&TopicSpec {
            name: DEAD_LETTER_TOPIC.into(),
            partitions: 1,
            cleanup: CleanupPolicy::Delete,
            retention_ms: Some(DEAD_LETTER_RETENTION_MS),
        })
        .await?;
        Ok(log)
    }

    pub fn options(&self) -> &KafkaOptions {
        &self.options
    }

    pub fn schemas(&self) -> &Registry {
        &self.schemas
    }

    /// Runs a blocking client call off the async threads. A retryable failure (the
    /// cluster unreachable, a leader moving) is retried with backoff for as long as the
    /// producer would retry a delivery (`delivery_timeout`): every operation of the
    /// backend rides out the same outages, then fails loudly.
    pub(super) async fn blocking<T: Send + 'static>(
        &self,
        f: impl Fn(&KafkaLog) -> Result<T> + Send + Sync + 'static,
    ) -> Result<T> {
        let f = Arc::new(f);
        let started = Instant::now();
        let budget = self.options.delivery_timeout;
        let mut backoff = Duration::from_millis(100);
        loop {
            let (this, call) = (self.clone(), f.clone());
            let result = tokio::task::spawn_blocking(move || call(&this))
                .await
                .map_err(|e| LogError::storage("Kafka client thread", e))?;
            match result {
                Err(e) if e.is_retryable() && started.elapsed() + backoff < budget => {
                    metrics::retried("kafka");
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "Kafka call failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                other => return other,
            }
        }
    }

    /// Waits up to `timeout` for every record handed to librdkafka to be delivered and
    /// returns how many were not (0 on a clean shutdown).
    pub fn close(&self, timeout: Duration) -> usize {
        let _ = self.producer.flush(timeout);
        let left = self.producer.in_flight_count().max(0) as usize;
        if left > 0 {
            tracing::error!(
                undelivered = left,
                "Kafka producer closed with records not delivered"
            );
        } else {
            tracing::info!("Kafka producer flushed");
        }
        left
    }
}

impl Log for KafkaLog {
    type Consumer = KafkaConsumer;

    async fn ensure_topic(&self, spec: &TopicSpec) -> Result<()> {
        self.create_topic(spec).await
    }

    async fn topics(&self) -> Result<Vec<TopicSpec>> {
        self.list_topics().await
    }

    async fn produce(
        &self,
        batches: Vec<TopicBatch>,
        checkpoint: Option<SourceCheckpoint>,
    ) -> Result<()> {
        self.produce_on_task(batches, checkpoint).await
    }

    fn atomic_checkpoints(&self) -> bool {
        false
    }

    fn source_checkpoints(
        &self,
        sources: &[String],
    ) -> impl Future<Output = Result<Vec<Option<Vec<u8>>>>> + Send {
        self.latest_checkpoints(sources)
    }

    fn end_offsets(&self, topic: &str) -> impl Future<Output = Result<Vec<u64>>> + Send {
        self.partition_ends(topic)
    }

    fn consumer(&self, assignment: Vec<PartitionOffset>) -> Result<KafkaConsumer> {
        self.assigned_consumer(assignment)
    }

    fn commit_group(
        &self,
        group: &str,
        offsets: &[PartitionOffset],
    ) -> impl Future<Output = Result<()>> + Send {
        self.commit_positions(group, offsets)
    }

    async fn publish_dead_letters(&self, letters: &[crate::DeadLetter]) -> Result<()> {
        self.publish_letters(letters).await
    }

    fn group_offsets(
        &self,
        group: &str,
        topic: &str,
    ) -> impl Future<Output = Result<Vec<Option<u64>>>> + Send {
        self.positions_of_group(group, topic)
    }
}

impl SchemaStore for KafkaLog {
    fn register(&self, subject: &str, schema: &str) -> impl Future<Output = Result<u32>> + Send {
        self.schemas.register(subject, schema)
    }

    fn schema(&self, id: u32) -> impl Future<Output = Result<Option<String>>> + Send {
        self.schemas.schema(id)
    }
}
