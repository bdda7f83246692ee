//! Reading K2 records in the Confluent framing (magic byte, schema id, Avro datum): each
//! schema id looked up in the registry once, then payloads decoded without it.
//!
//! A payload written with K2's own schema is decoded directly. One written with another
//! version of a K2 record — a producer's schema that K2's can read under Avro's resolution
//! rules, say with a field added — is decoded with its writer schema, its K2 fields
//! resolved into the K2 record, and the fields K2 does not know kept beside the record as
//! [`Extras`] (the lake writer adds them to the table as columns). A version whose added
//! fields cannot be columns, or that K2's schema cannot read, is refused with the reason.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::types::Value;
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

/// A value of a field K2's schema does not have (a newer version's addition).
#[derive(Clone, Debug, PartialEq)]
pub enum ExtraValue {
    Null,
    Bool(bool),
    Long(i64),
    Double(f64),
    Text(String),
}

/// The type a added field has as a column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtraType {
    Bool,
    Long,
    Double,
    Text,
}

/// Fields of a record beyond K2's schema, by name, in the writer schema's order.
pub type Extras = Vec<(String, ExtraValue)>;

/// A record decoded, with the fields K2's schema lacks.
#[derive(Clone, Debug)]
pub struct Decoded {
    pub record: MarketRecord,
    pub extras: Extras,
}

/// What a schema id was found to be.
enum Learned {
    /// K2's own schema of this record type.
    K2(DataType),
    /// Another version of a K2 record, readable by K2's schema.
    Evolved(Arc<Evolved>),
    /// A version of a K2 record K2 cannot take, and why.
    Refused(String),
}

struct Evolved {
    data_type: DataType,
    writer: Schema,
    reader: Schema,
    /// The writer's fields start with K2's, in K2's order and types: K2's decoder reads
    /// them straight from the datum.
    k2_prefix: bool,
    /// The fields K2's schema lacks, with their column types.
    extras: Vec<(String, ExtraType)>,
}

/// Reads K2 records in the Confluent framing (magic byte, schema id, Avro datum),
/// remembering what record type each schema id is.
#[derive(Default)]
pub struct PayloadDecoder {
    known: HashMap<u32, Learned>,
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
        // An unknown id is not remembered: it may be registered later (dead-letter replay),
        // and the next lookup asks again.
        if let Some(text) = store.schema(id).await?
            && let Some(learned) = learn_text(&text)
        {
            self.known.insert(id, learned);
        }
        Ok(())
    }

    /// The record, or why the payload is not a `expected` record, with the schemas learned
    /// so far: an id [`PayloadDecoder::learn`] has not found is an unknown schema. Fields
    /// beyond K2's schema are left out (see [`PayloadDecoder::decode_with_extras`]).
    pub fn decode_known(
        &self,
        payload: &[u8],
        expected: DataType,
    ) -> std::result::Result<MarketRecord, Undecodable> {
        self.decode_with_extras(payload, expected).map(|d| d.record)
    }

    /// [`PayloadDecoder::decode_known`], with the fields K2's schema lacks.
    pub fn decode_with_extras(
        &self,
        payload: &[u8],
        expected: DataType,
    ) -> std::result::Result<Decoded, Undecodable> {
        let bad = |kind, reason| Err(Undecodable { kind, reason });
        let id = match avro::schema_id(payload) {
            Ok(id) => id,
            Err(e) => return bad("framing", e.to_string()),
        };
        let datum = &payload[avro::HEADER_LEN..];
        let evolved = match self.known.get(&id) {
            None => {
                return bad(
                    "unknown_schema",
                    format!("schema id {id} is not a K2 record schema"),
                );
            }
            Some(Learned::Refused(why)) => {
                return bad("unresolvable_schema", format!("schema id {id}: {why}"));
            }
            Some(Learned::K2(dt)) => {
                if *dt != expected {
                    return bad("wrong_type", format!("a {dt} record on a {expected} topic"));
                }
                return avro::decode_datum(*dt, datum)
                    .map(|record| Decoded {
                        record,
                        extras: Vec::new(),
                    })
                    .map_err(|e| Undecodable {
                        kind: "undecodable",
                        reason: e.to_string(),
                    });
            }
            Some(Learned::Evolved(e)) => e,
        };
        if evolved.data_type != expected {
            return bad(
                "wrong_type",
                format!("a {} record on a {expected} topic", evolved.data_type),
            );
        }
        decode_evolved(evolved, datum).map_err(|reason| Undecodable {
            kind: "undecodable",
            reason: format!("schema id {id}: {reason}"),
        })
    }
}

/// What a registered schema's text is to K2 (None: not a K2 record at all).
fn learn_text(text: &str) -> Option<Learned> {
    if let Some(dt) = DataType::ALL
        .iter()
        .copied()
        .find(|&dt| avro::schema_for(dt) == text)
    {
        return Some(Learned::K2(dt));
    }
    let writer = Schema::parse_str(text).ok()?;
    let Schema::Record(written) = &writer else {
        return None;
    };
    for dt in DataType::ALL.iter().copied() {
        let reader = Schema::parse_str(avro::schema_for(dt)).expect("K2's schemas parse");
        let Schema::Record(read) = &reader else {
            continue;
        };
        if read.name.fullname(None) != written.name.fullname(None) {
            continue;
        }
        if let Err(e) = super::compatibility::can_read(text, avro::schema_for(dt)) {
            return Some(Learned::Refused(format!(
                "K2's {dt} schema cannot read this version: {e}"
            )));
        }
        let mut extras = Vec::new();
        for field in &written.fields {
            if read.fields.iter().any(|f| f.name == field.name) {
                continue;
            }
            match column_type(&field.schema) {
                Some(t) => extras.push((field.name.clone(), t)),
                None => {
                    return Some(Learned::Refused(format!(
                        "its added field '{}' is not a boolean, int, long, float, double or \
                         string (or one of them or null), so it cannot be a column",
                        field.name
                    )));
                }
            }
        }
        let k2_prefix = written.fields.len() >= read.fields.len()
            && read
                .fields
                .iter()
                .zip(&written.fields)
                .all(|(r, w)| r.name == w.name && r.schema == w.schema);
        return Some(Learned::Evolved(Arc::new(Evolved {
            data_type: dt,
            writer,
            reader,
            k2_prefix,
            extras,
        })));
    }
    None
}

/// The column type of an added field's schema.
fn column_type(schema: &Schema) -> Option<ExtraType> {
    match schema {
        Schema::Boolean => Some(ExtraType::Bool),
        Schema::Int | Schema::Long => Some(ExtraType::Long),
        Schema::Float | Schema::Double => Some(ExtraType::Double),
        Schema::String => Some(ExtraType::Text),
        Schema::Union(u) => {
            let mut types = u.variants().iter().filter(|v| **v != Schema::Null);
            let only = types.next()?;
            match types.next() {
                None => column_type(only),
                Some(_) => None,
            }
        }
        _ => None,
    }
}

fn extra_value(value: Value) -> ExtraValue {
    match value {
        Value::Boolean(b) => ExtraValue::Bool(b),
        Value::Int(i) => ExtraValue::Long(i64::from(i)),
        Value::Long(l) => ExtraValue::Long(l),
        Value::Float(f) => ExtraValue::Double(f64::from(f)),
        Value::Double(d) => ExtraValue::Double(d),
        Value::String(s) => ExtraValue::Text(s),
        Value::Union(_, inner) => extra_value(*inner),
        _ => ExtraValue::Null,
    }
}

/// A datum of an evolved version: read with its writer schema, the K2 fields resolved into
/// K2's schema and decoded as usual, the others kept.
fn decode_evolved(evolved: &Evolved, datum: &[u8]) -> std::result::Result<Decoded, String> {
    let value = apache_avro::from_avro_datum(&evolved.writer, &mut &datum[..], None)
        .map_err(|e| e.to_string())?;
    let Value::Record(fields) = &value else {
        return Err("the datum is not a record".into());
    };
    let extras = evolved
        .extras
        .iter()
        .map(|(name, _)| {
            let v = fields
                .iter()
                .find(|(n, _)| n == name)
                .map_or(ExtraValue::Null, |(_, v)| extra_value(v.clone()));
            (name.clone(), v)
        })
        .collect();
    if evolved.k2_prefix {
        // Fields appended after K2's (the usual evolution): K2's part is read as it is.
        let (record, _) =
            avro::decode_datum_prefix(evolved.data_type, datum).map_err(|e| e.to_string())?;
        return Ok(Decoded { record, extras });
    }
    // Otherwise K2's fields are taken by name, in K2's order, and encoded again.
    let Schema::Record(reader) = &evolved.reader else {
        return Err("K2's schema is not a record".into());
    };
    let mut k2_fields = Vec::with_capacity(reader.fields.len());
    for f in &reader.fields {
        let v = fields
            .iter()
            .find(|(n, _)| *n == f.name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| format!("the datum has no field '{}'", f.name))?;
        k2_fields.push((f.name.clone(), v));
    }
    let bytes = apache_avro::to_avro_datum(&evolved.reader, Value::Record(k2_fields))
        .map_err(|e| format!("reading it with K2's schema: {e}"))?;
    let record = avro::decode_datum(evolved.data_type, &bytes).map_err(|e| e.to_string())?;
    Ok(Decoded { record, extras })
}
