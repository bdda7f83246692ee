//! Replays as streams: NDJSON over chunked HTTP, and a WebSocket with one row per message.
//!
//! The replay runs on the query runtime and hands encoded rows to the connection through a
//! small bounded channel, so a slow client slows the replay down (backpressure) instead of
//! filling memory; a client that goes away stops it. Pacing is the replay's own clock. A
//! replay that fails after its first rows were sent ends with an error line (NDJSON) or a
//! 1011 close (WebSocket), and the HTTP body is broken off rather than ended, so a truncated
//! replay is never mistaken for a complete one. Failures before the first row are ordinary
//! error answers.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use k2_lake::LakeError;
use k2_lake::query::QueryEngine;
use k2_lake::replay::ReplayRequest;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_util::sync::CancellationToken;

use crate::failure::Failure;
use crate::format;
use crate::metrics;

/// What the replay task hands the connection.
enum Chunk {
    /// Rows as NDJSON lines.
    Rows(Vec<u8>),
    /// The replay delivered every row.
    End,
    /// The replay failed or was stopped: (code, message).
    Failed(&'static str, String),
}

/// A replay whose first rows are ready.
pub(crate) struct Started {
    pub snapshot_id: Option<i64>,
    chunks: mpsc::Receiver<Chunk>,
}

impl Started {
    /// The replay of an empty range: complete before its first row.
    pub(crate) fn empty() -> Started {
        let (tx, chunks) = mpsc::channel(1);
        tx.try_send(Chunk::End).expect("room for the end");
        Started {
            snapshot_id: None,
            chunks,
        }
    }
}

/// Starts `request` on `runtime` and waits for its first rows (or its refusal). The
/// replay holds `permit` until it ends; `stop` ends it early (server shutdown).
pub(crate) async fn start(
    runtime: &tokio::runtime::Handle,
    engine: Arc<QueryEngine>,
    request: ReplayRequest,
    permit: OwnedSemaphorePermit,
    stop: CancellationToken,
) -> Result<Started, Failure> {
    let (ready_tx, ready) = oneshot::channel::<Result<Option<i64>, LakeError>>();
    let (tx, chunks) = mpsc::channel::<Chunk>(4);
    let table = request.table;
    runtime.spawn(async move {
        metrics::replay_started();
        let started = Instant::now();
        let mut replay = match engine.replay(request).await {
            Ok(r) => r,
            Err(e) => {
                metrics::replay_ended("failed");
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        let mut first = Some(replay.next().await);
        let mut ready_tx = Some(ready_tx);
        let outcome = loop {
            let next = match first.take() {
                Some(r) => r,
                None => tokio::select! {
                    r = replay.next() => r,
                    _ = stop.cancelled() => break "stopped",
                    // A paced replay may wait long for its next row: a client gone
                    // meanwhile frees the slot at once.
                    () = tx.closed() => break "client_gone",
                },
            };
            // The first rows (or the failure to read them) answer the request.
            if let Some(ready) = ready_tx.take() {
                if next.is_ok() {
                    let _ = ready.send(Ok(replay.snapshot_id()));
                } else {
                    let _ = ready.send(next.map(|_| None));
                    break "failed";
                }
            }
            let chunk = match next {
                Ok(None) => break "complete",
                Ok(Some(batch)) => match format::ndjson(&batch) {
                    Ok(bytes) => Chunk::Rows(bytes),
                    Err(e) => Chunk::Failed("internal", format!("encoding rows: {e}")),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "replay failed");
                    Chunk::Failed("replay_failed", e.to_string())
                }
            };
            let failed = matches!(chunk, Chunk::Failed(..));
            if tx.send(chunk).await.is_err() {
                break "client_gone";
            }
            if failed {
                break "failed";
            }
        };
        let last = match outcome {
            "complete" => Some(Chunk::End),
            "stopped" => Some(Chunk::Failed(
                "shutting_down",
                "the server is shutting down; resume the replay from the last row's time".into(),
            )),
            _ => None,
        };
        metrics::replay_ended(outcome);
        let stats = replay.stats();
        tracing::info!(
            %table,
            outcome,
            rows = stats.rows,
            windows = stats.windows,
            seconds = started.elapsed().as_secs_f64(),
            "replay ended"
        );
        // The slot is free before the client reads the end: a client that starts its
        // next replay as soon as this one ends is not refused for the one just ended.
        drop(replay);
        drop(permit);
        if let Some(last) = last {
            let _ = tx.send(last).await;
        }
    });
    match ready.await {
        Ok(Ok(snapshot_id)) => Ok(Started {
            snapshot_id,
            chunks,
        }),
        Ok(Err(e)) => Err(Failure::from_lake(e, false)),
        Err(_) => Err(Failure::internal("the replay task ended unexpectedly")),
    }
}

fn error_line(code: &str, message: &str) -> Vec<u8> {
    let mut line = serde_json::to_vec(&serde_json::json!({
        "error": {"code": code, "message": message}
    }))
    .expect("a JSON value serialises");
    line.push(b'\n');
    line
}

/// The replay as an NDJSON body.
pub(crate) fn ndjson_response(started: Started) -> Response {
    enum State {
        Open(mpsc::Receiver<Chunk>),
        Failed,
        Done,
    }
    let broken = |why: &str| Err(std::io::Error::other(why.to_string()));
    let body = futures::stream::unfold(State::Open(started.chunks), move |state| async move {
        match state {
            State::Open(mut rx) => match rx.recv().await {
                Some(Chunk::Rows(bytes)) => Some((Ok(Bytes::from(bytes)), State::Open(rx))),
                Some(Chunk::End) => None,
                // The error line, then a broken body (no clean end of the chunked stream).
                Some(Chunk::Failed(code, message)) => {
                    Some((Ok(Bytes::from(error_line(code, &message))), State::Failed))
                }
                None => Some((broken("the replay task ended unexpectedly"), State::Done)),
            },
            State::Failed => Some((broken("the replay failed"), State::Done)),
            State::Done => None,
        }
    })
    // The body may be polled again after its end; a fused stream stays ended.
    .fuse();
    let mut response = Response::new(Body::from_stream(body));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(id) = started.snapshot_id {
        h.insert("x-snapshot-id", HeaderValue::from(id));
    }
    response
}

/// Checks a WebSocket upgrade request (RFC 6455 §4.2.1); the `Sec-WebSocket-Accept` value.
pub(crate) fn websocket_accept(headers: &HeaderMap) -> Result<String, Failure> {
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has(header::UPGRADE, "websocket") || !has(header::CONNECTION, "upgrade") {
        return Err(Failure::new(
            StatusCode::UPGRADE_REQUIRED,
            "websocket_required",
            "this endpoint speaks WebSocket: send Connection: Upgrade and Upgrade: websocket \
             (for NDJSON over HTTP use /v1/replay/stream)",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(Failure::bad_request("Sec-WebSocket-Version must be 13"));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| Failure::bad_request("Sec-WebSocket-Key is missing"))?;
    Ok(tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()))
}

/// Switches the connection to WebSocket and sends the replay, one row per text message,
/// ending with a close frame: 1000 when complete, 1011 (with the reason) when it failed,
/// 1001 when the server is shutting down. A client's close stops the replay.
pub(crate) fn websocket_response(
    accept: String,
    upgrade: hyper::upgrade::OnUpgrade,
    started: Started,
) -> Response {
    let mut rx = started.chunks;
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "replay WebSocket upgrade failed");
                return;
            }
        };
        let mut ws = WebSocketStream::from_raw_socket(
            hyper_util::rt::TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        let close = |code: CloseCode, reason: &str| {
            // A close reason is at most 123 bytes.
            let mut end = reason.len().min(120);
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            Message::Close(Some(CloseFrame {
                code,
                reason: reason[..end].to_string().into(),
            }))
        };
        let last = loop {
            tokio::select! {
                chunk = rx.recv() => match chunk {
                    Some(Chunk::Rows(bytes)) => {
                        let text = String::from_utf8_lossy(&bytes);
                        let mut sent = Ok(());
                        for line in text.split_terminator('\n') {
                            sent = ws.feed(Message::text(line)).await;
                            if sent.is_err() {
                                break;
                            }
                        }
                        if sent.is_err() || ws.flush().await.is_err() {
                            return;
                        }
                    }
                    Some(Chunk::End) => break close(CloseCode::Normal, "replay complete"),
                    Some(Chunk::Failed("shutting_down", m)) => break close(CloseCode::Away, &m),
                    Some(Chunk::Failed(_, m)) => break close(CloseCode::Error, &m),
                    None => break close(CloseCode::Error, "the replay task ended unexpectedly"),
                },
                incoming = ws.next() => match incoming {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => {}
                },
            }
        };
        let _ = ws.send(last).await;
        // Wait briefly for the client's close reply, as the protocol asks.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while let Some(Ok(m)) = ws.next().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    response
}
