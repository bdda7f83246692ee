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
