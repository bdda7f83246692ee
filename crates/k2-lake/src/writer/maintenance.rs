//! Upkeep after a commit: snapshots past the retention expire, and data files no
//! snapshot names (a crash between writing and committing) are swept once old enough.

use std::time::{Duration, Instant, SystemTime};

use iceberg::Catalog;

use super::options::EXPIRE_EVERY;
use super::state::TableState;
use crate::metrics;
use crate::tables::LakeTable;

/// After a commit: the table's snapshots older than `keep_for` expire, at most every
/// [`EXPIRE_EVERY`], and data files never committed are deleted once older than
/// `keep_for`, looked for once per `keep_for`. A failure (say, another writer committed
/// meanwhile) leaves them for the next check: the lake is whole either way.
pub(super) async fn expire_old_snapshots(
    t: LakeTable,
    state: &mut TableState,
    catalog: &dyn Catalog,
    keep_for: Duration,
) {
    if state
        .expired_at
        .is_some_and(|at| at.elapsed() < EXPIRE_EVERY)
    {
        return;
    }
    state.expired_at = Some(Instant::now());
    let now_ms = chrono::Utc::now().timestamp_millis();
    // Nothing due commits nothing.
    match crate::retention::expire(catalog, &state.table, keep_for, now_ms).await {
        Ok((table, expired)) => {
            state.table = table;
            metrics::snapshots_expired(t.name(), expired.snapshots, expired.files);
        }
        Err(e) => {
            metrics::expiry_failed(t.name());
            tracing::warn!(table = %t, error = %e, "could not expire old snapshots; trying again later");
        }
    }
    // Files written and never committed, once per retention period, beside the writer
    // (reading every manifest of the table is the cost); a run's first look is at its
    // first commit.
    if state.swept_at.is_some_and(|at| at.elapsed() < keep_for) {
        return;
    }
    state.swept_at = Some(Instant::now());
    let table = state.table.clone();
    state.sweep = Some(tokio::spawn(async move {
        match crate::retention::remove_orphan_files(&table, keep_for, SystemTime::now()).await {
            Ok(files) => metrics::orphan_files_deleted(t.name(), files),
            Err(e) => {
                metrics::expiry_failed(t.name());
                tracing::warn!(table = %t, error = %e, "could not look for orphan data files; looking again after a retention period");
            }
        }
    }));
}
