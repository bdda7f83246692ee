use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Config;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load(pairs: &[(&str, &str)]) -> anyhow::Result<Config> {
    Config::load_from(None, &env(pairs))
}

fn error(pairs: &[(&str, &str)]) -> String {
    format!("{:#}", load(pairs).unwrap_err())
}

#[test]
fn example_config_parses_to_the_defaults_without_warnings() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/k2.example.toml");
    let example = Config::load_from(Some(&path), &[]).unwrap();
    assert!(example.warnings.is_empty(), "{:?}", example.warnings);
    // The example documents the defaults: every section reads as the default one.
    let defaults = Config::default();
    assert_eq!(format!("{example:?}"), format!("{defaults:?}"));
}

#[test]
fn environment_overrides_the_file() {
    let config = load(&[
        ("K2_DATA_DIR", "/var/k2"),
        ("K2_QUERY__TIMEOUT", "5s"),
        ("K2_WRITER__GROUP", "g1"),
        ("K2_FEEDS__RUN", "[\"binance\"]"),
        ("K2_WAREHOUSE__URI", "s3://k2-lake/prod"),
        ("K2_WAREHOUSE__S3__ENDPOINT", "http://127.0.0.1:9000"),
        ("K2_WAREHOUSE__S3__PATH_STYLE", "true"),
        ("K2_CONFIG", "x"),
    ])
    .unwrap();
    assert_eq!(config.warehouse.uri, "s3://k2-lake/prod");
    assert_eq!(config.warehouse.s3.endpoint, "http://127.0.0.1:9000");
    assert!(config.warehouse.s3.path_style);
    assert_eq!(config.warehouse().unwrap().location(), "s3://k2-lake/prod");
    assert_eq!(config.data_dir, PathBuf::from("/var/k2"));
    assert_eq!(config.query.timeout, Duration::from_secs(5));
    assert_eq!(config.writer.group, "g1");
    assert_eq!(config.feeds.run, vec![k2_ingest::Venue::Binance]);
}

#[test]
fn keys_of_the_previous_release_are_read_once_more_with_a_warning() {
    let config = load(&[
        ("K2_QUERY__TIMEOUT_SECONDS", "2.5"),
        ("K2_WRITER__SNAPSHOT_RETENTION_HOURS", "2"),
        ("K2_LOG__KAFKA__REQUEST_TIMEOUT_MS", "1500"),
        ("K2_API__MAX_RANGE_DAYS", "30"),
    ])
    .unwrap();
    assert_eq!(config.query.timeout, Duration::from_millis(2500));
    assert_eq!(
        config.writer_options().snapshot_retention,
        Some(Duration::from_secs(7_200))
    );
    assert_eq!(
        config.log.kafka.request_timeout,
        Duration::from_millis(1500)
    );
    let warnings = config.warnings.join("\n");
    assert!(
        warnings.contains("write query.timeout = \"2s 500ms\""),
        "{warnings}"
    );
    assert!(
        warnings.contains("api.max_range_days is no longer read"),
        "{warnings}"
    );
    assert_eq!(config.warnings.len(), 4);

    let both = error(&[
        ("K2_QUERY__TIMEOUT_SECONDS", "2"),
        ("K2_QUERY__TIMEOUT", "2s"),
    ]);
    assert!(both.contains("are both set"), "{both}");
    assert!(error(&[("K2_WRITER__SNAPSHOT_RETENTION_HOURS", "-1")]).contains("at least 0"));
    assert!(error(&[("K2_WRITER__SNAPSHOT_RETENTION_HOURS", "NaN")]).contains("must be a number"));
}

#[test]
fn typos_and_bad_values_are_errors_naming_the_key() {
    assert!(error(&[("K2_QUERY__TIMEOUT_SECOND", "5")]).contains("timeout_second"));
    assert!(error(&[("K2_WRITER__ZSTD_LEVEL", "99")]).contains("writer.zstd_level"));
    assert!(error(&[("K2_LOG__BACKEND", "zookeeper")]).contains("zookeeper"));
    assert!(error(&[("K2_QUERY__TIMEOUT", "5")]).contains("timeout"));
    assert!(error(&[("K2_QUERY__TIMEOUT", "soon")]).contains("timeout"));
    assert!(error(&[("K2_TELEMETRY__LOG_FORMAT", "xml")]).contains("xml"));
    let half_hour = error(&[("K2_WRITER__SNAPSHOT_RETENTION", "30m")]);
    assert!(
        half_hour.contains("writer.snapshot_retention: must be 0s"),
        "{half_hour}"
    );
    let kept = |text: &str| {
        load(&[("K2_WRITER__SNAPSHOT_RETENTION", text)])
            .unwrap()
            .writer_options()
            .snapshot_retention
    };
    assert_eq!(kept("0s"), None);
    assert_eq!(kept("2h"), Some(Duration::from_secs(7_200)));
}

#[test]
fn kafka_and_registry_settings_are_checked_together() {
    let kafka = |more: &[(&str, &str)]| {
        let mut vars = vec![("K2_LOG__BACKEND", "kafka")];
        vars.extend_from_slice(more);
        load(&vars)
    };
    let ok = kafka(&[("K2_LOG__KAFKA__BOOTSTRAP_SERVERS", "b1:9092,b2:9092")]).unwrap();
    assert_eq!(ok.kafka_options().bootstrap_servers, "b1:9092,b2:9092");
    assert_eq!(ok.kafka_options().group, ok.writer.group);
    let err = format!(
        "{:#}",
        kafka(&[("K2_LOG__KAFKA__COMPRESSION", "zstd")]).unwrap_err()
    );
    assert!(err.contains("zstd"), "{err}");
    assert!(kafka(&[("K2_LOG__KAFKA__BOOTSTRAP_SERVERS", " ")]).is_err());
    assert!(
        kafka(&[("K2_LOG__KAFKA__LINGER_TIME", "5ms")]).is_err(),
        "unknown key"
    );
    assert!(error(&[("K2_REGISTRY__URL", "http://r:8081")]).contains("registry.url: needs"));
    let err = format!(
        "{:#}",
        kafka(&[("K2_REGISTRY__PASSWORD", "secret")]).unwrap_err()
    );
    assert!(err.contains("apply to a shared registry"), "{err}");
    let remote = kafka(&[
        ("K2_REGISTRY__URL", "https://r:8081"),
        ("K2_REGISTRY__CA_FILE", "ca.pem"),
        ("K2_REGISTRY__USERNAME", "key"),
        ("K2_REGISTRY__PASSWORD", "secret"),
    ])
    .unwrap()
    .registry_access();
    assert_eq!(remote.ca_file.as_deref(), Some(Path::new("ca.pem")));
    assert_eq!(
        (remote.username.as_str(), remote.password.expose()),
        ("key", "secret")
    );
}

#[test]
fn credentials_come_by_reference_and_in_clear_only_with_a_warning_outside_production() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("k2.toml");
    std::fs::write(
        &file,
        "[warehouse.s3]\naccess_key_id = \"env:K2_TEST_KEY_ID\"\nsecret_access_key = \"in-clear\"\n",
    )
    .unwrap();
    let vars = env(&[("K2_TEST_KEY_ID", "AKIA-FROM-ENV")]);
    let c = Config::load_from(Some(&file), &vars).unwrap();
    assert_eq!(c.warehouse.s3.access_key_id.expose(), "AKIA-FROM-ENV");
    assert_eq!(c.warehouse.s3.secret_access_key.expose(), "in-clear");
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("warehouse.s3.secret_access_key written in the configuration file")),
        "{:?}",
        c.warnings
    );
    assert!(
        !format!("{c:?}").contains("in-clear"),
        "Debug shows no secret"
    );
    let mut production = vars.clone();
    production.push(("K2_API__PRODUCTION".into(), "true".into()));
    let e = format!(
        "{:#}",
        Config::load_from(Some(&file), &production).unwrap_err()
    );
    assert!(
        e.contains("api.production refuses credentials in clear"),
        "{e}"
    );
    assert!(!e.contains("in-clear"), "{e}");
}
