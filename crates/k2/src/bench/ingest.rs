//! `k2 bench ingest`: CSV → log → lake committed, rows per second at each stage, and the
//! bytes per trade in the lake against the CSV.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::app::App;
use crate::config::Config;

/// The sample and, unless `rows` is 0, `rows` synthetic trades over `companies`, each
/// ingested and committed in a fresh data directory under `root`.
pub async fn run(
    config: &Config,
    sample: &Path,
    rows: u64,
    companies: u32,
    root: &Path,
) -> anyhow::Result<()> {
    println!(
        "dataset                rows   ingest→log   log→lake   end-to-end   CSV B/row  lake B/row"
    );
    ingest_once(config, "bundled ASX sample", sample, &root.join("sample")).await?;
    if rows > 0 {
        let data = root.join("synthetic-data");
        let t = Instant::now();
        k2_ingest::synthetic::write_asx_trades(&data, companies, rows, 42)?;
        eprintln!(
            "generated {rows} synthetic trades in {:.1}s",
            t.elapsed().as_secs_f64()
        );
        ingest_once(
            config,
            &format!("synthetic {}M trades", rows / 1_000_000),
            &data,
            &root.join("synthetic"),
        )
        .await?;
    }
    Ok(())
}

async fn ingest_once(
    config: &Config,
    name: &str,
    data: &Path,
    data_dir: &Path,
) -> anyhow::Result<()> {
    let mut config = config.clone();
    config.data_dir = data_dir.to_path_buf();
    let app = App::open(config).await?;
    let t0 = Instant::now();
    let ingest = app.ingest_asx(data).await?;
    let t1 = Instant::now();
    let written = app.consume(true).await?;
    let t2 = Instant::now();
    let rows = ingest.produced() as f64;
    let trade_rows = *written
        .rows_committed
        .get("market_data.trades")
        .unwrap_or(&0);
    let csv = dir_bytes(&data.join("trades"))? as f64 / trade_rows.max(1) as f64;
    let lake = dir_bytes(
        &app.config
            .warehouse_dir()
            .join("market_data")
            .join("trades")
            .join("data"),
    )? as f64
        / trade_rows.max(1) as f64;
    let rate = |d: Duration| rows / d.as_secs_f64().max(1e-9);
    println!(
        "{name:20} {:>9} {:>10.0}/s {:>9.0}/s {:>10.0}/s {:>10.1} {:>11.1}",
        rows as u64,
        rate(t1 - t0),
        rate(t2 - t1),
        rate(t2 - t0),
        csv,
        lake
    );
    Ok(())
}

fn dir_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    if !dir.exists() {
        return Ok(0);
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}
