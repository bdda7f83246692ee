//! `k2 compact`: the small files of the market tables' day partitions rewritten into files
//! of `writer.compact_target_file_mb`, sorted by (symbol, timestamp), as a `replace`
//! snapshot. The same runs every `writer.compact_every` beside `k2 consume` and `k2 up`.

use std::process::ExitCode;

use anyhow::{Context, bail};
use chrono::NaiveDate;
use clap::Args;
use k2_lake::LakeTable;

use super::OutputArgs;
use crate::app;
use crate::config::Config;

#[derive(Args)]
pub struct CompactArgs {
    /// `trades` or `quotes` (default: both).
    #[arg(long)]
    table: Option<String>,
    /// Only this day partition (YYYY-MM-DD, UTC).
    #[arg(long)]
    partition: Option<NaiveDate>,
    /// Overrides `writer.compact_min_files`: compact a partition once it has this many
    /// small files (at least 2).
    #[arg(long)]
    min_files: Option<usize>,
    #[command(flatten)]
    out: OutputArgs,
}

pub async fn run(config: Config, args: CompactArgs) -> anyhow::Result<ExitCode> {
    let tables = match args.table.as_deref() {
        None => vec![LakeTable::Trades, LakeTable::Quotes],
        Some(name) => match LakeTable::parse(name) {
            Some(t @ (LakeTable::Trades | LakeTable::Quotes)) => vec![t],
            _ => bail!("'{name}' is not a market table: compact trades or quotes"),
        },
    };
    let mut options = config
        .writer
        .compact_options(args.partition.map(k2_lake::columns::days_since_epoch));
    if let Some(n) = args.min_files {
        if n < 2 {
            bail!("--min-files must be at least 2 (one file is already compact)");
        }
        options.min_files = n;
    }
    let catalog = app::catalog(&config).await?;
    let committer = config
        .catalog
        .committer(catalog.clone(), &config.catalog_path())
        .await?;
    let mut done = Vec::new();
    for t in tables {
        let compacted = k2_lake::compaction::compact(catalog.as_ref(), &committer, t, &options)
            .await
            .with_context(|| format!("compacting {t}"))?;
        match compacted.snapshot_id {
            Some(id) => eprintln!(
                "{t}: {} files in {} partitions → {} files ({} rows), replace snapshot {id}",
                compacted.files_before, compacted.partitions, compacted.files_after, compacted.rows
            ),
            None => eprintln!(
                "{t}: no partition has {} small files; nothing to do",
                options.min_files
            ),
        }
        done.push(compacted);
    }
    args.out.rows(&done)?;
    Ok(ExitCode::SUCCESS)
}
