//! The bundled sample lands exactly, and every answer matches figures computed from the
//! CSV files; limits and pruning never change an answer.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_lands_exactly_and_answers_match_the_csv() {
    let l = lake().await;
    ingest_sample(&l).await;
    // Small batches: many commits, so resuming and time travel have something to show.
    let summary = write_all(&l, 40_000).await;
    assert!(summary.commits >= 5, "{summary:?}");
    assert_accounts(&summary);
    assert_eq!(summary.duplicates_dropped, 0);
    // Every trade and quote was sequence-checked, per table and stream: the sample's line
    // numbers run without holes, and trades and quotes of a symbol do not collide.
    assert_eq!(
        summary.sequence_events,
        BTreeMap::from([("in_order", 91_874 + 78_458)]),
        "{summary:?}"
    );
    assert_eq!(summary.sequence_missing, 0);
    let engine = QueryEngine::new(l.catalog.clone(), QueryOptions::default()).unwrap();
    assert_eq!(
        engine.count(LakeTable::Trades, None).await.unwrap(),
        91_631 + 232 + 11
    );
    assert_eq!(
        engine.count(LakeTable::Quotes, None).await.unwrap(),
        77_849 + 549 + 60
    );
    assert_eq!(engine.count(LakeTable::Companies, None).await.unwrap(), 4);

    // Running the writer again finds nothing new.
    let again = write_all(&l, 40_000).await;
    assert_eq!(again.commits, 0);
    assert_eq!(engine.count(LakeTable::Trades, None).await.unwrap(), 91_874);

    // Daily summaries equal the independent computation, to the last unit.
    let expected = bhp_from_csv();
    assert_eq!(expected.len(), 5);
    for (day, (open, high, low, close, volume, count, notional)) in &expected {
        let date: NaiveDate = day.parse().unwrap();
        let s = engine
            .daily_summary("BHP", date, Some("ASX"), None)
            .await
            .unwrap()
            .expect("BHP traded");
        let o = &s.ohlcv;
        assert_eq!(
            (o.open, o.high, o.low, o.close),
            (*open, *high, *low, *close),
            "{day}"
        );
        assert_eq!(
            (o.volume, o.trade_count, o.notional),
            (*volume, *count, *notional),
            "{day}"
        );
    }
    assert!(
        engine
            .daily_summary("BHP", "2014-03-15".parse().unwrap(), Some("ASX"), None)
            .await
            .unwrap()
            .is_none()
    );
    // The footers those answers read are kept, within their bound; a bound of zero keeps
    // none and answers the same.
    let (bytes, files) = engine.file_metadata_cache();
    assert!(
        files > 0 && bytes > 0 && bytes <= 64 << 20,
        "{files} files, {bytes} B"
    );
    let none = QueryOptions {
        file_metadata_cache_mb: 0,
        ..Default::default()
    };
    let uncached = QueryEngine::new(l.catalog.clone(), none).unwrap();
    let day = "2014-03-11".parse().unwrap();
    let s = uncached.daily_summary("BHP", day, Some("ASX"), None);
    let s = s.await.unwrap().expect("BHP traded");
    assert_eq!(s.ohlcv.trade_count, expected["2014-03-11"].5);
    assert_eq!(uncached.file_metadata_cache(), (0, 0));

    // Bars: every interval covers the day's trades exactly, and candles are consistent.
    let day: NaiveDate = "2014-03-10".parse().unwrap();
    for interval in BarInterval::ALL {
        let bars = engine
            .ohlcv("BHP", interval, day, day, Some("ASX"), None)
            .await
            .unwrap();
        let count: i64 = bars.iter().map(|b| b.ohlcv.trade_count).sum();
        assert_eq!(count, expected["2014-03-10"].5, "{interval:?}");
        for b in &bars {
            let o = &b.ohlcv;
            assert!(
                o.low <= o.open.min(o.close) && o.high >= o.open.max(o.close),
                "{interval:?} {b:?}"
            );
            assert!(o.vwap() >= o.low && o.vwap() <= o.high);
        }
        if interval == BarInterval::D1 {
            assert_eq!(
                bars.len(),
                1,
                "one trading day is one daily bar, not split at UTC midnight"
            );
        }
    }

    // Trades newest first, with a limit.
    let filter = MarketFilter {
        symbols: vec!["BHP".into()],
        limit: 100,
        ..Default::default()
    };
    let rows: usize = engine.trades(&filter, None).await.unwrap().rows();
    assert_eq!(rows, 100);
    // The newest N rows match a plain one-step ORDER BY … LIMIT, ties at the cut included:
    // the sample has many trades sharing a millisecond.
    let (day_start, day_end) = k2_model::exchange::day_bounds_us(
        k2_model::exchange::time_zone("ASX"),
        NaiveDate::from_ymd_opt(2014, 3, 12).unwrap(),
    );
    for limit in [1, 2, 7, 100, 1_000, 20_283, 50_000] {
        let filter = MarketFilter {
            symbols: vec!["BHP".into()],
            exchanges: vec!["asx".into()],
            start_us: Some(day_start),
            end_us: Some(day_end),
            limit,
            ..Default::default()
        };
        let ids = |batches: Vec<arrow::array::RecordBatch>| -> Vec<String> {
            batches
                .iter()
                .flat_map(|b| {
                    let col = b.column_by_name("message_id").unwrap().as_string::<i32>();
                    (0..b.num_rows())
                        .map(|i| col.value(i).to_string())
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let got = ids(engine.trades(&filter, None).await.unwrap().batches);
        let want = ids(engine
            .sql(&format!(
                "SELECT message_id FROM trades WHERE symbol = 'BHP' AND exchange = 'ASX' \
                 AND \"timestamp\" >= to_timestamp_micros({day_start}) \
                 AND \"timestamp\" < to_timestamp_micros({day_end}) \
                 ORDER BY \"timestamp\" DESC, source_sequence DESC, message_id DESC LIMIT {limit}"
            ))
            .await
            .unwrap()
            .batches);
        assert_eq!(got.len(), limit.min(20_283), "limit {limit}");
        assert_eq!(got, want, "newest {limit} trades");
    }
    // Keyset pages through a whole day, in both orders, give every row once, in order.
    let whole_day = |order, limit, after| MarketFilter {
        symbols: vec!["BHP".into()],
        exchanges: vec!["ASX".into()],
        start_us: Some(day_start),
        end_us: Some(day_end),
        fields: vec!["message_id".into()],
        order,
        after,
        limit,
        ..Default::default()
    };
    let ids = |batches: &[arrow::array::RecordBatch]| -> Vec<String> {
        batches
            .iter()
            .flat_map(|b| {
                let col = b.column(0).as_string::<i32>();
                (0..b.num_rows())
                    .map(|i| col.value(i).to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    for order in [RowOrder::NewestFirst, RowOrder::OldestFirst] {
        let all = engine
            .trades(&whole_day(order, 100_000, None), None)
            .await
            .unwrap();
        assert_eq!(all.batches[0].num_columns(), 1, "only the fields asked for");
        let all = ids(&all.batches);
        assert_eq!(all.len(), 20_283);
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = engine
                .trades(&whole_day(order, 997, after), None)
                .await
                .unwrap();
            paged.extend(ids(&page.batches));
            match page.next {
                Some(k) => after = Some(k),
                None => break,
            }
        }
        assert_eq!(paged, all, "{order:?}: pages join into the whole answer");
    }

    // Price and quantity bounds are part of the query, not applied after the limit.
    let bounded = MarketFilter {
        symbols: vec!["BHP".into()],
        min_price: Some(36_00000000),
        max_price: Some(36_50000000),
        min_quantity: Some(100_000_000_000),
        limit: 1_000_000,
        ..Default::default()
    };
    let got = engine.trades(&bounded, None).await.unwrap().rows() as i64;
    let want = engine
        .sql(
            "SELECT count(*) FROM trades WHERE symbol = 'BHP' AND price >= 36 AND price <= 36.5 \
             AND quantity >= 1000",
        )
        .await
        .unwrap()
        .batches[0]
        .column(0)
        .as_primitive::<arrow::datatypes::Int64Type>()
        .value(0);
    assert!(want > 0);
    assert_eq!(got, want);
    let unknown = MarketFilter {
        fields: vec!["price; DROP TABLE trades".into()],
        limit: 1,
        ..Default::default()
    };
    assert!(matches!(
        engine.trades(&unknown, None).await,
        Err(k2_lake::LakeError::InvalidArgument(_))
    ));

    // Aggregations agree with the bars, TWAP lies within each interval's range, and the
    // volume profile adds up to the volume.
    let day: NaiveDate = "2014-03-12".parse().unwrap();
    for interval in [BarInterval::M5, BarInterval::H1, BarInterval::D1] {
        let request = AggregateRequest {
            symbols: vec!["BHP".into(), "DVN".into()],
            exchange: Some("ASX".into()),
            interval,
            start_us: day_start,
            end_us: day_end,
        };
        let agg = engine.aggregate(&request, true, None).await.unwrap();
        let bars = engine
            .ohlcv("BHP", interval, day, day, Some("ASX"), None)
            .await
            .unwrap();
        let bhp: Vec<_> = agg.rows.iter().filter(|r| r.symbol == "BHP").collect();
        assert_eq!(bhp.len(), bars.len(), "{interval:?}");
        for (row, bar) in bhp.iter().zip(&bars) {
            assert_eq!((row.start_us, &row.ohlcv), (bar.start_us, &bar.ohlcv));
            assert!(row.end_us > row.start_us);
            let o = &row.ohlcv;
            assert!(
                row.twap >= o.low && row.twap <= o.high,
                "{interval:?} {row:?}"
            );
        }
        for row in &agg.rows {
            let (volume, count) = agg
                .levels
                .iter()
                .filter(|l| l.symbol == row.symbol && l.start_us == row.start_us)
                .fold((0, 0), |(v, c), l| (v + l.volume, c + l.trade_count));
            assert_eq!((volume, count), (row.ohlcv.volume, row.ohlcv.trade_count));
        }
    }

    assert_eq!(engine.symbols(None).await.unwrap(), ["BHP", "DVN", "MWR"]);

    // Time travel: the first snapshot holds fewer rows than now, and stays the same.
    let snaps = engine.snapshots(LakeTable::Trades).await.unwrap();
    assert!(snaps.len() >= 2);
    let first = snaps[0].snapshot_id;
    let then = engine.count(LakeTable::Trades, Some(first)).await.unwrap();
    assert!(then > 0 && then < 91_874);
    assert_eq!(snaps[0].added_records, Some(then));
    assert!(matches!(
        engine.count(LakeTable::Trades, Some(42)).await,
        Err(LakeError::NotFound(_))
    ));

    // Free SQL is read-only.
    let n = engine
        .sql("SELECT count(*) AS n FROM trades WHERE symbol = 'DVN'")
        .await
        .unwrap()
        .batches;
    assert_eq!(n[0].num_rows(), 1);
    for bad in [
        "DROP TABLE trades",
        "INSERT INTO trades SELECT * FROM trades",
        "CREATE TABLE x AS SELECT 1",
        "SET datafusion.execution.batch_size = 1",
    ] {
        let err = engine.sql(bad).await.unwrap_err();
        assert!(matches!(err, LakeError::NotReadOnly(_)), "{bad}: {err}");
    }
    assert_eq!(engine.count(LakeTable::Trades, None).await.unwrap(), 91_874);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_fail_with_clear_errors() {
    let l = lake().await;
    k2_lake::ensure_tables(l.catalog.as_ref()).await.unwrap();
    let tight = QueryOptions {
        memory_limit_mb: 1,
        timeout: Duration::from_secs(60),
        max_rows: 10,
        ..Default::default()
    };
    let engine = QueryEngine::new(l.catalog.clone(), tight).unwrap();
    let err = engine
        .sql("SELECT v, count(*) FROM generate_series(1, 3000000) AS g(v) GROUP BY v")
        .await
        .unwrap_err();
    assert!(matches!(err, LakeError::MemoryLimit { .. }), "{err}");
    assert!(err.to_string().contains("memory limit"));

    let quick = QueryOptions {
        timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let engine = QueryEngine::new(l.catalog.clone(), quick).unwrap();
    let err = engine
        .sql("SELECT count(*) FROM generate_series(1, 20000000000)")
        .await
        .unwrap_err();
    assert!(matches!(err, LakeError::Timeout(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_answers_say_when_they_are_cut_at_max_rows() {
    let l = lake().await;
    k2_lake::ensure_tables(l.catalog.as_ref()).await.unwrap();
    let options = QueryOptions {
        max_rows: 10,
        ..Default::default()
    };
    let engine = QueryEngine::new(l.catalog.clone(), options).unwrap();
    let values = |batches: &[RecordBatch]| -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect()
    };
    for (n, cut) in [(9, None), (10, None), (11, Some(10)), (25, Some(10))] {
        let answer = engine
            .sql(&format!(
                "SELECT v FROM generate_series(1, {n}) AS g(v) ORDER BY v"
            ))
            .await
            .unwrap();
        assert_eq!(answer.truncated_at, cut, "{n} rows");
        let want: Vec<i64> = (1..=n.min(10)).collect();
        assert_eq!(values(&answer.batches), want, "{n} rows");
    }
    // An answer in several batches is cut inside the one that crosses the cap.
    let answer = engine
        .sql("SELECT v FROM generate_series(1, 6) AS g(v) UNION ALL SELECT v FROM generate_series(7, 30) AS h(v)")
        .await
        .unwrap();
    assert_eq!(answer.truncated_at, Some(10));
    assert_eq!(values(&answer.batches).len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_with_another_schema_is_refused_by_name() {
    use iceberg::Catalog;
    use iceberg::spec::{NestedField, PrimitiveType, Schema, Type};
    let l = lake().await;
    let ns = iceberg::NamespaceIdent::new("market_data".into());
    l.catalog
        .create_namespace(&ns, Default::default())
        .await
        .unwrap();
    // A trades table as an older K2 made it: the message id as text.
    let old = Schema::builder()
        .with_fields(vec![
            NestedField::required(1, "message_id", Type::Primitive(PrimitiveType::String)).into(),
        ])
        .build()
        .unwrap();
    let creation = iceberg::TableCreation::builder()
        .name("trades".into())
        .schema(old)
        .build();
    l.catalog.create_table(&ns, creation).await.unwrap();
    let err = k2_lake::ensure_tables(l.catalog.as_ref())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("market_data.trades") && text.contains("new data directory"),
        "{text}"
    );
}

/// The query plans files by their column bounds, and pruning never changes an answer:
/// each condition's count as a filter (pruned) equals the same condition counted over
/// every row (a projection, where nothing can be pruned).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruned_files_never_change_an_answer() {
    let l = lake().await;
    ingest_sample(&l).await;
    let summary = write_all(&l, 20_000).await;
    assert!(summary.commits >= 8, "{summary:?}");
    let engine = QueryEngine::new(l.catalog.clone(), QueryOptions::default()).unwrap();
    let count = async |sql: String| -> i64 {
        let batches = engine.sql(&sql).await.unwrap().batches;
        batches[0]
            .column(0)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0)
    };
    // The data files in the physical plan (every one listed with VERBOSE).
    let planned = async |condition: &str| -> usize {
        let batches = engine
            .sql(&format!(
                "EXPLAIN VERBOSE SELECT count(*) FROM trades WHERE {condition}"
            ))
            .await
            .unwrap()
            .batches;
        let mut files = 0;
        for b in &batches {
            let (kind, plan) = (
                b.column(0).as_string::<i32>(),
                b.column(1).as_string::<i32>(),
            );
            for i in 0..b.num_rows() {
                if kind.value(i) == "physical_plan" {
                    files = plan.value(i).matches(".parquet").count();
                }
            }
        }
        files
    };
    let all = planned("true").await;
    assert!(all >= 8, "{all} files");
    // (condition, whether its files are a strict subset of the table's)
    let cases = [
        (
            r#""timestamp" >= TIMESTAMP '2014-03-12T00:00:00Z' AND "timestamp" < TIMESTAMP '2014-03-13T00:00:00Z'"#,
            true,
        ),
        ("trade_date = DATE '2014-03-11'", true),
        (
            "trade_date = DATE '2014-03-11' OR trade_date = DATE '2014-03-14'",
            true,
        ),
        ("NOT (trade_date <> DATE '2014-03-13')", true),
        ("trade_date > DATE '2014-03-20'", true),
        ("symbol = 'BHP'", false),
        ("symbol IN ('BHP', 'RIO', 'NOPE')", false),
        ("price >= 40 AND price < 41", false),
        ("quantity > 100000", false),
        ("source_sequence IS NULL", false),
        ("exchange = 'ASX' AND symbol > 'M'", false),
    ];
    for (condition, prunes) in cases {
        let filtered = count(format!("SELECT count(*) FROM trades WHERE {condition}")).await;
        let everywhere = count(format!(
            "SELECT coalesce(sum(CASE WHEN {condition} THEN 1 ELSE 0 END), 0) FROM trades"
        ))
        .await;
        assert_eq!(filtered, everywhere, "{condition}");
        let files = planned(condition).await;
        assert!(files <= all, "{condition}: {files} of {all}");
        if prunes {
            assert!(files < all, "{condition}: {files} of {all} files planned");
        }
    }
    // A day with no trades plans no file at all.
    assert_eq!(planned("trade_date > DATE '2014-03-20'").await, 0);
}
