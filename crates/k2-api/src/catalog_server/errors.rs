//! The spec's error model: `{"error": {"message", "type", "code"}}`, with the exception
//! type names clients map to their own errors (a 409 on commit is a retryable conflict).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use k2_lake::LakeError;
use serde_json::json;

#[derive(Debug)]
pub struct Refusal {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl Refusal {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            kind,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::NOT_FOUND, "NotFoundException", message)
    }

    pub fn bad_request(message: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, "BadRequestException", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::FORBIDDEN, "ForbiddenException", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::UNAUTHORIZED, "NotAuthorizedException", message)
    }

    /// What the catalog said, as the spec names it.
    pub fn from_iceberg(what: &str, e: &iceberg::Error) -> Refusal {
        use iceberg::ErrorKind as K;
        let (status, kind) = match e.kind() {
            K::TableNotFound => (StatusCode::NOT_FOUND, "NoSuchTableException"),
            K::NamespaceNotFound => (StatusCode::NOT_FOUND, "NoSuchNamespaceException"),
            K::TableAlreadyExists | K::NamespaceAlreadyExists => {
                (StatusCode::CONFLICT, "AlreadyExistsException")
            }
            K::CatalogCommitConflicts => (StatusCode::CONFLICT, "CommitFailedException"),
            K::DataInvalid | K::PreconditionFailed => {
                (StatusCode::BAD_REQUEST, "BadRequestException")
            }
            K::FeatureUnsupported => (StatusCode::NOT_ACCEPTABLE, "UnsupportedOperationException"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "ServiceFailureException"),
        };
        if status.is_server_error() {
            tracing::warn!(error = %e, "catalog: {what} failed");
        }
        Refusal::new(status, kind, format!("{what}: {}", e.message()))
    }

    /// A commit K2's committer refused or could not finish.
    pub fn from_commit(e: &LakeError) -> Refusal {
        match e {
            LakeError::Conflict { detail, .. } => Refusal::new(
                StatusCode::CONFLICT,
                "CommitFailedException",
                detail.clone(),
            ),
            LakeError::Catalog { cause, context } => Refusal::from_iceberg(context, cause),
            LakeError::InvalidArgument(m) => Refusal::bad_request(m.clone()),
            other => {
                tracing::warn!(error = %other, "catalog: commit failed");
                Refusal::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "CommitStateUnknownException",
                    other.to_string(),
                )
            }
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "message": self.message,
            "type": self.kind,
            "code": self.status.as_u16(),
        }});
        (self.status, Json(body)).into_response()
    }
}
