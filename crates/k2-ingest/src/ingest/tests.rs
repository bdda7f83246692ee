//! `ingest asx` against the bundled sample and against damaged copies of it.

use std::path::Path;
use std::time::Duration;

use k2_log::{DeadLetterStore, EmbeddedLog, Log, LogConsumer, PartitionOffset};

use k2_testkit::sample::{copy_dir, dir as sample};

use crate::{IngestOptions, IngestSummary, ingest_asx};

struct Env {
    _dir: tempfile::TempDir,
    log: EmbeddedLog,
    dlq: DeadLetterStore,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(&dir.path().join("log.redb")).unwrap();
    let dlq = DeadLetterStore::open(&dir.path().join("dlq.redb"), 100_000).unwrap();
    Env {
        _dir: dir,
        log,
        dlq,
    }
}

async fn run(env: &Env, dir: &Path) -> IngestSummary {
    let options = IngestOptions {
        chunk_rows: 7_000,
        partitions: 3,
    };
    ingest_asx(&env.log, &env.dlq, dir, &options, &mut |_| {})
        .await
        .unwrap()
}

async fn count(log: &EmbeddedLog, topic: &str) -> u64 {
    log.end_offsets(topic).await.unwrap().iter().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_ingests_exactly_once() {
    let env = env();
    let first = run(&env, &sample()).await;
    assert_eq!(first.dead_lettered(), 0);
    assert!(
        first
            .not_ingested
            .iter()
            .any(|n| n.contains("dividends.csv")),
        "skipped files are named"
    );
    assert_eq!(
        count(&env.log, "market.equities.trades.asx").await,
        91_631 + 232 + 11
    );
    assert_eq!(
        count(&env.log, "market.equities.quotes.asx").await,
        77_849 + 549 + 60
    );
    assert_eq!(
        count(&env.log, "market.equities.reference_data.asx").await,
        4
    );

    let second = run(&env, &sample()).await;
    assert_eq!(second.produced(), 0, "re-ingesting appends nothing");
    assert_eq!(count(&env.log, "market.equities.trades.asx").await, 91_874);

    // Every record in the log decodes and is an ASX trade in order per symbol.
    let ends = env
        .log
        .end_offsets("market.equities.trades.asx")
        .await
        .unwrap();
    let assignment = (0..ends.len() as u32)
        .map(|p| PartitionOffset {
            topic: "market.equities.trades.asx".into(),
            partition: p,
            offset: 0,
        })
        .collect();
    let mut consumer = env.log.consumer(assignment).unwrap();
    let mut last_seq = std::collections::HashMap::new();
    let mut n = 0;
    while n < 91_874 {
        let batch = consumer.poll(10_000, Duration::from_secs(5)).await.unwrap();
        assert!(!batch.is_empty());
        for r in batch {
            let k2_model::MarketRecord::Trade(t) =
                k2_model::avro::decode_datum(k2_model::DataType::Trades, &r.value[5..]).unwrap()
            else {
                panic!("not a trade")
            };
            let seq = t.source_sequence.unwrap();
            let prev = last_seq.insert(t.symbol.clone(), seq).unwrap_or(0);
            assert!(seq > prev, "{} sequence goes forward", t.symbol);
            n += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_rows_go_to_the_dead_letter_store_and_the_rest_lands() {
    let env = env();
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&sample(), tmp.path());
    let path = tmp.path().join("trades/7181.csv");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("03/14/2014,15:00:00.000,abc,100,0,,\r\n");
    text.push_str("03/14/2014,15:00:01.000,0.7,100,0\r\n");
    text.push_str("03/14/2014,15:00:02.000,-0.7,100,0,,\r\n");
    text.push_str("02/30/2014,15:00:03.000,0.7,100,0,,\r\n");
    text.push_str("03/14/2014,15:00:04.000,0.7,100,0,,\r\n");
    std::fs::write(&path, text).unwrap();
    std::fs::write(
        tmp.path().join("trades/9999.csv"),
        "03/14/2014,15:00:04.000,0.7,100,0,,\r\n",
    )
    .unwrap();

    let summary = run(&env, tmp.path()).await;
    assert_eq!(summary.dead_lettered(), 4);
    assert_eq!(
        count(&env.log, "market.equities.trades.asx").await,
        91_631 + 232 + 11 + 1
    );
    let failed: Vec<_> = summary.failed_files().map(|f| f.file.clone()).collect();
    assert_eq!(
        failed,
        ["trades/9999.csv"],
        "unknown company is reported, not dropped silently"
    );

    let letters = env.dlq.list(0, 10).unwrap();
    let kinds: Vec<_> = letters
        .iter()
        .map(|(_, l)| (l.source.as_str(), l.kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("trades/7181.csv:233", "number"),
            ("trades/7181.csv:234", "column_count"),
            ("trades/7181.csv:235", "non_positive_price"),
            ("trades/7181.csv:236", "date"),
        ]
    );
    assert_eq!(letters[0].1.raw, b"03/14/2014,15:00:00.000,abc,100,0,,");

    // Appending to a file resumes after what was ingested; DLQ entries are not repeated.
    let mut more = std::fs::read_to_string(&path).unwrap();
    more.push_str("03/14/2014,15:00:05.000,0.7,50,0,,\r\n");
    std::fs::write(&path, more).unwrap();
    let again = run(&env, tmp.path()).await;
    assert_eq!(again.produced(), 1);
    assert_eq!(env.dlq.len().unwrap(), 4);

    // Rewriting an ingested part is refused with a clear error.
    std::fs::write(&path, "03/14/2014,15:00:05.000,0.9,50,0,,\r\n").unwrap();
    let changed = run(&env, tmp.path()).await;
    let err = changed
        .failed_files()
        .find(|f| f.file == "trades/7181.csv")
        .unwrap()
        .error
        .clone()
        .unwrap();
    assert!(err.contains("shorter") || err.contains("changed"), "{err}");
}
