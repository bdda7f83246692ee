//! Reading: a consumer assigned the partitions at the offsets the lake recorded, a thread
//! of its own taking records from librdkafka in chunks beside the caller's work.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::queue::{ConsumerQueue, consumer_error_is_fatal};
use super::{KafkaLog, kafka_error};
use crate::error::{LogError, Result};
use crate::log::{ConsumedRecord, LogConsumer, PartitionOffset};
use crate::metrics;

impl KafkaLog {
    /// A consumer of `assignment`, each partition fetched from where its record is.
    pub(super) fn assigned_consumer(
        &self,
        assignment: Vec<PartitionOffset>,
    ) -> Result<KafkaConsumer> {
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
    stop: CancellationToken,
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
        let stop = CancellationToken::new();
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
        self.stop.cancel();
    }
}

/// The reading thread: takes records from librdkafka, in chunks of what is buffered, and
/// hands them over until the consumer is dropped or an error means records are lost.
fn read_records(
    consumer: &BaseConsumer,
    partitions: &mut [TopicPartitions],
    tx: &tokio::sync::mpsc::Sender<Result<Vec<ConsumedRecord>>>,
    stop: &CancellationToken,
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
    while !stop.is_cancelled() {
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
