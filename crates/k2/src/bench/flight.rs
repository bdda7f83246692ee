//! `k2 bench flight`: a whole day's trades fetched into pyarrow over Arrow Flight SQL, beside
//! the same answer over `POST /v1/sql` as Arrow IPC, in the same run (the client is
//! Python: the ADBC Flight SQL driver and urllib + pyarrow).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use k2_api::Backends;
use serde_json::Value;

use super::api::BenchServer;
use crate::app::App;
use crate::config::Config;

const SCRIPT: &str = include_str!("flight_fetch.py");

/// Where `scripts/python-env` puts the researchers' Python (ADBC, pyarrow, pandas,
/// polars).
pub fn default_python() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/k2/nb-venv/bin/python"))
}

pub async fn run(
    mut config: Config,
    rows: u64,
    companies: u32,
    runs: usize,
    python: &Path,
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("synthetic-data");
    k2_ingest::synthetic::write_asx_trades(&data, companies, rows, 42)?;
    config.data_dir = tmp.path().join("lake");
    // A day's trades in one answer: the row cap above the whole dataset.
    config.query.max_rows = usize::try_from(rows)?.saturating_add(1);
    let app = App::open(config).await?;
    app.ingest_asx(&data).await?;
    app.consume(true).await?;
    let engine = Arc::new(app.engine().await?);
    // The busiest trading day.
    let day = engine
        .sql("SELECT CAST(trade_date AS VARCHAR) AS d FROM trades GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1")
        .await?;
    let day = arrow::compute::cast(day.batches[0].column(0), &arrow::datatypes::DataType::Utf8)?;
    let day = arrow::array::cast::as_string_array(&day)
        .value(0)
        .to_string();
    let key = k2_api::generate_key();
    let backends = Backends {
        engine,
        checks: Vec::new(),
        metrics: None,
        tail: None,
        degradation: None,
        dead_letters: None,
    };
    let server = BenchServer::start(&app, 0, &key, backends, true).await?;
    let flight = server.flight.context("Flight SQL did not start")?;
    let sql = format!("SELECT * FROM trades WHERE trade_date = DATE '{day}'");
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("flight_fetch.py");
    std::fs::write(&script, SCRIPT)?;
    let mut command = std::process::Command::new(python);
    command
        .arg(&script)
        .arg(format!("grpc://{flight}"))
        .arg(format!("http://{}", server.addr))
        .arg(&key)
        .arg(&sql)
        .arg(runs.to_string());
    // The server answers on this process's runtimes while the client runs.
    let out = tokio::task::spawn_blocking(move || command.output())
        .await?
        .with_context(|| {
            format!(
                "running {}: set it up with scripts/python-env, or pass --python",
                python.display()
            )
        })?;
    server.stop().await?;
    anyhow::ensure!(
        out.status.success(),
        "the Python client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value =
        serde_json::from_slice(&out.stdout).context("reading the client's figures")?;
    let rows = result["rows"].as_f64().unwrap_or(0.0);
    let mb = result["bytes"].as_f64().unwrap_or(0.0) / 1e6;
    println!(
        "trades of {day} ({rows} rows, {mb:.1} MB in Arrow), {runs} runs each after one warm-up:"
    );
    println!(
        "{:32} {:>9} {:>9} {:>12} {:>9}",
        "path", "p50 ms", "best ms", "rows/s", "MB/s"
    );
    for (name, label) in [
        ("flight", "Flight SQL (ADBC → pyarrow)"),
        ("rest", "POST /v1/sql, Arrow IPC"),
    ] {
        let mut seconds: Vec<f64> = result["seconds"][name]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        anyhow::ensure!(!seconds.is_empty(), "no timings for {name}");
        seconds.sort_by(f64::total_cmp);
        let p50 = seconds[seconds.len() / 2];
        println!(
            "{label:32} {:>9.1} {:>9.1} {:>12.0} {:>9.0}",
            p50 * 1e3,
            seconds[0] * 1e3,
            rows / p50,
            mb / p50
        );
    }
    Ok(())
}
