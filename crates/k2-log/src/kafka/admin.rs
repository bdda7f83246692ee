//! Topics: created with K2's partitions, cleanup and retention (an existing topic must
//! agree), listed with their configuration (read once per topic and process).

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::Producer;

use super::{CHECKPOINT_TOPIC, DEAD_LETTER_TOPIC, KafkaLog, kafka_error};
use crate::error::{LogError, Result};
use crate::log::{CleanupPolicy, TopicSpec};

impl KafkaLog {
    /// The broker's view of a topic's configuration (what `describe` prints); entries the
    /// broker does not report are absent.
    pub async fn topic_configs(&self, topic: &str) -> Result<Vec<(String, String)>> {
        let opts = AdminOptions::new().request_timeout(Some(self.options.request_timeout));
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

    pub(super) async fn create_topic(&self, spec: &TopicSpec) -> Result<()> {
        let spec = spec.clone();
        spec.validate()?;
        let name = spec.name.clone();
        let (existing, brokers) = self
            .blocking(move |log| {
                let md = log
                    .producer
                    .client()
                    .fetch_metadata(None, log.options.request_timeout)
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
            .operation_timeout(Some(self.options.request_timeout))
            .request_timeout(Some(self.options.request_timeout));
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
        let deadline = Instant::now() + self.options.request_timeout;
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

    pub(super) async fn list_topics(&self) -> Result<Vec<TopicSpec>> {
        let names: Vec<(String, u32)> = self
            .blocking(|log| {
                let md = log
                    .producer
                    .client()
                    .fetch_metadata(None, log.options.request_timeout)
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
