//! Records → Arrow record batches in the exact Arrow form of a table's Iceberg schema
//! (field ids, nested list and map fields), ready for the Parquet writer.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, FixedSizeBinaryArray, Int64Array,
    ListArray, MapArray, RecordBatch, StringArray, StructArray, TimestampMicrosecondArray,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType as ArrowType, SchemaRef};
use chrono::NaiveDate;
use k2_model::{MarketRecord, MessageId, Quote, ReferenceData, Text, Trade, VendorData};

use crate::error::{LakeError, Result};
use crate::tables::LakeTable;

const EPOCH: NaiveDate = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");

/// A market record with the lake-only column derived from it.
pub struct Row {
    pub record: MarketRecord,
    /// Exchange trading day, days since 1970-01-01 (unused for reference data).
    pub trade_date: i32,
}

/// Rows per chunk of [`Rows`]: about 8 MiB of rows.
pub(crate) const CHUNK_ROWS: usize = 1 << 15;

/// The rows of a batch, held in chunks of a fixed size: a batch grows without copying the
/// rows it holds, and touches only the memory its rows fill. (A vector doubling its way to
/// a million rows copies them as it goes and faults in twice their size of fresh pages:
/// about a sixth of the writer's consume phase when measured.) Clearing keeps the chunks,
/// so the next batch fills memory already faulted in.
#[derive(Default)]
pub struct Rows {
    chunks: Vec<Vec<Row>>,
    len: usize,
}

impl Rows {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(&mut self, row: Row) {
        // Chunks fill in order: the one holding the next row is its index's quotient.
        let chunk = self.len / CHUNK_ROWS;
        if chunk == self.chunks.len() {
            self.chunks.push(Vec::with_capacity(CHUNK_ROWS));
        }
        self.chunks[chunk].push(row);
        self.len += 1;
    }

    /// The row at `index`, in the order pushed.
    pub fn get(&self, index: usize) -> &Row {
        &self.chunks[index / CHUNK_ROWS][index % CHUNK_ROWS]
    }

    pub fn iter(&self) -> impl Iterator<Item = &Row> {
        self.chunks.iter().flatten()
    }

    /// The rows, in order.
    pub fn into_rows(self) -> impl Iterator<Item = Row> {
        self.chunks.into_iter().flatten()
    }

    /// Drops the rows and keeps the chunks.
    pub fn clear(&mut self) {
        self.chunks.iter_mut().for_each(Vec::clear);
        self.len = 0;
    }
}

impl FromIterator<Row> for Rows {
    fn from_iter<I: IntoIterator<Item = Row>>(rows: I) -> Self {
        let mut out = Rows::default();
        rows.into_iter().for_each(|row| out.push(row));
        out
    }
}

pub fn days_since_epoch(d: NaiveDate) -> i32 {
    (d - EPOCH).num_days() as i32
}

/// Columns are built in schema order; each helper takes its Arrow field so nested and
/// timestamp types match the schema exactly.
struct Cols<'a> {
    schema: &'a SchemaRef,
    out: Vec<ArrayRef>,
}

impl Cols<'_> {
    fn field_type(&self) -> &ArrowType {
        self.schema.field(self.out.len()).data_type()
    }

    fn strings<'r>(&mut self, values: impl Iterator<Item = &'r str>) {
        self.out
            .push(Arc::new(StringArray::from_iter_values(values)));
    }

    /// Message ids as the 16 bytes of Iceberg's `uuid`.
    fn uuids(&mut self, values: impl ExactSizeIterator<Item = MessageId>) -> Result<()> {
        // Sized explicitly, so that a batch of no rows has the column's type too.
        let mut array = arrow::array::FixedSizeBinaryBuilder::with_capacity(values.len(), 16);
        for id in values {
            array
                .append_value(id.to_bytes())
                .map_err(|e| LakeError::arrow("uuid column", e))?;
        }
        let array: FixedSizeBinaryArray = array.finish();
        self.out.push(Arc::new(array));
        Ok(())
    }

    fn opt_strings<'r>(&mut self, values: impl Iterator<Item = Option<&'r str>>) {
        self.out.push(Arc::new(values.collect::<StringArray>()));
    }

    fn timestamps(&mut self, values: impl Iterator<Item = Option<i64>>) {
        let tz = match self.field_type() {
            ArrowType::Timestamp(_, tz) => tz.clone(),
            _ => None,
        };
        self.out.push(Arc::new(
            values
                .collect::<TimestampMicrosecondArray>()
                .with_timezone_opt(tz),
        ));
    }

    fn decimals(&mut self, values: impl Iterator<Item = i64>) -> Result<()> {
        let array = Decimal128Array::from_iter_values(values.map(i128::from))
            .with_precision_and_scale(18, 8)
            .map_err(|e| LakeError::arrow("decimal column", e))?;
        self.out.push(Arc::new(array));
        Ok(())
    }

    fn longs(&mut self, values: impl Iterator<Item = Option<i64>>) {
        self.out.push(Arc::new(values.collect::<Int64Array>()));
    }

    fn dates(&mut self, values: impl Iterator<Item = i32>) {
        self.out
            .push(Arc::new(Date32Array::from_iter_values(values)));
    }

    fn bools(&mut self, values: impl Iterator<Item = bool>) {
        self.out
            .push(Arc::new(values.map(Some).collect::<BooleanArray>()));
    }

    fn string_lists<'r>(&mut self, values: impl Iterator<Item = &'r [Text]>) -> Result<()> {
        let ArrowType::List(element) = self.field_type().clone() else {
            return Err(LakeError::Query(
                "trade_conditions is not a list in the table schema".into(),
            ));
        };
        let mut offsets = vec![0i32];
        let mut items: Vec<&str> = Vec::new();
        for list in values {
            items.extend(list.iter().map(Text::as_str));
            offsets.push(items.len() as i32);
        }
        let array = ListArray::try_new(
            element,
            OffsetBuffer::new(offsets.into()),
            Arc::new(StringArray::from_iter_values(items)),
            None,
        )
        .map_err(|e| LakeError::arrow("list column", e))?;
        self.out.push(Arc::new(array));
        Ok(())
    }

    fn maps<'r>(&mut self, values: impl Iterator<Item = Option<&'r VendorData>>) -> Result<()> {
        let ArrowType::Map(entries, sorted) = self.field_type().clone() else {
            return Err(LakeError::Query(
                "vendor_data is not a map in the table schema".into(),
            ));
        };
        let ArrowType::Struct(kv_fields) = entries.data_type().clone() else {
            return Err(LakeError::Query("map entries are not a struct".into()));
        };
        let mut offsets = vec![0i32];
        let mut valid = Vec::new();
        let (mut keys, mut vals): (Vec<&str>, Vec<&str>) = (Vec::new(), Vec::new());
        for map in values {
            if let Some(map) = map {
                for (k, v) in map {
                    keys.push(k);
                    vals.push(v);
                }
            }
            valid.push(map.is_some());
            offsets.push(keys.len() as i32);
        }
        let entries_array = StructArray::try_new(
            kv_fields,
            vec![
                Arc::new(StringArray::from_iter_values(keys)),
                Arc::new(StringArray::from_iter_values(vals)),
            ],
            None,
        )
        .map_err(|e| LakeError::arrow("map entries", e))?;
        let array = MapArray::try_new(
            entries,
            OffsetBuffer::new(offsets.into()),
            entries_array,
            Some(NullBuffer::from(valid)),
            sorted,
        )
        .map_err(|e| LakeError::arrow("map column", e))?;
        self.out.push(Arc::new(array));
        Ok(())
    }
}

/// Builds one record batch of `table` from rows that all belong to it.
pub fn to_batch(table: LakeTable, schema: &SchemaRef, rows: &[&Row]) -> Result<RecordBatch> {
    let mut c = Cols {
        schema,
        out: Vec::with_capacity(schema.fields().len()),
    };
    match table {
        LakeTable::Trades => {
            let t: Vec<&Trade> = rows
                .iter()
                .map(|r| match &r.record {
                    MarketRecord::Trade(t) => Ok(t),
                    other => Err(LakeError::InvalidArgument(format!(
                        "{:?} row in the trades table",
                        other.data_type()
                    ))),
                })
                .collect::<Result<_>>()?;
            c.uuids(t.iter().map(|t| t.message_id))?;
            c.strings(t.iter().map(|t| t.trade_id.as_str()));
            c.strings(t.iter().map(|t| t.symbol.as_str()));
            c.strings(t.iter().map(|t| t.exchange.as_str()));
            c.strings(t.iter().map(|t| t.asset_class.as_str()));
            c.timestamps(t.iter().map(|t| Some(t.timestamp_us)));
            c.dates(rows.iter().map(|r| r.trade_date));
            c.timestamps(t.iter().map(|t| Some(t.receive_timestamp_us)));
            c.decimals(t.iter().map(|t| t.price.units()))?;
            c.decimals(t.iter().map(|t| t.quantity.units()))?;
            c.strings(t.iter().map(|t| t.currency.as_str()));
            c.strings(t.iter().map(|t| t.side.as_str()));
            c.string_lists(t.iter().map(|t| t.trade_conditions.as_slice()))?;
            c.longs(t.iter().map(|t| t.source_sequence));
            c.timestamps(t.iter().map(|t| Some(t.ingestion_timestamp_us)));
            c.longs(t.iter().map(|t| t.platform_sequence));
            c.maps(t.iter().map(|t| t.vendor_data.as_ref()))?;
        }
        LakeTable::Quotes => {
            let q: Vec<&Quote> = rows
                .iter()
                .map(|r| match &r.record {
                    MarketRecord::Quote(q) => Ok(q),
                    other => Err(LakeError::InvalidArgument(format!(
                        "{:?} row in the quotes table",
                        other.data_type()
                    ))),
                })
                .collect::<Result<_>>()?;
            c.uuids(q.iter().map(|q| q.message_id))?;
            c.strings(q.iter().map(|q| q.quote_id.as_str()));
            c.strings(q.iter().map(|q| q.symbol.as_str()));
            c.strings(q.iter().map(|q| q.exchange.as_str()));
            c.strings(q.iter().map(|q| q.asset_class.as_str()));
            c.timestamps(q.iter().map(|q| Some(q.timestamp_us)));
            c.dates(rows.iter().map(|r| r.trade_date));
            c.timestamps(q.iter().map(|q| Some(q.receive_timestamp_us)));
            c.decimals(q.iter().map(|q| q.bid_price.units()))?;
            c.decimals(q.iter().map(|q| q.bid_quantity.units()))?;
            c.decimals(q.iter().map(|q| q.ask_price.units()))?;
            c.decimals(q.iter().map(|q| q.ask_quantity.units()))?;
            c.strings(q.iter().map(|q| q.currency.as_str()));
            c.longs(q.iter().map(|q| q.source_sequence));
            c.timestamps(q.iter().map(|q| Some(q.ingestion_timestamp_us)));
            c.longs(q.iter().map(|q| q.platform_sequence));
            c.maps(q.iter().map(|q| q.vendor_data.as_ref()))?;
        }
        LakeTable::Companies => {
            let r: Vec<&ReferenceData> = rows
                .iter()
                .map(|row| match &row.record {
                    MarketRecord::Reference(r) => Ok(r),
                    other => Err(LakeError::InvalidArgument(format!(
                        "{:?} row in the companies table",
                        other.data_type()
                    ))),
                })
                .collect::<Result<_>>()?;
            c.uuids(r.iter().map(|r| r.message_id))?;
            c.strings(r.iter().map(|r| r.company_id.as_str()));
            c.strings(r.iter().map(|r| r.symbol.as_str()));
            c.strings(r.iter().map(|r| r.exchange.as_str()));
            c.strings(r.iter().map(|r| r.asset_class.as_str()));
            c.strings(r.iter().map(|r| r.company_name.as_str()));
            c.opt_strings(r.iter().map(|r| r.isin.as_deref()));
            c.opt_strings(r.iter().map(|r| r.currency.as_deref()));
            c.timestamps(r.iter().map(|r| r.listing_date_us));
            c.timestamps(r.iter().map(|r| r.delisting_date_us));
            c.bools(r.iter().map(|r| r.is_active));
            c.timestamps(r.iter().map(|r| Some(r.receive_timestamp_us)));
            c.timestamps(r.iter().map(|r| Some(r.ingestion_timestamp_us)));
            c.maps(r.iter().map(|r| r.vendor_data.as_ref()))?;
        }
    }
    RecordBatch::try_new(schema.clone(), c.out)
        .map_err(|e| LakeError::arrow(format!("building a {table} batch"), e))
}
