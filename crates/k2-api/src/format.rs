//! Results as bytes: JSON, CSV, Parquet or Arrow IPC, from Arrow record batches, so every
//! format shows the same values. JSON and CSV carry decimals as exact text (a JSON number
//! would be read as a binary float by most clients) and times as RFC 3339 UTC with six
//! fraction digits (so they also sort as text); Parquet and Arrow keep decimal128 and
//! timestamp types.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
    Parquet,
    Arrow,
}

impl Format {
    pub const ALL: [Format; 4] = [Format::Json, Format::Csv, Format::Parquet, Format::Arrow];

    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Csv => "csv",
            Format::Parquet => "parquet",
            Format::Arrow => "arrow",
        }
    }

    pub fn parse(text: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == text)
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Parquet => "application/vnd.apache.parquet",
            Format::Arrow => "application/vnd.apache.arrow.stream",
        }
    }

    /// The format a media type (from `Accept`) asks for.
    pub fn from_media_type(media: &str) -> Option<Format> {
        match media {
            "application/json" => Some(Format::Json),
            "text/csv" => Some(Format::Csv),
            "application/vnd.apache.parquet" | "application/x-parquet" => Some(Format::Parquet),
            "application/vnd.apache.arrow.stream" => Some(Format::Arrow),
            _ => None,
        }
    }
}

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The schema of `batches` (empty when there are none).
fn schema_of(batches: &[RecordBatch]) -> SchemaRef {
    batches
        .first()
        .map_or_else(|| Arc::new(Schema::empty()), |b| b.schema())
}

/// `batches` in a tabular format (`Json` gives an array of objects).
pub fn encode(batches: &[RecordBatch], format: Format) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    match format {
        Format::Json => {
            let batches = texts_for(batches, |t| {
                matches!(t, DataType::Decimal128(..) | DataType::Timestamp(..))
            })?;
            let mut w = arrow::json::ArrayWriter::new(&mut out);
            w.write_batches(&batches.iter().collect::<Vec<_>>())?;
            w.finish()?;
            if batches.iter().all(|b| b.num_rows() == 0) {
                out = b"[]".to_vec();
            }
        }
        Format::Csv => {
            // CSV has no nested values: lists and maps become their text.
            let batches = texts_for(batches, |t| {
                matches!(
                    t,
                    DataType::List(_)
                        | DataType::LargeList(_)
                        | DataType::Map(..)
                        | DataType::Struct(_)
                        | DataType::Decimal128(..)
                        | DataType::Timestamp(..)
                )
            })?;
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            for b in &batches {
                w.write(b)?;
            }
            drop(w);
            if batches.is_empty() {
                out.clear();
            }
        }
        Format::Parquet => {
            let props = parquet::file::properties::WriterProperties::builder()
                .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
                .build();
            let mut w =
                parquet::arrow::ArrowWriter::try_new(&mut out, schema_of(batches), Some(props))?;
            for b in batches {
                w.write(b)?;
            }
            w.close()?;
        }
        Format::Arrow => {
            let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut out, &schema_of(batches))?;
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
    }
    Ok(out)
}

/// One JSON object per row, each on its own line, with the values as `Json` shows them.
pub fn ndjson(batch: &RecordBatch) -> Result<Vec<u8>, Error> {
    let batches = texts_for(std::slice::from_ref(batch), |t| {
        matches!(t, DataType::Decimal128(..) | DataType::Timestamp(..))
    })?;
    let mut out = Vec::with_capacity(batch.num_rows() * 256);
    let mut w = arrow::json::LineDelimitedWriter::new(&mut out);
    w.write_batches(&batches.iter().collect::<Vec<_>>())?;
    w.finish()?;
    Ok(out)
}

/// `batches` with the columns whose type `pick` selects cast to text.
fn texts_for(
    batches: &[RecordBatch],
    pick: impl Fn(&DataType) -> bool,
) -> Result<Vec<RecordBatch>, Error> {
    let mut out = Vec::with_capacity(batches.len());
    for b in batches {
        let schema = b.schema();
        if !schema.fields().iter().any(|f| pick(f.data_type())) {
            out.push(b.clone());
            continue;
        }
        let mut fields = Vec::with_capacity(schema.fields().len());
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for (f, c) in schema.fields().iter().zip(b.columns()) {
            if pick(f.data_type()) {
                fields.push(Field::new(f.name(), DataType::Utf8, f.is_nullable()));
                columns.push(match f.data_type() {
                    DataType::Decimal128(..) => Arc::new(trimmed(
                        arrow::compute::cast(c, &DataType::Utf8)?.as_string::<i32>(),
                    )) as ArrayRef,
                    DataType::Timestamp(..) => {
                        let us = arrow::compute::cast(
                            c,
                            &DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None),
                        )?;
                        let us = us.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
                        Arc::new(
                            us.iter()
                                .map(|v| v.map(crate::present::iso_us))
                                .collect::<StringArray>(),
                        ) as ArrayRef
                    }
                    _ => arrow::compute::cast(c, &DataType::Utf8)?,
                });
            } else {
                fields.push(f.as_ref().clone());
                columns.push(c.clone());
            }
        }
        out.push(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?);
    }
    Ok(out)
}

/// Decimal text without trailing fraction zeros (`35.66000000` → `35.66`), as the typed
/// answers (`present`) write it.
fn trimmed(text: &StringArray) -> StringArray {
    text.iter()
        .map(|v| {
            v.map(|s| {
                if s.contains('.') {
                    s.trim_end_matches('0').trim_end_matches('.').to_string()
                } else {
                    s.to_string()
                }
            })
        })
        .collect()
}

/// Serialisable rows as one record batch (column types inferred from the values).
pub fn to_batches<T: Serialize>(rows: &[T]) -> Result<Vec<RecordBatch>, Error> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let values: Vec<serde_json::Value> = rows
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()?;
    let schema = arrow::json::reader::infer_json_schema_from_iterator(values.iter().map(Ok))?;
    let mut decoder = arrow::json::ReaderBuilder::new(Arc::new(schema)).build_decoder()?;
    decoder.serialize(&values)?;
    Ok(decoder.flush()?.into_iter().collect())
}
