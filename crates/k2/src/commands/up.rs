//! `k2 up`: feeds, lake writer, live tail and query API in one process.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use k2_lake::tail::{Tail, TailConfig};
use k2_log::Log;
use tokio_util::sync::CancellationToken;

use super::serve::backends;
use crate::app::{self, App};
use crate::config::Config;
use crate::{signal, telemetry};

#[derive(Args)]
pub struct UpArgs {
    #[command(flatten)]
    listen: super::serve::ListenArgs,
    /// Comma-separated venues (overrides `feeds.run`).
    #[arg(long, value_delimiter = ',')]
    feeds: Option<Vec<String>>,
}

/// `k2 up`: the configured feeds capture into the log, the lake writer commits from it, a
/// live tail follows it, and the API answers over lake and tail. On SIGINT/SIGTERM the
/// feeds stop first (what they hold reaches the log), then the writer commits what it has
/// read and the API drains. A feed that gives up ends the process with an error.
pub async fn run(config: Config, args: UpArgs) -> anyhow::Result<ExitCode> {
    let stop = signal::stop();
    let api = args.listen.apply(&config);
    let metrics = telemetry::recorder(&config.data_dir)?;
    let venues = match args.feeds {
        Some(names) => names
            .iter()
            .map(|n| super::venue(n))
            .collect::<anyhow::Result<Vec<_>>>()?,
        None => config.feeds.run.clone(),
    };
    let mut chosen = Vec::new();
    for venue in venues {
        chosen.push(config.feeds.feed(venue, None, None)?);
    }
    let opened = signal::unless_stopped(async {
        let app = App::open(config.clone()).await?;
        let catalog = app.catalog().await?;
        anyhow::Ok((Arc::new(app), catalog))
    });
    let Some((app, catalog)) = opened.await.transpose()? else {
        return Ok(signal::stopped_before_start("up"));
    };
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
    let degrader = crate::degradation::Degrader::start(
        &config.degradation,
        &config.data_dir,
        stop_rest.clone(),
    );
    let mut captures = Vec::new();
    for (mut feed, reconnect) in chosen {
        feed.pause = degrader
            .as_ref()
            .map(crate::degradation::Degrader::for_feeds);
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
    let (follower, writer) =
        app::follow_and_write(&app, &catalog, &tail, degrader.as_ref(), &stop_rest).await?;
    let mut upkeep: Vec<_> =
        app::compact_in_background(&config, &catalog, degrader.as_ref(), &stop_rest)
            .await?
            .into_iter()
            .collect();
    upkeep.extend(app.trim_log_in_background(&stop_rest));

    let mut backends = backends(&config, catalog, metrics, Some(app.log.clone()), Some(tail))?;
    backends.degradation = degrader.as_ref().map(crate::degradation::Degrader::for_api);
    backends.dead_letters = Some(app.dlq.clone());
    let stop_api = CancellationToken::new();
    let server = tokio::spawn(k2_api::serve(
        api,
        backends,
        super::serve::announce,
        stop_api.clone(),
    ));

    let failure = tokio::select! {
        () = stop.cancelled() => None,
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
    for task in upkeep {
        let _ = task.await;
    }
    app::report_writer(&summary);
    match failure {
        Some(e) => Err(e),
        None => Ok(ExitCode::SUCCESS),
    }
}
