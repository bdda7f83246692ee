//! Source checkpoints and consumer-group positions: where a file source resumes (the
//! latest record per source in a compacted topic) and the lake writer's positions as a
//! consumer group's (for lag monitoring only).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::{CHECKPOINT_TOPIC, KafkaLog, kafka_error};
use crate::error::{LogError, Result};
use crate::log::PartitionOffset;

impl KafkaLog {
    pub(super) fn latest_checkpoints(
        &self,
        sources: &[String],
    ) -> impl Future<Output = Result<Vec<Option<Vec<u8>>>>> + Send {
        let sources = sources.to_vec();
        self.blocking(move |log| {
            let timeout = log.options.request_timeout;
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

    pub(super) fn group_consumer(&self, group: &str) -> Result<Arc<BaseConsumer>> {
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

    pub(super) fn commit_positions(
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

    pub(super) fn positions_of_group(
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
                .committed_offsets(tpl, log.options.request_timeout)
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
