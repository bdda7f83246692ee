//! `k2`: the market-data lakehouse in one binary.
//!
//! # Layout
//!
//! - `config` — defaults, TOML file, `K2_…` environment overrides.
//! - `telemetry` — tracing logs and the Prometheus endpoint.
//! - `app` — the stores a command opens; ingest and consume.
//! - `demo` — the main job on the bundled sample.
//! - `bench` — benchmarks that print figures.
//! - `registry` — the Confluent Schema Registry REST API on K2's schema tables.
//! - `serve` — the query API (`k2_api`) with its dependencies' readiness checks.
//! - `output`: tables, CSV, JSON and Parquet output (rows as `k2_api::present` shows them).

mod app;
mod bench;
mod config;
mod demo;
mod output;
mod registry;
mod serve;
mod telemetry;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use chrono::{DateTime, NaiveDate};
use clap::{Args, Parser, Subcommand};
use k2_lake::LakeTable;
use k2_lake::query::{BarInterval, MarketFilter};
use k2_model::exchange;

use k2_api::present;

use crate::app::App;
use crate::config::Config;
use crate::output::{Format, render, to_batches};

// The pipeline allocates per record; mimalloc measured faster than the system allocator here.
#[cfg(all(feature = "mimalloc", not(feature = "heap-stats")))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "heap-stats")]
#[global_allocator]
static ALLOCATOR: heap::Counting = heap::Counting;

/// Live heap bytes (allocated and not yet freed), when built with the `heap-stats` feature:
/// `k2 bench feed` prints them next to resident memory, which tells memory the program
/// holds from memory the allocator keeps after it was freed.
pub(crate) fn heap_live_bytes() -> Option<u64> {
    #[cfg(feature = "heap-stats")]
    return Some(heap::live());
    #[cfg(not(feature = "heap-stats"))]
    None
}

#[cfg(feature = "heap-stats")]
mod heap {
    use std::alloc::{GlobalAlloc, Layout};
    use std::sync::atomic::{AtomicIsize, Ordering};

    /// mimalloc with one shared counter of live bytes: an atomic add per allocation and
    /// per free, which is why it is a build feature and not always on.
    pub struct Counting;

    static LIVE: AtomicIsize = AtomicIsize::new(0);

    pub fn live() -> u64 {
        LIVE.load(Ordering::Relaxed).max(0) as u64
    }

    // SAFETY: every call is passed to mimalloc unchanged; the counter only observes.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { mimalloc::MiMalloc.alloc(layout) };
            if !p.is_null() {
                LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
            }
            p
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) };
            if !p.is_null() {
                LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
            }
            p
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) };
            LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let p = unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                LIVE.fetch_add(
                    new_size as isize - layout.size() as isize,
                    Ordering::Relaxed,
                );
            }
            p
        }
    }
}

/// Turns transparent huge pages off for this process (see docs/design.md, "Memory"): the
/// allocator asks for them, and a 2 MB page faulted in whole for a few bytes, split when
/// part of it is returned and gathered again by the kernel later, made resident memory
/// grow in steps while live data stayed flat, and held back freshness.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE sets one flag of the calling process; no pointers.
        let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if rc != 0 {
            eprintln!(
                "warning: could not turn transparent huge pages off: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

#[derive(Parser)]
#[command(
    name = "k2",
    version,
    about = "K2: market data captured, kept and answered exactly"
)]
struct Cli {
    /// Configuration file (default: ./k2.toml when present).
    #[arg(long, global = true, env = "K2_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (overrides the configuration).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ingest the bundled ASX sample, land it in the lake, and answer a few questions.
    Demo {
        /// The sample directory.
        #[arg(long, default_value = "samples/asx-2014-03")]
        sample: PathBuf,
    },
    /// Read a source into the log.
    Ingest {
        #[command(subcommand)]
        source: IngestSource,
    },
    /// Capture a live exchange feed into the log until SIGINT/SIGTERM. Exits non-zero when
    /// the feed gives up (`feeds.max_failures` failed connections in a row).
    Feed {
        /// binance or kraken.
        venue: String,
        /// Comma-separated symbols (default: `feeds.<venue>.symbols`).
        #[arg(long, value_delimiter = ',')]
        symbols: Option<Vec<String>>,
        /// The feed's URL (default: `feeds.<venue>.url`, with its fallbacks).
        #[arg(long)]
        url: Option<String>,
    },
    /// Run the feeds of `feeds.run`, the lake writer and the query API in one process,
    /// until SIGINT/SIGTERM (feeds stop first, what they hold reaches the log, the writer
    /// commits, the API drains).
    Up {
        /// Overrides `api.listen`.
        #[arg(long)]
        listen: Option<String>,
        /// Comma-separated venues (overrides `feeds.run`).
        #[arg(long, value_delimiter = ',')]
        feeds: Option<Vec<String>>,
    },
    /// Run the lake writer: log → Iceberg tables, exactly once.
    Consume {
        /// Stop once everything in the log is committed (default: run until SIGTERM).
        #[arg(long)]
        until_caught_up: bool,
    },
    /// Ask the lake.
    Query {
        #[command(subcommand)]
        query: QueryCommand,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Replay trades or quotes of a time range from the lake, in timestamp order across
    /// symbols, as NDJSON on standard output (a summary goes to standard error).
    Replay(ReplayArgs),
    /// Read-only SQL over `trades`, `quotes` and `reference_data.companies`.
    Sql {
        sql: String,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Inspect rejected records.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// The log's topics: create K2's by the naming convention, list, describe.
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Serve the query API over HTTP until SIGINT/SIGTERM (`--listen 127.0.0.1:0` picks a
    /// free port; the address is printed). Documented at /docs and /openapi.json.
    Serve {
        /// Overrides `api.listen`.
        #[arg(long)]
        listen: Option<String>,
    },
    /// API keys: `new` makes one and prints the entry for `[[api.keys]]`.
    ApiKey {
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
    /// The schema registry: serve the Confluent Schema Registry REST API for stock clients.
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
    /// The commit audit: every Iceberg commit of the lake writer, oldest first.
    Audit {
        /// Only this table (`trades`, `quotes`, `companies` or a qualified name).
        #[arg(long)]
        table: Option<String>,
        /// The newest N entries.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Measure K2 and print the figures.
    Bench {
        #[command(subcommand)]
        bench: bench::BenchCommand,
    },
}

#[derive(Subcommand)]
enum IngestSource {
    /// A directory in the ASX sample layout (trades/, quotes/, reference-data/).
    Asx { dir: PathBuf },
}

#[derive(Args)]
struct OutputArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "table", global = true)]
    format: Format,
    /// Write to this file instead of standard output (required for parquet).
    #[arg(long, short, global = true)]
    output: Option<PathBuf>,
}

#[derive(Args, Clone)]
struct MarketArgs {
    #[arg(long)]
    symbol: Option<String>,
    #[arg(long)]
    exchange: Option<String>,
    /// One trading day (YYYY-MM-DD) in the exchange's time zone.
    #[arg(long, conflicts_with_all = ["start", "end"])]
    date: Option<NaiveDate>,
    /// Inclusive start: RFC 3339 time, or a date (the start of that trading day).
    #[arg(long)]
    start: Option<String>,
    /// Exclusive end: RFC 3339 time, or a date (the start of that trading day).
    #[arg(long)]
    end: Option<String>,
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Answer as of this snapshot id (time travel).
    #[arg(long)]
    snapshot: Option<i64>,
}

#[derive(Args)]
struct ReplayArgs {
    /// trades or quotes.
    #[arg(long, default_value = "trades")]
    data_type: String,
    /// Symbols to replay (comma-separated; default: all).
    #[arg(long, value_delimiter = ',')]
    symbols: Vec<String>,
    /// Exchanges to replay (comma-separated; default: all). The first one's time zone
    /// places dates.
    #[arg(long, value_delimiter = ',')]
    exchanges: Vec<String>,
    /// One trading day (YYYY-MM-DD).
    #[arg(long, conflicts_with_all = ["start", "end"])]
    date: Option<NaiveDate>,
    /// Inclusive start: RFC 3339 time, or a date (the start of that trading day).
    #[arg(long, requires = "end")]
    start: Option<String>,
    /// Exclusive end: RFC 3339 time, or a date.
    #[arg(long, requires = "start")]
    end: Option<String>,
    /// `max`, or a factor of the recorded pace (1 = as it happened, 10 = ten times faster).
    #[arg(long, default_value = "max")]
    speed: String,
    /// Columns (comma-separated; default: every column of the table).
    #[arg(long, value_delimiter = ',')]
    fields: Vec<String>,
    /// Replay the table as of this snapshot id.
    #[arg(long)]
    snapshot: Option<i64>,
    /// Write to this file instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

#[derive(Subcommand)]
enum QueryCommand {
    /// Trades, newest first.
    Trades(MarketArgs),
    /// Quotes, newest first.
    Quotes(MarketArgs),
    /// Daily open/high/low/close/volume/VWAP for one symbol and trading day.
    Summary {
        symbol: String,
        date: NaiveDate,
        #[arg(long)]
        exchange: Option<String>,
        #[arg(long)]
        snapshot: Option<i64>,
    },
    /// OHLCV bars over trading days.
    Ohlcv {
        symbol: String,
        /// 1m, 5m, 15m, 30m, 1h or 1d.
        #[arg(long, default_value = "1h")]
        interval: String,
        #[arg(long)]
        from: NaiveDate,
        /// Last trading day (default: --from).
        #[arg(long)]
        to: Option<NaiveDate>,
        #[arg(long)]
        exchange: Option<String>,
        #[arg(long)]
        snapshot: Option<i64>,
    },
    /// Distinct symbols.
    Symbols {
        #[arg(long)]
        exchange: Option<String>,
    },
    /// Snapshots of a table (trades, quotes or companies).
    Snapshots {
        #[arg(long, default_value = "trades")]
        table: String,
    },
}

#[derive(Subcommand)]
enum ApiKeyCommand {
    /// A new random key; only its SHA-256 digest goes into the configuration.
    New {
        /// Who holds it (shown in access logs).
        #[arg(long)]
        name: String,
        /// Comma-separated: read, sql, admin.
        #[arg(long, value_delimiter = ',', default_value = "read")]
        scopes: Vec<String>,
    },
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

#[derive(Subcommand)]
enum TopicsCommand {
    /// Creates an exchange's topics if missing (trades and quotes: `log.partitions`
    /// partitions, deleted after 7 days; reference data: one compacted partition). An
    /// existing topic must have the same partition count.
    Create {
        #[arg(long, default_value = "asx")]
        exchange: String,
        #[arg(long, default_value = "equities")]
        asset_class: String,
        /// Partitions of trades and quotes (default: `log.partitions`).
        #[arg(long)]
        partitions: Option<u32>,
    },
    /// Every topic with its partitions, cleanup, retention and record count.
    List,
    /// One topic per partition: end offset, the lake writer's group offset and its lag.
    Describe { topic: String },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Dead letters, oldest first.
    List {
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long, default_value_t = 0)]
        skip: usize,
    },
    /// One dead letter in full, raw record included.
    Show { id: u64 },
    /// Run dead letters again through the current parser and decoder: those that pass now
    /// are appended to the log (the lake writer lands them) and removed; the others keep
    /// their letter with the reason found now.
    Replay {
        /// Letters examined, oldest first.
        #[arg(long, default_value_t = 1_000_000)]
        limit: usize,
    },
}

fn main() -> ExitCode {
    no_transparent_huge_pages();
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
    let service = matches!(
        cli.command,
        Command::Ingest { .. }
            | Command::Consume { .. }
            | Command::Serve { .. }
            | Command::Feed { .. }
            | Command::Up { .. }
    );
    telemetry::init_logs(&config.telemetry, service);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli.command, config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Demo { sample } => demo::run(App::open(config).await?, &sample).await,
        Command::Bench { bench } => bench::run(config, bench).await,
        Command::Ingest {
            source: IngestSource::Asx { dir },
        } => {
            telemetry::serve_metrics(&config.telemetry)?;
            let app = App::open(config).await?;
            let outcome = tokio::select! {
                summary = app.ingest_asx(&dir) => Some(summary),
                () = app::shutdown_signal() => None,
            };
            // Whatever the producer still holds is delivered before the process ends; a
            // chunk whose checkpoint was not stored is sent again by the next run (the
            // lake drops the copies by message id).
            let undelivered = app.log.close(std::time::Duration::from_secs(30));
            if undelivered > 0 {
                eprintln!("ingest: {undelivered} records were not delivered to the log");
            }
            match outcome {
                None => {
                    eprintln!("ingest: interrupted; the next run resumes from the last checkpoint");
                    Ok(ExitCode::FAILURE)
                }
                Some(summary) => {
                    let summary = summary?;
                    Ok(
                        if summary.failed_files().next().is_some() || undelivered > 0 {
                            ExitCode::FAILURE
                        } else {
                            ExitCode::SUCCESS
                        },
                    )
                }
            }
        }
        Command::Feed {
            venue,
            symbols,
            url,
        } => {
            telemetry::serve_metrics(&config.telemetry)?;
            let venue = config::venue(&venue)?;
            let (feed, reconnect) = config.feed(venue, symbols, url)?;
            let app = App::open(config).await?;
            let outcome = app.capture(feed, reconnect, app::stop_on_signal()).await;
            let undelivered = app.log.close(std::time::Duration::from_secs(30));
            if undelivered > 0 {
                eprintln!("feed: {undelivered} records were not delivered to the log");
            }
            outcome?;
            Ok(if undelivered > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Up { listen, feeds } => {
            serve::up(config, listen, feeds).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Consume { until_caught_up } => {
            telemetry::serve_metrics(&config.telemetry)?;
            App::open(config).await?.consume(until_caught_up).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Query { query, out } => {
            // Queries read the lake only: they work while the log is unreachable.
            let batches = query_batches(&config, query).await?;
            render(&batches, out.format, out.output.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay(args) => {
            replay(&config, args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sql { sql, out } => {
            let answer = app::engine(&config).await?.sql(&sql).await?;
            render(&answer.batches, out.format, out.output.as_deref())?;
            if let Some(max) = answer.truncated_at {
                eprintln!(
                    "the result has more than {max} rows and was cut there (query.max_rows): add a LIMIT, aggregate, or raise query.max_rows"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { table, limit, out } => {
            let table = match table.as_deref() {
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
            let skip = chosen.len().saturating_sub(limit);
            eprintln!("{} commits audited", chosen.len());
            let rows: Vec<present::AuditRow> = chosen[skip..].iter().map(|e| (*e).into()).collect();
            render(&to_batches(&rows)?, out.format, out.output.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { listen } => {
            serve::run(config, listen).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::ApiKey {
            command: ApiKeyCommand::New { name, scopes },
        } => {
            for s in &scopes {
                if !["read", "sql", "admin"].contains(&s.as_str()) {
                    bail!("unknown scope '{s}': use read, sql or admin");
                }
            }
            let key = k2_api::generate_key();
            eprintln!("the key (shown once; give it to {name}):");
            println!("{key}");
            eprintln!("\nadd to k2.toml (or to api.keys_file as [[keys]]):");
            eprintln!(
                "[[api.keys]]\nname = {name:?}\nsha256 = \"{}\"\nscopes = {scopes:?}",
                k2_api::digest_hex(&key)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Registry {
            command: RegistryCommand::Serve { listen },
        } => {
            let schemas = app::schemas(&config)?;
            registry::serve(schemas, &listen, app::shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Topics { command, out } => {
            let app = App::open(config).await?;
            let rows = app::topics(&app, command_to_request(command)?).await?;
            render(&to_batches(&rows)?, out.format, out.output.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq { command, out } => {
            let app = App::open(config).await?;
            match command {
                DlqCommand::List { limit, skip } => {
                    let letters = app.dlq.list(skip, limit)?;
                    eprintln!("{} dead letters stored", app.dlq.len()?);
                    let rows: Vec<present::DeadLetterRow> =
                        letters.iter().map(Into::into).collect();
                    render(&to_batches(&rows)?, out.format, out.output.as_deref())?;
                }
                DlqCommand::Show { id } => {
                    let Some(letter) = app.dlq.get(id)? else {
                        bail!("no dead letter {id} (k2 dlq list shows the ids stored)");
                    };
                    let row = present::DeadLetterRow::from(&(id, letter));
                    match out.format {
                        Format::Table => {
                            let json = serde_json::to_value(&row)?;
                            for (k, v) in json.as_object().expect("a row is an object") {
                                let v = v.as_str().map_or_else(|| v.to_string(), String::from);
                                println!("{k:>12}: {v}");
                            }
                        }
                        format => render(&to_batches(&[row])?, format, out.output.as_deref())?,
                    }
                }
                DlqCommand::Replay { limit } => {
                    let report = k2_ingest::replay_dead_letters(&app.log, &app.dlq, limit).await?;
                    println!(
                        "{} dead letters examined: {} pass now (appended to the log, letters removed), {} still fail (reasons refreshed), {} of a stage that cannot be replayed",
                        report.examined,
                        report.replayed,
                        report.still_failing,
                        report.not_replayable
                    );
                    for (topic, n) in &report.appended {
                        println!("  {n:>8} → {topic}");
                    }
                    if report.replayed > 0 {
                        println!(
                            "The lake writer lands them: k2 consume --until-caught-up (or the running writer)."
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `k2 replay`: rows as NDJSON lines, in order, paced when asked; a reader that stops
/// reading (`| head`) ends the replay quietly.
async fn replay(config: &Config, a: ReplayArgs) -> anyhow::Result<()> {
    use k2_lake::replay::{ReplayRequest, ReplaySpeed};
    use std::io::Write;
    let table = match a.data_type.as_str() {
        "trades" => LakeTable::Trades,
        "quotes" => LakeTable::Quotes,
        other => bail!("--data-type must be trades or quotes, not '{other}'"),
    };
    let ex = a.exchanges.first().map(String::as_str);
    let (start_us, end_us) = match (a.date, a.start.as_deref(), a.end.as_deref()) {
        (Some(d), _, _) => {
            exchange::day_bounds_us(ex.map_or(chrono_tz::UTC, exchange::time_zone), d)
        }
        (None, Some(s), Some(e)) => (parse_time(s, ex)?, parse_time(e, ex)?),
        _ => bail!("give --date, or --start and --end"),
    };
    let speed = ReplaySpeed::parse(&a.speed).context("--speed")?;
    let engine = std::sync::Arc::new(app::engine(config).await?);
    let started = std::time::Instant::now();
    let mut replay = engine
        .replay(ReplayRequest {
            table,
            symbols: a.symbols,
            exchanges: a.exchanges,
            start_us,
            end_us,
            fields: a.fields,
            speed,
            snapshot: a.snapshot,
            options: Default::default(),
        })
        .await?;
    let mut out: Box<dyn Write> = match &a.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let paced = speed != ReplaySpeed::Max;
    let mut closed = false;
    while let Some(batch) = replay.next().await? {
        let lines = k2_api::format::ndjson(&batch).map_err(|e| anyhow::anyhow!("{e}"))?;
        let written = out
            .write_all(&lines)
            .and_then(|()| if paced { out.flush() } else { Ok(()) });
        match written {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                closed = true;
                break;
            }
            Err(e) => return Err(e).context("writing the replay"),
        }
    }
    if !closed
        && let Err(e) = out.flush()
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(e).context("writing the replay");
    }
    let stats = replay.stats();
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "replayed {} {} of snapshot {} in {seconds:.2}s ({:.0} rows/s; {} windows, {} runs merged){}",
        stats.rows,
        table.name(),
        replay
            .snapshot_id()
            .map_or_else(|| "none (empty table)".into(), |id| id.to_string()),
        stats.rows as f64 / seconds.max(1e-9),
        stats.windows,
        stats.runs,
        if closed {
            "; the reader stopped early"
        } else {
            ""
        }
    );
    Ok(())
}

/// A time given as RFC 3339, or a date meaning the start of that trading day.
fn parse_time(text: &str, exchange: Option<&str>) -> anyhow::Result<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_micros());
    }
    let date: NaiveDate = text
        .parse()
        .with_context(|| format!("'{text}' is neither an RFC 3339 time nor a YYYY-MM-DD date"))?;
    let tz = exchange.map_or(chrono_tz::UTC, exchange::time_zone);
    Ok(exchange::day_bounds_us(tz, date).0)
}

fn market_filter(a: &MarketArgs) -> anyhow::Result<MarketFilter> {
    if a.limit == 0 || a.limit > 1_000_000 {
        bail!("--limit must be between 1 and 1000000");
    }
    let ex = a.exchange.as_deref();
    let (start_us, end_us) = match a.date {
        Some(d) => {
            let (s, e) = exchange::day_bounds_us(ex.map_or(chrono_tz::UTC, exchange::time_zone), d);
            (Some(s), Some(e))
        }
        None => (
            a.start.as_deref().map(|s| parse_time(s, ex)).transpose()?,
            a.end.as_deref().map(|s| parse_time(s, ex)).transpose()?,
        ),
    };
    Ok(MarketFilter {
        symbols: a.symbol.iter().cloned().collect(),
        exchanges: a.exchange.iter().cloned().collect(),
        start_us,
        end_us,
        limit: a.limit,
        ..Default::default()
    })
}

fn command_to_request(command: TopicsCommand) -> anyhow::Result<app::TopicsRequest> {
    Ok(match command {
        TopicsCommand::Create {
            exchange,
            asset_class,
            partitions,
        } => {
            let asset_class = asset_class
                .parse()
                .map_err(|e| anyhow::anyhow!("--asset-class: {e}"))?;
            let exchange = exchange.to_ascii_lowercase();
            if exchange.is_empty() || !exchange.chars().all(|c| c.is_ascii_alphanumeric()) {
                bail!("--exchange must be letters and digits, not '{exchange}'");
            }
            app::TopicsRequest::Create {
                exchange,
                asset_class,
                partitions,
            }
        }
        TopicsCommand::List => app::TopicsRequest::List,
        TopicsCommand::Describe { topic } => app::TopicsRequest::Describe(topic),
    })
}

async fn query_batches(
    config: &Config,
    query: QueryCommand,
) -> anyhow::Result<Vec<arrow::array::RecordBatch>> {
    let engine = app::engine(config).await?;
    Ok(match query {
        QueryCommand::Trades(a) => {
            engine
                .trades(&market_filter(&a)?, a.snapshot)
                .await?
                .batches
        }
        QueryCommand::Quotes(a) => {
            engine
                .quotes(&market_filter(&a)?, a.snapshot)
                .await?
                .batches
        }
        QueryCommand::Summary {
            symbol,
            date,
            exchange,
            snapshot,
        } => {
            match engine
                .daily_summary(&symbol, date, exchange.as_deref(), snapshot)
                .await?
            {
                Some(s) => to_batches(&[present::SummaryRow::from(&s)])?,
                None => bail!("no trades of {symbol} on {date}"),
            }
        }
        QueryCommand::Ohlcv {
            symbol,
            interval,
            from,
            to,
            exchange,
            snapshot,
        } => {
            let interval = BarInterval::parse(&interval)?;
            let bars = engine
                .ohlcv(
                    &symbol,
                    interval,
                    from,
                    to.unwrap_or(from),
                    exchange.as_deref(),
                    snapshot,
                )
                .await?;
            to_batches(&bars.iter().map(present::BarRow::from).collect::<Vec<_>>())?
        }
        QueryCommand::Symbols { exchange } => {
            let symbols = engine.symbols(exchange.as_deref()).await?;
            #[derive(serde::Serialize)]
            struct Row {
                symbol: String,
            }
            to_batches(
                &symbols
                    .into_iter()
                    .map(|symbol| Row { symbol })
                    .collect::<Vec<_>>(),
            )?
        }
        QueryCommand::Snapshots { table } => {
            let table = LakeTable::parse(&table).with_context(|| {
                format!("unknown table '{table}': use trades, quotes or companies")
            })?;
            let snaps = engine.snapshots(table).await?;
            to_batches(
                &snaps
                    .iter()
                    .map(present::SnapshotRow::from)
                    .collect::<Vec<_>>(),
            )?
        }
    })
}
