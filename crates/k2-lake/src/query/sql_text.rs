//! How K2 writes its SQL texts: fixed texts whose only inputs are `$n` parameters, the
//! column lists of the tables, the keyset order of market rows, and Iceberg `uuid` columns
//! shown as text.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType as ArrowType, Schema};
use datafusion::common::ScalarValue;
use datafusion::error::DataFusionError;

use crate::error::{LakeError, Result};
use crate::tables::LakeTable;

pub(crate) const ORDER: &str = r#""timestamp" ASC, source_sequence ASC, message_id ASC"#;
/// The sequence as the keyset order sees it.
pub(crate) const SEQ: &str = "coalesce(source_sequence, -1)";
pub(crate) const K_TS: &str = "k2_key_ts";
pub(crate) const K_SEQ: &str = "k2_key_seq";
pub(crate) const K_ID: &str = "k2_key_id";

/// Every column of a table, in schema order (the table's Iceberg schema is the one list).
pub fn columns(table: LakeTable) -> Vec<String> {
    table
        .schema()
        .as_struct()
        .fields()
        .iter()
        .map(|f| f.name.clone())
        .collect()
}

/// The columns a trades or quotes answer shows unless asked for others.
pub fn default_columns(table: LakeTable) -> &'static [&'static str] {
    match table {
        LakeTable::Trades => &[
            "timestamp",
            "symbol",
            "exchange",
            "price",
            "quantity",
            "side",
            "trade_conditions",
            "source_sequence",
            "trade_id",
            "message_id",
        ],
        LakeTable::Quotes => &[
            "timestamp",
            "symbol",
            "exchange",
            "bid_price",
            "bid_quantity",
            "ask_price",
            "ask_quantity",
            "source_sequence",
            "quote_id",
            "message_id",
        ],
        LakeTable::Companies => &[],
    }
}

/// The columns `requested` of `table`, each once and in the order asked (`default` when
/// none are); an unknown name is refused with the list of the table's columns.
pub(crate) fn pick_fields(
    table: LakeTable,
    requested: &[String],
    default: &[&str],
) -> Result<Vec<String>> {
    if requested.is_empty() {
        return Ok(default.iter().map(|c| c.to_string()).collect());
    }
    let all = columns(table);
    let mut chosen: Vec<String> = Vec::with_capacity(requested.len());
    for f in requested {
        if !all.contains(f) {
            return Err(LakeError::InvalidArgument(format!(
                "unknown field '{f}' of {table}; fields are: {}",
                all.join(", ")
            )));
        }
        if !chosen.contains(f) {
            chosen.push(f.clone());
        }
    }
    Ok(chosen)
}

/// `len` 16-byte ids (None: null) as lower-case hyphenated uuid text.
pub(crate) fn uuid_text<'a>(
    len: usize,
    ids: impl Iterator<Item = Option<&'a [u8]>>,
) -> arrow::array::StringArray {
    let mut text = arrow::array::StringBuilder::with_capacity(len, len * 36);
    for id in ids {
        match id {
            Some(id) => {
                let bytes: [u8; 16] = id.try_into().expect("16 bytes");
                let id = k2_model::MessageId::from_u128(u128::from_be_bytes(bytes));
                text.append_value(std::str::from_utf8(&id.uuid_text()).expect("hex is ASCII"));
            }
            None => text.append_null(),
        }
    }
    text.finish()
}

/// The schema of results whose `uuid` columns are shown as text ([`uuids_as_text`]).
pub(crate) fn uuids_as_text_schema(
    schema: &arrow::datatypes::Schema,
) -> arrow::datatypes::SchemaRef {
    Arc::new(arrow::datatypes::Schema::new_with_metadata(
        schema
            .fields()
            .iter()
            .map(|f| {
                if f.data_type() == &ArrowType::FixedSizeBinary(16) {
                    Arc::new(f.as_ref().clone().with_data_type(ArrowType::Utf8))
                } else {
                    f.clone()
                }
            })
            .collect::<Vec<_>>(),
        schema.metadata().clone(),
    ))
}

/// Results show Iceberg `uuid` columns (16-byte fixed binary in Arrow) in their text form.
pub(crate) fn uuids_as_text(
    batch: &RecordBatch,
) -> std::result::Result<RecordBatch, DataFusionError> {
    let schema = batch.schema();
    if !schema
        .fields()
        .iter()
        .any(|f| f.data_type() == &ArrowType::FixedSizeBinary(16))
    {
        return Ok(batch.clone());
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if field.data_type() == &ArrowType::FixedSizeBinary(16) {
            let ids = column.as_fixed_size_binary();
            let text = uuid_text(
                ids.len(),
                (0..ids.len()).map(|i| ids.is_valid(i).then(|| ids.value(i))),
            );
            fields.push(Arc::new(
                field.as_ref().clone().with_data_type(ArrowType::Utf8),
            ));
            columns.push(Arc::new(text) as ArrayRef);
        } else {
            fields.push(field.clone());
            columns.push(column.clone());
        }
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())),
        columns,
    )?)
}

/// A WHERE clause built from fixed condition texts, each value bound as a `$n` parameter.
#[derive(Clone, Default)]
pub(crate) struct Conditions {
    pub(crate) conds: Vec<String>,
    pub(crate) params: Vec<ScalarValue>,
}

impl Conditions {
    /// `cond` holds one `?`, replaced by the next parameter's placeholder.
    pub(crate) fn add(&mut self, cond: &str, value: ScalarValue) {
        self.params.push(value);
        self.conds
            .push(cond.replace('?', &format!("${}", self.params.len())));
    }

    /// `column` equal to any of `values` (no condition when there are none).
    pub(crate) fn any_of(&mut self, column: &str, values: impl Iterator<Item = ScalarValue>) {
        let mut marks = Vec::new();
        for v in values {
            self.params.push(v);
            marks.push(format!("${}", self.params.len()));
        }
        match marks.len() {
            0 => {}
            1 => self.conds.push(format!("{column} = {}", marks[0])),
            _ => self
                .conds
                .push(format!("{column} IN ({})", marks.join(", "))),
        }
    }

    pub(crate) fn clause(&self) -> String {
        if self.conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.conds.join(" AND "))
        }
    }
}

pub(crate) fn ts(us: i64) -> ScalarValue {
    ScalarValue::TimestampMicrosecond(Some(us), Some("+00:00".into()))
}
