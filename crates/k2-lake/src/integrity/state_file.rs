//! The sequence state of a table as of one commit: a JSON file under `state/<table>/`,
//! written durably before the commit and named in its snapshot. A crash between the file
//! and the commit leaves a file no snapshot names; the next commit removes it, and a
//! restart reads the file the committed snapshot names.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{LakeError, Result};

/// What the file holds.
#[derive(Serialize, Deserialize)]
pub(super) struct StateFile {
    pub table: String,
    /// The batch whose commit this state belongs to.
    pub batch: String,
    /// The sequence tracker's snapshot (null when the streams' state lives in Redis).
    pub sequence: serde_json::Value,
    /// Duplicates dropped per (exchange, symbol) stream since the table began.
    pub duplicates: Vec<(String, String, u64)>,
}

/// The file name of a batch's state.
fn name(batch: &str) -> String {
    format!("sequence-{batch}.json")
}

fn io(what: &str, path: &Path, source: std::io::Error) -> LakeError {
    LakeError::io(format!("{what} {}", path.display()), source)
}

/// Writes `state` into `dir` durably (file and directory synced); returns the file name
/// the snapshot records.
pub(super) fn write(dir: &Path, state: &StateFile) -> Result<String> {
    std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
    let name = name(&state.batch);
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(&name);
    {
        let mut f = std::fs::File::create(&tmp).map_err(|e| io("creating", &tmp, e))?;
        f.write_all(&serde_json::to_vec(state).expect("state serialises"))
            .and_then(|()| f.sync_all())
            .map_err(|e| io("writing", &tmp, e))?;
    }
    std::fs::rename(&tmp, &path).map_err(|e| io("renaming", &tmp, e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("syncing", dir, e))?;
    Ok(name)
}

/// The state in `dir/file`; None when the file is missing.
pub(super) fn read(dir: &Path, file: &str) -> Result<Option<(PathBuf, StateFile)>> {
    let path = dir.join(file);
    match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(state) => Ok(Some((path, state))),
            Err(e) => Err(LakeError::CorruptFile {
                path,
                detail: e.to_string(),
            }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("reading", &path, e)),
    }
}

/// Files kept besides the one the current snapshot names: a reader of the completeness
/// ledger that loaded the table's metadata just before a commit still finds the file its
/// snapshot names.
const KEPT_BEFORE: usize = 4;

/// After the commit of `batch`: the files before it go, but the [`KEPT_BEFORE`] newest
/// (older commits' states, and orphans of a crash before a commit).
pub(super) fn prune(dir: &Path, batch: &str) {
    let keep = name(batch);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut others: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| e.file_name() != keep.as_str())
        .map(|e| {
            let modified = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (modified, e.path())
        })
        .collect();
    others.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
    for (_, path) in others.into_iter().skip(KEPT_BEFORE) {
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(file = %path.display(), error = %e, "could not remove old state");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(batch: &str) -> StateFile {
        StateFile {
            table: "trades".into(),
            batch: batch.into(),
            sequence: serde_json::json!({"streams": []}),
            duplicates: vec![("ASX".into(), "BHP".into(), 3)],
        }
    }

    #[test]
    fn a_written_state_reads_back_and_the_oldest_go_after_a_commit() {
        let dir = tempfile::tempdir().unwrap();
        let first = write(dir.path(), &state("aa")).unwrap();
        let (_, back) = read(dir.path(), &first).unwrap().unwrap();
        assert_eq!((back.batch.as_str(), back.duplicates.len()), ("aa", 1));
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(dir.path().join(&first))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let names: Vec<String> = ["bb", "cc", "dd", "ee", "ff"]
            .iter()
            .map(|b| write(dir.path(), &state(b)).unwrap())
            .collect();
        assert_eq!(names[0], "sequence-bb.json");
        prune(dir.path(), "ff");
        // The oldest of the five before went; the current and the four newest stay.
        assert!(read(dir.path(), &first).unwrap().is_none());
        for name in &names {
            assert!(read(dir.path(), name).unwrap().is_some(), "{name}");
        }
    }

    #[test]
    fn an_unreadable_state_is_named_and_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sequence-cc.json"), b"{not json").unwrap();
        let err = read(dir.path(), "sequence-cc.json").err().unwrap();
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("sequence-cc.json"), "{err}");
    }
}
