//! Replay in the lake's total order, and the live tail merged with the lake.

use super::*;

/// Every row a replay delivers, in delivery order, and the replay's figures.
async fn replayed(
    engine: &Arc<QueryEngine>,
    request: k2_lake::replay::ReplayRequest,
) -> (Vec<arrow::array::RecordBatch>, k2_lake::replay::ReplayStats) {
    let mut replay = engine.replay(request).await.unwrap();
    let mut batches = Vec::new();
    while let Some(b) = replay.next().await.unwrap() {
        batches.push(b);
    }
    (batches, replay.stats())
}

/// The columns of `batches` as one batch (schemas may differ in field metadata only).
fn columns_of(batches: &[arrow::array::RecordBatch]) -> Vec<arrow::array::ArrayRef> {
    let schema = batches[0].schema();
    let all = arrow::compute::concat_batches(&schema, batches).unwrap();
    all.columns().to_vec()
}

#[tokio::test]
async fn a_replayed_day_is_exactly_the_stored_rows_in_order() {
    use k2_lake::replay::{ReplayOptions, ReplayRequest};
    let l = lake().await;
    ingest_sample(&l).await;
    // Many commits: each day's rows are spread over several files, each sorted by symbol.
    let summary = write_all(&l, 20_000).await;
    assert!(summary.commits >= 8, "{summary:?}");
    let engine = Arc::new(QueryEngine::new(l.catalog.clone(), QueryOptions::default()).unwrap());
    let day = NaiveDate::from_ymd_opt(2014, 3, 12).unwrap();
    let (start_us, end_us) =
        k2_model::exchange::day_bounds_us(k2_model::exchange::time_zone("ASX"), day);
    for table in [LakeTable::Trades, LakeTable::Quotes] {
        // The stored rows of the trading day, by one global sort in the query engine.
        let expected = engine
            .sql(&format!(
                r#"SELECT * FROM {} WHERE trade_date = DATE '{day}' ORDER BY "timestamp", coalesce(source_sequence, -1), message_id"#,
                table.qualified()
            ))
            .await
            .unwrap()
            .batches;
        let expected_rows: usize = expected.iter().map(|b| b.num_rows()).sum();
        assert!(expected_rows > 10_000, "{table}: {expected_rows}");
        let request = ReplayRequest::range(table, start_us, end_us);
        let (batches, stats) = replayed(&engine, request.clone()).await;
        assert_eq!(stats.rows as usize, expected_rows, "{table}");
        assert!(stats.runs > 3, "the day is merged from runs: {stats:?}");
        assert_eq!(columns_of(&batches), columns_of(&expected), "{table}");

        // Small windows (many reads) and odd batch sizes change nothing.
        let (small, stats) = replayed(
            &engine,
            ReplayRequest {
                options: ReplayOptions {
                    window_rows: 300,
                    batch_rows: 777,
                    ..Default::default()
                },
                ..request.clone()
            },
        )
        .await;
        assert!(stats.windows > 20, "{stats:?}");
        assert!(small.iter().all(|b| b.num_rows() <= 777));
        assert_eq!(columns_of(&small), columns_of(&expected), "{table}");
    }

    // Counted coarsely (2 buckets), a minute holds more than a window, so its buckets are
    // counted again until each fits; 30 trades share the millisecond 11:11:29.726, an
    // instant no window splits.
    let from = start_us + (11 * 3600 + 11 * 60) * 1_000_000;
    let to = from + 60_000_000;
    let at = |us: i64| {
        chrono::DateTime::from_timestamp_micros(us)
            .unwrap()
            .to_rfc3339()
    };
    let expected = engine
        .sql(&format!(
            r#"SELECT * FROM {} WHERE "timestamp" >= TIMESTAMP '{}' AND "timestamp" < TIMESTAMP '{}' ORDER BY "timestamp", coalesce(source_sequence, -1), message_id"#,
            LakeTable::Trades.qualified(),
            at(from),
            at(to)
        ))
        .await
        .unwrap()
            .batches;
    let (dense, stats) = replayed(
        &engine,
        ReplayRequest {
            options: ReplayOptions {
                window_rows: 3,
                batch_rows: 5,
                density_buckets: 2,
            },
            ..ReplayRequest::range(LakeTable::Trades, from, to)
        },
    )
    .await;
    assert!(
        stats.recounts > 3 && stats.windows > 5 && stats.rows > 30,
        "{stats:?}"
    );
    assert_eq!(columns_of(&dense), columns_of(&expected));

    // Chosen symbols and fields: the same rows as the query engine's oldest-first answer.
    let request = ReplayRequest {
        symbols: vec!["BHP".into(), "RIO".into()],
        exchanges: vec!["asx".into()],
        fields: vec![
            "timestamp".into(),
            "symbol".into(),
            "price".into(),
            "message_id".into(),
        ],
        ..ReplayRequest::range(LakeTable::Trades, start_us, end_us)
    };
    let (batches, _) = replayed(&engine, request.clone()).await;
    let page = engine
        .trades(
            &MarketFilter {
                symbols: request.symbols.clone(),
                exchanges: request.exchanges.clone(),
                start_us: Some(start_us),
                end_us: Some(end_us),
                fields: request.fields.clone(),
                order: RowOrder::OldestFirst,
                limit: 1_000_000,
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(columns_of(&batches), columns_of(&page.batches));
    let symbols = columns_of(&batches)[1].clone();
    let symbols = symbols.as_string::<i32>();
    assert!(
        symbols.iter().any(|s| s == Some("BHP"))
            && symbols.iter().all(|s| s == Some("BHP") || s == Some("RIO"))
    );

    // Refusals name what is wrong.
    for (bad, says) in [
        (
            ReplayRequest {
                end_us: start_us,
                ..request.clone()
            },
            "end must be after its start",
        ),
        (
            ReplayRequest {
                fields: vec!["colour".into()],
                ..request.clone()
            },
            "unknown field 'colour'",
        ),
        (
            ReplayRequest {
                table: LakeTable::Companies,
                ..request.clone()
            },
            "cannot be replayed",
        ),
    ] {
        let e = engine.replay(bad).await.err().expect("refused").to_string();
        assert!(e.contains(says), "{e}");
    }
}

/// Lake ∪ tail answers as the lake alone would when the tail holds only part of what the
/// lake has: here every other trade of the newest ones (even source sequences), so lake
/// rows newer than anything the tail bounds by must still come from the lake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_and_the_lake_answer_as_one() {
    use k2_log::{Log, LogConsumer, PartitionOffset, PayloadDecoder};
    use k2_model::{DataType, MarketRecord};

    let l = lake().await;
    ingest_sample(&l).await;
    write_all(&l, 50_000).await;
    let engine = QueryEngine::new(l.catalog.clone(), QueryOptions::default()).unwrap();

    // The tail: BHP's trades of the last trading days, the even sequences only.
    let tail = k2_lake::tail::Tail::new(k2_lake::tail::TailConfig {
        max_per_stream: 4_000,
        max_age: Duration::from_secs(3 * 86_400),
        max_streams: 100,
    });
    let topic = "market.equities.trades.asx";
    let partitions = l.log.end_offsets(topic).await.unwrap().len() as u32;
    let mut consumer = l
        .log
        .consumer(
            (0..partitions)
                .map(|partition| PartitionOffset {
                    topic: topic.into(),
                    partition,
                    offset: 0,
                })
                .collect(),
        )
        .unwrap();
    let mut decoder = PayloadDecoder::default();
    loop {
        let records = consumer
            .poll(10_000, Duration::from_millis(200))
            .await
            .unwrap();
        if records.is_empty() {
            break;
        }
        let mut kept = Vec::new();
        for r in records {
            let rec = decoder
                .decode(&l.log, &r.value, DataType::Trades)
                .await
                .unwrap()
                .unwrap();
            if let MarketRecord::Trade(t) = &rec
                && t.symbol == "BHP"
                && t.source_sequence.is_some_and(|s| s % 2 == 0)
            {
                kept.push(rec);
            }
        }
        tail.insert(kept);
    }
    assert!(tail.len() >= 2_000, "the tail holds {}", tail.len());

    let ids = |page: k2_lake::query::MarketPage| -> Vec<String> {
        page.batches
            .iter()
            .flat_map(|b| {
                let col = b
                    .column_by_name("message_id")
                    .unwrap()
                    .as_string::<i32>()
                    .clone();
                (0..b.num_rows()).map(move |i| col.value(i).to_string())
            })
            .collect()
    };
    let bhp = |limit: usize| MarketFilter {
        symbols: vec!["BHP".into()],
        fields: vec![
            "message_id".into(),
            "timestamp".into(),
            "source_sequence".into(),
        ],
        limit,
        ..Default::default()
    };
    let cases = [
        (
            "newest 1000: the tail holds 1000 and bounds the lake",
            bhp(1_000),
        ),
        ("newest 10", bhp(10)),
        ("more than the tail holds", bhp(5_000)),
        (
            "a price bound the tail does not apply",
            MarketFilter {
                min_price: Some(3_500_000_000),
                ..bhp(500)
            },
        ),
        (
            "oldest first",
            MarketFilter {
                order: RowOrder::OldestFirst,
                ..bhp(700)
            },
        ),
    ];
    for (what, filter) in cases {
        let lake_only = ids(engine.trades(&filter, None).await.unwrap());
        let merged = ids(engine
            .market_with_tail(LakeTable::Trades, &filter, &tail)
            .await
            .unwrap());
        assert_eq!(merged.len(), lake_only.len(), "{what}");
        assert_eq!(merged, lake_only, "{what}");
    }
}
