//! Snapshot retention: what the lake keeps for time travel, and the table metadata it lets
//! go.
//!
//! Every commit adds a snapshot, and the table's metadata file lists every snapshot kept,
//! so without expiry that file grows by a snapshot per commit and is written anew at each
//! commit: at a 10 s commit interval, 8 640 snapshots a day, and the day's metadata files
//! add up to tens of GB. Expiry keeps the snapshots younger than the retention (time travel
//! reaches that far back), and always those the writer restarts from.
//!
//! What is kept, walking back from the current snapshot:
//! - every snapshot younger than the retention, and the current one however old;
//! - each writer source's newest snapshot, and everything between it and the current one:
//!   its log positions and integrity state are what a restart resumes from
//!   ([`crate::commit_marks::source_snapshot`] walks back to it), so the kept history is one
//!   unbroken run from the current snapshot.
//!
//! Then the files only the expired snapshots used are deleted: their manifest lists, and
//! metadata files older than the oldest one the table's metadata log still names. Data
//! files and manifests stay: the lake only appends, so every data file of an expired
//! snapshot is still in the current one.
//!
//! A writer stopped between writing a batch's files and committing them (killed, or the
//! machine lost) leaves data files no snapshot names; its next run writes the batch again.
//! [`remove_orphan_files`] deletes such files once they are older than the retention: a
//! file that young may be a commit still in flight, its own writer's or another's.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use iceberg::Catalog;
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};

use crate::commit_marks;
use crate::error::{LakeError, Result};

/// What one expiry removed.
#[derive(Debug, Default, PartialEq)]
pub struct Expired {
    pub snapshots: usize,
    /// Manifest lists and metadata files deleted.
    pub files: usize,
}

/// The snapshots to expire: the part of the current snapshot's ancestry older than
/// `keep_for` and past every writer source's newest snapshot (oldest last). Empty when
/// nothing is due.
pub fn due(table: &Table, keep_for: Duration, now_ms: i64) -> Vec<i64> {
    let metadata = table.metadata();
    let mut chain = Vec::new();
    let mut at = metadata.current_snapshot();
    while let Some(s) = at {
        chain.push(s);
        at = s
            .parent_snapshot_id()
            .and_then(|p| metadata.snapshot_by_id(p));
    }
    let cutoff = now_ms.saturating_sub(keep_for.as_millis() as i64);
    // The last index kept: the current snapshot, the young enough, and each source's
    // newest snapshot (its first on the way back).
    let mut keep = 0;
    let mut sources = HashSet::new();
    for (i, s) in chain.iter().enumerate() {
        let source = commit_marks::source_of(s);
        let newest_of_its_source = sources.insert(source);
        if s.timestamp_ms() >= cutoff || newest_of_its_source {
            keep = keep.max(i);
        }
    }
    chain
        .iter()
        .skip(keep + 1)
        .map(|s| s.snapshot_id())
        .collect()
}

/// Expires what [`due`] names and deletes the files only those snapshots used; returns
/// the table as committed and what went. Nothing is committed when nothing is due.
pub async fn expire(
    catalog: &dyn Catalog,
    table: &Table,
    keep_for: Duration,
    now_ms: i64,
) -> Result<(Table, Expired)> {
    let ids = due(table, keep_for, now_ms);
    if ids.is_empty() {
        return Ok((table.clone(), Expired::default()));
    }
    let before = table.metadata();
    let manifest_lists: Vec<String> = ids
        .iter()
        .filter_map(|&id| before.snapshot_by_id(id))
        .map(|s| s.manifest_list().to_string())
        .collect();
    let name = table.identifier().to_string();
    let tx = Transaction::new(table);
    // Only the named snapshots: the action's own age rule (the table's
    // `history.expire.*` properties) is turned off by a cutoff before any snapshot.
    let action = tx
        .expire_snapshots()
        .expire_snapshot_ids(ids.iter().copied())
        .expire_older_than_ms(i64::MIN);
    let tx = action
        .apply(tx)
        .map_err(|e| LakeError::catalog(format!("expiring snapshots of {name}"), e))?;
    let after = tx
        .commit(catalog)
        .await
        .map_err(|e| LakeError::catalog(format!("expiring snapshots of {name}"), e))?;
    let mut files = 0;
    for list in &manifest_lists {
        files += usize::from(remove_file(Path::new(local_path(list)))?);
    }
    files += remove_old_metadata(&after)?;
    let expired = Expired {
        snapshots: ids.len(),
        files,
    };
    tracing::info!(
        table = %name,
        snapshots = expired.snapshots,
        files = expired.files,
        kept = after.metadata().snapshots().count(),
        "expired snapshots"
    );
    Ok((after, expired))
}

/// Metadata files of the table older than the oldest its metadata log names (each file
/// starts with its version number; a file with a higher version than the current one may
/// be another writer's commit in progress, and is left alone).
fn remove_old_metadata(table: &Table) -> Result<usize> {
    let metadata = table.metadata();
    let version = |path: &str| -> Option<u64> {
        let file = path.rsplit('/').next()?;
        file.strip_suffix(".metadata.json")?
            .split_once('-')?
            .0
            .parse()
            .ok()
    };
    let mut named: BTreeMap<u64, &str> = BTreeMap::new();
    for entry in metadata.metadata_log() {
        if let Some(v) = version(&entry.metadata_file) {
            named.insert(v, &entry.metadata_file);
        }
    }
    if let Some(current) = table.metadata_location()
        && let Some(v) = version(current)
    {
        named.insert(v, current);
    }
    let Some((&oldest, path)) = named.iter().next() else {
        return Ok(0);
    };
    let dir = Path::new(local_path(path))
        .parent()
        .expect("a metadata file is in a directory");
    let mut removed = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(LakeError::io(format!("listing {}", dir.display()), e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| LakeError::io(format!("listing {}", dir.display()), e))?;
        let file = entry.file_name();
        if version(&file.to_string_lossy()).is_some_and(|v| v < oldest) {
            removed += usize::from(remove_file(&entry.path())?);
        }
    }
    Ok(removed)
}

/// Deletes the files under the table's `data/` directory that the current snapshot does not
/// name and that were last written more than `grace` before `now`; returns how many.
/// The table only appends, so the current snapshot names every data file any snapshot
/// does. Manifests are read only when some file is old enough to be a candidate.
pub async fn remove_orphan_files(table: &Table, grace: Duration, now: SystemTime) -> Result<usize> {
    let metadata = table.metadata();
    let data = Path::new(local_path(metadata.location())).join("data");
    let mut old = Vec::new();
    old_files(
        &data,
        now.checked_sub(grace).unwrap_or(SystemTime::UNIX_EPOCH),
        &mut old,
    )?;
    if old.is_empty() {
        return Ok(0);
    }
    let name = table.identifier().to_string();
    let read =
        |e: iceberg::Error| LakeError::catalog(format!("reading the manifests of {name}"), e);
    let mut named = HashSet::new();
    if let Some(snapshot) = metadata.current_snapshot() {
        let list = table
            .manifest_list_reader(snapshot)
            .load()
            .await
            .map_err(read)?;
        let loads: Vec<_> = list
            .consume_entries()
            .into_iter()
            .map(|m| {
                let io = table.file_io().clone();
                async move { m.load_manifest(&io).await }
            })
            .collect();
        let mut manifests = futures::stream::iter(loads).buffered(16);
        while let Some(manifest) = manifests.next().await {
            for entry in manifest.map_err(read)?.entries() {
                named.insert(PathBuf::from(local_path(entry.data_file().file_path())));
            }
        }
    }
    // A name outside the directory means the paths are not understood: delete nothing.
    if let Some(outside) = named.iter().find(|p| !p.starts_with(&data)) {
        return Err(LakeError::InvalidArgument(format!(
            "{name} names {} outside {}: its unnamed files are left alone",
            outside.display(),
            data.display()
        )));
    }
    let mut removed = 0;
    for path in old.iter().filter(|p| !named.contains(*p)) {
        tracing::warn!(table = %name, file = %path.display(), "deleting a data file no snapshot names");
        removed += usize::from(remove_file(path)?);
    }
    Ok(removed)
}

/// The files under `dir`, at any depth, last modified before `before`.
pub fn old_files(dir: &Path, before: SystemTime, out: &mut Vec<PathBuf>) -> Result<()> {
    let listing = |e| LakeError::io(format!("listing {}", dir.display()), e);
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(listing(e)),
    };
    for entry in entries {
        let entry = entry.map_err(listing)?;
        let meta = entry.metadata().map_err(listing)?;
        if meta.is_dir() {
            old_files(&entry.path(), before, out)?;
        } else if meta.modified().map_err(listing)? < before {
            out.push(entry.path());
        }
    }
    Ok(())
}

/// A location of the local warehouse as a path (`file:` prefix dropped).
pub fn local_path(location: &str) -> &str {
    location
        .strip_prefix("file://")
        .or_else(|| location.strip_prefix("file:"))
        .unwrap_or(location)
}

/// Deletes a file; false if it was already gone.
fn remove_file(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(LakeError::io(format!("deleting {}", path.display()), e)),
    }
}
