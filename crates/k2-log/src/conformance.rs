//! One conformance suite for every [`Log`] backend: each check takes a fresh log and
//! asserts behaviour through the trait alone. The embedded backend runs it in this crate's
//! tests; another backend runs the same functions against its own server.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::log::{
    CleanupPolicy, Log, LogConsumer, PartitionOffset, SourceCheckpoint, TopicBatch, TopicSpec,
};
use crate::partitioner::partition_for;

pub fn spec(name: &str, partitions: u32) -> TopicSpec {
    TopicSpec {
        name: name.into(),
        partitions,
        cleanup: CleanupPolicy::Delete,
        retention_ms: None,
    }
}

/// A batch for `topic` of (key, value) records.
pub fn batch<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    topic: &str,
    records: impl IntoIterator<Item = (K, V)>,
) -> TopicBatch {
    let mut batch = TopicBatch::new(topic);
    for (key, value) in records {
        batch.push(key.as_ref(), value.as_ref(), 1_700_000_000_000);
    }
    batch
}

async fn drain<C: LogConsumer>(consumer: &mut C, expected: usize) -> Vec<crate::ConsumedRecord> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while out.len() < expected && tokio::time::Instant::now() < deadline {
        out.extend(
            consumer
                .poll(1000, Duration::from_millis(200))
                .await
                .unwrap(),
        );
    }
    out
}

/// Polls until the consumer says it has read every partition to its end (it may take a
/// fetch or two to look) and returns whether it did; a record read on the way fails.
async fn reads_to_end<C: LogConsumer>(consumer: &mut C) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !consumer.read_to_end() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        let got = consumer.poll(10, Duration::from_millis(50)).await.unwrap();
        let offsets: Vec<u64> = got.iter().map(|r| r.offset).collect();
        assert!(offsets.is_empty(), "read past the end: {offsets:?}");
    }
    true
}

fn all_from_start(topic: &str, partitions: u32) -> Vec<PartitionOffset> {
    (0..partitions)
        .map(|p| PartitionOffset {
            topic: topic.into(),
            partition: p,
            offset: 0,
        })
        .collect()
}

/// Records of one key keep their order; offsets are dense from 0 per partition.
pub async fn ordering_and_offsets<L: Log>(log: &L, ns: &str) {
    let t_order = format!("{ns}t.order");
    log.ensure_topic(&spec(&t_order, 3)).await.unwrap();
    let keys = ["BHP", "RIO", "CBA", "ANZ", "WBC"];
    let records = (0..500).map(|i| (keys[i % keys.len()], format!("{i}")));
    log.produce(vec![batch(&t_order, records)], None)
        .await
        .unwrap();
    let ends = log.end_offsets(&t_order).await.unwrap();
    assert_eq!(ends.iter().sum::<u64>(), 500);
    let mut consumer = log.consumer(all_from_start(&t_order, 3)).unwrap();
    let got = drain(&mut consumer, 500).await;
    assert_eq!(got.len(), 500);
    let mut per_key: BTreeMap<Vec<u8>, Vec<u64>> = BTreeMap::new();
    let mut per_partition: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for r in &got {
        assert_eq!(
            r.partition,
            partition_for(&r.key, 3),
            "key routed by murmur2"
        );
        per_key
            .entry(r.key.clone())
            .or_default()
            .push(String::from_utf8(r.value.clone()).unwrap().parse().unwrap());
        per_partition.entry(r.partition).or_default().push(r.offset);
    }
    for values in per_key.values() {
        assert!(values.windows(2).all(|w| w[0] < w[1]), "per-key order kept");
    }
    for (p, offsets) in per_partition {
        let want: Vec<u64> = (0..ends[p as usize]).collect();
        assert_eq!(offsets, want, "partition {p} offsets are dense from 0");
    }
}

/// A consumer assigned at an offset starts exactly there.
pub async fn resume_from_position<L: Log>(log: &L, ns: &str) {
    let t_resume = format!("{ns}t.resume");
    log.ensure_topic(&spec(&t_resume, 1)).await.unwrap();
    for chunk in 0..4 {
        let records = (0..25).map(|i| ("k", format!("{}", chunk * 25 + i)));
        log.produce(vec![batch(&t_resume, records)], None)
            .await
            .unwrap();
    }
    for start in [0u64, 1, 24, 25, 26, 99, 100] {
        let mut c = log
            .consumer(vec![PartitionOffset {
                topic: t_resume.clone(),
                partition: 0,
                offset: start,
            }])
            .unwrap();
        let got = drain(&mut c, (100 - start) as usize).await;
        let offsets: Vec<u64> = got.iter().map(|r| r.offset).collect();
        assert_eq!(
            offsets,
            (start..100).collect::<Vec<_>>(),
            "resume at {start}"
        );
        assert_eq!(c.positions()[0].offset, 100);
    }
}

/// Polls smaller than a batch cross batch boundaries without gaps or repeats, and a
/// consumer at the end (or assigned beyond it) picks up what is appended later. A consumer
/// says it has read to the end only once it has.
pub async fn small_polls_and_tail<L: Log>(log: &L, ns: &str) {
    let t_tail = format!("{ns}t.tail");
    log.ensure_topic(&spec(&t_tail, 1)).await.unwrap();
    let produce = async |from: usize, n: usize| {
        let records = (from..from + n).map(|i| ("k", format!("{i}")));
        log.produce(vec![batch(&t_tail, records)], None)
            .await
            .unwrap();
    };
    produce(0, 10).await;
    produce(10, 10).await;
    let at = |offset| PartitionOffset {
        topic: t_tail.clone(),
        partition: 0,
        offset,
    };
    let mut from_start = log.consumer(vec![at(3)]).unwrap();
    let mut beyond = log.consumer(vec![at(25)]).unwrap();
    assert!(!from_start.read_to_end(), "nothing read yet");
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen.len() < 17 && tokio::time::Instant::now() < deadline {
        for r in from_start.poll(4, Duration::from_millis(50)).await.unwrap() {
            // Each record's own value, not only its offset: a poll that goes on inside
            // a batch must go on at the right byte too.
            seen.push((r.offset, String::from_utf8(r.value).unwrap()));
        }
        if (1..17).contains(&seen.len()) {
            assert!(!from_start.read_to_end(), "{} of 17 read", seen.len());
        }
    }
    assert_eq!(
        seen,
        (3..20u64).map(|i| (i, i.to_string())).collect::<Vec<_>>(),
        "small polls"
    );
    assert!(reads_to_end(&mut from_start).await, "read to the end");
    assert!(
        beyond
            .poll(10, Duration::from_millis(50))
            .await
            .unwrap()
            .is_empty()
    );
    produce(20, 10).await;
    let tail: Vec<(u64, String)> = drain(&mut from_start, 10)
        .await
        .into_iter()
        .map(|r| (r.offset, String::from_utf8(r.value).unwrap()))
        .collect();
    assert_eq!(
        tail,
        (20..30u64).map(|i| (i, i.to_string())).collect::<Vec<_>>(),
        "appended after the end"
    );
    assert!(reads_to_end(&mut from_start).await, "read to the new end");
    let beyond_got: Vec<u64> = drain(&mut beyond, 5)
        .await
        .iter()
        .map(|r| r.offset)
        .collect();
    assert_eq!(
        beyond_got,
        (25..30).collect::<Vec<_>>(),
        "assigned beyond the end"
    );
    assert!(
        reads_to_end(&mut beyond).await,
        "assigned beyond, read to the end"
    );
}

/// Many partitions, one large produce.
pub async fn many_partitions_large_batch<L: Log>(log: &L, ns: &str) {
    let t_large = format!("{ns}t.large");
    log.ensure_topic(&spec(&t_large, 32)).await.unwrap();
    let records = (0..50_000).map(|i| (format!("SYM{}", i % 300), format!("{i:08}")));
    log.produce(vec![batch(&t_large, records)], None)
        .await
        .unwrap();
    let mut c = log.consumer(all_from_start(&t_large, 32)).unwrap();
    let got = drain(&mut c, 50_000).await;
    assert_eq!(got.len(), 50_000);
    let mut values: Vec<_> = got.into_iter().map(|r| r.value).collect();
    values.sort();
    values.dedup();
    assert_eq!(values.len(), 50_000, "every record exactly once");
}

/// An empty topic yields nothing, promptly; creating twice is fine; partition counts must agree.
pub async fn empty_topic_and_idempotent_create<L: Log>(log: &L, ns: &str) {
    let t_empty = format!("{ns}t.empty");
    let t_missing = format!("{ns}t.missing");
    log.ensure_topic(&spec(&t_empty, 2)).await.unwrap();
    log.ensure_topic(&spec(&t_empty, 2)).await.unwrap();
    assert!(log.ensure_topic(&spec(&t_empty, 3)).await.is_err());
    assert_eq!(log.end_offsets(&t_empty).await.unwrap(), vec![0, 0]);
    let mut c = log.consumer(all_from_start(&t_empty, 2)).unwrap();
    assert!(
        c.poll(10, Duration::from_millis(50))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        reads_to_end(&mut c).await,
        "an empty topic is read to its end"
    );
    assert!(
        log.topics()
            .await
            .unwrap()
            .iter()
            .any(|t| t.name == t_empty)
    );
    assert!(log.end_offsets(&t_missing).await.is_err());
}

/// Group offsets and source checkpoints are stored and read back.
pub async fn group_offsets_and_checkpoints<L: Log>(log: &L, ns: &str) {
    let t_groups = format!("{ns}t.groups");
    let group = format!("{ns}g");
    let source = format!("{ns}file-a");
    log.ensure_topic(&spec(&t_groups, 2)).await.unwrap();
    assert_eq!(
        log.group_offsets(&group, &t_groups).await.unwrap(),
        vec![None, None]
    );
    log.commit_group(
        &group,
        &[PartitionOffset {
            topic: t_groups.clone(),
            partition: 1,
            offset: 7,
        }],
    )
    .await
    .unwrap();
    assert_eq!(
        log.group_offsets(&group, &t_groups).await.unwrap(),
        vec![None, Some(7)]
    );
    assert_eq!(
        log.source_checkpoints(std::slice::from_ref(&source))
            .await
            .unwrap(),
        vec![None]
    );
    let cp = SourceCheckpoint {
        source: source.clone(),
        state: b"42".to_vec(),
    };
    log.produce(vec![batch(&t_groups, [("k", "v")])], Some(cp))
        .await
        .unwrap();
    assert_eq!(
        log.source_checkpoints(std::slice::from_ref(&source))
            .await
            .unwrap(),
        vec![Some(b"42".to_vec())]
    );
    // The latest checkpoint of a source wins; other sources are untouched.
    for (src, state) in [
        (source.clone(), b"43".as_slice()),
        (format!("{ns}file-b"), b"1"),
    ] {
        log.produce(
            Vec::new(),
            Some(SourceCheckpoint {
                source: src,
                state: state.to_vec(),
            }),
        )
        .await
        .unwrap();
    }
    // One call answers many sources, in the order asked.
    assert_eq!(
        log.source_checkpoints(&[
            format!("{ns}file-b"),
            format!("{ns}never-ingested"),
            source.clone(),
        ])
        .await
        .unwrap(),
        vec![Some(b"1".to_vec()), None, Some(b"43".to_vec())]
    );
}

/// Every check above, in one run against one log (topic names prefixed with `ns`).
pub async fn run_all<L: Log>(log: &L, ns: &str) {
    ordering_and_offsets(log, ns).await;
    resume_from_position(log, ns).await;
    small_polls_and_tail(log, ns).await;
    many_partitions_large_batch(log, ns).await;
    empty_topic_and_idempotent_create(log, ns).await;
    group_offsets_and_checkpoints(log, ns).await;
}

/// What one connection wrote, a new connection (or a reopened file) reads in full.
pub async fn survives_reopen<L: Log>(log: L, reopen: impl AsyncFnOnce() -> L, ns: &str) {
    let topic = format!("{ns}t.restart");
    log.ensure_topic(&spec(&topic, 2)).await.unwrap();
    let records = (0..100).map(|i| (format!("k{i}"), format!("{i}")));
    log.produce(vec![batch(&topic, records)], None)
        .await
        .unwrap();
    drop(log);
    let log = reopen().await;
    assert_eq!(
        log.end_offsets(&topic).await.unwrap().iter().sum::<u64>(),
        100
    );
    let mut c = log.consumer(all_from_start(&topic, 2)).unwrap();
    assert_eq!(drain(&mut c, 100).await.len(), 100);
}
