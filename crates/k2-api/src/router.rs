//! The routes, each registered once: the router that serves it and the OpenAPI document
//! that describes it come from the same declaration (`routes!`). `/v1` routes need a key;
//! the operational and documentation routes are rate limited by client address.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::get;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::ApiConfig;
use crate::docs;
use crate::failure::Failure;
use crate::handlers::{
    analytics, catalogue, dead_letters, market, operations, quality, replay, sql,
};
use crate::middleware::{REQUEST_ID, authenticate, ip_limit, observe, refuse_expensive};
use crate::page;
use crate::state::ApiState;
use crate::{ApiError, openapi};

/// What the document holds besides its operations.
#[derive(OpenApi)]
#[openapi(components(schemas(crate::schema::ErrorEnvelope)))]
struct Base;

/// The application and its OpenAPI document.
pub fn router(state: Arc<ApiState>) -> Result<Router, ApiError> {
    let v1 = OpenApiRouter::with_openapi(Base::openapi())
        .routes(routes!(market::trades))
        .routes(routes!(market::quotes))
        .routes(routes!(market::trades_recent))
        .routes(routes!(market::quotes_recent))
        .routes(routes!(market::trades_query))
        .routes(routes!(market::quotes_query))
        .routes(routes!(market::snapshot_query))
        .routes(routes!(market::replay_page))
        .routes(routes!(replay::replay_stream))
        .routes(routes!(analytics::summary))
        .routes(routes!(analytics::ohlcv_batch))
        .routes(routes!(analytics::ohlcv))
        .routes(routes!(analytics::aggregations))
        .routes(routes!(catalogue::symbols))
        .routes(routes!(catalogue::stats))
        .routes(routes!(catalogue::snapshots))
        .routes(routes!(sql::sql))
        .routes(routes!(quality::summary))
        .routes(routes!(quality::gaps))
        .routes(routes!(dead_letters::list))
        .routes(routes!(dead_letters::one))
        // A WebSocket conversation is beyond what OpenAPI describes (see `replay_ws`).
        .route("/v1/replay/ws", get(replay::replay_ws))
        // Layers run outside in: the key is checked before a question is weighed.
        .route_layer(from_fn_with_state(state.clone(), refuse_expensive))
        .route_layer(from_fn_with_state(state.clone(), authenticate));
    let public = OpenApiRouter::new()
        .routes(routes!(operations::health))
        .routes(routes!(operations::ready))
        .routes(routes!(operations::metrics_text))
        .route("/openapi.json", get(docs::openapi_json))
        .route("/docs", get(docs::page))
        .route_layer(from_fn_with_state(state.clone(), ip_limit));
    let (routes, doc) = v1.merge(public).split_for_parts();
    // The page is static and needs no key (its questions to `/v1` carry one).
    let routes = routes
        .route("/", get(page::index))
        .route("/assets/app.js", get(page::script))
        .route("/assets/app.css", get(page::style));
    let document = Arc::new(docs::Document::new(openapi::document(doc, &state.config)));
    let cors = cors(&state.config)?;
    let body_limit = state.config.body_limit_bytes;
    let mut app = routes
        .fallback(|| async { Failure::not_found("no such endpoint; see /openapi.json") })
        .with_state(state)
        .layer(axum::Extension(document))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(
            tower_http::compression::CompressionLayer::new()
                .gzip(true)
                .zstd(true),
        );
    if let Some(cors) = cors {
        app = app.layer(cors);
    }
    Ok(app.layer(from_fn(observe)))
}

fn cors(config: &ApiConfig) -> Result<Option<tower_http::cors::CorsLayer>, ApiError> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if config.cors_origins.is_empty() {
        return Ok(None);
    }
    let origins = if config.cors_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let mut list = Vec::new();
        for o in &config.cors_origins {
            list.push(HeaderValue::from_str(o).map_err(|_| {
                ApiError::Config(format!("api.cors_origins: '{o}' is not a valid origin"))
            })?);
        }
        AllowOrigin::list(list)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
            .allow_headers([
                header::CONTENT_TYPE,
                header::ACCEPT,
                header::AUTHORIZATION,
                header::HeaderName::from_static("x-api-key"),
                REQUEST_ID,
            ])
            .expose_headers([
                REQUEST_ID,
                header::HeaderName::from_static("ratelimit-limit"),
                header::HeaderName::from_static("ratelimit-remaining"),
                header::HeaderName::from_static("ratelimit-reset"),
                header::RETRY_AFTER,
                header::HeaderName::from_static("x-next-cursor"),
                header::HeaderName::from_static("x-snapshot-id"),
                header::HeaderName::from_static("x-record-count"),
            ])
            .max_age(Duration::from_secs(600)),
    ))
}
