//! The spine end to end, in process: the bundled ASX sample → embedded log → lake writer →
//! Iceberg tables → queries, checked against figures computed straight from the CSV files.
//!
//! The lake runs on the catalog the environment names (SQLite by default, PostgreSQL with
//! `K2_TEST_CATALOG=postgres`); the test script runs this suite on both.
//!
//! - `landing` — the sample lands exactly and every answer matches the CSV files.
//! - `integrity` — dedup, sequence state across restarts, dead letters, shared writers.
//! - `outages` — a catalog or a Redis that stops answering, waited out or given up cleanly.
//! - `replay_and_tail` — ordered replay, and the live tail merged with the lake.
//! - `retention` — expiry and orphan sweeps never touch what a writer resumes from.

#[path = "../common/mod.rs"]
mod common;
mod compaction;
mod evolution;
mod integrity;
mod landing;
mod outages;
mod replay_and_tail;
mod retention;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use chrono::NaiveDate;
use k2_log::{DeadLetterStore, EmbeddedLog};
use tokio_util::sync::CancellationToken;

use k2_lake::query::{
    AggregateRequest, BarInterval, MarketFilter, QueryEngine, QueryOptions, RowOrder,
};
use k2_lake::tables::LakeTable;
use k2_lake::writer::{self, WriterOptions};
use k2_lake::{LakeError, Warehouse, open_catalog};

fn sample() -> PathBuf {
    k2_testkit::sample::dir()
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

/// A lake on the catalog and warehouse the environment names: SQLite in a temporary
/// directory (the default), or with `K2_TEST_CATALOG=postgres` a fresh database on the
/// PostgreSQL server at `K2_TEST_POSTGRES_URL`; its files in the same directory, or with
/// `K2_TEST_WAREHOUSE=s3` under a fresh prefix of the S3 server's bucket (the test script
/// starts both servers on loopback).
async fn lake() -> Lake {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = match std::env::var("K2_TEST_WAREHOUSE").as_deref() {
        Ok("s3") => common::s3_warehouse(&k2_testkit::s3::Bucket::from_env()),
        Ok("local") | Err(_) => Warehouse::local(&dir.path().join("warehouse")).unwrap(),
        Ok(other) => panic!("K2_TEST_WAREHOUSE must be local or s3, not {other}"),
    };
    lake_in(dir, warehouse).await
}

/// A lake whose files are on the local disk whatever the environment says (for tests
/// that age files by their modification time).
async fn lake_on_disk() -> Lake {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = Warehouse::local(&dir.path().join("warehouse")).unwrap();
    lake_in(dir, warehouse).await
}

async fn lake_in(dir: tempfile::TempDir, warehouse: Warehouse) -> Lake {
    let log = EmbeddedLog::open(&dir.path().join("log.redb")).unwrap();
    let dlq = DeadLetterStore::open(&dir.path().join("dlq.redb"), 10_000).unwrap();
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
            let catalog = k2_lake::open_catalog_at(&uri, "k2", &warehouse)
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

/// K2's committer of its own table updates (tags) on the lake's catalog database.
async fn committer(l: &Lake) -> k2_lake::table_commit::TableCommitter {
    let uri = match &l.postgres {
        Some((admin, db)) => format!("{}/{db}", admin.rsplit_once('/').unwrap().0),
        None => format!("sqlite:{}", l._dir.path().join("catalog.db").display()),
    };
    k2_lake::table_commit::TableCommitter::sql(l.catalog.clone(), &uri, "k2")
        .await
        .unwrap()
}

/// The whole ASX sample ingested into the lake's log.
async fn ingest_sample(l: &Lake) {
    k2_ingest::ingest_asx(&l.log, &l.dlq, &sample(), &Default::default(), &mut |_| {})
        .await
        .unwrap();
}

async fn write_all(l: &Lake, max_rows: usize) -> k2_lake::WriterSummary {
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
async fn write_with(l: &Lake, options: WriterOptions) -> k2_lake::WriterSummary {
    let mut options = options;
    options.integrity.state_dir = Some(l._dir.path().join("state"));
    write_from(&l.log, l, options).await
}

/// A batch-mode writer run from `log` into the lake's tables.
async fn write_from(log: &EmbeddedLog, l: &Lake, options: WriterOptions) -> k2_lake::WriterSummary {
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

/// Every record read is committed, dead-lettered or dropped as a duplicate.
fn assert_accounts(s: &k2_lake::WriterSummary) {
    let committed: u64 = s.rows_committed.values().sum();
    assert_eq!(
        s.records_consumed,
        committed + s.dead_lettered + s.duplicates_dropped,
        "records in = stored + dead-lettered + duplicates: {s:?}"
    );
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

/// The Redis at `K2_TEST_REDIS_ADDR` (scripts/test starts one; required in CI).
fn test_redis() -> Option<k2_lake::RedisTarget> {
    match std::env::var("K2_TEST_REDIS_ADDR") {
        Ok(addr) => Some(k2_lake::RedisTarget {
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
