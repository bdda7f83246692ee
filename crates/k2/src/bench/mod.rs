//! `k2 bench`: measures the real path on this machine and prints the figures.
//!
//! - `ingest`: CSV → log → lake committed, rows/s, on the bundled sample and on synthetic
//!   ASX-format trades (10 M by default), and the bytes per trade in the lake vs the CSV.
//! - `kafka`: K2 on a Kafka cluster against librdkafka alone moving as many messages.
//! - `query`: warm latency (p50/p99 over many runs) of the everyday questions, K2's engine
//!   and DuckDB side by side on the same table.
//! - `api`: the query API under load (`wrk`) at several concurrencies.
//! - `sequence`: sequence-tracker checks per second on one core, and memory per 10 000
//!   streams.
//! - `replay`: maximum-speed replay of a synthetic lake in timestamp order across symbols:
//!   the engine, NDJSON encoding, and the API's NDJSON and WebSocket streams.
//! - `feed`: exchange frames parsed per second, the live handler against the local
//!   simulator, and freshness (received → in a query answer) with memory over a long run.
//!
//! Each run uses a fresh data directory, so figures include every durable write.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;

use crate::app::App;
use crate::config::Config;

mod feed;
mod http;
mod query;
mod replay;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Ingest throughput and storage per trade.
    Ingest {
        /// Synthetic trades to generate (0 skips the synthetic run).
        #[arg(long, default_value_t = 10_000_000)]
        rows: u64,
        /// Companies the synthetic trades are spread over.
        #[arg(long, default_value_t = 20)]
        companies: u32,
        #[arg(long, default_value = "samples/asx-2014-03")]
        sample: PathBuf,
        /// Work here instead of a temporary directory (kept afterwards).
        #[arg(long)]
        work_dir: Option<PathBuf>,
    },
    /// K2 on the configured Kafka cluster (`log.backend = "kafka"`, an empty cluster)
    /// against librdkafka alone producing and consuming the messages K2 wrote
    /// (Debian's kcat links librdkafka 2.0.2, which cannot talk to tansu 0.6).
    Kafka {
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        #[arg(long, default_value_t = 20)]
        companies: u32,
        /// Trades timed from produce to visible in the lake (at `writer.max_age_seconds`).
        #[arg(long, default_value_t = 5)]
        latency_samples: usize,
    },
    /// Query latency over warm runs, K2's engine and DuckDB on the same table.
    Query {
        #[arg(long, default_value_t = 200)]
        runs: usize,
        #[arg(long, default_value = "samples/asx-2014-03")]
        sample: PathBuf,
        /// A Python with DuckDB 1.4 and its iceberg and avro extensions
        /// (default: the one `scripts/bench-setup` makes).
        #[arg(long)]
        duckdb_python: Option<PathBuf>,
        /// Time K2 alone.
        #[arg(long, conflicts_with = "duckdb_python")]
        no_duckdb: bool,
    },
    /// The query API under load on loopback, driven by `wrk`.
    Api {
        /// Concurrent connections, one run each.
        #[arg(long, value_delimiter = ',', default_value = "1,32")]
        connections: Vec<u32>,
        /// Seconds per run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value = "samples/asx-2014-03")]
        sample: PathBuf,
        #[arg(long, default_value = "wrk")]
        wrk: String,
    },
    /// The live path against the local exchange simulator: parse rate, handler
    /// throughput into the log, freshness over lake ∪ tail, memory over the run.
    Feed {
        /// Trades of the parse and handler runs.
        #[arg(long, default_value_t = 1_000_000)]
        messages: u64,
        /// Trades per second of the freshness run.
        #[arg(long, default_value_t = 2_000)]
        rate: u32,
        /// Length of the freshness run (600 for the 10-minute memory figure).
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Maximum-speed replay of a synthetic lake (every symbol, the whole range, in
    /// timestamp order): the engine, NDJSON encoding, and the API's two streams.
    Replay {
        /// Synthetic trades in the lake.
        #[arg(long, default_value_t = 5_000_000)]
        rows: u64,
        /// Companies (symbols) the trades are spread over.
        #[arg(long, default_value_t = 20)]
        companies: u32,
    },
    /// Dedup checks per second (one core), memory per million ids, false positives.
    Dedup {
        /// Ids the window holds (distinct records).
        #[arg(long, default_value_t = 10_000_000)]
        ids: u64,
        /// Also measure claims shared in the Redis at this `host:port`.
        #[arg(long)]
        redis: Option<String>,
    },
    /// Sequence-tracker checks per second (one core) and memory per 10 000 streams.
    Sequence {
        /// Checks per workload.
        #[arg(long, default_value_t = 200_000_000)]
        checks: u64,
        /// Streams the checks are spread over.
        #[arg(long, default_value_t = 10_000)]
        streams: u32,
        /// Also measure the Redis-backed tracker against the Redis at this `host:port`.
        #[arg(long)]
        redis: Option<String>,
    },
}

pub async fn run(config: Config, command: BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Ingest {
            rows,
            companies,
            sample,
            work_dir,
        } => {
            let tmp = tempfile::tempdir()?;
            let root = work_dir.unwrap_or_else(|| tmp.path().to_path_buf());
            println!(
                "dataset                rows   ingest→log   log→lake   end-to-end   CSV B/row  lake B/row"
            );
            ingest_once(&config, "bundled ASX sample", &sample, &root.join("sample")).await?;
            if rows > 0 {
                let data = root.join("synthetic-data");
                let t = Instant::now();
                k2_ingest::synthetic::write_asx_trades(&data, companies, rows, 42)?;
                eprintln!(
                    "generated {rows} synthetic trades in {:.1}s",
                    t.elapsed().as_secs_f64()
                );
                ingest_once(
                    &config,
                    &format!("synthetic {}M trades", rows / 1_000_000),
                    &data,
                    &root.join("synthetic"),
                )
                .await?;
            }
        }
        BenchCommand::Sequence {
            checks,
            streams,
            redis,
        } => {
            sequence(checks, streams.max(1));
            if let Some(addr) = redis {
                sequence_redis(&addr, streams.max(1)).await?;
            }
        }
        BenchCommand::Feed {
            messages,
            rate,
            seconds,
        } => feed::run(config, messages.max(1), rate.max(1), seconds.max(1)).await?,
        BenchCommand::Replay { rows, companies } => {
            replay::run(config, rows.max(1), companies.max(1)).await?
        }
        BenchCommand::Dedup { ids, redis } => {
            dedup(ids.max(1));
            if let Some(addr) = redis {
                dedup_redis(&addr).await?;
            }
        }
        BenchCommand::Kafka {
            rows,
            companies,
            latency_samples,
        } => {
            kafka(
                &config,
                rows.max(1),
                companies.max(1),
                latency_samples.max(1),
            )
            .await?
        }
        BenchCommand::Query {
            runs,
            sample,
            duckdb_python,
            no_duckdb,
        } => {
            let (_tmp, app) = sample_lake(config, &sample).await?;
            let python = match (no_duckdb, duckdb_python) {
                (true, _) => None,
                (false, Some(p)) => Some(p),
                (false, None) => Some(query::default_python().context(
                    "no HOME to find DuckDB under: pass --duckdb-python or --no-duckdb",
                )?),
            };
            query::run(&app, runs, python.as_deref()).await?;
        }
        BenchCommand::Api {
            connections,
            seconds,
            sample,
            wrk,
        } => {
            let (_tmp, app) = sample_lake(config, &sample).await?;
            http::run(&app, &connections, Duration::from_secs(seconds), &wrk).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The sample ingested and committed in a fresh data directory (gone with the guard).
async fn sample_lake(
    mut config: Config,
    sample: &Path,
) -> anyhow::Result<(tempfile::TempDir, App)> {
    let tmp = tempfile::tempdir()?;
    config.data_dir = tmp.path().to_path_buf();
    let app = App::open(config).await?;
    app.ingest_asx(sample).await?;
    app.consume(true).await?;
    Ok((tmp, app))
}

/// K2 on the configured Kafka cluster against librdkafka alone moving the same messages,
/// in one run.
async fn kafka(
    config: &Config,
    rows: u64,
    companies: u32,
    latency_samples: usize,
) -> anyhow::Result<()> {
    use k2_log::{Log, LogConsumer};
    if config.log.backend != "kafka" {
        anyhow::bail!(
            "bench kafka runs on a cluster: set log.backend = \"kafka\" and log.kafka.bootstrap_servers"
        );
    }
    let bootstrap = config.log.kafka.bootstrap_servers.clone();
    let tmp = tempfile::tempdir()?;
    let files = tmp.path().join("synthetic-data");
    k2_ingest::synthetic::write_asx_trades(&files, companies, rows, 42)?;
    let mut config = config.clone();
    config.data_dir = tmp.path().join("k2");
    let app = App::open(config).await?;
    let trades = k2_model::TopicName::new(
        k2_model::AssetClass::Equities,
        k2_model::DataType::Trades,
        k2_ingest::asx::EXCHANGE,
    )
    .to_string();
    if let Ok(ends) = app.log.end_offsets(&trades).await {
        let held: u64 = ends.iter().sum();
        if held > 0 {
            anyhow::bail!(
                "{trades} already holds {held} records: bench kafka needs a cluster without K2's topics"
            );
        }
    }
    // K2: CSV → Kafka, then Kafka → lake committed.
    let t0 = Instant::now();
    let ingest = app.ingest_asx(&files).await?;
    let t1 = Instant::now();
    app.consume(true).await?;
    let t2 = Instant::now();
    let n = ingest.produced();
    // The baseline moves the very messages K2 wrote (same keys, values and partitions):
    // values of one repeated byte would compress to almost nothing and spare the broker
    // most of its work.
    let ends = app.log.end_offsets(&trades).await?;
    let (partitions, held) = (ends.len() as u32, ends.iter().sum::<u64>());
    anyhow::ensure!(held > 0, "{trades} holds no messages to read back");
    let mut consumer = app.log.consumer(
        (0..partitions)
            .map(|p| k2_log::PartitionOffset {
                topic: trades.clone(),
                partition: p,
                offset: 0,
            })
            .collect(),
    )?;
    let mut messages = Vec::with_capacity(held as usize);
    let deadline = Instant::now() + Duration::from_secs(600);
    while (messages.len() as u64) < held {
        anyhow::ensure!(
            Instant::now() < deadline,
            "read {} of {held} messages of {trades} back",
            messages.len()
        );
        for r in consumer.poll(50_000, Duration::from_secs(1)).await? {
            messages.push((r.partition as i32, r.key, r.value));
        }
    }
    drop(consumer);
    let size = messages.iter().map(|m| m.2.len()).sum::<usize>() / messages.len();

    let topic = format!("k2.bench.raw.{}", std::process::id());
    app.log
        .ensure_topic(&k2_log::TopicSpec {
            name: topic.clone(),
            partitions,
            cleanup: k2_log::CleanupPolicy::Delete,
            retention_ms: None,
        })
        .await?;
    let kafka = app.config.log.kafka.clone();
    let compression = kafka.compression.clone();
    let (t3, t4, t5) =
        tokio::task::spawn_blocking(move || raw_librdkafka(&kafka, &topic, partitions, &messages))
            .await??;
    // K2's rows include the companies' reference records (another topic); the baseline
    // moves the trades topic's messages.
    let rate = |count: u64, d: Duration| count as f64 / d.as_secs_f64().max(1e-9);
    println!(
        "{n} rows ({held} trades), {size}-byte values, {partitions} partitions, {compression}, on {bootstrap}"
    );
    println!("                                   produce      consume   end-to-end");
    println!(
        "librdkafka alone (bytes only) {:>10.0}/s {:>10.0}/s {:>10.0}/s",
        rate(held, t4 - t3),
        rate(held, t5 - t4),
        rate(held, t5 - t3)
    );
    println!(
        "k2 (CSV → Kafka → lake)        {:>10.0}/s {:>10.0}/s {:>10.0}/s",
        rate(n, t1 - t0),
        rate(n, t2 - t1),
        rate(n, t2 - t0)
    );
    println!(
        "k2 end-to-end / librdkafka end-to-end: {:.0} %",
        100.0 * rate(n, t2 - t0) / rate(held, t5 - t3)
    );
    visibility_latency(&app, &trades, latency_samples).await
}

/// Produce → visible in a lake query, with the lake writer running as a service at the
/// configured commit interval (`writer.max_age_seconds`): one trade at a time, each
/// acknowledged by the cluster, then the lake asked every 10 ms until it holds it.
async fn visibility_latency(app: &App, topic: &str, samples: usize) -> anyhow::Result<()> {
    use k2_log::{Log, SchemaStore};
    use k2_model::{AssetClass, Decimal8, MarketRecord, MessageId, Trade, TradeSide, avro};

    let subject = format!("{topic}-value");
    let schema_id = app.log.register(&subject, avro::TRADE_SCHEMA).await?;
    let engine = app.engine().await?;
    let catalog = app.catalog().await?;
    let options = app.config.writer_options();
    let stop = tokio_util::sync::CancellationToken::new();
    let writer = k2_lake::writer::run(&app.log, catalog, &app.dlq, &options, stop.clone());
    let probe = async {
        let run = std::process::id();
        let mut took = Vec::with_capacity(samples);
        for i in 0..samples {
            let now = chrono::Utc::now().timestamp_micros();
            let trade_id = format!("BENCH-{run}-{i}");
            let trade = Trade {
                message_id: MessageId::from_source(&["bench", &trade_id]),
                trade_id: trade_id.as_str().into(),
                symbol: "LAT".into(),
                exchange: "ASX".into(),
                asset_class: AssetClass::Equities,
                timestamp_us: now,
                receive_timestamp_us: now,
                price: Decimal8::from_units(100_000_000)?,
                quantity: Decimal8::from_units(100_000_000)?,
                currency: "AUD".into(),
                side: TradeSide::Unknown,
                trade_conditions: Vec::new(),
                source_sequence: None,
                ingestion_timestamp_us: now,
                platform_sequence: None,
                vendor_data: None,
            };
            let mut batch = k2_log::TopicBatch::new(topic);
            batch.push_with(b"LAT", now / 1000, |out| {
                avro::encode(&MarketRecord::Trade(trade), schema_id, out)
            });
            app.log.produce(vec![batch], None).await?;
            let produced = Instant::now();
            let sql = format!("SELECT count(*) AS n FROM trades WHERE trade_id = '{trade_id}'");
            let deadline = produced + Duration::from_secs(120);
            loop {
                let batches = engine.sql(&sql).await?.batches;
                let seen = batches
                    .first()
                    .and_then(|b| {
                        b.column(0)
                            .as_any()
                            .downcast_ref::<arrow::array::Int64Array>()
                            .map(|a| a.value(0))
                    })
                    .unwrap_or(0);
                if seen > 0 {
                    took.push(produced.elapsed());
                    break;
                }
                anyhow::ensure!(Instant::now() < deadline, "{trade_id} never became visible");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        stop.cancel();
        anyhow::Ok(took)
    };
    let (written, took) = tokio::join!(writer, probe);
    written?;
    let mut took = took?;
    took.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "produce → visible in the lake ({samples} trades, commit interval {:.1} s): p50 {:.0} ms, max {:.0} ms",
        options.max_age.as_secs_f64(),
        ms(took[took.len() / 2]),
        ms(took[took.len() - 1])
    );
    Ok(())
}

/// The raw baseline: an idempotent librdkafka producer sends the messages (partition, key,
/// value) as fast as it can, then a consumer reads them back. Returns the instants before producing, after the last delivery, and
/// after the last message read.
fn raw_librdkafka(
    kafka: &k2_log::KafkaOptions,
    topic: &str,
    partitions: u32,
    messages: &[(i32, Vec<u8>, Vec<u8>)],
) -> anyhow::Result<(Instant, Instant, Instant)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let n = messages.len() as u64;
    // The very client settings K2 runs with: only K2's own work is left out.
    let producer: ThreadedProducer<DefaultProducerContext> = kafka.producer_config().create()?;
    let t0 = Instant::now();
    for (partition, key, value) in messages {
        let mut record = BaseRecord::to(topic)
            .key(key)
            .payload(value)
            .partition(*partition);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120))?;
    let t1 = Instant::now();
    let consumer: BaseConsumer = kafka.consumer_config("k2-bench-raw").create()?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p as i32, rdkafka::Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut read = 0u64;
    let deadline = Instant::now() + Duration::from_secs(600);
    while read < n {
        anyhow::ensure!(
            Instant::now() < deadline,
            "read {read} of {n} messages back"
        );
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            m?;
            read += 1;
        }
    }
    Ok((t0, t1, Instant::now()))
}

async fn ingest_once(
    config: &Config,
    name: &str,
    data: &Path,
    data_dir: &Path,
) -> anyhow::Result<()> {
    let mut config = config.clone();
    config.data_dir = data_dir.to_path_buf();
    let app = App::open(config).await?;
    let t0 = Instant::now();
    let ingest = app.ingest_asx(data).await?;
    let t1 = Instant::now();
    let written = app.consume(true).await?;
    let t2 = Instant::now();
    let rows = ingest.produced() as f64;
    let trade_rows = *written
        .rows_committed
        .get("market_data.trades")
        .unwrap_or(&0);
    let csv = dir_bytes(&data.join("trades"))? as f64 / trade_rows.max(1) as f64;
    let lake = dir_bytes(
        &app.config
            .warehouse_dir()
            .join("market_data")
            .join("trades")
            .join("data"),
    )? as f64
        / trade_rows.max(1) as f64;
    let rate = |d: Duration| rows / d.as_secs_f64().max(1e-9);
    println!(
        "{name:20} {:>9} {:>10.0}/s {:>9.0}/s {:>10.0}/s {:>10.1} {:>11.1}",
        rows as u64,
        rate(t1 - t0),
        rate(t2 - t1),
        rate(t2 - t0),
        csv,
        lake
    );
    Ok(())
}

fn dir_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    if !dir.exists() {
        return Ok(0);
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// Resident memory of this process, bytes.
pub(crate) fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Resident memory of this process, bytes: (anonymous, file-backed). The file-backed
/// part is mostly the program's own code, paged in as it is first run.
pub(crate) fn rss_anon_file() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kb| kb << 10)
    };
    (kb("RssAnon:"), kb("RssFile:") + kb("RssShmem:"))
}

/// A cheap deterministic generator (xorshift), so workloads are the same every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn sequence(checks: u64, streams: u32) {
    use k2_pipeline::{SequenceConfig, SequenceTracker};
    // Memory first, before anything has been allocated and freed (freed pages are reused):
    // RSS growth while 100 000 streams are created and fed, per 10 000 streams.
    let before = rss_bytes();
    let mut t = SequenceTracker::new(SequenceConfig::default());
    for i in 0..100_000u32 {
        let id = t.stream("BENCH", &format!("S{i:06}"));
        for seq in [1, 2, 3, 5, 6, 9, 10] {
            t.check(id, seq, 0);
        }
    }
    let grown = rss_bytes().saturating_sub(before);
    std::hint::black_box(&t);
    println!(
        "memory: {:.2} MB per 10 000 streams (RSS growth over 100 000 streams with 2 open gaps each)",
        grown as f64 / 10.0 / 1e6
    );
    drop(t);

    println!("sequence tracker ({checks} checks over {streams} streams, one core)");
    println!("workload                                    checks/s    ns/check");
    // Messages arrive round-robin over the streams, as a multi-symbol feed interleaves them.
    let run = |name: &str, mutate: &dyn Fn(&mut XorShift, u64) -> u64| {
        let mut t = SequenceTracker::new(SequenceConfig::default());
        let ids: Vec<_> = (0..streams)
            .map(|i| t.stream("BENCH", &format!("S{i:05}")))
            .collect();
        let mut next = vec![1u64; streams as usize];
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let started = Instant::now();
        let mut tally = 0u64;
        for n in 0..checks {
            let s = (n % u64::from(streams)) as usize;
            let seq = mutate(&mut rng, next[s]);
            next[s] = next[s].max(seq + 1);
            tally += u64::from(t.check(ids[s], seq, n as i64) == k2_pipeline::Event::InOrder);
        }
        let secs = started.elapsed().as_secs_f64();
        std::hint::black_box(tally);
        println!(
            "{name:40} {:>12.0} {:>11.2}",
            checks as f64 / secs,
            secs * 1e9 / checks as f64
        );
        t
    };
    run("in order", &|_, next| next);
    // 1 % skip one ahead (a gap), 1 % repeat the last one, 1 % go two back (a duplicate, or
    // the fill of a gap just opened).
    let t = run(
        "mixed: 1% skip ahead, 2% behind",
        &|rng, next| match rng.next() % 100 {
            0 => next + 1,
            1 => next.saturating_sub(1).max(1),
            2 => next.saturating_sub(2).max(1),
            _ => next,
        },
    );
    let (gaps, open): (u64, usize) = t.streams().fold((0, 0), |(g, o), (_, _, s)| {
        (g + s.stats().gaps, o + s.gaps().len())
    });
    println!("  ({gaps} gaps detected, {open} still open at the end)");
    drop(t);
}

/// Ids spread like real message ids (which are hashes).
fn bench_id(n: u64) -> u128 {
    let a = n.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) ^ n;
    let b = a.wrapping_mul(0xD6E8_FEB8_6659_FD93) ^ (a >> 29);
    (u128::from(a) << 64) | u128::from(b)
}

fn dedup(ids: u64) {
    use k2_pipeline::{DedupConfig, Deduplicator};
    // One hour of arrivals per million ids, so the window (24 h) holds up to 24 million.
    let config = DedupConfig {
        max_ids: usize::MAX,
        ..DedupConfig::default()
    };
    let at = |n: u64| (n / 1_000_000) as i64 * 3_600_000_000 + (n % 1_000_000) as i64;
    println!(
        "dedup: Bloom filter in front of exact time-bucketed sets ({ids} distinct ids, one core)"
    );
    let before = rss_bytes();
    let mut d = Deduplicator::new(config);
    let started = Instant::now();
    for n in 0..ids {
        d.check(bench_id(n), at(n));
    }
    let new_secs = started.elapsed().as_secs_f64();
    let grown = rss_bytes().saturating_sub(before);
    println!("workload                                    checks/s    ns/check");
    println!(
        "{:40} {:>12.0} {:>11.2}",
        "new ids (the common case)",
        ids as f64 / new_secs,
        new_secs * 1e9 / ids as f64
    );
    // A duplicate is confirmed by the exact tier before it is dropped. The window's sets
    // are searched newest first, so a recent duplicate (a reconnect's overlap, a retried
    // produce) is found sooner than an old one.
    let mut duplicates = |label: &str, from: u64| {
        let started = Instant::now();
        let mut dropped = 0u64;
        for n in (from..ids).step_by(10) {
            dropped += u64::from(!d.check(bench_id(n), at(ids)));
        }
        let secs = started.elapsed().as_secs_f64();
        let checks = (ids - from).div_ceil(10);
        assert_eq!(dropped, checks, "every repeated id is dropped");
        println!(
            "{:40} {:>12.0} {:>11.2}",
            label,
            checks as f64 / secs,
            secs * 1e9 / checks as f64
        );
    };
    duplicates(
        "duplicates of the last hour's ids",
        ids.saturating_sub(1_000_000),
    );
    duplicates("duplicates spread over the whole window", 0);
    let stats = d.stats();
    println!(
        "memory: {:.1} MB per million ids (RSS growth {:.0} MB; held by the structures {:.0} MB)",
        grown as f64 / 1e6 / (ids as f64 / 1e6),
        grown as f64 / 1e6,
        d.memory_bytes() as f64 / 1e6
    );
    println!(
        "Bloom hits not confirmed by the exact tier (passed, not dropped): {} of {} new ids ({:.3} %)",
        stats.false_positives,
        ids,
        stats.false_positives as f64 * 100.0 / ids as f64
    );
}

/// The Redis-backed tracker: messages round-robin over the streams, checked in batches
/// (one pipelined round trip per batch, one script call per stream in it).
/// Shared dedup in Redis: a writer claims a batch's ids before writing it and keeps them
/// after its commit (two pipelined passes of script calls, 1 000 ids each); another
/// writer then meets the same ids held. Memory is Redis's own `used_memory` growth.
async fn dedup_redis(addr: &str) -> anyhow::Result<()> {
    use k2_lake::integrity::shared_dedup::RedisDedup;
    let target = redis_target(addr);
    let scope = format!("{}:trades", std::process::id());
    let err = |e: redis::RedisError| anyhow::anyhow!("Redis at {addr}: {e}");
    let mut a = RedisDedup::connect(&target, &scope).await.map_err(err)?;
    let mut b = RedisDedup::connect(&target, &scope).await.map_err(err)?;
    let mut info = redis::Client::open(format!("redis://{addr}/"))
        .map_err(err)?
        .get_multiplexed_async_connection()
        .await
        .map_err(err)?;
    let mut used_memory = async || -> anyhow::Result<u64> {
        let text: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut info)
            .await
            .map_err(err)?;
        text.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .context("INFO memory without used_memory")
    };
    let lease = Duration::from_secs(300);
    let window = Duration::from_secs(24 * 3600);
    println!("dedup claims in Redis at {addr} (a batch: claim, then keep after the commit)");
    println!("batch          new ids/s   held ids/s   ms/batch");
    let before = used_memory().await?;
    let mut next = 1u128 << 64;
    let mut stored = 0u64;
    for batch in [1_000usize, 10_000, 50_000] {
        let rounds = (1_000_000 / batch).max(1);
        let (mut new_time, mut held_time) = (Duration::ZERO, Duration::ZERO);
        for r in 0..rounds {
            let ids: Vec<u128> = (0..batch as u128)
                .map(|i| (next + i) * 0x9E37_79B9_7F4A_7C15)
                .collect();
            next += batch as u128;
            let token = format!("a|{batch}-{r}");
            let request: Vec<(u128, Option<&str>)> = ids.iter().map(|&i| (i, None)).collect();
            let t = Instant::now();
            let got = a.claim(&request, &token, lease).await.map_err(err)?;
            anyhow::ensure!(got.iter().all(Option::is_none), "fresh ids were held");
            a.keep(&ids, &token, window).await.map_err(err)?;
            new_time += t.elapsed();
            let t = Instant::now();
            let got = b.claim(&request, "b|0", lease).await.map_err(err)?;
            anyhow::ensure!(
                got.iter().all(Option::is_some),
                "held ids were claimed again"
            );
            held_time += t.elapsed();
            stored += batch as u64;
        }
        let n = (rounds * batch) as f64;
        println!(
            "{batch:>6} ids   {:>12.0} {:>12.0} {:>10.1}",
            n / new_time.as_secs_f64(),
            n / held_time.as_secs_f64(),
            new_time.as_secs_f64() * 1e3 / rounds as f64
        );
    }
    let grown = used_memory().await?.saturating_sub(before);
    println!(
        "Redis memory: {:.0} MB per million ids held ({stored} ids; keys expire with the window)",
        grown as f64 / stored as f64
    );
    Ok(())
}

/// Where the Redis benches keep their keys: under a prefix of their own.
fn redis_target(addr: &str) -> k2_lake::RedisTarget {
    k2_lake::RedisTarget {
        addr: addr.to_string(),
        prefix: "k2bench".into(),
        timeout: Duration::from_secs(10),
    }
}

async fn sequence_redis(addr: &str, streams: u32) -> anyhow::Result<()> {
    use k2_lake::integrity::shared_sequence::RedisSequenceTracker;
    let scope = std::process::id().to_string();
    let mut tracker =
        RedisSequenceTracker::connect(&redis_target(addr), &scope, Default::default())
            .await
            .map_err(|e| anyhow::anyhow!("Redis at {addr}: {e}"))?;
    // Per round trip, one script call per stream of the batch: what matters is how many
    // messages of a stream a batch carries (a writer's poll of 50 000 records over 100
    // symbols carries 500 each).
    for streams in [100, streams] {
        sequence_redis_streams(&mut tracker, addr, streams).await?;
    }
    Ok(())
}

async fn sequence_redis_streams(
    tracker: &mut k2_lake::integrity::shared_sequence::RedisSequenceTracker,
    addr: &str,
    streams: u32,
) -> anyhow::Result<()> {
    let symbols: Vec<String> = (0..streams).map(|i| format!("S{i:05}")).collect();
    let exchange = format!("BENCH{streams}");
    println!("sequence tracker in Redis at {addr} ({streams} streams, messages round-robin)");
    println!("batch (one round trip)     checks/s    µs/batch");
    let mut next = vec![1u64; streams as usize];
    for batch in [1usize, 100, 1_000, 10_000, 50_000] {
        let total = (batch * 20).clamp(2_000, 1_000_000);
        let mut done = 0;
        let mut n = 0u64;
        let started = Instant::now();
        while done < total {
            let msgs: Vec<_> = (0..batch)
                .map(|_| {
                    let s = (n % u64::from(streams)) as usize;
                    n += 1;
                    let seq = next[s];
                    next[s] += 1;
                    (exchange.as_str(), symbols[s].as_str(), seq, n as i64)
                })
                .collect();
            tracker
                .check_batch(&msgs)
                .await
                .map_err(|e| anyhow::anyhow!("Redis at {addr}: {e}"))?;
            done += batch;
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{batch:>6} messages        {:>10.0} {:>11.0}",
            done as f64 / secs,
            secs * 1e6 / (done / batch) as f64
        );
    }
    Ok(())
}
