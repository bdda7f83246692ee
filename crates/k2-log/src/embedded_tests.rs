//! The conformance suite and restart behaviour against the embedded backend.

use std::time::Duration;

use crate::conformance::{self, record, spec};
use crate::{EmbeddedLog, Log, LogConsumer, PartitionOffset, TopicBatch};

fn fresh() -> (tempfile::TempDir, EmbeddedLog) {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(&dir.path().join("log.redb")).unwrap();
    (dir, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    let (_d, log) = fresh();
    conformance::ordering_and_offsets(&log).await;
    conformance::resume_from_position(&log).await;
    conformance::small_polls_and_tail(&log).await;
    conformance::many_partitions_large_batch(&log).await;
    conformance::empty_topic_and_idempotent_create(&log).await;
    conformance::group_offsets_and_checkpoints(&log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    {
        let log = EmbeddedLog::open(&path).unwrap();
        log.ensure_topic(&spec("t.restart", 2)).await.unwrap();
        let records = (0..100)
            .map(|i| record(&format!("k{i}"), format!("{i}")))
            .collect();
        log.produce(
            vec![TopicBatch {
                topic: "t.restart".into(),
                records,
            }],
            None,
        )
        .await
        .unwrap();
    }
    let log = EmbeddedLog::open(&path).unwrap();
    assert_eq!(
        log.end_offsets("t.restart")
            .await
            .unwrap()
            .iter()
            .sum::<u64>(),
        100
    );
    let assignment = (0..2)
        .map(|p| PartitionOffset {
            topic: "t.restart".into(),
            partition: p,
            offset: 0,
        })
        .collect();
    let mut c = log.consumer(assignment).unwrap();
    let mut n = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while n < 100 && tokio::time::Instant::now() < deadline {
        n += c
            .poll(1000, Duration::from_millis(100))
            .await
            .unwrap()
            .len();
    }
    assert_eq!(n, 100);
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
            .produce(
                vec![TopicBatch {
                    topic: "t.wake".into(),
                    records: vec![record("k", "v".into())],
                }],
                None,
            )
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
