//! The page at `/`, end to end in a real browser: Debian's Chromium, headless, driven over
//! its DevTools protocol against `k2 demo --serve`. It asks for a key, takes one typed in,
//! draws BHP's bars and the day's summary as the API answers them, opens a shared link
//! (`/#key=…`) straight to its chart, travels to a snapshot, and never logs an error to
//! the console. The key in a link stays in the browser: the server's log never sees it.

#[path = "web/browser.rs"]
mod browser;
mod common;

use std::io::BufRead;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use browser::Browser;
use common::{exchange, k2};

const WAIT: Duration = Duration::from_secs(60);

struct Demo {
    child: Child,
    port: u16,
    key: String,
    stderr: Arc<Mutex<String>>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `k2 demo --serve` on a free port over the sample with two malformed trades (dead
/// letters); the page's link it prints gives the port and the key.
fn demo(data: &std::path::Path) -> Demo {
    let sample = data.join("sample-with-bad-rows");
    k2_testkit::sample::copy_dir(&common::sample(), &sample);
    let trades = sample.join("trades/3153.csv");
    let mut text = std::fs::read_to_string(&trades).unwrap();
    text.push_str("not a trade\n03/10/2014,10:00:01.000,-2,100,0,,\n");
    std::fs::write(&trades, text).unwrap();
    let mut child = k2(data)
        .env("K2_LOG", "info")
        .args(["demo", "--serve", "--listen", "127.0.0.1:0", "--sample"])
        .arg(&sample)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let err = child.stderr.take().unwrap();
    let kept = stderr.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            kept.lock().unwrap().push_str(&format!("{line}\n"));
        }
    });
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let link = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("the demo ended before its link: {}", stderr.lock().unwrap()))
            .unwrap();
        if let Some(at) = line.find("http://127.0.0.1:")
            && line.contains("/#key=")
        {
            break line[at..].trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    let port = link["http://127.0.0.1:".len()..]
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let key = link
        .split("#key=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_string();
    Demo {
        child,
        port,
        key,
        stderr,
    }
}

/// The number of bars the API answers for BHP on 2014-03-12.
fn bars_by_api(demo: &Demo, interval: &str, snapshot: Option<&str>) -> usize {
    let mut path = format!(
        "/v1/ohlcv/{interval}?symbol=BHP&exchange=ASX&start_date=2014-03-12&end_date=2014-03-12"
    );
    if let Some(s) = snapshot {
        path.push_str(&format!("&snapshot={s}"));
    }
    let a = exchange(
        demo.port,
        "GET",
        &path,
        &[("X-API-Key", &demo.key)],
        b"",
        false,
    );
    assert_eq!(a.status, 200, "{}", a.text());
    a.json()["data"].as_array().unwrap().len()
}

#[test]
fn the_page_draws_bhp_from_a_typed_key_and_from_a_link_without_console_errors() {
    let Some(chromium) = k2_testkit::services::service("K2_TEST_CHROMIUM") else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let demo = demo(data.path());
    let base = format!("http://127.0.0.1:{}/", demo.port);
    let mut page = Browser::launch(&chromium);

    // A first visit asks for a key; the one typed in opens the latest day of the first symbol.
    page.navigate(&base);
    page.wait_for("!document.getElementById('login').hidden", WAIT);
    assert_eq!(page.eval("document.getElementById('main').hidden"), true);
    page.eval("document.getElementById('key').focus()");
    page.type_text(&demo.key);
    page.eval("document.getElementById('login').requestSubmit(); true");
    page.wait_for("document.getElementById('chart').dataset.shown", WAIT);

    // Picking BHP, 5-minute bars, 12 March 2014.
    page.pick("symbol", "BHP");
    page.pick("interval", "5m");
    page.pick("from", "2014-03-12");
    page.pick("to", "2014-03-12");
    let shown =
        "document.getElementById('chart').dataset.shown === 'ASX|BHP|5m|2014-03-12|2014-03-12|'";
    page.wait_for(shown, WAIT);
    let bars = bars_by_api(&demo, "5m", None);
    assert_eq!(bars, 80, "BHP traded in 80 five-minute bars on 2014-03-12");
    assert_eq!(
        page.eval("document.getElementById('chart').dataset.bars"),
        bars.to_string()
    );
    let field = |page: &mut Browser, f: &str| {
        page.eval(&format!(
            "document.querySelector('#summary dd[data-field={f}]')?.textContent"
        ))
    };
    assert_eq!(field(&mut page, "vwap"), "35.74890347");
    assert_eq!(field(&mut page, "trade_count"), "20283");
    assert_eq!(field(&mut page, "date"), "2014-03-12");
    // The quality and pipeline panels answer from the same lake.
    page.wait_for("document.querySelector('#streams table') !== null", WAIT);
    page.wait_for("document.querySelector('#tables table') !== null", WAIT);
    page.wait_for("document.querySelector('#lag table') !== null", WAIT);
    let received = page.eval(
        "[...document.querySelectorAll('#streams tbody tr')].map(r => [...r.cells].map(c => c.textContent)).find(c => c[0] === 'trades' && c[1] === 'BHP')[5]",
    );
    assert_eq!(
        received, "91,631",
        "every BHP trade of the sample is received"
    );
    // Freshness per table, from the writer's commits in this process.
    page.wait_for(
        "[...document.querySelectorAll('#tables tbody tr')].some(r => r.cells[0].textContent === 'market_data.trades' && r.cells[5].textContent.endsWith('commits'))",
        WAIT,
    );
    // The dead letters by reason, each a click away in full.
    page.wait_for(
        "document.getElementById('letters').textContent.includes('2 stored')",
        WAIT,
    );
    page.eval("document.querySelector('#letters a[href^=\"/v1/dead-letters/\"]').click(); true");
    page.wait_for(
        "document.getElementById('letter').open && document.querySelector('#letter-body pre')",
        WAIT,
    );
    let raw = page.eval("document.querySelector('#letter-body pre').textContent");
    assert!(
        raw == "not a trade" || raw == "03/10/2014,10:00:01.000,-2,100,0,,",
        "the letter's raw record: {raw}"
    );
    page.eval("document.getElementById('letter').close(); true");
    let artifacts = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("web");
    page.screenshot(&artifacts.join("bhp-5m-2014-03-12.png"));

    // Time travel: the snapshot picked answers the chart, its id exact past 2^53.
    let snapshot = page
        .wait_for(
            "[...document.getElementById('snapshot').options].map(o => o.value).find(v => v !== '')",
            WAIT,
        )
        .as_str()
        .unwrap()
        .to_string();
    page.pick("snapshot", &snapshot);
    page.wait_for(
        &format!("document.getElementById('chart').dataset.shown === 'ASX|BHP|5m|2014-03-12|2014-03-12|{snapshot}'"),
        WAIT,
    );
    assert_eq!(
        page.eval("document.getElementById('chart').dataset.bars"),
        bars_by_api(&demo, "5m", Some(&snapshot)).to_string()
    );
    assert_eq!(
        page.eval("document.getElementById('as-of').textContent"),
        format!("as of {snapshot}")
    );

    // A shared link opens its chart directly; the key leaves the address bar for the tab's
    // storage.
    page.navigate("about:blank");
    let started = Instant::now();
    page.navigate(&format!(
        "{base}#key={}&exchange=ASX&symbol=BHP&interval=1h&from=2014-03-12&to=2014-03-12",
        demo.key
    ));
    page.wait_for(
        "document.getElementById('chart').dataset.shown === 'ASX|BHP|1h|2014-03-12|2014-03-12|'",
        WAIT,
    );
    let to_chart = started.elapsed();
    let by_page = page.eval("document.body.dataset.firstChartMs");
    assert_eq!(
        page.eval("document.getElementById('chart').dataset.bars"),
        bars_by_api(&demo, "1h", None).to_string()
    );
    assert_eq!(field(&mut page, "vwap"), "35.74890347");
    let href = page.eval("location.href").as_str().unwrap().to_string();
    assert!(
        !href.contains(&demo.key),
        "the key is taken out of the address: {href}"
    );
    assert_eq!(
        page.eval("sessionStorage.getItem('k2.api-key')"),
        demo.key.as_str()
    );
    page.screenshot(&artifacts.join("bhp-1h-from-link.png"));
    println!(
        "page load to first chart (a link to BHP's 1h bars, the demo lake, debug build): \
         {:.0} ms from navigation to the chart drawn; the page's own clock says {} ms",
        to_chart.as_secs_f64() * 1e3,
        by_page.as_str().unwrap_or("?")
    );
    println!("screenshots in {}", artifacts.display());

    let errors = page.errors();
    assert!(errors.is_empty(), "the console has errors: {errors:#?}");
    let log = demo.stderr.lock().unwrap().clone();
    assert!(
        log.contains("/v1/ohlcv/"),
        "the server logs the page's questions"
    );
    assert!(!log.contains(&demo.key), "the key reached the server's log");
}

/// The sequence of the newest trade the page lists.
const NEWEST_SEQ: &str =
    "Number(document.querySelector('#trades tbody tr')?.cells[5].textContent.replaceAll(',', ''))";

#[test]
fn under_k2_up_the_page_follows_the_latest_trades_and_the_feed_live() {
    let Some(chromium) = k2_testkit::services::service("K2_TEST_CHROMIUM") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = rt
        .block_on(k2_ingest::simulator::Simulator::start(
            common::live_exchange(),
        ))
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let (_up, port, stderr) = common::k2_up_with(
        data.path(),
        &format!(
            "[feeds.binance]\nurl = \"{}\"\nsymbols = [\"BTCUSDT\"]\nquotes = false\n",
            sim.url()
        ),
    );
    let key = {
        let log = stderr.lock().unwrap();
        let at = log
            .find("accepts the key ")
            .expect("a key made for the run")
            + "accepts the key ".len();
        log[at..].split_whitespace().next().unwrap().to_string()
    };

    let mut page = Browser::launch(&chromium);
    page.navigate(&format!(
        "http://127.0.0.1:{port}/#key={key}&exchange=BINANCE&symbol=BTCUSDT&interval=1m"
    ));
    page.wait_for("!document.getElementById('live').hidden", WAIT);
    let first = page.wait_for(NEWEST_SEQ, WAIT).as_f64().unwrap();
    let later = page
        .wait_for(&format!("{NEWEST_SEQ} > {first} && {NEWEST_SEQ}"), WAIT)
        .as_f64()
        .unwrap();
    assert!(
        later > first,
        "the latest trades move on: {first} → {later}"
    );
    let feed = page.wait_for(
        "[...document.querySelectorAll('#feeds tbody tr')].map(r => [...r.cells].map(c => c.textContent)).find(c => c[0] === 'binance')",
        WAIT,
    );
    assert_eq!(feed[1], "connected", "the feed's state: {feed}");
    assert_eq!(feed[2], "closed", "its breaker: {feed}");
    page.wait_for(
        "[...document.querySelectorAll('#lag tbody tr')].some(r => r.cells[0].textContent === 'market.crypto.trades.binance')",
        WAIT,
    );
    // The chart grows as the writer commits (the page draws the bars again under a live
    // writer).
    page.wait_for(
        "Number(document.getElementById('chart').dataset.bars) >= 1",
        WAIT,
    );
    let artifacts = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("web");
    page.screenshot(&artifacts.join("btcusdt-live.png"));
    let errors = page.errors();
    assert!(errors.is_empty(), "the console has errors: {errors:#?}");
}
