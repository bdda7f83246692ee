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

mod retention {
    use super::*;
    use crate::embedded::Retention;
    use crate::{LogConsumer, TopicBatch};

    const DAY_MS: i64 = 86_400_000;
    const NOW: i64 = 1_800_000_000_000;

    /// `n` appends of 100 records of 1 KB to partition 0 of `t.ret`, the i-th produced
    /// `i` hours after `start_ms`.
    async fn append_hours(log: &EmbeddedLog, n: u32, start_ms: i64) {
        let value = vec![7u8; 1000];
        for i in 0..n {
            let mut b = TopicBatch::new("t.ret");
            for _ in 0..100 {
                b.push(b"k", &value, start_ms + i64::from(i) * 3_600_000);
            }
            log.produce(vec![b], None).await.unwrap();
        }
    }

    async fn committed(log: &EmbeddedLog, offset: u64) {
        log.commit_group(
            "writer",
            &[PartitionOffset {
                topic: "t.ret".into(),
                partition: 0,
                offset,
            }],
        )
        .await
        .unwrap();
    }

    async fn first_offset(log: &EmbeddedLog) -> u64 {
        let mut c = log
            .consumer(vec![PartitionOffset {
                topic: "t.ret".into(),
                partition: 0,
                offset: 0,
            }])
            .unwrap();
        c.poll(1, Duration::from_secs(5)).await.unwrap()[0].offset
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_what_every_group_committed_goes_and_the_end_never_moves() {
        let (_d, log) = fresh();
        log.ensure_topic(&spec("t.ret", 1)).await.unwrap();
        append_hours(&log, 48, NOW - 3 * DAY_MS).await;
        let day = Retention {
            age: Duration::from_secs(86_400),
            bytes: 0,
        };
        // No group has committed: nothing goes, however old.
        assert_eq!(log.trim(day, NOW).unwrap().records, 0);
        // A group committed half: the old half goes, no further.
        committed(&log, 2_400).await;
        let t = log.trim(day, NOW).unwrap();
        assert_eq!(t.records, 2_400, "{t:?}");
        assert_eq!(first_offset(&log).await, 2_400);
        assert_eq!(log.end_offsets("t.ret").await.unwrap(), vec![4_800]);
        // A second group behind the first holds the rest back.
        log.commit_group(
            "other",
            &[PartitionOffset {
                topic: "t.ret".into(),
                partition: 0,
                offset: 2_400,
            }],
        )
        .await
        .unwrap();
        committed(&log, 4_800).await;
        assert_eq!(log.trim(day, NOW).unwrap().records, 0);
        // Everything committed by both and old: all but the last batch goes, and the
        // next append continues the offsets.
        log.commit_group(
            "other",
            &[PartitionOffset {
                topic: "t.ret".into(),
                partition: 0,
                offset: 4_800,
            }],
        )
        .await
        .unwrap();
        let t = log.trim(day, NOW + 10 * DAY_MS).unwrap();
        assert_eq!(t.records, 2_300, "{t:?}");
        assert_eq!(first_offset(&log).await, 4_700);
        append_hours(&log, 1, NOW).await;
        assert_eq!(log.end_offsets("t.ret").await.unwrap(), vec![4_900]);
        assert_eq!(t.oldest_ms, Some(NOW - 3 * DAY_MS + 47 * 3_600_000));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_byte_bound_keeps_the_log_and_its_file_bounded() {
        let (_d, log) = fresh();
        log.ensure_topic(&spec("t.ret", 1)).await.unwrap();
        let bound = Retention {
            age: Duration::ZERO,
            bytes: 2 << 20,
        };
        let mut end = 0;
        let mut sizes = Vec::new();
        for round in 0..12 {
            append_hours(&log, 10, NOW + round * DAY_MS).await;
            end += 1_000;
            committed(&log, end).await;
            let t = log.trim(bound, NOW + round * DAY_MS).unwrap();
            assert!(t.held_bytes <= 2 << 20, "{t:?}");
            sizes.push(log.file_bytes());
        }
        // Freed pages are reused: the file stops growing.
        assert!(sizes[11] <= sizes[4] + (1 << 20), "{sizes:?}");
        assert_eq!(log.end_offsets("t.ret").await.unwrap(), vec![12_000]);
    }
}
