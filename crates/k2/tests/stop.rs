//! A clean stop in every state: SIGTERM ends each command within seconds whatever it is
//! doing, and its exit status and a line of its standard error say how it ended.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// What a stop may take when nothing is in hand to land: the bound the issue of record
/// names, with a second of slack for a loaded 2-core machine.
const BOUND: Duration = Duration::from_secs(6);

/// A k2 process whose standard error is collected line by line as it comes.
struct Watched {
    child: Running,
    stderr: Arc<Mutex<String>>,
}

impl Watched {
    fn start(cmd: &mut Command) -> Watched {
        let mut child = Running(
            cmd.stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("k2 starts"),
        );
        let stderr = Arc::new(Mutex::new(String::new()));
        let lines = BufReader::new(child.stderr.take().expect("piped")).lines();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        Watched { child, stderr }
    }

    /// Waits (60 s at most) until standard error holds a line with every one of `words`.
    fn wait_for(&mut self, words: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let seen = self
                .stderr
                .lock()
                .unwrap()
                .lines()
                .any(|l| words.iter().all(|w| l.contains(w)));
            if seen {
                return;
            }
            if let Some(exit) = self.child.try_wait().unwrap() {
                panic!(
                    "k2 ended ({exit}) before saying {words:?}:\n{}",
                    self.said()
                );
            }
            assert!(
                Instant::now() < deadline,
                "k2 never said {words:?}:\n{}",
                self.said()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn said(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends SIGTERM; returns how long the process took to end and how it ended.
    fn terminate(&mut self) -> (Duration, ExitStatus) {
        sigterm(self.child.id());
        let sent = Instant::now();
        let deadline = sent + Duration::from_secs(60);
        loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                // The last lines reach the collector after the exit.
                std::thread::sleep(Duration::from_millis(50));
                return (sent.elapsed(), exit);
            }
            assert!(
                Instant::now() < deadline,
                "k2 still running 60 s after SIGTERM:\n{}",
                self.said()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM; asserts the process ended within [`BOUND`] with the exit status `clean`
    /// asks for, saying `reason` (the one-line reason) on standard error.
    fn stops(&mut self, clean: bool, reason: &str) {
        let (took, exit) = self.terminate();
        let said = self.said();
        eprintln!("stopped {took:?} after SIGTERM ({exit})");
        assert!(took < BOUND, "took {took:?} to stop after SIGTERM:\n{said}");
        assert_eq!(
            exit.success(),
            clean,
            "exit status {exit} (want success = {clean}):\n{said}"
        );
        assert!(
            said.contains(reason),
            "the process must say {reason:?} as it ends:\n{said}"
        );
    }
}

fn sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// A listener that accepts connections and never says a word (a server that hangs).
/// Lives as long as the test.
fn silent_server() -> (std::net::TcpListener, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

/// `k2 feed binance` pointed where nothing listens, with the `[feeds]` settings given as
/// environment variables.
fn feed_to_nothing(data: &Path, settings: &[(&str, &str)]) -> Watched {
    let url = format!("ws://127.0.0.1:{}", k2_testkit::services::free_port());
    let mut cmd = k2(data);
    cmd.env("K2_LOG", "info");
    for (key, value) in settings {
        cmd.env(format!("K2_FEEDS__{}", key.to_ascii_uppercase()), value);
    }
    Watched::start(cmd.args(["feed", "binance", "--url", &url]))
}

#[test]
fn a_feed_in_reconnect_backoff_where_nothing_listens_stops_at_once() {
    let data = tempfile::tempdir().unwrap();
    // Long waits between attempts: SIGTERM lands in one.
    let mut feed = feed_to_nothing(
        data.path(),
        &[("backoff_base", "20s"), ("backoff_max", "60s")],
    );
    feed.wait_for(&["feed connection failed", "failed_in_a_row"]);
    feed.stops(true, "0 trades and 0 quotes appended");
}

#[test]
fn a_feed_with_its_breaker_open_stops_at_once() {
    let data = tempfile::tempdir().unwrap();
    let mut feed = feed_to_nothing(
        data.path(),
        &[
            ("backoff_base", "10ms"),
            ("backoff_max", "10ms"),
            ("breaker_failures", "2"),
            ("breaker_open", "1h"),
        ],
    );
    feed.wait_for(&["feed circuit breaker", "open"]);
    feed.stops(true, "0 trades and 0 quotes appended");
}

#[test]
fn a_feed_whose_server_never_answers_stops_at_once() {
    let data = tempfile::tempdir().unwrap();
    let (_server, port) = silent_server();
    let mut feed = Watched::start(k2(data.path()).env("K2_LOG", "info").args([
        "feed",
        "binance",
        "--url",
        &format!("ws://127.0.0.1:{port}"),
    ]));
    feed.wait_for(&["capturing"]);
    feed.stops(true, "appended to the log");
}

#[test]
fn commands_on_an_unreachable_kafka_cluster_stop_at_once() {
    let data = tempfile::tempdir().unwrap();
    let kafka = |cmd: &mut Command| {
        cmd.env("K2_LOG", "info")
            .env("K2_LOG__BACKEND", "kafka")
            .env(
                "K2_LOG__KAFKA__BOOTSTRAP_SERVERS",
                format!("127.0.0.1:{}", k2_testkit::services::free_port()),
            )
            .env("K2_LOG__KAFKA__REQUEST_TIMEOUT", "120s");
    };
    // The writer is a service: stopped while it waits for the cluster, it stopped cleanly.
    let mut cmd = k2(data.path());
    kafka(&mut cmd);
    let mut writer = Watched::start(cmd.arg("consume"));
    writer.wait_for(&["brokers are down"]);
    writer.stops(true, "consume: stopped by SIGTERM before it started");
    // An ingest runs to its end: stopped before it read anything, it did not finish.
    let mut cmd = k2(data.path());
    kafka(&mut cmd);
    let mut ingest = Watched::start(cmd.arg("ingest").arg("asx").arg(sample()));
    ingest.wait_for(&["brokers are down"]);
    ingest.stops(
        false,
        "ingest: stopped before the log opened; nothing was read",
    );
}

#[test]
fn a_writer_retrying_an_object_store_outage_stops_at_once() {
    let Some(mut s3) = k2_testkit::s3::S3Server::start("k2-stop") else {
        eprintln!("K2_TEST_S3S is not set: skipped (scripts/test sets it)");
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let bucket = s3.bucket("k2-stop");
    let on_s3 = |cmd: &mut Command| {
        cmd.envs(bucket.env());
    };
    let mut ingest = k2(data.path());
    on_s3(&mut ingest);
    run_ok(ingest.arg("ingest").arg("asx").arg(sample()));
    // The writer starts with the store up; the store goes down before the first commit
    // (a commit every 2 000 rows): the commits fail and are retried.
    let mut cmd = k2(data.path());
    on_s3(&mut cmd);
    let mut writer = Watched::start(
        cmd.env("K2_LOG", "info")
            .env("K2_WRITER__RETRY_ATTEMPTS", "1000")
            .env("K2_WRITER__MAX_ROWS", "2000")
            .arg("consume"),
    );
    writer.wait_for(&["lake writer starting"]);
    s3.down();
    writer.wait_for(&["retrying", "attempt"]);
    // Not a clean stop: the writer could not land anything; the reason names the outage.
    writer.stops(false, "was failing (not retried)");
}

/// A lake with the sample landed, in `data`.
fn sample_lake(data: &Path) {
    run_ok(k2(data).arg("ingest").arg("asx").arg(sample()));
    run_ok(k2(data).args(["consume", "--until-caught-up"]));
}

/// The CPU time `pid` has used so far, from `/proc`.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) : utime is the 12th, stime 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields
        .get(11..13)
        .map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
}

/// A self-join over the trades no answer cap saves: busy for far longer than the test.
const ENDLESS_SQL: &str = "SELECT count(*) AS n FROM trades a JOIN trades b ON a.price > b.price AND a.symbol <> b.symbol";

#[test]
fn replays_and_queries_stop_at_once_from_the_command_line_and_the_api() {
    let data = tempfile::tempdir().unwrap();
    sample_lake(data.path());

    // A replay whose reader has stopped reading: the writes block on a full pipe.
    let mut replay = k2(data.path())
        .args(["replay", "--start", "2014-03-01", "--end", "2014-04-01"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map(Running)
        .unwrap();
    let mut first = [0u8; 1];
    replay
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .expect("the replay streams");
    let sent = Instant::now();
    sigterm(replay.id());
    let out = wait_out(&mut replay);
    assert!(
        sent.elapsed() < BOUND,
        "the replay took {:?}",
        sent.elapsed()
    );
    assert!(!out.0.success(), "an interrupted replay did not finish");
    assert!(out.1.trim_end().lines().count() >= 1, "one line says why");

    // A query busy computing.
    let mut sql = k2(data.path())
        .env("K2_QUERY__TIMEOUT", "10m")
        .args(["sql", ENDLESS_SQL])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map(Running)
        .unwrap();
    busy(sql.id());
    let sent = Instant::now();
    sigterm(sql.id());
    let (exit, said) = wait_out(&mut sql);
    assert!(
        sent.elapsed() < BOUND,
        "the query took {:?}",
        sent.elapsed()
    );
    assert!(!exit.success());
    assert!(
        said.contains("interrupted by SIGTERM before it finished"),
        "{said}"
    );

    // The API with a replay streaming to a client that does not read, and a query running.
    let (key, entry) = new_key(data.path(), "analyst", "read,sql");
    let config = data.path().join("k2.toml");
    std::fs::write(&config, format!("[query]\ntimeout = \"10m\"\n{entry}")).unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let mut server = k2(data.path())
        .arg("--config")
        .arg(&config)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map(Running)
        .unwrap();
    let port = listening_port(
        &mut server,
        "query API on http://127.0.0.1:",
        stderr.clone(),
    );
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET /v1/replay/stream?start_time=2014-03-01&end_time=2014-04-01 HTTP/1.1\r\nHost: k2\r\nX-API-Key: {key}\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 2048];
    let n = stream.read(&mut head).unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "the replay started: {head}"
    );
    let body = format!(r#"{{"sql": "{ENDLESS_SQL}"}}"#);
    let mut query = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        query,
        "POST /v1/sql HTTP/1.1\r\nHost: k2\r\nX-API-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    busy(server.id());
    let sent = Instant::now();
    sigterm(server.id());
    let deadline = sent + Duration::from_secs(60);
    let exit = loop {
        if let Some(exit) = server.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "k2 serve still running");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        sent.elapsed() < BOUND,
        "the API took {:?} to stop:\n{}",
        sent.elapsed(),
        stderr.lock().unwrap()
    );
    assert!(exit.success(), "a served API stops cleanly: {exit}");
    drop((stream, query));
}

/// Waits until `pid` has used a second of CPU (a query is computing), 60 s at most.
fn busy(pid: u32) {
    let ticks_per_s = 100; // USER_HZ on Linux
    let deadline = Instant::now() + Duration::from_secs(60);
    while cpu_ticks(pid) < ticks_per_s {
        assert!(Instant::now() < deadline, "{pid} never got busy");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for `child` to end (60 s at most): its status and standard error.
fn wait_out(child: &mut Running) -> (ExitStatus, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(exit) = child.try_wait().unwrap() {
            let mut said = String::new();
            if let Some(mut err) = child.stderr.take() {
                let _ = err.read_to_string(&mut said);
            }
            return (exit, said);
        }
        assert!(
            Instant::now() < deadline,
            "still running 60 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
