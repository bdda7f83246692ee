//! `k2 replay`: a time range of trades or quotes as NDJSON lines, in timestamp order
//! across symbols, paced when asked; a reader that stops reading (`| head`) ends the
//! replay quietly.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use chrono::NaiveDate;
use clap::Args;
use k2_lake::LakeTable;
use k2_lake::replay::{ReplayRequest, ReplaySpeed};

use super::times::{day_bounds, parse_time};
use crate::app;
use crate::config::Config;

#[derive(Args)]
pub struct ReplayArgs {
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

pub async fn run(config: Config, a: ReplayArgs) -> anyhow::Result<ExitCode> {
    let table = match a.data_type.as_str() {
        "trades" => LakeTable::Trades,
        "quotes" => LakeTable::Quotes,
        other => bail!("--data-type must be trades or quotes, not '{other}'"),
    };
    let ex = a.exchanges.first().map(String::as_str);
    let (start_us, end_us) = match (a.date, a.start.as_deref(), a.end.as_deref()) {
        (Some(d), _, _) => day_bounds(d, ex),
        (None, Some(s), Some(e)) => (parse_time(s, ex)?, parse_time(e, ex)?),
        _ => bail!("give --date, or --start and --end"),
    };
    let speed = ReplaySpeed::parse(&a.speed).context("--speed")?;
    let engine = Arc::new(app::engine(&config).await?);
    let started = Instant::now();
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
    Ok(ExitCode::SUCCESS)
}
