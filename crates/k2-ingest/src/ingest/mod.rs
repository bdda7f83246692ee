//! `ingest asx`: reads an ASX sample directory and appends its records to the log.
//!
//! Exactly once into the log: each file's progress (bytes and lines done, and a hash of
//! those bytes) is a source checkpoint stored with the records of the same chunk. Running
//! the ingest again skips what is done, resumes a file cut short, and refuses a file whose
//! already-ingested part has changed. Bad rows go to the dead-letter store (idempotently,
//! keyed by file and line) and never stop the file.
//!
//! - This file: the run over a directory (companies first, then every data file).
//! - `file` — one file: its chunks read, parsed over the cores, appended with their
//!   checkpoints, several chunks in flight.

mod file;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use k2_log::{DeadLetter, DeadLetterStore, Log, LogError, SchemaStore, SourceCheckpoint};
use k2_model::{AssetClass, DataType, MarketRecord, Text, TopicName, avro};
use serde::Serialize;
use tracing::Instrument;

use self::file::{FileCheckpoint, InFlight, ingest_file};
use crate::asx::{self, Company, Rejection};
use crate::metrics;
use crate::producer::{Encoder, now_us, topic_specs};

pub const STAGE: &str = "ingest.asx";

/// What can stop an ingest (a bad row never does).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    Layout(String),
    #[error("reading {path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Log(#[from] LogError),
}

impl IngestError {
    pub fn is_retryable(&self) -> bool {
        match self {
            IngestError::Log(e) => e.is_retryable(),
            IngestError::Io { .. } => true,
            IngestError::Layout(_) => false,
        }
    }
}

/// Settings of an ingest run.
#[derive(Clone, Debug)]
pub struct IngestOptions {
    /// Rows per log append (and per checkpoint).
    pub chunk_rows: usize,
    /// Partitions of the trades and quotes topics when they are created.
    pub partitions: u32,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            chunk_rows: 50_000,
            partitions: 4,
        }
    }
}

/// Progress of the file being read, for a progress bar.
#[derive(Clone, Debug)]
pub struct Progress<'a> {
    pub file: &'a str,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub rows_done: u64,
}

/// Outcome of one file.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FileSummary {
    pub file: String,
    pub data_type: String,
    pub symbol: Option<String>,
    /// Data rows read in this run (excluding any already ingested before).
    pub rows_read: u64,
    pub produced: u64,
    pub dead_lettered: u64,
    pub blank_lines: u64,
    /// Rows ingested by an earlier run and skipped now.
    pub already_ingested_lines: u64,
    pub error: Option<String>,
}

/// Outcome of an ingest run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct IngestSummary {
    pub files: Vec<FileSummary>,
    /// Files of the layout that K2 has no table for yet, with the reason.
    pub not_ingested: Vec<String>,
    pub seconds: f64,
}

impl IngestSummary {
    pub fn produced(&self) -> u64 {
        self.files.iter().map(|f| f.produced).sum()
    }
    pub fn dead_lettered(&self) -> u64 {
        self.files.iter().map(|f| f.dead_lettered).sum()
    }
    pub fn rows_read(&self) -> u64 {
        self.files.iter().map(|f| f.rows_read).sum()
    }
    pub fn failed_files(&self) -> impl Iterator<Item = &FileSummary> {
        self.files.iter().filter(|f| f.error.is_some())
    }
}

/// The reference-data file of the ASX sample layout, relative to its directory.
const REFERENCE_FILE: &str = "reference-data/company_info.csv";

/// Ingests `dir` (the ASX sample layout) into `log`.
pub async fn ingest_asx<L: Log + SchemaStore>(
    log: &L,
    dlq: &DeadLetterStore,
    dir: &Path,
    options: &IngestOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<IngestSummary, IngestError> {
    let started = Instant::now();
    let info_path = dir.join("reference-data").join("company_info.csv");
    let info = std::fs::read_to_string(&info_path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => IngestError::Layout(format!(
            "{} is not an ASX sample directory: {} is missing",
            dir.display(),
            info_path.display()
        )),
        _ => IngestError::Io {
            path: info_path.clone(),
            cause: e,
        },
    })?;
    for spec in topic_specs(AssetClass::Equities, asx::EXCHANGE, options.partitions) {
        log.ensure_topic(&spec).await?;
    }
    let mut ids = BTreeMap::new();
    for &dt in DataType::ALL {
        let topic = TopicName::new(AssetClass::Equities, dt, asx::EXCHANGE);
        ids.insert(
            dt,
            log.register(&topic.subject(), avro::schema_for(dt)).await?,
        );
    }
    let encoder = Encoder { ids };
    let receive_us = now_us();
    let mut summary = IngestSummary::default();

    // Reference data first: the symbols of the market files come from it.
    let (companies, rejected) = asx::parse_company_info(&info);

    // Every file is listed up front, so the checkpoints of all of them are read in one
    // call (on a cluster, one read of the checkpoint topic instead of one per file).
    let mut plan: Vec<(String, DataType, PathBuf)> = Vec::new();
    for (sub, dt) in [("trades", DataType::Trades), ("quotes", DataType::Quotes)] {
        let folder = dir.join(sub);
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&folder) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "csv"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(IngestError::Io {
                    path: folder,
                    cause: e,
                });
            }
        };
        files.sort();
        for path in files {
            let rel = format!(
                "{sub}/{}",
                path.file_name().unwrap_or_default().to_string_lossy()
            );
            plan.push((rel, dt, path));
        }
    }
    let sources: Vec<String> = std::iter::once(REFERENCE_FILE)
        .chain(plan.iter().map(|(rel, _, _)| rel.as_str()))
        .map(|rel| format!("asx:{rel}"))
        .collect();
    let mut checkpoints = log.source_checkpoints(&sources).await?.into_iter();
    let reference_done = checkpoints.next().flatten();
    summary.files.push(
        ingest_reference(
            log,
            dlq,
            &encoder,
            &info,
            &companies,
            rejected,
            receive_us,
            reference_done,
        )
        .await?,
    );

    // Chunks being stored while the next is parsed, across files.
    let mut in_flight = InFlight::new(log);
    for ((rel, dt, path), done) in plan.into_iter().zip(checkpoints) {
        let company_id = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let mut file_summary = FileSummary {
            file: rel.clone(),
            data_type: dt.to_string(),
            ..Default::default()
        };
        let Some(company) = companies.get(company_id.as_str()) else {
            file_summary.error = Some(format!(
                "company {company_id} ({rel}) is not listed in {REFERENCE_FILE}; file not ingested"
            ));
            tracing::error!(file = %rel, "unknown company; file not ingested");
            metrics::file_failed(STAGE);
            summary.files.push(file_summary);
            continue;
        };
        file_summary.symbol = Some(company.symbol.to_string());
        let topic = TopicName::new(AssetClass::Equities, dt, asx::EXCHANGE).to_string();
        match ingest_file(
            log,
            dlq,
            &encoder,
            &path,
            &rel,
            &topic,
            dt,
            company,
            receive_us,
            done,
            options,
            &mut file_summary,
            progress,
            &mut in_flight,
        )
        .instrument(tracing::trace_span!(target: k2_model::STAGE_SPANS, "file", file = %rel, data_type = dt.as_str()))
        .await
        {
            Ok(()) => {}
            Err(IngestError::Layout(msg)) => {
                tracing::error!(file = %rel, error = %msg, "file not ingested");
                metrics::file_failed(STAGE);
                file_summary.error = Some(msg);
            }
            Err(e) => return Err(e),
        }
        summary.files.push(file_summary);
    }
    in_flight.finish(log).await?;
    // Corporate actions have no table yet: say so instead of passing over them.
    for name in ["dividends.csv", "stock_splits.csv", "mergers.csv"] {
        if dir.join("reference-data").join(name).exists() {
            summary.not_ingested.push(format!(
                "reference-data/{name}: corporate actions have no K2 table yet"
            ));
        }
    }
    summary.seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        produced = summary.produced(),
        dead_lettered = summary.dead_lettered(),
        seconds = summary.seconds,
        "ingest finished"
    );
    Ok(summary)
}

#[allow(clippy::too_many_arguments)]
async fn ingest_reference<L: Log>(
    log: &L,
    dlq: &DeadLetterStore,
    encoder: &Encoder,
    info: &str,
    companies: &BTreeMap<Text, Company>,
    rejected: Vec<asx::RejectedLine>,
    receive_us: i64,
    done: Option<Vec<u8>>,
) -> Result<FileSummary, IngestError> {
    let rel = REFERENCE_FILE;
    let mut summary = FileSummary {
        file: rel.into(),
        data_type: DataType::ReferenceData.to_string(),
        ..Default::default()
    };
    let source = format!("asx:{rel}");
    let hash = xxhash_rust::xxh3::xxh3_64(info.as_bytes());
    let state = serde_json::to_vec(&FileCheckpoint {
        bytes: info.len() as u64,
        lines: companies.len() as u64,
        prefix_xxh3: hash,
    })
    .expect("checkpoint serialises");
    summary.rows_read = (companies.len() + rejected.len()) as u64;
    if done.as_deref() == Some(state.as_slice()) {
        summary.already_ingested_lines = summary.rows_read;
        summary.rows_read = 0;
        return Ok(summary);
    }
    let letters: Vec<DeadLetter> = rejected
        .into_iter()
        .map(|(line, raw, r)| dead_letter(format!("{rel}:{line}"), r, raw.into_bytes()))
        .collect();
    summary.dead_lettered = letters.len() as u64;
    dlq.append(&letters)?;
    log.publish_dead_letters(&letters).await?;
    let now = now_us();
    let mut records: Vec<MarketRecord> = companies
        .values()
        .map(|c| asx::company_record(c, receive_us))
        .collect();
    summary.produced = records.len() as u64;
    let topic =
        TopicName::new(AssetClass::Equities, DataType::ReferenceData, asx::EXCHANGE).to_string();
    log.produce(
        vec![encoder.batch(&topic, &mut records, now)],
        Some(SourceCheckpoint { source, state }),
    )
    .instrument(tracing::trace_span!(target: k2_model::STAGE_SPANS, "append", topic, records = summary.produced))
    .await?;
    metrics::rows(STAGE, summary.produced, summary.dead_lettered);
    Ok(summary)
}

fn dead_letter(source: String, r: Rejection, raw: Vec<u8>) -> DeadLetter {
    DeadLetter {
        stage: STAGE.into(),
        source,
        kind: r.kind.into(),
        reason: r.reason,
        raw,
        rejected_at_us: now_us(),
    }
}
