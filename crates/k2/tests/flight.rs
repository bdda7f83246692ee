//! Arrow Flight SQL as researchers reach it: `tests/interop/flight_sql.py` (the ADBC
//! Flight SQL driver into pyarrow, pandas and polars, from the Python `scripts/test`
//! installs) against `k2 serve --flight-listen` over the sample lake.

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use common::*;

#[test]
fn python_reads_the_lake_over_flight_sql_and_ddl_and_bad_keys_are_refused() {
    let Some(python) = k2_testkit::services::service("K2_TEST_NB_PYTHON") else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    run_ok(k2(data.path()).args(["ingest", "asx"]).arg(sample()));
    run_ok(k2(data.path()).args(["consume", "--until-caught-up"]));
    let (analyst, analyst_entry) = new_key(data.path(), "analyst", "read,sql");
    let (reader, reader_entry) = new_key(data.path(), "reader", "read");
    let config = data.path().join("k2.toml");
    std::fs::write(&config, format!("{analyst_entry}\n{reader_entry}\n")).unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let mut server = Running(
        k2(data.path())
            .arg("--config")
            .arg(&config)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--flight-listen",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let ports = listening_ports(
        &mut server,
        &[
            "query API on http://127.0.0.1:",
            "Flight SQL on grpc://127.0.0.1:",
        ],
        stderr.clone(),
    );
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop");
    let out = std::process::Command::new(python)
        .current_dir(&script)
        .arg("flight_sql.py")
        .arg(format!("grpc://127.0.0.1:{}", ports[1]))
        .arg(format!("http://127.0.0.1:{}", ports[0]))
        .arg(&analyst)
        .arg(&reader)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{said}\nserver:\n{}",
        stderr.lock().unwrap()
    );
    assert!(said.contains("flight sql ok: 91874 trades"), "{said}");
    // Each call is counted.
    let metrics = exchange(ports[0], "GET", "/metrics", &[], b"", false).text();
    for (call, status) in [
        ("fetch", "ok"),
        ("prepare", "invalid_argument"),
        ("prepare", "unauthenticated"),
        ("prepare", "permission_denied"),
    ] {
        let series = format!("k2_flight_requests_total{{call=\"{call}\",status=\"{status}\"}}");
        assert!(
            metric(&metrics, &series).is_some_and(|n| n > 0.0),
            "{series} in\n{metrics}"
        );
    }
}
