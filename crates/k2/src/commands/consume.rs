//! `k2 consume`: the lake writer, log → Iceberg tables exactly once.

use std::process::ExitCode;

use clap::Args;

use crate::app::App;
use crate::config::Config;
use crate::{signal, telemetry};

#[derive(Args)]
pub struct ConsumeArgs {
    /// Stop once everything in the log is committed (default: run until SIGTERM).
    #[arg(long)]
    until_caught_up: bool,
}

pub async fn run(config: Config, args: ConsumeArgs) -> anyhow::Result<ExitCode> {
    telemetry::serve_metrics(&config.telemetry, &config.data_dir)?;
    let Some(app) = signal::unless_stopped(App::open(config))
        .await
        .transpose()?
    else {
        return Ok(signal::stopped_before_start("consume"));
    };
    app.consume(args.until_caught_up).await?;
    Ok(ExitCode::SUCCESS)
}
