//! K2 watched as an operator watches it: a real Prometheus scrapes `k2 up` with K2's alert
//! rules loaded, and the feed-down alert follows the exchange going away and coming back.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use k2_ingest::simulator::{Simulator, Step};
use serde_json::Value;

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
    let sim = rt.block_on(Simulator::start(live_exchange())).unwrap();
    let exchange_at = sim.addr;

    let data = tempfile::tempdir().unwrap();
    let (mut k2_up, port, stderr) = k2_up_with(
        data.path(),
        &format!(
            "[feeds]\nbackoff_base = \"50ms\"\nbackoff_max = \"500ms\"\nbreaker_open = \"1s\"\nmax_failures = 1000\n[feeds.binance]\nurl = \"{}\"\nsymbols = [\"BTCUSDT\"]\nquotes = false\n",
            sim.url()
        ),
    );
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
        .block_on(Simulator::start_at(exchange_at, live_exchange()))
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

/// A Binance best bid/offer frame of BTCUSDT, update `id`.
fn binance_quote(id: usize) -> String {
    format!(
        r#"{{"stream":"btcusdt@bookTicker","data":{{"u":{id},"s":"BTCUSDT","b":"100.10","B":"1.5","a":"100.20","A":"2.5"}}}}"#
    )
}

/// An overload — a burst far beyond what a writer committing every 300 rows keeps up
/// with — raises the degradation level: quotes are deferred (left in the log), SQL is
/// refused with 503 and Retry-After, and once the burst is landed the level falls back to
/// normal and every trade and quote is in the lake exactly once.
#[test]
fn an_overload_raises_the_degradation_level_sheds_as_configured_and_recovers() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (trades, quotes) = (20_000usize, 20_000usize);
    let mut frames = Vec::with_capacity(trades + quotes);
    for i in 1..=trades {
        frames.push(binance_trade(i as i64, "100.5"));
        frames.push(binance_quote(i));
    }
    let sim = rt
        .block_on(Simulator::start(vec![vec![Step::Burst(Arc::new(frames))]]))
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let (key, entry) = new_key(data.path(), "analyst", "read,sql");
    let (_k2_up, port, stderr) = k2_up_with(
        data.path(),
        &format!(
            r#"[writer]
max_rows = 300
max_age = "100ms"
compact_every = "0s"
[degradation]
check_every = "100ms"
cooldown = "1s"
lag_records = {{ enter = [500.0, 1000.0, 3000.0, 1e12], recover = 0.5 }}
commit_seconds = {{ enter = [600.0, 700.0, 800.0, 900.0], recover = 0.5 }}
memory_share = {{ enter = [0.99, 0.993, 0.996, 0.999], recover = 0.9 }}
[feeds.binance]
url = "{}"
symbols = ["BTCUSDT"]
quotes = true
{entry}
"#,
            sim.url()
        ),
    );
    let metrics = || exchange(port, "GET", "/metrics", &[], b"", false).text();
    let sql = |q: &str| {
        exchange(
            port,
            "POST",
            "/v1/sql",
            &[
                ("X-API-Key", key.as_str()),
                ("Content-Type", "application/json"),
            ],
            format!(r#"{{"sql": "{q}"}}"#).as_bytes(),
            false,
        )
    };

    // Levels over time, sampled every 50 ms until the lake holds everything at normal.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(300);
    let (mut levels, mut top, mut deferred_max, mut refused) = (Vec::new(), 0.0f64, 0.0f64, None);
    let count = |table: &str| -> Option<u64> {
        let a = sql(&format!("SELECT count(*) AS n FROM {table}"));
        (a.status == 200)
            .then(|| a.json()["data"][0]["n"].as_u64())
            .flatten()
    };
    loop {
        assert!(
            Instant::now() < deadline,
            "no recovery in 300 s; levels {levels:?}\n{}",
            stderr.lock().unwrap()
        );
        let body = metrics();
        let level = metric(&body, "k2_degradation_level").unwrap_or(0.0);
        if levels.last().map(|(_, l)| *l) != Some(level) {
            levels.push((started.elapsed().as_secs_f64(), level));
        }
        top = top.max(level);
        deferred_max =
            deferred_max.max(metric(&body, "k2_degradation_deferred_records").unwrap_or(0.0));
        if level >= 3.0 && refused.is_none() {
            let a = sql("SELECT 1 AS one");
            if a.status == 503 {
                refused = Some((a.header("retry-after").map(str::to_string), a.text()));
            }
        }
        if top >= 3.0
            && level == 0.0
            && count("trades") == Some(trades as u64)
            && count("quotes") == Some(quotes as u64)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let recovered_after = started.elapsed();
    let said = stderr.lock().unwrap().clone();
    assert!(top >= 3.0, "the level reached {top}: {levels:?}");
    let (retry_after, body) = refused.expect("SQL was refused while the level was aggressive");
    assert_eq!(retry_after.as_deref(), Some("1"), "{body}");
    assert!(body.contains("degraded"), "{body}");
    assert!(said.contains("streams deferred, left in the log"), "{said}");
    assert!(
        said.contains("degradation level raised") && said.contains("degradation level lowered"),
        "{said}"
    );
    let body = metrics();
    assert!(
        metric(
            &body,
            "k2_degradation_actions_total{action=\"defer_streams\"}"
        )
        .unwrap_or(0.0)
            >= 1.0
            && metric(
                &body,
                "k2_degradation_actions_total{action=\"refuse_query\"}"
            )
            .unwrap_or(0.0)
                >= 1.0,
        "{body}"
    );
    // Exactly once: no row twice.
    let a = sql("SELECT count(DISTINCT trade_id) AS n FROM trades");
    assert_eq!(a.json()["data"][0]["n"].as_u64(), Some(trades as u64));
    eprintln!(
        "degradation: levels over time (s, level) {levels:?}; at most {deferred_max} quote records deferred in the log; normal again and everything landed after {:.1}s",
        recovered_after.as_secs_f64()
    );
}
