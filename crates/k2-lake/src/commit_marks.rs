//! What a K2 commit records in its Iceberg snapshot summary, and how to read it back.
//!
//! Exactly once rests on these marks: the log positions a commit covers are written in the
//! same snapshot as its data, so a writer resumes where its newest snapshot says. The
//! writer writes them; the writer on restart, the integrity state, the audit, retention,
//! the query engine and the live tail read them. Every key is named here and nowhere else.

use std::collections::{BTreeMap, HashMap};

use iceberg::spec::{Snapshot, SnapshotRef};
use iceberg::table::Table;

use crate::error::{LakeError, Result};

/// The cumulative next offset of every log partition feeding the table (JSON object keyed
/// by [`offset_key`]).
const OFFSETS: &str = "k2.log-offsets";
/// The name of the batch the snapshot committed (derived from its log positions).
const BATCH: &str = "k2.batch";
/// The writer source whose positions the snapshot records (absent for the single writer).
const SOURCE: &str = "k2.source";
/// The sequence-state file written for this commit (see `integrity`).
const STATE: &str = "k2.state";
/// The oldest arrival time the dedup window held at the commit, µs.
const DEDUP_FROM: &str = "k2.dedup-from-us";
/// A compaction's `replace` snapshot: the files it replaced and wrote (`BEFORE->AFTER`).
/// It records no log positions: the writers' positions are in their own snapshots.
const COMPACTION: &str = "k2.compaction";

/// Log positions by [`offset_key`]: the next offset to read of each partition.
pub type Positions = BTreeMap<String, u64>;

/// The key of a partition's position: `topic/partition`, prefixed by `source:` when the
/// writer has a source name (several writers, each with its own log, on one table).
pub fn offset_key(source: &str, topic: &str, partition: u32) -> String {
    if source.is_empty() {
        format!("{topic}/{partition}")
    } else {
        format!("{source}:{topic}/{partition}")
    }
}

/// The topic and partition of a key [`offset_key`] made for `source`; None for another
/// source's key or a malformed one.
pub fn parse_offset_key<'k>(source: &str, key: &'k str) -> Option<(&'k str, u32)> {
    let rest = if source.is_empty() {
        key
    } else {
        key.strip_prefix(source)?.strip_prefix(':')?
    };
    let (topic, partition) = rest.rsplit_once('/')?;
    Some((topic, partition.parse().ok()?))
}

/// What one K2 commit records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitMarks {
    /// Every partition's next offset once the commit lands (the writer's whole position,
    /// not only what this batch read).
    pub offsets: Positions,
    pub batch: String,
    /// Empty for the single writer.
    pub source: String,
    /// The integrity state the commit stands for.
    pub integrity: IntegrityMarks,
}

/// The part of a commit's marks that the integrity state writes (see `integrity`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntegrityMarks {
    /// The sequence-state file of the commit, when a state directory is configured.
    pub state_file: Option<String>,
    /// The oldest arrival time the dedup window held, µs.
    pub dedup_from_us: Option<i64>,
}

impl CommitMarks {
    /// The snapshot summary properties of the commit.
    pub fn properties(&self) -> HashMap<String, String> {
        let mut p = HashMap::from([
            (
                OFFSETS.to_string(),
                serde_json::to_string(&self.offsets).expect("positions serialise"),
            ),
            (BATCH.to_string(), self.batch.clone()),
        ]);
        if !self.source.is_empty() {
            p.insert(SOURCE.to_string(), self.source.clone());
        }
        if let Some(name) = &self.integrity.state_file {
            p.insert(STATE.to_string(), name.clone());
        }
        if let Some(from) = self.integrity.dedup_from_us {
            p.insert(DEDUP_FROM.to_string(), from.to_string());
        }
        p
    }
}

/// The summary properties of a compaction that replaced `before` files by `after`.
pub fn compaction_properties(before: usize, after: usize) -> HashMap<String, String> {
    HashMap::from([(COMPACTION.to_string(), format!("{before}->{after}"))])
}

/// Whether a snapshot is a compaction's.
pub fn is_compaction(snapshot: &Snapshot) -> bool {
    property(snapshot, COMPACTION).is_some()
}

/// Whether a snapshot is a K2 writer's commit (it records a batch and its positions).
pub fn is_writer_commit(snapshot: &Snapshot) -> bool {
    property(snapshot, BATCH).is_some()
}

fn property<'s>(snapshot: &'s Snapshot, key: &str) -> Option<&'s String> {
    snapshot.summary().additional_properties.get(key)
}

fn corrupt(snapshot: &Snapshot, key: &'static str, detail: String) -> LakeError {
    LakeError::CorruptSnapshot {
        snapshot_id: snapshot.snapshot_id(),
        key,
        detail,
    }
}

/// The batch a snapshot committed; None for a snapshot K2's writer did not make.
pub fn batch_of(snapshot: &Snapshot) -> Option<&str> {
    property(snapshot, BATCH).map(String::as_str)
}

/// The writer source of a snapshot (empty: the single writer, or not K2's).
pub fn source_of(snapshot: &Snapshot) -> &str {
    property(snapshot, SOURCE).map_or("", String::as_str)
}

/// The positions a snapshot records, as the JSON text stored (for display).
pub fn offsets_text(snapshot: &Snapshot) -> Option<&str> {
    property(snapshot, OFFSETS).map(String::as_str)
}

/// The positions a snapshot records (empty when it records none); an unreadable record is
/// an error, never an empty position (that would read the whole log again).
pub fn offsets_of(snapshot: &Snapshot) -> Result<Positions> {
    match property(snapshot, OFFSETS) {
        None => Ok(Positions::new()),
        Some(json) => {
            serde_json::from_str(json).map_err(|e| corrupt(snapshot, OFFSETS, e.to_string()))
        }
    }
}

/// The integrity marks of a snapshot.
pub fn integrity_of(snapshot: &Snapshot) -> Result<IntegrityMarks> {
    let dedup_from_us = match property(snapshot, DEDUP_FROM) {
        None => None,
        Some(v) => Some(
            v.parse::<i64>()
                .map_err(|e| corrupt(snapshot, DEDUP_FROM, format!("'{v}': {e}")))?,
        ),
    };
    Ok(IntegrityMarks {
        state_file: property(snapshot, STATE).cloned(),
        dedup_from_us,
    })
}

/// The newest snapshot `source` committed, walking back from the current one (past
/// snapshots no writer made: compactions, expiry's own, other engines').
pub fn source_snapshot<'t>(table: &'t Table, source: &str) -> Option<&'t SnapshotRef> {
    let metadata = table.metadata();
    let mut at = metadata.current_snapshot();
    while let Some(s) = at {
        if is_writer_commit(s) && source_of(s) == source {
            return Some(s);
        }
        at = s
            .parent_snapshot_id()
            .and_then(|p| metadata.snapshot_by_id(p));
    }
    None
}

/// The positions `source` committed: those its newest snapshot records (the current
/// snapshot when one writer writes the table; with several, each finds its own).
pub fn committed_offsets(table: &Table, source: &str) -> Result<Positions> {
    match source_snapshot(table, source) {
        None => Ok(Positions::new()),
        Some(snapshot) => offsets_of(snapshot),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_keys_round_trip_for_their_own_source_only() {
        let single = offset_key("", "market.equities.trades.asx", 3);
        assert_eq!(single, "market.equities.trades.asx/3");
        assert_eq!(
            parse_offset_key("", &single),
            Some(("market.equities.trades.asx", 3))
        );
        let named = offset_key("b", "market.crypto.trades.binance", 0);
        assert_eq!(named, "b:market.crypto.trades.binance/0");
        assert_eq!(
            parse_offset_key("b", &named),
            Some(("market.crypto.trades.binance", 0))
        );
        assert_eq!(parse_offset_key("a", &named), None);
        assert_eq!(parse_offset_key("", "no-partition"), None);
        assert_eq!(parse_offset_key("", "t/x"), None);
    }

    #[test]
    fn marks_become_properties_with_only_what_is_set() {
        let mut marks = CommitMarks {
            offsets: Positions::from([("t/0".to_string(), 7)]),
            batch: "00ff".into(),
            ..Default::default()
        };
        let p = marks.properties();
        assert_eq!(p.len(), 2);
        assert_eq!(p[OFFSETS], r#"{"t/0":7}"#);
        assert_eq!(p[BATCH], "00ff");
        marks.source = "b".into();
        marks.integrity = IntegrityMarks {
            state_file: Some("sequence-00ff.json".into()),
            dedup_from_us: Some(-5),
        };
        let p = marks.properties();
        assert_eq!(p.len(), 5);
        assert_eq!(p[SOURCE], "b");
        assert_eq!(p[STATE], "sequence-00ff.json");
        assert_eq!(p[DEDUP_FROM], "-5");
    }
}
