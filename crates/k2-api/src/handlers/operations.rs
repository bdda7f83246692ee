//! For operators and load balancers: liveness, readiness with each dependency's check,
//! and the Prometheus metrics. No key needed; each client address is rate limited.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::failure::Failure;
use crate::metrics;
use crate::schema::{ErrorEnvelope, Health, Readiness};
use crate::state::ApiState;

/// A dependency's check answers within this, or counts as failed.
const CHECK_WITHIN: Duration = Duration::from_secs(2);

#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "The process is alive", body = Health)))]
pub async fn health(State(s): State<Arc<ApiState>>) -> Response {
    axum::Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": s.started.elapsed().as_secs(),
    }))
    .into_response()
}

#[utoipa::path(get, path = "/health/ready", tag = "operations",
    responses((status = 200, description = "Every dependency answered", body = Readiness),
              (status = 503, description = "A dependency failed; `checks` says which", body = Readiness)))]
pub async fn ready(State(s): State<Arc<ApiState>>) -> Response {
    let checks = s.backends.checks.iter().map(|(name, check)| async move {
        let t = Instant::now();
        let outcome = tokio::time::timeout(CHECK_WITHIN, check()).await;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let (ok, detail) = match outcome {
            Ok(Ok(d)) => (true, d),
            Ok(Err(e)) => (false, e),
            Err(_) => (false, "no answer within 2 s".to_string()),
        };
        metrics::dependency_up(name, ok);
        json!({"name": name, "ok": ok, "latency_ms": (ms * 1e3).round() / 1e3, "detail": detail})
    });
    let results = futures::future::join_all(checks).await;
    let all_ok = results.iter().all(|r| r["ok"] == json!(true));
    let body = json!({"status": if all_ok { "ready" } else { "not_ready" }, "checks": results});
    let status = if all_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
              (status = 404, description = "This process records no metrics", body = ErrorEnvelope)))]
pub async fn metrics_text(State(s): State<Arc<ApiState>>) -> Response {
    match &s.backends.metrics {
        Some(h) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => Failure::not_found("this process records no metrics").into_response(),
    }
}
