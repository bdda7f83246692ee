//! `k2 bench kafka`: K2 on a Kafka cluster against librdkafka alone moving the same
//! messages, and the time from produce to visible in the lake.

use std::time::{Duration, Instant};

use crate::app::App;
use crate::config::Config;

/// K2 on the configured Kafka cluster against librdkafka alone moving the same messages,
/// in one run.
pub async fn run(
    config: &Config,
    rows: u64,
    companies: u32,
    latency_samples: usize,
) -> anyhow::Result<()> {
    use k2_log::{Log, LogConsumer};
    if !config.kafka() {
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
    let compression = kafka.compression.name();
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
/// configured commit interval (`writer.max_age`): one trade at a time, each
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
