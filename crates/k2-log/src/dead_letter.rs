//! The dead-letter store: every rejected record, with its raw bytes, where it came from,
//! what kind of error it hit and why. A redb file in the data directory, bounded in
//! entries (the oldest are dropped first) and idempotent: a record rejected twice at the
//! same source position is stored once.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::{LogError, Result};
use crate::metrics;
use crate::store::{failed, open_shared, reading, table};

const BY_SEQ: TableDefinition<u64, &str> = TableDefinition::new("dead_letters_by_seq");
const BY_SOURCE: TableDefinition<&str, &[u8]> = TableDefinition::new("dead_letters");

/// Stage of the lake writer's rejections: payloads it could not decode.
pub const LAKE_DECODE_STAGE: &str = "lake.decode";

/// A rejected record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Pipeline stage that rejected it, e.g. `ingest.asx`, `lake.decode`.
    pub stage: String,
    /// Where the record came from: `trades/7078.csv:42` or `market.equities.trades.asx/0@17`.
    pub source: String,
    /// Error kind from a closed set (`column_count`, `number`, `date`, `negative_price`, …).
    pub kind: String,
    /// Human-readable reason.
    pub reason: String,
    /// The raw record as received.
    #[serde(with = "raw_text")]
    pub raw: Vec<u8>,
    /// When it was rejected, microseconds since the epoch.
    pub rejected_at_us: i64,
}

mod raw_text {
    //! Raw bytes as text when they are UTF-8 (CSV lines are), else as a list of numbers.
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Bytes(Vec<u8>),
    }

    pub fn serialize<S: Serializer>(raw: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(raw) {
            Ok(text) => Raw::Text(text.to_string()).serialize(s),
            Err(_) => Raw::Bytes(raw.to_vec()).serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Ok(match Raw::deserialize(d)? {
            Raw::Text(t) => t.into_bytes(),
            Raw::Bytes(b) => b,
        })
    }
}

fn source_key(letter: &DeadLetter) -> String {
    format!("{}\u{0}{}", letter.stage, letter.source)
}

fn parse(key: &str, json: &[u8]) -> Result<DeadLetter> {
    serde_json::from_slice(json).map_err(|e| LogError::Corrupt(format!("dead letter {key}: {e}")))
}

/// What [`DeadLetterStore::census`] counts.
#[derive(Debug, Default)]
pub struct Census {
    /// Letters stored.
    pub total: u64,
    /// Letters per (stage, kind).
    pub by_reason: std::collections::BTreeMap<(String, String), u64>,
    /// The newest letters asked for, with their ids, newest first.
    pub newest: Vec<(u64, DeadLetter)>,
}

/// The store. Cheap to clone.
#[derive(Clone)]
pub struct DeadLetterStore {
    db: Arc<Database>,
    max_entries: u64,
}

impl DeadLetterStore {
    pub fn open(path: &Path, max_entries: u64) -> Result<Self> {
        let db = open_shared(path, "dead-letter store", 8 * 1024 * 1024)?;
        let txn = db
            .begin_write()
            .map_err(|e| LogError::storage("initialising dead-letter store", e))?;
        txn.open_table(BY_SEQ)
            .map_err(|e| LogError::storage("initialising dead-letter store", e))?;
        txn.open_table(BY_SOURCE)
            .map_err(|e| LogError::storage("initialising dead-letter store", e))?;
        txn.commit()
            .map_err(|e| LogError::storage("initialising dead-letter store", e))?;
        Ok(DeadLetterStore {
            db: Arc::new(db),
            max_entries: max_entries.max(1),
        })
    }

    /// Stores the letters durably; returns how many were new (not already stored).
    pub fn append(&self, letters: &[DeadLetter]) -> Result<usize> {
        if letters.is_empty() {
            return Ok(0);
        }
        let err = |e: redb::Error| LogError::storage("writing dead letters", e);
        let txn = self.db.begin_write().map_err(|e| err(e.into()))?;
        let mut added = 0;
        {
            let mut by_seq = txn.open_table(BY_SEQ).map_err(|e| err(e.into()))?;
            let mut by_source = txn.open_table(BY_SOURCE).map_err(|e| err(e.into()))?;
            let mut next = by_seq
                .last()
                .map_err(|e| err(e.into()))?
                .map_or(0, |(k, _)| k.value() + 1);
            for letter in letters {
                let key = source_key(letter);
                if by_source
                    .get(key.as_str())
                    .map_err(|e| err(e.into()))?
                    .is_some()
                {
                    continue;
                }
                let json = serde_json::to_vec(letter).expect("dead letter serialises");
                by_source
                    .insert(key.as_str(), json.as_slice())
                    .map_err(|e| err(e.into()))?;
                by_seq
                    .insert(next, key.as_str())
                    .map_err(|e| err(e.into()))?;
                next += 1;
                added += 1;
                metrics::dead_lettered(&letter.stage, &letter.kind);
            }
            // Rotate: drop the oldest beyond the cap.
            while by_seq.len().map_err(|e| err(e.into()))? > self.max_entries {
                let Some((_, key)) = by_seq.pop_first().map_err(|e| err(e.into()))? else {
                    break;
                };
                by_source.remove(key.value()).map_err(|e| err(e.into()))?;
            }
        }
        txn.commit().map_err(|e| err(e.into()))?;
        Ok(added)
    }

    /// Number of stored letters.
    pub fn len(&self) -> Result<u64> {
        const WHAT: &str = "reading dead letters";
        let txn = reading(&self.db, WHAT)?;
        match table(&txn, BY_SEQ, WHAT)? {
            Some(by_seq) => by_seq.len().map_err(failed(WHAT)),
            None => Ok(0),
        }
    }

    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Up to `limit` letters with their ids, oldest first, skipping the first `skip`.
    pub fn list(&self, skip: usize, limit: usize) -> Result<Vec<(u64, DeadLetter)>> {
        const WHAT: &str = "reading dead letters";
        let txn = reading(&self.db, WHAT)?;
        let (Some(by_seq), Some(by_source)) =
            (table(&txn, BY_SEQ, WHAT)?, table(&txn, BY_SOURCE, WHAT)?)
        else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in by_seq.iter().map_err(failed(WHAT))?.skip(skip).take(limit) {
            let (id, key) = entry.map_err(failed(WHAT))?;
            if let Some(json) = by_source.get(key.value()).map_err(failed(WHAT))? {
                out.push((id.value(), parse(key.value(), json.value())?));
            }
        }
        Ok(out)
    }

    /// The letter with this id, if it is still stored.
    pub fn get(&self, id: u64) -> Result<Option<DeadLetter>> {
        const WHAT: &str = "reading dead letters";
        let txn = reading(&self.db, WHAT)?;
        let (Some(by_seq), Some(by_source)) =
            (table(&txn, BY_SEQ, WHAT)?, table(&txn, BY_SOURCE, WHAT)?)
        else {
            return Ok(None);
        };
        let Some(key) = by_seq.get(id).map_err(failed(WHAT))? else {
            return Ok(None);
        };
        match by_source.get(key.value()).map_err(failed(WHAT))? {
            Some(json) => Ok(Some(parse(key.value(), json.value())?)),
            None => Ok(None),
        }
    }

    /// Letters per (stage, kind), and the newest `limit` letters (of `kind` when given),
    /// newest first, from one read of the store. The counts read only each letter's stage
    /// and kind.
    pub fn census(&self, kind: Option<&str>, limit: usize) -> Result<Census> {
        const WHAT: &str = "reading dead letters";
        #[derive(Deserialize)]
        struct Reason {
            stage: String,
            kind: String,
        }
        let txn = reading(&self.db, WHAT)?;
        let mut census = Census::default();
        let (Some(by_seq), Some(by_source)) =
            (table(&txn, BY_SEQ, WHAT)?, table(&txn, BY_SOURCE, WHAT)?)
        else {
            return Ok(census);
        };
        for entry in by_seq.iter().map_err(failed(WHAT))?.rev() {
            let (id, key) = entry.map_err(failed(WHAT))?;
            let Some(json) = by_source.get(key.value()).map_err(failed(WHAT))? else {
                continue;
            };
            let r: Reason = serde_json::from_slice(json.value())
                .map_err(|e| LogError::Corrupt(format!("dead letter {}: {e}", key.value())))?;
            census.total += 1;
            if census.newest.len() < limit && kind.is_none_or(|k| k == r.kind) {
                census
                    .newest
                    .push((id.value(), parse(key.value(), json.value())?));
            }
            *census.by_reason.entry((r.stage, r.kind)).or_default() += 1;
        }
        Ok(census)
    }

    /// Removes letters (e.g. those a replay got through); returns how many were stored.
    pub fn remove(&self, ids: &[u64]) -> Result<usize> {
        let err = |e: redb::Error| LogError::storage("removing dead letters", e);
        let txn = self.db.begin_write().map_err(|e| err(e.into()))?;
        let mut removed = 0;
        {
            let mut by_seq = txn.open_table(BY_SEQ).map_err(|e| err(e.into()))?;
            let mut by_source = txn.open_table(BY_SOURCE).map_err(|e| err(e.into()))?;
            for &id in ids {
                if let Some(key) = by_seq.remove(id).map_err(|e| err(e.into()))? {
                    by_source.remove(key.value()).map_err(|e| err(e.into()))?;
                    removed += 1;
                }
            }
        }
        txn.commit().map_err(|e| err(e.into()))?;
        Ok(removed)
    }

    /// Rewrites a stored letter in place (same id and source), e.g. with the reason a
    /// replay found now.
    pub fn update(&self, id: u64, letter: &DeadLetter) -> Result<bool> {
        let err = |e: redb::Error| LogError::storage("updating a dead letter", e);
        let txn = self.db.begin_write().map_err(|e| err(e.into()))?;
        let found = {
            let by_seq = txn.open_table(BY_SEQ).map_err(|e| err(e.into()))?;
            let mut by_source = txn.open_table(BY_SOURCE).map_err(|e| err(e.into()))?;
            let key = by_seq
                .get(id)
                .map_err(|e| err(e.into()))?
                .map(|k| k.value().to_string());
            match key {
                Some(key) if key == source_key(letter) => {
                    let json = serde_json::to_vec(letter).expect("dead letter serialises");
                    by_source
                        .insert(key.as_str(), json.as_slice())
                        .map_err(|e| err(e.into()))?;
                    true
                }
                Some(key) => {
                    return Err(LogError::Corrupt(format!(
                        "dead letter {id} is {key:?}, not {:?}",
                        source_key(letter)
                    )));
                }
                None => false,
            }
        };
        txn.commit().map_err(|e| err(e.into()))?;
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(source: &str) -> DeadLetter {
        DeadLetter {
            stage: "ingest.asx".into(),
            source: source.into(),
            kind: "number".into(),
            reason: "price 'x' is not a decimal number".into(),
            raw: b"03/10/2014,10:00:00.000,x,1,0,,".to_vec(),
            rejected_at_us: 1,
        }
    }

    #[test]
    fn stores_once_per_source_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeadLetterStore::open(&dir.path().join("dlq.redb"), 3).unwrap();
        assert_eq!(store.append(&[letter("a:1"), letter("a:2")]).unwrap(), 2);
        assert_eq!(
            store.append(&[letter("a:1")]).unwrap(),
            0,
            "same source is not stored twice"
        );
        store.append(&[letter("a:3"), letter("a:4")]).unwrap();
        assert_eq!(store.len().unwrap(), 3);
        let sources: Vec<_> = store
            .list(0, 10)
            .unwrap()
            .into_iter()
            .map(|(_, l)| l.source)
            .collect();
        assert_eq!(
            sources,
            ["a:2", "a:3", "a:4"],
            "the oldest is dropped first"
        );
        let (id, first) = store.list(0, 1).unwrap().remove(0);
        assert_eq!(first.raw, letter("x").raw);
        assert_eq!(store.get(id).unwrap(), Some(first.clone()));

        let mut changed = first.clone();
        changed.reason = "still not a number".into();
        assert!(store.update(id, &changed).unwrap());
        assert_eq!(store.get(id).unwrap().unwrap().reason, "still not a number");
        assert!(
            store.update(id, &letter("a:9")).is_err(),
            "another source's id"
        );

        assert_eq!(store.remove(&[id, 999]).unwrap(), 1);
        assert_eq!(store.get(id).unwrap(), None);
        assert_eq!(store.len().unwrap(), 2);
        assert_eq!(
            store.append(&[first]).unwrap(),
            1,
            "a removed source can be dead-lettered again"
        );
    }
}
