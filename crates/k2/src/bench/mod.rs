//! `k2 bench`: measures the real path on this machine and prints the figures.
//!
//! - `ingest`: CSV → log → lake committed, rows/s, on the bundled sample and on synthetic
//!   ASX-format trades (10 M by default), and the bytes per trade in the lake vs the CSV.
//! - `kafka`: K2 on a Kafka cluster against librdkafka alone moving as many messages.
//! - `query`: warm latency (p50/p99 over many runs) of the everyday questions, K2's engine
//!   and DuckDB side by side on the same table.
//! - `catalog`: table load and commit latency through the Iceberg REST catalog (`k2
//!   catalog serve`) beside the SQL catalog under it.
//! - `api`: the query API under load (`wrk`) at several concurrencies.
//! - `sequence`: sequence-tracker checks per second on one core, and memory per 10 000
//!   streams; `dedup`: dedup checks per second, memory per million ids, false positives.
//! - `replay`: maximum-speed replay of a synthetic lake in timestamp order across symbols:
//!   the engine, NDJSON encoding, and the API's NDJSON and WebSocket streams.
//! - `feed`: exchange frames parsed per second, the live handler against the local
//!   simulator, and freshness (received → in a query answer) with memory over a long run.
//!
//! Each run uses a fresh data directory, so figures include every durable write. Where a
//! sample is needed and none is given, the one built into the binary is used.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;

use crate::app::App;
use crate::config::Config;
use crate::sample;

mod api;
mod catalog;
mod compaction;
mod dedup;
mod feed;
mod flight;
mod ingest;
mod kafka;
mod otlp;
mod query;
mod replay;
mod sequence;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Ingest throughput, storage per trade and commit latency; on the local disk, and
    /// beside it in the bucket `warehouse.uri` names when it names one.
    Ingest {
        /// Synthetic trades to generate (0 skips the synthetic run).
        #[arg(long, default_value_t = 10_000_000)]
        rows: u64,
        /// Companies the synthetic trades are spread over.
        #[arg(long, default_value_t = 20)]
        companies: u32,
        /// A sample directory (default: the sample built into k2).
        #[arg(long)]
        sample: Option<PathBuf>,
        /// Work here instead of a temporary directory (kept afterwards).
        #[arg(long)]
        work_dir: Option<PathBuf>,
    },
    /// K2 on the configured Kafka cluster (`log.backend = "kafka"`, an empty cluster)
    /// against librdkafka alone producing and consuming the messages K2 wrote
    /// (Debian's kcat links librdkafka 2.0.2, which cannot talk to tansu 0.6).
    Kafka {
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        #[arg(long, default_value_t = 20)]
        companies: u32,
        /// Trades timed from produce to visible in the lake (at `writer.max_age`).
        #[arg(long, default_value_t = 5)]
        latency_samples: usize,
    },
    /// Query latency over warm runs, K2's engine and DuckDB on the same table.
    Query {
        #[arg(long, default_value_t = 200)]
        runs: usize,
        /// A sample directory (default: the sample built into k2).
        #[arg(long)]
        sample: Option<PathBuf>,
        /// A Python with DuckDB 1.4 and its iceberg and avro extensions
        /// (default: the one `scripts/bench-setup` makes).
        #[arg(long)]
        duckdb_python: Option<PathBuf>,
        /// Time K2 alone.
        #[arg(long, conflicts_with = "duckdb_python")]
        no_duckdb: bool,
    },
    /// Table load and commit latency: the Iceberg REST catalog (`k2 catalog serve`, in
    /// this process on loopback) beside the SQL catalog it serves, on the sample's lake.
    Catalog {
        #[arg(long, default_value_t = 400)]
        runs: usize,
        /// A sample directory (default: the sample built into k2).
        #[arg(long)]
        sample: Option<PathBuf>,
    },
    /// The query API under load on loopback, driven by `wrk`.
    Api {
        /// Concurrent connections, one run each.
        #[arg(long, value_delimiter = ',', default_value = "1,32")]
        connections: Vec<u32>,
        /// Seconds per run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// A sample directory (default: the sample built into k2).
        #[arg(long)]
        sample: Option<PathBuf>,
        #[arg(long, default_value = "wrk")]
        wrk: String,
    },
    /// A whole day's trades into pyarrow over Arrow Flight SQL beside the same answer over
    /// `POST /v1/sql` as Arrow IPC (synthetic trades; a Python client).
    Flight {
        /// Synthetic trades over five trading days.
        #[arg(long, default_value_t = 2_000_000)]
        rows: u64,
        /// Companies the trades are spread over.
        #[arg(long, default_value_t = 20)]
        companies: u32,
        /// Fetches per path.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// A Python with adbc-driver-flightsql and pyarrow (default: scripts/python-env's).
        #[arg(long)]
        python: Option<PathBuf>,
    },
    /// The live path against the local exchange simulator: parse rate, handler
    /// throughput into the log, freshness over lake ∪ tail, memory over the run.
    Feed {
        /// Trades of the parse and handler runs.
        #[arg(long, default_value_t = 1_000_000)]
        messages: u64,
        /// Trades per second of the freshness run.
        #[arg(long, default_value_t = 2_000)]
        rate: u32,
        /// Length of the freshness run (600 for the 10-minute memory figure).
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// `log.retention` over the run, so the log's size over a short run shows it
        /// bounded (records go only once the writer committed them).
        #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
        log_retention: Duration,
    },
    /// Maximum-speed replay of a synthetic lake (every symbol, the whole range, in
    /// timestamp order): the engine, NDJSON encoding, and the API's two streams.
    Replay {
        /// Synthetic trades in the lake.
        #[arg(long, default_value_t = 5_000_000)]
        rows: u64,
        /// Companies (symbols) the trades are spread over.
        #[arg(long, default_value_t = 20)]
        companies: u32,
    },
    /// Dedup checks per second (one core), memory per million ids, false positives.
    Dedup {
        /// Ids the window holds (distinct records).
        #[arg(long, default_value_t = 10_000_000)]
        ids: u64,
        /// Also measure claims shared in the Redis at this `host:port`.
        #[arg(long)]
        redis: Option<String>,
    },
    /// Sequence-tracker checks per second (one core) and memory per 10 000 streams.
    Sequence {
        /// Checks per workload.
        #[arg(long, default_value_t = 200_000_000)]
        checks: u64,
        /// Streams the checks are spread over.
        #[arg(long, default_value_t = 10_000)]
        streams: u32,
        /// Also measure the Redis-backed tracker against the Redis at this `host:port`.
        #[arg(long)]
        redis: Option<String>,
    },
}

pub async fn run(config: Config, command: BenchCommand) -> anyhow::Result<ExitCode> {
    // The built-in sample, unpacked here when no sample directory is given.
    let unpacked = tempfile::tempdir()?;
    let sample = |given: Option<PathBuf>| match given {
        Some(dir) => sample::check(&dir),
        None => sample::unpack(unpacked.path()),
    };
    match command {
        BenchCommand::Ingest {
            rows,
            companies,
            sample: given,
            work_dir,
        } => {
            let tmp = tempfile::tempdir()?;
            let root = work_dir.unwrap_or_else(|| tmp.path().to_path_buf());
            ingest::run(&config, &sample(given)?, rows, companies, &root).await?;
        }
        BenchCommand::Sequence {
            checks,
            streams,
            redis,
        } => {
            sequence::run(checks, streams.max(1));
            if let Some(addr) = redis {
                sequence::redis(&addr, streams.max(1)).await?;
            }
        }
        BenchCommand::Feed {
            messages,
            rate,
            seconds,
            log_retention,
        } => {
            feed::run(
                config,
                messages.max(1),
                rate.max(1),
                seconds.max(1),
                log_retention,
            )
            .await?
        }
        BenchCommand::Replay { rows, companies } => {
            replay::run(config, rows.max(1), companies.max(1)).await?
        }
        BenchCommand::Dedup { ids, redis } => {
            dedup::run(ids.max(1));
            if let Some(addr) = redis {
                dedup::redis(&addr).await?;
            }
        }
        BenchCommand::Kafka {
            rows,
            companies,
            latency_samples,
        } => {
            kafka::run(
                &config,
                rows.max(1),
                companies.max(1),
                latency_samples.max(1),
            )
            .await?
        }
        BenchCommand::Query {
            runs,
            sample: given,
            duckdb_python,
            no_duckdb,
        } => {
            let (_tmp, app) = sample_lake(config, &sample(given)?).await?;
            let python = match (no_duckdb, duckdb_python) {
                (true, _) => None,
                (false, Some(p)) => Some(p),
                (false, None) => Some(query::default_python().context(
                    "no HOME to find DuckDB under: pass --duckdb-python or --no-duckdb",
                )?),
            };
            query::run(&app, runs, python.as_deref()).await?;
        }
        BenchCommand::Catalog {
            runs,
            sample: given,
        } => {
            let (_tmp, app) = sample_lake(config, &sample(given)?).await?;
            catalog::run(&app, runs.max(1)).await?;
        }
        BenchCommand::Flight {
            rows,
            companies,
            runs,
            python,
        } => {
            let python = python
                .or_else(flight::default_python)
                .context("no Python given (--python) and no HOME to find scripts/python-env's")?;
            flight::run(config, rows, companies.max(1), runs.max(1), &python).await?;
        }
        BenchCommand::Api {
            connections,
            seconds,
            sample: given,
            wrk,
        } => {
            let (_tmp, app) = sample_lake(config, &sample(given)?).await?;
            api::run(&app, &connections, Duration::from_secs(seconds), &wrk).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The sample ingested and committed in a fresh data directory (gone with the guard).
async fn sample_lake(
    mut config: Config,
    sample: &Path,
) -> anyhow::Result<(tempfile::TempDir, App)> {
    let tmp = tempfile::tempdir()?;
    config.data_dir = tmp.path().to_path_buf();
    let app = App::open(config).await?;
    app.ingest_asx(sample).await?;
    app.consume(true).await?;
    Ok((tmp, app))
}

/// Where the Redis benches keep their keys: under a prefix of their own.
fn redis_target(addr: &str) -> k2_lake::RedisTarget {
    k2_lake::RedisTarget {
        addr: addr.to_string(),
        prefix: "k2bench".into(),
        timeout: Duration::from_secs(10),
    }
}
