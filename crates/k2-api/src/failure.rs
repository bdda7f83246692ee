//! The one error answer: a status, a stable machine-readable code, a sentence, and the
//! field at fault when one input is. The observe layer writes it as
//! `{"error": {"code", "message", "field"?}, "meta": {"request_id"}}`.

use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use k2_lake::LakeError;
use serde_json::json;

use crate::format;

/// An error answer.
#[derive(Debug)]
pub struct Failure {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    pub retry_after_s: Option<u64>,
}

impl Failure {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after_s: None,
        }
    }

    /// A value that parsed but is not acceptable: 422 naming the field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Failure {
        Failure {
            field: Some(field.to_string()),
            ..Failure::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_parameter",
                format!("{field}: {}", message.into()),
            )
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn busy(message: impl Into<String>, retry_after_s: u64) -> Failure {
        Failure {
            retry_after_s: Some(retry_after_s),
            ..Failure::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message)
        }
    }

    pub fn internal(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// A failure of the engine; `user_sql` when the SQL text came from the caller (its
    /// planning errors are then the caller's to fix).
    pub fn from_lake(e: LakeError, user_sql: bool) -> Failure {
        match e {
            LakeError::InvalidArgument(m) => {
                Failure::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_parameter", m)
            }
            LakeError::NotFound(m) => Failure::not_found(format!("{m} not found")),
            LakeError::Timeout(d) => Failure::new(
                StatusCode::GATEWAY_TIMEOUT,
                "query_timeout",
                format!(
                    "the query exceeded its {:.1}s limit; narrow it",
                    d.as_secs_f64()
                ),
            ),
            e @ LakeError::MemoryLimit { .. } => Failure::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "memory_limit",
                e.to_string(),
            ),
            LakeError::NotReadOnly(m) => Failure::new(
                StatusCode::BAD_REQUEST,
                "not_read_only",
                format!("only read-only queries are allowed: {m}"),
            ),
            LakeError::Query(m) if user_sql => {
                Failure::new(StatusCode::BAD_REQUEST, "sql_error", m)
            }
            e if e.is_retryable() => Failure {
                retry_after_s: Some(1),
                ..Failure::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    e.to_string(),
                )
            },
            e => {
                tracing::error!(error = %e, "query failed");
                Failure::internal("the query failed; the server log has the details")
            }
        }
    }
}

/// Engine failures of K2's own queries (the SQL text is K2's, so planning errors are ours).
impl From<LakeError> for Failure {
    fn from(e: LakeError) -> Self {
        Failure::from_lake(e, false)
    }
}

impl From<format::Error> for Failure {
    fn from(e: format::Error) -> Self {
        tracing::error!(error = %e, "encoding an answer");
        Failure::internal("encoding the answer failed")
    }
}

/// The error envelope without its request id (the observe layer adds it).
#[derive(Clone, Debug)]
pub(crate) struct ErrorBody {
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        if let Some(s) = self.retry_after_s {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(s));
        }
        response.extensions_mut().insert(ErrorBody {
            code: self.code,
            message: self.message,
            field: self.field,
        });
        response
    }
}

pub(crate) fn error_json(body: &ErrorBody, request_id: &str) -> Vec<u8> {
    let mut error = json!({"code": body.code, "message": body.message});
    if let Some(f) = &body.field {
        error["field"] = json!(f);
    }
    serde_json::to_vec(&json!({"error": error, "meta": {"request_id": request_id}}))
        .expect("an error envelope serialises")
}
