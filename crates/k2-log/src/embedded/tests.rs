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

/// An append larger than a stored chunk is stored as several, at consecutive offsets: a
/// consumer starting inside one of them, and the next append, see no seam.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_append_is_stored_in_chunks_without_a_seam() {
    let (_d, log) = fresh();
    log.ensure_topic(&spec("t.chunks", 1)).await.unwrap();
    let value = |i: usize| format!("{i:0>200}");
    let produce = async |range: std::ops::Range<usize>| {
        let records = range.map(|i| ("k", value(i)));
        log.produce(vec![batch("t.chunks", records)], None)
            .await
            .unwrap();
    };
    // About 650 KB: five or six chunks.
    produce(0..3000).await;
    produce(3000..3010).await;
    let mut c = log
        .consumer(vec![PartitionOffset {
            topic: "t.chunks".into(),
            partition: 0,
            offset: 1234,
        }])
        .unwrap();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen.len() < 3010 - 1234 && tokio::time::Instant::now() < deadline {
        for r in c.poll(500, Duration::from_millis(100)).await.unwrap() {
            seen.push((r.offset, String::from_utf8(r.value).unwrap()));
        }
    }
    let expected: Vec<(u64, String)> = (1234..3010).map(|i| (i as u64, value(i))).collect();
    assert_eq!(seen, expected);
}
