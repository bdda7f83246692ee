//! A live feed into the log: [`run_feed`] keeps the exchange connected on its own
//! task and hands frames' records over a bounded channel; this side encodes them and
//! appends them to the venue's topics, and stores refused frames, whole, in the
//! dead-letter queue.
//!
//! Batching follows the load: each append takes everything that arrived while the
//! previous one was being made durable (up to `max_events`), so a quiet feed appends
//! frame by frame with little delay and a burst is appended in large batches. When the log
//! falls behind, the channel fills, the connection stops reading, and the exchange's TCP
//! window does the rest: memory stays bounded. On stop, what is in the channel is
//! appended before returning.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k2_log::{DeadLetter, DeadLetterStore, Log, LogError, SchemaStore, TopicBatch};
use k2_model::{AssetClass, DataType, MarketRecord, TopicName, avro};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use tokio_util::sync::CancellationToken;

use super::Venue;
use super::connection::FeedError;
use super::connection::{BATCH_RECORDS, FeedConfig, FeedEvent};
use super::supervisor::{FeedStats, Reconnect, run_feed};
use crate::metrics;
use crate::producer::{encode, now_us, topic_specs};

/// How a capture buffers and appends.
#[derive(Clone, Debug)]
pub struct CaptureOptions {
    /// Partitions of the venue's topics when they are created.
    pub partitions: u32,
    /// Records held between the connection and the log, at most (rounded up to whole
    /// batches of [`BATCH_RECORDS`]).
    pub buffer_events: usize,
    /// Records per log append, about (whole batches; at least one).
    pub max_events: usize,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        CaptureOptions {
            partitions: 4,
            buffer_events: 32768,
            max_events: 16384,
        }
    }
}

/// What a capture did.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct CaptureStats {
    pub trades: u64,
    pub quotes: u64,
    /// Frames refused and dead-lettered.
    pub refused: u64,
    /// Log appends made.
    pub appends: u64,
    pub connections: u64,
    /// Connections that failed or ended early.
    pub failures: u64,
    /// CPU time of the feed's thread (reading, parsing, handing over), microseconds.
    pub feed_cpu_us: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Feed(#[from] FeedError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("starting the feed's thread: {0}")]
    Thread(std::io::Error),
}

/// Captures `feed` into `log` until `stop` is cancelled (then appends what is buffered and
/// returns, the connection closed and no reconnect waited out) or the feed gives up (then
/// appends what is buffered and returns its error).
pub async fn capture<L: Log + SchemaStore>(
    log: &L,
    dlq: &DeadLetterStore,
    feed: FeedConfig,
    reconnect: Reconnect,
    options: &CaptureOptions,
    stop: CancellationToken,
) -> Result<CaptureStats, CaptureError> {
    let venue = feed.venue;
    let label = venue.name();
    let exchange = venue.exchange();
    for spec in topic_specs(AssetClass::Crypto, exchange, options.partitions) {
        log.ensure_topic(&spec).await?;
    }
    let mut topics = BTreeMap::new();
    for dt in [DataType::Trades, DataType::Quotes] {
        let topic = TopicName::new(AssetClass::Crypto, dt, exchange);
        let id = log.register(&topic.subject(), avro::schema_for(dt)).await?;
        topics.insert(dt, (topic.to_string(), id));
    }
    let capacity = options.buffer_events.div_ceil(BATCH_RECORDS).max(1);
    let per_append = (options.max_events / BATCH_RECORDS).max(1);
    let (tx, mut rx) = mpsc::channel(capacity);
    let (handler, fed) = spawn_feed(feed, reconnect, tx, stop.clone())?;
    tracing::info!(venue = label, "capture started");

    let mut stats = CaptureStats::default();
    let mut events = Vec::with_capacity(per_append);
    let mut stopping = false;
    loop {
        let n = tokio::select! {
            n = rx.recv_many(&mut events, per_append) => n,
            () = stop.cancelled(), if !stopping => {
                // No new frames; what is in the channel is still appended.
                stopping = true;
                rx.close();
                continue;
            }
        };
        if n == 0 {
            break;
        }
        append(log, dlq, &topics, venue, &mut events, &mut stats).await?;
        // How full the buffer is: 1 and the reading waits for the log.
        metrics::feed_buffer_fill(label, rx.len() as f64 / capacity as f64);
    }
    let (fed, cpu) = match fed.await {
        Ok(done) => done,
        // The thread ended without a word: it panicked; so does the capture.
        Err(_) => match handler.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the feed thread always reports before it ends"),
        },
    };
    stats.feed_cpu_us = (cpu * 1e6) as u64;
    tracing::info!(venue = label, ?stats, "capture stopped");
    let run = fed?;
    stats.connections = run.connections;
    stats.failures = run.failures;
    Ok(stats)
}

type FeedOutcome = (Result<FeedStats, FeedError>, f64);

/// Runs the feed on a thread of its own, with a single-threaded runtime: the connection's
/// reading and parsing stay on one core, never stolen between worker threads, and what it
/// costs is that thread's CPU (`k2_feed_cpu_seconds`; a rate of 1 per second is a full
/// core). The receiver gets the feed's outcome and the thread's CPU seconds.
fn spawn_feed(
    feed: FeedConfig,
    reconnect: Reconnect,
    out: mpsc::Sender<FeedEvent>,
    stop: CancellationToken,
) -> Result<(std::thread::JoinHandle<()>, oneshot::Receiver<FeedOutcome>), CaptureError> {
    let label = feed.venue.name();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CaptureError::Thread)?;
    let (done, outcome) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name(format!("feed-{label}"))
        .spawn(move || {
            let cpu = Cell::new(0.0);
            let count_cpu = || {
                let now = cpu_seconds(libc::CLOCK_THREAD_CPUTIME_ID);
                // A counter counts whole units: microseconds.
                metrics::feed_cpu(label, ((now - cpu.replace(now)) * 1e6) as u64);
            };
            let fed = runtime.block_on(async {
                let run = run_feed(&feed, &reconnect, &out, now_us, &stop);
                let meter = async {
                    let mut every = tokio::time::interval(Duration::from_secs(1));
                    loop {
                        every.tick().await;
                        count_cpu();
                    }
                };
                tokio::select! {
                    fed = run => fed,
                    () = meter => unreachable!("the meter never ends"),
                }
            });
            count_cpu();
            let _ = done.send((fed, cpu.get()));
        })
        .map_err(CaptureError::Thread)?;
    Ok((thread, outcome))
}

/// CPU time, seconds, of the clock `id`: `CLOCK_THREAD_CPUTIME_ID` for the calling thread,
/// `CLOCK_PROCESS_CPUTIME_ID` for the process.
pub fn cpu_seconds(id: libc::clockid_t) -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill.
    if unsafe { libc::clock_gettime(id, &mut t) } != 0 {
        return 0.0;
    }
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// Room per record in a batch's buffer: a key and an encoded trade or quote take about
/// 200 bytes. Room never touched costs no memory; growing the buffer by copying it, as
/// a burst's batches did, cost a fifth of the encoding.
const RECORD_BYTES: usize = 320;

/// Appends one batch of events (drained from `events`): records to their topics,
/// refused frames to the dead-letter queue.
async fn append<L: Log>(
    log: &L,
    dlq: &DeadLetterStore,
    topics: &BTreeMap<DataType, (String, u32)>,
    venue: Venue,
    events: &mut Vec<FeedEvent>,
    stats: &mut CaptureStats,
) -> Result<(), CaptureError> {
    let label = venue.name();
    let started = Instant::now();
    let now = now_us();
    let (mut n_trades, mut n_quotes) = (0, 0);
    for event in events.iter() {
        if let FeedEvent::Records(records) = event {
            for rec in records {
                match rec.data_type() {
                    DataType::Trades => n_trades += 1,
                    DataType::Quotes => n_quotes += 1,
                    DataType::ReferenceData => {}
                }
            }
        }
    }
    let batch = |dt: DataType, n: usize| {
        TopicBatch::with_capacity(topics[&dt].0.as_str(), n, n * RECORD_BYTES)
    };
    let mut trades = batch(DataType::Trades, n_trades);
    let mut quotes = batch(DataType::Quotes, n_quotes);
    let mut letters = Vec::new();
    let mut oldest_receive = i64::MAX;
    for event in events.drain(..) {
        match event {
            FeedEvent::Records(mut records) => {
                for rec in &mut records {
                    let (into, dt) = match rec.data_type() {
                        DataType::Trades => (&mut trades, DataType::Trades),
                        DataType::Quotes => (&mut quotes, DataType::Quotes),
                        // Feeds carry no reference data.
                        DataType::ReferenceData => continue,
                    };
                    oldest_receive = oldest_receive.min(receive_time(rec));
                    encode(rec, topics[&dt].1, now, into);
                }
            }
            FeedEvent::Refused { raw, error, source } => {
                metrics::feed_refused(label, error.kind);
                letters.push(DeadLetter {
                    stage: venue.feed().dead_letter_stage().into(),
                    source,
                    kind: error.kind.into(),
                    reason: error.reason,
                    raw: raw.into_bytes(),
                    rejected_at_us: now,
                });
            }
        }
    }
    let counts = [
        (DataType::Trades, trades.len()),
        (DataType::Quotes, quotes.len()),
    ];
    let batches: Vec<TopicBatch> = [trades, quotes]
        .into_iter()
        .filter(|batch| !batch.is_empty())
        .collect();
    if !batches.is_empty() {
        let records: usize = batches.iter().map(TopicBatch::len).sum();
        log.produce(batches, None)
            .instrument(tracing::trace_span!(target: k2_model::STAGE_SPANS, "append", venue = label, records))
            .await?;
        stats.appends += 1;
        // Received → durable in the log, for the oldest record of the batch.
        let lag = Duration::from_micros(now_us().saturating_sub(oldest_receive).max(0) as u64);
        metrics::feed_appended(label, started.elapsed(), lag);
    }
    for (dt, n) in counts {
        let n = n as u64;
        match dt {
            DataType::Trades => stats.trades += n,
            _ => stats.quotes += n,
        }
        metrics::feed_records(label, dt.as_str(), n);
    }
    if !letters.is_empty() {
        stats.refused += letters.len() as u64;
        dlq.append(&letters)?;
        log.publish_dead_letters(&letters).await?;
    }
    Ok(())
}

fn receive_time(rec: &MarketRecord) -> i64 {
    match rec {
        MarketRecord::Trade(t) => t.receive_timestamp_us,
        MarketRecord::Quote(q) => q.receive_timestamp_us,
        MarketRecord::Reference(_) => i64::MAX,
    }
}
