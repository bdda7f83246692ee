//! Rate limits at the edge: a token bucket per API key (in [`super::auth`]) and per client
//! address (routes without a key, and requests whose key is missing or wrong). Every
//! answer says where its bucket stands (`RateLimit-*` headers); a refusal is 429 with
//! `Retry-After`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::failure::Failure;
use crate::limits::Decision;
use crate::metrics;
use crate::state::ApiState;

/// The client's address: the first `X-Forwarded-For` entry when the proxy is trusted.
fn client_ip(req: &Request, trust_forwarded: bool) -> String {
    if trust_forwarded
        && let Some(first) = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
        && let Ok(ip) = first.trim().parse::<std::net::IpAddr>()
    {
        return ip.to_string();
    }
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".into(), |c| c.0.ip().to_string())
}

/// The `RateLimit-*` headers of a decision.
pub(super) fn rate_headers(response: &mut Response, d: &Decision) {
    let h = response.headers_mut();
    h.insert("ratelimit-limit", HeaderValue::from(d.limit));
    h.insert("ratelimit-remaining", HeaderValue::from(d.remaining));
    h.insert("ratelimit-reset", HeaderValue::from(d.reset_s));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{};w={}",
        d.limit,
        (f64::from(d.limit) / d.rate_per_second).ceil() as u64
    )) {
        h.insert("ratelimit-policy", v);
    }
}

/// The 429 answer of a refused decision; `by` is `key` or `address`.
pub(super) fn limited(d: &Decision, by: &'static str) -> Response {
    metrics::rate_limited(by);
    let mut r = Failure {
        retry_after_s: Some(d.retry_after_s),
        ..Failure::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "rate limit of {} requests per second (burst {}) exceeded; retry after {}s",
                d.rate_per_second, d.limit, d.retry_after_s
            ),
        )
    }
    .into_response();
    rate_headers(&mut r, d);
    r
}

/// The client address's bucket, for requests that carry no valid key.
pub(super) fn check_ip(s: &ApiState, req: &Request) -> Result<Decision, Box<Response>> {
    let ip = client_ip(req, s.config.trust_forwarded_for);
    let d = s
        .ip_limiter
        .check(&ip, s.config.ip_rate_per_second, s.config.ip_burst);
    if d.allowed {
        Ok(d)
    } else {
        Err(Box::new(limited(&d, "address")))
    }
}

/// The layer of routes without a key: each client address within its rate.
pub async fn ip_limit(State(s): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    match check_ip(&s, &req) {
        Err(r) => *r,
        Ok(d) => {
            let mut response = next.run(req).await;
            rate_headers(&mut response, &d);
            response
        }
    }
}
