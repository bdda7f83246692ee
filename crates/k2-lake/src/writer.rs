//! The lake writer: log → decode → batch → Parquet → Iceberg fast-append, exactly once.
//!
//! Exactly once rests on one rule: the log positions a commit covers are written in the
//! same Iceberg snapshot as its data (snapshot summary property `k2.log-offsets`, the
//! cumulative next offset of every partition feeding the table). On start the writer reads
//! them back from each table's current snapshot and resumes there, so a crash at any point
//! either loses the uncommitted batch (read again on restart) or keeps it (never read
//! again). Files written but not committed are orphans no snapshot refers to; their names
//! derive from the log positions they hold.
//!
//! A batch is encoded and committed on its own task while the writer polls and decodes the
//! next one (one batch in flight at a time, so commits stay in order). What the batch
//! stands for is fixed when it is cut: its positions, and the dedup and sequence state of
//! every record admitted up to then.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use arrow::datatypes::SchemaRef;
use iceberg::Catalog;
use iceberg::spec::{DataFile, DataFileFormat, Literal, PartitionKey, Struct};
use iceberg::table::Table;
use iceberg::transaction::{ApplyTransactionAction, Transaction};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use k2_log::{
    ConsumedRecord, DeadLetter, DeadLetterStore, LAKE_DECODE_STAGE, Log, LogConsumer,
    PartitionOffset, PayloadDecoder, SchemaStore, Undecodable,
};
use k2_model::{DataType, MarketRecord, MessageId, TopicName, exchange};
use k2_pipeline::{BreakerConfig, DedupConfig, RetryPolicy, SequenceConfig};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::Serialize;

use crate::audit::{self, AuditEntry};
use crate::columns::{self, Row, Rows};
use crate::error::{LakeError, Result};
use crate::guard::Dependency;
use crate::integrity::{TableIntegrity, Verdict};
use crate::metrics;
use crate::tables::LakeTable;

/// Snapshot summary key holding the log positions a table has committed.
pub const OFFSETS_PROPERTY: &str = "k2.log-offsets";
/// Rows per Parquet data page (at most).
const PAGE_ROWS: usize = 8192;

/// Rows whose Arrow columns a file's task builds at a time (see `write_files`).
const SLICE_ROWS: usize = 4 * PAGE_ROWS;

const DAY_US: i64 = 86_400_000_000;

/// How the writer batches and where it stops.
#[derive(Clone, Debug)]
pub struct WriterOptions {
    /// Commit a table once this many rows are waiting. The next batch fills while one is
    /// written and committed, so up to twice this many rows are held.
    pub max_rows: usize,
    /// Commit a table once its oldest waiting row is this old.
    pub max_age: Duration,
    /// Records taken from the log per poll.
    pub poll_records: usize,
    /// zstd level of the Parquet files.
    pub zstd_level: i32,
    /// Consumer group name under which positions are reported (monitoring only).
    pub group: String,
    /// Stop once every assigned partition is fully committed (batch mode).
    pub until_caught_up: bool,
    /// Retries of a retryable failure of the catalog, the object store or the log.
    pub retry: RetryPolicy,
    /// Circuit breaker of each of those dependencies.
    pub breaker: BreakerConfig,
    /// Dedup window and memory bound (per table).
    pub dedup: DedupConfig,
    /// Sequence tracking of each (exchange, symbol) stream.
    pub sequence: SequenceConfig,
    /// Where sequence state is kept between runs (None: in this process only, so a
    /// restart starts every stream afresh).
    pub state_dir: Option<PathBuf>,
    /// Keep sequence state in Redis, shared by several writers (None: in this process,
    /// persisted with each commit).
    pub sequence_redis: Option<RedisTarget>,
    /// The append-only commit audit file (None: commits are only logged).
    pub audit_path: Option<PathBuf>,
    /// Names this writer's log when several writers, each reading its own log (say, two
    /// captures of one feed), write the same tables: its positions are recorded under
    /// this name (snapshot property `k2.source`). Empty for the single writer.
    pub source: String,
    /// Claim every batch's message ids in this Redis before writing it, so that records
    /// reaching several writers are stored once (None: dedup within this writer only).
    pub dedup_redis: Option<RedisTarget>,
    /// How long a claim holds while its batch is written and committed; a writer that
    /// dies mid-batch blocks those ids this long.
    pub dedup_lease: Duration,
    /// Snapshots older than this are expired (see [`crate::retention`]), checked after a
    /// commit at most every [`EXPIRE_EVERY`]; None keeps every snapshot.
    pub snapshot_retention: Option<Duration>,
}

/// How often, at most, the writer expires a table's old snapshots: each expiry is a
/// catalog commit of its own.
pub const EXPIRE_EVERY: Duration = Duration::from_secs(600);

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            max_rows: 1_000_000,
            max_age: Duration::from_secs(10),
            poll_records: 50_000,
            zstd_level: 1,
            group: "k2-lake-writer".into(),
            until_caught_up: false,
            retry: RetryPolicy::default(),
            breaker: BreakerConfig::default(),
            dedup: DedupConfig::default(),
            sequence: SequenceConfig::default(),
            state_dir: None,
            sequence_redis: None,
            audit_path: None,
            source: String::new(),
            dedup_redis: None,
            dedup_lease: Duration::from_secs(300),
            snapshot_retention: None,
        }
    }
}

/// A Redis server and the key prefix K2's state lives under there.
#[derive(Clone, Debug)]
pub struct RedisTarget {
    /// `host:port`.
    pub addr: String,
    /// Keys are `{prefix}:{table}:seq:{exchange}:{symbol}` (sequence state) and
    /// `{prefix}:{table}:id:{16 bytes}` (dedup claims).
    pub prefix: String,
}

/// What a writer run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WriterSummary {
    /// Records read from the log. When the run ends caught up (or stopped cleanly):
    /// `records_consumed = rows committed + dead_lettered + duplicates_dropped`.
    pub records_consumed: u64,
    pub rows_committed: BTreeMap<String, u64>,
    pub commits: u64,
    pub dead_lettered: u64,
    /// Records dropped because their message id was already stored or seen.
    pub duplicates_dropped: u64,
    /// Sequence-tracker events of the market records consumed (in order, gap, late fill,
    /// duplicate, session reset, too old), summed over the (exchange, symbol) streams of
    /// each table.
    pub sequence_events: BTreeMap<&'static str, u64>,
    /// Source sequences found missing by gaps.
    pub sequence_missing: u64,
    /// Retries per dependency (catalog, storage, log).
    pub retries: BTreeMap<&'static str, u64>,
    /// Circuit-breaker transitions in order, e.g. `catalog:open`.
    pub breaker_transitions: Vec<String>,
    pub seconds: f64,
}

/// The writer's dependencies, each behind retries and a circuit breaker. The catalog and
/// the object store go with a batch in flight ([`Flight`]) and come back when it lands.
struct Deps {
    commit: Option<CommitDeps>,
    log: Dependency,
    redis: Dependency,
}

struct CommitDeps {
    catalog: Dependency,
    storage: Dependency,
}

impl Deps {
    fn new(options: &WriterOptions) -> Self {
        let dep = |name| Dependency::new(name, options.retry.clone(), options.breaker.clone());
        Deps {
            commit: Some(CommitDeps {
                catalog: dep("catalog"),
                storage: dep("storage"),
            }),
            log: dep("log"),
            redis: dep("redis"),
        }
    }

    /// The catalog, between batches (it travels with a batch in flight).
    fn catalog(&mut self) -> &mut Dependency {
        &mut self
            .commit
            .as_mut()
            .expect("the catalog is used only with no batch in flight")
            .catalog
    }

    /// Retries and breaker transitions so far; called with no batch in flight.
    fn report(&self, summary: &mut WriterSummary) {
        summary.retries.clear();
        summary.breaker_transitions.clear();
        let commit = self.commit.iter().flat_map(|c| [&c.catalog, &c.storage]);
        for d in commit.chain([&self.log, &self.redis]) {
            if d.retries > 0 {
                summary.retries.insert(d.name(), d.retries);
            }
            summary.breaker_transitions.extend(
                d.transitions
                    .iter()
                    .map(|s| format!("{}:{}", d.name(), s.as_str())),
            );
        }
    }
}

struct TableState {
    table: Table,
    arrow_schema: SchemaRef,
    committed: BTreeMap<String, u64>,
    pending: Rows,
    /// The chunks of the last batch that landed, reused by the next one (no fresh pages
    /// to fault in).
    spare: Rows,
    pending_letters: Vec<DeadLetter>,
    /// Next offset per partition covered by the pending rows and letters.
    pending_offsets: BTreeMap<String, u64>,
    /// First offset of this batch per partition (names the files).
    batch_start: BTreeMap<String, u64>,
    oldest: Option<Instant>,
    integrity: TableIntegrity,
    /// When this run last expired the table's old snapshots.
    expired_at: Option<Instant>,
    /// When this run last looked for data files no snapshot names, and that look if it
    /// is still going (it runs beside the writer: it reads every manifest of the table).
    swept_at: Option<Instant>,
    sweep: Option<tokio::task::JoinHandle<()>>,
}

/// An exchange's trading day of an instant, remembering the last day's bounds (rows come
/// in time order, so the time-zone lookup runs about once per day).
struct TradingDays {
    tz: chrono_tz::Tz,
    last: Option<(i64, i64, i32)>,
}

impl TradingDays {
    fn new(exchange_code: &str) -> Self {
        TradingDays {
            tz: exchange::time_zone(exchange_code),
            last: None,
        }
    }

    fn day_of(&mut self, ts_us: i64) -> i32 {
        if let Some((start, end, days)) = self.last
            && (start..end).contains(&ts_us)
        {
            return days;
        }
        let date = exchange::trading_day(self.tz, ts_us);
        let (start, end) = exchange::day_bounds_us(self.tz, date);
        let days = columns::days_since_epoch(date);
        self.last = Some((start, end, days));
        days
    }
}

pub fn offset_key(source: &str, topic: &str, partition: u32) -> String {
    if source.is_empty() {
        format!("{topic}/{partition}")
    } else {
        format!("{source}:{topic}/{partition}")
    }
}

/// Snapshot summary key: the name of the batch the snapshot committed.
pub const BATCH_PROPERTY: &str = "k2.batch";
/// Snapshot summary key: the writer source whose positions the snapshot records.
pub const SOURCE_PROPERTY: &str = "k2.source";

/// The table's current metadata from the catalog.
async fn load_table(catalog: &dyn Catalog, t: LakeTable) -> Result<Table> {
    catalog
        .load_table(&t.ident())
        .await
        .map_err(|e| LakeError::catalog(format!("loading {t}"), e))
}

/// The newest snapshot `source` committed, walking back from the current one.
pub fn source_snapshot<'t>(
    table: &'t Table,
    source: &str,
) -> Option<&'t iceberg::spec::SnapshotRef> {
    let metadata = table.metadata();
    let mut at = metadata.current_snapshot();
    while let Some(s) = at {
        let props = &s.summary().additional_properties;
        if props.get(SOURCE_PROPERTY).map_or("", String::as_str) == source {
            return Some(s);
        }
        at = s
            .parent_snapshot_id()
            .and_then(|p| metadata.snapshot_by_id(p));
    }
    None
}

/// The positions `source` committed: those its newest snapshot records (the current
/// snapshot when one writer writes the table; with several, each finds its own).
pub fn committed_offsets(table: &Table, source: &str) -> Result<BTreeMap<String, u64>> {
    let Some(snapshot) = source_snapshot(table, source) else {
        return Ok(BTreeMap::new());
    };
    match snapshot
        .summary()
        .additional_properties
        .get(OFFSETS_PROPERTY)
    {
        None => Ok(BTreeMap::new()),
        Some(json) => serde_json::from_str(json).map_err(|e| {
            LakeError::Query(format!(
                "snapshot {} has an unreadable {OFFSETS_PROPERTY}: {e}",
                snapshot.snapshot_id()
            ))
        }),
    }
}

/// Runs the writer until `stop` is set (or until caught up in batch mode).
pub async fn run<L: Log + SchemaStore + Clone>(
    log: &L,
    catalog: Arc<dyn Catalog>,
    dlq: &DeadLetterStore,
    options: &WriterOptions,
    stop: Arc<AtomicBool>,
) -> Result<WriterSummary> {
    let started = Instant::now();
    let mut deps = Deps::new(options);
    // A catalog that is down at start is waited for like one that fails later.
    deps.catalog()
        .call(|| crate::tables::ensure_tables(catalog.as_ref()))
        .await?;
    let mut states = BTreeMap::new();
    for t in LakeTable::ALL {
        let table = deps
            .catalog()
            .call(|| load_table(catalog.as_ref(), t))
            .await?;
        let arrow_schema = Arc::new(
            iceberg::arrow::schema_to_arrow_schema(table.metadata().current_schema())
                .map_err(|e| LakeError::catalog("arrow schema", e))?,
        );
        let committed = committed_offsets(&table, &options.source)?;
        if let Some(path) = &options.audit_path {
            let recovered = audit::reconcile(path, t, &table)?;
            if recovered > 0 {
                tracing::warn!(table = %t, commits = recovered, "audit lines recovered from snapshots");
            }
        }
        let integrity = TableIntegrity::restore(t, &table, options).await?;
        states.insert(
            t,
            TableState {
                table,
                arrow_schema,
                committed,
                pending: Rows::default(),
                spare: Rows::default(),
                pending_letters: Vec::new(),
                pending_offsets: BTreeMap::new(),
                batch_start: BTreeMap::new(),
                oldest: None,
                integrity,
                expired_at: None,
                swept_at: None,
                sweep: None,
            },
        );
    }

    // Assign every partition of every K2 topic, from the position its table committed.
    let mut routes: HashMap<Arc<str>, (LakeTable, TopicName)> = HashMap::new();
    let mut assignment = Vec::new();
    add_new_topics(
        log,
        &options.source,
        &mut deps.log,
        &states,
        &mut routes,
        &mut assignment,
    )
    .await?;
    tracing::info!(partitions = assignment.len(), "lake writer starting");
    let mut consumer = log.consumer(assignment.clone())?;
    // The group's positions are the lake's from the start (on Kafka this also has the
    // group's client find its coordinator before the first commit needs it), and each
    // partition's lag is known at once.
    let reports = Reports::start(log, &options.group);
    reports.report(assignment.clone(), None);
    let mut decoder = PayloadDecoder::default();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // The decoded payloads of a poll; the allocation is kept from poll to poll.
    let mut decoded = Vec::new();
    let mut summary = WriterSummary::default();
    // Per exchange: a handful, searched in order (cheaper than hashing the name per record).
    let mut days: Vec<(String, TradingDays)> = Vec::new();

    let mut topics_checked = Instant::now();
    let mut flight: Option<Flight> = None;
    let mut ends_seen = HashMap::new();
    loop {
        // Topics created after the start (another exchange, or an ingest that started
        // later than the writer) join the assignment, read from their beginning.
        if topics_checked.elapsed() >= TOPIC_REFRESH {
            topics_checked = Instant::now();
            let mut added = Vec::new();
            add_new_topics(
                log,
                &options.source,
                &mut deps.log,
                &states,
                &mut routes,
                &mut added,
            )
            .await?;
            if !added.is_empty() {
                tracing::info!(
                    partitions = added.len(),
                    "new topics joined the lake writer"
                );
                let mut all = consumer.positions();
                all.extend(added);
                consumer = log.consumer(all)?;
            }
        }
        let (max, wait) = (options.poll_records, Duration::from_millis(200));
        let mut records = deps
            .log
            .call_mut(&mut consumer, |c| {
                Box::pin(async move { Ok(c.poll(max, wait).await?) })
            })
            .await?;
        let got = records.len();
        summary.records_consumed += got as u64;
        metrics::records_consumed(got);
        // The schemas first (the store may be remote), then the payloads, decoded over
        // the machine's cores.
        decoder.learn(log, &records).await?;
        decode_all(
            &decoder,
            &records,
            threads,
            |rec| routes.get(&rec.topic).map(|(_, name)| name.data_type),
            &mut decoded,
        );
        // Duplicates of this poll, counted here and published once per poll (a labelled
        // counter lookup per record would cost more than the check).
        let mut duplicates: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut at = 0;
        while at < records.len() {
            // Records come in runs of one partition: the table, the position's key and the
            // batch's first offset are looked up once per run.
            let (topic, partition) = (records[at].topic.clone(), records[at].partition);
            let run_len = records[at..]
                .iter()
                .position(|r| {
                    r.partition != partition || !(Arc::ptr_eq(&r.topic, &topic) || r.topic == topic)
                })
                .unwrap_or(records.len() - at);
            let run = at..at + run_len;
            at += run_len;
            let Some(&(table, _)) = routes.get(&topic) else {
                continue;
            };
            let state = states.get_mut(&table).expect("every table has a state");
            let key = offset_key(&options.source, &topic, partition);
            if !state.batch_start.contains_key(&key) {
                state
                    .batch_start
                    .insert(key.clone(), records[run.start].offset);
            }
            state.oldest.get_or_insert_with(Instant::now);
            let end = records[run.end - 1].offset + 1;
            for (rec, decoded) in records[run.clone()].iter_mut().zip(&mut decoded[run]) {
                // Every record of a routed topic was decoded.
                let Some(decoded) = decoded.take() else {
                    continue;
                };
                match decoded {
                    Ok(record) => {
                        if state.integrity.admit(&record)? == Verdict::Duplicate {
                            *duplicates.entry(table.name()).or_default() += 1;
                            continue;
                        }
                        let calendar = match days.iter().position(|(e, _)| e == record.exchange()) {
                            Some(i) => &mut days[i].1,
                            None => {
                                let exchange = record.exchange();
                                days.push((exchange.to_string(), TradingDays::new(exchange)));
                                &mut days.last_mut().expect("pushed above").1
                            }
                        };
                        let trade_date = record.event_time_us().map_or(0, |t| calendar.day_of(t));
                        state.pending.push(Row { record, trade_date });
                    }
                    Err(Undecodable { kind, reason }) => {
                        metrics::decode_failed(kind);
                        state.pending_letters.push(DeadLetter {
                            stage: LAKE_DECODE_STAGE.into(),
                            source: format!("{}/{}@{}", rec.topic, rec.partition, rec.offset),
                            kind: kind.into(),
                            reason,
                            raw: std::mem::take(&mut rec.value),
                            rejected_at_us: chrono::Utc::now().timestamp_micros(),
                        });
                    }
                }
            }
            state.pending_offsets.insert(key, end);
        }
        for (t, state) in states.iter_mut() {
            // With Redis the checks run here; a failure is retried like any dependency's
            // (a retry after a lost reply can count a message twice, never drop one).
            let events = deps
                .redis
                .call_mut(&mut state.integrity, |i| Box::pin(i.take_events()))
                .await?;
            for (event, n) in events.counts {
                metrics::sequence_events(t.name(), event, n);
                *summary.sequence_events.entry(event).or_default() += n;
            }
            for (exchange, symbol, gap) in events.gaps {
                summary.sequence_missing += gap.count();
                tracing::debug!(
                    table = %t, exchange = %exchange, symbol = %symbol,
                    first = gap.first, last = gap.last, "sequence gap"
                );
            }
        }
        for (table, n) in duplicates {
            metrics::duplicates_dropped(table, n);
            summary.duplicates_dropped += n;
        }
        let stopping = stop.load(Ordering::Relaxed);
        // A batch run finishes once a poll brings nothing or every partition has been
        // read to the end the consumer last saw: the empty poll after the last records
        // is not waited out.
        let read_to_end = consumer.read_to_end();
        let drained = options.until_caught_up && (got == 0 || read_to_end);
        let finishing = stopping || drained;
        // Where the log ends, when the consumer knows it without asking.
        let ends_read = read_to_end.then(|| consumer.positions());
        // A batch in flight keeps its claims renewed until it lands.
        if let Some(f) = &mut flight {
            let integrity = &mut states.get_mut(&f.table).expect("a state").integrity;
            renew_claims(f, integrity, &mut deps.redis).await?;
        }
        // A table is due when its rows reach `max_rows`, its oldest row `max_age`, or the
        // run ends.
        let mut due = states
            .iter()
            .filter_map(|(&t, state)| {
                let full = state.pending.len() >= options.max_rows
                    || (finishing && !state.pending_offsets.is_empty());
                let aged = state.oldest.is_some_and(|o| o.elapsed() >= options.max_age);
                (full || aged).then_some((t, full))
            })
            .collect::<Vec<_>>()
            .into_iter();
        loop {
            let next = due.next();
            // One due by age alone waits for a later poll while the batch in flight is
            // still being written, rather than holding up reading until it lands.
            if next.is_some_and(|(_, full)| !full)
                && flight.as_ref().is_some_and(|f| !f.task.is_finished())
            {
                continue;
            }
            let next = next.map(|(t, _)| t);
            // The batch in flight lands once its commit is done, before the next cut (one
            // batch in flight at a time: commits stay in order, and the rows held are at
            // most the batch in flight and the one filling), and when the run is ending.
            if flight
                .as_ref()
                .is_some_and(|f| next.is_some() || finishing || f.task.is_finished())
            {
                let f = flight.take().expect("checked above");
                let landed = f.table;
                let positions = land(f, &mut states, options, &mut deps, &mut summary).await?;
                reports.report(positions, ends_read.as_deref());
                if let Some(keep_for) = options.snapshot_retention {
                    let state = states.get_mut(&landed).expect("a state");
                    expire_old_snapshots(landed, state, catalog.as_ref(), keep_for).await;
                }
            }
            let Some(t) = next else { break };
            let state = states.get_mut(&t).expect("a state");
            flight = take_off(
                t,
                state,
                &catalog,
                &Letters { store: dlq, log },
                options,
                &mut deps,
                &mut summary,
            )
            .await?;
        }
        if stopping {
            break;
        }
        if drained
            && caught_up(
                log,
                &options.source,
                &mut deps.log,
                &states,
                &routes,
                &mut ends_seen,
                ends_read.as_deref(),
            )
            .await?
        {
            break;
        }
    }
    reports.finish().await;
    // A look for orphan files still going is finished in a batch run and given up when
    // stopped (each file's deletion stands alone; the next run looks again).
    let stopped = stop.load(Ordering::Relaxed);
    for sweep in states.values_mut().filter_map(|s| s.sweep.take()) {
        if stopped {
            sweep.abort();
        }
        let _ = sweep.await;
    }
    deps.report(&mut summary);
    summary.seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        consumed = summary.records_consumed,
        commits = summary.commits,
        dead_lettered = summary.dead_lettered,
        seconds = summary.seconds,
        "lake writer stopped"
    );
    Ok(summary)
}

/// Polls smaller than this are decoded on the writer's thread alone.
const PARALLEL_DECODE_FROM: usize = 4096;

/// A poll's records decoded: `None` for a record whose topic is not routed.
type Decoded = Option<std::result::Result<MarketRecord, Undecodable>>;

/// Decodes a poll's payloads in order into `out` (one entry per record), spread over
/// `threads` threads when the poll is large: the writer's loop is one thread, and decoding
/// is its largest part. Each thread fills its own part of `out`, whose allocation the
/// writer keeps from poll to poll.
fn decode_all(
    decoder: &PayloadDecoder,
    records: &[ConsumedRecord],
    threads: usize,
    expected: impl Fn(&ConsumedRecord) -> Option<DataType> + Sync,
    out: &mut Vec<Decoded>,
) {
    let decode = |records: &[ConsumedRecord], out: &mut [Decoded]| {
        for (r, slot) in records.iter().zip(out) {
            *slot = expected(r).map(|dt| decoder.decode_known(&r.value, dt));
        }
    };
    out.clear();
    out.resize_with(records.len(), || None);
    if threads < 2 || records.len() < PARALLEL_DECODE_FROM {
        return decode(records, out);
    }
    let share = records.len().div_ceil(threads);
    let (first, rest) = records.split_at(share);
    let (first_out, rest_out) = out.split_at_mut(share);
    let mut not_started = Vec::new();
    std::thread::scope(|s| {
        for (i, (part, part_out)) in rest
            .chunks(share)
            .zip(rest_out.chunks_mut(share))
            .enumerate()
        {
            let helper = std::thread::Builder::new()
                .name("k2-decode".into())
                .spawn_scoped(s, move || decode(part, part_out));
            if helper.is_err() {
                not_started.push(i + 1);
            }
        }
        decode(first, first_out);
    });
    // A helper that could not start leaves its part to this thread.
    for i in not_started {
        let part = i * share..((i + 1) * share).min(records.len());
        decode(&records[part.clone()], &mut out[part]);
    }
}

/// How often the writer looks for topics created since it started.
const TOPIC_REFRESH: Duration = Duration::from_secs(2);

/// Routes K2 topics not yet in `routes` to their tables and appends their partitions,
/// from the positions their tables committed, to `assignment`.
async fn add_new_topics<L: Log>(
    log: &L,
    source: &str,
    dep: &mut Dependency,
    states: &BTreeMap<LakeTable, TableState>,
    routes: &mut HashMap<Arc<str>, (LakeTable, TopicName)>,
    assignment: &mut Vec<PartitionOffset>,
) -> Result<()> {
    let specs = dep.call(|| async { Ok(log.topics().await?) }).await?;
    for spec in specs {
        if routes.contains_key(spec.name.as_str()) {
            continue;
        }
        let Ok(name) = TopicName::parse(&spec.name) else {
            tracing::debug!(topic = %spec.name, "not a K2 topic name; not written to the lake");
            continue;
        };
        let table = LakeTable::for_data_type(name.data_type);
        for p in 0..spec.partitions {
            let offset = states[&table]
                .committed
                .get(&offset_key(source, &spec.name, p))
                .copied()
                .unwrap_or(0);
            assignment.push(PartitionOffset {
                topic: spec.name.clone(),
                partition: p,
                offset,
            });
        }
        routes.insert(spec.name.as_str().into(), (table, name));
    }
    Ok(())
}

/// Records per partition between the committed position and the end of the log.
async fn report_partition_lag<L: Log>(
    log: &L,
    positions: &[PartitionOffset],
    ends_read: Option<&[PartitionOffset]>,
) {
    let mut topics: Vec<&str> = positions.iter().map(|p| p.topic.as_str()).collect();
    topics.sort_unstable();
    topics.dedup();
    for topic in topics {
        let ends = match ends_read.and_then(|read| ends_read_of(read, topic)) {
            Some(ends) => Ok(ends),
            None => log.end_offsets(topic).await,
        };
        match ends {
            Ok(ends) => {
                for p in positions.iter().filter(|p| p.topic == topic) {
                    if let Some(&end) = ends.get(p.partition as usize) {
                        metrics::partition_lag(topic, p.partition, end.saturating_sub(p.offset));
                    }
                }
            }
            Err(e) => tracing::warn!(topic, error = %e, "could not read the end of the log"),
        }
    }
}

/// Whether every assigned partition is committed up to the end of the log. The log only
/// grows, so a partition short of an end seen earlier is behind without asking the log
/// again: on Kafka asking costs round trips per partition, and an idle poll in the middle
/// of a backlog (a fetch late) would pay them each time. `ends_read` holds the positions
/// of a consumer that has read every partition to the end it last saw: those are the ends,
/// and a topic they cover whole is not asked for.
async fn caught_up<L: Log>(
    log: &L,
    source: &str,
    dep: &mut Dependency,
    states: &BTreeMap<LakeTable, TableState>,
    routes: &HashMap<Arc<str>, (LakeTable, TopicName)>,
    ends_seen: &mut HashMap<Arc<str>, Vec<u64>>,
    ends_read: Option<&[PartitionOffset]>,
) -> Result<bool> {
    let behind = |topic: &str, table: &LakeTable, ends: &[u64]| -> u64 {
        let state = &states[table];
        // Positions read past but not committed hold only dead letters and duplicates
        // (the rows were flushed before this check): nothing is left to do for them.
        ends.iter()
            .enumerate()
            .map(|(p, &end)| {
                let key = offset_key(source, topic, p as u32);
                let done = state
                    .pending_offsets
                    .get(&key)
                    .or_else(|| state.committed.get(&key))
                    .copied()
                    .unwrap_or(0);
                end.saturating_sub(done)
            })
            .sum()
    };
    let mut known_behind = false;
    for (topic, (table, _)) in routes {
        if let Some(ends) = ends_seen.get(topic) {
            let n = behind(topic, table, ends);
            if n > 0 {
                metrics::lag(table.name(), n);
                known_behind = true;
            }
        }
    }
    if known_behind {
        return Ok(false);
    }
    let mut all = true;
    for (topic, (table, _)) in routes {
        let ends = match ends_read.and_then(|read| ends_read_of(read, topic)) {
            Some(ends) => ends,
            None => {
                dep.call(|| async { Ok(log.end_offsets(topic).await?) })
                    .await?
            }
        };
        let n = behind(topic, table, &ends);
        ends_seen.insert(topic.clone(), ends);
        metrics::lag(table.name(), n);
        all &= n == 0;
    }
    Ok(all)
}

/// A topic's partition ends from the positions of a consumer that has read to the end,
/// when they cover its partitions from 0 without a hole.
fn ends_read_of(positions: &[PartitionOffset], topic: &str) -> Option<Vec<u64>> {
    let mut read: Vec<(u32, u64)> = positions
        .iter()
        .filter(|p| p.topic == topic)
        .map(|p| (p.partition, p.offset))
        .collect();
    read.sort_unstable();
    let whole = !read.is_empty() && read.iter().enumerate().all(|(i, &(p, _))| p as usize == i);
    whole.then(|| read.into_iter().map(|(_, end)| end).collect())
}

/// Where rejected records go: the store in the data directory, then the log's
/// dead-letter topic (Kafka).
struct Letters<'a, L> {
    store: &'a DeadLetterStore,
    log: &'a L,
}

/// A table's batch being written and committed on its own task while the writer reads
/// and decodes on: Parquet encoding and the catalog's round trips overlap the next poll.
struct Flight {
    table: LakeTable,
    task: tokio::task::JoinHandle<(CommitDeps, Result<Committed>)>,
    /// With dedup shared in Redis: the ids the batch claimed, and when they were claimed
    /// last (renewed by the writer while the batch is in flight).
    claims: Option<(Vec<u128>, Instant)>,
    token: String,
    name: String,
    rows: u64,
    /// Where the batch's positions start, and every partition's next offset once it lands.
    offsets_from: BTreeMap<String, u64>,
    offsets_to: BTreeMap<String, u64>,
    snapshot_before: Option<i64>,
    started: Instant,
}

impl Drop for Flight {
    /// A writer that stops on an error does not leave a commit running behind it: like a
    /// crash, the batch is committed or not, and a restart resumes from the lake.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a batch's task hands back.
struct Committed {
    table: Table,
    /// The batch's rows, cleared: their chunks are reused.
    rows: Rows,
    files: usize,
    bytes: u64,
}

/// One batch of a table, everything its task needs.
struct Batch {
    t: LakeTable,
    table: Table,
    arrow_schema: SchemaRef,
    rows: Rows,
    name: String,
    properties: HashMap<String, String>,
    /// The next offset per partition of the batch (checked against the lake on a retry).
    ends: BTreeMap<String, u64>,
}

/// Cuts a table's pending rows into a batch and starts writing and committing it; `None`
/// when there is nothing to commit (the batch held only dead letters and duplicates).
async fn take_off<L: Log>(
    t: LakeTable,
    state: &mut TableState,
    catalog: &Arc<dyn Catalog>,
    letters_to: &Letters<'_, L>,
    options: &WriterOptions,
    deps: &mut Deps,
    summary: &mut WriterSummary,
) -> Result<Option<Flight>> {
    let started = Instant::now();
    // Dead letters are durable before the commit that moves past them. All count for the
    // run's accounting, also those the store already held from a run that stopped early.
    let letters = std::mem::take(&mut state.pending_letters);
    letters_to.store.append(&letters)?;
    let log = letters_to.log;
    deps.log
        .call(|| async { Ok(log.publish_dead_letters(&letters).await?) })
        .await?;
    summary.dead_lettered += letters.len() as u64;
    if state.pending.is_empty() {
        // Nothing to append: an Iceberg snapshot needs data files, so the positions of a
        // batch made only of dead letters and duplicates are covered by the next real
        // commit (a restart before it re-reads them: the dead-letter store ignores repeats
        // and the duplicates are dropped again).
        state.oldest = None;
        return Ok(None);
    }
    let name = batch_name(&state.batch_start, &state.pending_offsets);
    let token = format!("{}|{name}", options.source);
    let claims = if state.integrity.shares_dedup() {
        let ids = claim_batch(t, state, catalog.as_ref(), &token, options, deps, summary).await?;
        if state.pending.is_empty() {
            // Every row was stored by another writer: as for a batch of duplicates.
            state.oldest = None;
            return Ok(None);
        }
        Some((ids, Instant::now()))
    } else {
        None
    };
    // The next batch fills the chunks of the last one that landed, if it has landed.
    let rows = std::mem::replace(&mut state.pending, std::mem::take(&mut state.spare));
    let ends = std::mem::take(&mut state.pending_offsets);
    let mut offsets_to = state.committed.clone();
    offsets_to.extend(ends.iter().map(|(k, v)| (k.clone(), *v)));
    let mut properties = HashMap::from([
        (
            OFFSETS_PROPERTY.to_string(),
            serde_json::to_string(&offsets_to).expect("offsets serialise"),
        ),
        (BATCH_PROPERTY.to_string(), name.clone()),
    ]);
    if !options.source.is_empty() {
        properties.insert(SOURCE_PROPERTY.to_string(), options.source.clone());
    }
    // The integrity state this snapshot stands for (every record admitted up to the cut)
    // is durable before the commit.
    properties.extend(state.integrity.save(&name)?);
    state.oldest = None;
    let flight = Flight {
        table: t,
        claims,
        token,
        name: name.clone(),
        rows: rows.len() as u64,
        offsets_from: std::mem::take(&mut state.batch_start),
        offsets_to,
        snapshot_before: state.table.metadata().current_snapshot_id(),
        started,
        task: {
            let batch = Batch {
                t,
                table: state.table.clone(),
                arrow_schema: state.arrow_schema.clone(),
                rows,
                name,
                properties,
                ends,
            };
            let mut commit_deps = deps.commit.take().expect("one batch in flight at a time");
            let (catalog, options) = (catalog.clone(), options.clone());
            tokio::spawn(async move {
                let committed =
                    write_and_commit(batch, catalog.as_ref(), &options, &mut commit_deps).await;
                (commit_deps, committed)
            })
        },
    };
    Ok(Some(flight))
}

/// With dedup shared in Redis: claims of a batch in flight held past half their lease are
/// renewed. One that lapsed may have let another writer store the row, so the writer
/// stops (a restart resumes from the lake).
async fn renew_claims(
    flight: &mut Flight,
    integrity: &mut TableIntegrity,
    redis: &mut Dependency,
) -> Result<()> {
    let Some((ids, at)) = &mut flight.claims else {
        return Ok(());
    };
    if at.elapsed() <= integrity.claim_lease().unwrap_or_default() / 2 {
        return Ok(());
    }
    let request: Vec<(u128, Option<String>)> = ids.iter().map(|&i| (i, None)).collect();
    let token = flight.token.clone();
    let lost = redis
        .call_mut(integrity, |i| {
            Box::pin(i.claim(request.clone(), token.clone()))
        })
        .await?
        .into_iter()
        .filter(Option::is_some)
        .count();
    if lost > 0 {
        return Err(LakeError::Query(format!(
            "{}: {lost} message-id claims lapsed before the commit (dedup.redis_lease_seconds); restart to resume",
            flight.table
        )));
    }
    *at = Instant::now();
    Ok(())
}

/// Waits for the batch in flight (renewing its claims meanwhile) and books its commit.
/// Returns the table's committed positions.
async fn land(
    mut flight: Flight,
    states: &mut BTreeMap<LakeTable, TableState>,
    options: &WriterOptions,
    deps: &mut Deps,
    summary: &mut WriterSummary,
) -> Result<Vec<PartitionOffset>> {
    let t = flight.table;
    let state = states.get_mut(&t).expect("every table has a state");
    let (commit_deps, committed) = loop {
        let renew_in = match &flight.claims {
            Some((_, at)) => {
                (state.integrity.claim_lease().unwrap_or_default() / 2).saturating_sub(at.elapsed())
            }
            None => Duration::MAX,
        };
        tokio::select! {
            done = &mut flight.task => {
                break done.map_err(|e| LakeError::Query(format!("the {t} commit task failed: {e}")))?;
            }
            () = tokio::time::sleep(renew_in.min(Duration::from_secs(3600))) => {
                renew_claims(&mut flight, &mut state.integrity, &mut deps.redis).await?;
            }
        }
    };
    deps.commit = Some(commit_deps);
    deps.report(summary);
    let committed = committed?;
    state.table = committed.table;
    if let Some((ids, _)) = flight.claims.take() {
        let n = ids.len();
        let token = flight.token.clone();
        let kept = deps
            .redis
            .call_mut(&mut state.integrity, |i| {
                Box::pin(i.keep_claims(ids.clone(), token.clone()))
            })
            .await?;
        if kept < n as u64 {
            tracing::warn!(table = %t, claims = n, kept, "message-id claims lapsed before they could be kept");
        }
    }
    let elapsed = flight.started.elapsed();
    let entry = AuditEntry {
        committed_at_us: chrono::Utc::now().timestamp_micros(),
        table: t.qualified(),
        snapshot_before: flight.snapshot_before,
        snapshot_after: state
            .table
            .metadata()
            .current_snapshot_id()
            .unwrap_or_default(),
        rows: flight.rows,
        files: committed.files as u64,
        bytes: committed.bytes,
        offsets_from: std::mem::take(&mut flight.offsets_from),
        offsets_to: flight.offsets_to.clone(),
        batch: flight.name.clone(),
        duration_ms: Some(elapsed.as_millis() as u64),
        recovered: false,
    };
    if let Some(path) = &options.audit_path {
        audit::append(path, std::slice::from_ref(&entry))?;
    }
    state.integrity.committed(&flight.name);
    metrics::dedup_held(t.name(), state.integrity.dedup());
    state.spare = committed.rows;
    state.committed = std::mem::take(&mut flight.offsets_to);
    metrics::rows_committed(t.name(), flight.rows as usize, committed.files, elapsed);
    *summary.rows_committed.entry(t.qualified()).or_default() += flight.rows;
    summary.commits += 1;
    tracing::info!(
        table = %t,
        rows = flight.rows,
        files = committed.files,
        bytes = committed.bytes,
        snapshot_before = entry.snapshot_before.unwrap_or_default(),
        snapshot = entry.snapshot_after,
        batch = %entry.batch,
        offsets = %serde_json::to_string(&entry.offsets_to).unwrap_or_default(),
        ms = elapsed.as_millis() as u64,
        "lake commit"
    );
    let positions: Vec<PartitionOffset> = state
        .committed
        .iter()
        .filter_map(|(k, &offset)| {
            let (topic, p) = k.rsplit_once('/')?;
            Some(PartitionOffset {
                topic: topic.into(),
                partition: p.parse().ok()?,
                offset,
            })
        })
        .collect();
    Ok(positions)
}

/// Records commits' positions as the consumer group's and reports each partition's lag.
/// Informational only (the lake's snapshot is the source of truth), so off the writer's
/// path: a slow cluster answer (a new group client waits for the group's coordinator) never
/// holds the writer up. One task reports, in order, so group offsets never go backwards;
/// positions handed over while it works replace those still waiting: only the latest
/// matter.
struct Reports {
    /// The latest positions, with where the log ends when the consumer knew it without
    /// asking.
    latest: tokio::sync::watch::Sender<Option<Report>>,
    task: tokio::task::JoinHandle<()>,
}

type Report = (Vec<PartitionOffset>, Option<Vec<PartitionOffset>>);

impl Reports {
    fn start<L: Log + Clone>(log: &L, group: &str) -> Self {
        let (latest, mut handed) = tokio::sync::watch::channel(None::<Report>);
        let (log, group) = (log.clone(), group.to_string());
        let task = tokio::spawn(async move {
            // Positions handed over before the writer finished are still seen after it.
            while handed.changed().await.is_ok() {
                let Some((positions, ends_read)) = handed.borrow_and_update().clone() else {
                    continue;
                };
                if let Err(e) = log.commit_group(&group, &positions).await {
                    tracing::warn!(error = %e, "could not record consumer-group positions");
                }
                report_partition_lag(&log, &positions, ends_read.as_deref()).await;
            }
        });
        Reports { latest, task }
    }

    fn report(&self, positions: Vec<PartitionOffset>, ends_read: Option<&[PartitionOffset]>) {
        self.latest.send_replace(Some((
            positions,
            ends_read.map(<[PartitionOffset]>::to_vec),
        )));
    }

    /// Waits until everything handed over is reported.
    async fn finish(self) {
        drop(self.latest);
        let _ = self.task.await;
    }
}

/// After a commit: the table's snapshots older than `keep_for` expire, at most every
/// [`EXPIRE_EVERY`], and data files never committed are deleted once older than
/// `keep_for`, looked for once per `keep_for`. A failure (say, another writer committed
/// meanwhile) leaves them for the next check: the lake is whole either way.
async fn expire_old_snapshots(
    t: LakeTable,
    state: &mut TableState,
    catalog: &dyn Catalog,
    keep_for: Duration,
) {
    if state
        .expired_at
        .is_some_and(|at| at.elapsed() < EXPIRE_EVERY)
    {
        return;
    }
    state.expired_at = Some(Instant::now());
    let now_ms = chrono::Utc::now().timestamp_millis();
    // Nothing due commits nothing.
    match crate::retention::expire(catalog, &state.table, keep_for, now_ms).await {
        Ok((table, expired)) => {
            state.table = table;
            metrics::snapshots_expired(t.name(), expired.snapshots, expired.files);
        }
        Err(e) => {
            metrics::expiry_failed(t.name());
            tracing::warn!(table = %t, error = %e, "could not expire old snapshots; trying again later");
        }
    }
    // Files written and never committed, once per retention period, beside the writer
    // (reading every manifest of the table is the cost); a run's first look is at its
    // first commit.
    if state.swept_at.is_some_and(|at| at.elapsed() < keep_for) {
        return;
    }
    state.swept_at = Some(Instant::now());
    let table = state.table.clone();
    state.sweep = Some(tokio::spawn(async move {
        match crate::retention::remove_orphan_files(&table, keep_for, SystemTime::now()).await {
            Ok(files) => metrics::orphan_files_deleted(t.name(), files),
            Err(e) => {
                metrics::expiry_failed(t.name());
                tracing::warn!(table = %t, error = %e, "could not look for orphan data files; looking again after a retention period");
            }
        }
    }));
}

/// Sorts, writes and commits one batch: the task of a [`Flight`].
async fn write_and_commit(
    batch: Batch,
    catalog: &dyn Catalog,
    options: &WriterOptions,
    deps: &mut CommitDeps,
) -> Result<Committed> {
    let Batch {
        t,
        mut table,
        arrow_schema,
        rows,
        name,
        properties,
        ends,
    } = batch;
    // The files' tasks share the rows, which come back for reuse once they are written.
    let rows = Arc::new(rows);
    let files = {
        let (rows, name, table, arrow_schema) = (&rows, &name, &table, &arrow_schema);
        deps.storage
            .call(|| write_files(t, table, arrow_schema, rows, name, options))
            .await?
    };
    let mut rows = Arc::try_unwrap(rows).unwrap_or_default();
    let file_count = files.len();
    let bytes: u64 = files.iter().map(|f| f.file_size_in_bytes()).sum();
    let started = Instant::now();
    let mut attempt = 0;
    let table = loop {
        deps.catalog.permit().await;
        attempt += 1;
        let result = async {
            if attempt > 1 {
                // After a failure the table may have moved: reload it, and never append a
                // batch whose positions another writer committed meanwhile.
                table = load_table(catalog, t).await?;
                // A commit whose answer was lost (the connection dropped after the
                // catalog applied it) shows as this very batch on top: that is success.
                if let Some(current) = table.metadata().current_snapshot()
                    && current.summary().additional_properties.get(BATCH_PROPERTY) == Some(&name)
                {
                    tracing::warn!(table = %t, snapshot = current.snapshot_id(), "an earlier commit attempt had succeeded");
                    return Ok(table.clone());
                }
                let now_committed = committed_offsets(&table, &options.source)?;
                if ends
                    .iter()
                    .any(|(k, v)| now_committed.get(k).is_some_and(|c| c >= v))
                {
                    return Err(LakeError::Query(format!(
                        "{t}: positions of this batch were committed by another writer; restart to resume"
                    )));
                }
            }
            let tx = Transaction::new(&table);
            let action = tx
                .fast_append()
                .add_data_files(files.clone())
                .set_snapshot_properties(properties.clone());
            let tx = action
                .apply(tx)
                .map_err(|e| LakeError::catalog(format!("committing {} rows to {t}", rows.len()), e))?;
            tx.commit(catalog)
                .await
                .map_err(|e| LakeError::catalog(format!("committing {} rows to {t}", rows.len()), e))
        }
        .await;
        if result.is_err() {
            metrics::commit_failed(t.name());
        }
        if let Some(table) = deps.catalog.settle(result, attempt, started).await? {
            break table;
        }
    };
    rows.clear();
    Ok(Committed {
        table,
        rows,
        files: file_count,
        bytes,
    })
}

/// The rows at `indices`, in the table's sort order: symbol, then time, with the source
/// sequence and the (unique) id as a deterministic tie-break; indices are sorted, the rows
/// stay where they are. Symbols are ranked once, so the sort compares integers, not
/// strings.
fn sorted(rows: &Rows, indices: Vec<u32>) -> Vec<u32> {
    let mut ranks: HashMap<&str, u32> = HashMap::new();
    let mut last: Option<(&str, u32)> = None;
    let mut keys: Vec<(u32, i64, i64, MessageId, u32)> = Vec::with_capacity(indices.len());
    for i in indices {
        let r = &rows.get(i as usize).record;
        let symbol = r.symbol();
        // Rows come in runs of one symbol: most lookups are the last one.
        let rank = match last {
            Some((s, rank)) if s == symbol => rank,
            _ => {
                let next = ranks.len() as u32;
                let rank = *ranks.entry(symbol).or_insert(next);
                last = Some((symbol, rank));
                rank
            }
        };
        keys.push((
            rank,
            r.event_time_us().unwrap_or(0),
            r.source_sequence().unwrap_or(-1),
            r.message_id(),
            i,
        ));
    }
    // Ranks in first-seen order become ranks in symbol order.
    let mut by_name: Vec<(&str, u32)> = ranks.into_iter().collect();
    by_name.sort_unstable();
    let mut order = vec![0u32; by_name.len()];
    for (position, (_, rank)) in by_name.iter().enumerate() {
        order[*rank as usize] = position as u32;
    }
    for key in &mut keys {
        key.0 = order[key.0 as usize];
    }
    keys.sort_unstable();
    keys.into_iter().map(|k| k.4).collect()
}

/// With dedup shared in Redis: claims the ids of the pending rows for this batch before
/// they are written. A row whose id a committed batch (of any writer) holds is dropped as a
/// duplicate; one held by a batch in flight elsewhere is waited for, holding no claims
/// meanwhile so that two writers never wait for each other; one held by an abandoned
/// batch of this same writer (a crash before its commit) is taken over. Returns the
/// ids claimed, in the order of the rows left pending.
async fn claim_batch(
    t: LakeTable,
    state: &mut TableState,
    catalog: &dyn Catalog,
    token: &str,
    options: &WriterOptions,
    deps: &mut Deps,
    summary: &mut WriterSummary,
) -> Result<Vec<u128>> {
    let ids: Vec<u128> = state
        .pending
        .iter()
        .map(|r| r.record.message_id().as_u128())
        .collect();
    let mut replace: Vec<Option<String>> = vec![None; ids.len()];
    let mut stored = vec![false; ids.len()];
    let mut todo: Vec<usize> = (0..ids.len()).collect();
    let mut held: Vec<usize> = Vec::with_capacity(ids.len());
    let lease = state.integrity.claim_lease().unwrap_or_default();
    let deadline = Instant::now() + lease + Duration::from_secs(10);
    let mut pause = Duration::from_millis(20);
    let mut jitter = k2_pipeline::Jitter::from_entropy();
    let started = Instant::now();
    while !todo.is_empty() {
        let request: Vec<(u128, Option<String>)> =
            todo.iter().map(|&i| (ids[i], replace[i].clone())).collect();
        let answers = deps
            .redis
            .call_mut(&mut state.integrity, |i| {
                Box::pin(i.claim(request.clone(), token.to_string()))
            })
            .await?;
        let mut conflicts = Vec::new();
        for (&i, holder) in todo.iter().zip(answers) {
            match holder {
                None => held.push(i),
                Some(holder) => conflicts.push((i, holder)),
            }
        }
        todo.clear();
        if conflicts.is_empty() {
            break;
        }
        // The lake says which of the holding batches committed.
        state.table = deps.catalog().call(|| load_table(catalog, t)).await?;
        let committed: std::collections::HashSet<&str> = state
            .table
            .metadata()
            .snapshots()
            .filter_map(|s| s.summary().additional_properties.get(BATCH_PROPERTY))
            .map(String::as_str)
            .collect();
        let mut waiting = 0;
        for (i, holder) in conflicts {
            let (source, batch) = holder.rsplit_once('|').unwrap_or(("", holder.as_str()));
            if committed.contains(batch) {
                stored[i] = true;
            } else if source == options.source {
                metrics::dedup_claims(t.name(), "taken_over", 1);
                replace[i] = Some(holder);
                todo.push(i);
            } else {
                waiting += 1;
                todo.push(i);
            }
        }
        if waiting > 0 {
            metrics::dedup_claims(t.name(), "waited", waiting);
            if !held.is_empty() {
                let mine: Vec<u128> = held.iter().map(|&i| ids[i]).collect();
                deps.redis
                    .call_mut(&mut state.integrity, |i| {
                        Box::pin(i.release_claims(mine.clone(), token.to_string()))
                    })
                    .await?;
                todo.append(&mut held);
            }
            if Instant::now() >= deadline {
                return Err(LakeError::Query(format!(
                    "{t}: {waiting} message ids stayed claimed by another writer's uncommitted batch past the lease"
                )));
            }
            tracing::debug!(table = %t, waiting, "message ids claimed by another writer's batch in flight; waiting");
            let ms = pause.as_millis() as u64;
            tokio::time::sleep(Duration::from_millis(
                ms / 2 + jitter.next_u64() % ms.max(1),
            ))
            .await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }
    let dropped = stored.iter().filter(|&&s| s).count() as u64;
    metrics::dedup_claims(t.name(), "claimed", held.len() as u64);
    metrics::dedup_claims(t.name(), "stored_elsewhere", dropped);
    metrics::dedup_claim_seconds(t.name(), started.elapsed());
    if dropped == 0 {
        return Ok(ids);
    }
    let rows = std::mem::take(&mut state.pending);
    let mut kept = Vec::with_capacity(ids.len());
    for (row, (id, stored)) in rows.into_rows().zip(ids.into_iter().zip(stored)) {
        if stored {
            state.integrity.count_duplicate(&row.record);
        } else {
            state.pending.push(row);
            kept.push(id);
        }
    }
    summary.duplicates_dropped += dropped;
    metrics::duplicates_dropped(t.name(), dropped);
    tracing::debug!(table = %t, dropped, "records another writer had stored");
    Ok(kept)
}

/// A name for the batch derived from the log positions it covers.
fn batch_name(start: &BTreeMap<String, u64>, end: &BTreeMap<String, u64>) -> String {
    let mut key = String::new();
    for (k, e) in end {
        key.push_str(&format!("{k}:{}-{e};", start.get(k).copied().unwrap_or(0)));
    }
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(key.as_bytes()))
}

async fn write_files(
    t: LakeTable,
    table: &Table,
    arrow_schema: &SchemaRef,
    rows: &Arc<Rows>,
    batch_name: &str,
    options: &WriterOptions,
) -> Result<Vec<DataFile>> {
    let metadata = table.metadata();
    let schema = metadata.current_schema().clone();
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(options.zstd_level)
                .map_err(|e| LakeError::InvalidArgument(format!("zstd level: {e}")))?,
        ))
        .set_max_row_group_row_count(Some(1 << 20))
        // Pages of a few thousand rows: rows are sorted by symbol, so the page index lets a
        // one-symbol query skip the pages of every other symbol.
        .set_data_page_row_count_limit(PAGE_ROWS);
    // Ids are unique per row: a dictionary only costs time there.
    for col in ["message_id", "trade_id", "quote_id"] {
        props = props.set_column_dictionary_enabled(col.into(), false);
    }
    // Message ids are hashes: compressing them spends time and saves nothing.
    props = props.set_column_compression("message_id".into(), Compression::UNCOMPRESSED);
    // Within a symbol, times and source sequences rise: deltas are a few bits each.
    for col in ["timestamp", "source_sequence"] {
        props = props
            .set_column_dictionary_enabled(col.into(), false)
            .set_column_encoding(col.into(), Encoding::DELTA_BINARY_PACKED);
    }
    let parquet = ParquetWriterBuilder::new(props.build(), schema.clone());
    let location = DefaultLocationGenerator::new(metadata)
        .map_err(|e| LakeError::catalog("data location", e))?;
    let names =
        DefaultFileNameGenerator::new(format!("k2-{batch_name}"), None, DataFileFormat::Parquet);
    let rolling = RollingFileWriterBuilder::new_with_default_file_size(
        parquet,
        table.file_io().clone(),
        location,
        names,
    );
    let spec = metadata.default_partition_spec().as_ref().clone();

    // One file per partition: market tables by UTC day of the timestamp.
    let mut groups: BTreeMap<Option<i32>, Vec<u32>> = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        let day = row
            .record
            .event_time_us()
            .map(|t| t.div_euclid(DAY_US) as i32);
        groups.entry(day).or_default().push(i as u32);
    }
    // Each partition's file is written by a task of its own, so the files use every core:
    // the task sorts its rows, then builds the Arrow columns a slice of rows at a time and
    // hands each slice to the encoder before building the next. The columns of a whole
    // day, built at once, were hundreds of MB of fresh memory, and faulting those pages in
    // cost more than filling them; a slice's memory is reused by the next one. The largest
    // partitions start first, so that the cores finish together.
    let mut groups: Vec<(usize, Option<i32>, Vec<u32>)> = groups
        .into_iter()
        .enumerate()
        .map(|(i, (day, idx))| (i, day, idx))
        .collect();
    groups.sort_by_key(|(_, _, idx)| std::cmp::Reverse(idx.len()));
    let mut tasks: Vec<_> = groups
        .into_iter()
        .map(|(i, day, idx)| {
            let key = day.map(|d| {
                PartitionKey::new(
                    spec.clone(),
                    schema.clone(),
                    Struct::from_iter([Some(Literal::date(d))]),
                )
            });
            let builder = DataFileWriterBuilder::new(rolling.clone());
            let (rows, arrow_schema) = (rows.clone(), arrow_schema.clone());
            let task = tokio::spawn(async move {
                let iceberg = |e| LakeError::catalog(format!("writing {t} data"), e);
                let idx = sorted(&rows, idx);
                let mut writer = builder.build(key).await.map_err(iceberg)?;
                for slice in idx.chunks(SLICE_ROWS) {
                    let batch = {
                        let part: Vec<&Row> = slice.iter().map(|&i| rows.get(i as usize)).collect();
                        columns::to_batch(t, &arrow_schema, &part)?
                    };
                    writer.write(batch).await.map_err(iceberg)?;
                }
                writer.close().await.map_err(iceberg)
            });
            (i, task)
        })
        .collect();
    tasks.sort_unstable_by_key(|(i, _)| *i);
    // Every task is waited for, also after one failed: none is left holding the rows.
    // Files are listed in partition order.
    let mut written = Vec::with_capacity(tasks.len());
    for (_, task) in tasks {
        written.push(
            task.await
                .map_err(|e| LakeError::Query(format!("a {t} file writer task failed: {e}")))
                .and_then(|files| files),
        );
    }
    Ok(written
        .into_iter()
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect())
}

#[cfg(test)]
mod tests {
    use k2_model::{AssetClass, Decimal8, MarketRecord, Trade, TradeSide};

    use super::*;

    fn row(symbol: &str, time: i64, sequence: Option<i64>, id: u128) -> Row {
        let one = Decimal8::from_units(100_000_000).unwrap();
        Row {
            record: MarketRecord::Trade(Trade {
                message_id: MessageId::from_u128(id),
                trade_id: id.to_string().as_str().into(),
                symbol: symbol.into(),
                exchange: "ASX".into(),
                asset_class: AssetClass::Equities,
                timestamp_us: time,
                receive_timestamp_us: time,
                price: one,
                quantity: one,
                currency: "AUD".into(),
                side: TradeSide::Unknown,
                trade_conditions: Vec::new(),
                source_sequence: sequence,
                ingestion_timestamp_us: time,
                platform_sequence: None,
                vendor_data: None,
            }),
            trade_date: 0,
        }
    }

    #[test]
    fn ends_read_cover_a_topic_whole_or_not_at_all() {
        let at = |topic: &str, partition, offset| PartitionOffset {
            topic: topic.into(),
            partition,
            offset,
        };
        // In any order, mixed with another topic.
        let read = [at("t", 1, 7), at("u", 0, 3), at("t", 0, 5), at("t", 2, 0)];
        assert_eq!(ends_read_of(&read, "t"), Some(vec![5, 7, 0]));
        assert_eq!(ends_read_of(&read, "u"), Some(vec![3]));
        // A topic not assigned, or assigned without partition 0 or with a hole, is asked
        // of the log.
        assert_eq!(ends_read_of(&read, "v"), None);
        assert_eq!(ends_read_of(&[at("t", 1, 7)], "t"), None);
        assert_eq!(ends_read_of(&[at("t", 0, 5), at("t", 2, 0)], "t"), None);
    }

    #[test]
    fn rows_sort_by_symbol_time_sequence_then_id() {
        // Symbols first seen out of order, runs broken up, ties on time and sequence.
        let rows: Rows = [
            row("WBC", 5, None, 1),
            row("BHP", 9, Some(2), 2),
            row("BHP", 9, Some(1), 3),
            row("ANZ", 7, None, 9),
            row("ANZ", 7, None, 4),
            row("WBC", 1, Some(0), 5),
            row("BHP", 3, None, 6),
            row("AN", 100, None, 7),
        ]
        .into_iter()
        .collect();
        let order: Vec<u128> = sorted(&rows, (0..rows.len() as u32).collect())
            .into_iter()
            .map(|i| rows.get(i as usize).record.message_id().as_u128())
            .collect();
        assert_eq!(order, vec![7, 4, 9, 6, 3, 2, 5, 1]);
        // The same order as comparing the full keys, strings and all.
        let mut by_keys: Vec<&Row> = rows.iter().collect();
        by_keys.sort_by_key(|r| {
            let r = &r.record;
            (
                r.symbol().to_string(),
                r.event_time_us().unwrap_or(0),
                r.source_sequence().unwrap_or(-1),
                r.message_id(),
            )
        });
        let expected: Vec<u128> = by_keys
            .iter()
            .map(|r| r.record.message_id().as_u128())
            .collect();
        assert_eq!(order, expected);
    }

    #[test]
    fn batch_rows_keep_their_order_across_chunks_and_reuse_them() {
        let chunk = crate::columns::CHUNK_ROWS;
        let ids = |rows: &Rows| -> Vec<u128> {
            rows.iter()
                .map(|r| r.record.message_id().as_u128())
                .collect()
        };
        let n = 2 * chunk + 3;
        let mut rows: Rows = (0..n as u128).map(|i| row("BHP", 0, None, i)).collect();
        assert_eq!(rows.len(), n);
        assert_eq!(ids(&rows), (0..n as u128).collect::<Vec<_>>());
        for i in [0, chunk - 1, chunk, 2 * chunk, n - 1] {
            assert_eq!(rows.get(i).record.message_id().as_u128(), i as u128);
        }
        // Cleared, the chunks take the next batch from the first one on.
        rows.clear();
        assert!(rows.is_empty() && ids(&rows).is_empty());
        for i in 0..chunk as u128 + 1 {
            rows.push(row("ANZ", 0, None, 1_000_000 + i));
        }
        assert_eq!(rows.len(), chunk + 1);
        assert_eq!(
            rows.get(chunk).record.message_id().as_u128(),
            1_000_000 + chunk as u128
        );
        let taken: Vec<u128> = rows
            .into_rows()
            .map(|r| r.record.message_id().as_u128())
            .collect();
        assert_eq!(
            taken,
            (1_000_000..1_000_000 + chunk as u128 + 1).collect::<Vec<_>>()
        );
    }
}
