//! The spine end to end, in process: the bundled ASX sample → embedded log → lake writer →
//! Iceberg tables → queries, checked against figures computed straight from the CSV files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use chrono::NaiveDate;
use k2_log::{DeadLetterStore, EmbeddedLog};
use tokio_util::sync::CancellationToken;

use crate::query::{
    AggregateRequest, BarInterval, MarketFilter, QueryEngine, QueryOptions, RowOrder,
};
use crate::tables::LakeTable;
use crate::writer::{self, WriterOptions};
use crate::{LakeError, open_catalog};

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../samples/asx-2014-03")
}

/// A directory in the sample layout with the sample's company list and an (empty)
/// `trades/` folder; tests write `trades/7078.csv` (BHP) themselves.
fn bhp_only_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("reference-data")).unwrap();
    std::fs::create_dir_all(dir.path().join("trades")).unwrap();
    std::fs::copy(
        sample().join("reference-data/company_info.csv"),
        dir.path().join("reference-data/company_info.csv"),
    )
    .unwrap();
    dir
}

struct Lake {
    _dir: tempfile::TempDir,
    log: EmbeddedLog,
    dlq: DeadLetterStore,
    catalog: Arc<iceberg_catalog_sql::SqlCatalog>,
    /// PostgreSQL: the server's admin URL and this lake's own database.
    postgres: Option<(String, String)>,
}

/// A lake on the catalog the environment names: SQLite in a temporary directory (the
/// default), or with `K2_TEST_CATALOG=postgres` a fresh database on the PostgreSQL server
/// at `K2_TEST_POSTGRES_URL` (the test script starts one on loopback).
async fn lake() -> Lake {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(&dir.path().join("log.redb")).unwrap();
    let dlq = DeadLetterStore::open(&dir.path().join("dlq.redb"), 10_000).unwrap();
    let warehouse = dir.path().join("warehouse");
    let (catalog, postgres) = match std::env::var("K2_TEST_CATALOG").as_deref() {
        Ok("postgres") => {
            use sqlx::Connection;
            let admin = std::env::var("K2_TEST_POSTGRES_URL").expect(
                "K2_TEST_CATALOG=postgres needs K2_TEST_POSTGRES_URL (scripts/test sets both)",
            );
            let db = format!("k2_test_{}", uuid::Uuid::new_v4().simple());
            let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
            sqlx::query(&format!("CREATE DATABASE {db}"))
                .execute(&mut conn)
                .await
                .unwrap();
            let (base, _) = admin.rsplit_once('/').unwrap();
            let uri = format!("{base}/{db}");
            let catalog = crate::open_catalog_at(&uri, "k2", &warehouse)
                .await
                .unwrap();
            (catalog, Some((admin, db)))
        }
        Ok("sqlite") | Err(_) => (
            open_catalog(&dir.path().join("catalog.db"), &warehouse)
                .await
                .unwrap(),
            None,
        ),
        Ok(other) => panic!("K2_TEST_CATALOG must be sqlite or postgres, not {other}"),
    };
    Lake {
        _dir: dir,
        log,
        dlq,
        catalog,
        postgres,
    }
}

/// A real catalog outage: on SQLite another connection holds the database locked (every
/// catalog call fails after SQLite's 5 s busy timeout); on PostgreSQL the lake's database
/// refuses connections and the open ones are cut.
enum Outage {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection, String),
}

impl Outage {
    async fn begin(l: &Lake) -> Outage {
        use sqlx::Connection;
        match &l.postgres {
            None => {
                let db = l._dir.path().join("catalog.db");
                let mut holder =
                    sqlx::SqliteConnection::connect(&format!("sqlite:{}", db.display()))
                        .await
                        .unwrap();
                sqlx::query("BEGIN EXCLUSIVE")
                    .execute(&mut holder)
                    .await
                    .unwrap();
                Outage::Sqlite(holder)
            }
            Some((admin, db)) => {
                let mut conn = sqlx::PgConnection::connect(admin).await.unwrap();
                sqlx::query(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS false"))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                sqlx::query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                )
                .bind(db)
                .execute(&mut conn)
                .await
                .unwrap();
                Outage::Postgres(conn, db.clone())
            }
        }
    }

    async fn end(self) {
        match self {
            Outage::Sqlite(mut holder) => {
                sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
            }
            Outage::Postgres(mut conn, db) => {
                sqlx::query(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true"))
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
        }
    }
}

/// The whole ASX sample ingested into the lake's log.
async fn ingest_sample(l: &Lake) {
    k2_ingest::ingest_asx(&l.log, &l.dlq, &sample(), &Default::default(), &mut |_| {})
        .await
        .unwrap();
}

async fn write_all(l: &Lake, max_rows: usize) -> crate::WriterSummary {
    write_with(
        l,
        WriterOptions {
            max_rows,
            ..Default::default()
        },
    )
    .await
}

/// A batch-mode writer run with `options` (its state kept in the lake's directory).
async fn write_with(l: &Lake, options: WriterOptions) -> crate::WriterSummary {
    let mut options = options;
    options.integrity.state_dir = Some(l._dir.path().join("state"));
    write_from(&l.log, l, options).await
}

/// A batch-mode writer run from `log` into the lake's tables.
async fn write_from(log: &EmbeddedLog, l: &Lake, options: WriterOptions) -> crate::WriterSummary {
    let options = WriterOptions {
        until_caught_up: true,
        max_age: Duration::from_secs(3600),
        ..options
    };
    writer::run(
        log,
        l.catalog.clone(),
        &l.dlq,
        &options,
        CancellationToken::new(),
    )
    .await
    .unwrap()
}

/// BHP's daily figures computed independently: plain string splitting and integer maths.
/// (open, high, low, close, volume, trade count, notional) in 10^-8 / 10^-16 units.
type DayFigures = (i64, i64, i64, i64, i128, i64, i128);

fn bhp_from_csv() -> BTreeMap<String, DayFigures> {
    let text = std::fs::read_to_string(sample().join("trades/7078.csv")).unwrap();
    let units = |s: &str| -> i64 {
        let (i, f) = s.split_once('.').unwrap_or((s, ""));
        i.parse::<i64>().unwrap() * 100_000_000 + format!("{f:0<8}").parse::<i64>().unwrap()
    };
    let mut days: BTreeMap<String, Vec<(String, usize, i64, i64)>> = BTreeMap::new();
    for (line, row) in text.lines().enumerate() {
        let f: Vec<&str> = row.trim_end().split(',').collect();
        // Every row is in March 2014 (AEDT), so the local date is the file's date.
        let (m, d, y) = (&f[0][0..2], &f[0][3..5], &f[0][6..10]);
        days.entry(format!("{y}-{m}-{d}")).or_default().push((
            f[1].to_string(),
            line,
            units(f[2]),
            units(f[3]),
        ));
    }
    days.into_iter()
        .map(|(day, mut rows)| {
            rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
            let open = rows.first().unwrap().2;
            let close = rows.last().unwrap().2;
            let high = rows.iter().map(|r| r.2).max().unwrap();
            let low = rows.iter().map(|r| r.2).min().unwrap();
            let volume: i128 = rows.iter().map(|r| r.3 as i128).sum();
            let notional: i128 = rows.iter().map(|r| r.2 as i128 * r.3 as i128).sum();
            (
                day,
                (open, high, low, close, volume, rows.len() as i64, notional),
            )
        })
        .collect()
}

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
        Err(crate::LakeError::InvalidArgument(_))
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
    crate::ensure_tables(l.catalog.as_ref()).await.unwrap();
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
    crate::ensure_tables(l.catalog.as_ref()).await.unwrap();
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
    let err = crate::ensure_tables(l.catalog.as_ref()).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("market_data.trades") && text.contains("new data directory"),
        "{text}"
    );
}

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

/// Every record read is committed, dead-lettered or dropped as a duplicate.
fn assert_accounts(s: &crate::WriterSummary) {
    let committed: u64 = s.rows_committed.values().sum();
    assert_eq!(
        s.records_consumed,
        committed + s.dead_lettered + s.duplicates_dropped,
        "records in = stored + dead-lettered + duplicates: {s:?}"
    );
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

/// Each table's message ids, sorted.
async fn stored_ids(l: &Lake) -> BTreeMap<LakeTable, Vec<String>> {
    let engine = QueryEngine::new(l.catalog.clone(), QueryOptions::default()).unwrap();
    let mut out = BTreeMap::new();
    for t in LakeTable::ALL {
        let batches = engine
            .sql(&format!(
                "SELECT message_id FROM {} ORDER BY message_id",
                t.qualified()
            ))
            .await
            .unwrap()
            .batches;
        let ids = batches
            .iter()
            .flat_map(|b| {
                let c = b.column(0).as_string::<i32>();
                (0..b.num_rows())
                    .map(|i| c.value(i).to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        out.insert(t, ids);
    }
    out
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

/// The Redis at `K2_TEST_REDIS_ADDR` (scripts/test starts one; required in CI).
fn test_redis() -> Option<crate::RedisTarget> {
    match std::env::var("K2_TEST_REDIS_ADDR") {
        Ok(addr) => Some(crate::RedisTarget {
            addr,
            prefix: format!("k2test-{}", uuid::Uuid::new_v4().simple()),
            timeout: Duration::from_secs(10),
        }),
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("K2_TEST_REDIS_ADDR must name the test Redis in CI (scripts/test sets it)")
        }
        Err(_) => {
            eprintln!("K2_TEST_REDIS_ADDR not set: Redis test skipped (scripts/test runs it)");
            None
        }
    }
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
    let mut shared = crate::integrity::shared_sequence::RedisSequenceTracker::connect(
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

async fn sequence_state_survives_a_restart_with(redis: Option<crate::RedisTarget>) {
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
    // Only the state named by the current snapshot is kept.
    let states: Vec<_> = std::fs::read_dir(l._dir.path().join("state/trades"))
        .unwrap()
        .collect();
    assert_eq!(states.len(), 1);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_outage_is_waited_out_through_the_breaker_and_the_run_lands_exact() {
    let l = lake().await;
    ingest_sample(&l).await;
    let outage = Outage::begin(&l).await;
    let options = WriterOptions {
        max_rows: 40_000,
        until_caught_up: true,
        max_age: Duration::from_secs(3600),
        retry: k2_pipeline::RetryPolicy {
            attempts: 100,
            base: Duration::from_millis(20),
            max_delay: Duration::from_millis(100),
        },
        breaker: k2_pipeline::BreakerConfig {
            failure_threshold: 2,
            open_for: Duration::from_millis(200),
        },
        ..Default::default()
    };
    let (log, catalog, dlq) = (l.log.clone(), l.catalog.clone(), l.dlq.clone());
    let writer = tokio::spawn(async move {
        writer::run(&log, catalog, &dlq, &options, CancellationToken::new()).await
    });
    // The outage lasts long enough for two SQLite busy timeouts (5 s each).
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(!writer.is_finished(), "the writer waits for the catalog");
    outage.end().await;
    let summary = tokio::time::timeout(Duration::from_secs(120), writer)
        .await
        .expect("the writer finishes once the catalog is back")
        .unwrap()
        .unwrap();
    assert!(summary.retries["catalog"] >= 2, "{summary:?}");
    let t = &summary.breaker_transitions;
    assert!(t.iter().any(|s| s == "catalog:open"), "{t:?}");
    assert_eq!(
        t.last().map(String::as_str),
        Some("catalog:closed"),
        "{t:?}"
    );
    assert_accounts(&summary);
    let engine = QueryEngine::new(l.catalog.clone(), QueryOptions::default()).unwrap();
    assert_eq!(engine.count(LakeTable::Trades, None).await.unwrap(), 91_874);
    assert_eq!(engine.count(LakeTable::Quotes, None).await.unwrap(), 78_458);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_that_stays_down_stops_the_writer_uncommitted_with_a_clear_error() {
    let l = lake().await;
    ingest_sample(&l).await;
    let outage = Outage::begin(&l).await;
    let options = WriterOptions {
        until_caught_up: true,
        retry: k2_pipeline::RetryPolicy {
            attempts: 2,
            base: Duration::from_millis(10),
            max_delay: Duration::from_millis(10),
        },
        ..Default::default()
    };
    let err = writer::run(
        &l.log,
        l.catalog.clone(),
        &l.dlq,
        &options,
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            err,
            LakeError::Exhausted {
                dependency: "catalog",
                attempts: 2,
                ..
            }
        ),
        "{text}"
    );
    assert!(
        text.contains("catalog still failing after 2 attempts"),
        "{text}"
    );
    outage.end().await;
    // Nothing was committed; a restart lands everything.
    let summary = write_all(&l, 1_000_000).await;
    assert_accounts(&summary);
    assert_eq!(summary.records_consumed, 170_336);
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
            let offsets = crate::commit_marks::committed_offsets(&table, &o.source).unwrap();
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

/// Every row a replay delivers, in delivery order, and the replay's figures.
async fn replayed(
    engine: &Arc<QueryEngine>,
    request: crate::replay::ReplayRequest,
) -> (Vec<arrow::array::RecordBatch>, crate::replay::ReplayStats) {
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
    use crate::replay::{ReplayOptions, ReplayRequest};
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
    let tail = crate::tail::Tail::new(crate::tail::TailConfig {
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

    let ids = |page: crate::query::MarketPage| -> Vec<String> {
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

/// Synthetic trades of `companies` companies ingested into `log`.
async fn ingest_synthetic(log: &EmbeddedLog, dlq: &DeadLetterStore, companies: u32, rows: u64) {
    let dir = tempfile::tempdir().unwrap();
    k2_ingest::synthetic::write_asx_trades(dir.path(), companies, rows, 1).unwrap();
    k2_ingest::ingest_asx(log, dlq, dir.path(), &Default::default(), &mut |_| {})
        .await
        .unwrap();
}

/// The trades table as the catalog has it now.
async fn trades_table(l: &Lake) -> iceberg::table::Table {
    use iceberg::Catalog;
    l.catalog
        .load_table(&LakeTable::Trades.ident())
        .await
        .unwrap()
}

/// Writer options that commit every 4 000 rows, polling 1 000 at a time.
fn small_batches() -> WriterOptions {
    WriterOptions {
        max_rows: 4_000,
        poll_records: 1_000,
        ..Default::default()
    }
}

/// Snapshot ids of the table's main ancestry, newest first.
fn ancestry(table: &iceberg::table::Table) -> Vec<i64> {
    let m = table.metadata();
    let mut out = Vec::new();
    let mut at = m.current_snapshot();
    while let Some(s) = at {
        out.push(s.snapshot_id());
        at = s.parent_snapshot_id().and_then(|p| m.snapshot_by_id(p));
    }
    out
}

/// Rows in the trades table.
async fn trade_rows(l: &Lake) -> usize {
    let engine = QueryEngine::new(l.catalog.clone(), QueryOptions::default()).unwrap();
    let batches = engine
        .sql("SELECT count(*) FROM market_data.trades")
        .await
        .unwrap()
        .batches;
    batches[0]
        .column(0)
        .as_primitive::<arrow::datatypes::Int64Type>()
        .value(0) as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_snapshots_expire_but_never_what_a_writer_resumes_from() {
    use iceberg::transaction::ApplyTransactionAction;

    use crate::commit_marks::{committed_offsets, source_snapshot};
    use crate::retention;

    let l = lake().await;
    let trades = || trades_table(&l);
    // The metadata log names only the last 3 files, so that files go with a few commits.
    crate::ensure_tables(l.catalog.as_ref()).await.unwrap();
    let tx = iceberg::transaction::Transaction::new(&trades().await);
    let tx = tx
        .update_table_properties()
        .set("write.metadata.previous-versions-max".into(), "3".into())
        .apply(tx)
        .unwrap();
    tx.commit(l.catalog.as_ref()).await.unwrap();
    // Writer "" commits several snapshots; then writer "b", reading its own log (the
    // sample), one.
    ingest_synthetic(&l.log, &l.dlq, 3, 20_000).await;
    let small_batches = small_batches();
    write_with(&l, small_batches.clone()).await;
    let log_b = EmbeddedLog::open(&l._dir.path().join("log-b.redb")).unwrap();
    k2_ingest::ingest_asx(&log_b, &l.dlq, &sample(), &Default::default(), &mut |_| {})
        .await
        .unwrap();
    let b_options = WriterOptions {
        source: "b".into(),
        ..Default::default()
    };
    write_from(&log_b, &l, b_options).await;
    let table = trades().await;
    let chain = ancestry(&table);
    assert!(chain.len() >= 6, "{chain:?}");
    let offsets = |t: &iceberg::table::Table| {
        (
            committed_offsets(t, "").unwrap(),
            committed_offsets(t, "b").unwrap(),
        )
    };
    let before = offsets(&table);
    assert!(!before.0.is_empty() && !before.1.is_empty());
    let rows_before = trade_rows(&l).await;

    // Nothing is old enough under a day's retention.
    let now = chrono::Utc::now().timestamp_millis();
    assert!(retention::due(&table, Duration::from_secs(86_400), now).is_empty());
    // With none: everything past "b"'s snapshot (the current one) and ""'s newest goes.
    let due = retention::due(&table, Duration::ZERO, now);
    assert_eq!(due, chain[2..].to_vec());
    let lists: Vec<PathBuf> = due
        .iter()
        .map(|&id| {
            PathBuf::from(retention::local_path(
                table.metadata().snapshot_by_id(id).unwrap().manifest_list(),
            ))
        })
        .collect();
    assert!(lists.iter().all(|p| p.exists()), "{lists:?}");
    let (after, expired) = retention::expire(l.catalog.as_ref(), &table, Duration::ZERO, now)
        .await
        .unwrap();
    assert_eq!(expired.snapshots, chain.len() - 2);
    assert!(expired.files >= lists.len(), "{expired:?}");
    assert_eq!(ancestry(&after), chain[..2].to_vec());
    assert_eq!(ancestry(&trades().await), chain[..2].to_vec());
    assert!(lists.iter().all(|p| !p.exists()));
    // The positions both writers resume from, and every row, are still there.
    assert_eq!(offsets(&after), before);
    assert!(source_snapshot(&after, "").is_some());
    assert_eq!(trade_rows(&l).await, rows_before);
    // Metadata files: the current one and those its log names, none older.
    let named = after.metadata().metadata_log().len() + 1;
    let current = PathBuf::from(retention::local_path(after.metadata_location().unwrap()));
    let files = std::fs::read_dir(current.parent().unwrap())
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().ends_with(".metadata.json")
        })
        .count();
    assert!(
        named <= 4 && files == named,
        "{files} metadata files, {named} named"
    );

    // The writer expires by itself after a commit, keeping "b"'s snapshot.
    ingest_synthetic(&l.log, &l.dlq, 6, 24_000).await;
    let third = write_with(
        &l,
        WriterOptions {
            snapshot_retention: Some(Duration::ZERO),
            ..small_batches
        },
    )
    .await;
    assert_accounts(&third);
    let stored = third.rows_committed["market_data.trades"] as usize;
    assert!(third.commits > 2 && stored > 0, "{third:?}");
    let last = trades().await;
    let kept = ancestry(&last);
    // The run's first commit expired what came before it except "b"'s newest; its later
    // commits wait for the next check.
    assert!(kept.contains(&chain[0]), "b's snapshot: {kept:?}");
    assert!(!kept.contains(&chain[1]), "{kept:?}");
    assert_eq!(committed_offsets(&last, "b").unwrap(), before.1);
    assert_eq!(trade_rows(&l).await, rows_before + stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_files_no_snapshot_names_go_once_older_than_the_retention() {
    use crate::retention;

    let l = lake().await;
    let trades = || trades_table(&l);
    ingest_synthetic(&l.log, &l.dlq, 3, 12_000).await;
    let small_batches = small_batches();
    write_with(&l, small_batches.clone()).await;
    let table = trades().await;
    let data = PathBuf::from(retention::local_path(table.metadata().location())).join("data");
    // Every file under the directory: all are older than a day from now.
    let mut committed = Vec::new();
    let later = std::time::SystemTime::now() + Duration::from_secs(86_400);
    retention::old_files(&data, later, &mut committed).unwrap();
    assert!(committed.len() >= 3, "{committed:?}");
    let rows = trade_rows(&l).await;
    let day = Duration::from_secs(86_400);
    let now = std::time::SystemTime::now();
    let age = |path: &Path, by: Duration| {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(now - by).unwrap();
    };
    // Every committed file is two days old: old enough, and named, so kept. Of two files no
    // snapshot names (a batch written and never committed), the old one goes.
    let partition = committed[0].parent().unwrap();
    let (old, young) = (
        partition.join("k2-never-committed-old.parquet"),
        partition.join("k2-never-committed-young.parquet"),
    );
    for path in [&old, &young] {
        std::fs::copy(&committed[0], path).unwrap();
    }
    for path in committed.iter().chain([&old]) {
        age(path, 2 * day);
    }
    assert_eq!(
        retention::remove_orphan_files(&table, day, now)
            .await
            .unwrap(),
        1
    );
    assert!(!old.exists() && young.exists());
    assert!(committed.iter().all(|p| p.exists()));
    assert_eq!(trade_rows(&l).await, rows);
    // Nothing is old enough under a retention of three days: no manifest is even read.
    age(&young, 2 * day);
    assert_eq!(
        retention::remove_orphan_files(&table, 3 * day, now)
            .await
            .unwrap(),
        0
    );
    assert!(young.exists());

    // The writer looks by itself at its first commit.
    ingest_synthetic(&l.log, &l.dlq, 6, 24_000).await;
    let summary = write_with(
        &l,
        WriterOptions {
            snapshot_retention: Some(day),
            ..small_batches
        },
    )
    .await;
    assert!(summary.commits > 0, "{summary:?}");
    assert!(!young.exists());
    assert!(committed.iter().all(|p| p.exists()));
    assert_eq!(
        trade_rows(&l).await,
        rows + summary.rows_committed["market_data.trades"] as usize
    );
}
