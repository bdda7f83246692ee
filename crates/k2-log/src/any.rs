//! The backend chosen by configuration, behind the same traits: commands and services are
//! written once against `Log + SchemaStore` and run on either.

use std::time::Duration;

use crate::error::Result;
use crate::kafka::{KafkaConsumer, KafkaLog};
use crate::log::{
    ConsumedRecord, Log, LogConsumer, PartitionOffset, SourceCheckpoint, TopicBatch, TopicSpec,
};
use crate::registry::SchemaStore;
use crate::{EmbeddedConsumer, EmbeddedLog};

/// The embedded log or a Kafka cluster. Cheap to clone.
#[derive(Clone)]
pub enum AnyLog {
    Embedded(EmbeddedLog),
    Kafka(KafkaLog),
}

/// A consumer of either backend.
pub enum AnyConsumer {
    Embedded(EmbeddedConsumer),
    Kafka(KafkaConsumer),
}

/// Runs the same expression on whichever backend `$log` holds.
macro_rules! each {
    ($log:expr, $l:ident => $e:expr) => {
        match $log {
            AnyLog::Embedded($l) => $e,
            AnyLog::Kafka($l) => $e,
        }
    };
}

impl AnyLog {
    /// `embedded` or `kafka`.
    pub fn backend(&self) -> &'static str {
        match self {
            AnyLog::Embedded(_) => "embedded",
            AnyLog::Kafka(_) => "kafka",
        }
    }

    /// Delivers what is still buffered (Kafka) and says how many records were not.
    pub fn close(&self, timeout: Duration) -> usize {
        match self {
            AnyLog::Embedded(_) => 0,
            AnyLog::Kafka(k) => k.close(timeout),
        }
    }
}

impl Log for AnyLog {
    type Consumer = AnyConsumer;

    async fn ensure_topic(&self, spec: &TopicSpec) -> Result<()> {
        each!(self, l => l.ensure_topic(spec).await)
    }

    async fn topics(&self) -> Result<Vec<TopicSpec>> {
        each!(self, l => l.topics().await)
    }

    async fn produce(
        &self,
        batches: Vec<TopicBatch>,
        checkpoint: Option<SourceCheckpoint>,
    ) -> Result<()> {
        each!(self, l => l.produce(batches, checkpoint).await)
    }

    fn atomic_checkpoints(&self) -> bool {
        each!(self, l => l.atomic_checkpoints())
    }

    async fn source_checkpoints(&self, sources: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        each!(self, l => l.source_checkpoints(sources).await)
    }

    async fn end_offsets(&self, topic: &str) -> Result<Vec<u64>> {
        each!(self, l => l.end_offsets(topic).await)
    }

    fn consumer(&self, assignment: Vec<PartitionOffset>) -> Result<AnyConsumer> {
        Ok(match self {
            AnyLog::Embedded(l) => AnyConsumer::Embedded(l.consumer(assignment)?),
            AnyLog::Kafka(k) => AnyConsumer::Kafka(k.consumer(assignment)?),
        })
    }

    async fn commit_group(&self, group: &str, offsets: &[PartitionOffset]) -> Result<()> {
        each!(self, l => l.commit_group(group, offsets).await)
    }

    async fn publish_dead_letters(&self, letters: &[crate::DeadLetter]) -> Result<()> {
        each!(self, l => l.publish_dead_letters(letters).await)
    }

    async fn group_offsets(&self, group: &str, topic: &str) -> Result<Vec<Option<u64>>> {
        each!(self, l => l.group_offsets(group, topic).await)
    }
}

impl SchemaStore for AnyLog {
    async fn register(&self, subject: &str, schema: &str) -> Result<u32> {
        each!(self, l => l.register(subject, schema).await)
    }

    async fn schema(&self, id: u32) -> Result<Option<String>> {
        each!(self, l => l.schema(id).await)
    }
}

impl LogConsumer for AnyConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<ConsumedRecord>> {
        match self {
            AnyConsumer::Embedded(c) => c.poll(max, wait).await,
            AnyConsumer::Kafka(c) => c.poll(max, wait).await,
        }
    }

    fn positions(&self) -> Vec<PartitionOffset> {
        match self {
            AnyConsumer::Embedded(c) => c.positions(),
            AnyConsumer::Kafka(c) => c.positions(),
        }
    }

    fn read_to_end(&self) -> bool {
        match self {
            AnyConsumer::Embedded(c) => c.read_to_end(),
            AnyConsumer::Kafka(c) => c.read_to_end(),
        }
    }
}
