//! The `k2` binary as users run it: real child processes on real files.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;
use k2_testkit::sample::copy_dir;
use k2_testkit::services::Broker;

/// The single value of a one-row, one-column SQL answer.
fn sql_scalar(data: &Path, sql: &str) -> u64 {
    let out = run_ok(k2(data).args(["sql", sql, "--format", "csv"]));
    out.lines()
        .nth(1)
        .unwrap_or_else(|| panic!("no row in {out:?}"))
        .trim()
        .parse()
        .unwrap()
}

/// Every sample row exactly once: counts and distinct message ids of every table.
fn assert_lake_holds_the_sample_exactly(data: &Path) {
    for (table, rows) in [
        ("trades", TRADES),
        ("quotes", QUOTES),
        ("reference_data.companies", 4),
    ] {
        assert_eq!(
            sql_scalar(data, &format!("SELECT count(*) FROM {table}")),
            rows,
            "{table}"
        );
        assert_eq!(
            sql_scalar(
                data,
                &format!("SELECT count(DISTINCT message_id) FROM {table}")
            ),
            rows,
            "{table} has no duplicates"
        );
    }
}

#[test]
fn demo_twice_gives_the_same_tables() {
    let data = tempfile::tempdir().unwrap();
    let first = run_ok(k2(data.path()).arg("demo").arg("--sample").arg(sample()));
    assert!(first.contains("market_data.trades"), "{first}");
    assert!(first.contains(&format!("{TRADES} rows")), "{first}");
    assert!(
        first.contains("36.52264159"),
        "BHP 2014-03-10 VWAP is shown:\n{first}"
    );
    let snapshots = run_ok(k2(data.path()).args(["query", "snapshots", "--format", "csv"]));
    let second = run_ok(k2(data.path()).arg("demo").arg("--sample").arg(sample()));
    assert!(second.contains(&format!("{TRADES} rows")));
    assert!(
        second.contains("0 rows committed to the lake this run"),
        "{second}"
    );
    assert_eq!(
        run_ok(k2(data.path()).args(["query", "snapshots", "--format", "csv"])),
        snapshots,
        "no new snapshot"
    );
    assert_lake_holds_the_sample_exactly(data.path());
}

/// A user who installed only the binary runs the main job in an empty directory: the
/// sample built into `k2` is unpacked under the data directory and gives the same lake.
#[test]
fn demo_runs_from_an_empty_directory_with_the_built_in_sample() {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_k2"));
    cmd.arg("demo")
        .current_dir(home.path())
        .env_remove("K2_CONFIG")
        .env("K2_LOG", "warn")
        .stdin(Stdio::null());
    let out = run_ok(&mut cmd);
    assert!(out.contains(&format!("{TRADES} rows")), "{out}");
    assert!(out.contains("36.52264159"), "{out}");
    let data = home.path().join("data");
    assert!(data.join("sample/asx-2014-03/trades").is_dir());
    assert_lake_holds_the_sample_exactly(&data);
}

fn spawn(cmd: &mut Command) -> Running {
    Running(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("k2 starts"),
    )
}

/// The trades table as the catalog has it now (None before it exists).
fn trades_now(rt: &tokio::runtime::Runtime, data: &Path) -> Option<iceberg::table::Table> {
    rt.block_on(async {
        let catalog = k2_lake::open_catalog(&data.join("catalog.db"), &warehouse(data))
            .await
            .unwrap();
        iceberg::Catalog::load_table(catalog.as_ref(), &k2_lake::LakeTable::Trades.ident())
            .await
            .ok()
    })
}

/// Trades snapshots committed so far, read straight from the catalog.
fn trade_snapshots(rt: &tokio::runtime::Runtime, data: &Path) -> usize {
    trades_now(rt, data).map_or(0, |t| t.metadata().snapshots().len())
}

#[test]
fn killing_the_writer_mid_ingestion_loses_and_duplicates_nothing() {
    let data = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let small_batches = |cmd: &mut Command| {
        cmd.env("K2_WRITER__MAX_ROWS", "3000")
            .env("K2_WRITER__MAX_AGE", "200ms")
            .env("K2_LOG__INGEST_CHUNK_ROWS", "2000");
    };
    let mut kills = 0;
    for round in 0..5 {
        let before = trade_snapshots(&rt, data.path());
        let mut ingest = k2(data.path());
        small_batches(&mut ingest);
        let mut ingest = spawn(ingest.arg("ingest").arg("asx").arg(sample()));
        let mut writer = k2(data.path());
        small_batches(&mut writer);
        let mut writer = spawn(writer.arg("consume"));
        // Let the writer commit at least once, then kill both without warning.
        let deadline = Instant::now() + Duration::from_secs(90);
        while trade_snapshots(&rt, data.path()) <= before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            Instant::now() < deadline,
            "round {round}: the writer never committed"
        );
        writer.kill().unwrap(); // SIGKILL
        writer.wait().unwrap();
        let _ = ingest.kill();
        ingest.wait().unwrap();
        kills += 1;
    }
    assert_eq!(kills, 5);
    // Finish both jobs normally.
    run_ok(k2(data.path()).arg("ingest").arg("asx").arg(sample()));
    run_ok(k2(data.path()).args(["consume", "--until-caught-up"]));
    let snapshots = trade_snapshots(&rt, data.path());
    assert!(snapshots >= 6, "many commits happened");
    assert_lake_holds_the_sample_exactly(data.path());
    // Every commit is audited once, those whose line a kill cut off included (recovered
    // from the snapshot at the next start), and the audited rows add up to the table.
    let audit = run_ok(k2(data.path()).args([
        "audit", "--table", "trades", "--limit", "100000", "--format", "json",
    ]));
    let audit: Vec<serde_json::Value> = serde_json::from_str(&audit).unwrap();
    assert_eq!(audit.len(), snapshots);
    let distinct: std::collections::HashSet<i64> = audit
        .iter()
        .map(|e| e["snapshot_after"].as_i64().unwrap())
        .collect();
    assert_eq!(distinct.len(), snapshots);
    let rows: u64 = audit.iter().map(|e| e["rows"].as_u64().unwrap()).sum();
    assert_eq!(rows, TRADES);
}

/// Snapshots of the trades table that compactions made.
fn compactions(rt: &tokio::runtime::Runtime, data: &Path) -> usize {
    trades_now(rt, data).map_or(0, |t| {
        t.metadata()
            .snapshots()
            .filter(|s| s.summary().operation == iceberg::spec::Operation::Replace)
            .count()
    })
}

#[test]
fn a_running_writer_compacts_and_bounds_its_log_and_every_row_lands_once() {
    let data = tempfile::tempdir().unwrap();
    let port = k2_testkit::services::free_port();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut ingest = k2(data.path());
    ingest.env("K2_LOG__INGEST_CHUNK_ROWS", "2000");
    let mut ingest = spawn(ingest.arg("ingest").arg("asx").arg(sample()));
    let mut writer = spawn(
        k2(data.path())
            .env("K2_WRITER__MAX_ROWS", "3000")
            .env("K2_WRITER__MAX_AGE", "200ms")
            .env("K2_WRITER__COMPACT_EVERY", "1s")
            .env("K2_WRITER__COMPACT_MIN_FILES", "2")
            // Everything committed may go: the log keeps only each partition's last batch.
            .env("K2_LOG__RETENTION_BYTES", "1")
            .env("K2_TELEMETRY__METRICS_LISTEN", format!("127.0.0.1:{port}"))
            .arg("consume"),
    );
    // Compactions land while the writer commits, and the writer catches up.
    k2_testkit::poll::until_true(
        Duration::from_secs(240),
        "a compaction beside the writer, and every trade committed",
        || {
            compactions(&rt, data.path()) >= 2
                && ingest.try_wait().unwrap().is_some()
                && sql_scalar(data.path(), "SELECT count(*) FROM trades") == TRADES
        },
    );
    // The log let go of what the lake holds, and says so.
    let exposition = k2_testkit::poll::until(
        Duration::from_secs(120),
        "retention removing the committed records",
        || {
            let body = http_get(port, "/metrics").ok()?;
            let removed = metric(&body, "k2_log_retention_removed_records_total")?;
            (removed >= 160_000.0).then_some(body)
        },
    );
    let held = metric(&exposition, "k2_log_embedded_held_bytes").unwrap();
    assert!(held < 2_000_000.0, "the log still holds {held} bytes");
    assert!(metric(&exposition, "k2_log_oldest_record_timestamp_seconds").is_some());
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(writer.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let exit = k2_testkit::poll::until(
        Duration::from_secs(60),
        "k2 consume stops on SIGTERM",
        || writer.try_wait().unwrap(),
    );
    assert!(exit.success(), "SIGTERM is a clean stop: {exit}");
    assert_lake_holds_the_sample_exactly(data.path());
    // The writer resumes where it was: the same files again add nothing.
    run_ok(k2(data.path()).arg("ingest").arg("asx").arg(sample()));
    run_ok(k2(data.path()).args(["consume", "--until-caught-up"]));
    assert_lake_holds_the_sample_exactly(data.path());
}

/// `n` well-formed trades of RIO (7458, listed in the sample's company file but without
/// trades of its own) over 10 and 11 March 2014, in the sample's CSV layout.
fn rio_trades(n: u32) -> String {
    let mut text = String::new();
    for i in 0..n {
        let day = if i < n / 2 { 10 } else { 11 };
        let secs = 36_000 + i * 7;
        let price = 62.0 + f64::from(i % 50) / 100.0;
        text.push_str(&format!(
            "03/{day}/2014,{:02}:{:02}:{:02}.{:03},{price:.2},{},0,,\r\n",
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            i % 1000,
            100 + i
        ));
    }
    text
}

/// A compliance officer's time travel: a tag names the lake as it was, `--as-of` finds
/// the snapshot current at an instant, and both answer exactly as the lake did then
/// after more data has landed; every answer names its snapshot and log positions.
#[test]
fn tags_and_as_of_answer_as_the_lake_did_then() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    run_ok(k2(d).arg("demo").arg("--sample").arg(sample()));
    let tagged = run_ok(k2(d).args(["snapshot", "tag", "before-rio"]));
    assert!(
        tagged.contains("market_data.trades: tagged snapshot"),
        "{tagged}"
    );
    let snapshots = run_ok(k2(d).args(["query", "snapshots", "--format", "json"]));
    let snapshots: Vec<serde_json::Value> = serde_json::from_str(&snapshots).unwrap();
    let first = snapshots[0]["snapshot_id"].as_i64().unwrap();
    // An instant after the demo's commit and before the next one.
    let committed: chrono::DateTime<chrono::Utc> = snapshots[0]["committed_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let between = (committed + chrono::Duration::milliseconds(1)).to_rfc3339();

    let dataset = tempfile::tempdir().unwrap();
    copy_dir(&sample(), dataset.path());
    std::fs::write(dataset.path().join("trades/7458.csv"), rio_trades(1000)).unwrap();
    run_ok(k2(d).arg("ingest").arg("asx").arg(dataset.path()));
    run_ok(k2(d).args(["consume", "--until-caught-up"]));
    let count = "SELECT count(*) FROM trades";
    assert_eq!(sql_scalar(d, count), TRADES + 1000);

    // The tag, the instant and the id all answer as the lake did before RIO landed.
    for pin in [
        vec!["--snapshot", "before-rio"],
        vec!["--as-of", between.as_str()],
    ] {
        let mut cmd = k2(d);
        cmd.args(["sql", count, "--format", "csv"]).args(&pin);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{pin:?}: {out:?}");
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            stdout.lines().nth(1),
            Some(TRADES.to_string().as_str()),
            "{pin:?}"
        );
        // The receipt: the snapshot read and the log positions it covers.
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.contains(&format!("market_data.trades snapshot {first} committed"))
                && stderr.contains(&format!("market.equities.trades.asx/2={TRADES}")),
            "{pin:?}: {stderr}"
        );
    }
    let summary = |pin: &[&str]| {
        let mut cmd = k2(d);
        cmd.args(["query", "summary", "RIO", "2014-03-10", "--format", "csv"])
            .args(pin);
        cmd.output().unwrap()
    };
    assert!(summary(&[]).status.success());
    let before = summary(&["--snapshot", &first.to_string()]);
    assert!(!before.status.success(), "RIO had no trades then");
    assert!(
        String::from_utf8_lossy(&before.stderr).contains("no trades of RIO"),
        "{before:?}"
    );

    // Before the first commit the tables were empty; a query of one table says there
    // was no snapshot then; a tag that does not exist is named.
    let early = run_ok(k2(d).args(["sql", count, "--as-of", "2014-01-01", "--format", "csv"]));
    assert_eq!(early.lines().nth(1), Some("0"), "{early}");
    let early = run_err(k2(d).args(["query", "trades", "--as-of", "2014-01-01"]));
    assert!(
        early.contains("current at 2014-01-01T00:00:00+00:00"),
        "{early}"
    );
    let unknown = run_err(k2(d).args(["query", "trades", "--snapshot", "no-such-tag"]));
    assert!(unknown.contains("tag 'no-such-tag'"), "{unknown}");
    // Names are checked; a tag cannot be set twice; untagging frees the name.
    assert!(run_err(k2(d).args(["snapshot", "tag", "bad name"])).contains("not a tag name"));
    assert!(run_err(k2(d).args(["snapshot", "tag", "before-rio"])).contains("untag it first"));
    let tags = run_ok(k2(d).args(["snapshot", "tags"]));
    assert_eq!(tags.lines().count(), 3, "{tags}");
    run_ok(k2(d).args(["snapshot", "untag", "before-rio"]));
    assert_eq!(run_ok(k2(d).args(["snapshot", "tags"])), "");
    assert!(
        run_err(k2(d).args(["snapshot", "untag", "before-rio"])).contains("no table has a tag")
    );
}

#[test]
fn an_unseen_company_file_with_malformed_lines_lands_exactly() {
    let data = tempfile::tempdir().unwrap();
    let dataset = tempfile::tempdir().unwrap();
    copy_dir(&sample(), dataset.path());
    // RIO (7458) is listed in company_info.csv but ships no files: give it 3 000 trades
    // over two days and break four of them.
    let mut text = rio_trades(3000);
    text.push_str("03/11/2014,15:00:00.000,six,100,0,,\r\n");
    text.push_str("03/11/2014,15:00:01.000,62.1,100\r\n");
    text.push_str("03/11/2014,15:00:02.000,-62.1,100,0,,\r\n");
    text.push_str("03/32/2014,15:00:03.000,62.1,100,0,,\r\n");
    std::fs::write(dataset.path().join("trades/7458.csv"), text).unwrap();

    run_ok(k2(data.path()).arg("ingest").arg("asx").arg(dataset.path()));
    run_ok(k2(data.path()).args(["consume", "--until-caught-up"]));
    assert_eq!(
        sql_scalar(
            data.path(),
            "SELECT count(*) FROM trades WHERE symbol = 'RIO'"
        ),
        3000
    );
    assert_eq!(
        sql_scalar(data.path(), "SELECT count(*) FROM trades"),
        TRADES + 3000
    );

    let letters = run_ok(k2(data.path()).args(["dlq", "list", "--format", "json"]));
    let letters: Vec<serde_json::Value> = serde_json::from_str(&letters).unwrap();
    let sources: Vec<&str> = letters
        .iter()
        .map(|l| l["source"].as_str().unwrap())
        .collect();
    assert_eq!(
        sources,
        [
            "trades/7458.csv:3001",
            "trades/7458.csv:3002",
            "trades/7458.csv:3003",
            "trades/7458.csv:3004"
        ]
    );
    assert_eq!(letters[1]["kind"], "column_count");
    assert_eq!(letters[0]["raw"], "03/11/2014,15:00:00.000,six,100,0,,");
    let id = letters[2]["id"].as_u64().unwrap().to_string();
    let shown = run_ok(k2(data.path()).args(["dlq", "show", &id]));
    assert!(
        shown.contains("03/11/2014,15:00:02.000,-62.1,100,0,,") && shown.contains("not positive"),
        "{shown}"
    );
    // Nothing was fixed: a replay keeps all four, and the lake is unchanged.
    let replay = run_ok(k2(data.path()).args(["dlq", "replay"]));
    assert!(
        replay.contains("4 dead letters examined: 0 pass now"),
        "{replay}"
    );
    assert_eq!(
        run_ok(k2(data.path()).args(["dlq", "list", "--format", "json"]))
            .matches("7458.csv")
            .count(),
        4
    );

    // Bars cover exactly the good trades of each day.
    for (day, n) in [("2014-03-10", 1500), ("2014-03-11", 1500)] {
        let bars = run_ok(k2(data.path()).args([
            "query",
            "ohlcv",
            "RIO",
            "--interval",
            "5m",
            "--from",
            day,
            "--exchange",
            "ASX",
            "--format",
            "json",
        ]));
        let bars: Vec<serde_json::Value> = serde_json::from_str(&bars).unwrap();
        let count: i64 = bars
            .iter()
            .map(|b| b["trade_count"].as_i64().unwrap())
            .sum();
        assert_eq!(count, n, "{day}");
    }
}

#[test]
fn queries_answer_in_every_format_and_sql_is_read_only() {
    let data = tempfile::tempdir().unwrap();
    run_ok(k2(data.path()).arg("ingest").arg("asx").arg(sample()));
    run_ok(k2(data.path()).args(["consume", "--until-caught-up"]));

    let csv = run_ok(k2(data.path()).args([
        "query",
        "summary",
        "BHP",
        "2014-03-10",
        "--exchange",
        "ASX",
        "--format",
        "csv",
    ]));
    assert_eq!(
        csv.lines().next().unwrap(),
        "symbol,date,open,high,low,close,volume,trade_count,vwap"
    );
    assert_eq!(
        csv.lines().nth(1).unwrap(),
        "BHP,2014-03-10,36.667,37.72,36.12,36.16,10053864,17000,36.52264159"
    );

    let trades = run_ok(k2(data.path()).args([
        "query",
        "trades",
        "--symbol",
        "DVN",
        "--date",
        "2014-03-14",
        "--exchange",
        "ASX",
        "--limit",
        "5",
        "--format",
        "json",
    ]));
    let trades: Vec<serde_json::Value> = serde_json::from_str(&trades).unwrap();
    assert_eq!(trades.len(), 5);
    let times: Vec<&str> = trades
        .iter()
        .map(|t| t["timestamp"].as_str().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );

    let parquet = data.path().join("bars.parquet");
    run_ok(
        k2(data.path())
            .args([
                "query",
                "ohlcv",
                "BHP",
                "--interval",
                "1d",
                "--from",
                "2014-03-10",
                "--to",
                "2014-03-14",
                "--exchange",
                "ASX",
                "--format",
                "parquet",
                "-o",
            ])
            .arg(&parquet),
    );
    assert!(std::fs::metadata(&parquet).unwrap().len() > 0);

    let table = run_ok(k2(data.path()).args(["query", "symbols"]));
    assert!(table.contains("BHP") && table.contains("DVN") && table.contains("MWR"));

    // An answer longer than query.max_rows is cut there, and the CLI says so.
    let out: Output = k2(data.path())
        .env("K2_QUERY__MAX_ROWS", "5")
        .args(["sql", "SELECT symbol FROM trades", "--format", "csv"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 6);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("more than 5 rows and was cut"), "{err}");

    for bad in [
        "DROP TABLE trades",
        "DELETE FROM trades",
        "CREATE TABLE x AS SELECT 1",
    ] {
        let out: Output = k2(data.path()).args(["sql", bad]).output().unwrap();
        assert!(!out.status.success(), "{bad} must fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("read-only") || err.contains("not supported"),
            "{bad}: {err}"
        );
    }
    // Injection attempts are values, not SQL.
    let out = run_ok(k2(data.path()).args([
        "query",
        "trades",
        "--symbol",
        "BHP'; DROP TABLE trades; --",
        "--format",
        "csv",
    ]));
    assert!(
        out.lines().count() <= 1,
        "no rows for a symbol that does not exist: {out}"
    );
    assert_eq!(
        sql_scalar(data.path(), "SELECT count(*) FROM trades"),
        TRADES
    );

    let missing = k2(data.path())
        .args(["query", "summary", "BHP", "2014-03-15", "--exchange", "ASX"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no trades of BHP on 2014-03-15"));
}

fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    Ok(http(port, "GET", path, "")?.1)
}

/// One HTTP/1.1 request over loopback: the status code and the whole response text.
fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, text))
}

#[test]
fn metrics_show_data_flowing_and_sigterm_stops_cleanly() {
    let data = tempfile::tempdir().unwrap();
    run_ok(k2(data.path()).arg("ingest").arg("asx").arg(sample()));
    let port = k2_testkit::services::free_port();
    let mut writer = spawn(
        k2(data.path())
            .env("K2_TELEMETRY__METRICS_LISTEN", format!("127.0.0.1:{port}"))
            .arg("consume"),
    );
    let want = format!("k2_lake_rows_committed_total{{table=\"trades\"}} {TRADES}");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(body) = http_get(port, "/metrics") {
            if body.contains(&want) {
                last = body;
                break;
            }
            last = body;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        last.contains(&want),
        "metrics never showed the trades committed:\n{last}"
    );
    assert!(last.contains("k2_lake_records_consumed_total"), "{last}");
    // The endpoint of `k2 consume` passes Prometheus's checker (the body after the headers).
    let (_, exposition) = last.split_once("\r\n\r\n").expect("an HTTP answer");
    k2_testkit::promtool::assert_clean(exposition);
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(writer.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(exit) = writer.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "k2 consume did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        exit.success(),
        "SIGTERM is a clean stop, not a failure: {exit}"
    );
}

/// A random moment, from a seed printed for reproduction.
struct Moments(u64);

impl Moments {
    fn next_ms(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

#[test]
fn kill_nine_at_random_moments_over_a_million_records_lands_each_once() {
    kill_nine_rounds(&[]);
}

#[test]
fn on_kafka_kill_nine_at_random_moments_over_a_million_records_lands_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Broker::start(dir.path(), false) else {
        return;
    };
    kill_nine_rounds(&broker.env());
}

/// Kill -9 of the lake writer at random moments, many times, while a million trades are
/// ingested; `env` selects the log backend.
fn kill_nine_rounds(env: &[(&str, String)]) {
    let k2 = |data: &Path| {
        let mut cmd = k2(data);
        cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        cmd
    };
    const ROWS: u64 = 1_000_000;
    const COMPANIES: u64 = 20;
    let data = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    k2_ingest::synthetic::write_asx_trades(files.path(), COMPANIES as u32, ROWS, 11).unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill moments seed {seed}");
    let mut moments = Moments(seed);
    let batches = |cmd: &mut Command| {
        cmd.env("K2_WRITER__MAX_ROWS", "30000")
            .env("K2_WRITER__MAX_AGE", "500ms");
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The ingest runs to its end while the writer is killed over and over: each round
    // waits for the writer to commit once (so every round makes progress whatever the
    // machine's load), then kills it at a random moment of its next cycle — decoding,
    // writing files, committing, or writing its audit line.
    let ingest_log = data.path().join("ingest.log");
    let mut ingest = k2(data.path())
        .arg("ingest")
        .arg("asx")
        .arg(files.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&ingest_log).unwrap())
        .spawn()
        .map(Running)
        .expect("k2 starts");
    let mut kills = 0;
    while kills < 12 {
        let before = trade_snapshots(&rt, data.path());
        let mut writer = k2(data.path());
        batches(&mut writer);
        // The writer's log of this round, shown if the round goes wrong.
        let log_path = data.path().join(format!("writer-{kills}.log"));
        let mut writer = writer
            .arg("consume")
            .env("K2_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .map(Running)
            .expect("k2 starts");
        let deadline = Instant::now() + Duration::from_secs(60);
        while trade_snapshots(&rt, data.path()) <= before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let progressed = trade_snapshots(&rt, data.path()) > before;
        if progressed {
            std::thread::sleep(Duration::from_millis(moments.next_ms(1_500)));
        }
        writer.kill().unwrap(); // SIGKILL, wherever it is
        writer.wait().unwrap();
        if !progressed {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            eprintln!("round {kills} made no commit; its log ends:");
            for line in tail.into_iter().rev() {
                eprintln!("  {line}");
            }
            break; // everything is committed already, or the assertion below fails
        }
        kills += 1;
    }
    assert!(
        kills >= 8,
        "only {kills} rounds committed before the log was drained"
    );
    let status = ingest.wait().unwrap();
    assert!(
        status.success(),
        "ingest: {status}; its log:\n{}",
        std::fs::read_to_string(&ingest_log).unwrap_or_default()
    );
    let mut last = k2(data.path());
    batches(&mut last);
    let summary = last
        .args(["consume", "--until-caught-up"])
        .output()
        .unwrap();
    assert!(summary.status.success());

    let total = ROWS + COMPANIES;
    assert_eq!(sql_scalar(data.path(), "SELECT count(*) FROM trades"), ROWS);
    assert_eq!(
        sql_scalar(data.path(), "SELECT count(DISTINCT message_id) FROM trades"),
        ROWS
    );
    assert_eq!(
        sql_scalar(data.path(), "SELECT count(*) FROM reference_data.companies"),
        COMPANIES
    );
    let audit = run_ok(k2(data.path()).args(["audit", "--limit", "1000000", "--format", "json"]));
    let audit: Vec<serde_json::Value> = serde_json::from_str(&audit).unwrap();
    let rows: u64 = audit.iter().map(|e| e["rows"].as_u64().unwrap()).sum();
    assert_eq!(rows, total, "audited rows");
}

/// The value of an unlabelled counter in a Prometheus text body.
#[test]
fn sigterm_mid_run_commits_everything_acknowledged_and_the_next_start_continues() {
    let data = tempfile::tempdir().unwrap();
    let port = k2_testkit::services::free_port();
    // Commits only on size or age that never come: whatever the writer has read when
    // SIGTERM arrives sits in its buffers.
    let mut ingest = spawn(k2(data.path()).arg("ingest").arg("asx").arg(sample()));
    let mut writer = spawn(
        k2(data.path())
            .env("K2_TELEMETRY__METRICS_LISTEN", format!("127.0.0.1:{port}"))
            .env("K2_WRITER__MAX_ROWS", "10000000")
            .env("K2_WRITER__MAX_AGE", "1h")
            .arg("consume"),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let consumed = loop {
        let body = http_get(port, "/metrics").unwrap_or_default();
        if let Some(n) = metric(&body, "k2_lake_records_consumed_total").filter(|&n| n > 0.0) {
            break n;
        }
        assert!(Instant::now() < deadline, "the writer never read anything");
        std::thread::sleep(Duration::from_millis(20));
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert_eq!(
        trade_snapshots(&rt, data.path()),
        0,
        "nothing committed yet"
    );
    assert!(
        Command::new("kill")
            .arg("-TERM")
            .arg(writer.id().to_string())
            .status()
            .unwrap()
            .success()
    );
    let exit = writer.wait().unwrap();
    assert!(exit.success(), "SIGTERM is a clean stop: {exit}");
    assert!(ingest.wait().unwrap().success());
    // What the writer had read was committed on the way out.
    let audited: u64 = {
        let audit = run_ok(k2(data.path()).args(["audit", "--format", "json"]));
        let audit: Vec<serde_json::Value> = serde_json::from_str(&audit).unwrap();
        audit.iter().map(|e| e["rows"].as_u64().unwrap()).sum()
    };
    assert!(
        audited as f64 >= consumed,
        "{audited} rows committed, {consumed} read"
    );
    // The next start continues: no record twice, none missing, no stream restarted.
    let out = k2(data.path())
        .args(["consume", "--until-caught-up"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    if let Some(line) = stderr.lines().find(|l| l.starts_with("source sequences:")) {
        let events = line
            .trim_start_matches("source sequences: ")
            .trim_end_matches("; 0 found missing by gaps (late fills among them counted above)");
        assert!(
            events.ends_with(" in_order") && !events.contains(','),
            "every stream continues in order after the restart: {line}"
        );
    }
    assert_lake_holds_the_sample_exactly(data.path());
}

#[test]
fn on_kafka_the_sample_lands_exactly_and_topics_are_managed() {
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Broker::start(dir.path(), false) else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    // Schemas go to a registry shared with other deployments (another K2's here), reached
    // over https with a private certificate authority.
    let registry_dir = tempfile::tempdir().unwrap();
    let (mut registry, registry_port) = registry_server(registry_dir.path());
    let https_port = tls_in_front_of(registry_port);
    let k2 = || {
        let mut cmd = k2(data.path());
        cmd.envs(broker.env())
            .env(
                "K2_REGISTRY__URL",
                format!("https://127.0.0.1:{https_port}"),
            )
            .env(
                "K2_REGISTRY__CA_FILE",
                k2_testkit::tls::dir().join("ca.pem"),
            );
        cmd
    };
    run_ok(k2().args(["topics", "create"]));
    run_ok(k2().args(["topics", "create"])); // idempotent
    let listed = run_ok(k2().args(["topics", "list", "--format", "json"]));
    let listed: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    let names: Vec<&str> = listed
        .iter()
        .map(|t| t["topic"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "market.equities.quotes.asx",
            "market.equities.reference_data.asx",
            "market.equities.trades.asx"
        ]
    );
    assert_eq!(listed[1]["partitions"], 1);
    assert_eq!(listed[2]["partitions"], 4);
    // A partition count that disagrees with the cluster is refused, naming both.
    let out = k2()
        .args(["topics", "create", "--partitions", "8"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("already exists with 4 partitions, not 8"),
        "{stderr}"
    );

    run_ok(k2().arg("ingest").arg("asx").arg(sample()));
    // A foreign producer's records that no K2 schema describes: an unknown schema id, and
    // bytes without the Confluent framing.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use k2_log::Log;
        let scratch = tempfile::tempdir().unwrap();
        let options = k2_log::KafkaOptions {
            bootstrap_servers: broker.bootstrap(),
            ..Default::default()
        };
        let schemas = k2_log::LocalSchemas::open(&scratch.path().join("r.redb")).unwrap();
        let foreign = k2_log::KafkaLog::connect(options, k2_log::Registry::Local(schemas))
            .await
            .unwrap();
        let mut bad = k2_log::TopicBatch::new("market.equities.trades.asx");
        for value in [&[0, 0, 0, 0x27, 0x0f, 1, 2, 3][..], b"not avro"] {
            bad.push(b"BHP", value, 1_700_000_000_000);
        }
        foreign.produce(vec![bad], None).await.unwrap();
        assert_eq!(foreign.close(Duration::from_secs(10)), 0);
    });
    let out = run_ok(
        k2().args(["consume", "--until-caught-up"])
            .stderr(Stdio::piped()),
    );
    drop(out);
    // Both dead-lettered with topic, partition and offset; the rest landed exactly.
    let letters = run_ok(k2().args(["dlq", "list", "--format", "json"]));
    let letters: Vec<serde_json::Value> = serde_json::from_str(&letters).unwrap();
    let mut kinds: Vec<&str> = letters
        .iter()
        .map(|l| l["kind"].as_str().unwrap())
        .collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["framing", "unknown_schema"], "{letters:?}");
    for l in &letters {
        let source = l["source"].as_str().unwrap();
        assert!(
            source.starts_with("market.equities.trades.asx/") && source.contains('@'),
            "{source}"
        );
    }
    // Queries read the lake only.
    assert_lake_holds_the_sample_exactly(data.path());
    // A second ingest finds its checkpoints in the cluster and appends nothing.
    let out = k2()
        .arg("ingest")
        .arg("asx")
        .arg(sample())
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(" 0 appended to the log"), "{stderr}");
    // The writer's group offsets are committed: no lag on any partition.
    let described = run_ok(k2().args([
        "topics",
        "describe",
        "market.equities.trades.asx",
        "--format",
        "json",
    ]));
    let described: Vec<serde_json::Value> = serde_json::from_str(&described).unwrap();
    assert_eq!(described.len(), 4);
    let end: u64 = described
        .iter()
        .map(|p| p["records_end"].as_u64().unwrap())
        .sum();
    assert_eq!(end, TRADES + 2, "the sample and the two foreign records");
    for p in described.iter().filter(|p| p["records_end"] != 0) {
        assert_eq!(p["writer_lag"], 0, "{p}");
    }
    // The schemas live in the shared registry, not in this deployment's data directory.
    let subjects = http_get(registry_port, "/subjects").unwrap();
    assert!(
        subjects.contains("market.equities.trades.asx-value"),
        "{subjects}"
    );
    assert!(!data.path().join("registry").exists());
    registry.kill().unwrap();
    registry.wait().unwrap();
}

#[test]
fn on_kafka_the_broker_lost_mid_stream_loses_and_duplicates_nothing() {
    const ROWS: u64 = 200_000;
    const COMPANIES: u64 = 10;
    let dir = tempfile::tempdir().unwrap();
    let Some(mut broker) = Broker::start(dir.path(), true) else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    k2_ingest::synthetic::write_asx_trades(files.path(), COMPANIES as u32, ROWS, 5).unwrap();
    let env = broker.env();
    let k2 = || {
        let mut cmd = k2(data.path());
        cmd.envs(env.clone())
            .env("K2_WRITER__MAX_ROWS", "20000")
            .env("K2_WRITER__MAX_AGE", "500ms")
            .env("K2_LOG__INGEST_CHUNK_ROWS", "5000");
        cmd
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut ingest = spawn(k2().arg("ingest").arg("asx").arg(files.path()));
    let mut writer = spawn(k2().arg("consume"));
    // Wait for the first commit, then take the broker away for a while. The broker
    // stores in SQLite and shares two cores with the rest of the suite: the first
    // commit can take minutes.
    let deadline = Instant::now() + Duration::from_secs(300);
    while trade_snapshots(&rt, data.path()) == 0 {
        assert!(
            Instant::now() < deadline,
            "nothing committed before the outage"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    broker.down();
    std::thread::sleep(Duration::from_secs(3)); // the outage itself, not a wait for a result
    let during = trade_snapshots(&rt, data.path());
    broker.up();
    // Both processes ride it out: the producer retries within its delivery timeout, the
    // writer pauses and goes on.
    let status = ingest.wait().unwrap();
    assert!(
        status.success(),
        "ingest survives a broker restart: {status}"
    );
    // Several chunks of a file were in flight at once, yet its checkpoints were written in
    // order: the one kept last covers the whole file.
    let scratch = tempfile::tempdir().unwrap();
    let kept = checkpoints_kept(&rt, &env[1].1, scratch.path());
    assert_eq!(kept.len() as u64, 1 + COMPANIES, "{kept:?}");
    for (source, bytes) in &kept {
        if let Some(rel) = source.strip_prefix("asx:trades/") {
            let size = std::fs::metadata(files.path().join("trades").join(rel))
                .unwrap()
                .len();
            assert_eq!(*bytes, size, "{source}");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while sql_scalar(data.path(), "SELECT count(*) FROM trades") < ROWS {
        assert!(Instant::now() < deadline, "the writer did not resume");
        assert!(writer.try_wait().unwrap().is_none(), "the writer gave up");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        trade_snapshots(&rt, data.path()) > during,
        "commits after the outage"
    );
    Command::new("kill")
        .arg("-TERM")
        .arg(writer.id().to_string())
        .status()
        .unwrap();
    assert!(writer.wait().unwrap().success());
    assert_eq!(sql_scalar(data.path(), "SELECT count(*) FROM trades"), ROWS);
    assert_eq!(
        sql_scalar(data.path(), "SELECT count(DISTINCT message_id) FROM trades"),
        ROWS
    );
}

/// The bytes of its file each source's checkpoint on the cluster covers: the last written
/// (the topic is compacted, so the broker may keep only that one).
fn checkpoints_kept(
    rt: &tokio::runtime::Runtime,
    bootstrap: &str,
    scratch: &Path,
) -> std::collections::BTreeMap<String, u64> {
    use k2_log::{Log, LogConsumer};
    rt.block_on(async {
        // The broker was restarted moments ago (a debug build on SQLite): its first
        // metadata answers may take longer than one request's timeout.
        let schemas = k2_log::LocalSchemas::open(&scratch.join("registry.redb")).unwrap();
        let log = k2_testkit::poll::until_async(
            std::time::Duration::from_secs(120),
            "the restarted broker answers",
            || async {
                k2_log::KafkaLog::connect(
                    k2_log::KafkaOptions {
                        bootstrap_servers: bootstrap.to_string(),
                        ..k2_log::KafkaOptions::default()
                    },
                    k2_log::Registry::Local(schemas.clone()),
                )
                .await
                .ok()
            },
        )
        .await;
        let topic = k2_log::kafka::CHECKPOINT_TOPIC;
        let end = log.end_offsets(topic).await.unwrap()[0];
        let mut consumer = log
            .consumer(vec![k2_log::PartitionOffset {
                topic: topic.into(),
                partition: 0,
                offset: 0,
            }])
            .unwrap();
        let mut kept = std::collections::BTreeMap::new();
        let (mut read, deadline) = (0, Instant::now() + Duration::from_secs(60));
        while read < end {
            assert!(
                Instant::now() < deadline,
                "read {read} of {end} checkpoints"
            );
            for r in consumer
                .poll(1000, Duration::from_millis(200))
                .await
                .unwrap()
            {
                read = r.offset + 1;
                let state: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
                kept.insert(
                    String::from_utf8(r.key).unwrap(),
                    state["bytes"].as_u64().unwrap(),
                );
            }
        }
        kept
    })
}

/// A TLS endpoint on a free port of loopback, with the test CA's server certificate, that
/// passes each connection on to the plain `port`. Lives as long as the test process.
fn tls_in_front_of(port: u16) -> u16 {
    let acceptor =
        tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(k2_testkit::tls::server_config()));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tls_port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    if let Ok(mut plain) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    }
                });
            }
        });
    });
    tls_port
}

/// `k2 registry serve` on a free port of loopback, and that port.
fn registry_server(data: &Path) -> (Running, u16) {
    use std::io::BufRead;
    let mut server = k2(data)
        .args(["registry", "serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map(Running)
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(server.stderr.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let port = first
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no address in {first:?}"));
    (server, port)
}

#[test]
fn the_schema_registry_speaks_the_confluent_api() {
    let data = tempfile::tempdir().unwrap();
    run_ok(k2(data.path()).arg("ingest").arg("asx").arg(sample()));
    let (mut server, port) = registry_server(data.path());
    let call = |method: &str, path: &str, body: &str| {
        let (status, text) = http(port, method, path, body).unwrap();
        let json = text
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_string();
        assert!(
            text.to_ascii_lowercase()
                .contains("content-type: application/vnd.schemaregistry.v1+json"),
            "{text}"
        );
        (
            status,
            serde_json::from_str::<serde_json::Value>(&json).unwrap(),
        )
    };
    // What the ingest registered, by TopicNameStrategy subject.
    let (status, subjects) = call("GET", "/subjects", "");
    assert_eq!(status, 200);
    assert_eq!(
        subjects,
        serde_json::json!([
            "market.equities.quotes.asx-value",
            "market.equities.reference_data.asx-value",
            "market.equities.trades.asx-value"
        ])
    );
    let (_, latest) = call(
        "GET",
        "/subjects/market.equities.trades.asx-value/versions/latest",
        "",
    );
    assert_eq!(latest["version"], 1);
    let id = latest["id"].as_u64().unwrap();
    let (status, by_id) = call("GET", &format!("/schemas/ids/{id}"), "");
    assert_eq!(status, 200);
    assert_eq!(by_id["schema"], latest["schema"]);
    let trade_schema = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/avro/trade.avsc"),
    )
    .unwrap();
    assert_eq!(by_id["schema"].as_str().unwrap(), trade_schema);
    let (status, missing) = call("GET", "/schemas/ids/9999", "");
    assert_eq!((status, missing["error_code"].as_u64()), (404, Some(40403)));
    let (status, missing) = call("GET", "/subjects/nope-value/versions", "");
    assert_eq!((status, missing["error_code"].as_u64()), (404, Some(40401)));

    // Registration under BACKWARD (the default): a field without default is refused.
    let body = |fields: &str| {
        serde_json::json!({
            "schema": format!(r#"{{"type":"record","name":"T","fields":[{fields}]}}"#)
        })
        .to_string()
    };
    let v1 = body(r#"{"name":"a","type":"long"}"#);
    let v2_required = body(r#"{"name":"a","type":"long"},{"name":"c","type":"string"}"#);
    let v2_default =
        body(r#"{"name":"a","type":"long"},{"name":"b","type":"string","default":""}"#);
    let (status, first_id) = call("POST", "/subjects/t-value/versions", &v1);
    assert_eq!(status, 200);
    assert_eq!(
        call("POST", "/subjects/t-value/versions", &v1).1,
        first_id,
        "idempotent"
    );
    let (status, refused) = call("POST", "/subjects/t-value/versions", &v2_required);
    assert_eq!((status, refused["error_code"].as_u64()), (409, Some(409)));
    assert!(
        refused["message"].as_str().unwrap().contains("BACKWARD"),
        "{refused}"
    );
    let (_, verdict) = call(
        "POST",
        "/compatibility/subjects/t-value/versions/latest",
        &v2_required,
    );
    assert_eq!(verdict["is_compatible"], false);
    let (_, verdict) = call(
        "POST",
        "/compatibility/subjects/t-value/versions",
        &v2_default,
    );
    assert_eq!(verdict["is_compatible"], true);
    assert_eq!(
        call("POST", "/subjects/t-value/versions", &v2_default).0,
        200
    );
    let (_, versions) = call("GET", "/subjects/t-value/versions", "");
    assert_eq!(versions, serde_json::json!([1, 2]));
    // Lookup compares schemas in canonical form (field order of the JSON does not matter).
    let reordered = serde_json::json!({
        "schema": r#"{"fields":[{"type":"long","name":"a"}],"name":"T","type":"record"}"#
    })
    .to_string();
    let (status, found) = call("POST", "/subjects/t-value", &reordered);
    assert_eq!((status, found["version"].as_u64()), (200, Some(1)));
    // Levels per subject.
    let (status, _) = call("PUT", "/config/t-value", r#"{"compatibility":"NONE"}"#);
    assert_eq!(status, 200);
    assert_eq!(
        call("GET", "/config/t-value", "").1["compatibilityLevel"],
        "NONE"
    );
    assert_eq!(
        call("GET", "/config", "").1["compatibilityLevel"],
        "BACKWARD"
    );
    assert_eq!(
        call("POST", "/subjects/t-value/versions", &v2_required).0,
        200
    );
    let (status, bad) = call("PUT", "/config", r#"{"compatibility":"SOMETIMES"}"#);
    assert_eq!((status, bad["error_code"].as_u64()), (422, Some(42203)));
    // Bad input names what is wrong.
    let (status, bad) = call(
        "POST",
        "/subjects/t-value/versions",
        r#"{"schema":"{}","schemaType":"PROTOBUF"}"#,
    );
    assert_eq!((status, bad["error_code"].as_u64()), (422, Some(42201)));
    let (status, bad) = call(
        "POST",
        "/subjects/t-value/versions",
        r#"{"schema":"{nope"}"#,
    );
    assert_eq!((status, bad["error_code"].as_u64()), (422, Some(42201)));
    assert!(
        bad["message"]
            .as_str()
            .unwrap()
            .contains("not a valid Avro schema")
    );

    Command::new("kill")
        .arg("-TERM")
        .arg(server.id().to_string())
        .status()
        .unwrap();
    assert!(
        server.wait().unwrap().success(),
        "SIGTERM stops the registry cleanly"
    );
}

#[test]
fn demo_overload_shows_the_levels_rise_and_fall_and_lands_every_record_once() {
    let data = tempfile::tempdir().unwrap();
    let out = run_ok(k2(data.path()).args(["demo", "--overload"]));
    assert!(out.contains("graceful"), "{out}");
    assert!(
        out.contains("Exactly once: 30000 trades sent, 30000 in the lake (30000 distinct); 30000 quotes sent, 30000 in the lake"),
        "{out}"
    );
    let levels = &out[out.find("Levels over time:").expect("a timeline")..];
    assert!(levels.contains("0 normal"), "{levels}");
    assert!(
        out.contains("back to normal with everything landed"),
        "{out}"
    );
}
