//! Time travel: which snapshot of a table an answer is read from, and the receipt that
//! names it.
//!
//! A query answers from the current snapshot, a snapshot by id, a tag (a named snapshot
//! kept past expiry until untagged), or the snapshot that was current at an instant (the
//! table's snapshot log: the last snapshot made current at or before it). The receipt of
//! an answer names the snapshot, when it was committed, and the log positions it covers:
//! with it, anyone reruns the question and gets the same rows.

use std::collections::BTreeMap;

use iceberg::table::Table;
use serde::Serialize;

use crate::commit_marks;
use crate::error::{LakeError, Result};
use crate::tables::LakeTable;

/// Which snapshot a query reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Pin {
    /// The table's current snapshot.
    #[default]
    Current,
    /// A snapshot by id.
    Id(i64),
    /// A tag's (or branch's) snapshot.
    Named(String),
    /// The snapshot current at this instant, milliseconds since the epoch.
    AsOf(i64),
    /// The one snapshot every one of these names (say, a tag and an instant: the tagged
    /// snapshot, provided it was the one current then).
    All(Vec<Pin>),
}

impl Pin {
    /// `--snapshot`'s value: an id when it is an integer, else a tag name.
    pub fn snapshot(text: &str) -> Pin {
        match text.parse() {
            Ok(id) => Pin::Id(id),
            Err(_) => Pin::Named(text.to_string()),
        }
    }

    /// Whether the instant of an `AsOf` pin precedes `table`'s first commit (the table
    /// was empty then), as opposed to a history expired since.
    pub fn before_first_commit(&self, table: &Table) -> bool {
        let ms = match self {
            Pin::AsOf(ms) => ms,
            Pin::All(pins) => return pins.iter().all(|p| p.before_first_commit(table)),
            _ => return false,
        };
        let metadata = table.metadata();
        match metadata.history().first() {
            None => metadata.current_snapshot_id().is_none(),
            Some(first) => {
                first.timestamp_ms > *ms
                    && metadata
                        .snapshot_by_id(first.snapshot_id)
                        .is_some_and(|s| s.parent_snapshot_id().is_none())
            }
        }
    }

    /// The snapshot of `table` this pin names (None: the table has no snapshot yet and
    /// the pin is `Current`); an error names what does not exist.
    pub fn resolve(&self, name: LakeTable, table: &Table) -> Result<Option<i64>> {
        let metadata = table.metadata();
        match self {
            Pin::All(pins) => {
                let mut found: Option<(Option<i64>, &Pin)> = None;
                for pin in pins {
                    let id = pin.resolve(name, table)?;
                    match found {
                        Some((other, first)) if other != id => {
                            return Err(LakeError::NotFound(format!(
                                "one snapshot of {name} that is both {} ({}) and {} ({})",
                                first.describe(),
                                other.map_or("none".into(), |i| i.to_string()),
                                pin.describe(),
                                id.map_or("none".into(), |i| i.to_string()),
                            )));
                        }
                        _ => found = Some((id, pin)),
                    }
                }
                Ok(found
                    .and_then(|(id, _)| id)
                    .or(metadata.current_snapshot_id()))
            }
            Pin::Current => Ok(metadata.current_snapshot_id()),
            Pin::Id(id) => match metadata.snapshot_by_id(*id) {
                Some(_) => Ok(Some(*id)),
                None => Err(LakeError::NotFound(format!("snapshot {id} of {name}"))),
            },
            Pin::Named(tag) => match metadata.snapshot_for_ref(tag) {
                Some(s) => Ok(Some(s.snapshot_id())),
                None => Err(LakeError::NotFound(format!(
                    "tag '{tag}' of {name} (k2 snapshot tags lists them)"
                ))),
            },
            Pin::AsOf(ms) => {
                let entry = metadata
                    .history()
                    .iter()
                    .rev()
                    .find(|e| e.timestamp_ms <= *ms)
                    .ok_or_else(|| {
                        LakeError::NotFound(format!(
                            "a snapshot of {name} current at {} (the oldest kept became current at {})",
                            instant(*ms),
                            metadata
                                .history()
                                .first()
                                .map_or("(none)".to_string(), |e| instant(e.timestamp_ms))
                        ))
                    })?;
                match metadata.snapshot_by_id(entry.snapshot_id) {
                    Some(_) => Ok(Some(entry.snapshot_id)),
                    None => Err(LakeError::NotFound(format!(
                        "snapshot {} of {name}, current at {}: expired (writer.snapshot_retention; tag a snapshot to keep it)",
                        entry.snapshot_id,
                        instant(*ms)
                    ))),
                }
            }
        }
    }
}

/// The tags of `table`, by name, with their snapshot ids (iceberg-rust keeps a table's
/// references private; its metadata's JSON form lists them).
pub fn tags(table: &Table) -> Vec<(String, i64)> {
    let json = serde_json::to_value(table.metadata()).unwrap_or_default();
    let mut out: Vec<(String, i64)> = json["refs"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, r)| r["type"] == "tag")
        .filter_map(|(name, r)| Some((name.clone(), r["snapshot-id"].as_i64()?)))
        .collect();
    out.sort();
    out
}

impl Pin {
    /// What the pin names, for messages.
    fn describe(&self) -> String {
        match self {
            Pin::Current => "the current snapshot".into(),
            Pin::Id(id) => format!("snapshot {id}"),
            Pin::Named(tag) => format!("tag '{tag}'"),
            Pin::AsOf(ms) => format!("current at {}", instant(*ms)),
            Pin::All(pins) => pins
                .iter()
                .map(Pin::describe)
                .collect::<Vec<_>>()
                .join(" and "),
        }
    }
}

fn instant(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(|| ms.to_string(), |t| t.to_rfc3339())
}

/// What an answer was read from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Receipt {
    pub table: String,
    /// None: the table had no snapshot (an empty answer).
    pub snapshot_id: Option<i64>,
    pub committed_at_ms: Option<i64>,
    /// The log positions the snapshot covers: for each writer source, the next offset
    /// of each partition its newest snapshot at or before this one committed.
    pub log_offsets: BTreeMap<String, u64>,
}

impl Receipt {
    /// The receipt of `snapshot` of `table`.
    pub fn of(name: LakeTable, table: &Table, snapshot: Option<i64>) -> Result<Receipt> {
        let metadata = table.metadata();
        let mut receipt = Receipt {
            table: name.to_string(),
            snapshot_id: snapshot,
            committed_at_ms: None,
            log_offsets: BTreeMap::new(),
        };
        let mut at = snapshot.and_then(|id| metadata.snapshot_by_id(id));
        receipt.committed_at_ms = at.map(|s| s.timestamp_ms());
        let mut sources = std::collections::HashSet::new();
        while let Some(s) = at {
            if commit_marks::is_writer_commit(s)
                && sources.insert(commit_marks::source_of(s).to_string())
            {
                receipt.log_offsets.extend(commit_marks::offsets_of(s)?);
            }
            at = s
                .parent_snapshot_id()
                .and_then(|p| metadata.snapshot_by_id(p));
        }
        Ok(receipt)
    }

    /// One line for a terminal: `market_data.trades snapshot 123 committed … covering …`.
    pub fn line(&self) -> String {
        match self.snapshot_id {
            None => format!("{}: no snapshot yet (empty)", self.table),
            Some(id) => {
                let offsets: Vec<String> = self
                    .log_offsets
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                format!(
                    "{} snapshot {id} committed {}; log positions {}",
                    self.table,
                    self.committed_at_ms.map_or("?".into(), instant),
                    if offsets.is_empty() {
                        "(none recorded)".to_string()
                    } else {
                        offsets.join(" ")
                    }
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_argument_is_an_id_or_a_tag() {
        assert_eq!(
            Pin::snapshot("7486476158454372616"),
            Pin::Id(7486476158454372616)
        );
        assert_eq!(Pin::snapshot("-3"), Pin::Id(-3));
        assert_eq!(
            Pin::snapshot("eod-2014-03-14"),
            Pin::Named("eod-2014-03-14".into())
        );
    }
}
