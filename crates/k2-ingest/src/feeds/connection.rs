//! One live connection to an exchange's WebSocket feed: connect (TLS verified for `wss`),
//! subscribe, read frames until the feed ends, goes silent or fails, and hand every
//! frame's records — or the raw frame with the reason it was refused — to a bounded
//! channel (a slow consumer slows the reading, never grows memory).

use std::time::Duration;

use k2_model::MarketRecord;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{FrameError, Venue, ws};

/// Why a feed's connection ended in failure, or why the feed gave up.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("connecting to {url}: {cause}")]
    Connect {
        url: String,
        cause: Box<ws::WsError>,
    },
    #[error("reading from {url}: {cause}")]
    Read {
        url: String,
        cause: Box<ws::WsError>,
    },
    #[error("gave up after {attempts} failed connections in a row; the last: {last}")]
    GaveUp { attempts: u32, last: String },
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
    /// When the feed stops taking data (the process's top degradation level); None: never.
    pub pause: Option<Pause>,
}

/// From a degradation level on, a feed takes no new data: its connection ends at the next
/// frame boundary (what it received is passed on first) and no new one is made until the
/// level falls below it again.
#[derive(Clone, Debug)]
pub struct Pause {
    pub pressure: std::sync::Arc<k2_pipeline::Pressure>,
    pub from: k2_pipeline::Level,
}

impl Pause {
    pub fn active(&self) -> bool {
        self.pressure.level() >= self.from
    }
}

/// How often a connection looks whether its feed is to pause.
const PAUSE_CHECK: Duration = Duration::from_millis(250);

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
    /// Told to stop, or the receiver of the events went away.
    Stopped,
    /// Its successor took over (rotation).
    Retired,
    /// The feed pauses (degradation).
    Paused,
}

/// How a connection hands over to its successor when the feed rotates connections.
#[derive(Default)]
pub struct Handover {
    /// Told once the connection has passed on its first event.
    pub ready: Option<oneshot::Sender<()>>,
    /// Once cancelled, the connection ends at the next frame boundary as
    /// [`ConnectionEnd::Retired`].
    pub retire: CancellationToken,
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
    stop: &CancellationToken,
) -> Result<ConnectionEnd, FeedError> {
    let feed = config.venue.feed();
    let url = feed.connect_url(&config.url, &config.symbols, config.quotes);
    let broken = |e| FeedError::Read {
        url: url.clone(),
        cause: Box::new(e),
    };
    let connected = tokio::select! {
        () = stop.cancelled() => return Ok(ConnectionEnd::Stopped),
        c = ws::connect(&url, config.stale_after) => c,
    };
    let mut ws = connected.map_err(|e| FeedError::Connect {
        url: url.clone(),
        cause: Box::new(e),
    })?;
    let venue = config.venue.name();
    let _open = crate::metrics::OpenConnection::new(venue);
    crate::metrics::feed_heard(venue);
    if let Some(subscribe) = feed.subscription(&config.symbols, config.quotes) {
        ws.send_text(&subscribe).await.map_err(broken)?;
    }
    let Handover { mut ready, retire } = handover;
    let start = tokio::time::Instant::now();
    let mut ping = tokio::time::interval_at(start + config.ping_every, config.ping_every);
    let mut pause_check = tokio::time::interval_at(start + PAUSE_CHECK, PAUSE_CHECK);
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
                ws::Message::Text(Ok(text)) => feed.parse(text, received, &mut batch),
                ws::Message::Binary(b) => match std::str::from_utf8(b) {
                    Ok(text) => feed.parse(text, received, &mut batch),
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
        let read = tokio::select! {
            // Told to stop, or nobody listens any more: stop without waiting for the next
            // frame.
            () = stop.cancelled() => return Ok(ConnectionEnd::Stopped),
            _ = out.closed() => return Ok(ConnectionEnd::Stopped),
            () = retire.cancelled() => return Ok(ConnectionEnd::Retired),
            _ = tokio::time::sleep_until(last_frame + config.stale_after) => {
                return Ok(ConnectionEnd::Stalled);
            }
            _ = ping.tick() => {
                ws.ping().await.map_err(broken)?;
                continue;
            }
            // Everything received so far has been passed on: a clean boundary.
            _ = pause_check.tick(), if config.pause.is_some() => {
                if config.pause.as_ref().is_some_and(Pause::active) {
                    return Ok(ConnectionEnd::Paused);
                }
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
        crate::metrics::feed_heard(venue);
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
