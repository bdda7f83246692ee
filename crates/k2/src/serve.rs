//! `k2 serve`: the query API over the lake, with readiness checks of the catalog, the
//! storage under it and the log. `k2 up`: feeds, lake writer, live tail and API in one
//! process.

use std::sync::Arc;

use anyhow::Context;
use k2_api::{Backends, Check};
use k2_lake::LakeTable;
use k2_lake::query::QueryEngine;
use k2_lake::tail::{Tail, TailConfig};
use k2_log::{AnyLog, Log};
use tokio_util::sync::CancellationToken;

use crate::app::{self, App};
use crate::config::Config;
use crate::telemetry;

pub async fn run(config: Config, listen: Option<String>) -> anyhow::Result<()> {
    let mut api = config.api.clone();
    if let Some(l) = listen {
        api.listen = l;
    }
    let metrics = telemetry::recorder()?;
    let catalog = app::catalog(&config).await?;
    let backends = backends(&config, catalog, metrics, None, None)?;
    k2_api::serve(
        api,
        backends,
        |addr| eprintln!("query API on http://{addr} (documents at /docs)"),
        app::stop_on_signal(),
    )
    .await
    .context("serving the query API")?;
    Ok(())
}

/// `k2 up`: the configured feeds capture into the log, the lake writer commits from it, a
/// live tail follows it, and the API answers over lake and tail. On SIGINT/SIGTERM the
/// feeds stop first (what they hold reaches the log), then the writer commits what it has
/// read and the API drains. A feed that gives up ends the process with an error.
pub async fn up(
    config: Config,
    listen: Option<String>,
    feeds: Option<Vec<String>>,
) -> anyhow::Result<()> {
    let mut api = config.api.clone();
    if let Some(l) = listen {
        api.listen = l;
    }
    let metrics = telemetry::recorder()?;
    let venues = feeds.unwrap_or_else(|| config.feeds.run.clone());
    let mut chosen = Vec::new();
    for name in &venues {
        let venue = crate::config::venue(name)?;
        chosen.push(config.feed(venue, None, None)?);
    }
    let app = Arc::new(App::open(config.clone()).await?);
    let catalog = app.catalog().await?;
    // The venues' topics exist before the tail and the writer look for them.
    for (feed, _) in &chosen {
        let exchange = feed.venue.exchange();
        for spec in k2_ingest::topic_specs(
            k2_model::AssetClass::Crypto,
            exchange,
            config.log.partitions,
        ) {
            app.log.ensure_topic(&spec).await?;
        }
    }

    let stop_feeds = CancellationToken::new();
    let stop_rest = CancellationToken::new();
    let (failed_tx, mut failed_rx) = tokio::sync::mpsc::channel::<anyhow::Error>(4);
    let mut captures = Vec::new();
    for (feed, reconnect) in chosen {
        let (app, stop, failed) = (app.clone(), stop_feeds.clone(), failed_tx.clone());
        captures.push(tokio::spawn(async move {
            if let Err(e) = app.capture(feed, reconnect, stop).await {
                let _ = failed.send(e).await;
            }
        }));
    }
    drop(failed_tx);

    let tail = Arc::new(Tail::new(TailConfig {
        max_per_stream: config.api.tail_per_symbol,
        max_age: config.api.tail_age,
        ..TailConfig::default()
    }));
    let (follower, writer) = follow_and_write(&app, &catalog, &tail, &stop_rest).await?;

    let backends = backends(&config, catalog, metrics, Some(app.log.clone()), Some(tail))?;
    let stop_api = CancellationToken::new();
    let server = tokio::spawn(k2_api::serve(
        api,
        backends,
        |addr| eprintln!("query API on http://{addr} (documents at /docs)"),
        stop_api.clone(),
    ));

    let failure = tokio::select! {
        () = app::shutdown_signal() => None,
        Some(e) = failed_rx.recv() => Some(e),
    };
    tracing::info!("stopping: feeds first, then the writer and the API");
    stop_feeds.cancel();
    for c in captures {
        let _ = c.await;
    }
    stop_rest.cancel();
    let summary = writer.await.context("the lake writer task")??;
    stop_api.cancel();
    server
        .await
        .context("the API task")?
        .context("serving the query API")?;
    let _ = follower.await;
    app::report_writer(&summary);
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// What the API answers from: the engine over `catalog`, readiness checks of the catalog,
/// its storage and the log (`log` when the process holds it open, else opened on first
/// check), `/metrics`, and the live tail when there is one.
fn backends(
    config: &Config,
    catalog: Arc<dyn iceberg::Catalog>,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    log: Option<AnyLog>,
    tail: Option<Arc<Tail>>,
) -> anyhow::Result<Backends> {
    Ok(Backends {
        engine: Arc::new(QueryEngine::new(catalog.clone(), config.query_options())?),
        checks: vec![
            ("catalog", catalog_check(catalog.clone())),
            ("storage", storage_check(catalog)),
            ("log", log_check(config.clone(), log)),
        ],
        metrics: Some(metrics),
        tail,
    })
}

type Task<T> = tokio::task::JoinHandle<T>;

/// The live tail following the log and the lake writer committing from it, each on its
/// own task until `stop` is set.
pub async fn follow_and_write(
    app: &Arc<App>,
    catalog: &Arc<dyn iceberg::Catalog>,
    tail: &Arc<Tail>,
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
    let writer = tokio::spawn(async move {
        let options = app.config.writer_options();
        k2_lake::writer::run(&app.log, catalog, &app.dlq, &options, stop).await
    });
    Ok((follower, writer))
}

fn catalog_check(catalog: Arc<dyn iceberg::Catalog>) -> Check {
    Arc::new(move || {
        let catalog = catalog.clone();
        Box::pin(async move {
            let namespaces = catalog
                .list_namespaces(None)
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!("{} namespaces", namespaces.len()))
        })
    })
}

/// The storage holds the current metadata file of the trades table.
fn storage_check(catalog: Arc<dyn iceberg::Catalog>) -> Check {
    Arc::new(move || {
        let catalog = catalog.clone();
        Box::pin(async move {
            let table = catalog
                .load_table(&LakeTable::Trades.ident())
                .await
                .map_err(|e| e.to_string())?;
            let location = table
                .metadata_location()
                .ok_or("the trades table has no metadata file")?
                .to_string();
            match table.file_io().exists(&location).await {
                Ok(true) => Ok(location),
                Ok(false) => Err(format!("{location} is missing")),
                Err(e) => Err(e.to_string()),
            }
        })
    })
}

/// The log answers a listing of its topics. Opened on first use, so the API starts (and
/// answers from the lake) while a Kafka cluster is unreachable.
fn log_check(config: Config, open: Option<AnyLog>) -> Check {
    let log: Arc<tokio::sync::Mutex<Option<AnyLog>>> = Arc::new(tokio::sync::Mutex::new(open));
    Arc::new(move || {
        let (log, config) = (log.clone(), config.clone());
        Box::pin(async move {
            let mut slot = log.lock().await;
            if slot.is_none() {
                *slot = Some(App::open(config).await.map_err(|e| format!("{e:#}"))?.log);
            }
            let log = slot.as_ref().expect("opened above");
            let topics = log.topics().await.map_err(|e| e.to_string())?;
            Ok(format!(
                "{} backend, {} topics",
                log.backend(),
                topics.len()
            ))
        })
    })
}
