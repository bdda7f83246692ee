//! The stores a command works on, opened from the configuration, and the jobs several
//! commands run: ingest files, capture a feed, write the lake, follow the log.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use k2_ingest::{IngestOptions, IngestSummary};
use k2_lake::WriterSummary;
use k2_lake::query::QueryEngine;
use k2_log::{
    AnyLog, DeadLetterStore, EmbeddedLog, KafkaLog, LocalSchemas, LogBackend, Registry,
    RegistryClient,
};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::degradation::Degrader;

pub struct App {
    pub config: Config,
    pub log: AnyLog,
    pub dlq: DeadLetterStore,
}

impl App {
    /// Delivers what the log's producer still holds, within the stop grace (less a second
    /// for the rest of the stop); says on standard error how many records `who` could not
    /// deliver, and returns that count.
    pub fn close_log(&self, who: &str) -> usize {
        let bound = self
            .config
            .stop_grace
            .saturating_sub(std::time::Duration::from_secs(1));
        let undelivered = self.log.close(bound);
        if undelivered > 0 {
            eprintln!("{who}: {undelivered} records were not delivered to the log");
        }
        undelivered
    }

    pub async fn open(config: Config) -> anyhow::Result<App> {
        let log = match config.log.backend {
            LogBackend::Kafka => {
                let registry = if config.registry.url.is_empty() {
                    Registry::Local(LocalSchemas::open(&config.registry_path())?)
                } else {
                    Registry::Remote(RegistryClient::new(&config.registry_access())?)
                };
                AnyLog::Kafka(KafkaLog::connect(config.kafka_options(), registry).await?)
            }
            LogBackend::Embedded => {
                AnyLog::Embedded(EmbeddedLog::open(&config.log_path()).with_context(|| {
                    format!("opening the log under {}", config.data_dir.display())
                })?)
            }
        };
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
        catalog(&self.config).await
    }

    pub async fn engine(&self) -> anyhow::Result<QueryEngine> {
        engine(&self.config).await
    }

    /// The embedded log's retention applied beside a writer until `stop` (None with Kafka,
    /// whose cluster keeps its own, or when `log.retention` and `log.retention_bytes` are
    /// both off).
    pub fn trim_log_in_background(&self, stop: &CancellationToken) -> Option<Task<()>> {
        let policy = self.config.log.retention();
        match &self.log {
            AnyLog::Embedded(log) if !policy.age.is_zero() || policy.bytes > 0 => {
                Some(tokio::spawn(k2_log::embedded::trim_periodically(
                    log.clone(),
                    policy,
                    stop.clone(),
                )))
            }
            _ => None,
        }
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

    /// Captures one live feed into the log until `stop`; prints what it did.
    pub async fn capture(
        &self,
        feed: k2_ingest::FeedConfig,
        reconnect: k2_ingest::Reconnect,
        stop: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<k2_ingest::CaptureStats> {
        let venue = feed.venue.name();
        let options = k2_ingest::CaptureOptions {
            partitions: self.config.log.partitions,
            buffer_events: self.config.feeds.policy.buffer_events,
            ..Default::default()
        };
        eprintln!(
            "{venue}: capturing {} from {}",
            feed.symbols.join(","),
            feed.url
        );
        let stats = k2_ingest::capture(&self.log, &self.dlq, feed, reconnect, &options, stop)
            .await
            .with_context(|| format!("the {venue} feed"))?;
        eprintln!(
            "{venue}: {} trades and {} quotes appended to the log in {} appends, {} frames dead-lettered; {} connections, {} failed; the feed's thread used {:.2} s of CPU",
            stats.trades,
            stats.quotes,
            stats.appends,
            stats.refused,
            stats.connections,
            stats.failures,
            stats.feed_cpu_us as f64 / 1e6
        );
        Ok(stats)
    }

    /// Runs the lake writer until caught up (batch) or until SIGINT/SIGTERM (service, with
    /// compaction in the background).
    pub async fn consume(&self, until_caught_up: bool) -> anyhow::Result<WriterSummary> {
        let catalog = self.catalog().await?;
        let mut options = self.config.writer_options();
        options.until_caught_up = until_caught_up;
        // Its own token under the process's: ending the upkeep below ends nothing else.
        let stop = crate::signal::stop().child_token();
        // Upkeep beside a running writer: compaction, and the embedded log's retention.
        let mut upkeep = Vec::new();
        if !until_caught_up {
            let degrader = Degrader::start(
                &self.config.degradation,
                &self.config.data_dir,
                stop.clone(),
            );
            options.degradation = degrader.as_ref().map(Degrader::for_writer);
            upkeep.extend(
                compact_in_background(&self.config, &catalog, degrader.as_ref(), &stop).await?,
            );
            upkeep.extend(self.trim_log_in_background(&stop));
        }
        let summary =
            k2_lake::writer::run(&self.log, catalog, &self.dlq, &options, stop.clone()).await;
        stop.cancel();
        for task in upkeep {
            let _ = task.await;
        }
        let summary = summary?;
        report_writer(&summary);
        Ok(summary)
    }
}

/// The writer's accounts on standard error: where every record consumed went, and what
/// the source sequences showed.
pub fn report_writer(summary: &WriterSummary) {
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
            "source sequences: {}; {} found missing by gaps (late fills among them counted above)",
            events.join(", "),
            summary.sequence_missing
        );
    }
}

/// The Iceberg catalog the configuration names, with K2's tables in it.
pub async fn catalog(config: &Config) -> anyhow::Result<Arc<dyn iceberg::Catalog>> {
    Ok(config
        .catalog
        .open(&config.catalog_path(), &config.warehouse()?)
        .await?)
}

/// The query engine over the lake (no log needed).
pub async fn engine(config: &Config) -> anyhow::Result<QueryEngine> {
    Ok(
        QueryEngine::new(catalog(config).await?, config.query.clone())?
            .with_ledger(config.state_dir()),
    )
}

type Task<T> = tokio::task::JoinHandle<T>;

/// The market tables compacted every `writer.compact_every` until `stop` (None when that
/// is 0s).
pub async fn compact_in_background(
    config: &Config,
    catalog: &Arc<dyn iceberg::Catalog>,
    degrader: Option<&Degrader>,
    stop: &CancellationToken,
) -> anyhow::Result<Option<Task<()>>> {
    let every = config.writer.compact_every;
    if every.is_zero() {
        return Ok(None);
    }
    let committer = config
        .catalog
        .committer(catalog.clone(), &config.catalog_path())
        .await?;
    Ok(Some(tokio::spawn(k2_lake::compaction::run_periodically(
        catalog.clone(),
        committer,
        config.writer.compact_options(None),
        every,
        degrader.map(Degrader::for_compaction),
        stop.clone(),
    ))))
}

/// The live tail following the log and the lake writer committing from it, each on its
/// own task until `stop` is set.
pub async fn follow_and_write(
    app: &Arc<App>,
    catalog: &Arc<dyn iceberg::Catalog>,
    tail: &Arc<k2_lake::tail::Tail>,
    degrader: Option<&Degrader>,
    stop: &CancellationToken,
) -> anyhow::Result<(
    Task<k2_log::Result<()>>,
    Task<k2_lake::Result<k2_lake::WriterSummary>>,
)> {
    let start =
        k2_lake::tail::start_positions(&app.log, catalog.as_ref(), &app.config.writer.source)
            .await?;
    let follower = tokio::spawn(k2_lake::tail::follow(
        tail.clone(),
        app.log.clone(),
        start,
        stop.clone(),
    ));
    let (app, catalog, stop) = (app.clone(), catalog.clone(), stop.clone());
    let degradation = degrader.map(Degrader::for_writer);
    let writer = tokio::spawn(async move {
        let mut options = app.config.writer_options();
        options.degradation = degradation;
        k2_lake::writer::run(&app.log, catalog, &app.dlq, &options, stop).await
    });
    Ok((follower, writer))
}
