//! `k2 bench api`: the query API under load on loopback. The server runs in this process
//! exactly as `k2 serve` runs it (keys checked, queries behind the gate, metrics
//! recorded); `wrk` drives it at each concurrency and reports latency percentiles and
//! throughput. Rate limits are lifted for the benchmark's key, or they would be measured
//! instead of the server. Each route runs twice: with answers kept by snapshot off (every
//! request runs its query) and on (wrk repeats one question, so it measures the kept
//! answer).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use k2_api::{ApiConfig, Backends};

use super::query::Questions;
use crate::app::App;
use crate::telemetry;

pub async fn run(
    app: &App,
    connections: &[u32],
    duration: Duration,
    wrk: &str,
) -> anyhow::Result<()> {
    let version = std::process::Command::new(wrk)
        .arg("--version")
        .output()
        .with_context(|| {
            format!("{wrk} not found: run scripts/bench-setup (apt-get install wrk)")
        })?;
    let version = String::from_utf8_lossy(&version.stdout)
        .lines()
        .next()
        .unwrap_or("wrk")
        .split(" [")
        .next()
        .unwrap_or("wrk")
        .to_string();

    let key = k2_api::generate_key();
    let metrics = telemetry::recorder(&app.config.data_dir)?;
    let q = Questions::sample();
    let (s, x, d) = (q.symbol, q.exchange, q.date);
    let next = d.succ_opt().expect("a next day");
    let paths = [
        format!("/v1/trades?symbol={s}&exchange={x}&start_time={d}&end_time={next}&limit=100"),
        format!("/v1/summary/{s}/{d}?exchange={x}"),
        format!("/v1/ohlcv/1m?symbol={s}&exchange={x}&start_date={d}&end_date={d}"),
    ];
    println!(
        "query API, {} ({version}, {}s per run; ms); answers kept: off = every request runs \
         its query, on = a repeated question is answered from the answer kept for the snapshot",
        q.title(),
        duration.as_secs()
    );
    println!(
        "{:40} {:>5} {:>11} {:>8} {:>8} {:>8} {:>10}",
        "route", "kept", "connections", "p50", "p90", "p99", "requests/s"
    );
    let cache_mb = app.config.api.cache_mb.max(1);
    for (kept, mb) in [("off", 0), ("on", cache_mb)] {
        let backends = Backends {
            engine: Arc::new(app.engine().await?),
            checks: Vec::new(),
            metrics: Some(metrics.clone()),
            tail: None,
            degradation: None,
            dead_letters: None,
        };
        let server = BenchServer::start(app, mb, &key, backends, false).await?;
        let addr = server.addr;
        for (path, (_, name)) in paths.iter().zip(super::query::NAMES) {
            let url = format!("http://{addr}{path}");
            let body = get(addr, path, &key)?;
            anyhow::ensure!(
                body.starts_with("HTTP/1.1 200"),
                "{path} answered {}",
                body.lines().next().unwrap_or("nothing")
            );
            for &c in connections {
                let load = load(wrk, &url, &key, c, duration).await?;
                println!(
                    "{:40} {kept:>5} {c:>11} {:>8.2} {:>8.2} {:>8.2} {:>10.0}",
                    name, load.p50_ms, load.p90_ms, load.p99_ms, load.requests_per_second
                );
            }
        }
        server.stop().await?;
    }
    Ok(())
}

/// The API in this process, exactly as `k2 serve` runs it (with Flight SQL when asked),
/// with one `read` and `sql` key whose rate limits are lifted (or they would be measured
/// instead of the server).
pub(super) struct BenchServer {
    pub addr: SocketAddr,
    pub flight: Option<SocketAddr>,
    stop: tokio_util::sync::CancellationToken,
    server: tokio::task::JoinHandle<Result<(), k2_api::ApiError>>,
}

impl BenchServer {
    pub async fn start(
        app: &App,
        cache_mb: u64,
        key: &str,
        backends: Backends,
        flight: bool,
    ) -> anyhow::Result<BenchServer> {
        let mut api = ApiConfig {
            listen: "127.0.0.1:0".into(),
            flight_listen: if flight {
                "127.0.0.1:0".into()
            } else {
                String::new()
            },
            cache_mb,
            keys_file: String::new(),
            ..app.config.api.clone()
        };
        api.keys = vec![k2_api::ApiKeyConfig {
            name: "bench".into(),
            sha256: k2_api::digest_hex(key),
            scopes: vec![k2_api::Scope::Read, k2_api::Scope::Sql],
            rate_per_second: Some(1e9),
            burst: Some(u32::MAX),
        }];
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let stop = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn(k2_api::serve(
            api,
            backends,
            move |addr, flight| {
                let _ = addr_tx.send((addr, flight));
            },
            stop.clone(),
        ));
        let (addr, flight) = addr_rx.await.context("the API server did not start")?;
        Ok(BenchServer {
            addr,
            flight,
            stop,
            server,
        })
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.server.await??;
        Ok(())
    }
}

/// One GET over a fresh connection, the whole response as text (a check that the route
/// answers before it is loaded).
fn get(addr: SocketAddr, path: &str, key: &str) -> anyhow::Result<String> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nX-API-Key: {key}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

struct Load {
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    requests_per_second: f64,
}

async fn load(
    wrk: &str,
    url: &str,
    key: &str,
    connections: u32,
    duration: Duration,
) -> anyhow::Result<Load> {
    let threads = connections.clamp(1, 2);
    let mut command = std::process::Command::new(wrk);
    command.args([
        format!("-t{threads}"),
        format!("-c{connections}"),
        format!("-d{}s", duration.as_secs().max(1)),
        "--latency".into(),
        "-H".into(),
        format!("X-API-Key: {key}"),
        url.into(),
    ]);
    // The server answers on this process's runtimes while wrk runs.
    let out = tokio::task::spawn_blocking(move || command.output())
        .await?
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(
        out.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_wrk(&text).with_context(|| format!("reading wrk's report:\n{text}"))
}

/// Reads the latency distribution and the request rate of `wrk --latency`, and refuses a
/// run in which any response failed.
fn parse_wrk(text: &str) -> anyhow::Result<Load> {
    let mut p = [None; 3];
    let mut rate = None;
    for line in text.lines().map(str::trim) {
        if line.starts_with("Non-2xx") || line.starts_with("Socket errors") {
            anyhow::bail!("failed requests: {line}");
        }
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            rate = Some(v.trim().parse::<f64>()?);
        }
        let mut words = line.split_whitespace();
        if let (Some(q), Some(v), None) = (words.next(), words.next(), words.next()) {
            let slot = match q {
                "50%" => 0,
                "90%" => 1,
                "99%" => 2,
                _ => continue,
            };
            p[slot] = Some(milliseconds(v)?);
        }
    }
    match (p, rate) {
        ([Some(p50_ms), Some(p90_ms), Some(p99_ms)], Some(requests_per_second)) => Ok(Load {
            p50_ms,
            p90_ms,
            p99_ms,
            requests_per_second,
        }),
        _ => anyhow::bail!("no latency distribution or request rate"),
    }
}

/// `812.00us`, `1.23ms`, `2.01s` → milliseconds.
fn milliseconds(v: &str) -> anyhow::Result<f64> {
    let split = v
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("{v}: no unit"))?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().with_context(|| format!("{v}: not a number"))?;
    Ok(match unit {
        "us" => n / 1e3,
        "ms" => n,
        "s" => n * 1e3,
        "m" => n * 60e3,
        other => anyhow::bail!("{v}: unknown unit {other}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_wrk_report() {
        let report = "Running 10s test @ http://127.0.0.1:1/v1/summary/BHP/2014-03-12
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    10.10ms    2.00ms  40.00ms   80.00%
    Req/Sec     1.60k   100.00     1.80k    70.00%
  Latency Distribution
     50%  812.00us
     75%   11.00ms
     90%   13.50ms
     99%    1.02s
  31800 requests in 10.00s, 20.00MB read
Requests/sec:   3180.00
Transfer/sec:      2.00MB
";
        let l = parse_wrk(report).unwrap();
        assert_eq!(
            (l.p50_ms, l.p90_ms, l.p99_ms, l.requests_per_second),
            (0.812, 13.5, 1020.0, 3180.0)
        );
        let failed = report.replace(
            "Requests/sec",
            "  Non-2xx or 3xx responses: 3\nRequests/sec",
        );
        assert!(parse_wrk(&failed).is_err());
    }
}
