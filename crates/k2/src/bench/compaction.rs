//! Compaction's effect on a lake a live run left: data files per day partition and the
//! latency of a day's 1-minute bars, before and after `k2 compact`.

use std::sync::Arc;
use std::time::Instant;

use chrono::NaiveDate;
use iceberg::Catalog;
use k2_lake::LakeTable;
use k2_lake::compaction::{self, CompactOptions};
use k2_lake::query::{BarInterval, QueryEngine};

use super::query::percentiles;
use crate::config::Config;

/// Runs of the bar query each side.
const RUNS: usize = 50;

pub async fn before_and_after(
    config: &Config,
    catalog: &Arc<dyn Catalog>,
    symbol: &str,
    exchange: &str,
) -> anyhow::Result<()> {
    let engine = QueryEngine::new(catalog.clone(), config.query.clone())?;
    let day = first_day(&engine).await?;
    let committer = config
        .catalog
        .committer(catalog.clone(), &config.catalog_path())
        .await?;
    let measure = |label: &'static str| {
        let (engine, catalog) = (&engine, catalog.clone());
        async move {
            let table = catalog.load_table(&LakeTable::Trades.ident()).await?;
            let files = compaction::files_per_day(&table).await?;
            let mut took = Vec::with_capacity(RUNS);
            let mut bars = 0;
            for _ in 0..RUNS {
                let started = Instant::now();
                bars = engine
                    .ohlcv(symbol, BarInterval::M1, day, day, Some(exchange), None)
                    .await?
                    .len();
                took.push(started.elapsed());
            }
            let (p50, p99) = percentiles(&took);
            let per_day: Vec<String> = files.values().map(|n| n.to_string()).collect();
            println!(
                "  {label:18} data files per day partition: {:>12}; {day} 1-minute bars ({bars}): p50 {p50:.2} ms, p99 {p99:.2} ms",
                per_day.join(" + ")
            );
            anyhow::Ok(bars)
        }
    };
    println!("compaction of the run's trades ({RUNS} warm runs of the bar query each side):");
    let before = measure("before compaction").await?;
    let options = CompactOptions {
        min_files: 2,
        ..config.writer.compact_options(None)
    };
    let started = Instant::now();
    let done =
        compaction::compact(catalog.as_ref(), &committer, LakeTable::Trades, &options).await?;
    println!(
        "  k2 compact: {} files → {} in {:.2} s ({} rows, {:.1} MB → {:.1} MB)",
        done.files_before,
        done.files_after,
        started.elapsed().as_secs_f64(),
        done.rows,
        done.bytes_before as f64 / 1e6,
        done.bytes_after as f64 / 1e6
    );
    let after = measure("after compaction").await?;
    anyhow::ensure!(
        before == after,
        "the bars differ after compaction: {before} vs {after}"
    );
    Ok(())
}

/// The first trading day the trades table holds.
async fn first_day(engine: &QueryEngine) -> anyhow::Result<NaiveDate> {
    use arrow::array::{Array, AsArray};
    let answer = engine
        .sql("SELECT min(trade_date) FROM market_data.trades")
        .await?;
    let days = answer
        .batches
        .first()
        .and_then(|b| {
            b.column(0)
                .as_primitive_opt::<arrow::datatypes::Date32Type>()
                .cloned()
        })
        .filter(|c| !c.is_empty() && c.is_valid(0))
        .ok_or_else(|| anyhow::anyhow!("the run left no trades"))?;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("a date");
    Ok(epoch + chrono::Days::new(days.value(0) as u64))
}
