//! `k2 feed VENUE`: one live exchange feed captured into the log until SIGINT/SIGTERM.

use std::process::ExitCode;
use std::time::Duration;

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
    telemetry::serve_metrics(&config.telemetry)?;
    let venue = super::venue(&args.venue)?;
    let (feed, reconnect) = config.feeds.feed(venue, args.symbols, args.url)?;
    let app = App::open(config).await?;
    let outcome = app.capture(feed, reconnect, signal::stop_on_signal()).await;
    let undelivered = app.log.close(Duration::from_secs(30));
    if undelivered > 0 {
        eprintln!("feed: {undelivered} records were not delivered to the log");
    }
    outcome?;
    Ok(if undelivered > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
