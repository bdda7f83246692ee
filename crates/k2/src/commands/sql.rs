//! `k2 sql`: read-only SQL over the lake's tables.

use std::process::ExitCode;

use clap::Args;

use super::OutputArgs;
use crate::app;
use crate::config::Config;

#[derive(Args)]
pub struct SqlArgs {
    sql: String,
    /// Every table as of one snapshot: a tag, or an instant (`--snapshot ID` names one
    /// table's snapshot: use `k2 query` for those).
    #[command(flatten)]
    pin: super::query::PinArgs,
    #[command(flatten)]
    out: OutputArgs,
}

pub async fn run(config: Config, args: SqlArgs) -> anyhow::Result<ExitCode> {
    let pin = args.pin.pin()?;
    if let k2_lake::query::Pin::Id(id) = pin {
        anyhow::bail!(
            "--snapshot {id}: a snapshot id belongs to one table; k2 sql takes a tag or --as-of"
        );
    }
    let (answer, receipts) = app::engine(&config).await?.sql_at(&args.sql, &pin).await?;
    for receipt in &receipts {
        eprintln!("{}", receipt.line());
    }
    args.out.render(&answer.batches)?;
    if let Some(max) = answer.truncated_at {
        eprintln!(
            "the result has more than {max} rows and was cut there (query.max_rows): add a LIMIT, aggregate, or raise query.max_rows"
        );
    }
    Ok(ExitCode::SUCCESS)
}
