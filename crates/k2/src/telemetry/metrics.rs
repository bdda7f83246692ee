//! The Prometheus recorder: histogram buckets, every metric's help text, and the
//! `/metrics` endpoint of the commands that have no API of their own.

use anyhow::Context;

use super::TelemetryConfig;

/// Serves `/metrics` on the configured address (long-running commands only), with the
/// process's resources under `data_dir` refreshed every few seconds.
pub fn serve_metrics(config: &TelemetryConfig, data_dir: &std::path::Path) -> anyhow::Result<()> {
    if config.metrics_listen.is_empty() {
        return Ok(());
    }
    let addr: std::net::SocketAddr = config.metrics_listen.parse().with_context(|| {
        format!(
            "telemetry.metrics_listen '{}' is not an address",
            config.metrics_listen
        )
    })?;
    builder()?
        .with_http_listener(addr)
        .install()
        .with_context(|| format!("serving metrics on {addr}"))?;
    describe_metrics();
    crate::resources::publish_periodically(data_dir.to_path_buf());
    tracing::info!(%addr, "metrics served at /metrics");
    Ok(())
}

/// Installs the process's Prometheus recorder and returns the handle that renders it (for a
/// `/metrics` route of the process's own server), with the process's resources under
/// `data_dir` refreshed every few seconds.
pub fn recorder(
    data_dir: &std::path::Path,
) -> anyhow::Result<metrics_exporter_prometheus::PrometheusHandle> {
    let handle = builder()?
        .install_recorder()
        .context("installing the metrics recorder")?;
    describe_metrics();
    crate::resources::publish_periodically(data_dir.to_path_buf());
    Ok(handle)
}

/// The exporter with K2's histogram buckets: durations from 0.5 ms to 30 s; freshness,
/// which spans a feed's second and a backlog's hour, from 0.1 s to an hour.
fn builder() -> anyhow::Result<metrics_exporter_prometheus::PrometheusBuilder> {
    use metrics_exporter_prometheus::Matcher;
    let durations = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ];
    let freshness = [
        0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
    ];
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("k2_lake_freshness_seconds".into()),
            &freshness,
        )
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &durations))
        .context("histogram buckets")
}

/// The help text of every metric K2 emits, crate by crate, and the build's own.
fn describe_metrics() {
    k2_log::describe_metrics();
    k2_lake::describe_metrics();
    k2_ingest::describe_metrics();
    k2_api::describe_metrics();
    crate::resources::describe();
    crate::degradation::describe();
    metrics::describe_gauge!(
        "k2_build_info",
        "Always 1; the version label names the running build."
    );
    metrics::gauge!("k2_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit};

    /// Every metric the binary declares, with its kind, as `describe_metrics` declares them.
    #[derive(Default)]
    struct Declared(Mutex<BTreeMap<String, &'static str>>);

    impl metrics::Recorder for Declared {
        fn describe_counter(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
            self.0
                .lock()
                .unwrap()
                .insert(key.as_str().into(), "counter");
        }
        fn describe_gauge(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
            self.0.lock().unwrap().insert(key.as_str().into(), "gauge");
        }
        fn describe_histogram(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
            self.0
                .lock()
                .unwrap()
                .insert(key.as_str().into(), "histogram");
        }
        fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
            Counter::noop()
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    /// The `k2_…` names in `text`, each with the byte offset where it starts.
    fn k2_names(text: &str) -> Vec<String> {
        let bytes = text.as_bytes();
        let word = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
        let mut out = Vec::new();
        let mut i = 0;
        while let Some(at) = text[i..].find("k2_") {
            let start = i + at;
            let mut end = start + 3;
            while end < bytes.len() && word(bytes[end]) {
                end += 1;
            }
            if start == 0 || !word(bytes[start - 1]) {
                out.push(text[start..end].to_string());
            }
            i = end;
        }
        out
    }

    #[test]
    fn alert_rules_and_the_dashboard_name_only_exported_metrics() {
        let declared = Declared::default();
        metrics::with_local_recorder(&declared, super::describe_metrics);
        let declared = declared.0.into_inner().unwrap();
        assert!(declared.len() > 80, "{declared:?}");
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for file in ["ops/prometheus/rules.yml", "ops/grafana/k2.json"] {
            let text = std::fs::read_to_string(root.join(file)).unwrap();
            let names = k2_names(&text);
            assert!(names.len() > 20, "{file} names few metrics: {names:?}");
            for name in names {
                let histogram_part = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .filter(|base| declared.get(*base) == Some(&"histogram"));
                let known = declared.contains_key(&name) || histogram_part.is_some();
                assert!(
                    known,
                    "{file} names {name}, which K2 does not export (declared: {:?})",
                    declared.keys().collect::<Vec<_>>()
                );
            }
        }
    }

    /// Every query of the dashboard parses as PromQL: each becomes a recording rule (the
    /// dashboard's variables given plain values) that `promtool check rules` reads.
    #[test]
    fn every_dashboard_query_is_valid_promql() {
        let Some(promtool) = k2_testkit::services::service("K2_TEST_PROMTOOL") else {
            return;
        };
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let dashboard: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(root.join("ops/grafana/k2.json")).unwrap(),
        )
        .unwrap();
        let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
        let mut n = 0;
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"]
                    .as_str()
                    .unwrap()
                    .replace("$__rate_interval", "1m")
                    .replace("$instance", ".*");
                n += 1;
                rules.push_str(&format!(
                    "      - record: dashboard_query_{n}\n        expr: {}\n",
                    serde_json::Value::String(expr)
                ));
            }
        }
        assert!(n > 40, "the dashboard has {n} queries");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dashboard.yml");
        std::fs::write(&file, &rules).unwrap();
        let out = std::process::Command::new(promtool)
            .args(["check", "rules"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}\n{rules}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn names_are_found_whole() {
        assert_eq!(
            k2_names("rate(k2_a_total[5m]) / x_k2_b + k2_c_bucket{le=\"1\"}"),
            ["k2_a_total", "k2_c_bucket"]
        );
    }
}
