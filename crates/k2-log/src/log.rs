//! The log abstraction: topics split into partitions, records at offsets, consumers that
//! read from positions they are given, and consumer-group positions kept for monitoring.
//!
//! The trait is shaped after Kafka so a Kafka backend can implement it directly:
//! - records are keyed; the partition is `murmur2(key) % partitions` (Kafka's default);
//! - `produce` returns only once every record is durable (acks=all);
//! - a consumer is *assigned* partitions at explicit offsets (the lake's snapshot decides
//!   where to resume; group offsets are informational);
//! - a source checkpoint can ride along with a produce, so a file source can resume
//!   where it stopped. The embedded backend commits it atomically with the records; a
//!   backend that cannot must say so through [`Log::atomic_checkpoints`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// How a topic is cleaned up when it grows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CleanupPolicy {
    /// Old records are deleted after the retention period.
    Delete,
    /// The latest record per key is kept.
    Compact,
}

/// What a topic should look like.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: u32,
    pub cleanup: CleanupPolicy,
    /// Retention in milliseconds for `Delete` topics; `None` keeps everything.
    pub retention_ms: Option<i64>,
}

impl TopicSpec {
    /// A topic needs a name and at least one partition.
    pub fn validate(&self) -> Result<()> {
        if self.partitions == 0 || self.name.is_empty() {
            return Err(crate::LogError::InvalidSpec(format!(
                "topic '{}' with {} partitions",
                self.name, self.partitions
            )));
        }
        Ok(())
    }
}

/// One record of a [`TopicBatch`], where it lies in the batch's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    /// Producer time, milliseconds since the epoch.
    pub timestamp_ms: i64,
}

/// Records bound for one topic, their keys and values back to back in one buffer: a
/// record appended costs no allocation of its own, and a backend reads each key and value
/// where it lies (the embedded log copies them into its page, librdkafka into its queue).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicBatch {
    pub topic: String,
    bytes: Vec<u8>,
    records: Vec<Span>,
}

/// Where a record lies in its batch's buffer: the key at `start`, the value right after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    start: usize,
    key_len: usize,
    value_len: usize,
    timestamp_ms: i64,
}

impl TopicBatch {
    pub fn new(topic: impl Into<String>) -> TopicBatch {
        TopicBatch::with_capacity(topic, 0, 0)
    }

    /// Room for `records` records of `bytes` bytes of keys and values in all.
    pub fn with_capacity(topic: impl Into<String>, records: usize, bytes: usize) -> TopicBatch {
        TopicBatch {
            topic: topic.into(),
            bytes: Vec::with_capacity(bytes),
            records: Vec::with_capacity(records),
        }
    }

    /// Appends a record.
    pub fn push(&mut self, key: &[u8], value: &[u8], timestamp_ms: i64) {
        self.push_with(key, timestamp_ms, |out| out.extend_from_slice(value));
    }

    /// Appends a record whose value `write` appends to the buffer it is given (an encoder
    /// writes straight into the batch).
    pub fn push_with(&mut self, key: &[u8], timestamp_ms: i64, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(key);
        write(&mut self.bytes);
        self.records.push(Span {
            start,
            key_len: key.len(),
            value_len: self.bytes.len() - start - key.len(),
            timestamp_ms,
        });
    }

    /// Appends the records of `other`, in their order, after these.
    pub fn append(&mut self, other: &TopicBatch) {
        let shift = self.bytes.len();
        self.bytes.extend_from_slice(&other.bytes);
        self.records.extend(other.records.iter().map(|s| Span {
            start: s.start + shift,
            ..*s
        }));
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The records in the order they were appended.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Record<'_>> + Clone + '_ {
        self.records.iter().map(|s| {
            let (key, value) =
                self.bytes[s.start..s.start + s.key_len + s.value_len].split_at(s.key_len);
            Record {
                key,
                value,
                timestamp_ms: s.timestamp_ms,
            }
        })
    }
}

/// Progress of a source (e.g. how far into a file), stored under a source key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceCheckpoint {
    pub source: String,
    pub state: Vec<u8>,
}

/// A record read back, with its coordinates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub topic: Arc<str>,
    pub partition: u32,
    pub offset: u64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub timestamp_ms: i64,
}

/// A partition and the offset to read next from it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PartitionOffset {
    pub topic: String,
    pub partition: u32,
    /// The next offset to read (one past the last record consumed).
    pub offset: u64,
}

/// The durable, partitioned, replayable log.
pub trait Log: Send + Sync + 'static {
    type Consumer: LogConsumer;

    /// Creates the topic if missing; an existing topic must have the same partition count.
    fn ensure_topic(&self, spec: &TopicSpec) -> impl Future<Output = Result<()>> + Send;

    /// Specs of all topics.
    fn topics(&self) -> impl Future<Output = Result<Vec<TopicSpec>>> + Send;

    /// Appends the batches; returns when every record is durable. With a checkpoint, the
    /// checkpoint is stored after (or with) the records.
    fn produce(
        &self,
        batches: Vec<TopicBatch>,
        checkpoint: Option<SourceCheckpoint>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Whether a checkpoint is committed atomically with the records of the same produce.
    fn atomic_checkpoints(&self) -> bool;

    /// The latest checkpoint stored for each source, in the order asked (`None` for a
    /// source that has none). One call for many sources: on a cluster each call is a
    /// read of the checkpoint topic.
    fn source_checkpoints(
        &self,
        sources: &[String],
    ) -> impl Future<Output = Result<Vec<Option<Vec<u8>>>>> + Send;

    /// One past the last offset of every partition of the topic.
    fn end_offsets(&self, topic: &str) -> impl Future<Output = Result<Vec<u64>>> + Send;

    /// A consumer reading exactly the given partitions from the given offsets.
    fn consumer(&self, assignment: Vec<PartitionOffset>) -> Result<Self::Consumer>;

    /// Records a consumer group's position (for lag monitoring, not for correctness).
    fn commit_group(
        &self,
        group: &str,
        offsets: &[PartitionOffset],
    ) -> impl Future<Output = Result<()>> + Send;

    /// A consumer group's recorded positions for a topic, per partition.
    fn group_offsets(
        &self,
        group: &str,
        topic: &str,
    ) -> impl Future<Output = Result<Vec<Option<u64>>>> + Send;

    /// Publishes dead letters where other systems read them (Kafka: the dead-letter
    /// topic), after they are stored in the data directory. The embedded log has no such
    /// place: there the store is the dead-letter queue.
    fn publish_dead_letters(
        &self,
        _letters: &[crate::DeadLetter],
    ) -> impl Future<Output = Result<()>> + Send {
        std::future::ready(Ok(()))
    }
}

/// Reads assigned partitions in offset order.
pub trait LogConsumer: Send + 'static {
    /// Up to `max` records, waiting at most `wait` when there are none yet. Records of one
    /// partition come in offset order; partitions are interleaved fairly.
    fn poll(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> impl Future<Output = Result<Vec<ConsumedRecord>>> + Send;

    /// Current read positions.
    fn positions(&self) -> Vec<PartitionOffset>;

    /// Whether every assigned partition was read up to its end the last time this
    /// consumer looked at it, without asking the log again (a Kafka consumer's look is
    /// its latest fetch response). False for a partition not looked at yet.
    fn read_to_end(&self) -> bool;
}

#[cfg(test)]
mod tests {
    use super::TopicBatch;

    #[test]
    fn an_appended_batch_follows_in_order_with_its_keys_values_and_times() {
        let mut a = TopicBatch::new("t");
        a.push(b"k1", b"first", 1);
        let mut b = TopicBatch::new("t");
        b.push(b"", b"second", 2);
        b.push(b"key3", b"", 3);
        a.append(&b);
        a.append(&TopicBatch::new("t"));
        let got: Vec<(&[u8], &[u8], i64)> =
            a.iter().map(|r| (r.key, r.value, r.timestamp_ms)).collect();
        let want: Vec<(&[u8], &[u8], i64)> =
            vec![(b"k1", b"first", 1), (b"", b"second", 2), (b"key3", b"", 3)];
        assert_eq!(got, want);
    }
}
