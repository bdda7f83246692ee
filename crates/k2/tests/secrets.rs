//! Credentials stay secret: given as `env:`/`file:` references, they reach the services
//! that need them, and never K2's logs (at debug level), its errors, `/metrics` or the
//! API's answers.

mod common;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use common::*;
use k2_testkit::s3::{S3Server, SECRET_ACCESS_KEY};
use k2_testkit::services::Broker;

/// Everything K2 said or answered during the run, to search for secrets.
#[derive(Default)]
struct Transcript(Vec<(String, String)>);

impl Transcript {
    fn add(&mut self, what: &str, text: impl Into<String>) {
        self.0.push((what.to_string(), text.into()));
    }

    /// Runs `cmd` to its end, keeping both outputs; it must succeed.
    fn run(&mut self, what: &str, cmd: &mut Command) {
        let out = cmd.output().expect("k2 runs");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(out.status.success(), "{what} failed:\n{stderr}");
        self.add(&format!("{what} (stdout)"), stdout);
        self.add(&format!("{what} (stderr)"), stderr);
    }

    fn assert_never_shows(&self, secrets: &[(&str, &str)]) {
        let mut bytes = 0;
        for (what, text) in &self.0 {
            bytes += text.len();
            for (name, value) in secrets {
                assert!(
                    !text.contains(value),
                    "the {name} appears in {what}:\n{}",
                    text.lines()
                        .filter(|l| l.contains(value))
                        .take(3)
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
        }
        eprintln!(
            "{} outputs, {bytes} bytes, searched for {} secrets",
            self.0.len(),
            secrets.len()
        );
    }
}

/// A long-running k2 command with standard error collected; its port from the line that
/// starts with `prefix`.
fn serve(cmd: &mut Command, prefix: &str) -> (Running, u16, Arc<Mutex<String>>) {
    let stderr = Arc::new(Mutex::new(String::new()));
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map(Running)
        .unwrap();
    let port = listening_port(&mut child, prefix, stderr.clone());
    (child, port, stderr)
}

fn keys_toml(entry: &str) -> String {
    entry.replace("[[api.keys]]", "[[keys]]")
}

#[test]
fn credentials_given_by_reference_never_reach_logs_errors_metrics_or_the_api() {
    let Some(s3) = S3Server::start("k2-secrets") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Broker::start(dir.path(), false) else {
        return;
    };
    let secrets_dir = dir.path().join("secrets");
    std::fs::create_dir_all(&secrets_dir).unwrap();
    let write = |name: &str, value: &str| {
        let path = secrets_dir.join(name);
        std::fs::write(&path, format!("{value}\n")).unwrap();
        format!("file:{}", path.display())
    };
    let registry_password = "k2-registry-Pa55-7f3a";
    let bucket = s3.bucket("k2-secrets");
    let mut said = Transcript::default();

    // The keys: one for the catalog server (its clients' bearer token), one for the API.
    let server_dir = dir.path().join("catalog");
    let (catalog_key, catalog_entry) = new_key(&server_dir, "writer", "catalog");
    let client_dir = dir.path().join("client");
    let (api_key, api_entry) = new_key(&client_dir, "analyst", "read,sql");

    // What every k2 process shares: the warehouse in the bucket, its keys by reference.
    let s3_secret_ref = write("s3-secret", SECRET_ACCESS_KEY);
    let lake = |cmd: &mut Command| {
        cmd.env("K2_LOG", "debug")
            .env("K2_WAREHOUSE__URI", bucket.uri())
            .env("K2_WAREHOUSE__S3__ENDPOINT", &bucket.endpoint)
            .env("K2_WAREHOUSE__S3__PATH_STYLE", "true")
            .env("K2_WAREHOUSE__S3__ACCESS_KEY_ID", "env:K2_TEST_S3_KEY_ID")
            .env("K2_TEST_S3_KEY_ID", k2_testkit::s3::ACCESS_KEY_ID)
            .env("K2_WAREHOUSE__S3__SECRET_ACCESS_KEY", &s3_secret_ref);
    };

    // The REST catalog server, its keys from a variable holding the keys file.
    let mut cmd = k2(&server_dir);
    lake(&mut cmd);
    let (mut catalog, catalog_port, catalog_said) = serve(
        cmd.env("K2_API__KEYS_FILE", "env:K2_TEST_KEYS")
            .env("K2_TEST_KEYS", keys_toml(&catalog_entry))
            .args(["catalog", "serve", "--listen", "127.0.0.1:0"]),
        "Iceberg REST catalog on http://127.0.0.1:",
    );

    // A schema registry that the Kafka clients reach with a user and password.
    let (mut registry, registry_port, registry_said) = serve(
        k2(&dir.path().join("registry"))
            .env("K2_LOG", "debug")
            .args(["registry", "serve", "--listen", "127.0.0.1:0"]),
        "schema registry on http://127.0.0.1:",
    );

    // The writer's side: Kafka, the shared registry, the REST catalog, all by reference.
    let catalog_token_ref = write("catalog-token", &catalog_key);
    let registry_password_ref = write("registry-password", registry_password);
    let client = |cmd: &mut Command| {
        lake(cmd);
        cmd.envs(broker.env())
            .env(
                "K2_REGISTRY__URL",
                format!("http://127.0.0.1:{registry_port}"),
            )
            .env("K2_REGISTRY__USERNAME", "k2")
            .env("K2_REGISTRY__PASSWORD", &registry_password_ref)
            .env(
                "K2_CATALOG__URI",
                format!("http://127.0.0.1:{catalog_port}"),
            )
            .env("K2_CATALOG__TOKEN", &catalog_token_ref);
    };
    let mut cmd = k2(&client_dir);
    client(&mut cmd);
    said.run("k2 ingest", cmd.arg("ingest").arg("asx").arg(sample()));
    let mut cmd = k2(&client_dir);
    client(&mut cmd);
    said.run("k2 consume", cmd.args(["consume", "--until-caught-up"]));

    // The API over the same lake, its key from a keys file named by reference.
    let keys_file = secrets_dir.join("api-keys.toml");
    std::fs::write(&keys_file, keys_toml(&api_entry)).unwrap();
    let mut cmd = k2(&client_dir);
    client(&mut cmd);
    let (mut api, api_port, api_said) = serve(
        cmd.env("K2_API__KEYS_FILE", format!("file:{}", keys_file.display()))
            .args(["serve", "--listen", "127.0.0.1:0"]),
        "query API on http://127.0.0.1:",
    );
    let key = [("X-API-Key", api_key.as_str())];
    for (path, headers, want) in [
        ("/v1/trades?symbol=BHP&limit=5", &key[..], 200),
        ("/v1/sql?sql=SELECT%201", &key[..], 405),
        ("/v1/trades?symbol=BHP", &[][..], 401),
        ("/v1/trades?symbol=BHP&start_time=nonsense", &key[..], 422),
        ("/v1/snapshots", &key[..], 200),
        ("/health/ready", &[][..], 200),
        ("/metrics", &[][..], 200),
        ("/openapi.json", &[][..], 200),
    ] {
        let a = exchange(api_port, "GET", path, headers, b"", false);
        assert_eq!(a.status, want, "{path}: {}", a.text());
        said.add(
            &format!("GET {path}"),
            format!("{:?}\n{}", a.headers, a.text()),
        );
    }
    let sql = exchange(
        api_port,
        "POST",
        "/v1/sql",
        &[key[0], ("Content-Type", "application/json")],
        br#"{"sql": "SELECT count(*) AS n FROM trades"}"#,
        false,
    );
    assert_eq!(sql.status, 200, "{}", sql.text());
    assert!(sql.text().contains(&TRADES.to_string()), "{}", sql.text());
    said.add("POST /v1/sql", sql.text());

    // A reference to nothing is an error that names the key and the reference only.
    let out = k2(&client_dir)
        .env("K2_CATALOG__TOKEN", "env:K2_TEST_UNSET_SECRET")
        .args(["sql", "SELECT 1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains(
            "catalog.token: env:K2_TEST_UNSET_SECRET: the environment variable is not set"
        ),
        "{err}"
    );
    said.add("a reference to nothing", err);

    for (child, log, what) in [
        (&mut api, api_said, "k2 serve"),
        (&mut catalog, catalog_said, "k2 catalog serve"),
        (&mut registry, registry_said, "k2 registry serve"),
    ] {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
        said.add(what, log.lock().unwrap().clone());
    }
    said.assert_never_shows(&[
        ("S3 secret key", SECRET_ACCESS_KEY),
        ("catalog bearer token (an API key)", &catalog_key),
        ("registry password", registry_password),
        ("API key", &api_key),
    ]);
}
