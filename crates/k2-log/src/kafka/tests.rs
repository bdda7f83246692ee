//! The conformance suite and fault behaviour against a real Kafka-protocol broker at
//! `K2_TEST_KAFKA_BOOTSTRAP` (scripts/test starts one on loopback). Topic names carry a
//! per-test prefix, so runs against one broker never see each other's records.

use std::time::Duration;

use crate::conformance::{self, batch, spec};
use crate::{KafkaLog, KafkaOptions, LocalSchemas, Log, LogError, Registry};

fn bootstrap() -> Option<String> {
    k2_testkit::services::service("K2_TEST_KAFKA_BOOTSTRAP")
}

fn namespace() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("k2test-{}-{nanos}-", std::process::id())
}

async fn connect(bootstrap: &str, dir: &std::path::Path) -> KafkaLog {
    let options = KafkaOptions {
        bootstrap_servers: bootstrap.to_string(),
        linger: std::time::Duration::from_millis(1),
        ..KafkaOptions::default()
    };
    KafkaLog::connect(
        options,
        Registry::Local(LocalSchemas::open(&dir.join("registry.redb")).unwrap()),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    let Some(bootstrap) = bootstrap() else { return };
    let dir = tempfile::tempdir().unwrap();
    let log = connect(&bootstrap, dir.path()).await;
    conformance::run_all(&log, &namespace()).await;
    assert_eq!(
        log.close(Duration::from_secs(10)),
        0,
        "nothing left undelivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_reconnect() {
    let Some(bootstrap) = bootstrap() else { return };
    let dir = tempfile::tempdir().unwrap();
    let log = connect(&bootstrap, dir.path()).await;
    let again = async || connect(&bootstrap, dir.path()).await;
    conformance::survives_reopen(log, again, &namespace()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_at_start_names_the_servers() {
    let dir = tempfile::tempdir().unwrap();
    // Port 1 on loopback: nothing listens there.
    let options = KafkaOptions {
        bootstrap_servers: "127.0.0.1:1".into(),
        request_timeout: std::time::Duration::from_millis(1_500),
        ..KafkaOptions::default()
    };
    let schemas = Registry::Local(LocalSchemas::open(&dir.path().join("registry.redb")).unwrap());
    let Err(e) = KafkaLog::connect(options, schemas).await else {
        panic!("connected to nothing");
    };
    let text = e.to_string();
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(
        e.is_retryable(),
        "a broker that is down may come back: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producing_to_a_missing_topic_is_refused() {
    let Some(bootstrap) = bootstrap() else { return };
    let dir = tempfile::tempdir().unwrap();
    let log = connect(&bootstrap, dir.path()).await;
    let topic = format!("{}missing", namespace());
    let err = log
        .produce(vec![batch(&topic, [("k", "v")])], None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, LogError::UnknownTopic(ref t) if *t == topic),
        "{err}"
    );
    // Partition counts are checked against the broker's.
    let t = format!("{}parts", namespace());
    log.ensure_topic(&spec(&t, 2)).await.unwrap();
    let err = log.ensure_topic(&spec(&t, 4)).await.unwrap_err();
    assert!(
        matches!(
            err,
            LogError::PartitionMismatch {
                existing: 2,
                requested: 4,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_published_to_their_topic() {
    let Some(bootstrap) = bootstrap() else { return };
    let dir = tempfile::tempdir().unwrap();
    let log = connect(&bootstrap, dir.path()).await;
    let source = format!("{}trades/7078.csv:42", namespace());
    let letter = crate::DeadLetter {
        stage: "ingest.asx".into(),
        source: source.clone(),
        kind: "negative_price".into(),
        reason: "price -1 is not positive".into(),
        raw: b"2014-03-10,-1,100".to_vec(),
        rejected_at_us: 1_700_000_000_000_000,
    };
    log.publish_dead_letters(std::slice::from_ref(&letter))
        .await
        .unwrap();
    // Read the topic from its start: the letter is there, keyed by its source, as JSON.
    let end = log
        .end_offsets(crate::kafka::DEAD_LETTER_TOPIC)
        .await
        .unwrap()[0];
    let mut c = log
        .consumer(vec![crate::PartitionOffset {
            topic: crate::kafka::DEAD_LETTER_TOPIC.into(),
            partition: 0,
            offset: 0,
        }])
        .unwrap();
    let mut found = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut read = 0;
    while read < end && tokio::time::Instant::now() < deadline {
        for r in crate::LogConsumer::poll(&mut c, 1000, Duration::from_millis(200))
            .await
            .unwrap()
        {
            read = r.offset + 1;
            if r.key == source.as_bytes() {
                found = Some(r);
            }
        }
    }
    let found = found.expect("the letter is on the dead-letter topic");
    let back: crate::DeadLetter = serde_json::from_slice(&found.value).unwrap();
    assert_eq!(back, letter);
    // Not a data topic: the lake writer never sees it.
    assert!(
        !log.topics()
            .await
            .unwrap()
            .iter()
            .any(|t| t.name == crate::kafka::DEAD_LETTER_TOPIC)
    );
}
