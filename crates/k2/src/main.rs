//! `k2`: the market-data lakehouse in one binary.
//!
//! # Layout
//!
//! - `commands` — the command line: one module per command, its arguments and its run.
//! - `app` — the stores a command opens, and the jobs several commands share (ingest,
//!   capture, the lake writer, the live tail).
//! - `config` — each crate's sections composed: defaults, TOML file, `K2_…` variables.
//! - `telemetry` — tracing logs and the Prometheus recorder; `signal` — the stop signal.
//! - `bench` — benchmarks that print figures, by subject.
//! - `registry` — the Confluent Schema Registry REST API on K2's schema tables.
//! - `output` — tables, CSV, JSON and Parquet output (rows as `k2_api::present` shows them).
//! - `sample` — the ASX sample built into the binary; `memory` — allocator and memory
//!   figures.

mod app;
mod bench;
mod commands;
mod config;
mod degradation;
mod memory;
mod output;
mod registry;
mod resources;
mod sample;
mod signal;
mod telemetry;

use std::process::ExitCode;

use clap::Parser;

use crate::commands::Cli;
use crate::config::Config;

fn main() -> ExitCode {
    memory::no_transparent_huge_pages();
    let cli = Cli::parse();
    let mut config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Some(dir) = cli.data_dir.clone() {
        config.data_dir = dir;
    }
    telemetry::init_logs(&config.telemetry, cli.command.is_service());
    if !config.telemetry.otlp_endpoint.is_empty()
        && let Err(e) = telemetry::traces::start(&config.telemetry.otlp_endpoint)
    {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    for warning in &config.warnings {
        tracing::warn!("configuration: {warning}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let service = cli.command.is_service();
    // An interactive command holds nothing to land: it is interrupted at once, and a
    // write blocked on a reader that stopped reading does not hold the process either.
    let grace = if service {
        config.stop_grace
    } else {
        std::time::Duration::from_secs(2)
    };
    signal::install(grace);
    let outcome = runtime.block_on(async {
        let stop = signal::stop();
        tokio::select! {
            outcome = commands::run(cli.command, config) => outcome,
            // A service lands what it holds and returns (the watchdog bounds it); an
            // interactive command is interrupted where it stands.
            () = stop.cancelled(), if !service => Err(anyhow::anyhow!(
                "interrupted by {} before it finished",
                signal::received().unwrap_or("a stop signal")
            )),
        }
    });
    // Work still running on the runtime's threads (a blocked write, an abandoned query)
    // does not hold the process.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    // The spans still held go out, within the exporter's timeout.
    telemetry::traces::stop();
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
