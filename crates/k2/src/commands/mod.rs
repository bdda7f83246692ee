//! The command line: every command, its arguments, and where it runs. One module per
//! command; the jobs several commands share live in `crate::app`.

mod api_key;
mod audit;
mod catalog;
mod compact;
mod consume;
mod demo;
mod dlq;
mod feed;
mod ingest;
mod query;
mod registry;
mod replay;
mod serve;
mod snapshot;
mod sql;
mod times;
mod topics;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::output::Format;

#[derive(Parser)]
#[command(
    name = "k2",
    version,
    about = "K2: market data captured, kept and answered exactly"
)]
pub struct Cli {
    /// Configuration file (default: ./k2.toml when present).
    #[arg(long, global = true, env = "K2_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (overrides the configuration).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Ingest the bundled ASX sample, land it in the lake, and answer a few questions.
    Demo(demo::DemoArgs),
    /// Read a source into the log.
    Ingest(ingest::IngestArgs),
    /// Capture a live exchange feed into the log until SIGINT/SIGTERM. Exits non-zero when
    /// the feed gives up (`feeds.max_failures` failed connections in a row).
    Feed(feed::FeedArgs),
    /// Run the feeds of `feeds.run`, the lake writer and the query API in one process,
    /// until SIGINT/SIGTERM (feeds stop first, what they hold reaches the log, the writer
    /// commits, the API drains).
    Up(up::UpArgs),
    /// Run the lake writer: log → Iceberg tables, exactly once.
    Consume(consume::ConsumeArgs),
    /// Ask the lake.
    Query(query::QueryArgs),
    /// Replay trades or quotes of a time range from the lake, in timestamp order across
    /// symbols, as NDJSON on standard output (a summary goes to standard error).
    Replay(replay::ReplayArgs),
    /// Read-only SQL over `trades`, `quotes` and `reference_data.companies`.
    Sql(sql::SqlArgs),
    /// The Iceberg REST catalog: `serve` answers the spec over K2's SQL catalog, so stock
    /// engines (PyIceberg, DuckDB, Spark, Trino) and other K2 processes attach the lake by URL.
    Catalog(catalog::CatalogArgs),
    /// Rewrite the small files of the market tables' day partitions into files of the
    /// target size, sorted, as one `replace` snapshot per table.
    Compact(compact::CompactArgs),
    /// Named snapshots (tags): kept past expiry, answered from with `--snapshot NAME`.
    Snapshot(snapshot::SnapshotArgs),
    /// Inspect rejected records.
    Dlq(dlq::DlqArgs),
    /// The log's topics: create K2's by the naming convention, list, describe.
    Topics(topics::TopicsArgs),
    /// Serve the query API over HTTP until SIGINT/SIGTERM (`--listen 127.0.0.1:0` picks a
    /// free port; the address is printed). Documented at /docs and /openapi.json.
    Serve(serve::ServeArgs),
    /// API keys: `new` makes one and prints the entry for `[[api.keys]]`.
    ApiKey(api_key::ApiKeyArgs),
    /// The schema registry: serve the Confluent Schema Registry REST API for stock clients.
    Registry(registry::RegistryArgs),
    /// The commit audit: every Iceberg commit of the lake writer, oldest first.
    Audit(audit::AuditArgs),
    /// Measure K2 and print the figures.
    Bench {
        #[command(subcommand)]
        bench: crate::bench::BenchCommand,
    },
}

impl Command {
    /// A long-running service (logs at `info` by default, and on SIGINT/SIGTERM lands what
    /// it holds before it returns) rather than an interactive command (`warn`, and
    /// interrupted at once).
    pub fn is_service(&self) -> bool {
        matches!(
            self,
            Command::Ingest(_)
                | Command::Consume(_)
                | Command::Serve(_)
                | Command::Feed(_)
                | Command::Up(_)
                | Command::Catalog(_)
                | Command::Registry(_)
        )
    }
}

/// Where a command's table output goes.
#[derive(Args)]
pub struct OutputArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "table", global = true)]
    pub format: Format,
    /// Write to this file instead of standard output (required for parquet).
    #[arg(long, short, global = true)]
    pub output: Option<PathBuf>,
}

impl OutputArgs {
    /// Writes `batches` in the chosen format, where the arguments say.
    pub fn render(&self, batches: &[arrow::array::RecordBatch]) -> anyhow::Result<()> {
        crate::output::render(batches, self.format, self.output.as_deref())
    }

    /// [`render`](Self::render) of rows of a serialisable type.
    pub fn rows<T: serde::Serialize>(&self, rows: &[T]) -> anyhow::Result<()> {
        self.render(&crate::output::to_batches(rows)?)
    }
}

pub async fn run(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Demo(a) => demo::run(config, a).await,
        Command::Ingest(a) => ingest::run(config, a).await,
        Command::Feed(a) => feed::run(config, a).await,
        Command::Up(a) => up::run(config, a).await,
        Command::Consume(a) => consume::run(config, a).await,
        Command::Query(a) => query::run(config, a).await,
        Command::Replay(a) => replay::run(config, a).await,
        Command::Sql(a) => sql::run(config, a).await,
        Command::Catalog(a) => catalog::run(config, a).await,
        Command::Compact(a) => compact::run(config, a).await,
        Command::Snapshot(a) => snapshot::run(config, a).await,
        Command::Dlq(a) => dlq::run(config, a).await,
        Command::Topics(a) => topics::run(config, a).await,
        Command::Serve(a) => serve::run(config, a).await,
        Command::ApiKey(a) => api_key::run(a),
        Command::Registry(a) => registry::run(config, a).await,
        Command::Audit(a) => audit::run(config, a),
        Command::Bench { bench } => crate::bench::run(config, bench).await,
    }
}

/// A venue by its name on the command line.
pub fn venue(name: &str) -> anyhow::Result<k2_ingest::Venue> {
    k2_ingest::Venue::from_name(name).with_context(|| k2_ingest::feeds::config::unknown_venue(name))
}
