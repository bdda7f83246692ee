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

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::Notify;

use crate::error::{LogError, Result};
use crate::log::{
    CleanupPolicy, ConsumedRecord, Log, LogConsumer, PartitionOffset, SourceCheckpoint, TopicBatch,
    TopicSpec,
};
use crate::metrics;
use crate::partitioner::partition_for;
use crate::registry_client::Registry;
use crate::schema_store::SchemaStore;

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
    fn base(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers);
        c.set("client.id", "k2");
        c.set("socket.timeout.ms", self.request_timeout_ms.to_string());
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    fn request_timeout(&self) -> Duration {
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

/// Outstanding deliveries of one produce call.
struct Pending {
    remaining: AtomicUsize,
    failed: AtomicUsize,
    first_error: Mutex<Option<KafkaError>>,
    done: Notify,
}

impl Pending {
    fn settle(&self, n: usize) {
        if n > 0 && self.remaining.fetch_sub(n, Ordering::AcqRel) == n {
            self.done.notify_one();
        }
    }
}

/// Routes delivery reports to the produce call that sent the record.
struct Deliveries;

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Arc<Pending>;

    fn delivery(&self, result: &DeliveryResult<'_>, pending: Arc<Pending>) {
        if let Err((e, _)) = result {
            pending.failed.fetch_add(1, Ordering::Relaxed);
            let mut first = pending.first_error.lock().expect("delivery lock");
            if first.is_none() {
                *first = Some(e.clone());
            }
        }
        pending.settle(1);
    }
}

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
            .create_with_context(Deliveries)
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
                .fetch_metadata(None, probe.options.request_timeout())
                .map_err(|e| {
                    LogError::storage(
                        format!(
                            "no Kafka broker answered at {} within {} ms",
                            probe.options.bootstrap_servers, probe.options.request_timeout_ms
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
    /// producer would retry a delivery (`delivery_timeout_ms`): every operation of the
    /// backend rides out the same outages, then fails loudly.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl Fn(&KafkaLog) -> Result<T> + Send + Sync + 'static,
    ) -> Result<T> {
        let f = Arc::new(f);
        let started = Instant::now();
        let budget = Duration::from_millis(self.options.delivery_timeout_ms);
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

    /// Partition count of a topic the cluster must have.
    fn known_partitions(&self, topic: &str) -> Result<u32> {
        self.partitions_of(topic)?
            .ok_or_else(|| LogError::UnknownTopic(topic.to_string()))
    }

    /// Partition count of a topic, or `None` when the cluster does not have it.
    fn partitions_of(&self, topic: &str) -> Result<Option<u32>> {
        let md = self
            .producer
            .client()
            .fetch_metadata(Some(topic), self.options.request_timeout())
            .map_err(|e| kafka_error(format!("reading metadata of topic '{topic}'"), e))?;
        let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
            return Ok(None);
        };
        match t.error() {
            None => Ok(Some(t.partitions().len() as u32)),
            Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => Ok(None),
            Some(e) => Err(LogError::storage(
                format!("reading metadata of topic '{topic}'"),
                KafkaError::MetadataFetch(e.into()),
            )),
        }
    }

    /// The first offset and one past the last offset of a partition.
    ///
    /// The high watermark a broker reports is checked by reading from just before it: a
    /// Kafka broker returns exactly one record there, and the end stands. tansu 0.6.0
    /// reports one past the *first* offset of the last record batch, so reading from it
    /// returns the rest of that batch, and the end is one past its last record.
    fn watermarks(&self, topic: &str, partition: u32) -> Result<(i64, i64)> {
        let context = || format!("reading the end of {topic}/{partition}");
        let timeout = self.options.request_timeout();
        let (low, high) = self
            .producer
            .client()
            .fetch_watermarks(topic, partition as i32, timeout)
            .map_err(|e| kafka_error(context(), e))?;
        if high <= low.max(0) {
            return Ok((low.max(0), high.max(0)));
        }
        // The log only grows: an unchanged reported end means an unchanged true end.
        let key = (topic.to_string(), partition);
        if let Some(&(reported, end)) = self.ends.lock().expect("ends lock").get(&key)
            && reported == high
        {
            return Ok((low.max(0), end));
        }
        let (end, found) = self.with_probe(|consumer| {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, partition as i32, Offset::Offset(high - 1))
                .map_err(|e| kafka_error(context(), e))?;
            consumer
                .assign(&tpl)
                .map_err(|e| kafka_error(context(), e))?;
            let mut end = high;
            let mut wait = timeout;
            // The first record may take a fetch; the rest of its batch arrives with it.
            while let Some(message) = consumer.poll(wait) {
                let m = message.map_err(|e| kafka_error(context(), e))?;
                end = end.max(m.offset() + 1);
                wait = Duration::ZERO;
            }
            Ok((end, wait.is_zero()))
        })?;
        if !found {
            return Err(LogError::storage(
                context(),
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no record at offset {} below the reported end", high - 1),
                ),
            ));
        }
        self.ends
            .lock()
            .expect("ends lock")
            .insert(key, (high, end));
        Ok((low.max(0), end))
    }

    /// Runs `f` with the probe consumer (created on first use).
    fn with_probe<T>(&self, f: impl FnOnce(&BaseConsumer) -> Result<T>) -> Result<T> {
        let mut probe = self.probe.lock().expect("probe lock");
        if probe.is_none() {
            let consumer: BaseConsumer = self
                .options
                .consumer_config(&self.options.group)
                .create()
                .map_err(|e| kafka_error("creating the log probe", e))?;
            *probe = Some(consumer);
        }
        f(probe.as_ref().expect("probe created"))
    }

    /// The offset of the first record a fetch from `offset` returns, if any arrives
    /// within the request timeout.
    fn first_offset_from(&self, topic: &str, partition: u32, offset: u64) -> Result<Option<u64>> {
        self.with_probe(|probe| {
            let context = || format!("reading {topic}/{partition}@{offset}");
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, partition as i32, Offset::Offset(offset as i64))
                .map_err(|e| kafka_error(context(), e))?;
            probe.assign(&tpl).map_err(|e| kafka_error(context(), e))?;
            // Records exist at `offset` (it is below the end): a Kafka broker returns them
            // at once, so a fetch that stays empty this long is a skipped batch.
            match probe.poll(PROBE_WAIT) {
                None => Ok(None),
                Some(Err(e)) => Err(kafka_error(context(), e)),
                Some(Ok(m)) => Ok(Some(m.offset() as u64)),
            }
        })
    }

    /// Where to start fetching so that the record at `offset` is among those returned.
    ///
    /// A Kafka broker answers a fetch with the record batch *containing* the offset asked
    /// for (the client drops the records before it), so this is `offset` itself. tansu
    /// 0.6.0 answers with the first batch *starting* at or after it, silently skipping the
    /// rest of a batch that the offset falls into; there the start steps back (doubling)
    /// until the first record returned is at or before `offset`, and the consumer drops
    /// what lies before its position. An offset at or beyond the end starts at the end,
    /// for the same reason.
    fn fetch_start(&self, topic: &str, partition: u32, offset: u64) -> Result<u64> {
        if offset == 0 {
            return Ok(0);
        }
        let (_, end) = self.watermarks(topic, partition)?;
        let end = end as u64;
        if offset >= end {
            // At or beyond the end: start at the end and drop what comes before `offset`
            // (a batch appended later may start below it).
            return Ok(end);
        }
        let mut start = offset;
        let mut step = FIRST_STEP_BACK;
        loop {
            match self.first_offset_from(topic, partition, start)? {
                Some(first) if first <= offset => break,
                _ if start == 0 => break,
                _ => {
                    start = start.saturating_sub(step);
                    step *= 2;
                }
            }
        }
        if start < offset {
            tracing::debug!(
                topic,
                partition,
                offset,
                start,
                "fetching from the start of the batch holding the offset"
            );
        }
        Ok(start)
    }

    fn group_consumer(&self, group: &str) -> Result<Arc<BaseConsumer>> {
        let mut groups = self.groups.lock().expect("group consumers lock");
        if let Some(c) = groups.get(group) {
            return Ok(c.clone());
        }
        let consumer: BaseConsumer = self
            .options
            .consumer_config(group)
            .create()
            .map_err(|e| kafka_error("creating a Kafka group client", e))?;
        let consumer = Arc::new(consumer);
        groups.insert(group.to_string(), consumer.clone());
        Ok(consumer)
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

    /// The broker's view of a topic's configuration (what `describe` prints); entries the
    /// broker does not report are absent.
    pub async fn topic_configs(&self, topic: &str) -> Result<Vec<(String, String)>> {
        let opts = AdminOptions::new().request_timeout(Some(self.options.request_timeout()));
        let results = self
            .admin
            .describe_configs([&ResourceSpecifier::Topic(topic)], &opts)
            .await
            .map_err(|e| kafka_error(format!("describing topic '{topic}'"), e))?;
        let mut out = Vec::new();
        for r in results {
            let resource = r.map_err(|e| {
                kafka_error(
                    format!("describing topic '{topic}'"),
                    KafkaError::AdminOp(e),
                )
            })?;
            for entry in resource.entries {
                if let Some(v) = entry.value
                    && !entry.is_default
                {
                    out.push((entry.name, v));
                }
            }
        }
        Ok(out)
    }

    /// The partition count a produce to `topic` uses: read from the cluster once, then
    /// kept (see `partition_counts`).
    async fn partition_count(&self, topic: &str) -> Result<u32> {
        if let Some(&n) = self.partition_counts().get(topic) {
            return Ok(n);
        }
        let name = topic.to_string();
        let n = self
            .blocking(move |log| log.known_partitions(&name))
            .await?;
        self.partition_counts().insert(topic.to_string(), n);
        Ok(n)
    }

    fn partition_counts(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.partition_counts.lock().expect("partition counts lock")
    }

    /// Sends the batches, waits for their delivery, then stores the checkpoint.
    async fn produce_now(
        &self,
        batches: Vec<TopicBatch>,
        checkpoint: Option<SourceCheckpoint>,
    ) -> Result<()> {
        let started = Instant::now();
        let mut partitions = Vec::with_capacity(batches.len());
        for b in &batches {
            partitions.push(self.partition_count(&b.topic).await?);
        }
        // All topics are sent before any report is awaited, so batches overlap.
        let sends = batches
            .iter()
            .zip(&partitions)
            .map(|(b, &n)| self.send_all(&b.topic, n, b));
        for (result, b) in join_all(sends).await.into_iter().zip(&batches) {
            if result.is_err() {
                self.partition_counts().remove(&b.topic);
            }
            result?;
            metrics::records_appended(&b.topic, b.len());
        }
        if let Some(cp) = checkpoint {
            let mut record = TopicBatch::new(CHECKPOINT_TOPIC);
            record.push(
                cp.source.as_bytes(),
                &cp.state,
                chrono::Utc::now().timestamp_millis(),
            );
            self.send_all(CHECKPOINT_TOPIC, 1, &record).await?;
        }
        metrics::append_latency(started.elapsed());
        Ok(())
    }

    /// Sends records and waits for all their delivery reports.
    async fn send_all(&self, topic: &str, partitions: u32, records: &TopicBatch) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let pending = Arc::new(Pending {
            remaining: AtomicUsize::new(records.len()),
            failed: AtomicUsize::new(0),
            first_error: Mutex::new(None),
            done: Notify::new(),
        });
        for (i, r) in records.iter().enumerate() {
            let partition = partition_for(r.key, partitions) as i32;
            let mut record = BaseRecord::with_opaque_to(topic, pending.clone())
                .key(r.key)
                .payload(r.value)
                .partition(partition)
                .timestamp(r.timestamp_ms);
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        // librdkafka's buffer is full: wait for deliveries to make room.
                        record = back;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Err((e, _)) => {
                        pending.settle(records.len() - i);
                        return Err(kafka_error(format!("producing to '{topic}'"), e));
                    }
                }
            }
        }
        pending.done.notified().await;
        let failed = pending.failed.load(Ordering::Acquire);
        if failed > 0 {
            let e = pending
                .first_error
                .lock()
                .expect("delivery lock")
                .take()
                .expect("a failed delivery keeps its error");
            return Err(kafka_error(
                format!(
                    "{failed} of {} records to '{topic}' were not delivered",
                    records.len()
                ),
                e,
            ));
        }
        Ok(())
    }
}

impl Log for KafkaLog {
    type Consumer = KafkaConsumer;

    async fn ensure_topic(&self, spec: &TopicSpec) -> Result<()> {
        let spec = spec.clone();
        spec.validate()?;
        let name = spec.name.clone();
        let (existing, brokers) = self
            .blocking(move |log| {
                let md = log
                    .producer
                    .client()
                    .fetch_metadata(None, log.options.request_timeout())
                    .map_err(|e| kafka_error("reading cluster metadata", e))?;
                Ok((log.partitions_of(&name)?, md.brokers().len()))
            })
            .await?;
        if let Some(existing) = existing {
            return check_partitions(&spec, existing);
        }
        let replication = match self.options.replication_factor {
            0 => brokers.clamp(1, 3) as i32,
            n => n as i32,
        };
        let retention = spec
            .retention_ms
            .map_or("-1".to_string(), |ms| ms.to_string());
        let topic = NewTopic::new(
            &spec.name,
            spec.partitions as i32,
            TopicReplication::Fixed(replication),
        )
        .set(
            "cleanup.policy",
            match spec.cleanup {
                CleanupPolicy::Delete => "delete",
                CleanupPolicy::Compact => "compact",
            },
        )
        .set("retention.ms", &retention);
        let opts = AdminOptions::new()
            .operation_timeout(Some(self.options.request_timeout()))
            .request_timeout(Some(self.options.request_timeout()));
        let results = self
            .admin
            .create_topics([&topic], &opts)
            .await
            .map_err(|e| kafka_error(format!("creating topic '{}'", spec.name), e))?;
        for r in results {
            match r {
                Ok(_) => {
                    tracing::info!(topic = %spec.name, partitions = spec.partitions, replication, "Kafka topic created");
                }
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    // Created concurrently by another K2 process: it must agree.
                    let name = spec.name.clone();
                    let existing = self
                        .blocking(move |log| log.partitions_of(&name))
                        .await?
                        .unwrap_or(spec.partitions);
                    return check_partitions(&spec, existing);
                }
                Err((_, code)) => {
                    return Err(kafka_error(
                        format!("creating topic '{}'", spec.name),
                        KafkaError::AdminOp(code),
                    ));
                }
            }
        }
        // The broker may answer metadata requests before the new topic shows up.
        let deadline = Instant::now() + self.options.request_timeout();
        loop {
            let name = spec.name.clone();
            if self
                .blocking(move |log| log.partitions_of(&name))
                .await?
                .is_some()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(LogError::Rejected(format!(
                    "topic '{}' was created but is not visible in the cluster metadata",
                    spec.name
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn topics(&self) -> Result<Vec<TopicSpec>> {
        let names: Vec<(String, u32)> = self
            .blocking(|log| {
                let md = log
                    .producer
                    .client()
                    .fetch_metadata(None, log.options.request_timeout())
                    .map_err(|e| kafka_error("listing topics", e))?;
                Ok(md
                    .topics()
                    .iter()
                    .filter(|t| t.error().is_none())
                    .filter(|t| {
                        !t.name().starts_with("__")
                            && t.name() != CHECKPOINT_TOPIC
                            && t.name() != DEAD_LETTER_TOPIC
                    })
                    .map(|t| (t.name().to_string(), t.partitions().len() as u32))
                    .collect())
            })
            .await?;
        let mut out = Vec::with_capacity(names.len());
        for (name, partitions) in names {
            // Configs are read once per topic and process (the writer lists topics every
            // few seconds); brokers that report none leave Kafka's defaults.
            let known = self
                .configs
                .lock()
                .expect("configs lock")
                .get(&name)
                .copied();
            let (cleanup, retention_ms) = match known {
                Some(known) => known,
                None => {
                    let configs = self.topic_configs(&name).await.unwrap_or_default();
                    let get =
                        |k: &str| configs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                    let cleanup = match get("cleanup.policy").as_deref() {
                        Some(p) if p.contains("compact") => CleanupPolicy::Compact,
                        _ => CleanupPolicy::Delete,
                    };
                    let retention_ms = get("retention.ms")
                        .and_then(|v| v.parse::<i64>().ok())
                        .filter(|&ms| ms >= 0);
                    self.configs
                        .lock()
                        .expect("configs lock")
                        .insert(name.clone(), (cleanup, retention_ms));
                    (cleanup, retention_ms)
                }
            };
            out.push(TopicSpec {
                name,
                partitions,
                cleanup,
                retention_ms,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn produce(
        &self,
        batches: Vec<TopicBatch>,
        checkpoint: Option<SourceCheckpoint>,
    ) -> Result<()> {
        // A task of its own: once the records are delivered, the checkpoint goes out at
        // once, not when the caller (busy parsing the next chunk) next polls this future.
        let this = self.clone();
        tokio::spawn(async move { this.produce_now(batches, checkpoint).await })
            .await
            .map_err(|e| LogError::storage("Kafka produce task", e))?
    }

    fn atomic_checkpoints(&self) -> bool {
        false
    }

    fn source_checkpoints(
        &self,
        sources: &[String],
    ) -> impl Future<Output = Result<Vec<Option<Vec<u8>>>>> + Send {
        let sources = sources.to_vec();
        self.blocking(move |log| {
            let timeout = log.options.request_timeout();
            let mut latest: Vec<Option<Vec<u8>>> = vec![None; sources.len()];
            let (low, high) = log.watermarks(CHECKPOINT_TOPIC, 0)?;
            if high <= low {
                return Ok(latest);
            }
            let wanted: HashMap<&[u8], usize> = sources
                .iter()
                .enumerate()
                .map(|(i, s)| (s.as_bytes(), i))
                .collect();
            // One pass over the topic answers every source asked.
            log.with_probe(|consumer| {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(CHECKPOINT_TOPIC, 0, Offset::Offset(low))
                    .map_err(|e| kafka_error("assigning the checkpoint topic", e))?;
                consumer
                    .assign(&tpl)
                    .map_err(|e| kafka_error("assigning the checkpoint topic", e))?;
                let deadline = Instant::now() + timeout;
                let mut next = low;
                while next < high {
                    if Instant::now() > deadline {
                        return Err(LogError::storage(
                            "reading source checkpoints",
                            std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"),
                        ));
                    }
                    match consumer.poll(Duration::from_millis(100)) {
                        None => {}
                        Some(Err(e)) => return Err(kafka_error("reading source checkpoints", e)),
                        Some(Ok(m)) => {
                            next = m.offset() + 1;
                            if let Some(&i) = m.key().and_then(|k| wanted.get(k)) {
                                latest[i] = m.payload().map(<[u8]>::to_vec);
                            }
                        }
                    }
                }
                Ok(latest)
            })
        })
    }

    fn end_offsets(&self, topic: &str) -> impl Future<Output = Result<Vec<u64>>> + Send {
        let topic = topic.to_string();
        self.blocking(move |log| {
            let n = log.known_partitions(&topic)?;
            (0..n)
                .map(|p| Ok(log.watermarks(&topic, p)?.1 as u64))
                .collect()
        })
    }

    fn consumer(&self, assignment: Vec<PartitionOffset>) -> Result<KafkaConsumer> {
        let consumer: BaseConsumer = self
            .options
            .consumer_config(&self.options.group)
            .create()
            .map_err(|e| kafka_error("creating the Kafka consumer", e))?;
        let mut tpl = TopicPartitionList::new();
        for a in &assignment {
            let start = self.fetch_start(&a.topic, a.partition, a.offset)?;
            tpl.add_partition_offset(&a.topic, a.partition as i32, Offset::Offset(start as i64))
                .map_err(|e| kafka_error("building the assignment", e))?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| kafka_error("assigning partitions", e))?;
        KafkaConsumer::new(consumer, assignment)
    }

    fn commit_group(
        &self,
        group: &str,
        offsets: &[PartitionOffset],
    ) -> impl Future<Output = Result<()>> + Send {
        let group = group.to_string();
        let offsets = offsets.to_vec();
        self.blocking(move |log| {
            if offsets.is_empty() {
                return Ok(());
            }
            let consumer = log.group_consumer(&group)?;
            let mut tpl = TopicPartitionList::new();
            for o in &offsets {
                tpl.add_partition_offset(
                    &o.topic,
                    o.partition as i32,
                    Offset::Offset(o.offset as i64),
                )
                .map_err(|e| kafka_error("building group offsets", e))?;
            }
            consumer
                .commit(&tpl, CommitMode::Sync)
                .map_err(|e| kafka_error(format!("committing offsets of group '{group}'"), e))
        })
    }

    async fn publish_dead_letters(&self, letters: &[crate::DeadLetter]) -> Result<()> {
        let mut records = TopicBatch::new(DEAD_LETTER_TOPIC);
        for l in letters {
            records.push_with(l.source.as_bytes(), l.rejected_at_us / 1000, |out| {
                serde_json::to_writer(out, l).expect("a dead letter serialises")
            });
        }
        self.send_all(DEAD_LETTER_TOPIC, 1, &records).await
    }

    fn group_offsets(
        &self,
        group: &str,
        topic: &str,
    ) -> impl Future<Output = Result<Vec<Option<u64>>>> + Send {
        let group = group.to_string();
        let topic = topic.to_string();
        self.blocking(move |log| {
            let n = log.known_partitions(&topic)?;
            let consumer = log.group_consumer(&group)?;
            let mut tpl = TopicPartitionList::new();
            for p in 0..n {
                tpl.add_partition(&topic, p as i32);
            }
            let got = consumer
                .committed_offsets(tpl, log.options.request_timeout())
                .map_err(|e| kafka_error(format!("reading offsets of group '{group}'"), e))?;
            Ok((0..n)
                .map(
                    |p| match got.find_partition(&topic, p as i32).map(|e| e.offset()) {
                        Some(Offset::Offset(o)) if o >= 0 => Some(o as u64),
                        _ => None,
                    },
                )
                .collect())
        })
    }
}

fn check_partitions(spec: &TopicSpec, existing: u32) -> Result<()> {
    if existing != spec.partitions {
        return Err(LogError::PartitionMismatch {
            topic: spec.name.clone(),
            existing,
            requested: spec.partitions,
        });
    }
    Ok(())
}

/// Awaits futures concurrently on the current task (they are I/O waits, not work).
async fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = (0..futures.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (f, slot) in futures.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.into_iter()
        .map(|v| v.expect("every future finished"))
        .collect()
}

impl SchemaStore for KafkaLog {
    fn register(&self, subject: &str, schema: &str) -> impl Future<Output = Result<u32>> + Send {
        self.schemas.register(subject, schema)
    }

    fn schema(&self, id: u32) -> impl Future<Output = Result<Option<String>>> + Send {
        self.schemas.schema(id)
    }
}

/// Records the reading thread hands over at a time.
const READ_CHUNK: usize = 4096;

/// Chunks the reading thread may have handed over and the writer not yet taken (with
/// librdkafka's own queue, what bounds the records held in memory).
const READ_AHEAD_CHUNKS: usize = 16;

/// Reads assigned partitions of a Kafka cluster. A thread of its own takes the records
/// from librdkafka (a call, a clock read and two copies per record) and hands them over
/// in chunks, so that work runs beside the caller's instead of inside its poll.
pub struct KafkaConsumer {
    /// Shared with the reading thread, for the high watermarks of fetch responses.
    consumer: Arc<BaseConsumer>,
    chunks: tokio::sync::mpsc::Receiver<Result<Vec<ConsumedRecord>>>,
    /// The rest of a chunk a poll stopped inside.
    held: std::vec::IntoIter<ConsumedRecord>,
    /// Positions of the records handed out.
    partitions: Vec<TopicPartitions>,
    /// An error the reading thread sent behind records, returned by the next poll.
    failed: Option<LogError>,
    stop: Arc<AtomicBool>,
}

struct TopicPartitions {
    name: Arc<str>,
    /// The name for librdkafka's C interface.
    c_name: std::ffi::CString,
    /// By partition number.
    partitions: BTreeMap<u32, Position>,
}

/// Where a partition is read from.
struct Position {
    /// The next offset to hand out; records below it (fetched because the fetch started
    /// earlier, see `KafkaLog::fetch_start`) are dropped.
    next: u64,
}

/// The assignment by topic, each partition at its assigned offset.
fn topic_partitions(assignment: &[PartitionOffset]) -> Vec<TopicPartitions> {
    let mut partitions: Vec<TopicPartitions> = Vec::new();
    for a in assignment {
        let i = match partitions.iter().position(|t| *t.name == *a.topic) {
            Some(i) => i,
            None => {
                partitions.push(TopicPartitions {
                    name: Arc::from(a.topic.as_str()),
                    // Topic names are ASCII without NUL (`TopicName`, Kafka's rules).
                    c_name: std::ffi::CString::new(a.topic.as_str()).unwrap_or_default(),
                    partitions: BTreeMap::new(),
                });
                partitions.len() - 1
            }
        };
        partitions[i]
            .partitions
            .insert(a.partition, Position { next: a.offset });
    }
    partitions
}

impl KafkaConsumer {
    fn new(consumer: BaseConsumer, assignment: Vec<PartitionOffset>) -> Result<KafkaConsumer> {
        let consumer = Arc::new(consumer);
        let (tx, chunks) = tokio::sync::mpsc::channel(READ_AHEAD_CHUNKS);
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (consumer, stop) = (consumer.clone(), stop.clone());
            let mut partitions = topic_partitions(&assignment);
            move || read_records(&consumer, &mut partitions, &tx, &stop)
        };
        std::thread::Builder::new()
            .name("k2-kafka-read".into())
            .spawn(reader)
            .map_err(|e| LogError::storage("starting the Kafka reading thread", e))?;
        Ok(KafkaConsumer {
            consumer,
            chunks,
            held: Vec::new().into_iter(),
            partitions: topic_partitions(&assignment),
            failed: None,
            stop,
        })
    }

    /// The record, unless it lies before the partition's position. `topic` is the index
    /// in `partitions` of the message's topic.
    fn arrive(
        partitions: &mut [TopicPartitions],
        topic: usize,
        m: &rdkafka::bindings::rd_kafka_message_t,
        timestamp_ms: i64,
    ) -> Option<ConsumedRecord> {
        let topic = &mut partitions[topic];
        let (partition, offset) = (m.partition as u32, m.offset as u64);
        let position = topic.partitions.get_mut(&partition)?;
        if offset < position.next {
            return None;
        }
        position.next = offset + 1;
        // SAFETY: librdkafka sets `key`/`payload` to `key_len`/`len` readable bytes (or
        // null) that live as long as the message, which the caller destroys after this.
        let bytes = |ptr: *const std::ffi::c_void, len: usize| -> Vec<u8> {
            if ptr.is_null() || len == 0 {
                Vec::new()
            } else {
                unsafe { std::slice::from_raw_parts(ptr as *const u8, len) }.to_vec()
            }
        };
        Some(ConsumedRecord {
            topic: topic.name.clone(),
            partition,
            offset,
            key: bytes(m.key, m.key_len),
            value: bytes(m.payload, m.len),
            timestamp_ms: timestamp_ms.max(0),
        })
    }

    /// Moves the positions past the records handed out.
    fn hand_out(&mut self, records: &[ConsumedRecord]) {
        let mut last: Option<(&Arc<str>, u32)> = None;
        for r in records.iter().rev() {
            // Records of one partition come in offset order: its last record is its position.
            if last.is_some_and(|(t, p)| Arc::ptr_eq(t, &r.topic) && p == r.partition) {
                continue;
            }
            last = Some((&r.topic, r.partition));
            let position = self
                .partitions
                .iter_mut()
                .find(|t| *t.name == *r.topic)
                .and_then(|t| t.partitions.get_mut(&r.partition));
            if let Some(position) = position {
                position.next = position.next.max(r.offset + 1);
            }
        }
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        // The reading thread stops at its next poll or hand-over.
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The reading thread: takes records from librdkafka, in chunks of what is buffered, and
/// hands them over until the consumer is dropped or an error means records are lost.
fn read_records(
    consumer: &BaseConsumer,
    partitions: &mut [TopicPartitions],
    tx: &tokio::sync::mpsc::Sender<Result<Vec<ConsumedRecord>>>,
    stop: &AtomicBool,
) {
    let Some(queue) = ConsumerQueue::of(consumer) else {
        let _ = tx.blocking_send(Err(LogError::Rejected(
            "reading from Kafka: the consumer has no queue to read".into(),
        )));
        return;
    };
    let mut taken = vec![std::ptr::null_mut(); READ_CHUNK];
    // The topic of the last message, by librdkafka's topic handle: a name is compared only
    // when the handle changes.
    let mut last_topic: Option<(*mut rdkafka::bindings::rd_kafka_topic_t, Option<usize>)> = None;
    while !stop.load(Ordering::Relaxed) {
        // The first record may wait a while (and the stop flag is looked at between
        // waits); the rest are only what is already buffered.
        let mut n = queue.take(Duration::from_millis(100), &mut taken[..1]);
        if n == 1 {
            n += queue.take(Duration::ZERO, &mut taken[1..]);
        }
        let mut chunk = Vec::with_capacity(n);
        let mut error = None;
        for &ptr in &taken[..n] {
            // SAFETY: librdkafka handed each message over to this thread; it is read here
            // and destroyed once, just below.
            let m = unsafe { &*ptr };
            if m.err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
                error = error.or(Some(RDKafkaErrorCode::from(m.err)));
            } else {
                let topic = match last_topic {
                    Some((rkt, topic)) if rkt == m.rkt => topic,
                    _ => {
                        // SAFETY: a message's topic handle lives as long as the message;
                        // its name is NUL-terminated.
                        let name = unsafe {
                            std::ffi::CStr::from_ptr(rdkafka::bindings::rd_kafka_topic_name(m.rkt))
                        };
                        let topic = partitions
                            .iter()
                            .position(|t| t.c_name.as_bytes() == name.to_bytes());
                        last_topic = Some((m.rkt, topic));
                        topic
                    }
                };
                if let Some(topic) = topic {
                    let mut kind = rdkafka::bindings::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
                    // SAFETY: reads the live message's timestamp and writes its kind.
                    let ts =
                        unsafe { rdkafka::bindings::rd_kafka_message_timestamp(ptr, &mut kind) };
                    chunk.extend(KafkaConsumer::arrive(partitions, topic, m, ts));
                }
            }
            // SAFETY: each message taken is destroyed exactly once, after its last use.
            unsafe { rdkafka::bindings::rd_kafka_message_destroy(ptr) };
        }
        let got_records = !chunk.is_empty();
        let delivered = !got_records || tx.blocking_send(Ok(chunk)).is_ok();
        match error {
            Some(code) if consumer_error_is_fatal(code) => {
                let _ = tx.blocking_send(Err(LogError::Rejected(format!(
                    "reading from Kafka: {code} (an assigned offset is no longer on the \
                     broker, or the topic is gone: records were lost before the lake took \
                     them)"
                ))));
                return;
            }
            Some(code) => {
                metrics::consumer_error();
                tracing::warn!(error = %code, "Kafka consumer error; librdkafka retries");
                if !got_records {
                    // Do not spin while the broker is away.
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            None => {}
        }
        if !delivered {
            return;
        }
    }
}

/// librdkafka's consumer queue, read many records per call: `BaseConsumer::poll` takes one
/// per call, with two clock reads and an allocation around each, which was a fifth of the
/// reading thread's time.
struct ConsumerQueue(std::ptr::NonNull<rdkafka::bindings::rd_kafka_queue_t>);

impl ConsumerQueue {
    fn of(consumer: &BaseConsumer) -> Option<Self> {
        // SAFETY: the consumer's handle is live while borrowed; the call returns a new
        // reference to its queue (or null), released in `drop`.
        let queue = unsafe {
            rdkafka::bindings::rd_kafka_queue_get_consumer(consumer.client().native_ptr())
        };
        std::ptr::NonNull::new(queue).map(ConsumerQueue)
    }

    /// Takes up to `into.len()` messages into `into`, waiting at most `wait` for each
    /// one; returns how many. The caller owns (and destroys) each message taken.
    fn take(
        &self,
        wait: Duration,
        into: &mut [*mut rdkafka::bindings::rd_kafka_message_t],
    ) -> usize {
        if into.is_empty() {
            return 0;
        }
        // SAFETY: the queue is live (a reference held by `self`); librdkafka writes at most
        // `into.len()` message pointers into `into`.
        let n = unsafe {
            rdkafka::bindings::rd_kafka_consume_batch_queue(
                self.0.as_ptr(),
                wait.as_millis() as i32,
                into.as_mut_ptr(),
                into.len(),
            )
        };
        n.max(0) as usize
    }
}

impl Drop for ConsumerQueue {
    fn drop(&mut self) {
        // SAFETY: releases the reference taken in `of`, once.
        unsafe { rdkafka::bindings::rd_kafka_queue_destroy(self.0.as_ptr()) }
    }
}

/// Whether a consumer error means records are gone (or will never come), rather than a
/// broker being briefly unreachable, which librdkafka recovers from by itself.
fn consumer_error_is_fatal(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::OffsetOutOfRange
            | RDKafkaErrorCode::AutoOffsetReset
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownPartition
    )
}

impl LogConsumer for KafkaConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<ConsumedRecord>> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let mut out: Vec<ConsumedRecord> = self.held.by_ref().take(max).collect();
        let mut waited = false;
        while out.len() < max {
            // The first chunk may take up to `wait`; the rest only what is handed over.
            let chunk = if out.is_empty() && !waited {
                waited = true;
                match tokio::time::timeout(wait, self.chunks.recv()).await {
                    Ok(chunk) => chunk,
                    Err(_) => break,
                }
            } else {
                match self.chunks.try_recv() {
                    Ok(chunk) => Some(chunk),
                    Err(_) => break,
                }
            };
            let Some(chunk) = chunk else {
                return Err(LogError::Rejected(
                    "the Kafka reading thread stopped".into(),
                ));
            };
            let mut chunk = match chunk {
                Ok(chunk) => chunk.into_iter(),
                // The records before the error are handed out first.
                Err(e) if !out.is_empty() => {
                    self.failed = Some(e);
                    break;
                }
                Err(e) => return Err(e),
            };
            out.extend(chunk.by_ref().take(max - out.len()));
            self.held = chunk;
        }
        self.hand_out(&out);
        metrics::records_read(out.len());
        Ok(out)
    }

    fn positions(&self) -> Vec<PartitionOffset> {
        let mut out: Vec<PartitionOffset> = self
            .partitions
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|(&partition, p)| PartitionOffset {
                    topic: t.name.to_string(),
                    partition,
                    offset: p.next,
                })
            })
            .collect();
        out.sort();
        out
    }

    fn read_to_end(&self) -> bool {
        let client = self.consumer.client().native_ptr();
        self.partitions.iter().all(|t| {
            t.partitions.iter().all(|(&partition, p)| {
                let (mut low, mut high) = (-1i64, -1i64);
                // SAFETY: `client` is the consumer's live handle, borrowed for this call;
                // `c_name` is NUL-terminated and outlives it; librdkafka reads the
                // partition's cached watermarks (set from each fetch response) under the
                // partition's lock and only writes the two integers given.
                let err = unsafe {
                    rdkafka::bindings::rd_kafka_get_watermark_offsets(
                        client,
                        t.c_name.as_ptr(),
                        partition as i32,
                        &mut low,
                        &mut high,
                    )
                };
                // No fetch response yet leaves the high watermark invalid (negative).
                err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR
                    && high >= 0
                    && p.next >= high as u64
            })
        })
    }
}
