//! K2's query API: the lake over HTTP.
//!
//! # Layout
//!
//! - [`ApiConfig`] — what `[api]` in `k2.toml` sets.
//! - `auth` — API keys (SHA-256 digests, constant-time comparison, scopes).
//! - `limits` — rate limits per key and per client address; the query gate that queues or
//!   sheds work beyond the configured concurrency.
//! - `respond` — the one data envelope and the one error envelope, formats (JSON, CSV,
//!   Parquet, Arrow IPC), request ids, access log and RED metrics.
//! - `cursor` — opaque keyset cursors, pinned to a snapshot and to the query they came from.
//! - `stream` — replays as NDJSON over HTTP and over a WebSocket.
//! - `routes` — the handlers; `docs` — the OpenAPI document and its page.
//! - [`present`], [`format`] — rows as users see them, shared with the CLI.
//!
//! Every query runs on a runtime of its own (not on the threads serving connections), under
//! the engine's timeout and memory limit, behind the gate. No value from a request ever
//! becomes SQL text: the engine binds every value as a parameter, and field names are
//! checked against the table's columns.

mod auth;
mod cache;
mod cursor;
mod docs;
pub mod format;
mod limits;
pub mod present;
mod respond;
mod routes;
mod stream;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use k2_lake::query::QueryEngine;
use serde::Deserialize;

pub use auth::{ApiKeyConfig, KeyFile, digest_hex, generate_key};

/// `[api]`: the HTTP server of `k2 serve`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address to listen on (`127.0.0.1:0` picks a free port; the address is printed).
    pub listen: String,
    /// Production mode: the server refuses to start without configured keys. Outside it, a
    /// server without keys makes one for its own lifetime and prints it once.
    pub production: bool,
    /// API keys (name, SHA-256 digest, scopes); see `k2 api-key new`.
    pub keys: Vec<ApiKeyConfig>,
    /// A TOML file of further `[[keys]]`, for secrets kept outside the configuration.
    pub keys_file: String,
    /// Requests per second and burst of each key (a key may set its own).
    pub rate_per_second: f64,
    pub burst: u32,
    /// Requests per second and burst of each client address on routes without a key
    /// (health, metrics, documents) and for requests whose key is missing or wrong.
    pub ip_rate_per_second: f64,
    pub ip_burst: u32,
    /// Largest request body read, in bytes (chunked bodies included): beyond it, 413.
    pub body_limit_bytes: usize,
    /// Queries running at once; beyond it requests wait in a queue.
    pub max_concurrent_queries: usize,
    /// Requests waiting for a query slot; beyond it, 503 with Retry-After.
    pub max_queued: usize,
    /// How long a request waits for a slot before 503.
    pub queue_timeout_ms: u64,
    /// Threads of the query runtime (0: the machine's cores).
    pub query_threads: usize,
    /// Rows per page: the default and the bound of GET list endpoints, and the bound of
    /// POST queries.
    pub default_limit: usize,
    pub max_limit: usize,
    pub max_query_limit: usize,
    /// How far back a time range may start, in days.
    pub max_lookback_days: u32,
    /// Longest time range of bars and aggregations, in days.
    pub max_range_days: u32,
    /// Origins allowed by CORS (`*` for any); empty: no CORS headers.
    pub cors_origins: Vec<String>,
    /// Memory for answers kept by question and snapshot (0: every request runs its
    /// query). A commit makes a new snapshot, so a kept answer is never stale.
    pub cache_mb: usize,
    /// Use the first `X-Forwarded-For` address as the client's (behind a trusted proxy only).
    pub trust_forwarded_for: bool,
    /// Streamed replays (`/v1/replay/stream`, `/v1/replay/ws`) running at once; beyond,
    /// 503. A replay holds no query slot while it waits on its pace or its client.
    pub max_replays: usize,
    /// The live tail of `k2 up`: events held per (exchange, symbol) and table …
    pub tail_per_symbol: usize,
    /// … and for how long behind the stream's newest event.
    pub tail_seconds: u64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: "127.0.0.1:8000".into(),
            production: false,
            keys: Vec::new(),
            keys_file: String::new(),
            rate_per_second: 100.0,
            burst: 200,
            ip_rate_per_second: 20.0,
            ip_burst: 40,
            body_limit_bytes: 10 << 20,
            max_concurrent_queries: 16,
            max_queued: 256,
            queue_timeout_ms: 5_000,
            query_threads: 0,
            default_limit: 100,
            max_limit: 10_000,
            max_query_limit: 100_000,
            max_lookback_days: 20 * 366,
            max_range_days: 366,
            cors_origins: Vec::new(),
            cache_mb: 64,
            trust_forwarded_for: false,
            max_replays: 4,
            tail_per_symbol: 10_000,
            tail_seconds: 300,
        }
    }
}

/// A readiness check of one dependency: Ok with a short detail, or Err with the reason.
pub type Check =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send + Sync>;

/// What the server answers from.
pub struct Backends {
    pub engine: Arc<QueryEngine>,
    /// Readiness checks by dependency name (`catalog`, `storage`, `log`).
    pub checks: Vec<(&'static str, Check)>,
    /// Renders `/metrics`; None when the process has no Prometheus recorder.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The live tail `/v1/{trades,quotes}/recent` merge with the lake (`k2 up` holds one);
    /// None: those routes answer from the lake alone and say so (`live: false`).
    pub tail: Option<Arc<k2_lake::tail::Tail>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Config(String),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

/// Serves the API on `config.listen` until `shutdown` completes, then finishes the requests
/// in flight. `on_listening` gets the bound address (before the first request).
pub async fn serve(
    config: ApiConfig,
    backends: Backends,
    on_listening: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    let keys = auth::Keys::load(&config)?;
    let threads = match config.query_threads {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let queries = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("k2-query")
        .enable_all()
        .build()
        .map_err(|e| ApiError::Config(format!("starting the query runtime: {e}")))?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|source| ApiError::Listen {
            addr: config.listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(ApiError::Serve)?;
    // Streams (replays) end when shutdown begins, or they would hold it up.
    let (stopping, stop) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = stopping.send(true);
    };
    let state = routes::State::new(config, keys, backends, queries.handle().clone(), stop);
    let app = routes::router(state)?;
    tracing::info!(%addr, "query API listening");
    on_listening(addr);
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    // Queries still running belong to requests that are gone.
    queries.shutdown_background();
    served.map_err(ApiError::Serve)
}
