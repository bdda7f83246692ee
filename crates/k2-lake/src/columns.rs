//! Records → Arrow record batches in the exact Arrow form of a table's Iceberg schema
//! (field ids, nested list and map fields), ready for the Parquet writer.

use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Date32Array, Decimal128Array, FixedSizeBinaryArray,
    Int64Builder, ListArray, MapArray, RecordBatch, StringBuilder, StructArray,
    TimestampMicrosecondBuilder,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType as ArrowType, Field as ArrowField, SchemaRef};
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
    /// Fields of a newer version of the record's schema that K2's lacks (columns the
    /// table gains; empty for K2's own schema).
    pub extras: k2_log::Extras,
}

/// Rows per chunk of [`Rows`]: about 8 MiB of rows.
pub(crate) const CHUNK_ROWS: usize = 1 << 15;

/// The rows of a batch, held in chunks of a fixed size: a batch grows without copying the
/// rows it holds, and touches only the memory its rows fill (a vector doubling its way to
/// a million rows copies them as it goes and faults in twice their size of fresh pages).
/// Clearing keeps the chunks, so the next batch fills memory already faulted in.
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

/// One field of a row, in the form its column takes.
enum Field<'r> {
    Uuid(MessageId),
    Str(&'r str),
    OptStr(Option<&'r str>),
    Time(Option<i64>),
    Date(i32),
    Decimal(i64),
    Long(Option<i64>),
    Bool(bool),
    List(&'r [Text]),
    Map(Option<&'r VendorData>),
}

/// A row's fields in the table's schema order.
fn trade_fields(t: &Trade, trade_date: i32) -> [Field<'_>; 17] {
    use Field::*;
    [
        Uuid(t.message_id),
        Str(&t.trade_id),
        Str(&t.symbol),
        Str(&t.exchange),
        Str(t.asset_class.as_str()),
        Time(Some(t.timestamp_us)),
        Date(trade_date),
        Time(Some(t.receive_timestamp_us)),
        Decimal(t.price.units()),
        Decimal(t.quantity.units()),
        Str(&t.currency),
        Str(t.side.as_str()),
        List(&t.trade_conditions),
        Long(t.source_sequence),
        Time(Some(t.ingestion_timestamp_us)),
        Long(t.platform_sequence),
        Map(t.vendor_data.as_ref()),
    ]
}

fn quote_fields(q: &Quote, trade_date: i32) -> [Field<'_>; 17] {
    use Field::*;
    [
        Uuid(q.message_id),
        Str(&q.quote_id),
        Str(&q.symbol),
        Str(&q.exchange),
        Str(q.asset_class.as_str()),
        Time(Some(q.timestamp_us)),
        Date(trade_date),
        Time(Some(q.receive_timestamp_us)),
        Decimal(q.bid_price.units()),
        Decimal(q.bid_quantity.units()),
        Decimal(q.ask_price.units()),
        Decimal(q.ask_quantity.units()),
        Str(&q.currency),
        Long(q.source_sequence),
        Time(Some(q.ingestion_timestamp_us)),
        Long(q.platform_sequence),
        Map(q.vendor_data.as_ref()),
    ]
}

fn company_fields(r: &ReferenceData) -> [Field<'_>; 14] {
    use Field::*;
    [
        Uuid(r.message_id),
        Str(&r.company_id),
        Str(&r.symbol),
        Str(&r.exchange),
        Str(r.asset_class.as_str()),
        Str(&r.company_name),
        OptStr(r.isin.as_deref()),
        OptStr(r.currency.as_deref()),
        Time(r.listing_date_us),
        Time(r.delisting_date_us),
        Bool(r.is_active),
        Time(Some(r.receive_timestamp_us)),
        Time(Some(r.ingestion_timestamp_us)),
        Map(r.vendor_data.as_ref()),
    ]
}

/// String bytes reserved per row of a text column before it grows.
const TEXT_BYTES_PER_ROW: usize = 8;

/// A column being filled, one value per row, made from the schema's field so that its
/// Arrow type (nested list and map fields, time zone, decimal scale) is the schema's.
enum Column {
    Uuid(Vec<u8>),
    Str(StringBuilder),
    Time(TimestampMicrosecondBuilder),
    Date(Vec<i32>),
    Decimal(Vec<i128>),
    Long(Int64Builder),
    Bool(BooleanBuilder),
    List {
        offsets: Vec<i32>,
        items: StringBuilder,
    },
    Map {
        offsets: Vec<i32>,
        keys: StringBuilder,
        values: StringBuilder,
        valid: Vec<bool>,
    },
}

impl Column {
    fn new(field: &arrow::datatypes::Field, rows: usize) -> Result<Self> {
        let text = || StringBuilder::with_capacity(rows, rows * TEXT_BYTES_PER_ROW);
        let offsets = || {
            let mut offsets = Vec::with_capacity(rows + 1);
            offsets.push(0);
            offsets
        };
        Ok(match field.data_type() {
            ArrowType::FixedSizeBinary(16) => Column::Uuid(Vec::with_capacity(rows * 16)),
            ArrowType::Utf8 => Column::Str(text()),
            ArrowType::Timestamp(_, _) => {
                Column::Time(TimestampMicrosecondBuilder::with_capacity(rows))
            }
            ArrowType::Date32 => Column::Date(Vec::with_capacity(rows)),
            ArrowType::Decimal128(_, _) => Column::Decimal(Vec::with_capacity(rows)),
            ArrowType::Int64 => Column::Long(Int64Builder::with_capacity(rows)),
            ArrowType::Boolean => Column::Bool(BooleanBuilder::with_capacity(rows)),
            ArrowType::List(_) => Column::List {
                offsets: offsets(),
                items: text(),
            },
            ArrowType::Map(_, _) => Column::Map {
                offsets: offsets(),
                keys: text(),
                values: text(),
                valid: Vec::with_capacity(rows),
            },
            other => {
                return Err(LakeError::CorruptData(format!(
                    "column {} of type {other} is not one K2 writes",
                    field.name()
                )));
            }
        })
    }

    /// Appends a row's value; `false` when the value is not of this column's kind.
    fn push(&mut self, value: Field<'_>) -> bool {
        match (self, value) {
            (Column::Uuid(bytes), Field::Uuid(id)) => bytes.extend_from_slice(&id.to_bytes()),
            (Column::Str(b), Field::Str(s)) => b.append_value(s),
            (Column::Str(b), Field::OptStr(s)) => b.append_option(s),
            (Column::Time(b), Field::Time(t)) => b.append_option(t),
            (Column::Date(v), Field::Date(d)) => v.push(d),
            (Column::Decimal(v), Field::Decimal(units)) => v.push(i128::from(units)),
            (Column::Long(b), Field::Long(n)) => b.append_option(n),
            (Column::Bool(b), Field::Bool(x)) => b.append_value(x),
            (Column::List { offsets, items }, Field::List(list)) => {
                list.iter().for_each(|item| items.append_value(item));
                offsets.push(items.len() as i32);
            }
            (
                Column::Map {
                    offsets,
                    keys,
                    values,
                    valid,
                },
                Field::Map(map),
            ) => {
                for (k, v) in map.into_iter().flatten() {
                    keys.append_value(k);
                    values.append_value(v);
                }
                offsets.push(keys.len() as i32);
                valid.push(map.is_some());
            }
            _ => return false,
        }
        true
    }

    fn finish(self, field: &arrow::datatypes::Field) -> Result<ArrayRef> {
        let name = field.name();
        let arrow = |e| LakeError::arrow(format!("column {name}"), e);
        Ok(match (self, field.data_type()) {
            (Column::Uuid(bytes), _) => {
                Arc::new(FixedSizeBinaryArray::try_new(16, bytes.into(), None).map_err(arrow)?)
            }
            (Column::Str(mut b), _) => Arc::new(b.finish()),
            (Column::Time(mut b), ArrowType::Timestamp(_, tz)) => {
                Arc::new(b.finish().with_timezone_opt(tz.clone()))
            }
            (Column::Date(v), _) => Arc::new(Date32Array::from(v)),
            (Column::Decimal(v), ArrowType::Decimal128(precision, scale)) => Arc::new(
                Decimal128Array::from(v)
                    .with_precision_and_scale(*precision, *scale)
                    .map_err(arrow)?,
            ),
            (Column::Long(mut b), _) => Arc::new(b.finish()),
            (Column::Bool(mut b), _) => Arc::new(b.finish()),
            (Column::List { offsets, mut items }, ArrowType::List(element)) => Arc::new(
                ListArray::try_new(
                    element.clone(),
                    OffsetBuffer::new(offsets.into()),
                    Arc::new(items.finish()),
                    None,
                )
                .map_err(arrow)?,
            ),
            (
                Column::Map {
                    offsets,
                    mut keys,
                    mut values,
                    valid,
                },
                ArrowType::Map(entries, sorted),
            ) => {
                let ArrowType::Struct(kv_fields) = entries.data_type() else {
                    return Err(LakeError::CorruptData(format!(
                        "the entries of map column {name} are not a struct"
                    )));
                };
                let entries_array = StructArray::try_new(
                    kv_fields.clone(),
                    vec![Arc::new(keys.finish()), Arc::new(values.finish())],
                    None,
                )
                .map_err(arrow)?;
                Arc::new(
                    MapArray::try_new(
                        entries.clone(),
                        OffsetBuffer::new(offsets.into()),
                        entries_array,
                        Some(NullBuffer::from(valid)),
                        *sorted,
                    )
                    .map_err(arrow)?,
                )
            }
            (_, other) => {
                return Err(LakeError::CorruptData(format!(
                    "column {name} was filled for another type than its {other}"
                )));
            }
        })
    }
}

/// Appends a row's fields to their columns.
fn fill<const N: usize>(
    table: LakeTable,
    schema: &SchemaRef,
    columns: &mut [Column],
    fields: [Field<'_>; N],
) -> Result<()> {
    if N != columns.len() {
        return Err(LakeError::CorruptData(format!(
            "a {table} row has {N} fields for {} columns",
            columns.len()
        )));
    }
    for (n, (column, value)) in columns.iter_mut().zip(fields).enumerate() {
        if !column.push(value) {
            return Err(LakeError::CorruptData(format!(
                "field {n} of a {table} row does not fit its column {}",
                schema.field(n).name()
            )));
        }
    }
    Ok(())
}

/// Builds one record batch of `table` from rows that all belong to it, in one pass over
/// the rows: each row's fields go to their columns as it is read. (A pass per column
/// read every row once per column, 17 times for a trade, and a row is far larger than
/// the field taken from it.)
pub fn to_batch(table: LakeTable, schema: &SchemaRef, rows: &[&Row]) -> Result<RecordBatch> {
    // K2's own columns first; any after them were added by schema evolution.
    let own = table
        .schema()
        .as_struct()
        .fields()
        .len()
        .min(schema.fields().len());
    let mut columns = schema.fields()[..own]
        .iter()
        .map(|f| Column::new(f, rows.len()))
        .collect::<Result<Vec<_>>>()?;
    for row in rows {
        match (table, &row.record) {
            (LakeTable::Trades, MarketRecord::Trade(t)) => {
                fill(table, schema, &mut columns, trade_fields(t, row.trade_date))?
            }
            (LakeTable::Quotes, MarketRecord::Quote(q)) => {
                fill(table, schema, &mut columns, quote_fields(q, row.trade_date))?
            }
            (LakeTable::Companies, MarketRecord::Reference(r)) => {
                fill(table, schema, &mut columns, company_fields(r))?
            }
            (_, other) => {
                return Err(LakeError::InvalidArgument(format!(
                    "{:?} row in the {table} table",
                    other.data_type()
                )));
            }
        }
    }
    let mut arrays = columns
        .into_iter()
        .zip(schema.fields().iter())
        .map(|(column, field)| column.finish(field))
        .collect::<Result<Vec<_>>>()?;
    for field in &schema.fields()[own..] {
        arrays.push(extra_column(table, field, rows)?);
    }
    RecordBatch::try_new(schema.clone(), arrays)
        .map_err(|e| LakeError::arrow(format!("building a {table} batch"), e))
}

/// A column schema evolution added: each row's value of that field (null where the row's
/// schema version has none).
fn extra_column(table: LakeTable, field: &ArrowField, rows: &[&Row]) -> Result<ArrayRef> {
    use arrow::array::Float64Builder;
    use k2_log::ExtraValue as V;
    let name = field.name();
    let value = |row: &Row| -> Option<V> {
        row.extras
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .filter(|v| *v != V::Null)
    };
    let mismatch = |v: V| {
        LakeError::InvalidArgument(format!(
            "{table}: a value {v:?} of the added field {name} does not fit its column of type {}",
            field.data_type()
        ))
    };
    Ok(match field.data_type() {
        ArrowType::Boolean => {
            let mut b = BooleanBuilder::with_capacity(rows.len());
            for row in rows {
                match value(row) {
                    None => b.append_null(),
                    Some(V::Bool(x)) => b.append_value(x),
                    Some(v) => return Err(mismatch(v)),
                }
            }
            Arc::new(b.finish())
        }
        ArrowType::Int64 => {
            let mut b = Int64Builder::with_capacity(rows.len());
            for row in rows {
                match value(row) {
                    None => b.append_null(),
                    Some(V::Long(x)) => b.append_value(x),
                    Some(v) => return Err(mismatch(v)),
                }
            }
            Arc::new(b.finish())
        }
        ArrowType::Float64 => {
            let mut b = Float64Builder::with_capacity(rows.len());
            for row in rows {
                match value(row) {
                    None => b.append_null(),
                    Some(V::Double(x)) => b.append_value(x),
                    Some(V::Long(x)) => b.append_value(x as f64),
                    Some(v) => return Err(mismatch(v)),
                }
            }
            Arc::new(b.finish())
        }
        ArrowType::Utf8 => {
            let mut b = StringBuilder::with_capacity(rows.len(), rows.len() * 8);
            for row in rows {
                match value(row) {
                    None => b.append_null(),
                    Some(V::Text(x)) => b.append_value(x),
                    Some(v) => return Err(mismatch(v)),
                }
            }
            Arc::new(b.finish())
        }
        other => {
            return Err(LakeError::InvalidArgument(format!(
                "{table}: column {name} of type {other} is not one K2 writes"
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Decimal128Type, Int64Type, TimestampMicrosecondType};
    use k2_model::{AssetClass, Decimal8, TradeSide};

    use super::*;

    fn schema(t: LakeTable) -> SchemaRef {
        Arc::new(iceberg::arrow::schema_to_arrow_schema(&t.schema()).unwrap())
    }

    fn trade(n: i64, vendor: Option<VendorData>, conditions: &[&str]) -> Row {
        Row {
            record: MarketRecord::Trade(Trade {
                message_id: MessageId::from_u128(n as u128 + 0xabc),
                trade_id: format!("T{n}").into(),
                symbol: "BHP".into(),
                exchange: "ASX".into(),
                asset_class: AssetClass::Equities,
                timestamp_us: 1_000 + n,
                receive_timestamp_us: 2_000 + n,
                price: Decimal8::from_units(3_545_500_000 + n).unwrap(),
                quantity: Decimal8::from_units(100_000_000).unwrap(),
                currency: "AUD".into(),
                side: TradeSide::Buy,
                trade_conditions: conditions.iter().map(|&c| c.into()).collect(),
                source_sequence: (n % 2 == 0).then_some(n),
                ingestion_timestamp_us: 3_000 + n,
                platform_sequence: None,
                vendor_data: vendor,
            }),
            trade_date: 16_132,
            extras: Vec::new(),
        }
    }

    #[test]
    fn a_batch_holds_each_field_in_its_column_in_row_order() {
        let rows = [
            trade(
                0,
                Some([("venue", "X"), ("buyer_id", "7")].into()),
                &["0", "1"],
            ),
            trade(1, None, &[]),
            trade(2, Some(VendorData::new()), &["9"]),
        ];
        let refs: Vec<&Row> = rows.iter().collect();
        let schema = schema(LakeTable::Trades);
        let batch = to_batch(LakeTable::Trades, &schema, &refs).unwrap();
        assert_eq!((batch.num_rows(), batch.schema()), (3, schema.clone()));
        let col = |name: &str| batch.column_by_name(name).unwrap();
        let ids = col("message_id").as_fixed_size_binary();
        assert_eq!(ids.value(2), MessageId::from_u128(0xabc + 2).to_bytes());
        let trade_ids = col("trade_id").as_string::<i32>();
        assert_eq!(
            trade_ids.iter().flatten().collect::<Vec<_>>(),
            ["T0", "T1", "T2"]
        );
        assert_eq!(col("side").as_string::<i32>().value(1), "BUY");
        let times = col("timestamp").as_primitive::<TimestampMicrosecondType>();
        assert_eq!(times.values(), &[1_000, 1_001, 1_002]);
        let prices = col("price").as_primitive::<Decimal128Type>();
        assert_eq!((prices.value(1), prices.scale()), (3_545_500_001, 8));
        let sequences = col("source_sequence").as_primitive::<Int64Type>();
        assert_eq!(
            sequences.iter().collect::<Vec<_>>(),
            [Some(0), None, Some(2)]
        );
        let dates = col("trade_date").as_primitive::<arrow::datatypes::Date32Type>();
        assert_eq!(dates.value(0), 16_132);
        let lists = col("trade_conditions").as_list::<i32>();
        assert_eq!(lists.value_offsets(), &[0, 2, 2, 3]);
        assert_eq!(lists.value(2).as_string::<i32>().value(0), "9");
        let maps = col("vendor_data").as_map();
        assert_eq!(
            (maps.is_null(0), maps.is_null(1), maps.is_null(2)),
            (false, true, false)
        );
        assert_eq!(maps.value_offsets(), &[0, 2, 2, 2]);
        let keys = maps.keys().as_string::<i32>();
        let values = maps.values().as_string::<i32>();
        assert_eq!(
            (
                keys.value(0),
                values.value(0),
                keys.value(1),
                values.value(1)
            ),
            ("buyer_id", "7", "venue", "X")
        );
    }

    #[test]
    fn an_empty_batch_has_the_schemas_types_and_a_row_of_another_table_is_refused() {
        for t in LakeTable::ALL {
            let schema = schema(t);
            let batch = to_batch(t, &schema, &[]).unwrap();
            assert_eq!((batch.num_rows(), batch.schema()), (0, schema));
        }
        let row = trade(0, None, &[]);
        let err = to_batch(LakeTable::Quotes, &schema(LakeTable::Quotes), &[&row]).unwrap_err();
        assert!(err.to_string().contains("quotes"), "{err}");
    }
}
