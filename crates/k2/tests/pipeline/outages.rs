//! Dependencies that stop answering: a catalog outage waited out through the breaker, one
//! that stays down stopping the writer uncommitted, and a frozen Redis.

use super::*;

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

/// A writer of `options` running to the end of the log on a task of its own, retrying a
/// failing dependency for a long while through a breaker that opens after two failures.
fn spawn_patient_writer(
    l: &Lake,
    options: WriterOptions,
) -> tokio::task::JoinHandle<Result<k2_lake::WriterSummary, LakeError>> {
    let options = WriterOptions {
        until_caught_up: true,
        max_age: Duration::from_secs(3600),
        retry: k2_pipeline::RetryPolicy {
            attempts: 200,
            base: Duration::from_millis(20),
            max_delay: Duration::from_millis(300),
        },
        breaker: k2_pipeline::BreakerConfig {
            failure_threshold: 2,
            open_for: Duration::from_millis(200),
        },
        ..options
    };
    let (log, catalog, dlq) = (l.log.clone(), l.catalog.clone(), l.dlq.clone());
    tokio::spawn(async move {
        writer::run(&log, catalog, &dlq, &options, CancellationToken::new()).await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_outage_is_waited_out_through_the_breaker_and_the_run_lands_exact() {
    let l = lake().await;
    ingest_sample(&l).await;
    let outage = Outage::begin(&l).await;
    let writer = spawn_patient_writer(
        &l,
        WriterOptions {
            max_rows: 40_000,
            ..Default::default()
        },
    );
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

/// A Redis that stops answering mid-batch (frozen: its connections stay open and nothing
/// comes back) fails the writer's calls with a retryable timeout instead of hanging it;
/// the writer retries through its breaker, and once Redis answers again every row lands
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_is_waited_out_and_every_row_lands_once() {
    let Some(redis) = k2_testkit::services::RedisServer::start() else {
        return;
    };
    let l = lake().await;
    ingest_sample(&l).await;
    let target = k2_lake::RedisTarget {
        addr: redis.addr(),
        prefix: "k2".into(),
        timeout: Duration::from_millis(500),
    };
    let mut options = WriterOptions {
        max_rows: 20_000,
        poll_records: 5_000,
        // Enough attempts to outlast the freeze; a short breaker so it is seen to open.
        retry: k2_pipeline::RetryPolicy {
            attempts: 60,
            base: Duration::from_millis(50),
            max_delay: Duration::from_millis(300),
        },
        breaker: k2_pipeline::BreakerConfig {
            failure_threshold: 2,
            open_for: Duration::from_millis(300),
        },
        ..Default::default()
    };
    options.integrity.sequence_redis = Some(target.clone());
    options.integrity.dedup_redis = Some(target);
    let watch = redis::Client::open(format!("redis://{}/", redis.addr()))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let freeze = async {
        // The first claims are in: a batch is being written.
        k2_testkit::poll::until_async(Duration::from_secs(120), "claims in Redis", || {
            let mut con = watch.clone();
            async move {
                let keys: u64 = redis::cmd("DBSIZE").query_async(&mut con).await.ok()?;
                (keys > 0).then_some(())
            }
        })
        .await;
        redis.freeze();
        // The outage's length, not a synchronisation: the writer meets it wherever it is.
        tokio::time::sleep(Duration::from_secs(3)).await;
        redis.thaw();
    };
    let (summary, ()) = tokio::join!(write_with(&l, options), freeze);
    assert_accounts(&summary);
    assert!(
        summary.retries.get("redis").copied().unwrap_or(0) > 0,
        "the freeze was met: {summary:?}"
    );
    assert!(
        summary
            .breaker_transitions
            .iter()
            .any(|t| t == "redis:open"),
        "{summary:?}"
    );
    assert_eq!(
        summary.rows_committed.values().sum::<u64>(),
        k2_testkit::sample::TRADES + k2_testkit::sample::QUOTES + 4,
        "{summary:?}"
    );
    let ids = stored_ids(&l).await;
    for (t, n) in [(LakeTable::Trades, 91_874), (LakeTable::Quotes, 78_458)] {
        let mut unique = ids[&t].clone();
        unique.dedup();
        assert_eq!((ids[&t].len(), unique.len()), (n, n), "{t}");
    }
    drop(watch);
}

/// The warehouse's S3 server goes away in the middle of a run (killed while data files
/// are being written and committed) and comes back on the same port with the same
/// objects: the writer's storage and catalog calls fail, are retried through their
/// breakers, and once the server is back every row lands exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_store_outage_mid_commit_is_waited_out_and_every_row_lands_once() {
    let Some(mut server) = k2_testkit::s3::S3Server::start("lake") else {
        return;
    };
    let bucket = server.bucket("lake");
    let l = lake_in(tempfile::tempdir().unwrap(), common::s3_warehouse(&bucket)).await;
    ingest_sample(&l).await;
    let writer = spawn_patient_writer(
        &l,
        WriterOptions {
            max_rows: 10_000,
            poll_records: 5_000,
            ..Default::default()
        },
    );
    // Some trades files are in the bucket: the writer is between commits.
    let trades = format!("{}/market_data/trades/data", bucket.prefix);
    k2_testkit::poll::until_async(Duration::from_secs(120), "data files in the bucket", || {
        let found = server.objects("lake", &trades).len();
        async move { (found >= 2).then_some(()) }
    })
    .await;
    server.down();
    // Longer than the storage client's own retries (OpenDAL's retry layer backs off 1, 2
    // and 4 s before it reports a failure), so the writer's retries and breakers act.
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert!(!writer.is_finished(), "the writer waits for the store");
    server.up();
    let summary = tokio::time::timeout(Duration::from_secs(180), writer)
        .await
        .expect("the writer finishes once the store is back")
        .unwrap()
        .unwrap();
    let retried: u64 = ["storage", "catalog"]
        .iter()
        .filter_map(|d| summary.retries.get(*d))
        .sum();
    assert!(retried >= 2, "{summary:?}");
    let t = &summary.breaker_transitions;
    assert!(t.iter().any(|s| s.ends_with(":open")), "{t:?}");
    assert_accounts(&summary);
    let engine = QueryEngine::new(l.catalog.clone(), QueryOptions::default()).unwrap();
    assert_eq!(engine.count(LakeTable::Trades, None).await.unwrap(), 91_874);
    assert_eq!(engine.count(LakeTable::Quotes, None).await.unwrap(), 78_458);
    let distinct = engine
        .sql("SELECT count(DISTINCT message_id) FROM market_data.trades")
        .await
        .unwrap()
        .batches;
    let distinct = distinct[0].column(0).as_primitive::<Int64Type>().value(0);
    assert_eq!(distinct, 91_874, "no trade twice");
}
