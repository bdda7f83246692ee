//! `k2 snapshot`: named snapshots. A tag keeps its snapshot past expiry until it is
//! removed, so an answer given today can be given again, identically, next year.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use iceberg::spec::{SnapshotReference, SnapshotRetention};
use iceberg::{TableRequirement, TableUpdate};
use k2_lake::LakeTable;

use crate::app;
use crate::config::Config;

#[derive(Args)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    command: SnapshotCommand,
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Name a snapshot: every table's current one, or `--snapshot ID` of `--table`.
    Tag {
        name: String,
        /// trades, quotes or companies (default: all three).
        #[arg(long)]
        table: Option<String>,
        /// The snapshot to name (default: the table's current one); needs --table.
        #[arg(long, requires = "table")]
        snapshot: Option<i64>,
    },
    /// Remove a tag (its snapshot then expires as any other).
    Untag {
        name: String,
        #[arg(long)]
        table: Option<String>,
    },
    /// The tags of every table.
    Tags,
}

fn tables(table: Option<&str>) -> anyhow::Result<Vec<LakeTable>> {
    Ok(match table {
        None => LakeTable::ALL.to_vec(),
        Some(t) => vec![
            LakeTable::parse(t)
                .with_context(|| format!("unknown table '{t}': use trades, quotes or companies"))?,
        ],
    })
}

pub async fn run(config: Config, args: SnapshotArgs) -> anyhow::Result<ExitCode> {
    let catalog = app::catalog(&config).await?;
    let committer = config
        .catalog
        .committer(catalog.clone(), &config.catalog_path())
        .await?;
    match args.command {
        SnapshotCommand::Tag {
            name,
            table,
            snapshot,
        } => {
            check_name(&name)?;
            for t in tables(table.as_deref())? {
                let current = catalog.load_table(&t.ident()).await?;
                let Some(id) = snapshot.or(current.metadata().current_snapshot_id()) else {
                    eprintln!("{t}: no snapshot yet, not tagged");
                    continue;
                };
                if current.metadata().snapshot_by_id(id).is_none() {
                    bail!("{t} has no snapshot {id}");
                }
                if let Some(existing) = current.metadata().snapshot_for_ref(&name) {
                    bail!(
                        "{t} already has a tag '{name}' (snapshot {}): untag it first",
                        existing.snapshot_id()
                    );
                }
                committer
                    .commit(
                        &t.ident(),
                        // The name must still be free when the commit lands.
                        vec![TableRequirement::RefSnapshotIdMatch {
                            r#ref: name.clone(),
                            snapshot_id: None,
                        }],
                        vec![TableUpdate::SetSnapshotRef {
                            ref_name: name.clone(),
                            reference: SnapshotReference::new(
                                id,
                                SnapshotRetention::Tag {
                                    max_ref_age_ms: None,
                                },
                            ),
                        }],
                    )
                    .await?;
                println!("{t}: tagged snapshot {id} '{name}'");
            }
        }
        SnapshotCommand::Untag { name, table } => {
            let mut removed = 0;
            for t in tables(table.as_deref())? {
                let current = catalog.load_table(&t.ident()).await?;
                let Some(tagged) = current.metadata().snapshot_for_ref(&name) else {
                    continue;
                };
                committer
                    .commit(
                        &t.ident(),
                        vec![TableRequirement::RefSnapshotIdMatch {
                            r#ref: name.clone(),
                            snapshot_id: Some(tagged.snapshot_id()),
                        }],
                        vec![TableUpdate::RemoveSnapshotRef {
                            ref_name: name.clone(),
                        }],
                    )
                    .await?;
                println!(
                    "{t}: removed tag '{name}' (snapshot {})",
                    tagged.snapshot_id()
                );
                removed += 1;
            }
            if removed == 0 {
                bail!("no table has a tag '{name}'");
            }
        }
        SnapshotCommand::Tags => {
            for t in LakeTable::ALL {
                let table = catalog.load_table(&t.ident()).await?;
                for (name, id) in k2_lake::query::tags(&table) {
                    println!("{t}\t{name}\t{id}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A tag name: what a shell, a URL and a file name take without quoting.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name != "main"
        && name.parse::<i64>().is_err()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        bail!(
            "'{name}' is not a tag name: 1 to 128 of A-Z a-z 0-9 - _ ., not a number, not 'main'"
        );
    }
    Ok(())
}
