//! One live connection to an exchange's WebSocket feed: connect (TLS verified for `wss`),
//! subscribe, read frames until the feed ends, goes silent or fails, and hand every
//! frame's records — or the raw frame with the reason it was refused — to a bounded
//! channel (a slow consumer slows the reading, never grows memory). [`run_feed`] keeps a
//! feed connected: jittered exponential backoff, failover across URLs, a circuit breaker
//! on connect failures, and a bounded number of consecutive failures after which it gives
//! up loudly (the process exits non-zero and its supervisor restarts it).

use std::time::{Duration, Instant};

use k2_model::MarketRecord;
use tokio::sync::{mpsc, oneshot};

use k2_pipeline::{BreakerConfig, CircuitBreaker, Jitter, RetryPolicy};

use crate::feeds::{self, FrameError};
use crate::ws;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Venue {
    Binance,
    Kraken,
}

#[derive(Clone, Debug)]
pub struct FeedConfig {
    pub venue: Venue,
    /// The feed's base URL: Binance `wss://stream.binance.com:9443`, Kraken
    /// `wss://ws.kraken.com/v2`; a simulator's `ws://127.0.0.1:PORT` in tests.
    pub url: String,
    /// Binance `BTCUSDT`, Kraken `BTC/USD`.
    pub symbols: Vec<String>,
    /// Binance: also the best bid/offer (`bookTicker`) as quotes.
    pub quotes: bool,
    /// No frame for this long (pongs included) and the connection is given up as stalled.
    pub stale_after: Duration,
    /// A WebSocket ping goes out this often; the exchange's pong keeps a quiet but healthy
    /// connection from counting as stalled.
    pub ping_every: Duration,
}

/// Records per [`FeedEvent::Records`] at most: a connection passes on the records of
/// every frame it has already received, up to this many, as one event.
pub const BATCH_RECORDS: usize = 1024;

/// What a connection passes on.
#[derive(Debug)]
pub enum FeedEvent {
    /// The records of one or more frames, in arrival order (at most [`BATCH_RECORDS`],
    /// or one frame's records if a frame holds more).
    Records(Vec<MarketRecord>),
    /// A frame that could not be used, kept whole for the dead-letter queue.
    Refused {
        raw: String,
        error: FrameError,
        /// The connection's URL, the time the frame was received and the frame's hash.
        source: String,
    },
}

/// How a connection ended without an error of its own.
#[derive(Debug, PartialEq, Eq)]
pub enum ConnectionEnd {
    /// The exchange closed it.
    Closed,
    /// Nothing arrived within `stale_after`.
    Stalled,
    /// The receiver of the events went away.
    Stopped,
    /// Its successor took over (rotation).
    Retired,
}

/// How a connection hands over to its successor when the feed rotates connections.
#[derive(Default)]
pub struct Handover {
    /// Told once the connection has passed on its first event.
    pub ready: Option<oneshot::Sender<()>>,
    /// When told, the connection ends at the next frame boundary as [`ConnectionEnd::Retired`].
    pub retire: Option<oneshot::Receiver<()>>,
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("connecting to {url}: {source}")]
    Connect {
        url: String,
        source: Box<ws::WsError>,
    },
    #[error("reading from {url}: {source}")]
    Read {
        url: String,
        source: Box<ws::WsError>,
    },
    #[error("gave up after {attempts} failed connections in a row; the last: {last}")]
    GaveUp { attempts: u32, last: String },
}

/// How a feed stays connected.
#[derive(Clone, Debug)]
pub struct Reconnect {
    /// Tried in turn after the configuration's `url` (failover).
    pub fallback_urls: Vec<String>,
    /// Backoff between failed connections; `attempts` failures in a row and the feed
    /// gives up.
    pub retry: RetryPolicy,
    /// Opened by consecutive connect failures; while open, no connection is tried.
    pub breaker: BreakerConfig,
    /// A connection that lasted this long was healthy: the failure count starts over.
    pub healthy_after: Duration,
    /// Replace a connection this old with a fresh one (exchanges end long connections:
    /// Binance after 24 hours). The successor connects first; both run for `overlap`
    /// (the lake's dedup drops what both delivered) before the old one is retired, so no
    /// trade falls between them.
    pub rotate_after: Option<Duration>,
    pub overlap: Duration,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            fallback_urls: Vec::new(),
            retry: RetryPolicy {
                attempts: 20,
                base: Duration::from_millis(250),
                max_delay: Duration::from_secs(30),
            },
            breaker: BreakerConfig::default(),
            healthy_after: Duration::from_secs(60),
            rotate_after: Some(Duration::from_secs(12 * 3600)),
            overlap: Duration::from_secs(2),
        }
    }
}

/// What a feed run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedStats {
    pub connections: u64,
    pub failures: u64,
}

pub fn venue_label(v: Venue) -> &'static str {
    match v {
        Venue::Binance => "binance",
        Venue::Kraken => "kraken",
    }
}

/// Keeps the feed connected until the receiver of `out` goes away (Ok), or until
/// `reconnect.retry.attempts` connections in a row have failed (Err naming the last
/// failure). A connection that ends early — refused, closed, stalled, broken — counts as
/// failed; one that lasted `healthy_after` resets the count.
pub async fn run_feed(
    config: &FeedConfig,
    reconnect: &Reconnect,
    out: &mpsc::Sender<FeedEvent>,
    now_us: impl Fn() -> i64,
) -> Result<FeedStats, FeedError> {
    let venue = venue_label(config.venue);
    let urls: Vec<&str> = std::iter::once(config.url.as_str())
        .chain(reconnect.fallback_urls.iter().map(String::as_str))
        .collect();
    let mut breaker = CircuitBreaker::new(reconnect.breaker.clone());
    let mut jitter = Jitter::from_entropy();
    let mut stats = FeedStats::default();
    let mut failed_in_a_row = 0u32;
    let mut turn = 0usize;
    loop {
        if let Err(wait) = breaker.permit(Instant::now()) {
            tokio::time::sleep(wait).await;
            continue;
        }
        let one = FeedConfig {
            url: urls[turn % urls.len()].to_string(),
            ..config.clone()
        };
        let started = Instant::now();
        stats.connections += 1;
        let outcome = rotating(&one, reconnect, out, &now_us, &mut stats).await;
        let label = match &outcome {
            Ok(ConnectionEnd::Stopped) => return Ok(stats),
            Ok(ConnectionEnd::Retired) => "retired",
            Ok(ConnectionEnd::Closed) => "closed",
            Ok(ConnectionEnd::Stalled) => "stalled",
            Err(FeedError::Connect { .. }) => "refused",
            Err(_) => "broken",
        };
        metrics::counter!("k2_feed_connections_total", "venue" => venue, "end" => label)
            .increment(1);
        let healthy = started.elapsed() >= reconnect.healthy_after;
        let transition = match &outcome {
            Err(FeedError::Connect { .. }) => breaker.failure(Instant::now()),
            _ => breaker.success(),
        };
        if let Some(state) = transition {
            metrics::gauge!("k2_feed_breaker_state", "venue" => venue)
                .set(f64::from(state.level()));
            tracing::warn!(venue, state = state.as_str(), "feed circuit breaker");
        }
        if healthy {
            failed_in_a_row = 0;
            continue;
        }
        stats.failures += 1;
        failed_in_a_row += 1;
        let last = match outcome {
            Err(e) => e.to_string(),
            Ok(end) => format!("{} ended the connection as {end:?}", one.url),
        };
        tracing::warn!(venue, url = %one.url, failed_in_a_row, reason = %last, "feed connection failed");
        let Some(wait) = reconnect.retry.delay(failed_in_a_row, &mut jitter) else {
            return Err(FeedError::GaveUp {
                attempts: failed_in_a_row,
                last,
            });
        };
        turn += 1;
        tokio::time::sleep(wait).await;
    }
}

/// Runs connections to one URL, replacing each with a fresh one every
/// `reconnect.rotate_after` (make before break: the successor must deliver before the old
/// one is retired). Returns how the last one ended.
async fn rotating<F: Fn() -> i64>(
    one: &FeedConfig,
    reconnect: &Reconnect,
    out: &mpsc::Sender<FeedEvent>,
    now_us: &F,
    stats: &mut FeedStats,
) -> Result<ConnectionEnd, FeedError> {
    let venue = venue_label(one.venue);
    let (mut retire, rx) = oneshot::channel();
    let mut current = Box::pin(run_connection(
        one,
        out,
        now_us,
        Handover {
            ready: None,
            retire: Some(rx),
        },
    ));
    let Some(every) = reconnect.rotate_after else {
        return current.await;
    };
    let mut due = tokio::time::Instant::now() + every;
    loop {
        tokio::select! {
            end = &mut current => return end,
            _ = tokio::time::sleep_until(due) => {}
        }
        let (ready_tx, ready_rx) = oneshot::channel();
        let (next_retire, next_rx) = oneshot::channel();
        let mut next = Box::pin(run_connection(
            one,
            out,
            now_us,
            Handover {
                ready: Some(ready_tx),
                retire: Some(next_rx),
            },
        ));
        stats.connections += 1;
        // The successor connects and delivers while the old connection goes on.
        let ready = tokio::select! {
            end = &mut current => return end,
            r = ready_rx => r.is_ok(),
            _ = &mut next => false,
        };
        let outcome = if ready {
            // Both run for the overlap, then the old one stops at a frame boundary.
            let mut old_done = false;
            let successor_ok = tokio::select! {
                _ = tokio::time::sleep(reconnect.overlap) => true,
                _ = &mut current => { old_done = true; true }
                _ = &mut next => false,
            };
            if successor_ok {
                if !old_done {
                    let _ = retire.send(());
                    let _ = current.await;
                }
                current = next;
                retire = next_retire;
                "done"
            } else {
                "failed"
            }
        } else {
            "failed"
        };
        metrics::counter!("k2_feed_rotations_total", "venue" => venue, "outcome" => outcome)
            .increment(1);
        if outcome == "done" {
            tracing::info!(venue, url = %one.url, "feed connection rotated");
            due = tokio::time::Instant::now() + every;
        } else {
            tracing::warn!(venue, url = %one.url, "the successor connection failed; the current one goes on");
            due = tokio::time::Instant::now() + reconnect.retry.max_delay;
        }
    }
}

/// The URL a connection opens: Binance names its streams in the path (combined streams).
pub fn connect_url(config: &FeedConfig) -> String {
    let base = config.url.trim_end_matches('/');
    match config.venue {
        Venue::Binance => {
            let mut streams = Vec::new();
            for s in &config.symbols {
                let s = s.to_ascii_lowercase();
                streams.push(format!("{s}@trade"));
                if config.quotes {
                    streams.push(format!("{s}@bookTicker"));
                }
            }
            format!("{base}/stream?streams={}", streams.join("/"))
        }
        Venue::Kraken => base.to_string(),
    }
}

/// Runs one connection until it ends; events go to `out` in arrival order.
///
/// Each socket read brings whatever the exchange has sent, up to [`ws::READ_BUFFER`]
/// bytes; every whole frame in it is parsed, its records gathered into events of up to
/// [`BATCH_RECORDS`], all stamped with the time of that read (when K2 received them).
pub async fn run_connection(
    config: &FeedConfig,
    out: &mpsc::Sender<FeedEvent>,
    now_us: impl Fn() -> i64,
    handover: Handover,
) -> Result<ConnectionEnd, FeedError> {
    let url = connect_url(config);
    let broken = |e| FeedError::Read {
        url: url.clone(),
        source: Box::new(e),
    };
    let mut ws = ws::connect(&url, config.stale_after)
        .await
        .map_err(|e| FeedError::Connect {
            url: url.clone(),
            source: Box::new(e),
        })?;
    if config.venue == Venue::Kraken {
        let subscribe = serde_json::json!({
            "method": "subscribe",
            "params": { "channel": "trade", "symbol": config.symbols, "snapshot": false },
        });
        ws.send_text(&subscribe.to_string()).await.map_err(broken)?;
    }
    let Handover {
        mut ready,
        mut retire,
    } = handover;
    let start = tokio::time::Instant::now();
    let mut ping = tokio::time::interval_at(start + config.ping_every, config.ping_every);
    let mut last_frame = start;
    let mut batch = Vec::new();
    // The read of the upgrade's answer may have brought the first frames.
    let mut received = now_us();
    loop {
        let mut closed = false;
        loop {
            let message = match ws.next_message() {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    // What arrived before the violation still goes on.
                    send_batch(out, &mut batch, &mut ready).await;
                    return Err(broken(e));
                }
            };
            let parsed = match message {
                ws::Message::Text(Ok(text)) => parse(config.venue, text, received, &mut batch),
                ws::Message::Binary(b) => match std::str::from_utf8(b) {
                    Ok(text) => parse(config.venue, text, received, &mut batch),
                    Err(e) => Err(FrameError::malformed(format!(
                        "a binary frame that is not UTF-8: {e}"
                    ))),
                },
                ws::Message::Text(Err(_)) => {
                    Err(FrameError::malformed("a text frame that is not UTF-8"))
                }
                ws::Message::Close => {
                    closed = true;
                    break;
                }
                // Pings are answered below; either way the feed is alive.
                ws::Message::Control => Ok(()),
            };
            if let Err(error) = parsed {
                let raw = match message {
                    ws::Message::Text(Ok(t)) => t.to_string(),
                    ws::Message::Text(Err(b)) | ws::Message::Binary(b) => {
                        String::from_utf8_lossy(b).into_owned()
                    }
                    ws::Message::Control | ws::Message::Close => String::new(),
                };
                // The records before it go first: events stay in arrival order.
                if !send_batch(out, &mut batch, &mut ready).await {
                    return Ok(ConnectionEnd::Stopped);
                }
                let refused = FeedEvent::Refused {
                    // Unique per frame received: the dead-letter store keys letters by source.
                    source: format!(
                        "{url} received {received}us frame {:016x}",
                        xxhash_rust::xxh3::xxh3_64(raw.as_bytes())
                    ),
                    raw,
                    error,
                };
                if out.send(refused).await.is_err() {
                    return Ok(ConnectionEnd::Stopped);
                }
            }
            if batch.len() >= BATCH_RECORDS && !send_batch(out, &mut batch, &mut ready).await {
                return Ok(ConnectionEnd::Stopped);
            }
        }
        if !send_batch(out, &mut batch, &mut ready).await {
            return Ok(ConnectionEnd::Stopped);
        }
        // Pongs for the exchange's pings, the answer to its close.
        let answered = ws.answer().await;
        if closed {
            return Ok(ConnectionEnd::Closed);
        }
        answered.map_err(broken)?;
        let retired = async {
            match retire.as_mut() {
                Some(rx) => rx.await.is_ok(),
                None => std::future::pending().await,
            }
        };
        let read = tokio::select! {
            // Nobody listens any more: stop without waiting for the next frame.
            _ = out.closed() => return Ok(ConnectionEnd::Stopped),
            told = retired => {
                if told {
                    return Ok(ConnectionEnd::Retired);
                }
                retire = None;
                continue;
            }
            _ = tokio::time::sleep_until(last_frame + config.stale_after) => {
                return Ok(ConnectionEnd::Stalled);
            }
            _ = ping.tick() => {
                ws.ping().await.map_err(broken)?;
                continue;
            }
            n = ws.read_more() => n.map_err(broken)?,
        };
        if read == 0 {
            // The peer closed the socket (without a close frame, or after one).
            return Ok(ConnectionEnd::Closed);
        }
        last_frame = tokio::time::Instant::now();
        received = now_us();
    }
}

fn parse(
    venue: Venue,
    frame: &str,
    received: i64,
    batch: &mut Vec<MarketRecord>,
) -> Result<(), FrameError> {
    match venue {
        Venue::Binance => feeds::binance::parse(frame, received, batch),
        Venue::Kraken => feeds::kraken::parse(frame, received, batch),
    }
}

/// Passes on the records of `batch` (if any) as one event; false if nobody listens.
async fn send_batch(
    out: &mpsc::Sender<FeedEvent>,
    batch: &mut Vec<MarketRecord>,
    ready: &mut Option<oneshot::Sender<()>>,
) -> bool {
    if batch.is_empty() {
        return true;
    }
    // The next batch has room for twice this one (up to a full batch), so a burst's
    // batches seldom grow by copying their records; a quiet feed's batches of one record
    // do not each reserve room for a burst's.
    let room = (batch.len() * 2).clamp(1, BATCH_RECORDS);
    let records = std::mem::replace(batch, Vec::with_capacity(room));
    if out.send(FeedEvent::Records(records)).await.is_err() {
        return false;
    }
    if let Some(tx) = ready.take() {
        let _ = tx.send(());
    }
    true
}
