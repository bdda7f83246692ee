//! K2's API keys in front of the catalog: a key is presented as a bearer token (or in
//! `X-API-Key`). Clients configured with OAuth2 client credentials exchange them at
//! `/v1/oauth/tokens`: the secret is the key (the id, when given, must be its name) and
//! the token handed back is the key itself, so every server holding the same key list
//! accepts it and nothing needs to be shared between them.

use std::sync::Arc;

use axum::Form;
use axum::Json;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::CatalogState;
use super::errors::Refusal;
use crate::config::Scope;
use crate::metrics;
use crate::middleware::CallerName;

fn presented(req: &Request) -> Option<String> {
    let headers = req.headers();
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(|v| v.trim().to_string())
}

/// Reading (GET, HEAD) needs the `read` or `catalog` scope; changing anything, `catalog`.
pub async fn authenticate(
    State(s): State<Arc<CatalogState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(key) = presented(&req) else {
        metrics::auth_failed("missing");
        let mut r = Refusal::unauthorized("this catalog needs an API key as a bearer token")
            .into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            "Bearer".parse().expect("valid header"),
        );
        return r;
    };
    let Some(caller) = s.keys.check(&key).cloned() else {
        metrics::auth_failed("invalid");
        return Refusal::unauthorized("the API key is not valid").into_response();
    };
    let reading = matches!(*req.method(), Method::GET | Method::HEAD);
    let allowed = caller.may(Scope::Catalog) || (reading && caller.may(Scope::Read));
    if !allowed {
        let need = if reading {
            "read or catalog"
        } else {
            "catalog"
        };
        return Refusal::forbidden(format!(
            "the key '{}' lacks the {need} scope this request needs",
            caller.name
        ))
        .into_response();
    }
    let d = s
        .limiter
        .check(&caller.name, caller.rate_per_second, caller.burst);
    if !d.allowed {
        metrics::rate_limited("key");
        let mut r = Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequestsException",
            "this key's request rate is over its limit",
        )
        .into_response();
        let wait = d.retry_after_s.to_string();
        r.headers_mut()
            .insert(header::RETRY_AFTER, wait.parse().expect("digits"));
        return r;
    }
    let name = caller.name.clone();
    req.extensions_mut().insert(caller);
    let mut response = next.run(req).await;
    response.extensions_mut().insert(CallerName(name));
    response
}

/// The OAuth2 client-credentials grant (RFC 6749 §4.4) as the REST spec's
/// `/v1/oauth/tokens` takes it.
#[derive(Deserialize)]
pub struct TokenRequest {
    grant_type: String,
    client_id: Option<String>,
    client_secret: Option<String>,
}

pub async fn token(State(s): State<Arc<CatalogState>>, Form(form): Form<TokenRequest>) -> Response {
    let oauth_error = |status: StatusCode, error: &str, description: &str| {
        (
            status,
            Json(json!({"error": error, "error_description": description})),
        )
            .into_response()
    };
    if form.grant_type != "client_credentials" {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only client_credentials is supported",
        );
    }
    let Some(secret) = form.client_secret.filter(|s| !s.is_empty()) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client_secret (an API key) is required",
        );
    };
    let caller = s.keys.check(&secret).cloned();
    let valid = caller.filter(|c| form.client_id.as_deref().is_none_or(|id| id == c.name));
    let Some(caller) = valid else {
        metrics::auth_failed("invalid");
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "the client id and secret are not a valid API key and its name",
        );
    };
    let mut response = Json(json!({
        "access_token": secret,
        "token_type": "bearer",
        "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
    }))
    .into_response();
    response.extensions_mut().insert(CallerName(caller.name));
    response
}
