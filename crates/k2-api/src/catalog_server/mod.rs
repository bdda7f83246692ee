//! `k2 catalog serve`: the Iceberg REST Catalog API over K2's own SQL catalog, so any
//! engine that speaks the spec (PyIceberg, DuckDB, Spark, Trino, another K2) attaches the
//! lake by URL.
//!
//! - `handlers` — `/v1/config`, namespaces, tables (list, exists, load, create, commit,
//!   drop, rename), each answering the spec's documents and status codes.
//! - `errors` — the spec's error model.
//! - `auth` — K2's API keys as bearer tokens, and `/v1/oauth/tokens` for clients that
//!   hold client credentials. A key with the `read` scope may list and load; changing a
//!   table needs `catalog` (or `admin`).
//!
//! Commits go through K2's [`TableCommitter`]: the requirements are checked against the
//! table's current metadata and the catalog's pointer is moved by a compare-and-swap, so
//! a commit racing another (from this server, another server, or a writer on the same
//! database) either lands whole or is refused with 409 and changes nothing.

mod auth;
mod errors;
mod handlers;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post};
use iceberg::Catalog;
use k2_lake::table_commit::TableCommitter;
use tokio_util::sync::CancellationToken;

use crate::config::{ApiConfig, Scope};
use crate::keys::Keys;
use crate::limits::RateLimiter;
use crate::middleware::observe;
use crate::{ApiError, metrics};

/// What the catalog server serves from.
pub struct CatalogBackend {
    /// K2's SQL catalog.
    pub catalog: Arc<dyn Catalog>,
    pub committer: TableCommitter,
    /// Properties every table load hands to the client for reaching the files (endpoint,
    /// region, path style; the keys too when credentials are vended).
    pub table_config: HashMap<String, String>,
    /// Renders `/metrics`.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

pub(crate) struct CatalogState {
    backend: CatalogBackend,
    keys: Keys,
    limiter: RateLimiter,
    config: ApiConfig,
}

/// Serves the catalog on `listen` until `stop`; `config` gives the keys and rate limits
/// (the `[api]` section's). `on_listening` gets the bound address.
pub async fn serve_catalog(
    config: ApiConfig,
    listen: &str,
    backend: CatalogBackend,
    on_listening: impl FnOnce(SocketAddr),
    stop: CancellationToken,
) -> Result<(), ApiError> {
    config
        .validate()
        .map_err(|e| ApiError::Config(e.to_string()))?;
    let keys = Keys::load_with(&config, &[Scope::Read, Scope::Catalog])?;
    let listener = crate::bind(listen).await?;
    let addr = listener.local_addr().map_err(ApiError::Serve)?;
    let state = Arc::new(CatalogState {
        backend,
        keys,
        limiter: RateLimiter::default(),
        config,
    });
    tracing::info!(%addr, "Iceberg REST catalog listening");
    on_listening(addr);
    crate::serve_until_stopped(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
        stop,
    )
    .await
    .map_err(ApiError::Serve)
}

fn router(state: Arc<CatalogState>) -> Router {
    use handlers::*;
    let v1 = Router::new()
        .route("/v1/config", get(config))
        .route(
            "/v1/namespaces",
            get(list_namespaces).post(create_namespace),
        )
        .route(
            "/v1/namespaces/{namespace}",
            get(load_namespace)
                .head(namespace_exists)
                .delete(drop_namespace),
        )
        .route(
            "/v1/namespaces/{namespace}/tables",
            get(list_tables).post(create_table),
        )
        .route(
            "/v1/namespaces/{namespace}/tables/{table}",
            get(load_table)
                .head(table_exists)
                .post(commit_table)
                .delete(drop_table),
        )
        .route("/v1/tables/rename", post(rename_table))
        .route_layer(from_fn_with_state(state.clone(), auth::authenticate));
    let public = Router::new()
        .route("/v1/oauth/tokens", post(auth::token))
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(metrics_text));
    v1.merge(public)
        .fallback(|| async {
            errors::Refusal::not_found("no such endpoint of the Iceberg REST catalog")
        })
        .with_state(state.clone())
        .layer(axum::extract::DefaultBodyLimit::max(
            state.config.body_limit_bytes,
        ))
        .layer(from_fn(observe))
}

async fn metrics_text(
    axum::extract::State(s): axum::extract::State<Arc<CatalogState>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match &s.backend.metrics {
        Some(handle) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            handle.render(),
        )
            .into_response(),
        None => errors::Refusal::not_found("this process exports no metrics").into_response(),
    }
}

pub(crate) fn count_commit(outcome: &'static str) {
    metrics::catalog_commit(outcome);
}
