//! `k2 dlq`: rejected records: list, show one, run them again.

use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};
use k2_api::present;

use super::OutputArgs;
use crate::app::App;
use crate::config::Config;
use crate::output::Format;

#[derive(Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    command: DlqCommand,
    #[command(flatten)]
    out: OutputArgs,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Dead letters, oldest first.
    List {
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long, default_value_t = 0)]
        skip: usize,
    },
    /// One dead letter in full, raw record included.
    Show { id: u64 },
    /// Run dead letters again through the current parser and decoder: those that pass now
    /// are appended to the log (the lake writer lands them) and removed; the others keep
    /// their letter with the reason found now.
    Replay {
        /// Letters examined, oldest first.
        #[arg(long, default_value_t = 1_000_000)]
        limit: usize,
    },
}

pub async fn run(config: Config, args: DlqArgs) -> anyhow::Result<ExitCode> {
    let app = App::open(config).await?;
    let out = &args.out;
    match args.command {
        DlqCommand::List { limit, skip } => {
            let letters = app.dlq.list(skip, limit)?;
            eprintln!("{} dead letters stored", app.dlq.len()?);
            let rows: Vec<present::DeadLetterRow> = letters.iter().map(Into::into).collect();
            out.rows(&rows)?;
        }
        DlqCommand::Show { id } => {
            let Some(letter) = app.dlq.get(id)? else {
                bail!("no dead letter {id} (k2 dlq list shows the ids stored)");
            };
            let row = present::DeadLetterRow::from(&(id, letter));
            match out.format {
                Format::Table => {
                    let json = serde_json::to_value(&row)?;
                    for (k, v) in json.as_object().expect("a row is an object") {
                        let v = v.as_str().map_or_else(|| v.to_string(), String::from);
                        println!("{k:>12}: {v}");
                    }
                }
                _ => out.rows(&[row])?,
            }
        }
        DlqCommand::Replay { limit } => {
            let report = k2_ingest::replay_dead_letters(&app.log, &app.dlq, limit).await?;
            println!(
                "{} dead letters examined: {} pass now (appended to the log, letters removed), {} still fail (reasons refreshed), {} of a stage that cannot be replayed",
                report.examined, report.replayed, report.still_failing, report.not_replayable
            );
            for (topic, n) in &report.appended {
                println!("  {n:>8} → {topic}");
            }
            if report.replayed > 0 {
                println!(
                    "The lake writer lands them: k2 consume --until-caught-up (or the running writer)."
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
