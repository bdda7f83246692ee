//! Helpers shared by the test binaries.
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub mod http;

pub use http::{Answer, exchange, listening_port, listening_ports, new_key};
pub use k2_testkit::sample::{QUOTES, TRADES};

pub fn sample() -> PathBuf {
    k2_testkit::sample::dir()
}

pub fn k2(data: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_k2"));
    cmd.arg("--data-dir")
        .arg(data)
        .env_remove("K2_CONFIG")
        .env("K2_LOG", "warn")
        .stdin(Stdio::null());
    if let Some(bucket) = bucket(data) {
        cmd.envs(bucket.env());
    }
    cmd
}

/// With `K2_TEST_WAREHOUSE=s3`, the prefix of the test script's bucket where the lake of
/// the data directory `data` keeps its files (one prefix per directory); else None.
pub fn bucket(data: &Path) -> Option<k2_testkit::s3::Bucket> {
    match std::env::var("K2_TEST_WAREHOUSE").as_deref() {
        Ok("s3") => {
            let mut bucket = k2_testkit::s3::Bucket::from_env();
            bucket.prefix = data
                .file_name()
                .expect("a data directory has a name")
                .to_string_lossy()
                .trim_start_matches('.')
                .to_string();
            Some(bucket)
        }
        Ok("local") | Err(_) => None,
        Ok(other) => panic!("K2_TEST_WAREHOUSE must be local or s3, not {other}"),
    }
}

/// The warehouse `k2 --data-dir data` uses.
pub fn warehouse(data: &Path) -> k2_lake::Warehouse {
    match bucket(data) {
        Some(bucket) => s3_warehouse(&bucket),
        None => k2_lake::Warehouse::local(&data.join("warehouse")).unwrap(),
    }
}

/// The warehouse at `bucket`, reached with the test servers' credentials.
pub fn s3_warehouse(bucket: &k2_testkit::s3::Bucket) -> k2_lake::Warehouse {
    k2_lake::WarehouseConfig {
        uri: bucket.uri(),
        s3: k2_lake::S3Options {
            endpoint: bucket.endpoint.clone(),
            access_key_id: k2_testkit::s3::ACCESS_KEY_ID.into(),
            secret_access_key: k2_testkit::s3::SECRET_ACCESS_KEY.into(),
            path_style: true,
            ..Default::default()
        },
    }
    .open(Path::new("warehouse"))
    .unwrap()
}

pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("k2 runs");
    assert!(
        out.status.success(),
        "k2 failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail; returns its standard error.
pub fn run_err(cmd: &mut Command) -> String {
    let out = cmd.output().expect("k2 runs");
    assert!(
        !out.status.success(),
        "k2 succeeded where it must fail:\nstdout:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// A Binance combined-stream trade frame of BTCUSDT: trade `id` at `price`, 0.01 BTC.
pub fn binance_trade(id: i64, price: &str) -> String {
    let t = 1_700_000_000_000 + id;
    format!(
        r#"{{"stream":"btcusdt@trade","data":{{"e":"trade","E":{t},"s":"BTCUSDT","t":{id},"p":"{price}","q":"0.01","T":{t},"m":true,"M":true}}}}"#
    )
}

/// The value of the series `name` (its labels included, as written) in a `/metrics` body.
pub fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A child process that is killed when dropped: a test that fails midway leaves nothing
/// running.
pub struct Running(pub std::process::Child);

impl std::ops::Deref for Running {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `k2 up --feeds binance` on a free port with the configuration `toml` (logging at
/// info): the process, its API port, and its standard error as it comes.
pub fn k2_up_with(
    data: &std::path::Path,
    toml: &str,
) -> (Running, u16, std::sync::Arc<std::sync::Mutex<String>>) {
    let config = data.join("k2.toml");
    std::fs::write(&config, toml).unwrap();
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut child = k2(data)
        .arg("--config")
        .arg(&config)
        .env("K2_LOG", "info")
        .args(["up", "--feeds", "binance", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map(Running)
        .unwrap();
    let port = listening_port(&mut child, "query API on http://127.0.0.1:", stderr.clone());
    (child, port, stderr)
}

/// An exchange that trades BTCUSDT 20 times a second for as long as a connection lasts.
pub fn live_exchange() -> Vec<Vec<k2_ingest::simulator::Step>> {
    vec![vec![k2_ingest::simulator::Step::Paced {
        count: 1_000_000,
        frame: k2_ingest::simulator::FrameMaker(std::sync::Arc::new(|i| {
            binance_trade(i as i64 + 1, "100.5")
        })),
        per_second: 20,
    }]]
}
