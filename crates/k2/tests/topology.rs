//! The deployment of `docs/deploy.md`, as separate processes on 127.0.0.1: one simulated
//! Binance feed captured twice (redundant captures, each into its own embedded log), two
//! lake writers with distinct `writer.source` sharing dedup in Redis, one `k2 catalog
//! serve` over a SQLite catalog, the tables in an S3 bucket, and two stateless API
//! servers. Each trade is in the lake once, and both API servers answer identically.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use k2_ingest::simulator::{FrameMaker, Simulator, Step};
use serde_json::{Value, json};

use common::*;

/// Trades the simulated exchange sends on each connection.
const TRADES_SENT: i64 = 3_000;

/// A k2 process of the deployment, stopped (then killed) when dropped.
struct Process {
    name: String,
    child: Child,
    stderr: PathBuf,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// `k2 --config CONFIG ARGS…` with its data in `dir` (the environment's K2_… settings
    /// left out: the configuration file says everything).
    fn start(name: &str, dir: &Path, config: &str, args: &[&str]) -> Process {
        std::fs::create_dir_all(dir).unwrap();
        let file = dir.join("k2.toml");
        std::fs::write(&file, config).unwrap();
        let stderr = dir.join("stderr.log");
        let child = k2_command(dir, &file)
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Process {
            name: name.into(),
            child,
            stderr,
        }
    }

    /// SIGTERM, and the exit once it came.
    fn stop(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        k2_testkit::poll::until(
            Duration::from_secs(60),
            &format!("{} stops", self.name),
            || self.child.try_wait().unwrap(),
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

fn k2_command(dir: &Path, config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_k2"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("K2_")) {
        cmd.env_remove(key);
    }
    cmd.env("K2_LOG", "info")
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(dir)
        .stdin(Stdio::null());
    cmd
}

/// A server process's port, from the line it prints once listening.
fn port_of(p: &Process, prefix: &str) -> u16 {
    k2_testkit::poll::until(
        Duration::from_secs(60),
        &format!("{} listening", p.name),
        || {
            p.log()
                .lines()
                .find_map(|l| l.strip_prefix(prefix))
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        },
    )
}

#[test]
fn separate_captures_writers_catalog_and_api_servers_keep_each_trade_once() {
    let Some(bucket) = k2_testkit::s3::Bucket::shared() else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI runs this with the test S3 server"
        );
        eprintln!("K2_TEST_S3_ENDPOINT not set: deployment test skipped (scripts/test runs it)");
        return;
    };
    let Ok(redis) = std::env::var("K2_TEST_REDIS_ADDR") else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI runs this with the test Redis"
        );
        eprintln!("K2_TEST_REDIS_ADDR not set: deployment test skipped (scripts/test runs it)");
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let root = tempfile::tempdir().unwrap();
    let dir = |name: &str| root.path().join(name);
    let warehouse = format!(
        "[warehouse]\nuri = \"{}\"\n[warehouse.s3]\nendpoint = \"{}\"\naccess_key_id = \"{}\"\n\
         secret_access_key = \"{}\"\npath_style = true\n",
        bucket.uri(),
        bucket.endpoint,
        k2_testkit::s3::ACCESS_KEY_ID,
        k2_testkit::s3::SECRET_ACCESS_KEY
    );

    // The exchange: the same trades, at 1 000 a second, to every connection.
    let frames = FrameMaker(Arc::new(|i| binance_trade(i as i64 + 1, "42000.5")));
    let sim = rt
        .block_on(Simulator::start(vec![vec![
            Step::Paced {
                count: TRADES_SENT as usize,
                frame: frames,
                per_second: 1_000,
            },
            Step::Pause(Duration::from_secs(3_600)),
        ]]))
        .unwrap();

    // The catalog server, and the keys everyone uses.
    let (writer_key, writer_entry) = new_key(&dir("keys"), "writer", "catalog");
    let (reader_key, reader_entry) = new_key(&dir("keys"), "reader", "read");
    let (analyst_key, analyst_entry) = new_key(&dir("keys"), "analyst", "read,sql");
    let catalog = Process::start(
        "catalog",
        &dir("catalog"),
        &format!("{warehouse}\n{writer_entry}\n{reader_entry}\n"),
        &["catalog", "serve", "--listen", "127.0.0.1:0"],
    );
    let catalog_port = port_of(&catalog, "Iceberg REST catalog on http://127.0.0.1:");
    let catalog_at = |credential: &str| {
        format!(
            "[catalog]\nuri = \"http://127.0.0.1:{catalog_port}\"\ncredential = \"{credential}\"\n"
        )
    };

    // Two captures of the feed, each with the writer of its own log.
    let prefix = format!("k2deploy{}", std::process::id());
    let mut captures = Vec::new();
    let mut writers = Vec::new();
    for source in ["a", "b"] {
        let config = format!(
            "{warehouse}\n{}\n[writer]\nsource = \"{source}\"\ngroup = \"writer-{source}\"\n\
             max_age = \"500ms\"\n[dedup]\nredis = \"{redis}\"\nredis_prefix = \"{prefix}\"\n\
             [feeds]\nbackoff_base = \"20ms\"\nbackoff_max = \"200ms\"\n[feeds.binance]\n\
             url = \"{}\"\nsymbols = [\"BTCUSDT\"]\nquotes = false\n",
            catalog_at(&format!("writer:{writer_key}")),
            sim.url()
        );
        let site = dir(&format!("site-{source}"));
        captures.push(Process::start(
            &format!("capture {source}"),
            &site,
            &config,
            &["feed", "binance"],
        ));
        writers.push(Process::start(
            &format!("writer {source}"),
            &site,
            &config,
            &["consume"],
        ));
    }

    // Two API servers, stateless: the catalog and the bucket are all they read.
    let api = |name: &str| {
        let config = format!(
            "{warehouse}\n{}\n{analyst_entry}\n",
            catalog_at(&format!("reader:{reader_key}"))
        );
        let p = Process::start(
            name,
            &dir(name),
            &config,
            &["serve", "--listen", "127.0.0.1:0"],
        );
        let port = port_of(&p, "query API on http://127.0.0.1:");
        (p, port)
    };
    let (api_1, port_1) = api("api-1");
    let (api_2, port_2) = api("api-2");
    let sql = |port: u16, query: &str| -> Vec<Value> {
        let a = exchange(
            port,
            "POST",
            "/v1/sql",
            &[
                ("X-API-Key", analyst_key.as_str()),
                ("Content-Type", "application/json"),
            ],
            json!({ "sql": query }).to_string().as_bytes(),
            false,
        );
        assert_eq!(a.status, 200, "{}", a.text());
        a.json()["data"].as_array().unwrap().clone()
    };
    let counts = "SELECT count(*) AS n, count(DISTINCT trade_id) AS ids FROM trades WHERE exchange = 'BINANCE'";
    let all_logs = |ps: &[&Process]| {
        ps.iter()
            .map(|p| format!("== {}\n{}", p.name, p.log()))
            .collect::<String>()
    };

    // Every trade arrives, through both captures and both writers.
    k2_testkit::poll::until_explained(
        Duration::from_secs(180),
        || {
            let rows = sql(port_1, counts);
            (rows[0]["n"].as_i64() == Some(TRADES_SENT)).then_some(())
        },
        || {
            let logs = all_logs(&[
                &catalog,
                &captures[0],
                &captures[1],
                &writers[0],
                &writers[1],
                &api_1,
            ]);
            format!("not every trade reached the lake:\n{logs}")
        },
    );
    // Both captures got every trade: the second copy is what the shared dedup dropped.
    for c in &mut captures {
        assert!(c.stop().success(), "{}", c.log());
        let appended = format!("binance: {TRADES_SENT} trades and 0 quotes appended to the log");
        assert!(c.log().contains(&appended), "{}", c.log());
    }
    for w in &mut writers {
        assert!(w.stop().success(), "{}", w.log());
    }
    // What is left in either log is written too (duplicates, all of it, by now).
    for source in ["a", "b"] {
        let site = dir(&format!("site-{source}"));
        let out = k2_command(&site, &site.join("k2.toml"))
            .args(["consume", "--until-caught-up"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rows = sql(port_1, counts);
    assert_eq!(rows[0]["n"].as_i64(), Some(TRADES_SENT), "{rows:?}");
    assert_eq!(rows[0]["ids"].as_i64(), Some(TRADES_SENT), "{rows:?}");
    // Both API servers answer the same, to the byte of every row.
    assert_eq!(sql(port_2, counts), rows);
    let page = |port: u16| {
        let a = exchange(
            port,
            "GET",
            "/v1/trades?symbol=BTCUSDT&exchange=BINANCE&limit=1000",
            &[("X-API-Key", analyst_key.as_str())],
            b"",
            false,
        );
        assert_eq!(a.status, 200, "{}", a.text());
        let mut body = a.json();
        body["meta"]["request_id"] = Value::Null;
        body["meta"]["took_ms"] = Value::Null;
        body
    };
    assert_eq!(page(port_1)["data"], page(port_2)["data"]);
    assert_eq!(
        page(port_1)["meta"]["snapshot_id"],
        page(port_2)["meta"]["snapshot_id"]
    );
    drop((api_1, api_2, catalog));
}
