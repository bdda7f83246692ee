//! K2 watched as an operator watches it: a real Prometheus scrapes `k2 up` with K2's alert
//! rules loaded, and the feed-down alert follows the exchange going away and coming back.

mod common;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use k2_ingest::simulator::{FrameMaker, Simulator, Step};
use serde_json::Value;

/// An exchange that trades BTCUSDT 20 times a second for as long as a connection lasts.
fn live_script() -> Vec<Vec<Step>> {
    vec![vec![Step::Paced {
        count: 1_000_000,
        frame: FrameMaker(Arc::new(|i| binance_trade(i as i64 + 1, "100.5"))),
        per_second: 20,
    }]]
}

/// A Prometheus server of the test's own on a free port, scraping `target` every second
/// with K2's rules evaluated every second. Killed when dropped.
struct Prometheus {
    _server: Running,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(binary: &str, target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../ops/prometheus/rules.yml")
            .canonicalize()
            .unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: k2\n    static_configs:\n      - targets: ['{target}']\n",
                rules.display()
            ),
        )
        .unwrap();
        let port = k2_testkit::services::free_port();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(Running)
            .expect("prometheus starts");
        let p = Prometheus {
            _server: child,
            port,
            _dir: dir,
        };
        p.wait_until("Prometheus is ready", |p| {
            std::net::TcpStream::connect(("127.0.0.1", p.port)).is_ok()
                && exchange(p.port, "GET", "/-/ready", &[], b"", false).status == 200
        });
        p
    }

    fn get(&self, path: &str) -> Value {
        let a = exchange(self.port, "GET", path, &[], b"", false);
        assert_eq!(a.status, 200, "{path}: {}", a.text());
        a.json()
    }

    /// The state of the alert `name` for `venue` (pending, firing), None when inactive.
    fn alert(&self, name: &str, venue: &str) -> Option<String> {
        let alerts = self.get("/api/v1/alerts");
        alerts["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["labels"]["alertname"] == name && a["labels"]["venue"] == venue)
            .map(|a| a["state"].as_str().unwrap().to_string())
    }

    /// The value of the instant query `q`'s first sample, if any.
    fn value(&self, q: &str) -> Option<f64> {
        let answer = self.get(&format!("/api/v1/query?query={}", urlencode(q)));
        answer["data"]["result"]
            .as_array()?
            .first()?
            .get("value")?
            .get(1)?
            .as_str()?
            .parse()
            .ok()
    }

    /// Polls `done` every 200 ms for 120 s at most.
    fn wait_until(&self, what: &str, mut done: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "gave up waiting: {what}; Prometheus's targets: {}; up: {}",
                self.get("/api/v1/targets"),
                self.get("/api/v1/query?query=up")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn urlencode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn prometheus_fires_the_feed_down_alert_when_the_exchange_goes_away_and_resolves_it_on_return() {
    let Some(prometheus) = k2_testkit::services::service("K2_TEST_PROMETHEUS") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = rt.block_on(Simulator::start(live_script())).unwrap();
    let exchange_at = sim.addr;

    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("k2.toml");
    std::fs::write(
        &config,
        format!(
            "[feeds]\nbackoff_base = \"50ms\"\nbackoff_max = \"500ms\"\nbreaker_open = \"1s\"\nmax_failures = 1000\n[feeds.binance]\nurl = \"{}\"\nsymbols = [\"BTCUSDT\"]\nquotes = false\n",
            sim.url()
        ),
    )
    .unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let mut k2_up = k2(data.path())
        .arg("--config")
        .arg(&config)
        .args(["up", "--feeds", "binance", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map(Running)
        .unwrap();
    let port = listening_port(&mut k2_up, "query API on http://127.0.0.1:", stderr.clone());
    let prom = Prometheus::start(&prometheus, &format!("127.0.0.1:{port}"));

    prom.wait_until(
        "Prometheus sees the feed connected and trades flowing",
        |p| {
            p.value(r#"k2_feed_connections_open{job="k2",venue="binance"}"#) == Some(1.0)
                && p.value(r#"sum(k2_feed_records_total{job="k2",venue="binance"})"#)
                    .is_some_and(|n| n > 0.0)
        },
    );
    assert_eq!(prom.alert("K2FeedDown", "binance"), None);

    // The exchange goes away: pending at once, firing after the rule's 30 s.
    let gone = Instant::now();
    drop(sim);
    prom.wait_until("K2FeedDown pending", |p| {
        p.alert("K2FeedDown", "binance").as_deref() == Some("pending")
    });
    let pending = gone.elapsed();
    prom.wait_until("K2FeedDown firing", |p| {
        p.alert("K2FeedDown", "binance").as_deref() == Some("firing")
    });
    let firing = gone.elapsed();
    assert!(
        firing >= Duration::from_secs(30),
        "the rule waits 30 s before it fires, fired after {firing:?}"
    );

    // The exchange returns where it was: the feed reconnects and the alert resolves.
    let back = Instant::now();
    let _sim = rt
        .block_on(Simulator::start_at(exchange_at, live_script()))
        .unwrap();
    prom.wait_until("K2FeedDown resolved", |p| {
        p.alert("K2FeedDown", "binance").is_none()
    });
    let resolved = back.elapsed();
    assert_eq!(
        prom.value(r#"k2_feed_connections_open{job="k2",venue="binance"}"#),
        Some(1.0)
    );
    eprintln!(
        "K2FeedDown: pending {:.1}s and firing {:.1}s after the exchange went away, resolved {:.1}s after it returned",
        pending.as_secs_f64(),
        firing.as_secs_f64(),
        resolved.as_secs_f64()
    );
    drop(prom);
    assert!(
        k2_up.try_wait().unwrap().is_none(),
        "k2 up kept running: {}",
        stderr.lock().unwrap()
    );
}
