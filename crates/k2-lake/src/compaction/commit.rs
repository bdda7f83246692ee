//! The `replace` snapshot of a compaction: the manifests holding replaced files written
//! again (those entries as deleted, the others as existing, every sequence number kept),
//! one manifest of the new files, a manifest list, and the commit, with the table's
//! current snapshot as its requirement.

use std::collections::{BTreeMap, HashMap, HashSet};

use iceberg::spec::{
    DataFile, FormatVersion, ManifestEntryRef, ManifestFile, ManifestListWriter,
    ManifestWriterBuilder, Operation, Snapshot, SnapshotReference, SnapshotRetention, Summary,
};
use iceberg::table::Table;
use iceberg::{Catalog, TableRequirement, TableUpdate};

use super::Bin;
use super::plan::{live_entries, manifests};
use crate::commit_marks;
use crate::error::{LakeError, Result};
use crate::table_commit::TableCommitter;
use crate::tables::LakeTable;
use crate::warehouse::Files;

/// Commits the replacement of `bins`' files by `written`; returns the new snapshot's id
/// and how many times a writer's commit came first.
pub(super) async fn commit(
    catalog: &dyn Catalog,
    committer: &TableCommitter,
    t: LakeTable,
    bins: &[Bin],
    written: &[DataFile],
    attempts: u32,
) -> Result<(i64, u32)> {
    let replaced: HashSet<&str> = bins
        .iter()
        .flat_map(|b| b.files.iter().map(|e| e.data_file().file_path()))
        .collect();
    let ident = t.ident();
    let mut retries = 0;
    loop {
        let table = catalog
            .load_table(&ident)
            .await
            .map_err(|e| LakeError::catalog(format!("loading {t}"), e))?;
        let built = build(&table, t, &replaced, written).await?;
        match committer
            .commit(&ident, built.requirements, built.updates)
            .await
        {
            Ok(_) => return Ok((built.snapshot_id, retries)),
            Err(e) => {
                // The manifests of an attempt that did not land are nobody's.
                discard(&table, &built.files).await;
                if matches!(e, LakeError::Conflict { .. }) && retries + 1 < attempts {
                    retries += 1;
                    tracing::info!(table = %t, retries, "a commit came first; building the compaction again on top of it");
                    continue;
                }
                return Err(e);
            }
        }
    }
}

struct Built {
    snapshot_id: i64,
    requirements: Vec<TableRequirement>,
    updates: Vec<TableUpdate>,
    /// Manifests and the manifest list written for it.
    files: Vec<String>,
}

async fn build(
    table: &Table,
    t: LakeTable,
    replaced: &HashSet<&str>,
    written: &[DataFile],
) -> Result<Built> {
    let metadata = table.metadata();
    let failed = |what: &str, e: iceberg::Error| LakeError::catalog(format!("{what} ({t})"), e);
    if metadata.format_version() != FormatVersion::V2 {
        return Err(LakeError::InvalidArgument(format!(
            "{t} is an Iceberg {:?} table: compaction writes V2 manifests",
            metadata.format_version()
        )));
    }
    let Some(current) = metadata.current_snapshot() else {
        return Err(LakeError::conflict(
            t,
            "the table has no snapshot to compact",
        ));
    };
    let manifests = manifests(table).await?;
    let mut by_manifest: BTreeMap<usize, Vec<ManifestEntryRef>> = BTreeMap::new();
    for (i, entry) in live_entries(table, &manifests).await? {
        by_manifest.entry(i).or_default().push(entry);
    }
    let found = by_manifest
        .values()
        .flatten()
        .filter(|e| replaced.contains(e.data_file().file_path()))
        .count();
    if found != replaced.len() {
        return Err(LakeError::conflict(
            t,
            "files to be replaced are no longer in the table (another compaction?)",
        ));
    }

    let snapshot_id = loop {
        let id = (uuid::Uuid::new_v4().as_u64_pair().0 >> 1) as i64;
        if id != 0 && metadata.snapshot_by_id(id).is_none() {
            break id;
        }
    };
    let sequence = metadata.next_sequence_number();
    let schema = metadata.current_schema().clone();
    let spec = metadata.default_partition_spec().as_ref().clone();
    let commit_id = uuid::Uuid::now_v7().simple().to_string();
    let meta_dir = format!("{}/metadata", metadata.location().trim_end_matches('/'));
    let mut files = Vec::new();
    let mut counter = 0;
    let mut new_manifest = |files: &mut Vec<String>| -> Result<ManifestWriterBuilder> {
        counter += 1;
        let path = format!("{meta_dir}/{commit_id}-m{counter}.avro");
        let output = table
            .file_io()
            .new_output(&path)
            .map_err(|e| failed("creating a manifest", e))?;
        files.push(path);
        Ok(ManifestWriterBuilder::new(
            output,
            Some(snapshot_id),
            schema.clone(),
            spec.clone(),
        ))
    };

    let mut totals = Totals::default();
    let mut kept: Vec<ManifestFile> = Vec::with_capacity(manifests.len() + 1);
    for (i, manifest) in manifests.into_iter().enumerate() {
        let entries = by_manifest.remove(&i).unwrap_or_default();
        totals.count_live(&entries);
        if !entries
            .iter()
            .any(|e| replaced.contains(e.data_file().file_path()))
        {
            kept.push(manifest);
            continue;
        }
        let mut writer = new_manifest(&mut files)?.build_v2_data();
        for entry in entries {
            let unset = || {
                LakeError::InvalidArgument(format!(
                    "{t}: a manifest entry without its sequence numbers"
                ))
            };
            let seq = entry.sequence_number().ok_or_else(unset)?;
            let file_seq = entry.file_sequence_number.ok_or_else(unset)?;
            let data_file = entry.data_file().clone();
            if replaced.contains(data_file.file_path()) {
                totals.deleted(&data_file);
                writer.add_delete_file(data_file, seq, Some(file_seq))
            } else {
                let added_by = entry.snapshot_id().ok_or_else(unset)?;
                writer.add_existing_file(data_file, added_by, seq, Some(file_seq))
            }
            .map_err(|e| failed("writing a manifest", e))?;
        }
        kept.push(
            writer
                .write_manifest_file()
                .await
                .map_err(|e| failed("writing a manifest", e))?,
        );
    }
    let mut writer = new_manifest(&mut files)?.build_v2_data();
    for file in written {
        totals.added(file);
        writer
            .add_file(file.clone(), sequence)
            .map_err(|e| failed("writing a manifest", e))?;
    }
    kept.push(
        writer
            .write_manifest_file()
            .await
            .map_err(|e| failed("writing a manifest", e))?,
    );

    let list_path = format!("{meta_dir}/snap-{snapshot_id}-1-{commit_id}.avro");
    let output = table
        .file_io()
        .new_output(&list_path)
        .map_err(|e| failed("creating the manifest list", e))?;
    files.push(list_path.clone());
    let mut list = ManifestListWriter::v2(
        output
            .writer()
            .await
            .map_err(|e| failed("creating the manifest list", e))?,
        snapshot_id,
        Some(current.snapshot_id()),
        sequence,
    );
    list.add_manifests(kept.into_iter())
        .map_err(|e| failed("writing the manifest list", e))?;
    list.close()
        .await
        .map_err(|e| failed("writing the manifest list", e))?;

    let mut properties = totals.summary();
    properties.extend(commit_marks::compaction_properties(
        totals.deleted_files,
        totals.added_files,
    ));
    let snapshot = Snapshot::builder()
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(Some(current.snapshot_id()))
        .with_sequence_number(sequence)
        .with_timestamp_ms(chrono::Utc::now().timestamp_millis())
        .with_manifest_list(list_path)
        .with_summary(Summary {
            operation: Operation::Replace,
            additional_properties: properties,
        })
        .with_schema_id(metadata.current_schema_id())
        .build();
    Ok(Built {
        snapshot_id,
        requirements: vec![
            TableRequirement::UuidMatch {
                uuid: metadata.uuid(),
            },
            TableRequirement::RefSnapshotIdMatch {
                r#ref: "main".into(),
                snapshot_id: Some(current.snapshot_id()),
            },
        ],
        updates: vec![
            TableUpdate::AddSnapshot { snapshot },
            TableUpdate::SetSnapshotRef {
                ref_name: "main".into(),
                reference: SnapshotReference::new(
                    snapshot_id,
                    SnapshotRetention::Branch {
                        min_snapshots_to_keep: None,
                        max_snapshot_age_ms: None,
                        max_ref_age_ms: None,
                    },
                ),
            },
        ],
        files,
    })
}

/// The snapshot summary's counts (the names every Iceberg implementation writes).
#[derive(Default)]
struct Totals {
    records: u64,
    files: u64,
    bytes: u64,
    added_files: usize,
    added_records: u64,
    added_bytes: u64,
    deleted_files: usize,
    deleted_records: u64,
    deleted_bytes: u64,
}

impl Totals {
    fn count_live(&mut self, entries: &[ManifestEntryRef]) {
        for e in entries {
            self.records += e.record_count();
            self.files += 1;
            self.bytes += e.file_size_in_bytes();
        }
    }

    fn added(&mut self, f: &DataFile) {
        self.added_files += 1;
        self.added_records += f.record_count();
        self.added_bytes += f.file_size_in_bytes();
    }

    fn deleted(&mut self, f: &DataFile) {
        self.deleted_files += 1;
        self.deleted_records += f.record_count();
        self.deleted_bytes += f.file_size_in_bytes();
    }

    fn summary(&self) -> HashMap<String, String> {
        let total = |live: u64, added: u64, deleted: u64| (live + added - deleted).to_string();
        HashMap::from([
            ("added-data-files".into(), self.added_files.to_string()),
            ("deleted-data-files".into(), self.deleted_files.to_string()),
            ("added-records".into(), self.added_records.to_string()),
            ("deleted-records".into(), self.deleted_records.to_string()),
            ("added-files-size".into(), self.added_bytes.to_string()),
            ("removed-files-size".into(), self.deleted_bytes.to_string()),
            (
                "total-records".into(),
                total(self.records, self.added_records, self.deleted_records),
            ),
            (
                "total-data-files".into(),
                total(
                    self.files,
                    self.added_files as u64,
                    self.deleted_files as u64,
                ),
            ),
            (
                "total-files-size".into(),
                total(self.bytes, self.added_bytes, self.deleted_bytes),
            ),
            ("total-delete-files".into(), "0".into()),
            ("total-position-deletes".into(), "0".into()),
            ("total-equality-deletes".into(), "0".into()),
        ])
    }
}

async fn discard(table: &Table, paths: &[String]) {
    let Ok(store) = Files::of(table.file_io(), table.metadata().location()) else {
        return;
    };
    for p in paths {
        if let Ok(path) = store.path(p) {
            let _ = store.delete(&path).await;
        }
    }
}
