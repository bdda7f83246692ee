//! A bin's rows read from its files, sorted by (symbol, timestamp, source sequence, id) —
//! the order the writer gives each file — and written as files of the target size.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::{
    SortColumn, SortOptions, concat_batches, lexsort_to_indices, take_record_batch,
};
use arrow::datatypes::SchemaRef;
use iceberg::spec::{DataFile, PartitionKey};
use iceberg::table::Table;
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::{Bin, CompactOptions};
use crate::error::{LakeError, Result};
use crate::warehouse::Files;
use crate::writer::files::data_files;

/// Rows handed to the encoder at a time.
const SLICE_ROWS: usize = 1 << 15;

/// The sort key, in order.
const ORDER: [&str; 4] = ["symbol", "timestamp", "source_sequence", "message_id"];

pub(super) async fn rewrite(
    table: &Table,
    bin: &Bin,
    options: &CompactOptions,
) -> Result<Vec<DataFile>> {
    let name = table.identifier().to_string();
    let failed = |what: &str, e: iceberg::Error| LakeError::catalog(format!("{what} ({name})"), e);
    let metadata = table.metadata();
    let schema = metadata.current_schema().clone();
    let arrow_schema: SchemaRef = Arc::new(
        iceberg::arrow::schema_to_arrow_schema(&schema)
            .map_err(|e| failed("the table's Arrow schema", e))?,
    );
    let mut parts = Vec::with_capacity(bin.files.len());
    for entry in &bin.files {
        let path = entry.data_file().file_path();
        let bytes = table
            .file_io()
            .new_input(path)
            .map_err(|e| failed("opening a data file", e))?
            .read()
            .await
            .map_err(|e| failed("reading a data file", e))?;
        parts.push((path.to_string(), bytes));
    }
    let sorting_schema = arrow_schema.clone();
    let sorted = tokio::task::spawn_blocking(move || -> Result<RecordBatch> {
        let mut batches = Vec::new();
        for (path, bytes) in parts {
            let corrupt = |e: String| LakeError::InvalidArgument(format!("data file {path}: {e}"));
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
                .map_err(|e| corrupt(e.to_string()))?
                .with_batch_size(SLICE_ROWS)
                .build()
                .map_err(|e| corrupt(e.to_string()))?;
            for batch in reader {
                let batch = batch.map_err(|e| corrupt(e.to_string()))?;
                // The file's columns under the table's schema (field ids and all): a file
                // of an older schema is refused here rather than rewritten wrongly.
                batches.push(
                    RecordBatch::try_new(sorting_schema.clone(), batch.columns().to_vec())
                        .map_err(|e| corrupt(format!("not of the table's current schema: {e}")))?,
                );
            }
        }
        let all = concat_batches(&sorting_schema, &batches)
            .map_err(|e| LakeError::InvalidArgument(format!("joining the rows: {e}")))?;
        drop(batches);
        sort(&all)
    })
    .await
    .map_err(|e| LakeError::task("a compaction's sort", e))??;

    let prefix = format!("k2-compact-{}", uuid::Uuid::now_v7().simple());
    let files = data_files(
        table,
        &prefix,
        options.zstd_level,
        Some(options.target_file_bytes),
    )?;
    let key = PartitionKey::new(
        metadata.default_partition_spec().as_ref().clone(),
        schema,
        bin.partition.clone(),
    );
    let mut writer = DataFileWriterBuilder::new(files)
        .build(Some(key))
        .await
        .map_err(|e| failed("starting a compacted file", e))?;
    let mut at = 0;
    while at < sorted.num_rows() {
        let len = SLICE_ROWS.min(sorted.num_rows() - at);
        writer
            .write(sorted.slice(at, len))
            .await
            .map_err(|e| failed("writing a compacted file", e))?;
        at += len;
    }
    writer
        .close()
        .await
        .map_err(|e| failed("finishing a compacted file", e))
}

/// `batch` in the table's sort order (nulls first: a missing sequence sorts before any).
fn sort(batch: &RecordBatch) -> Result<RecordBatch> {
    let options = SortOptions {
        descending: false,
        nulls_first: true,
    };
    let columns = ORDER
        .iter()
        .filter_map(|name| batch.column_by_name(name))
        .map(|values| SortColumn {
            values: values.clone(),
            options: Some(options),
        })
        .collect::<Vec<_>>();
    let order = lexsort_to_indices(&columns, None)
        .map_err(|e| LakeError::InvalidArgument(format!("sorting the rows: {e}")))?;
    take_record_batch(batch, &order)
        .map_err(|e| LakeError::InvalidArgument(format!("sorting the rows: {e}")))
}

/// Deletes files written for a compaction that will not be committed (best effort: the
/// orphan sweep deletes what is left).
pub(super) async fn discard(table: &Table, written: &[DataFile]) {
    let Ok(store) = Files::of(table.file_io(), table.metadata().location()) else {
        return;
    };
    for file in written {
        if let Ok(path) = store.path(file.file_path())
            && let Err(e) = store.delete(&path).await
        {
            tracing::warn!(file = file.file_path(), error = %e, "could not delete an uncommitted compacted file; the orphan sweep will");
        }
    }
}
