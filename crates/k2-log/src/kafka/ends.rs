//! Where partitions begin and end, and where to start fetching: metadata and watermark
//! reads, checked against the records themselves (tansu 0.6.0 reports the end of a
//! partition's last batch differently from Kafka).

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::Producer;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

use super::{FIRST_STEP_BACK, KafkaLog, PROBE_WAIT, kafka_error};
use crate::error::{LogError, Result};

impl KafkaLog {
    /// Partition count of a topic the cluster must have.
    pub(super) fn known_partitions(&self, topic: &str) -> Result<u32> {
        self.partitions_of(topic)?
            .ok_or_else(|| LogError::UnknownTopic(topic.to_string()))
    }

    /// Partition count of a topic, or `None` when the cluster does not have it.
    pub(super) fn partitions_of(&self, topic: &str) -> Result<Option<u32>> {
        let md = self
            .producer
            .client()
            .fetch_metadata(Some(topic), self.options.request_timeout)
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
    pub(super) fn watermarks(&self, topic: &str, partition: u32) -> Result<(i64, i64)> {
        let context = || format!("reading the end of {topic}/{partition}");
        let timeout = self.options.request_timeout;
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
    pub(super) fn with_probe<T>(&self, f: impl FnOnce(&BaseConsumer) -> Result<T>) -> Result<T> {
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
    pub(super) fn fetch_start(&self, topic: &str, partition: u32, offset: u64) -> Result<u64> {
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

    pub(super) fn partition_ends(
        &self,
        topic: &str,
    ) -> impl Future<Output = Result<Vec<u64>>> + Send {
        let topic = topic.to_string();
        self.blocking(move |log| {
            let n = log.known_partitions(&topic)?;
            (0..n)
                .map(|p| Ok(log.watermarks(&topic, p)?.1 as u64))
                .collect()
        })
    }
}
