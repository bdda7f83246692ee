//! A batch's Parquet data files: one per partition (the UTC day of the event), each
//! sorted by (symbol, time, sequence, id) and encoded on a task of its own.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use iceberg::spec::{DataFile, DataFileFormat, Literal, PartitionKey, Struct};
use iceberg::table::Table;
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use k2_model::MessageId;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::columns::{self, Row, Rows};
use crate::error::{LakeError, Result};
use crate::tables::LakeTable;

/// Rows per Parquet data page (at most).
const PAGE_ROWS: usize = 8192;

/// Rows whose Arrow columns a file's task builds at a time (see [`write_files`]).
const SLICE_ROWS: usize = 4 * PAGE_ROWS;

const DAY_US: i64 = 86_400_000_000;

/// The rows at `indices`, in the table's sort order: symbol, then time, with the source
/// sequence and the (unique) id as a deterministic tie-break; indices are sorted, the rows
/// stay where they are. Symbols are ranked once, so the sort compares integers, not
/// strings.
fn sorted(rows: &Rows, indices: Vec<u32>) -> Vec<u32> {
    let mut ranks: HashMap<&str, u32> = HashMap::new();
    let mut last: Option<(&str, u32)> = None;
    let mut keys: Vec<(u32, i64, i64, MessageId, u32)> = Vec::with_capacity(indices.len());
    for i in indices {
        let r = &rows.get(i as usize).record;
        let symbol = r.symbol();
        // Rows come in runs of one symbol: most lookups are the last one.
        let rank = match last {
            Some((s, rank)) if s == symbol => rank,
            _ => {
                let next = ranks.len() as u32;
                let rank = *ranks.entry(symbol).or_insert(next);
                last = Some((symbol, rank));
                rank
            }
        };
        keys.push((
            rank,
            r.event_time_us().unwrap_or(0),
            r.source_sequence().unwrap_or(-1),
            r.message_id(),
            i,
        ));
    }
    // Ranks in first-seen order become ranks in symbol order.
    let mut by_name: Vec<(&str, u32)> = ranks.into_iter().collect();
    by_name.sort_unstable();
    let mut order = vec![0u32; by_name.len()];
    for (position, (_, rank)) in by_name.iter().enumerate() {
        order[*rank as usize] = position as u32;
    }
    for key in &mut keys {
        key.0 = order[key.0 as usize];
    }
    keys.sort_unstable();
    keys.into_iter().map(|k| k.4).collect()
}

/// The rolling Parquet writer of a table's data files: names starting with `prefix`,
/// K2's encodings, a new file past `target_bytes` (default: the table format's 512 MB).
pub(crate) type DataFiles = RollingFileWriterBuilder<
    ParquetWriterBuilder,
    DefaultLocationGenerator,
    DefaultFileNameGenerator,
>;

pub(crate) fn data_files(
    table: &Table,
    prefix: &str,
    zstd_level: i32,
    target_bytes: Option<u64>,
) -> Result<DataFiles> {
    let metadata = table.metadata();
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(zstd_level)
                .map_err(|e| LakeError::InvalidArgument(format!("zstd level: {e}")))?,
        ))
        .set_max_row_group_row_count(Some(1 << 20))
        // Pages of a few thousand rows: rows are sorted by symbol, so the page index lets a
        // one-symbol query skip the pages of every other symbol.
        .set_data_page_row_count_limit(PAGE_ROWS);
    // Ids are unique per row: a dictionary only costs time there.
    for col in ["message_id", "trade_id", "quote_id"] {
        props = props.set_column_dictionary_enabled(col.into(), false);
    }
    // Message ids are hashes: compressing them spends time and saves nothing.
    props = props.set_column_compression("message_id".into(), Compression::UNCOMPRESSED);
    // Within a symbol, times and source sequences rise: deltas are a few bits each.
    for col in ["timestamp", "source_sequence"] {
        props = props
            .set_column_dictionary_enabled(col.into(), false)
            .set_column_encoding(col.into(), Encoding::DELTA_BINARY_PACKED);
    }
    let parquet = ParquetWriterBuilder::new(props.build(), metadata.current_schema().clone());
    let location = DefaultLocationGenerator::new(metadata)
        .map_err(|e| LakeError::catalog("data location", e))?;
    let names = DefaultFileNameGenerator::new(prefix.to_string(), None, DataFileFormat::Parquet);
    let io = table.file_io().clone();
    Ok(match target_bytes {
        Some(bytes) => RollingFileWriterBuilder::new(parquet, bytes as usize, io, location, names),
        None => RollingFileWriterBuilder::new_with_default_file_size(parquet, io, location, names),
    })
}

/// Writes `rows` as the data files of batch `batch_name` of table `t`.
pub(super) async fn write_files(
    t: LakeTable,
    table: &Table,
    arrow_schema: &SchemaRef,
    rows: &Arc<Rows>,
    batch_name: &str,
    zstd_level: i32,
) -> Result<Vec<DataFile>> {
    let metadata = table.metadata();
    let schema = metadata.current_schema().clone();
    let rolling = data_files(table, &format!("k2-{batch_name}"), zstd_level, None)?;
    let spec = metadata.default_partition_spec().as_ref().clone();

    // One file per partition: market tables by UTC day of the timestamp.
    let mut groups: BTreeMap<Option<i32>, Vec<u32>> = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        let day = row
            .record
            .event_time_us()
            .map(|t| t.div_euclid(DAY_US) as i32);
        groups.entry(day).or_default().push(i as u32);
    }
    // Each partition's file is written by a task of its own, so the files use every core:
    // the task sorts its rows, then builds the Arrow columns a slice of rows at a time and
    // hands each slice to the encoder before building the next. The columns of a whole
    // day, built at once, were hundreds of MB of fresh memory, and faulting those pages in
    // cost more than filling them; a slice's memory is reused by the next one. The largest
    // partitions start first, so that the cores finish together.
    let mut groups: Vec<(usize, Option<i32>, Vec<u32>)> = groups
        .into_iter()
        .enumerate()
        .map(|(i, (day, idx))| (i, day, idx))
        .collect();
    groups.sort_by_key(|(_, _, idx)| std::cmp::Reverse(idx.len()));
    let mut tasks: Vec<_> = groups
        .into_iter()
        .map(|(i, day, idx)| {
            let key = day.map(|d| {
                PartitionKey::new(
                    spec.clone(),
                    schema.clone(),
                    Struct::from_iter([Some(Literal::date(d))]),
                )
            });
            let builder = DataFileWriterBuilder::new(rolling.clone());
            let (rows, arrow_schema) = (rows.clone(), arrow_schema.clone());
            let task = tokio::spawn(async move {
                let iceberg = |e| LakeError::catalog(format!("writing {t} data"), e);
                let idx = sorted(&rows, idx);
                let mut writer = builder.build(key).await.map_err(iceberg)?;
                for slice in idx.chunks(SLICE_ROWS) {
                    let batch = {
                        let part: Vec<&Row> = slice.iter().map(|&i| rows.get(i as usize)).collect();
                        columns::to_batch(t, &arrow_schema, &part)?
                    };
                    writer.write(batch).await.map_err(iceberg)?;
                }
                writer.close().await.map_err(iceberg)
            });
            (i, task)
        })
        .collect();
    tasks.sort_unstable_by_key(|(i, _)| *i);
    // Every task is waited for, also after one failed: none is left holding the rows.
    // Files are listed in partition order.
    let mut written = Vec::with_capacity(tasks.len());
    for (_, task) in tasks {
        written.push(
            task.await
                .map_err(|e| LakeError::task(format!("a {t} file writer"), e))
                .and_then(|files| files),
        );
    }
    Ok(written
        .into_iter()
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect())
}

#[cfg(test)]
mod tests {
    use k2_model::{AssetClass, Decimal8, MarketRecord, Trade, TradeSide};

    use super::*;

    fn row(symbol: &str, time: i64, sequence: Option<i64>, id: u128) -> Row {
        let one = Decimal8::from_units(100_000_000).unwrap();
        Row {
            record: MarketRecord::Trade(Trade {
                message_id: MessageId::from_u128(id),
                trade_id: id.to_string().as_str().into(),
                symbol: symbol.into(),
                exchange: "ASX".into(),
                asset_class: AssetClass::Equities,
                timestamp_us: time,
                receive_timestamp_us: time,
                price: one,
                quantity: one,
                currency: "AUD".into(),
                side: TradeSide::Unknown,
                trade_conditions: Vec::new(),
                source_sequence: sequence,
                ingestion_timestamp_us: time,
                platform_sequence: None,
                vendor_data: None,
            }),
            trade_date: 0,
            extras: Vec::new(),
        }
    }

    #[test]
    fn rows_sort_by_symbol_time_sequence_then_id() {
        // Symbols first seen out of order, runs broken up, ties on time and sequence.
        let rows: Rows = [
            row("WBC", 5, None, 1),
            row("BHP", 9, Some(2), 2),
            row("BHP", 9, Some(1), 3),
            row("ANZ", 7, None, 9),
            row("ANZ", 7, None, 4),
            row("WBC", 1, Some(0), 5),
            row("BHP", 3, None, 6),
            row("AN", 100, None, 7),
        ]
        .into_iter()
        .collect();
        let order: Vec<u128> = sorted(&rows, (0..rows.len() as u32).collect())
            .into_iter()
            .map(|i| rows.get(i as usize).record.message_id().as_u128())
            .collect();
        assert_eq!(order, vec![7, 4, 9, 6, 3, 2, 5, 1]);
        // The same order as comparing the full keys, strings and all.
        let mut by_keys: Vec<&Row> = rows.iter().collect();
        by_keys.sort_by_key(|r| {
            let r = &r.record;
            (
                r.symbol().to_string(),
                r.event_time_us().unwrap_or(0),
                r.source_sequence().unwrap_or(-1),
                r.message_id(),
            )
        });
        let expected: Vec<u128> = by_keys
            .iter()
            .map(|r| r.record.message_id().as_u128())
            .collect();
        assert_eq!(order, expected);
    }

    #[test]
    fn batch_rows_keep_their_order_across_chunks_and_reuse_them() {
        let chunk = crate::columns::CHUNK_ROWS;
        let ids = |rows: &Rows| -> Vec<u128> {
            rows.iter()
                .map(|r| r.record.message_id().as_u128())
                .collect()
        };
        let n = 2 * chunk + 3;
        let mut rows: Rows = (0..n as u128).map(|i| row("BHP", 0, None, i)).collect();
        assert_eq!(rows.len(), n);
        assert_eq!(ids(&rows), (0..n as u128).collect::<Vec<_>>());
        for i in [0, chunk - 1, chunk, 2 * chunk, n - 1] {
            assert_eq!(rows.get(i).record.message_id().as_u128(), i as u128);
        }
        // Cleared, the chunks take the next batch from the first one on.
        rows.clear();
        assert!(rows.is_empty() && ids(&rows).is_empty());
        for i in 0..chunk as u128 + 1 {
            rows.push(row("ANZ", 0, None, 1_000_000 + i));
        }
        assert_eq!(rows.len(), chunk + 1);
        assert_eq!(
            rows.get(chunk).record.message_id().as_u128(),
            1_000_000 + chunk as u128
        );
        let taken: Vec<u128> = rows
            .into_rows()
            .map(|r| r.record.message_id().as_u128())
            .collect();
        assert_eq!(
            taken,
            (1_000_000..1_000_000 + chunk as u128 + 1).collect::<Vec<_>>()
        );
    }
}
