//! `k2 catalog serve` and K2 as a client of it: a writer in another process lands the
//! sample through the REST catalog exactly once (again after a repeated ingest), readers
//! answer as the server's own catalog does, keys are enforced by scope, and a commit whose
//! requirement fails is refused with the spec's 409 and changes nothing.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use common::*;

/// A running `k2 catalog serve` and its keys.
struct CatalogServer {
    child: Child,
    port: u16,
    writer: String,
    reader: String,
    stderr: Arc<Mutex<String>>,
    _config: tempfile::TempDir,
}

impl Drop for CatalogServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl CatalogServer {
    fn start(data: &Path) -> CatalogServer {
        let dir = tempfile::tempdir().unwrap();
        let (writer, writer_entry) = new_key(data, "writer", "catalog");
        let (reader, reader_entry) = new_key(data, "reader", "read");
        let config = dir.path().join("k2.toml");
        std::fs::write(&config, format!("{writer_entry}\n{reader_entry}\n")).unwrap();
        let mut child = k2(data)
            .env("K2_LOG", "info")
            .arg("--config")
            .arg(&config)
            .args(["catalog", "serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let port = listening_port(
            &mut child,
            "Iceberg REST catalog on http://127.0.0.1:",
            stderr.clone(),
        );
        CatalogServer {
            child,
            port,
            writer,
            reader,
            stderr,
            _config: dir,
        }
    }

    fn uri(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `k2` on `data` with the REST catalog as its catalog, authorised as `auth` says
    /// (`token` or `credential` and its value).
    fn client(&self, data: &Path, auth: (&str, &str)) -> Command {
        let mut cmd = k2(data);
        cmd.env("K2_CATALOG__URI", self.uri())
            .env(format!("K2_CATALOG__{}", auth.0.to_uppercase()), auth.1);
        cmd
    }

    fn request(&self, method: &str, path: &str, key: Option<&str>, body: Option<&Value>) -> Answer {
        let bearer = key.map(|k| format!("Bearer {k}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(b) = &bearer {
            headers.push(("Authorization", b.as_str()));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        exchange(self.port, method, path, &headers, body.as_bytes(), false)
    }
}

fn count(cmd: &mut Command, table: &str) -> u64 {
    let out = run_ok(cmd.args([
        "sql",
        &format!("SELECT count(*) AS n FROM {table}"),
        "--format",
        "json",
    ]));
    let rows: Value = serde_json::from_str(&out).unwrap();
    rows[0]["n"].as_u64().unwrap()
}

#[test]
fn a_writer_lands_the_sample_through_the_rest_catalog_exactly_once() {
    let server_data = tempfile::tempdir().unwrap();
    let server = CatalogServer::start(server_data.path());
    let client_data = tempfile::tempdir().unwrap();
    let client = client_data.path();
    let credential = format!("writer:{}", server.writer);
    let writer = || server.client(client, ("credential", &credential));

    run_ok(writer().arg("ingest").arg("asx").arg(sample()));
    run_ok(writer().args(["consume", "--until-caught-up"]));
    // The same files again: the log takes nothing new and the lake gains nothing.
    run_ok(writer().arg("ingest").arg("asx").arg(sample()));
    run_ok(writer().args(["consume", "--until-caught-up"]));

    // The server's own catalog, read directly, and a client through the server agree.
    assert_eq!(count(&mut k2(server_data.path()), "trades"), TRADES);
    assert_eq!(count(&mut k2(server_data.path()), "quotes"), QUOTES);
    let reader = || server.client(client, ("token", &server.reader));
    assert_eq!(count(&mut reader(), "trades"), TRADES);
    let direct = run_ok(k2(server_data.path()).args([
        "query",
        "summary",
        "BHP",
        "2014-03-12",
        "--exchange",
        "ASX",
        "--format",
        "json",
    ]));
    let remote = run_ok(reader().args([
        "query",
        "summary",
        "BHP",
        "2014-03-12",
        "--exchange",
        "ASX",
        "--format",
        "json",
    ]));
    assert_eq!(direct, remote);

    // Every commit went through the server.
    let log = server.stderr.lock().unwrap().clone();
    assert!(log.contains("catalog: commit"), "{log}");

    // A read key loads but cannot commit: tagging is refused with the scope named.
    let refused = reader()
        .args(["snapshot", "tag", "audit"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("403") && err.contains("catalog scope"),
        "{err}"
    );
    // The writer's key can.
    run_ok(writer().args(["snapshot", "tag", "audit"]));
    let tags = run_ok(reader().args(["snapshot", "tags"]));
    assert!(tags.contains("market_data.trades\taudit\t"), "{tags}");
}

#[test]
fn the_catalog_answers_the_spec_and_enforces_keys() {
    let data = tempfile::tempdir().unwrap();
    run_ok(k2(data.path()).arg("ingest").arg("asx").arg(sample()));
    run_ok(k2(data.path()).args(["consume", "--until-caught-up"]));
    let server = CatalogServer::start(data.path());
    let trades = "/v1/namespaces/market_data/tables/trades";

    assert_eq!(server.request("GET", "/v1/config", None, None).status, 401);
    let a = server.request("GET", "/v1/config", Some("k2_not-a-key"), None);
    assert_eq!(a.status, 401);
    assert_eq!(a.json()["error"]["type"], "NotAuthorizedException");

    let a = server.request("GET", "/v1/namespaces", Some(&server.reader), None);
    assert_eq!(a.status, 200, "{}", a.text());
    let namespaces = a.json()["namespaces"].clone();
    assert!(
        namespaces
            .as_array()
            .unwrap()
            .contains(&json!(["market_data"])),
        "{namespaces}"
    );
    let a = server.request(
        "GET",
        "/v1/namespaces/market_data/tables",
        Some(&server.reader),
        None,
    );
    let names: Vec<String> = a.json()["identifiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        names.iter().any(|n| n == "trades") && names.iter().any(|n| n == "quotes"),
        "{names:?}"
    );
    assert_eq!(
        server
            .request("HEAD", trades, Some(&server.reader), None)
            .status,
        204
    );
    assert_eq!(
        server
            .request(
                "HEAD",
                "/v1/namespaces/market_data/tables/nope",
                Some(&server.reader),
                None
            )
            .status,
        404
    );
    let a = server.request(
        "GET",
        "/v1/namespaces/market_data/tables/nope",
        Some(&server.reader),
        None,
    );
    assert_eq!(
        (a.status, a.json()["error"]["type"].clone()),
        (404, json!("NoSuchTableException"))
    );

    let loaded = server
        .request("GET", trades, Some(&server.reader), None)
        .json();
    let location = loaded["metadata-location"].as_str().unwrap().to_string();
    let current = loaded["metadata"]["current-snapshot-id"].as_i64().unwrap();

    // A commit whose requirement fails: 409, and the table is where it was.
    let stale = json!({
        "requirements": [{"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": current + 1}],
        "updates": [{"action": "set-properties", "updates": {"k2.test": "x"}}],
    });
    let a = server.request("POST", trades, Some(&server.writer), Some(&stale));
    assert_eq!(
        (a.status, a.json()["error"]["type"].clone()),
        (409, json!("CommitFailedException")),
        "{}",
        a.text()
    );
    // A read key may not commit at all.
    let a = server.request("POST", trades, Some(&server.reader), Some(&stale));
    assert_eq!(
        (a.status, a.json()["error"]["type"].clone()),
        (403, json!("ForbiddenException"))
    );
    let after = server
        .request("GET", trades, Some(&server.reader), None)
        .json();
    assert_eq!(after["metadata-location"], json!(location));

    // A commit whose requirement holds lands, and the answer is the new metadata.
    let fresh = json!({
        "requirements": [{"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": current}],
        "updates": [{"action": "set-properties", "updates": {"k2.test": "x"}}],
    });
    let a = server.request("POST", trades, Some(&server.writer), Some(&fresh));
    assert_eq!(a.status, 200, "{}", a.text());
    let committed = a.json();
    assert_ne!(committed["metadata-location"], json!(location));
    assert_eq!(committed["metadata"]["properties"]["k2.test"], "x");
    assert_eq!(committed["metadata"]["current-snapshot-id"], json!(current));

    // Client credentials: the secret is a key, the id its name.
    let token = |form: &str| {
        exchange(
            server.port,
            "POST",
            "/v1/oauth/tokens",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            form.as_bytes(),
            false,
        )
    };
    let good = token(&format!(
        "grant_type=client_credentials&client_id=reader&client_secret={}&scope=catalog",
        server.reader
    ));
    assert_eq!(good.status, 200, "{}", good.text());
    let issued = good.json()["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        server.request("GET", trades, Some(&issued), None).status,
        200
    );
    let wrong_name = token(&format!(
        "grant_type=client_credentials&client_id=writer&client_secret={}",
        server.reader
    ));
    assert_eq!(
        (wrong_name.status, wrong_name.json()["error"].clone()),
        (401, json!("invalid_client"))
    );
}
