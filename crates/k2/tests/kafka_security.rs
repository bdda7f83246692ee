//! Kafka as production clusters run it: TLS through a real terminator (stunnel) in front
//! of the test broker, with and without a client certificate, and SASL SCRAM against a
//! broker that requires it.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use k2_testkit::services::{Broker, free_port};
use k2_testkit::tls::Terminator;

fn tls_file(name: &str) -> String {
    k2_testkit::tls::dir()
        .join(name)
        .canonicalize()
        .unwrap()
        .display()
        .to_string()
}

/// `k2` on the Kafka backend at `bootstrap`, with `settings` (`log.kafka.…` keys as
/// environment variables) and a short request timeout, so a refusal is reported quickly.
fn on_kafka(data: &std::path::Path, bootstrap: &str, settings: &[(&str, String)]) -> Command {
    let mut cmd = k2(data);
    cmd.env("K2_LOG__BACKEND", "kafka")
        .env("K2_LOG__KAFKA__BOOTSTRAP_SERVERS", bootstrap)
        .env("K2_LOG__KAFKA__REQUEST_TIMEOUT", "5s");
    for (key, value) in settings {
        cmd.env(
            format!("K2_LOG__KAFKA__{}", key.to_ascii_uppercase()),
            value,
        );
    }
    cmd
}

/// A broker in memory behind a TLS terminator (requiring a client certificate when
/// asked), advertising the terminator: every connection of a client goes through TLS.
fn broker_behind_tls(
    dir: &std::path::Path,
    client_certificate: bool,
) -> Option<(Broker, Terminator)> {
    let tls_port = free_port();
    let broker = Broker::advertising(dir, tls_port)?;
    let backend: u16 = broker.bootstrap().rsplit(':').next()?.parse().ok()?;
    let terminator = Terminator::start(tls_port, backend, client_certificate)?;
    Some((broker, terminator))
}

#[test]
fn over_tls_the_sample_lands_exactly_and_an_untrusted_server_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_broker, tls)) = broker_behind_tls(dir.path(), false) else {
        return;
    };
    let bootstrap = format!("127.0.0.1:{}", tls.port);
    let data = dir.path().join("data");
    let trusted = [
        ("security_protocol", "ssl".to_string()),
        ("ssl_ca_file", tls_file("ca.pem")),
    ];
    run_ok(
        on_kafka(&data, &bootstrap, &trusted)
            .arg("ingest")
            .arg("asx")
            .arg(sample()),
    );
    let landed = on_kafka(&data, &bootstrap, &trusted)
        .args(["consume", "--until-caught-up"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&landed.stderr);
    assert!(landed.status.success(), "{said}");
    assert!(
        said.contains(&format!("{} rows committed", TRADES + QUOTES + 4)),
        "{said}"
    );
    let topics = run_ok(on_kafka(&data, &bootstrap, &trusted).args(["topics", "list"]));
    assert!(
        topics.contains("market.equities.trades.asx") && topics.contains(&TRADES.to_string()),
        "{topics}"
    );
    // Without the private authority the server's certificate is not trusted.
    let refused = run_err(
        on_kafka(&data, &bootstrap, &[("security_protocol", "ssl".into())])
            .args(["topics", "list"]),
    );
    assert!(refused.contains("certificate verify failed"), "{refused}");
    // Plaintext to a TLS port is no Kafka at all.
    let refused = run_err(on_kafka(&data, &bootstrap, &[]).args(["topics", "list"]));
    assert!(refused.contains("no Kafka broker answered"), "{refused}");
}

#[test]
fn a_terminator_requiring_a_client_certificate_admits_k2_with_one() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_broker, tls)) = broker_behind_tls(dir.path(), true) else {
        return;
    };
    let bootstrap = format!("127.0.0.1:{}", tls.port);
    let data = dir.path().join("data");
    let mut with_certificate = vec![
        ("security_protocol", "ssl".to_string()),
        ("ssl_ca_file", tls_file("ca.pem")),
    ];
    let refused = run_err(on_kafka(&data, &bootstrap, &with_certificate).args(["topics", "list"]));
    assert!(refused.contains("no Kafka broker answered"), "{refused}");
    with_certificate.extend([
        ("ssl_certificate_file", tls_file("client.pem")),
        ("ssl_key_file", tls_file("client.key")),
    ]);
    run_ok(
        on_kafka(&data, &bootstrap, &with_certificate)
            .arg("ingest")
            .arg("asx")
            .arg(sample()),
    );
    let topics = run_ok(on_kafka(&data, &bootstrap, &with_certificate).args(["topics", "list"]));
    assert!(topics.contains(&TRADES.to_string()), "{topics}");
}

#[test]
fn scram_sha_256_and_512_authenticate_and_a_wrong_password_or_mechanism_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let password = "k2-scram-Pa55word";
    let Some(broker) = Broker::with_users(dir.path(), &[("k2-writer", password)]) else {
        return;
    };
    let data = dir.path().join("data");
    let secret_file = dir.path().join("kafka-password");
    std::fs::write(&secret_file, format!("{password}\n")).unwrap();
    for (mechanism, reference) in [
        ("SCRAM-SHA-256", format!("file:{}", secret_file.display())),
        ("SCRAM-SHA-512", "env:K2_TEST_SCRAM_PASSWORD".to_string()),
    ] {
        let settings = [
            ("security_protocol", "sasl_plaintext".to_string()),
            ("sasl_mechanism", mechanism.to_string()),
            ("sasl_username", "k2-writer".to_string()),
            ("sasl_password", reference),
        ];
        let out = on_kafka(&data, &broker.bootstrap(), &settings)
            .env("K2_TEST_SCRAM_PASSWORD", password)
            .env("K2_LOG", "debug")
            .args(["topics", "create"])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{mechanism}: {said}");
        assert!(
            !said.contains(password),
            "{mechanism}: the password reached the log"
        );
    }
    let wrong = [
        ("security_protocol", "sasl_plaintext".to_string()),
        ("sasl_mechanism", "SCRAM-SHA-512".to_string()),
        ("sasl_username", "k2-writer".to_string()),
        ("sasl_password", "not-the-password".to_string()),
    ];
    let refused = run_err(on_kafka(&data, &broker.bootstrap(), &wrong).args(["topics", "list"]));
    assert!(
        refused.contains("SASL SCRAM authentication failed"),
        "{refused}"
    );
    assert!(!refused.contains("not-the-password"), "{refused}");
    // The broker offers SCRAM only: PLAIN reaches librdkafka and is refused by name.
    let plain = [
        ("security_protocol", "sasl_plaintext".to_string()),
        ("sasl_mechanism", "PLAIN".to_string()),
        ("sasl_username", "k2-writer".to_string()),
        ("sasl_password", password.to_string()),
    ];
    let refused = run_err(on_kafka(&data, &broker.bootstrap(), &plain).args(["topics", "list"]));
    assert!(
        refused.contains("SASL PLAIN mechanism handshake failed"),
        "{refused}"
    );
    assert!(!refused.contains(password), "{refused}");
}

#[test]
fn kafka_security_settings_that_cannot_work_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data: PathBuf = dir.path().join("data");
    let cases: [(&[(&str, &str)], &str); 4] = [
        (
            &[
                ("ssl_ca_file", "/nonexistent/ca.pem"),
                ("security_protocol", "ssl"),
            ],
            "log.kafka.ssl_ca_file: /nonexistent/ca.pem is not a readable file",
        ),
        (
            &[("ssl_ca_file", "/etc/hostname")],
            "log.kafka.ssl_ca_file: applies to TLS",
        ),
        (
            &[("sasl_username", "u"), ("sasl_password", "p")],
            "sasl_username and sasl_password apply to SASL",
        ),
        (
            &[("security_protocol", "sasl_ssl")],
            "SASL needs log.kafka.sasl_username and log.kafka.sasl_password",
        ),
    ];
    for (settings, want) in cases {
        let settings: Vec<(&str, String)> =
            settings.iter().map(|(k, v)| (*k, v.to_string())).collect();
        let said = run_err(on_kafka(&data, "127.0.0.1:9", &settings).args(["topics", "list"]));
        assert!(said.contains(want), "{settings:?}: {said}");
    }
}
