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

/// One JSON object per row, each on its own line, with the values as `Json` shows them
/// (decimals as exact text, times as RFC 3339 UTC with six fraction digits, nulls left
/// out). Written column by column without building JSON values: replays stream millions
/// of rows through it. Types it does not know go through Arrow's JSON writer.
pub fn ndjson(batch: &RecordBatch) -> Result<Vec<u8>, Error> {
    let schema = batch.schema();
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, array) in schema.fields().iter().zip(batch.columns()) {
        let Some(column) = JsonColumn::of(array) else {
            return ndjson_by_arrow(batch);
        };
        let mut key = Vec::with_capacity(field.name().len() + 4);
        json_string(&mut key, field.name());
        key.push(b':');
        // Each column its own day cache: a row's times may be years apart (event, receipt).
        columns.push((key, array, column, DayCache::default()));
    }
    let mut out = Vec::with_capacity(batch.num_rows() * 64 * columns.len().max(1));
    for row in 0..batch.num_rows() {
        out.push(b'{');
        let mut first = true;
        for (key, array, column, day) in &mut columns {
            if array.is_null(row) {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(key);
            column.write(&mut out, row, day);
        }
        out.extend_from_slice(b"}\n");
    }
    Ok(out)
}

fn ndjson_by_arrow(batch: &RecordBatch) -> Result<Vec<u8>, Error> {
    let batches = texts_for(std::slice::from_ref(batch), |t| {
        matches!(t, DataType::Decimal128(..) | DataType::Timestamp(..))
    })?;
    let mut out = Vec::new();
    let mut w = arrow::json::LineDelimitedWriter::new(&mut out);
    w.write_batches(&batches.iter().collect::<Vec<_>>())?;
    w.finish()?;
    Ok(out)
}

/// A column the NDJSON writer knows, typed once per batch.
enum JsonColumn<'a> {
    Text(&'a arrow::array::StringArray),
    TextView(&'a arrow::array::StringViewArray),
    Int64(&'a arrow::array::Int64Array),
    Int32(&'a arrow::array::Int32Array),
    Bool(&'a arrow::array::BooleanArray),
    Decimal(&'a arrow::array::Decimal128Array, u32),
    Micros(Vec<i64>),
    Date(&'a arrow::array::Date32Array),
    /// A list of texts.
    List(&'a arrow::array::ListArray, Box<JsonColumn<'a>>),
    /// A map of text to text.
    Map(
        &'a arrow::array::MapArray,
        Box<JsonColumn<'a>>,
        Box<JsonColumn<'a>>,
    ),
}

impl<'a> JsonColumn<'a> {
    fn of(array: &'a ArrayRef) -> Option<JsonColumn<'a>> {
        use arrow::datatypes::{Date32Type, Int32Type, Int64Type, TimeUnit};
        Some(match array.data_type() {
            DataType::Utf8 => JsonColumn::Text(array.as_string::<i32>()),
            DataType::Utf8View => JsonColumn::TextView(array.as_string_view()),
            DataType::Int64 => JsonColumn::Int64(array.as_primitive::<Int64Type>()),
            DataType::Int32 => JsonColumn::Int32(array.as_primitive::<Int32Type>()),
            DataType::Boolean => JsonColumn::Bool(array.as_boolean()),
            DataType::Decimal128(_, scale) if *scale >= 0 => JsonColumn::Decimal(
                array.as_primitive::<arrow::datatypes::Decimal128Type>(),
                *scale as u32,
            ),
            DataType::Timestamp(unit, _) => {
                let per_us = match unit {
                    TimeUnit::Second => return None,
                    TimeUnit::Millisecond => 1_000,
                    TimeUnit::Microsecond => 1,
                    TimeUnit::Nanosecond => return None,
                };
                let values = arrow::compute::cast(array, &DataType::Int64).ok()?;
                let values = values.as_primitive::<Int64Type>();
                JsonColumn::Micros(values.values().iter().map(|v| v * per_us).collect())
            }
            DataType::Date32 => JsonColumn::Date(array.as_primitive::<Date32Type>()),
            DataType::List(_) => {
                let list = array.as_list::<i32>();
                let inner = JsonColumn::of(list.values())?;
                JsonColumn::List(list, Box::new(inner))
            }
            DataType::Map(..) => {
                let map = array.as_map();
                let keys = JsonColumn::of(map.keys())?;
                let values = JsonColumn::of(map.values())?;
                if !matches!(keys, JsonColumn::Text(_) | JsonColumn::TextView(_)) {
                    return None;
                }
                JsonColumn::Map(map, Box::new(keys), Box::new(values))
            }
            _ => return None,
        })
    }

    fn write(&self, out: &mut Vec<u8>, i: usize, day: &mut DayCache) {
        match self {
            JsonColumn::Text(a) => json_string(out, a.value(i)),
            JsonColumn::TextView(a) => json_string(out, a.value(i)),
            JsonColumn::Int64(a) => write_int(out, i128::from(a.value(i))),
            JsonColumn::Int32(a) => write_int(out, i128::from(a.value(i))),
            JsonColumn::Bool(a) => {
                out.extend_from_slice(if a.value(i) { b"true" } else { b"false" })
            }
            JsonColumn::Decimal(a, scale) => {
                out.push(b'"');
                write_decimal(out, a.value(i), *scale);
                out.push(b'"');
            }
            JsonColumn::Micros(v) => {
                out.push(b'"');
                day.write_micros(out, v[i]);
                out.push(b'"');
            }
            JsonColumn::Date(a) => {
                out.push(b'"');
                out.extend_from_slice(day.date(i64::from(a.value(i))));
                out.push(b'"');
            }
            JsonColumn::List(list, inner) => {
                let offsets = list.value_offsets();
                let values = list.values();
                out.push(b'[');
                for (n, j) in (offsets[i] as usize..offsets[i + 1] as usize).enumerate() {
                    if n > 0 {
                        out.push(b',');
                    }
                    if values.is_null(j) {
                        out.extend_from_slice(b"null");
                    } else {
                        inner.write(out, j, day);
                    }
                }
                out.push(b']');
            }
            JsonColumn::Map(map, keys, values) => {
                let offsets = map.value_offsets();
                out.push(b'{');
                for (n, j) in (offsets[i] as usize..offsets[i + 1] as usize).enumerate() {
                    if n > 0 {
                        out.push(b',');
                    }
                    keys.write(out, j, day);
                    out.push(b':');
                    if map.values().is_null(j) {
                        out.extend_from_slice(b"null");
                    } else {
                        values.write(out, j, day);
                    }
                }
                out.push(b'}');
            }
        }
    }
}

/// The text of the days last seen (rows of a replay share a few days).
#[derive(Default)]
struct DayCache {
    day: Option<i64>,
    text: [u8; 10],
}

impl DayCache {
    /// `YYYY-MM-DD` of the day `days` after 1970-01-01.
    fn date(&mut self, days: i64) -> &[u8] {
        if self.day != Some(days) {
            let date = chrono::NaiveDate::from_num_days_from_ce_opt((days + 719_163) as i32)
                .map_or_else(
                    || "0000-00-00".to_string(),
                    |d| d.format("%Y-%m-%d").to_string(),
                );
            if date.len() == 10 {
                self.text.copy_from_slice(date.as_bytes());
            }
            self.day = Some(days);
        }
        &self.text
    }

    /// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, as `present::iso_us`.
    fn write_micros(&mut self, out: &mut Vec<u8>, us: i64) {
        let (secs, frac) = (us.div_euclid(1_000_000), us.rem_euclid(1_000_000));
        let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        out.extend_from_slice(self.date(days));
        let (h, m, s) = (sod / 3600, sod / 60 % 60, sod % 60);
        let two = |out: &mut Vec<u8>, v: i64| {
            out.extend_from_slice(&[b'0' + (v / 10) as u8, b'0' + (v % 10) as u8])
        };
        out.push(b'T');
        two(out, h);
        out.push(b':');
        two(out, m);
        out.push(b':');
        two(out, s);
        out.push(b'.');
        let mut f = [b'0'; 6];
        let mut v = frac;
        for d in f.iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
        out.extend_from_slice(&f);
        out.push(b'Z');
    }
}

fn write_int(out: &mut Vec<u8>, v: i128) {
    if v < 0 {
        out.push(b'-');
    }
    let mut digits = [0u8; 40];
    let mut at = digits.len();
    let mut a = v.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (a % 10) as u8;
        a /= 10;
        if a == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Exact decimal text without trailing fraction zeros (`35.66000000` → `35.66`).
fn write_decimal(out: &mut Vec<u8>, v: i128, scale: u32) {
    let p = 10u128.pow(scale);
    let (int, mut frac) = (v.unsigned_abs() / p, v.unsigned_abs() % p);
    if v < 0 {
        out.push(b'-');
    }
    write_int(out, int as i128);
    if frac == 0 {
        return;
    }
    let mut digits = scale as usize;
    while frac % 10 == 0 {
        frac /= 10;
        digits -= 1;
    }
    out.push(b'.');
    let mut text = [b'0'; 40];
    for d in text[..digits].iter_mut().rev() {
        *d = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    out.extend_from_slice(&text[..digits]);
}

/// `text` as a JSON string.
fn json_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let bytes = text.as_bytes();
    if !bytes.iter().any(|&c| c == b'"' || c == b'\\' || c < 0x20) {
        out.extend_from_slice(bytes);
    } else {
        for &c in bytes {
            match c {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                c if c < 0x20 => out.extend_from_slice(format!("\\u{c:04x}").as_bytes()),
                c => out.push(c),
            }
        }
    }
    out.push(b'"');
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
                    _ => json_texts(c)?,
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

/// Each value of a nested column (a list, a map) as its JSON text, as the `Json` format
/// writes it; other types as Arrow casts them to text.
fn json_texts(array: &ArrayRef) -> Result<ArrayRef, Error> {
    let Some(column) = JsonColumn::of(array) else {
        return Ok(arrow::compute::cast(array, &DataType::Utf8)?);
    };
    let mut day = DayCache::default();
    let mut text = Vec::new();
    let values: StringArray = (0..array.len())
        .map(|i| {
            if array.is_null(i) {
                return None;
            }
            text.clear();
            column.write(&mut text, i, &mut day);
            Some(String::from_utf8_lossy(&text).into_owned())
        })
        .collect();
    Ok(Arc::new(values))
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
