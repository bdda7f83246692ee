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
mod memory;
mod output;
mod registry;
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
    for warning in &config.warnings {
        tracing::warn!("configuration: {warning}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(commands::run(cli.command, config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
