//! The completeness ledger of a table as data: each (exchange, symbol) stream's sequence
//! state as of a committed snapshot — its sessions, counts, and every gap from found to
//! filled or given up — read from the state file the snapshot names. The file is written
//! durably before the commit that names it, so the ledger is exactly as consistent as the
//! rows: it describes the records of that snapshot, no more and no fewer.

use std::collections::BTreeMap;
use std::path::Path;

use iceberg::spec::Snapshot;
use iceberg::table::Table;
use k2_pipeline::{GapEntry, SequenceTracker, Session, StreamStats};

use super::state_file;
use crate::commit_marks;
use crate::error::{LakeError, Result};
use crate::tables::LakeTable;

/// One stream's ledger.
#[derive(Clone, Debug)]
pub struct StreamLedger {
    pub exchange: String,
    pub symbol: String,
    pub stats: StreamStats,
    /// The current session; the ended ones kept before it.
    pub session: Session,
    pub ended_sessions: Vec<Session>,
    /// Gaps kept: closed ones oldest first, then the open ones.
    pub gaps: Vec<GapEntry>,
    /// Messages missing now (the open gaps' sum).
    pub missing: u64,
    /// Records dropped by dedup (same message id) for this stream.
    pub duplicates_dropped: u64,
}

/// A table's ledger: its streams, and the snapshots whose state they are (one per writer
/// that committed to the table).
#[derive(Clone, Debug)]
pub struct Ledger {
    pub table: LakeTable,
    pub snapshots: Vec<i64>,
    pub streams: Vec<StreamLedger>,
}

/// The ledger of `table` as of its snapshot `at` (the current one when None), from the
/// state files under `state_root`. Each writer's newest commit at or before `at` names
/// the state of its streams; a table no writer committed to yet has no streams.
pub fn read(t: LakeTable, table: &Table, at: Option<i64>, state_root: &Path) -> Result<Ledger> {
    let dir = state_root.join(t.name());
    let metadata = table.metadata();
    let mut snapshot = match at {
        Some(id) => metadata.snapshot_by_id(id),
        None => metadata.current_snapshot(),
    };
    // The newest writer commit of each source, newest first.
    let mut newest: BTreeMap<String, &Snapshot> = BTreeMap::new();
    while let Some(s) = snapshot {
        if commit_marks::is_writer_commit(s) {
            newest
                .entry(commit_marks::source_of(s).to_string())
                .or_insert(s);
        }
        snapshot = s
            .parent_snapshot_id()
            .and_then(|p| metadata.snapshot_by_id(p));
    }
    let mut ledger = Ledger {
        table: t,
        snapshots: Vec::new(),
        streams: Vec::new(),
    };
    for s in newest.values() {
        let Some(name) = commit_marks::integrity_of(s)?.state_file else {
            continue;
        };
        let unavailable = |why: String| {
            LakeError::NotFound(format!(
                "the completeness ledger of {t} at snapshot {} ({why})",
                s.snapshot_id()
            ))
        };
        let Some((path, file)) = state_file::read(&dir, &name)? else {
            return Err(unavailable(format!(
                "its state file {} is gone: the newest few commits keep theirs",
                dir.join(&name).display()
            )));
        };
        if file.sequence.is_null() {
            return Err(unavailable(
                "the streams' sequence state lives in Redis, sequence.redis".into(),
            ));
        }
        let tracker = SequenceTracker::restore(
            &serde_json::to_vec(&file.sequence).expect("JSON value serialises"),
            Default::default(),
        )
        .map_err(|detail| LakeError::CorruptFile { path, detail })?;
        let dropped: BTreeMap<(String, String), u64> = file
            .duplicates
            .into_iter()
            .map(|(e, s, n)| ((e, s), n))
            .collect();
        ledger.snapshots.push(s.snapshot_id());
        for (exchange, symbol, state) in tracker.streams() {
            ledger.streams.push(StreamLedger {
                exchange: exchange.to_string(),
                symbol: symbol.to_string(),
                stats: state.stats().clone(),
                session: state.session(),
                ended_sessions: state.ledger().ended_sessions().cloned().collect(),
                gaps: state.ledger().gaps().cloned().collect(),
                missing: state.missing(),
                duplicates_dropped: dropped
                    .get(&(exchange.to_string(), symbol.to_string()))
                    .copied()
                    .unwrap_or(0),
            });
        }
    }
    ledger
        .streams
        .sort_by(|a, b| (&a.exchange, &a.symbol).cmp(&(&b.exchange, &b.symbol)));
    Ok(ledger)
}
