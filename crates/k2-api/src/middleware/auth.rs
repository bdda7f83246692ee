//! The `/v1` layer: the request's API key (`X-API-Key`, or `Authorization: Bearer`) is
//! checked and its holder counted against the key's rate limit. A missing key is 401, a
//! wrong one 403; both also count against the client address's limit, so guessing keys
//! is throttled like any other request.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::CallerName;
use super::rate_limit::{check_ip, limited, rate_headers};
use crate::failure::Failure;
use crate::metrics;
use crate::state::ApiState;

/// The key a request presents.
fn presented(req: &Request) -> Option<String> {
    req.headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            req.headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(|v| v.trim().to_string())
        })
}

pub async fn authenticate(
    State(s): State<Arc<ApiState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(presented) = presented(&req) else {
        if let Err(r) = check_ip(&s, &req) {
            return *r;
        }
        metrics::auth_failed("missing");
        let mut r = Failure::new(
            StatusCode::UNAUTHORIZED,
            "missing_key",
            "this endpoint needs an API key in X-API-Key (or Authorization: Bearer)",
        )
        .into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    };
    let Some(caller) = s.keys.check(&presented).cloned() else {
        if let Err(r) = check_ip(&s, &req) {
            return *r;
        }
        metrics::auth_failed("invalid");
        return Failure::new(
            StatusCode::FORBIDDEN,
            "invalid_key",
            "the API key is not valid",
        )
        .into_response();
    };
    let d = s
        .limiter
        .check(&caller.name, caller.rate_per_second, caller.burst);
    if !d.allowed {
        let mut r = limited(&d, "key");
        r.extensions_mut().insert(CallerName(caller.name));
        return r;
    }
    let name = caller.name.clone();
    req.extensions_mut().insert(caller);
    let mut response = next.run(req).await;
    rate_headers(&mut response, &d);
    response.extensions_mut().insert(CallerName(name));
    response
}
