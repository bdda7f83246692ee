//! `k2 bench feed`: the live path against the local exchange simulator on 127.0.0.1.
//!
//! 1. Frames parsed per second on one core (Binance trades; Kraken frames of 10 trades).
//! 2. The handler end to end: a burst of trades over the WebSocket → parsed → appended
//!    durably to the embedded log, messages/s, and the process's memory before and after.
//! 3. Freshness and memory of a long run: trades at a steady rate through the whole live
//!    path of `k2 up` (capture → log → live tail and lake writer); a query over lake ∪ tail
//!    runs in a loop, and each trade's freshness is the time from its frame being received
//!    to the first query answer holding it. Resident memory is sampled every 10 seconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use k2_ingest::feeds::capture::cpu_seconds;
use k2_ingest::simulator::{FrameMaker, Simulator, Step};
use k2_ingest::{FeedConfig, Reconnect, Venue};
use k2_lake::LakeTable;
use k2_lake::query::{MarketFilter, QueryEngine};
use k2_lake::tail::{Tail, TailConfig};
use k2_log::Log;
use k2_model::MarketRecord;

use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::Config;

fn feed_config(venue: Venue, url: String) -> (FeedConfig, Reconnect) {
    (
        FeedConfig {
            venue,
            url,
            symbols: vec![venue.feed().default_symbols()[0].into()],
            quotes: false,
            stale_after: Duration::from_secs(30),
            ping_every: Duration::from_secs(10),
            pause: None,
        },
        Reconnect::default(),
    )
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

pub async fn run(
    config: Config,
    messages: u64,
    rate: u32,
    seconds: u64,
    log_retention: Duration,
) -> anyhow::Result<()> {
    parse_only(messages);
    handler(&config, messages).await?;
    freshness(&config, rate, seconds, log_retention).await
}

/// Records per CPU-second of the calling thread parsing `frames` into batches of 1 000
/// records, as the handler does: the best of three passes (the thread's CPU clock leaves
/// out the time it is descheduled; the best pass, the noise of a shared machine).
fn parse_rate(
    frames: &[String],
    parse: impl Fn(&str, &mut Vec<MarketRecord>) -> bool,
) -> (usize, f64) {
    let mut batch = Vec::with_capacity(1_000);
    let mut best = 0f64;
    let mut n = 0usize;
    for _ in 0..3 {
        n = 0;
        let cpu = cpu_seconds(libc::CLOCK_THREAD_CPUTIME_ID);
        for f in frames {
            if parse(f, &mut batch) && batch.len() >= 1_000 {
                n += batch.len();
                batch.clear();
            }
        }
        n += batch.len();
        batch.clear();
        let took = cpu_seconds(libc::CLOCK_THREAD_CPUTIME_ID) - cpu;
        best = best.max(n as f64 / took.max(1e-9));
    }
    (n, best)
}

fn parse_only(messages: u64) {
    println!("parse, one core (trades per CPU-second, best of 3):");
    for venue in Venue::ALL {
        let feed = venue.feed();
        let frames = feed.trade_frames(1, messages);
        let (n, rate) = parse_rate(&frames, |f, out| feed.parse(f, 1, out).is_ok());
        println!(
            "  {:<8} {:>4} frames  {n:>10} trades   {rate:>12.0} trades/s",
            venue.name(),
            frames.len()
        );
    }
}

/// The simulator of the burst, on a thread and runtime of its own, so that the CPU it
/// spends making and sending frames can be told apart from K2's.
struct SimulatorThread {
    url: String,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<f64>>,
}

impl SimulatorThread {
    fn start(frames: Arc<Vec<String>>) -> anyhow::Result<SimulatorThread> {
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("simulator".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = url_tx.send(Err(e.to_string()));
                        return 0.0;
                    }
                };
                runtime.block_on(async move {
                    match Simulator::start(vec![vec![Step::Burst(frames)]]).await {
                        Ok(sim) => {
                            let _ = url_tx.send(Ok(sim.url()));
                            stopped.cancelled().await;
                        }
                        Err(e) => {
                            let _ = url_tx.send(Err(e.to_string()));
                        }
                    }
                });
                cpu_seconds(libc::CLOCK_THREAD_CPUTIME_ID)
            })?;
        let url = url_rx
            .recv()?
            .map_err(|e| anyhow::anyhow!("the simulator did not start: {e}"))?;
        Ok(SimulatorThread {
            url,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the simulator; returns the CPU seconds its thread used.
    fn stop(mut self) -> f64 {
        self.stop.cancel();
        self.thread.take().map_or(0.0, |t| t.join().unwrap_or(0.0))
    }
}

/// Bursts of the handler bench: each on a fresh log, the figures of each printed, then
/// the median (the machine is shared; one burst can be unlucky either way).
const BURSTS: usize = 3;

/// `messages` trades through each venue's handler: Binance frames of one trade, Kraken
/// frames of ten.
async fn handler(config: &Config, messages: u64) -> anyhow::Result<()> {
    for venue in Venue::ALL {
        let frames = Arc::new(venue.feed().trade_frames(1, messages));
        println!(
            "handler, {venue:?}: simulator burst → parsed → durable in the embedded log ({BURSTS} bursts):"
        );
        let (mut whole, mut feed) = (Vec::new(), Vec::new());
        for _ in 0..BURSTS {
            let (k2, handler) = burst(config, venue, frames.clone(), messages).await?;
            whole.push(k2);
            feed.push(handler);
        }
        for v in [&mut whole, &mut feed] {
            v.sort_by(f64::total_cmp);
        }
        println!(
            "  trades per CPU-second, median (best): the feed's thread {:.0} ({:.0}); all of K2 {:.0} ({:.0})",
            feed[BURSTS / 2],
            feed[BURSTS - 1],
            whole[BURSTS / 2],
            whole[BURSTS - 1]
        );
    }
    Ok(())
}

/// One burst of `frames` through a fresh K2; prints its figures and returns the trades per
/// CPU-second of all of K2 and of the feed's thread alone.
async fn burst(
    config: &Config,
    venue: Venue,
    frames: Arc<Vec<String>>,
    messages: u64,
) -> anyhow::Result<(f64, f64)> {
    let tmp = tempfile::tempdir()?;
    let mut config = config.clone();
    config.data_dir = tmp.path().to_path_buf();
    let app = App::open(config).await?;
    let sim = SimulatorThread::start(frames)?;
    let (feed, reconnect) = feed_config(venue, sim.url.clone());
    let rss_before = crate::memory::rss_bytes();
    let topic = k2_model::TopicName::new(
        k2_model::AssetClass::Crypto,
        k2_model::DataType::Trades,
        venue.exchange(),
    )
    .to_string();
    let cpu_before = cpu_seconds(libc::CLOCK_PROCESS_CPUTIME_ID);
    let started = Instant::now();
    let log = app.log.clone();
    // The burst is in once the log holds every trade: then the capture is stopped.
    let done = tokio_util::sync::CancellationToken::new();
    let watch = {
        let (done, topic) = (done.clone(), topic.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let appended: u64 = log
                    .end_offsets(&topic)
                    .await
                    .map_or(0, |ends| ends.iter().sum());
                if appended >= messages {
                    done.cancel();
                    break;
                }
            }
        })
    };
    let options = k2_ingest::CaptureOptions::default();
    let stats = k2_ingest::capture(&app.log, &app.dlq, feed, reconnect, &options, done).await?;
    watch.abort();
    let secs = started.elapsed().as_secs_f64();
    let rss_after = crate::memory::rss_bytes();
    // The simulator's thread is idle once the burst is sent: all of its CPU is the burst's.
    let simulator_cpu = sim.stop();
    let k2_cpu = cpu_seconds(libc::CLOCK_PROCESS_CPUTIME_ID) - cpu_before - simulator_cpu;
    let per_cpu_second = stats.trades as f64 / k2_cpu.max(1e-9);
    let feed_cpu = stats.feed_cpu_us as f64 / 1e6;
    let feed_per_cpu_second = stats.trades as f64 / feed_cpu.max(1e-9);
    println!(
        "  {} trades in {secs:.2}s = {:.0} trades/s ({} appends, {:.0} trades per append); RSS {:.0} → {:.0} MB",
        stats.trades,
        stats.trades as f64 / secs,
        stats.appends,
        stats.trades as f64 / stats.appends.max(1) as f64,
        mb(rss_before),
        mb(rss_after)
    );
    println!(
        "    CPU: the feed's thread (WebSocket, parse, hand-over) {feed_cpu:.2} s = {feed_per_cpu_second:.0} trades per CPU-second; \
         all of K2 {k2_cpu:.2} s = {per_cpu_second:.0}; the simulator's own thread {simulator_cpu:.2} s",
    );
    Ok((per_cpu_second, feed_per_cpu_second))
}

async fn freshness(
    config: &Config,
    rate: u32,
    seconds: u64,
    log_retention: Duration,
) -> anyhow::Result<()> {
    // The gauges of what K2 holds by design, to tell their share of the memory: the dedup
    // window (it grows until `dedup.window` or `dedup.max_ids`), the embedded
    // log's page cache (64 MiB) and the decoded Parquet footers (until
    // `query.file_metadata_cache_mb`).
    let metrics = crate::telemetry::recorder(&config.data_dir)?;
    // `window` holds the query times (µs) since the previous sample.
    let sample = |at: Duration, window: &mut Vec<u32>| {
        window.sort_unstable();
        let pick = |p: f64| {
            window
                .get(((window.len() as f64 * p) as usize).min(window.len().saturating_sub(1)))
                .map_or(f64::NAN, |us| f64::from(*us) / 1000.0)
        };
        let queries = format!(
            "{} queries p50/p99/max {:.1}/{:.1}/{:.1} ms",
            window.len(),
            pick(0.5),
            pick(0.99),
            pick(1.0)
        );
        window.clear();
        let text = metrics.render();
        let gauge = |name: &str| {
            text.lines()
                .filter(|l| {
                    l.strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with([' ', '{']))
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .fold(0.0, |a, b| a + b) as u64
        };
        let (anon, file) = crate::memory::rss_anon_file();
        // With `--features heap-stats`, the live heap: what the program holds, against
        // what the allocator keeps resident.
        let heap = crate::memory::heap_live_bytes()
            .map_or(String::new(), |b| format!(", heap live {:.0}", mb(b)));
        format!(
            "{}s {:.0} = anon {:.0} + file {:.0} (dedup {:.0}, log cache {:.0}, footers {:.0}; tail {} events{heap}); lake files {}; log holds {:.1} MB in a {:.1} MB file; {queries}",
            at.as_secs(),
            mb(anon + file),
            mb(anon),
            mb(file),
            mb(gauge("k2_dedup_memory_bytes")),
            mb(gauge("k2_log_embedded_cache_bytes")),
            mb(gauge("k2_query_file_metadata_cache_bytes")),
            gauge("k2_tail_events"),
            gauge("k2_lake_files_committed_total"),
            mb(gauge("k2_log_embedded_held_bytes")),
            mb(gauge("k2_log_embedded_file_bytes")),
        )
    };
    let count = u64::from(rate) * seconds;
    // Frames are made as they are sent: the process holds none of the run's trades.
    let sim = Simulator::start(vec![vec![Step::Paced {
        count: count as usize,
        frame: FrameMaker(Arc::new(|i| {
            let mut one = Venue::Binance.feed().trade_frames(i as u64 + 1, 1);
            one.pop().unwrap_or_default()
        })),
        per_second: rate,
    }]])
    .await?;
    let tmp = tempfile::tempdir()?;
    let mut config = config.clone();
    config.data_dir = tmp.path().to_path_buf();
    config.log.retention = log_retention;
    // Compaction is measured after the run, before and after it.
    config.writer.compact_every = Duration::ZERO;
    let app = Arc::new(App::open(config.clone()).await?);
    let catalog = app.catalog().await?;
    let (feed, reconnect) = feed_config(Venue::Binance, sim.url());
    for spec in k2_ingest::topic_specs(k2_model::AssetClass::Crypto, "BINANCE", 4) {
        app.log.ensure_topic(&spec).await?;
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let tail = Arc::new(Tail::new(TailConfig::default()));
    let (follower, writer) =
        crate::app::follow_and_write(&app, &catalog, &tail, None, &stop).await?;
    let trim = app.trim_log_in_background(&stop);
    let stop_feed = tokio_util::sync::CancellationToken::new();
    let capture = {
        let (app, stop) = (app.clone(), stop_feed.clone());
        tokio::spawn(async move {
            let options = k2_ingest::CaptureOptions::default();
            k2_ingest::capture(&app.log, &app.dlq, feed, reconnect, &options, stop).await
        })
    };

    let engine = QueryEngine::new(catalog.clone(), config.query.clone())?;
    let filter = MarketFilter {
        symbols: vec!["BTCUSDT".into()],
        fields: vec!["source_sequence".into(), "receive_timestamp".into()],
        limit: 1000,
        ..Default::default()
    };
    // The bench's own books are allocated and made resident before the first memory
    // sample, so the RSS over the run is K2's: a bit per trade seen, a slot per freshness
    // figure.
    let mut seen = resident_zeroed::<u64>(count as usize / 64 + 1);
    let mut fresh_us = resident_zeroed::<i64>(count as usize);
    let mut fresh = 0;
    let mut rss = Vec::new();
    let mut next_sample = Instant::now();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds + 30);
    let mut queries = 0u64;
    let mut window = Vec::new();
    // Until the last trade sent is seen (earlier ones a query missed are counted as such).
    let is_seen = |seen: &[u64], seq: i64| seen[seq as usize / 64] & (1 << (seq % 64)) != 0;
    while !is_seen(&seen, count as i64) && Instant::now() < deadline {
        if Instant::now() >= next_sample {
            rss.push(sample(started.elapsed(), &mut window));
            next_sample += Duration::from_secs(10);
        }
        let asked = Instant::now();
        let page = engine
            .market_with_tail(LakeTable::Trades, &filter, &tail)
            .await?;
        window.push(asked.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
        let now = chrono::Utc::now().timestamp_micros();
        queries += 1;
        for b in &page.batches {
            let seq = b.column(0).as_primitive::<Int64Type>();
            let received = b.column(1).as_primitive::<TimestampMicrosecondType>();
            for i in 0..b.num_rows() {
                let s = seq.value(i);
                if (1..=count as i64).contains(&s) && !is_seen(&seen, s) {
                    seen[s as usize / 64] |= 1 << (s % 64);
                    fresh_us[fresh] = now - received.value(i);
                    fresh += 1;
                }
            }
        }
    }
    rss.push(sample(started.elapsed(), &mut window));
    stop_feed.cancel();
    let _ = capture.await;
    stop.cancel();
    let _ = writer.await;
    let _ = follower.await;
    if let Some(trim) = trim {
        let _ = trim.await;
    }

    fresh_us.truncate(fresh);
    fresh_us.sort_unstable();
    let q = |p: f64| {
        fresh_us
            .get(((fresh_us.len() as f64 * p) as usize).min(fresh_us.len().saturating_sub(1)))
            .map_or(f64::NAN, |us| *us as f64 / 1000.0)
    };
    println!(
        "freshness, {rate} trades/s for {seconds}s through capture → log → tail (+ lake writer), queried over lake ∪ tail:"
    );
    println!(
        "  {} of {count} trades seen by {queries} queries; received → in a query answer: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        fresh_us.len(),
        q(0.50),
        q(0.99),
        q(1.0)
    );
    println!(
        "  every 10 s: RSS (MB), anonymous and file-backed, and in brackets what K2 holds by design and bounds; the lake's data files; the query times since the last line:"
    );
    for line in rss {
        println!("    {line}");
    }
    println!(
        "  the embedded log under log.retention = {}",
        humantime::format_duration(log_retention)
    );
    super::compaction::before_and_after(&config, &catalog, "BTCUSDT", "BINANCE").await
}

/// A zeroed vector whose pages are resident now. `vec![0; n]` maps fresh zero pages that
/// count in RSS only once written, which would bill the bench's books (72 MB over a
/// 30-minute run at 5 000 trades/s) to K2 bit by bit as the run goes.
fn resident_zeroed<T: Copy + Default>(n: usize) -> Vec<T> {
    let mut v = vec![T::default(); n];
    let per_page = (4096 / std::mem::size_of::<T>().max(1)).max(1);
    for x in v.iter_mut().step_by(per_page) {
        // Opaque to the optimiser, so the store to a page known to be zero stays.
        *x = std::hint::black_box(T::default());
    }
    v
}
