//! Which files to rewrite: the live data files of the current snapshot, by partition; in a
//! partition with at least `min_files` files under 3/4 of the target size, those files in
//! bins of at most the target size (a bin of one file would only copy it).

use std::collections::BTreeMap;

use futures::StreamExt;
use iceberg::spec::{
    DataContentType, Literal, ManifestContentType, ManifestEntryRef, ManifestFile,
    PrimitiveLiteral, Struct,
};
use iceberg::table::Table;

use super::CompactOptions;
use crate::error::{LakeError, Result};

/// Files rewritten together into files of the target size.
#[derive(Clone, Debug)]
pub struct Bin {
    /// The partition's UTC day (days since 1970-01-01); None for rows without a time.
    pub day: Option<i32>,
    pub partition: Struct,
    pub files: Vec<ManifestEntryRef>,
}

impl Bin {
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|e| e.file_size_in_bytes()).sum()
    }

    pub fn rows(&self) -> u64 {
        self.files.iter().map(|e| e.record_count()).sum()
    }
}

/// The day a partition value holds (the market tables are partitioned by `day(timestamp)`).
pub fn day_of(partition: &Struct) -> Option<i32> {
    match partition.fields().first()? {
        Some(Literal::Primitive(PrimitiveLiteral::Int(d))) => Some(*d),
        _ => None,
    }
}

/// The manifests of the table's current snapshot (empty without one).
pub(super) async fn manifests(table: &Table) -> Result<Vec<ManifestFile>> {
    let Some(snapshot) = table.metadata().current_snapshot() else {
        return Ok(Vec::new());
    };
    let list = table
        .manifest_list_reader(snapshot)
        .load()
        .await
        .map_err(|e| read_error(table, e))?;
    Ok(list.consume_entries().into_iter().collect())
}

fn read_error(table: &Table, e: iceberg::Error) -> LakeError {
    LakeError::catalog(
        format!("reading the manifests of {}", table.identifier()),
        e,
    )
}

/// The live entries of `manifests`, each with the index of its manifest.
pub(super) async fn live_entries(
    table: &Table,
    manifests: &[ManifestFile],
) -> Result<Vec<(usize, ManifestEntryRef)>> {
    // Collected first: a lazy map in the stream would make this future unsendable across
    // the lifetimes `tokio::spawn` asks for.
    let loads: Vec<_> = manifests
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, m)| {
            let io = table.file_io().clone();
            async move { (i, m.load_manifest(&io).await) }
        })
        .collect();
    let mut loaded = futures::stream::iter(loads).buffered(16);
    let mut entries = Vec::new();
    while let Some((i, manifest)) = loaded.next().await {
        let manifest = manifest.map_err(|e| read_error(table, e))?;
        for entry in manifest.entries() {
            if entry.is_alive() && entry.data_file().content_type() == DataContentType::Data {
                entries.push((i, entry.clone()));
            }
        }
    }
    Ok(entries)
}

/// The live data files of `table`'s current snapshot, by day partition.
pub async fn files_per_day(table: &Table) -> Result<BTreeMap<Option<i32>, usize>> {
    let manifests = manifests(table).await?;
    let mut out = BTreeMap::new();
    for (_, entry) in live_entries(table, &manifests).await? {
        *out.entry(day_of(entry.data_file().partition()))
            .or_default() += 1;
    }
    Ok(out)
}

pub async fn plan(table: &Table, options: &CompactOptions) -> Result<Vec<Bin>> {
    let manifests = manifests(table).await?;
    if manifests
        .iter()
        .any(|m| m.content != ManifestContentType::Data)
    {
        return Err(LakeError::InvalidArgument(format!(
            "{} has delete files: compaction rewrites tables of data files only",
            table.identifier()
        )));
    }
    let spec_id = table.metadata().default_partition_spec_id();
    let small = options.target_file_bytes * 3 / 4;
    let mut by_partition: BTreeMap<Option<i32>, Vec<ManifestEntryRef>> = BTreeMap::new();
    for (i, entry) in live_entries(table, &manifests).await? {
        let file = entry.data_file();
        if manifests[i].partition_spec_id != spec_id || file.file_size_in_bytes() >= small {
            continue;
        }
        let day = day_of(file.partition());
        if options.day.is_some() && options.day != day {
            continue;
        }
        by_partition.entry(day).or_default().push(entry);
    }
    let mut bins = Vec::new();
    for (day, files) in by_partition {
        if files.len() < options.min_files.max(2) {
            continue;
        }
        let partition = files[0].data_file().partition().clone();
        let mut bin: Vec<ManifestEntryRef> = Vec::new();
        let mut bytes = 0;
        for entry in files {
            if !bin.is_empty() && bytes + entry.file_size_in_bytes() > options.target_file_bytes {
                bins.push(Bin {
                    day,
                    partition: partition.clone(),
                    files: std::mem::take(&mut bin),
                });
                bytes = 0;
            }
            bytes += entry.file_size_in_bytes();
            bin.push(entry);
        }
        bins.push(Bin {
            day,
            partition,
            files: bin,
        });
    }
    bins.retain(|b| b.files.len() >= 2);
    Ok(bins)
}
