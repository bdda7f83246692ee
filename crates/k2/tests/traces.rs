//! OTLP traces: with `telemetry.otlp_endpoint` set, each pipeline stage (parse, append,
//! decode, write, commit) and each API request leaves a span at a collector; a collector
//! that is down costs a command nothing but a warning; a wrong endpoint is refused.

mod common;

#[path = "../src/bench/otlp.rs"]
mod otlp;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use common::*;
use otlp::{ReceivedSpan, Receiver};

fn config(data: &std::path::Path, endpoint: &str, extra: &str) -> std::path::PathBuf {
    let path = data.join("k2.toml");
    std::fs::write(
        &path,
        format!("[telemetry]\notlp_endpoint = \"{endpoint}\"\n{extra}"),
    )
    .unwrap();
    path
}

/// The spans named `name`.
fn named<'a>(spans: &'a [ReceivedSpan], name: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.name == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stage_and_request_leaves_a_span() {
    let receiver = Receiver::start().await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let (key, entry) = new_key(data.path(), "analyst", "read");
    let config = config(data.path(), &receiver.endpoint, &entry);
    let dir = data.path().to_path_buf();
    let serve_config = config.clone();
    let (stderr, status) = tokio::task::spawn_blocking(move || {
        run_ok(
            k2(&dir)
                .arg("--config")
                .arg(&config)
                .args(["ingest", "asx"])
                .arg(sample()),
        );
        run_ok(
            k2(&dir)
                .arg("--config")
                .arg(&config)
                .args(["consume", "--until-caught-up"]),
        );
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut serve = Running(
            k2(&dir)
                .arg("--config")
                .arg(&serve_config)
                .args(["serve", "--listen", "127.0.0.1:0"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let port = listening_port(&mut serve, "query API on http://127.0.0.1:", stderr.clone());
        let answer = exchange(
            port,
            "GET",
            "/v1/trades?symbol=BHP&exchange=ASX&limit=5",
            &[("X-API-Key", key.as_str())],
            b"",
            false,
        );
        assert_eq!(answer.status, 200, "{}", answer.text());
        // The spans still held go out when the server stops.
        unsafe { libc::kill(serve.id() as i32, libc::SIGTERM) };
        let status = serve.wait().unwrap();
        (stderr, status)
    })
    .await
    .unwrap();
    assert!(status.success(), "serve: {}", stderr.lock().unwrap());

    let spans = receiver.spans();
    let counts = receiver.counts();
    eprintln!("received: {counts:?}");
    for stage in [
        "file", "parse", "append", "decode", "batch", "write", "commit",
    ] {
        assert!(
            counts.get(stage).is_some_and(|n| *n > 0),
            "no {stage} span: {counts:?}"
        );
    }
    assert!(
        spans.iter().all(|s| s.service == "k2"),
        "service.name is k2"
    );

    // Parsing and appending a chunk are children of its file's span.
    let files: BTreeMap<&[u8], &ReceivedSpan> = named(&spans, "file")
        .into_iter()
        .map(|s| (s.span_id.as_slice(), s))
        .collect();
    // (The reference data's one append has no file of its own.)
    let in_files = spans.iter().filter(|s| {
        s.name == "parse"
            || (s.name == "append" && !s.attributes["topic"].contains("reference_data"))
    });
    for span in in_files {
        let file = files
            .get(span.parent_span_id.as_slice())
            .unwrap_or_else(|| panic!("a {} span outside a file's span: {span:?}", span.name));
        assert_eq!(file.trace_id, span.trace_id);
    }
    // Every row parsed was appended: the spans' counts add up to the sample.
    let total = |name: &str, field: &str| -> u64 {
        named(&spans, name)
            .iter()
            .filter_map(|s| s.attributes.get(field)?.parse::<u64>().ok())
            .sum()
    };
    assert_eq!(total("parse", "rows"), TRADES + QUOTES);
    assert_eq!(total("parse", "dead_letters"), 0);
    // Writing and committing a batch are children of the batch's span, and the batches'
    // rows are the rows committed.
    let batches: BTreeMap<&[u8], &ReceivedSpan> = named(&spans, "batch")
        .into_iter()
        .map(|s| (s.span_id.as_slice(), s))
        .collect();
    for stage in ["write", "commit"] {
        for span in named(&spans, stage) {
            let batch = batches
                .get(span.parent_span_id.as_slice())
                .unwrap_or_else(|| panic!("a {stage} span outside a batch: {span:?}"));
            assert_eq!(batch.attributes["table"], span.attributes["table"]);
            assert_eq!(batch.attributes["rows"], span.attributes["rows"]);
        }
    }
    let committed: u64 = named(&spans, "commit")
        .iter()
        .filter(|s| s.attributes["table"] != "reference_data.companies")
        .map(|s| s.attributes["rows"].parse::<u64>().unwrap())
        .sum();
    assert_eq!(committed, TRADES + QUOTES);
    assert!(
        named(&spans, "commit")
            .iter()
            .all(|s| s.attributes.contains_key("snapshot"))
    );
    assert!(
        named(&spans, "write")
            .iter()
            .all(|s| s.attributes["files"] != "0")
    );

    // The request's span, named as OpenTelemetry's HTTP conventions name it.
    let requests = named(&spans, "GET /v1/trades");
    assert_eq!(requests.len(), 1, "{counts:?}");
    let request = requests[0];
    assert_eq!(request.attributes["http.route"], "/v1/trades");
    assert_eq!(request.attributes["http.response.status_code"], "200");
    assert!(!request.attributes["request_id"].is_empty());
}

#[test]
fn a_collector_that_is_down_costs_a_warning_and_a_wrong_endpoint_is_refused() {
    let data = tempfile::tempdir().unwrap();
    // Nothing listens on the port of a listener just closed.
    let port = k2_testkit::services::free_port();
    let config = config(data.path(), &format!("http://127.0.0.1:{port}"), "");
    let out = k2(data.path())
        .env("K2_LOG", "info")
        .arg("--config")
        .arg(&config)
        .args(["ingest", "asx"])
        .arg(sample())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("exporting traces over OTLP"), "{stderr}");
    // The exporter says that it could not send (and the ingest ends all the same).
    assert!(stderr.contains("export failed"), "{stderr}");

    let config = config_with(
        data.path(),
        "[telemetry]\notlp_endpoint = \"127.0.0.1:4318\"\n",
    );
    let out = k2(data.path())
        .arg("--config")
        .arg(&config)
        .args(["topics", "list"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("telemetry.otlp_endpoint") && stderr.contains("http://"),
        "{stderr}"
    );
}

fn config_with(data: &std::path::Path, toml: &str) -> std::path::PathBuf {
    let path = data.join("wrong.toml");
    std::fs::write(&path, toml).unwrap();
    path
}
