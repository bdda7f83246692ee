//! One live connection to an exchange's WebSocket feed: connect (TLS verified for `wss`),
//! subscribe, read frames until the feed ends, goes silent or fails, and hand every
//! frame's records — or the raw frame with the reason it was refused — to a bounded
//! channel (a slow consumer slows the reading, never grows memory). Reconnection with
//! backoff is the caller's loop around [`run_connection`].

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use k2_model::MarketRecord;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::feeds::{self, FrameError};

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
    /// No frame for this long (pings included) and the connection is given up as stalled.
    pub stale_after: Duration,
}

/// What a connection passes on.
#[derive(Debug)]
pub enum FeedEvent {
    Records(Vec<MarketRecord>),
    /// A frame that could not be used, kept whole for the dead-letter queue.
    Refused {
        raw: String,
        error: FrameError,
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
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("connecting to {url}: {source}")]
    Connect {
        url: String,
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
    #[error("reading from {url}: {source}")]
    Read {
        url: String,
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
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
pub async fn run_connection(
    config: &FeedConfig,
    out: &mpsc::Sender<FeedEvent>,
    now_us: impl Fn() -> i64,
) -> Result<ConnectionEnd, FeedError> {
    // One process-wide TLS provider; a second install is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let url = connect_url(config);
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
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
        ws.send(Message::text(subscribe.to_string()))
            .await
            .map_err(|e| FeedError::Read {
                url: url.clone(),
                source: Box::new(e),
            })?;
    }
    loop {
        let next = match tokio::time::timeout(config.stale_after, ws.next()).await {
            Err(_) => return Ok(ConnectionEnd::Stalled),
            Ok(None) => return Ok(ConnectionEnd::Closed),
            Ok(Some(m)) => m,
        };
        let message = match next {
            Ok(m) => m,
            Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed) => {
                return Ok(ConnectionEnd::Closed);
            }
            Err(e) => {
                return Err(FeedError::Read {
                    url,
                    source: Box::new(e),
                });
            }
        };
        let text = match message {
            Message::Text(t) => t.to_string(),
            Message::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
            Message::Close(_) => return Ok(ConnectionEnd::Closed),
            // Pings are answered by the library; either way the feed is alive.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
        let received = now_us();
        let parsed = match config.venue {
            Venue::Binance => feeds::binance::parse(&text, received),
            Venue::Kraken => feeds::kraken::parse(&text, received),
        };
        let event = match parsed {
            Ok(records) if records.is_empty() => continue,
            Ok(records) => FeedEvent::Records(records),
            Err(error) => FeedEvent::Refused { raw: text, error },
        };
        if out.send(event).await.is_err() {
            return Ok(ConnectionEnd::Stopped);
        }
    }
}
