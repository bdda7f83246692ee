//! `k2 sql`: read-only SQL over the lake's tables.

use std::process::ExitCode;

use clap::Args;

use super::OutputArgs;
use crate::app;
use crate::config::Config;
use crate::output::render;

#[derive(Args)]
pub struct SqlArgs {
    sql: String,
    #[command(flatten)]
    out: OutputArgs,
}

pub async fn run(config: Config, args: SqlArgs) -> anyhow::Result<ExitCode> {
    let answer = app::engine(&config).await?.sql(&args.sql).await?;
    render(&answer.batches, args.out.format, args.out.output.as_deref())?;
    if let Some(max) = answer.truncated_at {
        eprintln!(
            "the result has more than {max} rows and was cut there (query.max_rows): add a LIMIT, aggregate, or raise query.max_rows"
        );
    }
    Ok(ExitCode::SUCCESS)
}
