//! Dedup and sequence tracking: replays of the log change nothing, sequence state
//! survives restarts (in process or in Redis), dead letters replay through today's
//! parser, and two writers sharing dedup in Redis store each record once.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_line_shows_as_a_sequence_gap() {
    let l = lake().await;
    let dir = bhp_only_dir();
    // Line 3 is malformed (dead-lettered): the lake holds lines 1, 2, 4, 5.
    std::fs::write(
        dir.path().join("trades/7078.csv"),
        "03/10/2014,10:00:00.000,36.50,100,3,X,\r\n\
         03/10/2014,10:00:01.000,36.51,100,3,X,\r\n\
         03/10/2014,10:00:02.000,abc,100,3,X,\r\n\
         03/10/2014,10:00:03.000,36.52,100,3,X,\r\n\
         03/10/2014,10:00:04.000,36.53,100,3,X,\r\n",
    )
    .unwrap();
    k2_ingest::ingest_asx(&l.log, &l.dlq, dir.path(), &Default::default(), &mut |_| {})
        .await
        .unwrap();
    let summary = write_all(&l, 1_000).await;
    assert_eq!(
        summary.sequence_events,
        BTreeMap::from([("gap", 1), ("in_order", 3)]),
        "{summary:?}"
    );
    assert_eq!(summary.sequence_missing, 1);
}

/// Appends the first `prefix[p]` records of every partition of every topic to the log
/// again, byte for byte (a producer retrying, a source replayed); returns how many.
async fn replay_prefix(log: &EmbeddedLog, prefix: &[u64]) -> u64 {
    use k2_log::{Log, LogConsumer, PartitionOffset, TopicBatch};
    let mut again = 0;
    for spec in log.topics().await.unwrap() {
        let ends = log.end_offsets(&spec.name).await.unwrap();
        for (p, &end) in ends.iter().enumerate() {
            let want = prefix[p % prefix.len()].min(end);
            if want == 0 {
                continue;
            }
            let mut consumer = log
                .consumer(vec![PartitionOffset {
                    topic: spec.name.clone(),
                    partition: p as u32,
                    offset: 0,
                }])
                .unwrap();
            let mut records = TopicBatch::new(spec.name.as_str());
            while (records.len() as u64) < want {
                for r in consumer
                    .poll((want as usize) - records.len(), Duration::from_millis(100))
                    .await
                    .unwrap()
                {
                    records.push(&r.key, &r.value, r.timestamp_ms);
                }
            }
            again += records.len() as u64;
            log.produce(vec![records], None).await.unwrap();
        }
    }
    again
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_log_prefix_leaves_the_lake_unchanged() {
    let l = lake().await;
    ingest_sample(&l).await;
    let first = write_all(&l, 40_000).await;
    let before = stored_ids(&l).await;
    assert_eq!(before[&LakeTable::Trades].len(), 91_874);

    // A later writer run (fresh process state): the duplicates are recognised from the
    // ids reloaded from the lake, and never reach the sequence tracker.
    let again = replay_prefix(&l.log, &[5_000]).await;
    assert!(again > 1_000, "{again}");
    let second = write_all(&l, 40_000).await;
    assert_eq!(second.duplicates_dropped, again, "{second:?}");
    assert_eq!(second.commits, 0);
    assert!(second.sequence_events.is_empty(), "{second:?}");
    assert_accounts(&second);
    assert_eq!(stored_ids(&l).await, before);
    assert_eq!(
        first.dead_lettered,
        second.dead_lettered + first.dead_lettered
    );

    // A batch of nothing but duplicates commits no snapshot (Iceberg needs data files),
    // so the next run reads those positions again and drops them again, with new ones.
    let third_again = replay_prefix(&l.log, &[10]).await;
    let third = write_all(&l, 40_000).await;
    assert_eq!(third.duplicates_dropped, again + third_again);
    assert_accounts(&third);
    assert_eq!(stored_ids(&l).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_state_survives_a_restart() {
    sequence_state_survives_a_restart_with(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_state_in_redis_survives_a_restart() {
    if let Some(redis) = test_redis() {
        sequence_state_survives_a_restart_with(Some(redis)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_lands_exactly_with_sequence_state_in_redis() {
    let Some(redis) = test_redis() else { return };
    let l = lake().await;
    ingest_sample(&l).await;
    let mut options = WriterOptions {
        max_rows: 40_000,
        ..Default::default()
    };
    options.integrity.sequence_redis = Some(redis.clone());
    let summary = write_with(&l, options).await;
    assert_eq!(
        summary.sequence_events,
        BTreeMap::from([("in_order", 91_874 + 78_458)]),
        "{summary:?}"
    );
    assert_accounts(&summary);
    // The streams' ledgers are in Redis, readable by any writer.
    let mut shared = k2_lake::integrity::shared_sequence::RedisSequenceTracker::connect(
        &redis,
        "trades",
        Default::default(),
    )
    .await
    .unwrap();
    let (stats, gaps) = shared.stream("ASX", "BHP").await.unwrap().unwrap();
    assert_eq!((stats.total, stats.in_order), (91_631, 91_631));
    assert!(gaps.is_empty());
}

async fn sequence_state_survives_a_restart_with(redis: Option<k2_lake::RedisTarget>) {
    let l = lake().await;
    let dir = bhp_only_dir();
    let file = dir.path().join("trades/7078.csv");
    let line = |sec: u32, price: &str| format!("03/10/2014,10:00:0{sec}.000,{price},100,3,X,\r\n");
    std::fs::write(
        &file,
        [line(0, "36.50"), line(1, "36.51"), line(2, "36.52")].concat(),
    )
    .unwrap();
    k2_ingest::ingest_asx(&l.log, &l.dlq, dir.path(), &Default::default(), &mut |_| {})
        .await
        .unwrap();
    let mut options = WriterOptions {
        max_rows: 1_000,
        ..Default::default()
    };
    options.integrity.sequence_redis = redis;
    let first = write_with(&l, options.clone()).await;
    assert_eq!(first.sequence_events, BTreeMap::from([("in_order", 3)]));

    // The file grows by a bad line (dead-lettered) and a good one. The restarted writer
    // knows the stream stopped at line 3, so line 5 is a gap of one, not a fresh start.
    let mut grown = std::fs::read_to_string(&file).unwrap();
    grown.push_str(&line(3, "abc"));
    grown.push_str(&line(4, "36.54"));
    std::fs::write(&file, grown).unwrap();
    k2_ingest::ingest_asx(&l.log, &l.dlq, dir.path(), &Default::default(), &mut |_| {})
        .await
        .unwrap();
    let second = write_with(&l, options).await;
    assert_eq!(
        second.sequence_events,
        BTreeMap::from([("gap", 1)]),
        "{second:?}"
    );
    assert_eq!(second.sequence_missing, 1);
    // The state of the newest commits is kept (five at most): both of this table's.
    let states: Vec<_> = std::fs::read_dir(l._dir.path().join("state/trades"))
        .unwrap()
        .collect();
    assert_eq!(states.len(), 2);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 8, ..Default::default() })]
    /// Whatever prefix of each partition is replayed, and wherever the writer is
    /// restarted, the lake ends up holding each record exactly once.
    #[test]
    fn replaying_any_prefix_twice_changes_nothing(
        prefix in proptest::collection::vec(0u64..400, 1..5),
        batch_rows in 50usize..700,
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let l = lake().await;
            let data = tempfile::tempdir().unwrap();
            k2_ingest::synthetic::write_asx_trades(data.path(), 3, 900, 7).unwrap();
            k2_ingest::ingest_asx(&l.log, &l.dlq, data.path(), &Default::default(), &mut |_| {})
                .await
                .unwrap();
            let first = write_all(&l, batch_rows).await;
            let before = stored_ids(&l).await;
            assert_eq!(before[&LakeTable::Trades].len(), 900);
            let again = replay_prefix(&l.log, &prefix).await;
            let second = write_all(&l, batch_rows).await;
            assert_eq!(second.duplicates_dropped, again);
            assert_accounts(&first);
            assert_accounts(&second);
            assert_eq!(stored_ids(&l).await, before);
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_replay_through_the_current_parser_and_decoder() {
    use k2_log::{DeadLetter, LAKE_DECODE_STAGE, Log, SchemaStore, TopicBatch};
    let l = lake().await;
    let dir = bhp_only_dir();
    std::fs::write(
        dir.path().join("trades/7078.csv"),
        "03/10/2014,10:00:00.000,36.50,100,3,X,\r\n\
         03/10/2014,10:00:01.000,abc,100,3,X,\r\n",
    )
    .unwrap();
    k2_ingest::ingest_asx(&l.log, &l.dlq, dir.path(), &Default::default(), &mut |_| {})
        .await
        .unwrap();
    let topic = "market.equities.trades.asx";
    // A payload that is not Avro at all: the writer dead-letters it with its position.
    let mut bad = TopicBatch::new(topic);
    bad.push(b"BHP", b"not avro", 0);
    l.log.produce(vec![bad], None).await.unwrap();
    let first = write_all(&l, 1_000).await;
    assert_eq!(first.dead_lettered, 1);
    assert_accounts(&first);
    // Two letters an older K2 rejected wrongly (as if its parser and decoder had bugs that
    // are fixed now): a valid line, and a valid payload.
    let now = chrono::Utc::now().timestamp_micros();
    let valid_line = "03/10/2014,10:00:05.000,36.55,300,3,X,";
    let company = k2_ingest::asx::Company {
        company_id: "7078".into(),
        symbol: "BHP".into(),
        name: Default::default(),
        isin: Default::default(),
        start_date: Default::default(),
        end_date: Default::default(),
    };
    let record = k2_ingest::asx::parse_trade(
        "03/10/2014,10:00:06.000,36.56,400,3,X,",
        &k2_ingest::asx::RowSource {
            company: &company,
            line: 40,
            receive_us: now,
        },
        &mut k2_ingest::asx::LocalClock::new(),
    )
    .unwrap();
    let schema_id = l
        .log
        .register(
            "market.equities.trades.asx-value",
            k2_model::avro::schema_for(k2_model::DataType::Trades),
        )
        .await
        .unwrap();
    let mut payload = Vec::new();
    k2_model::avro::encode(&record, schema_id, &mut payload);
    let letter = |stage: &str, source: &str, raw: Vec<u8>| DeadLetter {
        stage: stage.into(),
        source: source.into(),
        kind: "number".into(),
        reason: "rejected by an older parser".into(),
        raw,
        rejected_at_us: now,
    };
    l.dlq
        .append(&[
            letter(
                "ingest.asx",
                "trades/7078.csv:5",
                valid_line.as_bytes().to_vec(),
            ),
            letter(LAKE_DECODE_STAGE, &format!("{topic}/0@999"), payload),
        ])
        .unwrap();
    assert_eq!(l.dlq.len().unwrap(), 4);

    let report = k2_ingest::replay_dead_letters(&l.log, &l.dlq, 100)
        .await
        .unwrap();
    assert_eq!(
        (report.examined, report.replayed, report.still_failing),
        (4, 2, 2),
        "{report:?}"
    );
    assert_eq!(report.appended[topic], 2);
    let left: Vec<_> = l
        .dlq
        .list(0, 10)
        .unwrap()
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    assert_eq!(left.len(), 2);
    assert!(
        left.iter()
            .any(|d| d.source == "trades/7078.csv:2" && d.kind == "number")
    );
    assert!(
        left.iter()
            .any(|d| d.stage == LAKE_DECODE_STAGE && d.kind == "framing")
    );

    // The writer lands the two records; the lake holds lines 1, 5 and 40 of the file.
    let second = write_all(&l, 1_000).await;
    assert_accounts(&second);
    let engine = QueryEngine::new(l.catalog.clone(), QueryOptions::default()).unwrap();
    let seqs = engine
        .sql("SELECT source_sequence FROM trades ORDER BY source_sequence")
        .await
        .unwrap()
        .batches;
    let got: Vec<i64> = seqs
        .iter()
        .flat_map(|b| {
            let c = b.column(0).as_primitive::<arrow::datatypes::Int64Type>();
            (0..b.num_rows()).map(|i| c.value(i)).collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(got, [1, 5, 40]);

    // Replaying again changes nothing.
    let again = k2_ingest::replay_dead_letters(&l.log, &l.dlq, 100)
        .await
        .unwrap();
    assert_eq!((again.examined, again.replayed), (2, 0));
    let third = write_all(&l, 1_000).await;
    assert_eq!(third.commits, 0);
}

/// Two captures of one feed (each its own log and writer, say in two places) write the
/// same tables at the same time, deduplicated through one Redis: every record lands once,
/// each writer finds its own positions again after a restart, and the accounts hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_captures_of_one_feed_land_once_with_dedup_shared_in_redis() {
    let Some(redis) = test_redis() else { return };
    let l = lake().await;
    let b_log = EmbeddedLog::open(&l._dir.path().join("log-b.redb")).unwrap();
    let b_dlq = DeadLetterStore::open(&l._dir.path().join("dlq-b.redb"), 10_000).unwrap();
    for (log, dlq) in [(&l.log, &l.dlq), (&b_log, &b_dlq)] {
        k2_ingest::ingest_asx(log, dlq, &sample(), &Default::default(), &mut |_| {})
            .await
            .unwrap();
    }
    let options = |source: &str| {
        let mut o = WriterOptions {
            // Many small batches, so the two writers' claims and commits interleave.
            max_rows: 15_000,
            until_caught_up: true,
            max_age: Duration::from_secs(3600),
            source: source.to_string(),
            ..Default::default()
        };
        o.integrity.state_dir = Some(l._dir.path().join(format!("state-{source}")));
        o.integrity.dedup_redis = Some(redis.clone());
        o
    };
    let (a, b) = (options("a"), options("b"));
    let stop = CancellationToken::new();
    let (a_run, b_run) = tokio::join!(
        writer::run(&l.log, l.catalog.clone(), &l.dlq, &a, stop.clone()),
        writer::run(&b_log, l.catalog.clone(), &b_dlq, &b, stop.clone()),
    );
    let (a_run, b_run) = (a_run.unwrap(), b_run.unwrap());
    assert_accounts(&a_run);
    assert_accounts(&b_run);
    let total = 91_874 + 78_458 + 4;
    assert_eq!(a_run.records_consumed + b_run.records_consumed, 2 * total);
    let stored: u64 = a_run
        .rows_committed
        .values()
        .chain(b_run.rows_committed.values())
        .sum();
    assert_eq!(stored, total, "a: {a_run:?}\nb: {b_run:?}");
    assert_eq!(a_run.duplicates_dropped + b_run.duplicates_dropped, total);
    let ids = stored_ids(&l).await;
    for (t, n) in [(LakeTable::Trades, 91_874), (LakeTable::Quotes, 78_458)] {
        let mut unique = ids[&t].clone();
        unique.dedup();
        assert_eq!((ids[&t].len(), unique.len()), (n, n), "{t}");
    }
    // Each writer resumes from the positions its own snapshots record. Positions past
    // its last commit held only records the other writer had stored (an Iceberg snapshot
    // needs a data file): they are read again and dropped again, and nothing is stored.
    for (log, dlq, o) in [(&l.log, &l.dlq, &a), (&b_log, &b_dlq, &b)] {
        let mut resumed_at = 0;
        for t in LakeTable::ALL {
            let table = iceberg::Catalog::load_table(l.catalog.as_ref(), &t.ident())
                .await
                .unwrap();
            let offsets = k2_lake::commit_marks::committed_offsets(&table, &o.source).unwrap();
            assert!(
                offsets
                    .keys()
                    .all(|k| k.starts_with(&format!("{}:", o.source)))
            );
            resumed_at += offsets.values().sum::<u64>();
        }
        let again = writer::run(log, l.catalog.clone(), dlq, o, stop.clone())
            .await
            .unwrap();
        assert_eq!(
            resumed_at + again.records_consumed,
            total,
            "{}: {again:?}",
            o.source
        );
        assert_eq!(again.duplicates_dropped, again.records_consumed);
        assert!(again.rows_committed.is_empty(), "{again:?}");
    }
}
