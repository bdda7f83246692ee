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
//!   unbroken run from the current snapshot;
//! - every tagged snapshot (`k2 snapshot tag`), until its tag is removed.
//!
//! Then the files only the expired snapshots used are deleted: their manifest lists, and
//! metadata files older than the oldest one the table's metadata log still names. Writers
//! only append, so a data file of an expired snapshot is still in its successor — unless
//! that successor is a compaction's `replace` snapshot, which no longer names the files it
//! rewrote (nor the manifests it wrote again). Those go once the snapshot before the
//! compaction expires, and only if no snapshot still kept from before it (a tagged one)
//! names them: time travel to any kept snapshot always finds its files.
//!
//! A writer stopped between writing a batch's files and committing them (killed, or the
//! machine lost) leaves data files no snapshot names; its next run writes the batch again.
//! [`remove_orphan_files`] deletes such files once they are older than the retention: a
//! file that young may be a commit still in flight, its own writer's or another's.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use iceberg::Catalog;
use iceberg::spec::{ManifestStatus, Operation, SnapshotRef};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};

use crate::commit_marks;
use crate::error::{LakeError, Result};
use crate::warehouse::Files;

/// What one expiry removed.
#[derive(Debug, Default, PartialEq)]
pub struct Expired {
    pub snapshots: usize,
    /// Manifest lists and metadata files deleted, and the data files and manifests of
    /// compactions no kept snapshot names any more.
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
        let newest_of_its_source =
            commit_marks::is_writer_commit(s) && sources.insert(commit_marks::source_of(s));
        if s.timestamp_ms() >= cutoff || newest_of_its_source {
            keep = keep.max(i);
        }
    }
    // A tagged snapshot stays until its tag is removed.
    let tagged: HashSet<i64> = crate::query::tags(table)
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    chain
        .iter()
        .skip(keep + 1)
        .map(|s| s.snapshot_id())
        .filter(|id| !tagged.contains(id))
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
    // Compactions whose previous snapshot goes now: what they replaced may go with it.
    let mut superseded = Vec::new();
    for replace in before.snapshots().filter(|s| {
        s.summary().operation == Operation::Replace
            && s.parent_snapshot_id().is_some_and(|p| ids.contains(&p))
    }) {
        let parent = replace
            .parent_snapshot_id()
            .and_then(|p| before.snapshot_by_id(p))
            .expect("the parent is one of the table's snapshots");
        superseded.push(Superseded::of(table, replace, parent).await?);
    }
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
    let store = Files::of(after.file_io(), after.metadata().location())?;
    let mut files = 0;
    for list in &manifest_lists {
        store.delete(&store.path(list)?).await?;
        files += 1;
    }
    files += remove_old_metadata(&store, &after).await?;
    for s in superseded {
        files += s.remove(&store, &after).await?;
    }
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

/// What a compaction took out of the table: the data files it replaced and the manifests
/// it wrote again, still named by the snapshots before it.
struct Superseded {
    sequence_number: i64,
    data_files: HashSet<String>,
    manifests: HashSet<String>,
}

impl Superseded {
    async fn of(table: &Table, replace: &SnapshotRef, parent: &SnapshotRef) -> Result<Superseded> {
        let after = manifest_paths(table, replace).await?;
        let mut manifests: HashSet<String> =
            manifest_paths(table, parent).await?.into_iter().collect();
        for m in &after {
            manifests.remove(m);
        }
        let mut data_files = HashSet::new();
        let list = load_list(table, replace).await?;
        for m in list.entries().iter().filter(|m| m.has_deleted_files()) {
            let manifest = m
                .load_manifest(table.file_io())
                .await
                .map_err(|e| read_error(table, e))?;
            for entry in manifest.entries() {
                if entry.status() == ManifestStatus::Deleted
                    && entry.snapshot_id() == Some(replace.snapshot_id())
                {
                    data_files.insert(entry.data_file().file_path().to_string());
                }
            }
        }
        Ok(Superseded {
            sequence_number: replace.sequence_number(),
            data_files,
            manifests,
        })
    }

    /// Deletes what no snapshot of `table` from before the compaction still names (the
    /// later ones descend from the compaction and never do); returns how many files.
    async fn remove(mut self, store: &Files, table: &Table) -> Result<usize> {
        let metadata = table.metadata();
        for kept in metadata
            .snapshots()
            .filter(|s| s.sequence_number() < self.sequence_number)
        {
            for path in manifest_paths(table, kept).await? {
                self.manifests.remove(&path);
            }
            for path in live_files(table, kept).await? {
                self.data_files.remove(&path);
            }
        }
        let mut removed = 0;
        for path in self.data_files.iter().chain(&self.manifests) {
            store.delete(&store.path(path)?).await?;
            removed += 1;
        }
        Ok(removed)
    }
}

fn read_error(table: &Table, e: iceberg::Error) -> LakeError {
    LakeError::catalog(
        format!("reading the manifests of {}", table.identifier()),
        e,
    )
}

async fn load_list(table: &Table, snapshot: &SnapshotRef) -> Result<iceberg::spec::ManifestList> {
    table
        .manifest_list_reader(snapshot)
        .load()
        .await
        .map_err(|e| read_error(table, e))
}

async fn manifest_paths(table: &Table, snapshot: &SnapshotRef) -> Result<Vec<String>> {
    Ok(load_list(table, snapshot)
        .await?
        .entries()
        .iter()
        .map(|m| m.manifest_path.clone())
        .collect())
}

/// The data files `snapshot` names as live.
async fn live_files(table: &Table, snapshot: &SnapshotRef) -> Result<HashSet<String>> {
    let loads: Vec<_> = load_list(table, snapshot)
        .await?
        .consume_entries()
        .into_iter()
        .map(|m| {
            let io = table.file_io().clone();
            async move { m.load_manifest(&io).await }
        })
        .collect();
    let mut manifests = futures::stream::iter(loads).buffered(16);
    let mut named = HashSet::new();
    while let Some(manifest) = manifests.next().await {
        for entry in manifest.map_err(|e| read_error(table, e))?.entries() {
            if entry.is_alive() {
                named.insert(entry.data_file().file_path().to_string());
            }
        }
    }
    Ok(named)
}

/// Metadata files of the table older than the oldest its metadata log names (each file
/// starts with its version number; a file with a higher version than the current one may
/// be another writer's commit in progress, and is left alone).
async fn remove_old_metadata(store: &Files, table: &Table) -> Result<usize> {
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
    let (dir, _) = path
        .rsplit_once('/')
        .expect("a metadata file is in a directory");
    let mut removed = 0;
    // Every file there (the cutoff is in the future): the version decides, not the age.
    let everything = SystemTime::now() + Duration::from_secs(86_400);
    for file in store.older_than(dir, everything).await? {
        if file
            .filename()
            .and_then(version)
            .is_some_and(|v| v < oldest)
        {
            store.delete(&file).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Deletes the files under the table's `data/` directory that no snapshot names and that
/// were last written more than `grace` before `now`; returns how many. Manifests are read
/// only when some file is old enough to be a candidate.
pub async fn remove_orphan_files(table: &Table, grace: Duration, now: SystemTime) -> Result<usize> {
    let metadata = table.metadata();
    let store = Files::of(table.file_io(), metadata.location())?;
    let data_dir = format!("{}/data", metadata.location().trim_end_matches('/'));
    let data = store.path(&data_dir)?;
    let old = store
        .older_than(
            &data_dir,
            now.checked_sub(grace).unwrap_or(SystemTime::UNIX_EPOCH),
        )
        .await?;
    if old.is_empty() {
        return Ok(0);
    }
    let name = table.identifier().to_string();
    // Writers only append: the current snapshot names every file the snapshots since the
    // newest compaction name; those from before it are read too.
    let newest_compaction = metadata
        .snapshots()
        .filter(|s| s.summary().operation == Operation::Replace)
        .map(|s| s.sequence_number())
        .max();
    let mut named = HashSet::new();
    let snapshots: Vec<SnapshotRef> = metadata
        .snapshots()
        .filter(|s| {
            metadata.current_snapshot_id() == Some(s.snapshot_id())
                || newest_compaction.is_some_and(|n| s.sequence_number() < n)
        })
        .cloned()
        .collect();
    for snapshot in &snapshots {
        for file in live_files(table, snapshot).await? {
            named.insert(store.path(&file)?);
        }
    }
    // A name outside the directory means the paths are not understood: delete nothing.
    if let Some(outside) = named.iter().find(|p| !p.prefix_matches(&data)) {
        return Err(LakeError::InvalidArgument(format!(
            "{name} names {} outside {data_dir}: its unnamed files are left alone",
            store.location(outside),
        )));
    }
    let mut removed = 0;
    for path in old.iter().filter(|p| !named.contains(*p)) {
        tracing::warn!(table = %name, file = %store.location(path), "deleting a data file no snapshot names");
        store.delete(path).await?;
        removed += 1;
    }
    Ok(removed)
}
