//! `k2 bench ingest`: CSV → log → lake committed, rows per second at each stage, and the
//! bytes per trade in the lake against the CSV; then each dataset again on the local disk
//! with OTLP traces on (to a receiver on 127.0.0.1), beside the same run's figures off.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::otlp;
use crate::app::App;
use crate::config::Config;
use crate::telemetry;

/// The sample and, unless `rows` is 0, `rows` synthetic trades over `companies`, each
/// ingested and committed in a fresh data directory under `root`: on the local disk, and
/// when `warehouse.uri` names a bucket, in it too (under a fresh prefix), one after the
/// other in the same run; then on the local disk again, with traces exported.
pub async fn run(
    config: &Config,
    sample: &Path,
    rows: u64,
    companies: u32,
    root: &Path,
) -> anyhow::Result<()> {
    let mut on_disk = config.clone();
    on_disk.warehouse.uri.clear();
    let mut warehouses = vec![("local disk", on_disk)];
    if !config.warehouse.uri.is_empty() {
        warehouses.push(("S3", config.clone()));
    }
    // "Off" is off even when the configuration exports traces.
    tokio::task::spawn_blocking(telemetry::traces::stop).await?;
    println!(
        "dataset              warehouse  traces      rows   ingest→log   log→lake   end-to-end   CSV B/row  lake B/row  commits  commit p50/p99 ms"
    );
    let run_id = format!("bench-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S"));
    let mut datasets = vec![("bundled ASX sample".to_string(), sample.to_path_buf())];
    if rows > 0 {
        let data = root.join("synthetic-data");
        let t = Instant::now();
        k2_ingest::synthetic::write_asx_trades(&data, companies, rows, 42)?;
        eprintln!(
            "generated {rows} synthetic trades in {:.1}s",
            t.elapsed().as_secs_f64()
        );
        datasets.push((format!("synthetic {} trades", millions(rows)), data));
    }
    for (i, (name, data)) in datasets.iter().enumerate() {
        for (where_, config) in &warehouses {
            let mut config = config.clone();
            config.data_dir = root.join(format!("{i}-{}", where_.replace(' ', "-")));
            if !config.warehouse.uri.is_empty() {
                config.warehouse.uri = format!(
                    "{}/{run_id}/{i}",
                    config.warehouse.uri.trim_end_matches('/')
                );
            }
            ingest_once(config, name, where_, "off", data).await?;
        }
    }
    let receiver = otlp::Receiver::start().await?;
    let endpoint = receiver.endpoint.clone();
    tokio::task::spawn_blocking(move || telemetry::traces::start(&endpoint)).await??;
    for (i, (name, data)) in datasets.iter().enumerate() {
        let mut config = warehouses[0].1.clone();
        config.data_dir = root.join(format!("{i}-traced"));
        ingest_once(config, name, warehouses[0].0, "OTLP", data).await?;
    }
    // Stopping sends the spans still held.
    tokio::task::spawn_blocking(telemetry::traces::stop).await?;
    let counts = receiver.counts();
    let spans: u64 = counts.values().sum();
    let by_name: Vec<String> = counts.iter().map(|(n, c)| format!("{n} {c}")).collect();
    println!(
        "traces: {spans} spans received at {} ({})",
        receiver.endpoint,
        by_name.join(", ")
    );
    Ok(())
}

async fn ingest_once(
    config: Config,
    name: &str,
    warehouse: &str,
    traces: &str,
    data: &Path,
) -> anyhow::Result<()> {
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
    // The audit trail has every commit's files and time, wherever the files went.
    let audit = k2_lake::audit::read(&app.config.audit_path())?;
    let lake: u64 = audit
        .iter()
        .filter(|e| e.table == "market_data.trades")
        .map(|e| e.bytes)
        .sum();
    let mut commit_ms: Vec<u64> = audit.iter().filter_map(|e| e.duration_ms).collect();
    commit_ms.sort_unstable();
    let quantile = |q: f64| -> u64 {
        if commit_ms.is_empty() {
            return 0;
        }
        commit_ms[((commit_ms.len() - 1) as f64 * q).round() as usize]
    };
    let rate = |d: Duration| rows / d.as_secs_f64().max(1e-9);
    println!(
        "{name:20} {warehouse:10} {traces:6} {:>9} {:>10.0}/s {:>9.0}/s {:>10.0}/s {:>10.1} {:>11.1} {:>8} {:>8}/{}",
        rows as u64,
        rate(t1 - t0),
        rate(t2 - t1),
        rate(t2 - t0),
        csv,
        lake as f64 / trade_rows.max(1) as f64,
        commit_ms.len(),
        quantile(0.5),
        quantile(0.99),
    );
    Ok(())
}
/// `rows` in millions as the table shows them: `10M`, `0.2M`.
fn millions(rows: u64) -> String {
    if rows.is_multiple_of(1_000_000) {
        format!("{}M", rows / 1_000_000)
    } else {
        format!("{:.1}M", rows as f64 / 1e6)
    }
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
