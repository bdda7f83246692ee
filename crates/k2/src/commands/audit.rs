//! `k2 audit`: every Iceberg commit of the lake writer, oldest first.

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use k2_api::present;
use k2_lake::LakeTable;

use super::OutputArgs;
use crate::config::Config;

#[derive(Args)]
pub struct AuditArgs {
    /// Only this table (`trades`, `quotes`, `companies` or a qualified name).
    #[arg(long)]
    table: Option<String>,
    /// The newest N entries.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    #[command(flatten)]
    out: OutputArgs,
}

pub fn run(config: Config, args: AuditArgs) -> anyhow::Result<ExitCode> {
    let table =
        match args.table.as_deref() {
            None => None,
            Some(name) => Some(LakeTable::parse(name).with_context(|| {
                format!("unknown table '{name}'; use trades, quotes or companies")
            })?),
        };
    let entries = k2_lake::audit::read(&config.audit_path())?;
    let chosen: Vec<_> = entries
        .iter()
        .filter(|e| table.is_none_or(|t| e.table == t.qualified()))
        .collect();
    let skip = chosen.len().saturating_sub(args.limit);
    eprintln!("{} commits audited", chosen.len());
    let rows: Vec<present::AuditRow> = chosen[skip..].iter().map(|e| (*e).into()).collect();
    args.out.rows(&rows)?;
    Ok(ExitCode::SUCCESS)
}
