//! `k2 query`: the lake's everyday questions (trades, quotes, daily summaries, bars,
//! symbols, snapshots, the completeness ledger), with time travel.

use std::process::ExitCode;

use anyhow::{Context, bail};
use arrow::array::RecordBatch;
use chrono::NaiveDate;
use clap::{Args, Subcommand};
use k2_api::present;
use k2_lake::LakeTable;
use k2_lake::query::{BarInterval, LedgerFilter, LedgerView, MarketFilter, Pin};
use k2_pipeline::GapStatus;

use super::OutputArgs;
use super::times::{day_bounds, parse_time};
use crate::app;
use crate::config::Config;
use crate::output::to_batches;

#[derive(Args)]
pub struct QueryArgs {
    #[command(subcommand)]
    query: QueryCommand,
    #[command(flatten)]
    out: OutputArgs,
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
        #[command(flatten)]
        pin: PinArgs,
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
        #[command(flatten)]
        pin: PinArgs,
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
    /// The completeness ledger's gaps: every gap found, closed ones first, with its size,
    /// status (open, filled, lost) and when it was found and closed.
    Gaps {
        #[command(flatten)]
        ledger: LedgerArgs,
        /// Only gaps in this state: open, filled or lost.
        #[arg(long, value_parser = ["open", "filled", "lost"])]
        status: Option<String>,
    },
    /// The completeness ledger per stream: sequences, received, gaps, late fills, missing,
    /// lost, duplicates, resets.
    Completeness {
        #[command(flatten)]
        ledger: LedgerArgs,
    },
}

#[derive(Args, Clone)]
struct LedgerArgs {
    /// trades or quotes (default: both).
    #[arg(long, value_parser = ["trades", "quotes"])]
    table: Option<String>,
    #[arg(long)]
    exchange: Option<String>,
    #[arg(long)]
    symbol: Option<String>,
    #[command(flatten)]
    pin: PinArgs,
}

impl LedgerArgs {
    fn filter(&self, status: Option<&str>) -> LedgerFilter {
        LedgerFilter {
            table: self.table.as_deref().and_then(LakeTable::parse),
            exchange: self.exchange.clone(),
            symbol: self.symbol.clone(),
            status: status.map(|s| match s {
                "open" => GapStatus::Open,
                "filled" => GapStatus::Filled,
                _ => GapStatus::Lost,
            }),
        }
    }
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
    #[command(flatten)]
    pin: PinArgs,
}

/// Time travel: which snapshot an answer is read from (default: the current one). The
/// snapshot answered from, and the log positions it covers, go to standard error.
#[derive(Args, Clone, Default)]
pub struct PinArgs {
    /// A snapshot id, or a tag (`k2 snapshot tag`).
    #[arg(long)]
    snapshot: Option<String>,
    /// The snapshot current at this instant: RFC 3339, or a date (its start, UTC).
    #[arg(long, conflicts_with = "snapshot")]
    as_of: Option<String>,
}

impl PinArgs {
    pub fn pin(&self) -> anyhow::Result<Pin> {
        Ok(match (&self.snapshot, &self.as_of) {
            (Some(s), _) => Pin::snapshot(s),
            (None, Some(t)) => Pin::AsOf(parse_time(t, None)? / 1_000),
            (None, None) => Pin::Current,
        })
    }
}

impl MarketArgs {
    fn filter(&self) -> anyhow::Result<MarketFilter> {
        if self.limit == 0 || self.limit > 1_000_000 {
            bail!("--limit must be between 1 and 1000000");
        }
        let ex = self.exchange.as_deref();
        let (start_us, end_us) = match self.date {
            Some(d) => {
                let (s, e) = day_bounds(d, ex);
                (Some(s), Some(e))
            }
            None => (
                self.start
                    .as_deref()
                    .map(|s| parse_time(s, ex))
                    .transpose()?,
                self.end.as_deref().map(|s| parse_time(s, ex)).transpose()?,
            ),
        };
        Ok(MarketFilter {
            symbols: self.symbol.iter().cloned().collect(),
            exchanges: self.exchange.iter().cloned().collect(),
            start_us,
            end_us,
            limit: self.limit,
            ..Default::default()
        })
    }
}

/// Queries read the lake only: they work while the log is unreachable.
pub async fn run(config: Config, args: QueryArgs) -> anyhow::Result<ExitCode> {
    let batches = answer(&config, args.query).await?;
    args.out.render(&batches)?;
    Ok(ExitCode::SUCCESS)
}

async fn answer(config: &Config, query: QueryCommand) -> anyhow::Result<Vec<RecordBatch>> {
    let engine = app::engine(config).await?;
    // The snapshot an answer is read from, named on standard error.
    let pinned = |table, pin: &PinArgs| {
        let engine = &engine;
        let pin = pin.pin();
        async move {
            let (snapshot, receipt) = engine.pin(table, &pin?).await?;
            eprintln!("{}", receipt.line());
            anyhow::Ok(snapshot)
        }
    };
    Ok(match query {
        QueryCommand::Trades(a) => {
            let snapshot = pinned(LakeTable::Trades, &a.pin).await?;
            engine.trades(&a.filter()?, snapshot).await?.batches
        }
        QueryCommand::Quotes(a) => {
            let snapshot = pinned(LakeTable::Quotes, &a.pin).await?;
            engine.quotes(&a.filter()?, snapshot).await?.batches
        }
        QueryCommand::Summary {
            symbol,
            date,
            exchange,
            pin,
        } => {
            let snapshot = pinned(LakeTable::Trades, &pin).await?;
            let summary = engine
                .daily_summary(&symbol, date, exchange.as_deref(), snapshot)
                .await?;
            match summary {
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
            pin,
        } => {
            let interval = BarInterval::parse(&interval)?;
            let to = to.unwrap_or(from);
            let snapshot = pinned(LakeTable::Trades, &pin).await?;
            let bars = engine
                .ohlcv(&symbol, interval, from, to, exchange.as_deref(), snapshot)
                .await?;
            to_batches(&bars.iter().map(present::BarRow::from).collect::<Vec<_>>())?
        }
        QueryCommand::Symbols { exchange } => {
            #[derive(serde::Serialize)]
            struct Row {
                symbol: String,
            }
            let symbols = engine.symbols(exchange.as_deref()).await?;
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
        QueryCommand::Gaps { ledger, status } => {
            let filter = ledger.filter(status.as_deref());
            let ledgers = engine.ledgers(&ledger.pin.pin()?, filter.table).await?;
            vec![LedgerView::Gaps.batch(&filter.apply(ledgers))?]
        }
        QueryCommand::Completeness { ledger } => {
            let filter = ledger.filter(None);
            let ledgers = engine.ledgers(&ledger.pin.pin()?, filter.table).await?;
            vec![LedgerView::Streams.batch(&filter.apply(ledgers))?]
        }
    })
}
