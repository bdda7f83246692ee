//! Records as they go to the log: an exchange's topics, each record keyed for its
//! partition and Avro-encoded in the Confluent framing, stamped with the time K2 took it
//! in. File ingest and live capture produce the same way.

use std::collections::BTreeMap;

use k2_log::{CleanupPolicy, TopicBatch, TopicSpec};
use k2_model::{AssetClass, DataType, MarketRecord, TopicName, avro};

/// The topic specs K2 uses for an exchange's data.
pub fn topic_specs(asset_class: AssetClass, exchange: &str, partitions: u32) -> Vec<TopicSpec> {
    DataType::ALL
        .iter()
        .map(|&dt| {
            let name = TopicName::new(asset_class, dt, exchange).to_string();
            match dt {
                DataType::ReferenceData => TopicSpec {
                    name,
                    partitions: 1,
                    cleanup: CleanupPolicy::Compact,
                    retention_ms: None,
                },
                _ => TopicSpec {
                    name,
                    partitions,
                    cleanup: CleanupPolicy::Delete,
                    retention_ms: Some(7 * 24 * 3_600_000),
                },
            }
        })
        .collect()
}

/// Room per record in a batch: an ASX trade is about 170 bytes of key and Avro value (the
/// batch grows if not).
pub(crate) const RECORD_BYTES: usize = 192;

pub(crate) struct Encoder {
    pub ids: BTreeMap<DataType, u32>,
}

impl Encoder {
    /// Appends `records`, encoded, to a batch for `topic`.
    pub fn batch(&self, topic: &str, records: &mut [MarketRecord], now_us: i64) -> TopicBatch {
        let mut batch =
            TopicBatch::with_capacity(topic, records.len(), records.len() * RECORD_BYTES);
        for rec in records {
            encode(rec, self.ids[&rec.data_type()], now_us, &mut batch);
        }
        batch
    }
}

/// Appends a record to `batch` as it goes to the log: keyed for its partition, Avro in
/// the Confluent framing, stamped with the time K2 took it in.
pub fn encode(rec: &mut MarketRecord, schema_id: u32, now_us: i64, batch: &mut TopicBatch) {
    rec.set_ingestion_timestamp(now_us);
    batch.push_with(rec.partition_key().as_bytes(), now_us / 1000, |out| {
        avro::encode(rec, schema_id, out)
    });
}

/// The time now, microseconds since the Unix epoch (0 before it).
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}
