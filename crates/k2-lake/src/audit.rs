//! The commit audit: one JSON line per Iceberg commit the lake writer makes, appended
//! (and synced) to `audit/commits.jsonl` in the data directory, and logged as a
//! structured `lake commit` event.
//!
//! A crash between a commit and its audit line would leave the line missing; at start
//! the writer compares the file with each table's snapshots and appends what is missing
//! from the snapshot summaries (marked `recovered`, without a duration), so every commit
//! of K2's is in the file.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, Write};
use std::path::Path;

use iceberg::table::Table;
use serde::{Deserialize, Serialize};

use crate::commit_marks;
use crate::error::{LakeError, Result};
use crate::tables::LakeTable;

/// One commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Commit time, microseconds since the epoch.
    pub committed_at_us: i64,
    pub table: String,
    pub snapshot_before: Option<i64>,
    pub snapshot_after: i64,
    pub rows: u64,
    pub files: u64,
    pub bytes: u64,
    /// First offset of the batch per `topic/partition` (absent when recovered).
    pub offsets_from: BTreeMap<String, u64>,
    /// Next offset after the batch per `topic/partition` (cumulative, as committed).
    pub offsets_to: BTreeMap<String, u64>,
    pub batch: String,
    /// Time from the start of the flush to the committed snapshot.
    pub duration_ms: Option<u64>,
    /// Written at a later start from the snapshot summary (the writer stopped between
    /// the commit and its line).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recovered: bool,
}

/// Appends entries to the audit file, synced before returning.
pub fn append(path: &Path, entries: &[AuditEntry]) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let io = |e: std::io::Error| LakeError::io(format!("audit file {}", path.display()), e);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut text = Vec::new();
    for e in entries {
        serde_json::to_writer(&mut text, e).expect("audit entry serialises");
        text.push(b'\n');
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io)?;
    f.write_all(&text).and_then(|()| f.sync_data()).map_err(io)
}

/// Every entry of the file, oldest first. A torn last line (a crash mid-append) is skipped.
pub fn read(path: &Path) -> Result<Vec<AuditEntry>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(LakeError::io(format!("audit file {}", path.display()), e)),
    };
    let mut out = Vec::new();
    let lines: Vec<String> = std::io::BufReader::new(file)
        .lines()
        .collect::<std::io::Result<_>>()
        .map_err(|e| LakeError::io(format!("audit file {}", path.display()), e))?;
    let last = lines.len().saturating_sub(1);
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(entry) => out.push(entry),
            Err(_) if i == last => {
                tracing::warn!(file = %path.display(), "torn last audit line skipped")
            }
            Err(e) => {
                return Err(LakeError::CorruptFile {
                    path: path.to_path_buf(),
                    detail: format!("line {}: {e}", i + 1),
                });
            }
        }
    }
    Ok(out)
}

/// Appends entries for the table's K2 commits that the file lacks; returns how many.
pub fn reconcile(path: &Path, t: LakeTable, table: &Table) -> Result<usize> {
    let known: HashSet<i64> = read(path)?
        .into_iter()
        .filter(|e| e.table == t.qualified())
        .map(|e| e.snapshot_after)
        .collect();
    let metadata = table.metadata();
    let mut missing = Vec::new();
    let mut snapshots: Vec<_> = metadata.snapshots().collect();
    snapshots.sort_by_key(|s| (s.timestamp_ms(), s.sequence_number()));
    for s in snapshots {
        let props = &s.summary().additional_properties;
        let Some(batch) = commit_marks::batch_of(s) else {
            continue;
        };
        if known.contains(&s.snapshot_id()) {
            continue;
        }
        let number = |key: &str| props.get(key).and_then(|v| v.parse().ok()).unwrap_or(0);
        missing.push(AuditEntry {
            committed_at_us: s.timestamp_ms() * 1000,
            table: t.qualified(),
            snapshot_before: s.parent_snapshot_id(),
            snapshot_after: s.snapshot_id(),
            rows: number("added-records"),
            files: number("added-data-files"),
            bytes: number("added-files-size"),
            offsets_from: BTreeMap::new(),
            // A recovered line is informational: an unreadable record leaves it empty.
            offsets_to: commit_marks::offsets_of(s).unwrap_or_default(),
            batch: batch.to_string(),
            duration_ms: None,
            recovered: true,
        });
    }
    append(path, &missing)?;
    Ok(missing.len())
}
