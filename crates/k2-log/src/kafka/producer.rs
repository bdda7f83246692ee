//! Producing: records sent idempotently to the partition K2 chooses (Kafka's `murmur2`),
//! each produce call waiting for every delivery report, then its source checkpoint.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext};
use tokio::sync::Notify;

use super::{CHECKPOINT_TOPIC, DEAD_LETTER_TOPIC, KafkaLog, kafka_error};
use crate::error::{LogError, Result};
use crate::log::{SourceCheckpoint, TopicBatch};
use crate::metrics;
use crate::partitioner::partition_for;

/// Outstanding deliveries of one produce call.
pub(super) struct Pending {
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

/// Routes delivery reports to the produce call that sent the record, and keeps the client's
/// last error (a TLS handshake refused, SASL authentication failed) so that a cluster
/// that cannot be reached is reported with the reason.
#[derive(Default)]
pub(super) struct Deliveries {
    pub last_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::error!(%error, reason, "Kafka client");
        // "All brokers are down" says less than what brought them down.
        if !matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AllBrokersDown)
        ) {
            *self.last_error.lock().expect("error lock") = Some(reason.to_string());
        }
    }
}

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

impl KafkaLog {
    /// The partition count a produce to `topic` uses: read from the cluster once, then
    /// kept (see `partition_counts`).
    pub(super) async fn partition_count(&self, topic: &str) -> Result<u32> {
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
    pub(super) async fn produce_now(
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
        for (result, b) in futures::future::join_all(sends)
            .await
            .into_iter()
            .zip(&batches)
        {
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
    pub(super) async fn send_all(
        &self,
        topic: &str,
        partitions: u32,
        records: &TopicBatch,
    ) -> Result<()> {
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
    pub(super) async fn produce_on_task(
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

    pub(super) async fn publish_letters(&self, letters: &[crate::DeadLetter]) -> Result<()> {
        let mut records = TopicBatch::new(DEAD_LETTER_TOPIC);
        for l in letters {
            records.push_with(l.source.as_bytes(), l.rejected_at_us / 1000, |out| {
                serde_json::to_writer(out, l).expect("a dead letter serialises")
            });
        }
        self.send_all(DEAD_LETTER_TOPIC, 1, &records).await
    }
}
