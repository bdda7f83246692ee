//! `k2 catalog serve`: the Iceberg REST catalog over K2's SQL catalog (SQLite or
//! PostgreSQL), behind K2's API keys.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use k2_api::CatalogBackend;

use crate::config::Config;
use crate::{app, signal, telemetry};

#[derive(Args)]
pub struct CatalogArgs {
    #[command(subcommand)]
    command: CatalogCommand,
}

#[derive(Subcommand)]
enum CatalogCommand {
    /// Serve the Iceberg REST Catalog API until SIGINT/SIGTERM (`--listen 127.0.0.1:0`
    /// picks a free port; the address is printed).
    Serve {
        /// Overrides `catalog_server.listen`.
        #[arg(long)]
        listen: Option<String>,
    },
}

pub async fn run(config: Config, args: CatalogArgs) -> anyhow::Result<ExitCode> {
    let CatalogCommand::Serve { listen } = args.command;
    if config.catalog.is_rest() {
        bail!(
            "catalog.uri is a REST catalog ({}): `k2 catalog serve` serves a SQL catalog \
             (leave catalog.uri empty for SQLite, or give a postgres:// URI)",
            config.catalog.uri
        );
    }
    let listen = listen.unwrap_or_else(|| config.catalog_server.listen.clone());
    let metrics = telemetry::recorder(&config.data_dir)?;
    let warehouse = config.warehouse()?;
    let Some(catalog) = signal::unless_stopped(app::catalog(&config))
        .await
        .transpose()?
    else {
        return Ok(crate::signal::stopped_before_start("catalog serve"));
    };
    let committer = config
        .catalog
        .committer(catalog.clone(), &config.catalog_path())
        .await?;
    let backend = CatalogBackend {
        catalog,
        committer,
        table_config: warehouse.client_props(config.catalog_server.vend_credentials),
        metrics: Some(metrics),
    };
    let location = warehouse.location().to_string();
    k2_api::serve_catalog(
        config.api.clone(),
        &listen,
        backend,
        |addr| eprintln!("Iceberg REST catalog on http://{addr} (warehouse {location})"),
        signal::stop(),
    )
    .await
    .context("serving the Iceberg REST catalog")?;
    Ok(ExitCode::SUCCESS)
}
