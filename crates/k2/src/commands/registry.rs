//! `k2 registry serve`: the Confluent Schema Registry REST API on K2's schema tables, for
//! stock Kafka clients.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use k2_log::{EmbeddedLog, LocalSchemas, LogBackend};

use crate::config::Config;
use crate::{registry, signal};

#[derive(Args)]
pub struct RegistryArgs {
    #[command(subcommand)]
    command: RegistryCommand,
}

#[derive(Subcommand)]
enum RegistryCommand {
    /// Serve the registry until SIGINT/SIGTERM (`--listen 127.0.0.1:0` picks a free port;
    /// the address is printed).
    Serve {
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: String,
    },
}

pub async fn run(config: Config, args: RegistryArgs) -> anyhow::Result<ExitCode> {
    let RegistryCommand::Serve { listen } = args.command;
    registry::serve(schemas(&config)?, &listen, signal::stop()).await?;
    Ok(ExitCode::SUCCESS)
}

/// The schema registry's tables: inside the embedded log, or their own file with Kafka
/// (no connection to the cluster is needed to serve them).
fn schemas(config: &Config) -> anyhow::Result<LocalSchemas> {
    Ok(match config.log.backend {
        LogBackend::Kafka => LocalSchemas::open(&config.registry_path())?,
        LogBackend::Embedded => EmbeddedLog::open(&config.log_path())
            .with_context(|| format!("opening the log under {}", config.data_dir.display()))?
            .schemas(),
    })
}
