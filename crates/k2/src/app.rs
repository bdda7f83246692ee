//! The stores a command works on, opened from the configuration, and the commands that
//! move data: ingest and consume.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use k2_ingest::{IngestOptions, IngestSummary};
use k2_lake::WriterSummary;
use k2_lake::query::QueryEngine;
use k2_log::{
    AnyLog, DeadLetterStore, EmbeddedLog, KafkaLog, LocalSchemas, Registry, RegistryClient,
};

use crate::config::Config;

pub struct App {
    pub config: Config,
    pub log: AnyLog,
    pub dlq: DeadLetterStore,
}

impl App {
    pub async fn open(config: Config) -> anyhow::Result<App> {
        let log = match config.log.backend.as_str() {
            "kafka" => {
                let registry = if config.registry.url.is_empty() {
                    Registry::Local(LocalSchemas::open(&config.registry_path())?)
                } else {
                    Registry::Remote(RegistryClient::new(&config.registry_access())?)
                };
                AnyLog::Kafka(KafkaLog::connect(config.kafka_options(), registry).await?)
            }
            _ => {
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
            buffer_events: self.config.feeds.buffer_events,
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

    /// Runs the lake writer until caught up (batch) or until SIGINT/SIGTERM (service).
    pub async fn consume(&self, until_caught_up: bool) -> anyhow::Result<WriterSummary> {
        let catalog = self.catalog().await?;
        let mut options = self.config.writer_options();
        options.until_caught_up = until_caught_up;
        let stop = stop_on_signal();
        let summary = k2_lake::writer::run(&self.log, catalog, &self.dlq, &options, stop).await?;
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

/// What `k2 topics` was asked.
pub enum TopicsRequest {
    Create {
        exchange: String,
        asset_class: k2_model::AssetClass,
        partitions: Option<u32>,
    },
    List,
    Describe(String),
}

/// One line of `k2 topics` output: a topic, or one partition of it (`describe`).
#[derive(serde::Serialize)]
pub struct TopicRow {
    pub topic: String,
    pub partition: Option<u32>,
    pub partitions: u32,
    pub cleanup: String,
    pub retention_hours: Option<f64>,
    pub records_end: u64,
    pub writer_offset: Option<u64>,
    pub writer_lag: Option<u64>,
    /// Topic configs as the broker reports them (Kafka `describe`).
    pub configs: String,
}

pub async fn topics(app: &App, request: TopicsRequest) -> anyhow::Result<Vec<TopicRow>> {
    use k2_log::Log;
    let log = &app.log;
    let describe = matches!(request, TopicsRequest::Describe(_));
    let wanted: Vec<String> = match request {
        TopicsRequest::Create {
            exchange,
            asset_class,
            partitions,
        } => {
            let partitions = partitions.unwrap_or(app.config.log.partitions);
            let specs = k2_ingest::topic_specs(asset_class, &exchange, partitions);
            for spec in &specs {
                log.ensure_topic(spec)
                    .await
                    .with_context(|| format!("creating topic {}", spec.name))?;
            }
            specs.into_iter().map(|s| s.name).collect()
        }
        TopicsRequest::List => Vec::new(),
        TopicsRequest::Describe(name) => vec![name],
    };
    let specs = log.topics().await?;
    let mut rows = Vec::new();
    for name in &wanted {
        if !specs.iter().any(|s| &s.name == name) {
            anyhow::bail!("topic '{name}' does not exist");
        }
    }
    for spec in specs
        .iter()
        .filter(|s| wanted.is_empty() || wanted.contains(&s.name))
    {
        let ends = log.end_offsets(&spec.name).await?;
        let group = log
            .group_offsets(&app.config.writer.group, &spec.name)
            .await?;
        let configs = match (&app.log, describe) {
            (k2_log::AnyLog::Kafka(k), true) => k
                .topic_configs(&spec.name)
                .await?
                .into_iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        };
        let row = |partition, end: u64, offset: Option<u64>| TopicRow {
            topic: spec.name.clone(),
            partition,
            partitions: spec.partitions,
            cleanup: format!("{:?}", spec.cleanup).to_lowercase(),
            retention_hours: spec.retention_ms.map(|ms| ms as f64 / 3_600_000.0),
            records_end: end,
            writer_offset: offset,
            writer_lag: offset.map(|o| end.saturating_sub(o)),
            configs: configs.clone(),
        };
        if describe {
            for (p, &end) in ends.iter().enumerate() {
                rows.push(row(Some(p as u32), end, group.get(p).copied().flatten()));
            }
        } else {
            let committed: Option<u64> = group.iter().copied().sum();
            rows.push(row(None, ends.iter().sum(), committed));
        }
    }
    Ok(rows)
}

/// The schema registry's tables: inside the embedded log, or their own file with Kafka
/// (no connection to the cluster is needed to serve them).
pub fn schemas(config: &Config) -> anyhow::Result<LocalSchemas> {
    Ok(match config.log.backend.as_str() {
        "kafka" => LocalSchemas::open(&config.registry_path())?,
        _ => EmbeddedLog::open(&config.log_path())
            .with_context(|| format!("opening the log under {}", config.data_dir.display()))?
            .schemas(),
    })
}

/// The Iceberg catalog the configuration names, with K2's tables in it.
pub async fn catalog(config: &Config) -> anyhow::Result<Arc<dyn iceberg::Catalog>> {
    let c = &config.catalog;
    let catalog = if c.uri.is_empty() {
        k2_lake::open_catalog(&config.catalog_path(), &config.warehouse_dir()).await?
    } else {
        k2_lake::open_catalog_at(&c.uri, &c.name, &config.warehouse_dir()).await?
    };
    k2_lake::ensure_tables(catalog.as_ref()).await?;
    Ok(catalog)
}

/// The query engine over the lake (no log needed).
pub async fn engine(config: &Config) -> anyhow::Result<QueryEngine> {
    Ok(QueryEngine::new(
        catalog(config).await?,
        config.query_options(),
    )?)
}

/// A token cancelled at the first SIGINT or SIGTERM: the one stop signal of a command.
pub fn stop_on_signal() -> tokio_util::sync::CancellationToken {
    let stop = tokio_util::sync::CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested");
        on_signal.cancel();
    });
    stop
}

pub async fn shutdown_signal() {
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
