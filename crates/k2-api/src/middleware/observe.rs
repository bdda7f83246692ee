//! What every request leaves behind: its request id (the client's when sane, else a new
//! one, echoed in `X-Request-Id`), the error envelope completed with that id, one access-log
//! line and the RED metrics of its route.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use tracing::Instrument;
use tracing::field::Empty;

use crate::failure::{ErrorBody, error_json};
use crate::metrics;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id: the client's `X-Request-Id` when it is sane, else a new one.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// Who made the request (set by the auth layer, read by the access log).
#[derive(Clone, Debug)]
pub struct CallerName(pub String);

/// The outermost layer: request id in and out, the error envelope completed, one access-log
/// line and the RED metrics of the route.
pub async fn observe(mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        })
        .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_string);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method: &'static str = match req.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        _ => "other",
    };
    let path = req.uri().path().to_string();
    let client = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    req.extensions_mut().insert(RequestId(id.clone()));
    metrics::request_started();
    // The request's span (exported when traces are on), named as OpenTelemetry's HTTP
    // conventions name a server span; it ends when the response's head is ready.
    let span = tracing::trace_span!(
        target: k2_model::STAGE_SPANS,
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = method,
        http.route = %route,
        http.response.status_code = Empty,
        request_id = %id,
    );
    let mut response = next.run(req).instrument(span.clone()).await;

    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    if let Some(body) = response.extensions_mut().remove::<ErrorBody>() {
        response = with_json_body(response, error_json(&body, &id));
    } else if status.as_u16() >= 400 && !is_json(&response) {
        // Errors raised outside the handlers (unknown route, wrong method, layers).
        let body = ErrorBody {
            code: match status {
                StatusCode::NOT_FOUND => "not_found",
                StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
                StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
                s if s.is_server_error() => "internal",
                _ => "bad_request",
            },
            message: status
                .canonical_reason()
                .unwrap_or("request failed")
                .to_string(),
            field: None,
        };
        response = with_json_body(response, error_json(&body, &id));
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    let caller = response
        .extensions()
        .get::<CallerName>()
        .map_or("-", |c| c.0.as_str())
        .to_string();
    let elapsed = started.elapsed();
    metrics::request_answered(route.clone(), method, status.as_u16(), elapsed);
    tracing::info!(
        target: "k2_api::access",
        request_id = %id,
        method,
        route = %route,
        path = %path,
        status = status.as_u16(),
        duration_ms = elapsed.as_secs_f64() * 1e3,
        client = %client,
        key = %caller,
        "request"
    );
    response
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

fn with_json_body(response: Response, body: Vec<u8>) -> Response {
    let (mut parts, _) = response.into_parts();
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}
