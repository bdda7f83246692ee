//! The stores a command works on, opened from the configuration, and the commands that
//! move data: ingest and consume.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use k2_ingest::{IngestOptions, IngestSummary};
use k2_lake::WriterSummary;
use k2_lake::query::QueryEngine;
use k2_log::{DeadLetterStore, EmbeddedLog};

use crate::config::Config;

pub struct App {
    pub config: Config,
    pub log: EmbeddedLog,
    pub dlq: DeadLetterStore,
}

impl App {
    pub fn open(config: Config) -> anyhow::Result<App> {
        let log = EmbeddedLog::open(&config.log_path())
            .with_context(|| format!("opening the log under {}", config.data_dir.display()))?;
        let dlq = DeadLetterStore::open(&config.dlq_path(), config.dlq.max_entries).with_context(
            || {
                format!(
                    "opening the dead-letter store under {}",
                    config.data_dir.display()
                )
            },
        )?;
        Ok(App { config, log, dlq })
    }

    pub async fn catalog(&self) -> anyhow::Result<Arc<dyn iceberg::Catalog>> {
        let c = &self.config.catalog;
        let catalog = if c.uri.is_empty() {
            k2_lake::open_catalog(&self.config.catalog_path(), &self.config.warehouse_dir()).await?
        } else {
            k2_lake::open_catalog_at(&c.uri, &c.name, &self.config.warehouse_dir()).await?
        };
        k2_lake::ensure_tables(catalog.as_ref()).await?;
        Ok(catalog)
    }

    pub async fn engine(&self) -> anyhow::Result<QueryEngine> {
        Ok(QueryEngine::new(
            self.catalog().await?,
            self.config.query_options(),
        )?)
    }

    /// `ingest asx DIR`, with a progress bar on a terminal and plain counts otherwise.
    pub async fn ingest_asx(&self, dir: &Path) -> anyhow::Result<IngestSummary> {
        let options = IngestOptions {
            chunk_rows: self.config.log.ingest_chunk_rows,
            partitions: self.config.log.partitions,
        };
        let terminal = std::io::stderr().is_terminal();
        let bar = ProgressBar::new(0);
        if terminal {
            bar.set_style(
                ProgressStyle::with_template("{msg:24} [{bar:30}] {bytes}/{total_bytes} {per_sec}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
        } else {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let mut current = String::new();
        let mut progress = |p: k2_ingest::Progress<'_>| {
            if p.file != current {
                current = p.file.to_string();
                bar.set_message(current.clone());
                bar.set_length(p.bytes_total);
            }
            bar.set_position(p.bytes_done);
        };
        let summary =
            k2_ingest::ingest_asx(&self.log, &self.dlq, dir, &options, &mut progress).await?;
        bar.finish_and_clear();
        for f in &summary.files {
            match &f.error {
                Some(e) => eprintln!("  {:34} FAILED: {e}", f.file),
                None => eprintln!(
                    "  {:34} {:>9} rows read, {:>9} appended, {:>5} dead-lettered{}",
                    f.file,
                    f.rows_read,
                    f.produced,
                    f.dead_lettered,
                    if f.already_ingested_lines > 0 {
                        format!(", {} lines ingested before", f.already_ingested_lines)
                    } else {
                        String::new()
                    }
                ),
            }
        }
        for note in &summary.not_ingested {
            eprintln!("  not ingested: {note}");
        }
        eprintln!(
            "ingest: {} rows read, {} appended to the log, {} dead-lettered in {:.2}s",
            summary.rows_read(),
            summary.produced(),
            summary.dead_lettered(),
            summary.seconds
        );
        Ok(summary)
    }

    /// Runs the lake writer until caught up (batch) or until SIGINT/SIGTERM (service).
    pub async fn consume(&self, until_caught_up: bool) -> anyhow::Result<WriterSummary> {
        let catalog = self.catalog().await?;
        let mut options = self.config.writer_options();
        options.until_caught_up = until_caught_up;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutdown requested: committing what is buffered");
            flag.store(true, Ordering::Relaxed);
        });
        let summary = k2_lake::writer::run(&self.log, catalog, &self.dlq, &options, stop).await?;
        let rows: u64 = summary.rows_committed.values().sum();
        eprintln!(
            "lake writer: {} records consumed = {} rows committed (in {} commits) + {} dead-lettered + {} duplicates dropped, {:.2}s",
            summary.records_consumed,
            rows,
            summary.commits,
            summary.dead_lettered,
            summary.duplicates_dropped,
            summary.seconds
        );
        if !summary.sequence_events.is_empty() {
            let events: Vec<String> = summary
                .sequence_events
                .iter()
                .map(|(event, n)| format!("{n} {event}"))
                .collect();
            eprintln!(
                "source sequences: {}; {} missing",
                events.join(", "),
                summary.sequence_missing
            );
        }
        Ok(summary)
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
