//! `k2 feed VENUE`: one live exchange feed captured into the log until SIGINT/SIGTERM.

use std::process::ExitCode;

use clap::Args;

use crate::app::App;
use crate::config::Config;
use crate::{signal, telemetry};

#[derive(Args)]
pub struct FeedArgs {
    /// binance or kraken.
    venue: String,
    /// Comma-separated symbols (default: `feeds.<venue>.symbols`).
    #[arg(long, value_delimiter = ',')]
    symbols: Option<Vec<String>>,
    /// The feed's URL (default: `feeds.<venue>.url`, with its fallbacks).
    #[arg(long)]
    url: Option<String>,
}

pub async fn run(config: Config, args: FeedArgs) -> anyhow::Result<ExitCode> {
    telemetry::serve_metrics(&config.telemetry, &config.data_dir)?;
    let venue = super::venue(&args.venue)?;
    let (feed, reconnect) = config.feeds.feed(venue, args.symbols, args.url)?;
    let Some(app) = signal::unless_stopped(App::open(config))
        .await
        .transpose()?
    else {
        return Ok(signal::stopped_before_start("feed"));
    };
    let outcome = app.capture(feed, reconnect, signal::stop()).await;
    let undelivered = app.close_log("feed");
    outcome?;
    Ok(if undelivered > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
