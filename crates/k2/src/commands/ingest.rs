//! `k2 ingest asx DIR`: files into the log, exactly once, resumable.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::app::App;
use crate::config::Config;
use crate::{signal, telemetry};

#[derive(Args)]
pub struct IngestArgs {
    #[command(subcommand)]
    source: IngestSource,
}

#[derive(Subcommand)]
enum IngestSource {
    /// A directory in the ASX sample layout (trades/, quotes/, reference-data/).
    Asx { dir: PathBuf },
}

pub async fn run(config: Config, args: IngestArgs) -> anyhow::Result<ExitCode> {
    let IngestSource::Asx { dir } = args.source;
    let stop = signal::stop();
    telemetry::serve_metrics(&config.telemetry, &config.data_dir)?;
    let Some(app) = signal::unless_stopped(App::open(config))
        .await
        .transpose()?
    else {
        eprintln!("ingest: stopped before the log opened; nothing was read");
        return Ok(ExitCode::FAILURE);
    };
    let outcome = tokio::select! {
        summary = app.ingest_asx(&dir) => Some(summary),
        () = stop.cancelled() => None,
    };
    // Whatever the producer still holds is delivered before the process ends; a chunk
    // whose checkpoint was not stored is sent again by the next run (the lake drops the
    // copies by message id).
    let undelivered = app.close_log("ingest");
    let Some(summary) = outcome else {
        eprintln!("ingest: interrupted; the next run resumes from the last checkpoint");
        return Ok(ExitCode::FAILURE);
    };
    let failed = summary?.failed_files().next().is_some();
    Ok(if failed || undelivered > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
