//! `k2 bench query`: the everyday questions answered warm by K2's engine in process and,
//! in the same run, by DuckDB reading the same Iceberg table; both answers are checked
//! equal before their latencies are compared.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use arrow::array::{Array, AsArray};
use chrono::NaiveDate;
use k2_lake::LakeTable;
use k2_lake::query::{BarInterval, MarketFilter, Ohlcv, QueryEngine};
use serde_json::{Value, json};

use crate::app::App;

/// The three questions: one symbol-day's newest 100 trades, its daily summary and its
/// 1-minute bars.
pub struct Questions {
    pub symbol: &'static str,
    pub exchange: &'static str,
    pub date: NaiveDate,
}

impl Questions {
    /// BHP on the ASX, 12 March 2014: the busiest symbol-day of the bundled sample.
    pub fn sample() -> Questions {
        Questions {
            symbol: "BHP",
            exchange: "ASX",
            date: NaiveDate::from_ymd_opt(2014, 3, 12).expect("valid date"),
        }
    }

    /// The trading day's bounds, UTC microseconds.
    pub fn day_us(&self) -> (i64, i64) {
        k2_model::exchange::day_bounds_us(k2_model::exchange::time_zone(self.exchange), self.date)
    }

    pub fn title(&self) -> String {
        format!("{}, {}, {}", self.symbol, self.exchange, self.date)
    }
}

pub const NAMES: [(&str, &str); 3] = [
    ("trades", "trades, one symbol-day, newest 100"),
    ("summary", "daily summary (OHLC, volume, count)"),
    ("bars", "1-minute bars, one day"),
];

/// One engine's timings and answer for one question.
struct Timed {
    samples: Vec<Duration>,
    answer: Value,
}

pub async fn run(app: &App, runs: usize, duckdb: Option<&Path>) -> anyhow::Result<()> {
    let q = Questions::sample();
    let runs = runs.max(1);
    let engine = app.engine().await?;
    let k2 = k2_answers(&engine, &q, runs).await?;
    let peer = match duckdb {
        Some(python) => {
            let table = app
                .catalog()
                .await?
                .load_table(&LakeTable::Trades.ident())
                .await?;
            let metadata = table
                .metadata_location()
                .context("the trades table has no metadata file")?
                .to_string();
            Some(duckdb_answers(python, &metadata, &q, runs)?)
        }
        None => None,
    };
    let (peer_name, peer) = match peer {
        Some((version, answers)) => (format!("DuckDB {version}"), Some(answers)),
        None => ("DuckDB (not run)".to_string(), None),
    };
    println!(
        "{}; {runs} warm runs each; milliseconds; peer: {peer_name} (iceberg_scan of the same table)",
        q.title()
    );
    println!(
        "{:40} {:>8} {:>8} {:>10} {:>10}  answers",
        "question", "K2 p50", "K2 p99", "peer p50", "peer p99"
    );
    for (i, (key, name)) in NAMES.iter().enumerate() {
        let (k2_50, k2_99) = percentiles(&k2[i].samples);
        let (p50, p99, agree) = match &peer {
            Some(p) => {
                let (a, b) = percentiles(&p[i].samples);
                anyhow::ensure!(
                    p[i].answer == k2[i].answer,
                    "{key}: DuckDB answered {} but K2 answered {}",
                    p[i].answer,
                    k2[i].answer
                );
                (format!("{a:.2}"), format!("{b:.2}"), "equal")
            }
            None => ("-".into(), "-".into(), "-"),
        };
        println!("{name:40} {k2_50:>8.2} {k2_99:>8.2} {p50:>10} {p99:>10}  {agree}");
    }
    Ok(())
}

/// p50 and p99 in milliseconds.
pub fn percentiles(samples: &[Duration]) -> (f64, f64) {
    let mut s = samples.to_vec();
    s.sort();
    let pick = |q: f64| s[((s.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e3;
    (pick(0.5), pick(0.99))
}

async fn k2_answers(
    engine: &QueryEngine,
    q: &Questions,
    runs: usize,
) -> anyhow::Result<Vec<Timed>> {
    let (start, end) = q.day_us();
    let filter = MarketFilter {
        symbols: vec![q.symbol.into()],
        exchanges: vec![q.exchange.into()],
        start_us: Some(start),
        end_us: Some(end),
        limit: 100,
        ..Default::default()
    };
    macro_rules! time {
        ($e:expr) => {{
            for _ in 0..5 {
                $e;
            }
            let mut samples = Vec::with_capacity(runs);
            let mut last = None;
            for _ in 0..runs {
                let t = Instant::now();
                let answer = $e;
                samples.push(t.elapsed());
                last = Some(answer);
            }
            (samples, last.expect("runs > 0"))
        }};
    }
    let (samples, page) = time!(engine.trades(&filter, None).await?);
    let mut ids = Vec::new();
    for batch in &page.batches {
        let column = batch
            .column_by_name("message_id")
            .context("trades without message_id")?;
        let text = column.as_string::<i32>();
        ids.extend((0..text.len()).map(|i| Value::from(text.value(i))));
    }
    let trades = Timed {
        samples,
        answer: Value::Array(ids),
    };
    let (samples, summary) = time!(
        engine
            .daily_summary(q.symbol, q.date, Some(q.exchange), None)
            .await?
    );
    let summary = Timed {
        samples,
        answer: Value::Array(summary.iter().map(|s| ohlcv_row(0, &s.ohlcv)).collect()),
    };
    let (samples, bars) = time!(
        engine
            .ohlcv(
                q.symbol,
                BarInterval::M1,
                q.date,
                q.date,
                Some(q.exchange),
                None
            )
            .await?
    );
    let bars = Timed {
        samples,
        answer: Value::Array(
            bars.iter()
                .map(|b| ohlcv_row(b.start_us, &b.ohlcv))
                .collect(),
        ),
    };
    Ok(vec![trades, summary, bars])
}

/// The shape the DuckDB script answers in: bucket, then open, high, low, close, volume in
/// units of 10^-8, then the trade count.
fn ohlcv_row(bucket: i64, o: &Ohlcv) -> Value {
    json!([
        bucket,
        o.open,
        o.high,
        o.low,
        o.close,
        i64::try_from(o.volume).unwrap_or(i64::MAX),
        o.trade_count
    ])
}

/// Where `scripts/bench-setup` puts DuckDB 1.4.4 with its iceberg and avro extensions.
pub fn default_python() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/k2/bench-venv/bin/python"))
}

const SCRIPT: &str = include_str!("duckdb_questions.py");

/// Runs the DuckDB side: returns DuckDB's version and its timings and answers.
fn duckdb_answers(
    python: &Path,
    metadata: &str,
    q: &Questions,
    runs: usize,
) -> anyhow::Result<(String, Vec<Timed>)> {
    let missing = || {
        format!(
            "{} has no DuckDB with the iceberg extension: run scripts/bench-setup, or pass \
             --duckdb-python, or --no-duckdb",
            python.display()
        )
    };
    let probe = std::process::Command::new(python)
        .args([
            "-c",
            "import duckdb, sysconfig, os; \
             print(os.path.join(sysconfig.get_paths()['purelib'], 'duckdb_ext', 'extensions'))",
        ])
        .output()
        .with_context(missing)?;
    anyhow::ensure!(probe.status.success(), "{}", missing());
    let extensions = String::from_utf8(probe.stdout)?.trim().to_string();
    anyhow::ensure!(Path::new(&extensions).is_dir(), "{}", missing());
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("duckdb_questions.py");
    std::fs::write(&script, SCRIPT)?;
    let (start, end) = q.day_us();
    let out = std::process::Command::new(python)
        .arg(&script)
        .args([
            extensions.as_str(),
            metadata.strip_prefix("file://").unwrap_or(metadata),
            q.symbol,
            q.exchange,
        ])
        .args([start, end, start, runs as i64].map(|n| n.to_string()))
        .output()
        .context("running DuckDB")?;
    anyhow::ensure!(
        out.status.success(),
        "DuckDB failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).context("reading DuckDB's answers")?;
    let version = result["duckdb"].as_str().unwrap_or("?").to_string();
    let mut answers = Vec::new();
    for (key, _) in NAMES {
        let one = &result["questions"][key];
        let samples = one["seconds"]
            .as_array()
            .context("DuckDB's timings")?
            .iter()
            .filter_map(Value::as_f64)
            .map(Duration::from_secs_f64)
            .collect();
        answers.push(Timed {
            samples,
            answer: one["answer"].clone(),
        });
    }
    Ok((version, answers))
}
