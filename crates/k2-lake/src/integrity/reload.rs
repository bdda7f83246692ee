//! The dedup window rebuilt from the lake: the ids of the rows that arrived inside the
//! window as of the committed snapshot. The lake is the record of what was stored, so what
//! is restored cannot disagree with it; Iceberg's column metrics prune the older files.

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::TimestampMicrosecondType;
use datafusion::prelude::{SessionContext, col, lit};
use datafusion::scalar::ScalarValue;
use futures::TryStreamExt;
use iceberg::table::Table;
use k2_pipeline::Deduplicator;

use crate::error::{LakeError, Result};
use crate::scan::SnapshotTable;
use crate::tables::LakeTable;

/// Feeds `dedup` the ids of the rows of `table` that arrived at or after `from_us` (all
/// rows when None); returns how many.
pub(super) async fn reload_ids(
    t: LakeTable,
    table: &Table,
    from_us: Option<i64>,
    dedup: &mut Deduplicator,
) -> Result<u64> {
    let err = |e: datafusion::error::DataFusionError| {
        LakeError::engine(format!("reloading {t} message ids"), e)
    };
    let provider = SnapshotTable::new(table.clone(), None, Default::default())
        .await
        .map_err(|e| LakeError::catalog(format!("reading {t}"), e))?;
    let ctx = SessionContext::new();
    let mut df = ctx.read_table(Arc::new(provider)).map_err(err)?;
    if let Some(from) = from_us {
        df = df
            .filter(
                col("ingestion_timestamp").gt_eq(lit(ScalarValue::TimestampMicrosecond(
                    Some(from),
                    Some("+00:00".into()),
                ))),
            )
            .map_err(err)?;
    }
    let mut stream = df
        .select_columns(&["message_id", "ingestion_timestamp"])
        .map_err(err)?
        .execute_stream()
        .await
        .map_err(err)?;
    let mut n = 0;
    while let Some(batch) = stream.try_next().await.map_err(err)? {
        let ids = batch.column(0).as_fixed_size_binary();
        let times = batch.column(1).as_primitive::<TimestampMicrosecondType>();
        for i in 0..batch.num_rows() {
            let bytes: [u8; 16] = ids.value(i).try_into().map_err(|_| {
                LakeError::CorruptData(format!("{t}: a stored message id is not 16 bytes"))
            })?;
            let at = if times.is_null(i) { 0 } else { times.value(i) };
            dedup.remember(u128::from_be_bytes(bytes), at);
            n += 1;
        }
    }
    Ok(n)
}
