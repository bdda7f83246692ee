//! K2's query API: the lake over HTTP.
//!
//! # Layout
//!
//! - [`config`] — `[api]` in `k2.toml`.
//! - `router` — every route, registered once for the router and the OpenAPI document;
//!   `openapi` — the document completed with what the server enforces; `docs` — serving it;
//!   `page` — the web page at `/`, built from `web/` by `build.rs` and embedded.
//! - `handlers` — the endpoints, by resource; `call` — what each handler starts from;
//!   `state` — what they share (gate, runtime, cache).
//! - `params` — the grammar of every value a request carries, checked and published once.
//! - `middleware` — request ids, access log and metrics; API keys; rate limits.
//! - `keys` — API keys (SHA-256 digests, constant-time comparison, scopes).
//! - `limits` — token buckets and the query gate; `cache` — answers kept by snapshot.
//! - `failure`, `respond`, `extract` — the error envelope, the data envelope and formats,
//!   and extractors whose rejections are K2 errors.
//! - `catalog_server` — `k2 catalog serve`: the Iceberg REST Catalog API over K2's catalog.
//! - `cursor` — keyset cursors pinned to a snapshot and a query; `stream` — replays as
//!   NDJSON and over a WebSocket.
//! - `schema` — the answers' shapes as documented; [`present`], [`format`] — rows as users
//!   see them, shared with the CLI; [`metrics`] — every metric of the API.
//!
//! Every query runs on a runtime of its own (not on the threads serving connections), under
//! the engine's timeout and memory limit, behind the gate. No value from a request ever
//! becomes SQL text: the engine binds every value as a parameter, and field names are
//! checked against the table's columns.

mod cache;
mod call;
mod catalog_server;
pub mod config;
mod cursor;
mod docs;
mod extract;
mod failure;
mod flight;
pub mod format;
mod handlers;
mod keys;
mod limits;
pub mod metrics;
mod middleware;
mod openapi;
mod page;
mod params;
pub mod present;
mod respond;
mod router;
mod schema;
mod state;
mod stream;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use k2_lake::query::QueryEngine;
use tokio_util::sync::CancellationToken;

pub use catalog_server::{CatalogBackend, serve_catalog};
pub use config::{ApiConfig, ApiKeyConfig, CatalogServerConfig, KeyFile, Scope};
pub use keys::{digest_hex, generate_key};
pub use metrics::describe as describe_metrics;

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
    /// The process's degradation: the query gate reports its queue to it, and expensive
    /// queries are refused at its level. None: never refused.
    pub degradation: Option<ApiDegradation>,
    /// The dead-letter store `/v1/dead-letters` reads; None: those routes answer 404.
    pub dead_letters: Option<k2_log::DeadLetterStore>,
}

/// What the API does under the process's degradation level.
#[derive(Clone, Debug)]
pub struct ApiDegradation {
    pub pressure: Arc<k2_pipeline::Pressure>,
    /// From this level on, expensive queries are answered 503 with Retry-After.
    pub refuse_from: k2_pipeline::Level,
    /// A market-data question over a longer time range than this is expensive; SQL,
    /// replays and batched aggregations always are.
    pub long_range: std::time::Duration,
    /// What Retry-After says.
    pub retry_after: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Config(String),
    #[error("listening on {addr}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

/// Serves the API on `config.listen` (and Flight SQL on `config.flight_listen` when set)
/// until `stop` is cancelled, then finishes the requests in flight (streams end at once).
/// `on_listening` gets the bound addresses, the API's and Flight SQL's (before the first
/// request).
pub async fn serve(
    config: ApiConfig,
    backends: Backends,
    on_listening: impl FnOnce(SocketAddr, Option<SocketAddr>),
    stop: CancellationToken,
) -> Result<(), ApiError> {
    config
        .validate()
        .map_err(|e| ApiError::Config(e.to_string()))?;
    let keys = keys::Keys::load(&config)?;
    let listener = bind(&config.listen).await?;
    let flight = match config.flight_listen.as_str() {
        "" => None,
        addr => Some(bind(addr).await?),
    };
    let threads = match config.query_threads {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let queries = QueryRuntime(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("k2-query")
            .enable_all()
            .build()
            .map_err(|e| ApiError::Config(format!("starting the query runtime: {e}")))?,
    ));
    let addr = listener.local_addr().map_err(ApiError::Serve)?;
    let flight_addr = flight
        .as_ref()
        .map(|l| l.local_addr().map_err(ApiError::Serve))
        .transpose()?;
    let state = state::ApiState::new(config, keys, backends, queries.handle(), stop.clone());
    let app = router::router(state.clone())?;
    tracing::info!(%addr, "query API listening");
    if let Some(flight_addr) = flight_addr {
        tracing::info!(addr = %flight_addr, "Flight SQL listening");
    }
    on_listening(addr, flight_addr);
    let api = async {
        serve_until_stopped(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
            stop.clone(),
        )
        .await
        .map_err(ApiError::Serve)
    };
    let flight = async {
        match flight {
            Some(listener) => flight::serve(listener, state, stop.clone()).await,
            None => Ok(()),
        }
    };
    tokio::try_join!(api, flight).map(|_| ())
}

/// How long a server stopping finishes the requests in flight before it lets go of them
/// (their clients see the connection close).
pub const DRAIN: std::time::Duration = std::time::Duration::from_secs(3);

/// Serves `service` on `listener` until `stop`, then finishes the requests in flight for
/// at most [`DRAIN`]: a slow client or a long query never holds a stop.
pub async fn serve_until_stopped<M, S>(
    listener: tokio::net::TcpListener,
    service: M,
    stop: CancellationToken,
) -> std::io::Result<()>
where
    M: for<'a> tower::Service<
            axum::serve::IncomingStream<'a, tokio::net::TcpListener>,
            Error = std::convert::Infallible,
            Response = S,
        > + Send
        + 'static,
    for<'a> <M as tower::Service<axum::serve::IncomingStream<'a, tokio::net::TcpListener>>>::Future:
        Send,
    S: tower::Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let graceful = stop.clone();
    let server = axum::serve(listener, service)
        .with_graceful_shutdown(async move { graceful.cancelled().await });
    drained(server.into_future(), &stop, "requests").await
}

/// Runs `server`, which stops taking work once `stop` is cancelled and then finishes
/// what it holds; whatever `what` is still in flight [`DRAIN`] after the stop is let go.
pub(crate) async fn drained<E>(
    server: impl Future<Output = Result<(), E>>,
    stop: &CancellationToken,
    what: &'static str,
) -> Result<(), E> {
    tokio::select! {
        served = server => served,
        () = async {
            stop.cancelled().await;
            tokio::time::sleep(DRAIN).await;
        } => {
            tracing::warn!(drain_s = DRAIN.as_secs(), what, "still in flight at the end of the drain: let go");
            Ok(())
        }
    }
}

/// A listener on `addr`, or the error naming it.
async fn bind(addr: &str) -> Result<tokio::net::TcpListener, ApiError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ApiError::Listen {
            addr: addr.to_string(),
            source,
        })
}

/// The runtime queries run on, apart from the one serving connections so a heavy query
/// never delays an answer. However `serve` ends, it lets go of the queries still running
/// (their requests are gone) without blocking the async context it is dropped in.
struct QueryRuntime(Option<tokio::runtime::Runtime>);

impl QueryRuntime {
    fn handle(&self) -> tokio::runtime::Handle {
        self.0
            .as_ref()
            .expect("held until dropped")
            .handle()
            .clone()
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}
