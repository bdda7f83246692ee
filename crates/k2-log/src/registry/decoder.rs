//! Reading K2 records in the Confluent framing (magic byte, schema id, Avro datum): each
//! schema id looked up in the registry once, then payloads decoded without it.

use std::collections::{HashMap, HashSet};

use k2_model::{DataType, MarketRecord, avro};

use super::SchemaStore;
use crate::error::Result;
use crate::log::ConsumedRecord;

/// Why a payload could not be read: a dead-letter kind and a sentence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Undecodable {
    pub kind: &'static str,
    pub reason: String,
}

/// Reads K2 records in the Confluent framing (magic byte, schema id, Avro datum),
/// remembering what record type each schema id is.
#[derive(Default)]
pub struct PayloadDecoder {
    known: HashMap<u32, DataType>,
}

impl PayloadDecoder {
    /// The record, or why the payload is not a `expected` record. Only a failure to reach
    /// the schema store is an error.
    pub async fn decode<S: SchemaStore>(
        &mut self,
        store: &S,
        payload: &[u8],
        expected: DataType,
    ) -> Result<std::result::Result<MarketRecord, Undecodable>> {
        if let Ok(id) = avro::schema_id(payload) {
            self.learn_id(store, id).await?;
        }
        Ok(self.decode_known(payload, expected))
    }

    /// Looks up in the store, once each, the schema ids of these records the decoder does
    /// not know yet; afterwards [`PayloadDecoder::decode_known`] decodes them without it.
    /// Only a failure to reach the schema store is an error.
    pub async fn learn<S: SchemaStore>(
        &mut self,
        store: &S,
        records: &[ConsumedRecord],
    ) -> Result<()> {
        let (mut asked, mut last) = (HashSet::new(), None);
        for record in records {
            let Ok(id) = avro::schema_id(&record.value) else {
                continue;
            };
            // Payloads come in runs of one schema: one map lookup per run.
            if last.replace(id) != Some(id) && asked.insert(id) {
                self.learn_id(store, id).await?;
            }
        }
        Ok(())
    }

    async fn learn_id<S: SchemaStore>(&mut self, store: &S, id: u32) -> Result<()> {
        if self.known.contains_key(&id) {
            return Ok(());
        }
        let dt = store.schema(id).await?.and_then(|text| {
            DataType::ALL
                .iter()
                .copied()
                .find(|&dt| avro::schema_for(dt) == text)
        });
        // An unknown id is not remembered: it may be registered later (dead-letter replay),
        // and the next lookup asks again.
        if let Some(dt) = dt {
            self.known.insert(id, dt);
        }
        Ok(())
    }

    /// The record, or why the payload is not a `expected` record, with the schemas learned
    /// so far: an id [`PayloadDecoder::learn`] has not found is an unknown schema.
    pub fn decode_known(
        &self,
        payload: &[u8],
        expected: DataType,
    ) -> std::result::Result<MarketRecord, Undecodable> {
        let bad = |kind, reason| Err(Undecodable { kind, reason });
        let id = match avro::schema_id(payload) {
            Ok(id) => id,
            Err(e) => return bad("framing", e.to_string()),
        };
        let Some(dt) = self.known.get(&id).copied() else {
            return bad(
                "unknown_schema",
                format!("schema id {id} is not a K2 record schema"),
            );
        };
        if dt != expected {
            return bad("wrong_type", format!("a {dt} record on a {expected} topic"));
        }
        avro::decode_datum(dt, &payload[avro::HEADER_LEN..]).map_err(|e| Undecodable {
            kind: "undecodable",
            reason: e.to_string(),
        })
    }
}
