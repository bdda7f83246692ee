//! The query API as clients see it: `k2 serve` on a free port of 127.0.0.1, over real TCP,
//! answering from the sample landed by `k2 ingest` and `k2 consume`.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::*;

/// A running `k2 serve` and the keys it accepts.
struct Server {
    child: Child,
    port: u16,
    reader: String,
    analyst: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sample landed in `data`.
fn landed() -> tempfile::TempDir {
    let data = tempfile::tempdir().unwrap();
    run_ok(k2(data.path()).arg("ingest").arg("asx").arg(sample()));
    run_ok(k2(data.path()).args(["consume", "--until-caught-up"]));
    data
}

/// `k2 serve` on `data` with a reader key (read) and an analyst key (read, sql), plus the
/// extra configuration `extra` (TOML).
fn serve(data: &Path, extra: &str) -> Server {
    start(data, extra, &["serve"], Default::default())
}

/// `k2 <command> --listen 127.0.0.1:0` (serve or up) as [`serve`] does; standard error
/// is collected into `stderr`.
fn start(
    data: &Path,
    extra: &str,
    command: &[&str],
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let (reader, reader_entry) = new_key(data, "reader", "read");
    let (analyst, analyst_entry) = new_key(data, "analyst", "read,sql");
    let config = dir.path().join("k2.toml");
    std::fs::write(
        &config,
        format!("{extra}\n{reader_entry}\n{analyst_entry}\n"),
    )
    .unwrap();
    let mut child = k2(data)
        .arg("--config")
        .arg(&config)
        .args(command)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let port = listening_port(&mut child, "query API on http://127.0.0.1:", stderr);
    Server {
        child,
        port,
        reader,
        analyst,
        _dir: dir,
    }
}

impl Server {
    fn get(&self, path: &str, key: Option<&str>) -> Answer {
        let headers: Vec<(&str, &str)> = key.map(|k| ("X-API-Key", k)).into_iter().collect();
        exchange(self.port, "GET", path, &headers, b"", false)
    }
    fn post(&self, path: &str, key: Option<&str>, body: &Value) -> Answer {
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(k) = key {
            headers.push(("X-API-Key", k));
        }
        exchange(
            self.port,
            "POST",
            path,
            &headers,
            body.to_string().as_bytes(),
            false,
        )
    }
    /// `body` as it is (not necessarily JSON) with the reader key, declared or chunked.
    fn post_raw(&self, path: &str, body: &[u8], chunked: bool) -> Answer {
        let headers = [
            ("X-API-Key", self.reader.as_str()),
            ("Content-Type", "application/json"),
        ];
        exchange(self.port, "POST", path, &headers, body, chunked)
    }
    /// Answer `sql` with the analyst key: the rows as JSON.
    fn sql(&self, sql: &str) -> Vec<Value> {
        let a = self.post("/v1/sql", Some(&self.analyst), &json!({ "sql": sql }));
        assert_eq!(a.status, 200, "{}", a.text());
        a.json()["data"].as_array().unwrap().clone()
    }
}

fn assert_error(a: &Answer, status: u16, code: &str) {
    assert_eq!(a.status, status, "{}", a.text());
    let j = a.json();
    assert_eq!(j["error"]["code"], code, "{j}");
    assert!(
        j["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    assert_eq!(
        j["meta"]["request_id"].as_str(),
        a.header("x-request-id"),
        "the error names its request"
    );
}

const DAY: &str = "start_time=2014-03-12&end_time=2014-03-13&exchange=ASX";
const BHP_DAY_TRADES: usize = 20_283;

#[test]
fn every_endpoint_answers_exactly_in_every_format() {
    let data = landed();
    let s = serve(data.path(), "");
    let r = Some(s.reader.as_str());

    // Keys: missing → 401, wrong → 403, scope → 403.
    assert_error(&s.get("/v1/trades", None), 401, "missing_key");
    assert_error(
        &s.get("/v1/trades", Some("k2_not-a-key")),
        403,
        "invalid_key",
    );
    let a = s.post("/v1/sql", r, &json!({"sql": "SELECT 1"}));
    assert_error(&a, 403, "insufficient_scope");
    let bearer = exchange(
        s.port,
        "GET",
        "/v1/symbols",
        &[("Authorization", &format!("Bearer {}", s.reader))],
        b"",
        false,
    );
    assert_eq!(bearer.status, 200);
    assert_eq!(bearer.json()["data"], json!(["BHP", "DVN", "MWR"]));

    // Trades: the envelope, a request id honoured, newest first.
    let a = exchange(
        s.port,
        "GET",
        &format!("/v1/trades?symbol=BHP&{DAY}&limit=5"),
        &[("X-API-Key", &s.reader), ("X-Request-Id", "test-42")],
        b"",
        false,
    );
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("x-request-id"), Some("test-42"));
    assert!(a.header("ratelimit-remaining").is_some());
    let j = a.json();
    assert_eq!(j["meta"]["request_id"], "test-42");
    assert!(j["meta"]["snapshot_id"].as_i64().is_some());
    let rows = j["data"].as_array().unwrap();
    assert_eq!(rows.len(), 5);
    assert_eq!(j["pagination"]["has_more"], true);
    let times: Vec<&str> = rows
        .iter()
        .map(|r| r["timestamp"].as_str().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    assert!(
        rows[0]["price"].is_string(),
        "prices are exact decimal text"
    );

    // A whole day in pages: every trade once, in order, and the same as one big page.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/trades?symbol=BHP&{DAY}&limit=1000");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let j = s.get(&path, r).json();
        for row in j["data"].as_array().unwrap() {
            seen.push(row["message_id"].as_str().unwrap().to_string());
        }
        match j["pagination"]["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), BHP_DAY_TRADES);
    assert_eq!(
        seen.iter().collect::<HashSet<_>>().len(),
        BHP_DAY_TRADES,
        "no repeats"
    );
    let whole = s.post(
        "/v1/trades/query",
        r,
        &json!({"symbols": ["BHP"], "exchanges": ["ASX"], "start_time": "2014-03-12", "end_time": "2014-03-13", "fields": ["message_id"], "limit": 100000}),
    );
    let whole: Vec<String> = whole.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["message_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seen, whole, "pages join into the one-page answer");
    // A cursor belongs to its query: another query's cursor is a conflict, not a bad value.
    let a = s.get(
        &format!("/v1/trades?symbol=DVN&cursor={}", cursor_of(&s)),
        r,
    );
    assert_error(&a, 409, "cursor_mismatch");

    // Formats, by parameter and by Accept; all carry the same rows.
    let path = format!("/v1/trades?symbol=BHP&{DAY}&limit=250");
    let csv = s.get(&format!("{path}&format=csv"), r);
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    assert_eq!(csv.text().lines().count(), 251, "a header and 250 rows");
    assert_eq!(csv.header("x-record-count"), Some("250"));
    let accept = exchange(
        s.port,
        "GET",
        &path,
        &[("X-API-Key", &s.reader), ("Accept", "text/csv")],
        b"",
        false,
    );
    assert_eq!(accept.body, csv.body, "Accept picks the same format");
    let parquet = s.get(&format!("{path}&format=parquet"), r);
    assert_eq!(parquet.status, 200);
    let file = data.path().join("page.parquet");
    std::fs::write(&file, &parquet.body).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&file).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 250);
    let arrow = exchange(
        s.port,
        "GET",
        &path,
        &[
            ("X-API-Key", &s.reader),
            ("Accept", "application/vnd.apache.arrow.stream"),
        ],
        b"",
        false,
    );
    assert_eq!(arrow.status, 200);
    let stream =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(arrow.body.clone()), None)
            .unwrap();
    let schema = stream.schema();
    assert!(matches!(
        schema.field_with_name("price").unwrap().data_type(),
        arrow::datatypes::DataType::Decimal128(18, 8)
    ));
    assert_eq!(stream.map(|b| b.unwrap().num_rows()).sum::<usize>(), 250);
    assert_error(
        &s.get(&format!("{path}&format=xml"), r),
        422,
        "invalid_parameter",
    );
    let none = exchange(
        s.port,
        "GET",
        &path,
        &[("X-API-Key", &s.reader), ("Accept", "image/png")],
        b"",
        false,
    );
    assert_error(&none, 406, "not_acceptable");

    // Compression.
    for (encoding, magic) in [
        ("gzip", &[0x1f, 0x8b][..]),
        ("zstd", &[0x28, 0xb5, 0x2f, 0xfd][..]),
    ] {
        let a = exchange(
            s.port,
            "GET",
            &path,
            &[("X-API-Key", &s.reader), ("Accept-Encoding", encoding)],
            b"",
            false,
        );
        assert_eq!(a.header("content-encoding"), Some(encoding));
        assert!(a.body.starts_with(magic), "{encoding}");
    }

    // Filters are part of the query: bounds hold on every row, and the count is SQL's.
    let a = s.post(
        "/v1/trades/query",
        r,
        &json!({"symbols": ["BHP", "DVN"], "min_price": "36", "max_price": 36.5, "min_quantity": "1000", "fields": ["symbol", "price", "quantity"], "limit": 100000}),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    let rows = a.json()["data"].as_array().unwrap().clone();
    assert_eq!(
        rows[0].as_object().unwrap().len(),
        3,
        "only the fields asked for"
    );
    for row in &rows {
        let p: f64 = row["price"].as_str().unwrap().parse().unwrap();
        let q: f64 = row["quantity"].as_str().unwrap().parse().unwrap();
        assert!((36.0..=36.5).contains(&p) && q >= 1000.0, "{row}");
    }
    let want = s.sql("SELECT count(*) AS n FROM trades WHERE symbol IN ('BHP', 'DVN') AND price >= 36 AND price <= 36.5 AND quantity >= 1000");
    assert_eq!(rows.len() as u64, want[0]["n"].as_u64().unwrap());
    let a = s.post(
        "/v1/quotes/query",
        r,
        &json!({"symbols": ["BHP"], "min_price": "1"}),
    );
    assert_error(&a, 422, "invalid_parameter");
    let a = s.post(
        "/v1/trades/query",
        r,
        &json!({"symbols": ["BHP"], "fields": ["nope"]}),
    );
    assert_error(&a, 422, "invalid_parameter");
    let q = s
        .get(&format!("/v1/quotes?symbol=BHP&{DAY}&limit=3"), r)
        .json();
    assert!(q["data"][0]["bid_price"].is_string());

    // Summary, bars, batch, aggregations agree with each other.
    let sum = s.get("/v1/summary/BHP/2014-03-12?exchange=ASX", r);
    assert_eq!(sum.status, 200, "{}", sum.text());
    let sum = sum.json()["data"].clone();
    assert_eq!(sum["trade_count"], BHP_DAY_TRADES);
    assert_error(
        &s.get("/v1/summary/BHP/2014-03-15?exchange=ASX", r),
        404,
        "not_found",
    );
    assert_error(
        &s.get("/v1/summary/BHP/yesterday", r),
        422,
        "invalid_parameter",
    );
    let bars = s.get(
        "/v1/ohlcv/1m?symbol=BHP&start_date=2014-03-12&exchange=ASX",
        r,
    );
    assert_eq!(bars.status, 200, "{}", bars.text());
    let bars = bars.json()["data"].as_array().unwrap().clone();
    let mut count = 0;
    for b in &bars {
        let px = |k: &str| b[k].as_str().unwrap().parse::<f64>().unwrap();
        assert!(
            px("low") <= px("open").min(px("close")) && px("high") >= px("open").max(px("close")),
            "{b}"
        );
        assert!(px("volume") > 0.0 && b["trade_count"].as_u64().unwrap() > 0);
        count += b["trade_count"].as_u64().unwrap();
    }
    assert_eq!(count as usize, BHP_DAY_TRADES);
    assert_error(
        &s.get("/v1/ohlcv/2m?symbol=BHP&start_date=2014-03-12", r),
        422,
        "invalid_parameter",
    );
    let batch = s.post(
        "/v1/ohlcv/batch",
        r,
        &json!({"requests": [
            {"symbol": "BHP", "timeframe": "1d", "start_date": "2014-03-10", "end_date": "2014-03-14", "exchange": "ASX"},
            {"symbol": "BHP", "timeframe": "7m", "start_date": "2014-03-10"},
            {"symbol": "DVN", "timeframe": "1h", "start_date": "2014-03-12", "exchange": "ASX"}
        ]}),
    );
    assert_eq!(batch.status, 200, "{}", batch.text());
    let items = batch.json()["data"].as_array().unwrap().clone();
    assert_eq!(
        (
            items[0]["ok"].clone(),
            items[1]["ok"].clone(),
            items[2]["ok"].clone()
        ),
        (json!(true), json!(false), json!(true))
    );
    assert_eq!(items[1]["error"]["field"], "requests[1].timeframe");
    let daily = items[0]["data"].as_array().unwrap();
    assert_eq!(daily.len(), 5, "five trading days");
    assert_eq!(
        daily[2]["vwap"], sum["vwap"],
        "the daily bar is the summary"
    );
    let too_many: Vec<Value> = (0..11)
        .map(|_| json!({"symbol": "BHP", "timeframe": "1d", "start_date": "2014-03-10"}))
        .collect();
    assert_error(
        &s.post("/v1/ohlcv/batch", r, &json!({"requests": too_many})),
        422,
        "invalid_parameter",
    );
    let agg = s.post(
        "/v1/aggregations",
        r,
        &json!({"symbols": ["BHP", "DVN"], "metrics": ["vwap", "twap", "ohlcv", "trade_count", "volume_profile"], "interval": "1d", "start_time": "2014-03-12", "end_time": "2014-03-13", "exchange": "ASX"}),
    );
    assert_eq!(agg.status, 200, "{}", agg.text());
    let agg = agg.json();
    let bhp = agg["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["symbol"] == "BHP")
        .unwrap()
        .clone();
    assert_eq!(
        (
            bhp["vwap"].clone(),
            bhp["trade_count"].clone(),
            bhp["open"].clone()
        ),
        (
            sum["vwap"].clone(),
            sum["trade_count"].clone(),
            sum["open"].clone()
        )
    );
    let levels: u64 = agg["volume_profile"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["symbol"] == "BHP")
        .map(|l| l["trade_count"].as_u64().unwrap())
        .sum();
    assert_eq!(levels as usize, BHP_DAY_TRADES);
    let a = s.post("/v1/aggregations", r, &json!({"symbols": ["BHP"], "metrics": ["median"], "interval": "1d", "start_time": "2014-03-12", "end_time": "2014-03-13"}));
    assert_error(&a, 422, "invalid_parameter");

    // Catalogue, snapshots and time travel.
    let stats = s.get("/v1/stats", r).json();
    assert_eq!(stats["data"]["tables"][0]["rows"], TRADES);
    let snaps = s.get("/v1/snapshots?table=trades", r).json();
    let id = snaps["data"][0]["snapshot_id"].as_i64().unwrap();
    let a = s.post(
        &format!("/v1/snapshots/{id}/query"),
        r,
        &json!({"data_type": "trades", "symbols": ["MWR"], "limit": 100}),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["data"].as_array().unwrap().len(), 11);
    assert_eq!(a.json()["meta"]["snapshot_id"], id);
    assert_error(
        &s.post(
            "/v1/snapshots/12345/query",
            r,
            &json!({"data_type": "trades"}),
        ),
        404,
        "not_found",
    );

    // Replay: a day in timestamp order, in pages.
    let mut replayed = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut body = json!({"data_type": "trades", "symbols": ["BHP"], "exchanges": ["ASX"], "start_time": "2014-03-12", "end_time": "2014-03-13", "limit": 5000, "fields": ["timestamp", "message_id"]});
        if let Some(c) = &cursor {
            body["cursor"] = json!(c);
        }
        let j = s.post("/v1/replay", r, &body).json();
        replayed.extend(j["data"].as_array().unwrap().iter().cloned());
        match j["pagination"]["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(replayed.len(), BHP_DAY_TRADES);
    assert!(
        replayed
            .windows(2)
            .all(|w| w[0]["timestamp"].as_str() <= w[1]["timestamp"].as_str())
    );
    let mut oldest_first: Vec<String> = replayed
        .iter()
        .map(|r| r["message_id"].as_str().unwrap().to_string())
        .collect();
    oldest_first.reverse();
    assert_eq!(
        oldest_first, seen,
        "replay is the day's trades, oldest first"
    );
    assert_error(
        &s.post(
            "/v1/replay",
            r,
            &json!({"data_type": "trades", "start_time": "2014-03-12"}),
        ),
        422,
        "invalid_parameter",
    );

    // SQL: read-only, with a result limit.
    let a = s.post(
        "/v1/sql",
        Some(&s.analyst),
        &json!({"sql": "DROP TABLE trades"}),
    );
    assert_error(&a, 400, "not_read_only");
    let a = s.post(
        "/v1/sql",
        Some(&s.analyst),
        &json!({"sql": "SELEC nothing"}),
    );
    assert_error(&a, 400, "sql_error");
    // A longer answer is cut at query.max_rows (100 000) and says so, in every format.
    let rows = |n: u32| json!({"sql": format!("SELECT v FROM generate_series(1, {n}) AS g(v)")});
    let a = s.post("/v1/sql", Some(&s.analyst), &rows(100_001));
    assert_eq!(a.status, 200, "{}", a.text());
    let body = a.json();
    assert_eq!(body["data"].as_array().unwrap().len(), 100_000);
    assert_eq!(body["meta"]["truncated_at"], 100_000);
    assert_eq!(a.header("x-truncated-at"), Some("100000"));
    let mut csv = rows(100_001);
    csv["format"] = json!("csv");
    let a = s.post("/v1/sql", Some(&s.analyst), &csv);
    assert_eq!(
        (a.header("x-truncated-at"), a.header("x-record-count")),
        (Some("100000"), Some("100000"))
    );
    let a = s.post("/v1/sql", Some(&s.analyst), &rows(100_000));
    assert!(a.json()["meta"].get("truncated_at").is_none());

    // Routes: the batch route is not captured by {timeframe}; unknown routes and methods.
    assert_error(&s.get("/v1/ohlcv/batch", r), 405, "method_not_allowed");
    assert_error(&s.get("/v1/nothing", r), 404, "not_found");
    let a = s.post_raw("/v1/trades/query", b"{not json", false);
    assert_error(&a, 400, "bad_request");
    let a = s.post_raw("/v1/trades/query", br#"{"limit": "many"}"#, false);
    assert_error(&a, 422, "invalid_parameter");

    // Body limit, counted on the bytes read: declared and chunked.
    let big = format!("{{\"symbols\": [\"{}\"]}}", "A".repeat(11 << 20));
    let a = s.post_raw("/v1/trades/query", big.as_bytes(), false);
    assert_error(&a, 413, "payload_too_large");
    let a = s.post_raw("/v1/trades/query", big.as_bytes(), true);
    assert_error(&a, 413, "payload_too_large");

    // Operations: health, readiness with dependencies, metrics, documents.
    assert_eq!(s.get("/health", None).json()["status"], "ok");
    let ready = s.get("/health/ready", None);
    assert_eq!(ready.status, 200, "{}", ready.text());
    let names: Vec<String> = ready.json()["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["catalog", "storage", "log"]);
    let metrics = s.get("/metrics", None).text();
    assert!(
        metrics.contains(r#"k2_api_requests_total{route="/v1/trades",method="GET",status="200"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("k2_api_request_duration_seconds_bucket"),
        "durations are histograms"
    );
    // Every metric `k2 serve` exposes has HELP text and a conventional name.
    k2_testkit::promtool::assert_clean(&metrics);
    let doc = s.get("/openapi.json", None).json();
    for route in [
        "/v1/trades",
        "/v1/quotes",
        "/v1/trades/query",
        "/v1/quotes/query",
        "/v1/summary/{symbol}/{date}",
        "/v1/ohlcv/{timeframe}",
        "/v1/ohlcv/batch",
        "/v1/aggregations",
        "/v1/symbols",
        "/v1/stats",
        "/v1/snapshots",
        "/v1/snapshots/{snapshot_id}/query",
        "/v1/replay",
        "/v1/sql",
        "/v1/quality/summary",
        "/v1/quality/gaps",
        "/health",
        "/health/ready",
        "/metrics",
    ] {
        assert!(doc["paths"][route].is_object(), "{route} is documented");
    }
    let page = s.get("/docs", None);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
            && page.text().contains("openapi.json")
    );
}

/// A valid cursor of a BHP trades page (for reuse with another query).
fn cursor_of(s: &Server) -> String {
    let j = s
        .get("/v1/trades?symbol=BHP&limit=1", Some(&s.reader))
        .json();
    j["pagination"]["next_cursor"].as_str().unwrap().to_string()
}

#[test]
fn injection_strings_reach_no_sql_and_change_nothing() {
    let data = landed();
    let s = serve(data.path(), "");
    let r = Some(s.reader.as_str());
    let evil = [
        "ASX'; DROP TABLE trades; --",
        "BHP' OR '1'='1",
        "BHP/**/OR/**/1=1",
        "BHP\u{2019} OR \u{2018}1\u{2019}=\u{2019}1",
        "BHP\"; DELETE FROM trades; --",
        "1); SELECT * FROM quotes; --",
        "%27%20OR%201=1--",
        "BHP\0",
    ];
    let enc = |v: &str| -> String {
        v.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    let ok_or_refused = |a: &Answer, what: &str| {
        assert!(
            [200, 400, 404, 422].contains(&a.status),
            "{what}: status {} {}",
            a.status,
            a.text()
        );
        if a.status == 200 {
            let j = a.json();
            if let Some(rows) = j["data"].as_array() {
                assert!(rows.is_empty(), "{what} matched rows: {j}");
            }
        }
    };
    for v in evil {
        let e = enc(v);
        for param in [
            "symbol",
            "exchange",
            "start_time",
            "end_time",
            "cursor",
            "format",
            "limit",
        ] {
            let a = s.get(&format!("/v1/trades?{param}={e}"), r);
            ok_or_refused(&a, &format!("GET trades {param}={v}"));
        }
        ok_or_refused(&s.get(&format!("/v1/summary/{e}/2014-03-12"), r), v);
        ok_or_refused(&s.get(&format!("/v1/summary/BHP/{e}"), r), v);
        ok_or_refused(
            &s.get(
                &format!("/v1/ohlcv/{e}?symbol=BHP&start_date=2014-03-12"),
                r,
            ),
            v,
        );
        ok_or_refused(
            &s.get(&format!("/v1/ohlcv/1h?symbol={e}&start_date=2014-03-12"), r),
            v,
        );
        ok_or_refused(&s.get(&format!("/v1/symbols?exchange={e}"), r), v);
        ok_or_refused(&s.get(&format!("/v1/snapshots?table={e}"), r), v);
        for field in ["symbols", "exchanges", "fields"] {
            let a = s.post("/v1/trades/query", r, &json!({ field: [v] }));
            ok_or_refused(&a, &format!("POST {field}={v}"));
        }
        for field in [
            "start_time",
            "end_time",
            "min_price",
            "max_quantity",
            "cursor",
            "data_type",
            "format",
        ] {
            let a = s.post(
                "/v1/replay",
                r,
                &json!({"start_time": "2014-03-12", "end_time": "2014-03-13", field: v}),
            );
            ok_or_refused(&a, &format!("POST replay {field}={v}"));
        }
        let a = s.post("/v1/aggregations", r, &json!({"symbols": [v], "metrics": ["vwap"], "interval": "1h", "start_time": "2014-03-12", "end_time": "2014-03-13"}));
        ok_or_refused(&a, v);
    }
    // The tables are intact and the answers unchanged.
    let counts =
        s.sql("SELECT (SELECT count(*) FROM trades) AS t, (SELECT count(*) FROM quotes) AS q");
    assert_eq!(
        (counts[0]["t"].as_u64(), counts[0]["q"].as_u64()),
        (Some(TRADES), Some(QUOTES))
    );
    let j = s
        .get(&format!("/v1/trades?symbol=BHP&{DAY}&limit=10000"), r)
        .json();
    assert_eq!(j["data"].as_array().unwrap().len(), 10_000);
}

#[test]
fn limits_are_enforced_rate_timeout_concurrency() {
    let data = landed();
    let s = serve(
        data.path(),
        "[query]\ntimeout = \"1500ms\"\n[api]\nrate_per_second = 0.01\nburst = 4\nip_rate_per_second = 0.01\nip_burst = 100\nmax_concurrent_queries = 1\nmax_queued = 0",
    );
    // A slow query times out (504) and is cancelled.
    let slow = json!({"sql": "SELECT count(*) FROM generate_series(1, 50000000000)"});
    let a = s.post("/v1/sql", Some(&s.analyst), &slow);
    assert_error(&a, 504, "query_timeout");

    // While one query runs, another is shed with 503 and Retry-After.
    let port = s.port;
    let analyst = s.analyst.clone();
    let running = std::thread::spawn(move || {
        exchange(
            port,
            "POST",
            "/v1/sql",
            &[
                ("X-API-Key", &analyst),
                ("Content-Type", "application/json"),
            ],
            slow.to_string().as_bytes(),
            false,
        )
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let shed = loop {
        assert!(Instant::now() < deadline, "the first query never started");
        let metrics = s.get("/metrics", None);
        if metrics.status == 200
            && metrics
                .text()
                .lines()
                .any(|l| l == "k2_api_queries_running 1")
        {
            break s.get("/v1/symbols", Some(&s.analyst));
        }
    };
    assert_error(&shed, 503, "overloaded");
    assert!(shed.header("retry-after").is_some());
    assert_eq!(running.join().unwrap().status, 504);

    // The analyst key spent 3 of its burst of 4 above; one more passes, then 429.
    assert_eq!(s.get("/v1/symbols", Some(&s.analyst)).status, 200);
    let a = s.get("/v1/symbols", Some(&s.analyst));
    assert_error(&a, 429, "rate_limited");
    assert!(a.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(a.header("ratelimit-remaining"), Some("0"));
    // Other keys have their own bucket.
    assert_eq!(s.get("/v1/symbols", Some(&s.reader)).status, 200);
    // Without a key, the address's bucket applies.
    let a = (0..200)
        .map(|_| s.get("/health", None))
        .find(|a| a.status != 200)
        .expect("the address's burst runs out");
    assert_error(&a, 429, "rate_limited");
    assert_eq!(
        s.get("/v1/trades", None).status,
        429,
        "wrong keys cannot be guessed at speed"
    );
}

#[test]
fn production_mode_refuses_to_start_without_keys() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("k2.toml");
    std::fs::write(&config, "[api]\nproduction = true\n").unwrap();
    let out = k2(data.path())
        .arg("--config")
        .arg(&config)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no API key is configured"), "{err}");
}

/// An answer is kept by question and snapshot: asked again, it comes from memory; after a
/// commit, the same question is answered from the new snapshot at once. With
/// `api.cache_mb = 0` nothing is kept.
#[test]
fn answers_are_kept_by_snapshot_and_a_commit_shows_at_once() {
    // A copy of the sample, so that a trade can be appended to it later.
    let source = tempfile::tempdir().unwrap();
    for dir in ["reference-data", "trades", "quotes"] {
        std::fs::create_dir_all(source.path().join(dir)).unwrap();
        for f in std::fs::read_dir(sample().join(dir)).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), source.path().join(dir).join(f.file_name())).unwrap();
        }
    }
    let data = tempfile::tempdir().unwrap();
    run_ok(k2(data.path()).arg("ingest").arg("asx").arg(source.path()));
    run_ok(k2(data.path()).args(["consume", "--until-caught-up"]));
    let server = serve(data.path(), "");
    let path = "/v1/summary/BHP/2014-03-12?exchange=ASX";
    let ask = |s: &Server| {
        let a = s.get(path, Some(&s.reader));
        assert_eq!(a.status, 200, "{}", a.text());
        a.json()
    };
    let hits = |s: &Server| {
        s.get("/metrics", None)
            .text()
            .lines()
            .find_map(|l| l.strip_prefix("k2_api_cache_total{outcome=\"hit\"} "))
            .map_or(0, |n| n.trim().parse::<u64>().unwrap())
    };
    let first = ask(&server);
    let again = ask(&server);
    assert_eq!(first["data"], again["data"]);
    assert_eq!(first["meta"]["snapshot_id"], again["meta"]["snapshot_id"]);
    assert_ne!(first["meta"]["request_id"], again["meta"]["request_id"]);
    assert!(
        hits(&server) >= 1,
        "the repeated question was answered from memory"
    );

    // The lake as it is now gets a name (the server keeps running).
    run_ok(k2(data.path()).args(["snapshot", "tag", "before-append"]));

    // One more BHP trade on that day, above its high, is appended and committed.
    let file = source.path().join("trades/7078.csv");
    let mut grown = std::fs::read(&file).unwrap();
    grown.extend_from_slice(b"03/12/2014,15:59:00.000,99.5,7,3,X,\r\n");
    std::fs::write(&file, grown).unwrap();
    run_ok(k2(data.path()).arg("ingest").arg("asx").arg(source.path()));
    run_ok(k2(data.path()).args(["consume", "--until-caught-up"]));
    let count = |j: &Value| j["data"]["trade_count"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let a = ask(&server);
        if count(&a) != count(&first) {
            break a;
        }
        assert!(Instant::now() < deadline, "the commit never showed: {a}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(count(&after), count(&first) + 1);
    assert_eq!(after["data"]["high"], "99.5");
    assert_ne!(after["meta"]["snapshot_id"], first["meta"]["snapshot_id"]);
    // Every answer names the log positions its snapshot covers.
    let offsets = |j: &Value| j["meta"]["log_offsets"]["market.equities.trades.asx/2"].as_u64();
    assert_eq!(offsets(&first), Some(TRADES));
    assert_eq!(offsets(&after), Some(TRADES + 1));

    // Time travel: by tag, by id and by instant, the day reads as it did before.
    let id = first["meta"]["snapshot_id"].as_i64().unwrap();
    let old = |pin: &str| {
        let a = server.get(&format!("{path}&{pin}"), Some(&server.reader));
        assert_eq!(a.status, 200, "{pin}: {}", a.text());
        a.json()
    };
    let committed = server
        .get("/v1/snapshots?table=trades", Some(&server.reader))
        .json();
    let first_commit = committed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["snapshot_id"].as_i64() == Some(id))
        .map(|s| s["committed_at"].as_str().unwrap().to_string())
        .unwrap();
    let first_commit: chrono::DateTime<chrono::Utc> = first_commit.parse().unwrap();
    let between = (first_commit + chrono::Duration::milliseconds(1))
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    for pin in [
        "snapshot=before-append".to_string(),
        format!("snapshot={id}"),
        format!("as_of={between}"),
    ] {
        let then = old(&pin);
        assert_eq!(then["data"], first["data"], "{pin}");
        assert_eq!(
            then["meta"]["snapshot_id"], first["meta"]["snapshot_id"],
            "{pin}"
        );
        assert_eq!(offsets(&then), Some(TRADES), "{pin}");
    }
    let trades = |q: &str| server.get(&format!("/v1/trades?symbol=BHP&{q}"), Some(&server.reader));
    assert_error(&trades("as_of=2014-01-01"), 404, "not_found");
    assert_error(&trades("snapshot=no-such-tag"), 404, "not_found");
    // Both: the tag's snapshot, provided it was the one current at the instant.
    let both = old(&format!("snapshot=before-append&as_of={between}"));
    assert_eq!(both["data"], first["data"]);
    // Far ahead, the current snapshot (after the append) is the one: not the tag's.
    assert_error(
        &trades("snapshot=before-append&as_of=2200-01-01T00:00:00Z"),
        404,
        "not_found",
    );
    assert_error(&trades("snapshot=bad%20name"), 422, "invalid_parameter");
    let recent = server.get(
        "/v1/trades/recent?snapshot=before-append",
        Some(&server.reader),
    );
    assert_error(&recent, 422, "invalid_parameter");
    drop(server);

    let uncached = serve(data.path(), "[api]\ncache_mb = 0");
    assert_eq!(ask(&uncached)["data"], after["data"]);
    assert_eq!(ask(&uncached)["data"], after["data"]);
    assert_eq!(hits(&uncached), 0);
}

#[test]
fn k2_up_serves_live_trades_before_the_lake_has_them_and_lands_each_once() {
    use k2_ingest::simulator::{Simulator, Step};
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The first connection: trades 1..=500 with a duplicate (100), two out of order
    // (201 before 200), a gap (300..=304 never sent), a malformed and an invalid frame,
    // then the connection drops. The second replays 480..=500 and goes on to 600.
    let mut first = Vec::new();
    for id in 1..=500 {
        match id {
            100 => first.extend([binance_trade(100, "100.5"), binance_trade(100, "100.5")]),
            200 => first.push(binance_trade(201, "100.5")),
            201 => first.push(binance_trade(200, "100.5")),
            300..=304 => {}
            250 => first.extend([binance_trade(250, "-1"), binance_trade(250, "100.5")]),
            _ => first.push(binance_trade(id, "100.5")),
        }
    }
    first.push("{garbage".into());
    let mut script: Vec<Step> = first.into_iter().map(Step::Send).collect();
    script.push(Step::Drop);
    let second = (480..=600)
        .map(|id| Step::Send(binance_trade(id, "100.5")))
        .collect();
    let sim = rt.block_on(Simulator::start(vec![script, second])).unwrap();

    let data = tempfile::tempdir().unwrap();
    let extra = format!(
        r#"
[writer]
max_age = "1h"
[feeds]
backoff_base = "20ms"
backoff_max = "200ms"
[feeds.binance]
url = "{}"
symbols = ["BTCUSDT"]
quotes = false
"#,
        sim.url()
    );
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut server = start(
        data.path(),
        &extra,
        &["up", "--feeds", "binance"],
        stderr.clone(),
    );
    let key = server.reader.clone();

    // Nothing is committed (the writer waits an hour): the answer comes from the tail.
    let deadline = Instant::now() + Duration::from_secs(60);
    let rows = loop {
        let a = server.get("/v1/trades/recent?symbol=BTCUSDT&limit=1000", Some(&key));
        assert_eq!(a.status, 200, "{}\n{}", a.text(), stderr.lock().unwrap());
        let body = a.json();
        assert_eq!(body["live"], true);
        let rows = body["data"].as_array().unwrap().clone();
        if rows.len() >= 595 || Instant::now() > deadline {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let ids: Vec<i64> = rows
        .iter()
        .map(|r| r["source_sequence"].as_i64().unwrap())
        .collect();
    let expected: Vec<i64> = (1..=600)
        .rev()
        .filter(|i| !(300..=304).contains(i))
        .collect();
    assert_eq!(ids, expected, "every trade once, newest first");
    let lake = server.get("/v1/trades?symbol=BTCUSDT", Some(&key)).json();
    assert_eq!(
        lake["data"].as_array().unwrap().len(),
        0,
        "nothing committed yet"
    );

    // SIGTERM: the feed stops, the writer commits what it holds, the process exits 0.
    let exit = terminate(&mut server);
    let log = stderr.lock().unwrap().clone();
    assert!(exit.success(), "{exit}: {log}");
    // Two gaps: 200 (filled late when it came after 201) and 300..=304.
    assert!(
        log.contains("source sequences: 2 gap, 592 in_order, 1 late_fill; 6 found missing"),
        "{log}"
    );

    let counted = run_ok(k2(data.path()).args([
        "sql",
        "SELECT count(*) AS n, count(DISTINCT trade_id) AS ids, min(source_sequence) AS lo, max(source_sequence) AS hi FROM trades WHERE exchange = 'BINANCE'",
        "--format",
        "csv",
    ]));
    assert_eq!(counted.lines().nth(1), Some("595,595,1,600"), "{counted}");
    let listed = run_ok(k2(data.path()).args(["dlq", "list", "--format", "json"]));
    let letters: Vec<Value> = match serde_json::from_str(&listed) {
        Ok(Value::Array(rows)) => rows,
        _ => listed
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
    };
    let kinds: Vec<(&str, &str)> = letters
        .iter()
        .map(|l| (l["stage"].as_str().unwrap(), l["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [("feed.binance", "invalid"), ("feed.binance", "malformed")]
    );
    assert!(letters[1]["raw"].as_str().unwrap() == "{garbage");
    drop(sim);

    // The completeness ledger says exactly that: two gaps — 200, found when 201 came and
    // filled when 200 did; 300..=304, still open — and 22 duplicates dropped (100 sent
    // twice, 480..=500 sent again after the reconnect), through the CLI, SQL and REST.
    let at = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(1_700_000_000_000 + ms)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string()
    };
    let gaps = run_ok(k2(data.path()).args(["query", "gaps", "--format", "csv"]));
    let gaps: Vec<&str> = gaps.lines().collect();
    assert_eq!(
        gaps,
        [
            "table,exchange,symbol,session,first_sequence,last_sequence,size,status,filled,lost,missing,found_at,closed_at",
            &format!(
                "market_data.trades,BINANCE,BTCUSDT,0,200,200,1,filled,1,0,0,{},{}",
                at(201),
                at(200)
            ),
            &format!(
                "market_data.trades,BINANCE,BTCUSDT,0,300,304,5,open,0,0,5,{},",
                at(305)
            ),
        ]
    );
    let summary = run_ok(k2(data.path()).args([
        "sql",
        "SELECT table, exchange, symbol, session, first_sequence, last_sequence, received, in_order, gaps, gap_messages, late_fills, missing, lost, sequence_duplicates, duplicates_dropped, resets, too_old FROM quality.streams",
        "--format",
        "csv",
    ]));
    assert_eq!(
        summary.lines().nth(1),
        Some("market_data.trades,BINANCE,BTCUSDT,0,1,600,595,592,2,6,1,5,0,0,22,0,0"),
        "{summary}"
    );
    let server = serve(data.path(), "");
    let open = server
        .get(
            "/v1/quality/gaps?symbol=BTCUSDT&status=open",
            Some(&server.reader),
        )
        .json();
    let open = open["data"].as_array().unwrap();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(
        (
            &open[0]["first_sequence"],
            &open[0]["missing"],
            &open[0]["closed_at"]
        ),
        (&json!(300), &json!(5), &Value::Null)
    );
    let streams = server
        .get(
            "/v1/quality/summary?table=trades&exchange=BINANCE",
            Some(&server.reader),
        )
        .json();
    let streams = streams["data"].as_array().unwrap();
    assert_eq!(streams.len(), 1, "{streams:?}");
    assert_eq!(
        (
            &streams[0]["received"],
            &streams[0]["missing"],
            &streams[0]["duplicates_dropped"]
        ),
        (&json!(595), &json!(5), &json!(22))
    );
    let refused = server.get("/v1/quality/gaps?status=closed", Some(&server.reader));
    assert_error(&refused, 400, "bad_request");
}

/// Sends SIGTERM to `k2 up` and waits (a minute at most) for it to exit.
fn terminate(server: &mut Server) -> std::process::ExitStatus {
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(server.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            return exit;
        }
        assert!(Instant::now() < deadline, "k2 up did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A Kraken v2 trade channel frame holding the trades `ids`.
fn kraken_trades(ids: std::ops::RangeInclusive<i64>) -> String {
    let trades: Vec<String> = ids
        .map(|id| {
            format!(
                r#"{{"symbol":"BTC/USD","side":"buy","price":42000.5,"qty":0.25,"ord_type":"market","trade_id":{id},"timestamp":"2023-09-25T07:49:{:02}.{:06}Z"}}"#,
                id / 1_000_000 % 60,
                id % 1_000_000
            )
        })
        .collect();
    format!(
        r#"{{"channel":"trade","type":"update","data":[{}]}}"#,
        trades.join(",")
    )
}

#[test]
fn k2_up_takes_a_binance_burst_and_every_kraken_trade_at_once() {
    use k2_ingest::simulator::{Simulator, Step};
    const BINANCE: i64 = 100_000;
    const KRAKEN_FRAMES: i64 = 2_000;
    const PER_FRAME: i64 = 5;
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Binance: 100 000 trade frames written as fast as the connection takes them, then
    // silence (a reconnection gets nothing more).
    let burst: Vec<String> = (1..=BINANCE).map(|id| binance_trade(id, "100.5")).collect();
    let binance = rt
        .block_on(Simulator::start(vec![
            vec![Step::Burst(std::sync::Arc::new(burst))],
            vec![],
        ]))
        .unwrap();
    // Kraken: the subscription is answered, then 2 000 frames of 5 trades each, also as a
    // burst.
    let frames: Vec<String> = (0..KRAKEN_FRAMES)
        .map(|f| kraken_trades(f * PER_FRAME + 1..=(f + 1) * PER_FRAME))
        .collect();
    let kraken = rt
        .block_on(Simulator::start(vec![vec![
            Step::Receive,
            Step::Send(
                r#"{"method":"subscribe","result":{"channel":"trade","symbol":"BTC/USD"},"success":true}"#
                    .into(),
            ),
            Step::Burst(std::sync::Arc::new(frames)),
        ]]))
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let extra = format!(
        r#"
[writer]
max_age = "1s"
[feeds]
backoff_base = "20ms"
backoff_max = "200ms"
[feeds.binance]
url = "{}"
symbols = ["BTCUSDT"]
quotes = false
[feeds.kraken]
url = "{}"
symbols = ["BTC/USD"]
"#,
        binance.url(),
        kraken.url()
    );
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut server = start(
        data.path(),
        &extra,
        &["up", "--feeds", "binance,kraken"],
        stderr.clone(),
    );
    let kraken_total = KRAKEN_FRAMES * PER_FRAME;
    let per_exchange = "SELECT exchange, count(*) AS n, count(DISTINCT trade_id) AS ids, \
         min(source_sequence) AS lo, max(source_sequence) AS hi FROM trades \
         GROUP BY exchange ORDER BY exchange";
    let expected = json!([
        {"exchange": "BINANCE", "n": BINANCE, "ids": BINANCE, "lo": 1, "hi": BINANCE},
        {"exchange": "KRAKEN", "n": kraken_total, "ids": kraken_total, "lo": 1, "hi": kraken_total},
    ]);
    // Every trade reaches the lake while the process runs (it commits every second).
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let rows = server.sql(per_exchange);
        if Value::Array(rows.clone()) == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the lake holds {rows:?}\n{}",
            stderr.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // /metrics alone says how much each feed delivered to the log.
    let metrics = server.get("/metrics", None).text();
    for (venue, n) in [("binance", BINANCE), ("kraken", kraken_total)] {
        let line = format!(r#"k2_feed_records_total{{venue="{venue}",data_type="trades"}} {n}"#);
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
        // And what reading and parsing it cost the feed's thread.
        let cpu = format!(r#"k2_feed_cpu_seconds{{venue="{venue}"}} "#);
        assert!(metrics.contains(&cpu), "{cpu} not in\n{metrics}");
    }
    // Every metric `k2 up` exposes (feeds, log, writer, tail, API) has HELP text.
    k2_testkit::promtool::assert_clean(&metrics);
    let exit = terminate(&mut server);
    let log = stderr.lock().unwrap().clone();
    assert!(exit.success(), "{exit}: {log}");
    // Stopped: still each trade once, nothing dead-lettered.
    let counted = run_ok(k2(data.path()).args(["sql", per_exchange, "--format", "json"]));
    let counted: Value = serde_json::from_str(&counted).unwrap();
    assert_eq!(counted, expected);
    let listed = run_ok(k2(data.path()).args(["dlq", "list", "--format", "json"]));
    assert!(
        matches!(serde_json::from_str(&listed), Ok(Value::Array(ref rows)) if rows.is_empty()),
        "{listed}"
    );
    drop((binance, kraken));
}

/// A replay WebSocket on `path` (no key when `key` is None): the text messages until the
/// close, and the close code.
fn websocket_replay(port: u16, path: &str, key: &str) -> (Vec<String>, u16) {
    use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut request = format!("ws://127.0.0.1:{port}{path}")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("x-api-key", key.parse().unwrap());
    let (mut ws, response) = tungstenite::client(request, stream).unwrap();
    assert_eq!(response.status().as_u16(), 101);
    let mut messages = Vec::new();
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => messages.push(t.to_string()),
            Ok(Message::Close(frame)) => {
                let code = frame.map_or(1005, |f| u16::from(f.code));
                let _ = ws.flush();
                return (messages, code);
            }
            Ok(_) => {}
            Err(e) => panic!("the replay WebSocket failed: {e}"),
        }
    }
}

/// (timestamp, sequence, message id) of an NDJSON row: the lake's total order (RFC 3339
/// times with six fraction digits sort as text; a missing sequence counts as -1).
fn row_key(line: &str) -> (String, i64, String) {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    (
        v["timestamp"].as_str().unwrap().to_string(),
        v["source_sequence"].as_i64().unwrap_or(-1),
        v["message_id"].as_str().unwrap().to_string(),
    )
}

#[test]
fn replay_streams_a_day_in_order_over_http_websocket_and_the_cli() {
    let data = landed();
    let s = serve(data.path(), "[api]\nmax_replays = 1\n");
    let day = "data_type=trades&exchanges=ASX&start_time=2014-03-12&end_time=2014-03-13";
    let stored =
        s.sql("SELECT count(*) AS n FROM trades WHERE trade_date = DATE '2014-03-12'")[0]["n"]
            .as_u64()
            .unwrap() as usize;
    assert!(stored > 20_000);

    // NDJSON over HTTP: every row of the day once, in the total order, across symbols.
    let a = s.get(&format!("/v1/replay/stream?{day}"), Some(&s.reader));
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(a.header("transfer-encoding"), Some("chunked"));
    assert!(a.header("x-snapshot-id").is_some());
    let body = a.text();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), stored);
    let keys: Vec<_> = lines.iter().map(|l| row_key(l)).collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "rows out of order");
    let symbols: HashSet<String> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["symbol"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(symbols.len() >= 2, "{symbols:?}");
    // Every column, as the JSON answers show them.
    let first: Value = serde_json::from_str(lines[0]).unwrap();
    for column in ["price", "quantity", "trade_id", "vendor_data", "trade_date"] {
        assert!(first.get(column).is_some(), "{column} missing from {first}");
    }
    assert!(first["price"].is_string(), "prices are exact decimal text");
    // Values as the JSON answers show them: BHP's first 500 rows against /v1/replay's page.
    let fields: Vec<&String> = first.as_object().unwrap().keys().collect();
    let page = s.post(
        "/v1/replay",
        Some(&s.reader),
        &json!({"data_type": "trades", "symbols": ["BHP"], "exchanges": ["ASX"], "start_time": "2014-03-12",
                "end_time": "2014-03-13", "fields": fields, "limit": 500}),
    );
    assert_eq!(page.status, 200, "{}", page.text());
    let bhp: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["symbol"] == "BHP")
        .take(500)
        .collect();
    assert_eq!(&Value::from(bhp), &page.json()["data"]);

    // The CLI writes the very same bytes.
    let cli = run_ok(k2(data.path()).args([
        "replay",
        "--data-type",
        "trades",
        "--exchanges",
        "ASX",
        "--date",
        "2014-03-12",
    ]));
    assert!(cli == body, "k2 replay and /v1/replay/stream differ");

    // The WebSocket: one row per message, the same rows, closed normally.
    let (messages, code) = websocket_replay(s.port, &format!("/v1/replay/ws?{day}"), &s.reader);
    assert_eq!(code, 1000);
    assert_eq!(messages, lines);

    // Paced: the same rows, never ahead of the recorded pace (at x2, 3 s of trading
    // takes at least half the span between its first and last row).
    let window = "data_type=trades&start_time=2014-03-11T23:35:16Z&end_time=2014-03-11T23:35:20Z";
    let t = Instant::now();
    let paced = s.get(
        &format!("/v1/replay/stream?{window}&speed=2"),
        Some(&s.reader),
    );
    let took = t.elapsed();
    let full = s.get(&format!("/v1/replay/stream?{window}"), Some(&s.reader));
    assert_eq!(paced.status, 200, "{}", paced.text());
    // With api.max_replays = 1, a replay that has just ended no longer holds the slot.
    assert_eq!(full.status, 200, "{}", full.text());
    assert_eq!(paced.text(), full.text());
    let times: Vec<chrono::DateTime<chrono::Utc>> = full
        .text()
        .lines()
        .map(|l| row_key(l).0.parse().unwrap())
        .collect();
    assert!(times.len() > 10, "{} rows in the window", times.len());
    let span = (*times.last().unwrap() - times[0]).to_std().unwrap();
    assert!(took >= span / 2, "x2 took {took:?} for {span:?} of trading");

    // Refusals name the parameter at fault.
    let r = Some(s.reader.as_str());
    let a = s.get("/v1/replay/stream?start_time=2014-03-12", r);
    assert_error(&a, 422, "invalid_parameter");
    assert_eq!(a.json()["error"]["field"], "end_time");
    let a = s.get(&format!("/v1/replay/stream?{day}&speed=fast"), r);
    assert_error(&a, 422, "invalid_parameter");
    assert_eq!(a.json()["error"]["field"], "speed");
    let a = s.get(&format!("/v1/replay/stream?{day}&fields=colour"), r);
    assert_error(&a, 422, "invalid_parameter");
    assert!(a.text().contains("colour"));
    assert_error(
        &s.get(&format!("/v1/replay/ws?{day}"), r),
        426,
        "websocket_required",
    );
    assert_error(
        &s.get(&format!("/v1/replay/stream?{day}"), None),
        401,
        "missing_key",
    );

    // One replay slot (api.max_replays = 1): a second replay waits for it, and a client
    // that goes away frees it.
    let slow = format!("/v1/replay/stream?{day}&speed=0.001");
    let mut holder = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    write!(
        holder,
        "GET {slow} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {}\r\n\r\n",
        s.reader
    )
    .unwrap();
    let mut head = [0u8; 12];
    holder.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    assert_error(
        &s.get(&format!("/v1/replay/stream?{day}"), r),
        503,
        "overloaded",
    );
    drop(holder);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = s.get(&format!("/v1/replay/stream?{window}"), r);
        if a.status == 200 {
            break;
        }
        assert_eq!(a.status, 503, "{}", a.text());
        assert!(Instant::now() < deadline, "the replay slot was never freed");
        std::thread::sleep(Duration::from_millis(50));
    }

    let metrics = s.get("/metrics", None).text();
    assert!(
        metrics.contains(r#"k2_replay_rows_total{table="trades"}"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"k2_api_replays_total{outcome="complete"}"#));
    assert!(metrics.contains(r#"k2_api_replays_total{outcome="client_gone"}"#));
}

#[test]
fn dead_letters_are_counted_by_reason_and_each_is_shown_in_full() {
    // The sample with three malformed trades of MWR.
    let data = tempfile::tempdir().unwrap();
    let sample_copy = data.path().join("sample");
    k2_testkit::sample::copy_dir(&sample(), &sample_copy);
    let bad =
        "03/10/2014,25:99:00.000,1.11,3667,0,,\nnot a trade\n03/10/2014,10:00:01.000,-2,100,0,,\n";
    let trades = sample_copy.join("trades/3153.csv");
    let mut text = std::fs::read_to_string(&trades).unwrap();
    text.push_str(bad);
    std::fs::write(&trades, text).unwrap();
    run_ok(k2(data.path()).arg("ingest").arg("asx").arg(&sample_copy));
    let s = serve(data.path(), "");

    let a = s.get("/v1/dead-letters", Some(&s.reader));
    assert_eq!(a.status, 200, "{}", a.text());
    let d = &a.json()["data"];
    assert_eq!(d["total"], 3, "{d}");
    let counted: u64 = d["by_reason"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["stage"], "ingest.asx", "{r}");
            r["count"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(counted, 3, "every letter has its reason: {d}");
    let letters = d["letters"].as_array().unwrap();
    assert_eq!(letters.len(), 3);
    let ids: Vec<u64> = letters.iter().map(|l| l["id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let raws: Vec<&str> = letters.iter().map(|l| l["raw"].as_str().unwrap()).collect();
    assert!(raws.contains(&"not a trade"), "{raws:?}");

    // One kind only; then each letter in full.
    let kind = letters[0]["kind"].as_str().unwrap().to_string();
    let only = s
        .get(
            &format!("/v1/dead-letters?kind={kind}&limit=1"),
            Some(&s.reader),
        )
        .json();
    let listed = only["data"]["letters"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["kind"], kind.as_str());
    assert_eq!(only["data"]["total"], 3, "the counts cover the whole store");
    for l in letters {
        let one = s.get(&format!("/v1/dead-letters/{}", l["id"]), Some(&s.reader));
        assert_eq!(one.status, 200, "{}", one.text());
        assert_eq!(&one.json()["data"], l);
    }
    assert_error(
        &s.get("/v1/dead-letters/999999", Some(&s.reader)),
        404,
        "not_found",
    );
    assert_error(
        &s.get("/v1/dead-letters/x", Some(&s.reader)),
        422,
        "invalid_parameter",
    );
    assert_error(
        &s.get("/v1/dead-letters?limit=0", Some(&s.reader)),
        422,
        "invalid_parameter",
    );
    assert_error(&s.get("/v1/dead-letters", None), 401, "missing_key");
}
