//! The conformance suite and restart behaviour against the embedded backend.

use std::time::Duration;

use crate::conformance::{self, batch, spec};
use crate::{EmbeddedLog, Log, LogConsumer, PartitionOffset};

fn fresh() -> (tempfile::TempDir, EmbeddedLog) {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(&dir.path().join("log.redb")).unwrap();
    (dir, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    let (_d, log) = fresh();
    conformance::run_all(&log, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    let log = EmbeddedLog::open(&path).unwrap();
    conformance::survives_reopen(log, async || EmbeddedLog::open(&path).unwrap(), "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_consumer_wakes_on_append() {
    let (_d, log) = fresh();
    log.ensure_topic(&spec("t.wake", 1)).await.unwrap();
    let mut c = log
        .consumer(vec![PartitionOffset {
            topic: "t.wake".into(),
            partition: 0,
            offset: 0,
        }])
        .unwrap();
    let producer = log.clone();
    let handle = tokio::spawn(async move {
        tokio::task::yield_now().await;
        producer
            .produce(vec![batch("t.wake", [("k", "v")])], None)
            .await
    });
    let got = c.poll(10, Duration::from_secs(10)).await.unwrap();
    handle.await.unwrap().unwrap();
    let got = if got.is_empty() {
        c.poll(10, Duration::from_secs(10)).await.unwrap()
    } else {
        got
    };
    assert_eq!(got.len(), 1);
}
