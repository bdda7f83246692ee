//! `k2 bench replay`: maximum-speed replay from the lake. Synthetic ASX-format trades (5
//! trading days over N companies) are ingested and committed in a fresh data directory;
//! then the whole range is replayed across every symbol, in timestamp order:
//!
//! - by the engine alone (ordered Arrow batches, every column and the usual ten);
//! - encoded as NDJSON in process (what every stream carries);
//! - over loopback through the API, as a client sees it: `/v1/replay/stream` (NDJSON over
//!   HTTP) and `/v1/replay/ws` (one message per row).
//!
//! Each run checks the count against the lake and that timestamps never go back; memory is
//! the process's resident set, sampled as the rows arrive.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use arrow::array::{Array, AsArray};
use futures::StreamExt;
use k2_lake::LakeTable;
use k2_lake::query::QueryEngine;
use k2_lake::replay::ReplayRequest;

use crate::app::App;
use crate::config::Config;
use crate::memory::rss_bytes;

pub async fn run(mut config: Config, rows: u64, companies: u32) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("synthetic-data");
    k2_ingest::synthetic::write_asx_trades(&data, companies, rows, 42)?;
    config.data_dir = tmp.path().join("k2");
    let app = App::open(config).await?;
    let t = Instant::now();
    app.ingest_asx(&data).await?;
    app.consume(true).await?;
    eprintln!(
        "lake built from {rows} synthetic trades in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let engine = Arc::new(app.engine().await?);
    let (start_us, end_us, stored) = extent(&engine).await?;
    // K2 only appends: the files of the table are those its snapshots added.
    let files: u64 = engine
        .snapshots(LakeTable::Trades)
        .await?
        .iter()
        .filter_map(|s| s.added_files)
        .sum();
    println!(
        "replay at maximum speed: {stored} trades of {companies} symbols over 5 trading days, \
         the whole range in timestamp order across symbols ({files} data files)"
    );
    println!(
        "{:44} {:>10} {:>8} {:>14} {:>8} {:>7} {:>9}",
        "path", "rows", "seconds", "rows/s", "windows", "runs", "peak RSS"
    );
    let base = ReplayRequest::range(LakeTable::Trades, start_us, end_us);
    let usual: Vec<String> = k2_lake::query::default_columns(LakeTable::Trades)
        .iter()
        .map(|c| c.to_string())
        .collect();
    for (label, fields, encode) in [
        ("engine, every column (Arrow batches)", vec![], false),
        ("engine, the usual 10 columns", usual.clone(), false),
        ("engine + NDJSON encoding, every column", vec![], true),
    ] {
        let request = ReplayRequest {
            fields,
            ..base.clone()
        };
        let t = Instant::now();
        let mut replay = engine.replay(request).await?;
        let (mut n, mut last, mut peak) = (0u64, i64::MIN, rss_bytes());
        while let Some(batch) = replay.next().await? {
            let times = batch
                .column_by_name("timestamp")
                .context("replayed rows lack their timestamp")?
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
            anyhow::ensure!(
                times.value(0) >= last,
                "replay went back in time at row {n}"
            );
            last = times.value(times.len() - 1);
            n += batch.num_rows() as u64;
            if encode {
                let lines = k2_api::format::ndjson(&batch).map_err(|e| anyhow::anyhow!("{e}"))?;
                std::hint::black_box(lines.len());
            }
            if n % (64 * 8192) < batch.num_rows() as u64 {
                peak = peak.max(rss_bytes());
            }
        }
        let seconds = t.elapsed().as_secs_f64();
        anyhow::ensure!(n == stored, "{label}: replayed {n} of {stored} rows");
        let stats = replay.stats();
        row(
            label,
            n,
            seconds,
            stats.windows,
            stats.runs,
            peak.max(rss_bytes()),
        );
    }
    over_http(&app, engine, start_us, end_us, stored).await
}

fn row(label: &str, n: u64, seconds: f64, windows: u64, runs: u64, rss: u64) {
    println!(
        "{label:44} {n:>10} {seconds:>8.2} {:>14.0} {windows:>8} {runs:>7} {:>6} MB",
        n as f64 / seconds.max(1e-9),
        rss >> 20
    );
}

/// The first and last trade times (end exclusive) and the number of trades stored.
async fn extent(engine: &QueryEngine) -> anyhow::Result<(i64, i64, u64)> {
    let b = engine
        .sql(r#"SELECT CAST(min("timestamp") AS BIGINT), CAST(max("timestamp") AS BIGINT), count(*) FROM market_data.trades"#)
        .await?
        .batches;
    let b = b.first().context("no extent")?;
    let col = |i: usize| {
        b.column(i)
            .as_primitive_opt::<arrow::datatypes::Int64Type>()
            .filter(|c| c.is_valid(0))
            .map(|c| c.value(0))
            .context("the lake holds no trades")
    };
    Ok((col(0)?, col(1)? + 1, col(2)? as u64))
}

/// The API in this process (as `k2 serve` runs it) and a loopback client for each stream.
async fn over_http(
    app: &App,
    engine: Arc<QueryEngine>,
    start_us: i64,
    end_us: i64,
    stored: u64,
) -> anyhow::Result<()> {
    let key = k2_api::generate_key();
    let backends = k2_api::Backends {
        engine,
        checks: Vec::new(),
        metrics: None,
        tail: None,
        degradation: None,
        dead_letters: None,
    };
    let server =
        super::api::BenchServer::start(app, app.config.api.cache_mb, &key, backends, false).await?;
    let addr = server.addr;
    let iso = k2_api::present::iso_us;
    let query = format!(
        "data_type=trades&start_time={}&end_time={}&speed=max",
        iso(start_us),
        iso(end_us)
    );

    let path = format!("/v1/replay/stream?{query}");
    let t = Instant::now();
    let k = key.clone();
    let lines = tokio::task::spawn_blocking(move || ndjson_lines(addr, &path, &k)).await??;
    let seconds = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        lines == stored,
        "NDJSON over HTTP: {lines} of {stored} rows"
    );
    row(
        "API: /v1/replay/stream, NDJSON over HTTP",
        lines,
        seconds,
        0,
        0,
        rss_bytes(),
    );

    let t = Instant::now();
    let messages = websocket_rows(addr, &format!("/v1/replay/ws?{query}"), &key).await?;
    let seconds = t.elapsed().as_secs_f64();
    anyhow::ensure!(messages == stored, "WebSocket: {messages} of {stored} rows");
    row(
        "API: /v1/replay/ws, one message per row",
        messages,
        seconds,
        0,
        0,
        rss_bytes(),
    );

    server.stop().await
}

/// Lines of an NDJSON answer read over one HTTP/1.0 connection (the body ends at close).
fn ndjson_lines(addr: SocketAddr, path: &str, key: &str) -> anyhow::Result<u64> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(s, "GET {path} HTTP/1.0\r\nX-API-Key: {key}\r\n\r\n")?;
    let mut buf = vec![0u8; 1 << 20];
    let mut head = Vec::new();
    let mut lines = 0u64;
    let mut in_body = false;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let mut chunk = &buf[..n];
        if !in_body {
            head.extend_from_slice(chunk);
            let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let status = String::from_utf8_lossy(&head[..end]).into_owned();
            anyhow::ensure!(
                status.starts_with("HTTP/1.1 200") || status.starts_with("HTTP/1.0 200"),
                "the replay stream answered: {}",
                status.lines().next().unwrap_or("")
            );
            in_body = true;
            let body_from = end + 4 - (head.len() - n);
            chunk = &buf[body_from..n];
        }
        lines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
    }
    Ok(lines)
}

/// Text messages received on the replay WebSocket until its close.
async fn websocket_rows(addr: SocketAddr, path: &str, key: &str) -> anyhow::Result<u64> {
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}{path}").into_client_request()?;
    request.headers_mut().insert("x-api-key", key.parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    let mut n = 0u64;
    while let Some(m) = ws.next().await {
        match m? {
            Message::Text(_) => n += 1,
            Message::Close(frame) => {
                let normal = frame.as_ref().is_none_or(|f| u16::from(f.code) == 1000);
                anyhow::ensure!(normal, "the replay WebSocket closed with {frame:?}");
                break;
            }
            _ => {}
        }
    }
    Ok(n)
}
