//! Extractors whose rejections are K2's error answers: JSON bodies (413 over the body
//! limit, 415 without a JSON content type, 422 naming a field of the wrong type, 400 for
//! malformed JSON) and query strings (400 naming the parameter).

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{StatusCode, request::Parts};
use serde::de::DeserializeOwned;

use crate::failure::Failure;

/// `Json` whose rejections are K2 errors: 413 over the body limit (counted on the bytes
/// read, chunked bodies included), 415 without a JSON content type, 422 naming the field
/// of a value of the wrong type, 400 for malformed JSON.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Failure;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(r) => Err(json_rejection(r)),
        }
    }
}

fn json_rejection(r: JsonRejection) -> Failure {
    let status = r.status();
    let text = r.body_text();
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => Failure::new(
            status,
            "payload_too_large",
            "the request body is larger than the server accepts (api.body_limit_bytes)",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Failure::new(
            status,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        ),
        StatusCode::UNPROCESSABLE_ENTITY => {
            let field = text
                .split(": ")
                .nth(1)
                .filter(|f| !f.contains(' '))
                .map(str::to_string);
            Failure {
                field,
                ..Failure::new(status, "invalid_parameter", text)
            }
        }
        _ => Failure::bad_request(text),
    }
}

/// `Query` whose rejections are K2 errors (400 naming the parameter).
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(r) => Err(query_rejection(r)),
        }
    }
}

fn query_rejection(r: QueryRejection) -> Failure {
    Failure::new(StatusCode::BAD_REQUEST, "bad_request", r.body_text())
}
