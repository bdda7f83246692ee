//! What the lake holds: symbols, snapshots of a table (for time travel), row counts.

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use datafusion::common::ScalarValue;

use super::QueryEngine;
use super::answer::SnapshotInfo;
use crate::commit_marks;
use crate::error::{LakeError, Result};
use crate::tables::LakeTable;

impl QueryEngine {
    /// Distinct symbols with trades or quotes, optionally on one exchange.
    pub async fn symbols(&self, exchange: Option<&str>) -> Result<Vec<String>> {
        let mut out = std::collections::BTreeSet::new();
        for table in [LakeTable::Trades, LakeTable::Quotes] {
            let (sql, params) = match exchange {
                Some(x) => (
                    "SELECT DISTINCT symbol FROM t WHERE exchange = $1",
                    vec![ScalarValue::from(x.to_ascii_uppercase().as_str())],
                ),
                None => ("SELECT DISTINCT symbol FROM t", vec![]),
            };
            let ctx = self.context_for(table, None).await?;
            for batch in self.run("symbols", &ctx, sql, params, None).await? {
                let col = batch.column(0).as_string::<i32>();
                out.extend(col.iter().flatten().map(str::to_string));
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Snapshots of a table, oldest first.
    pub async fn snapshots(&self, table: LakeTable) -> Result<Vec<SnapshotInfo>> {
        let t = self
            .catalog
            .load_table(&table.ident())
            .await
            .map_err(|e| LakeError::catalog(format!("loading {table}"), e))?;
        let tags = super::tags(&t);
        let mut out: Vec<SnapshotInfo> = t
            .metadata()
            .snapshots()
            .map(|s| {
                let props = &s.summary().additional_properties;
                let num = |k: &str| props.get(k).and_then(|v| v.parse().ok());
                SnapshotInfo {
                    snapshot_id: s.snapshot_id(),
                    parent_id: s.parent_snapshot_id(),
                    timestamp_ms: s.timestamp_ms(),
                    operation: format!("{:?}", s.summary().operation).to_lowercase(),
                    added_records: num("added-records"),
                    total_records: num("total-records"),
                    added_files: num("added-data-files"),
                    log_offsets: commit_marks::offsets_text(s).map(str::to_string),
                    tags: {
                        let mut names: Vec<String> = tags
                            .iter()
                            .filter(|(_, id)| *id == s.snapshot_id())
                            .map(|(name, _)| name.clone())
                            .collect();
                        names.sort();
                        names
                    },
                }
            })
            .collect();
        out.sort_by_key(|s| (s.timestamp_ms, s.snapshot_id));
        Ok(out)
    }

    /// Row count of a table (at a snapshot, or now).
    pub async fn count(&self, table: LakeTable, snapshot: Option<i64>) -> Result<u64> {
        let ctx = self.context_for(table, snapshot).await?;
        let batches = self
            .run("count", &ctx, "SELECT count(*) FROM t", vec![], None)
            .await?;
        Ok(batches.first().map_or(0, |b| {
            b.column(0).as_primitive::<Int64Type>().value(0) as u64
        }))
    }
}
