//! What every `/v1` handler starts from: the state, the caller (authenticated by the
//! layer), the request id, the request's headers (for `Accept`) and when it began.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};

use crate::config::Scope;
use crate::failure::Failure;
use crate::format::Format;
use crate::keys::Caller;
use crate::middleware::RequestId;
use crate::respond::{Meta, negotiate};
use crate::state::ApiState;

pub struct Call {
    pub s: Arc<ApiState>,
    pub caller: Caller,
    pub id: RequestId,
    pub headers: HeaderMap,
    pub started: Instant,
}

impl FromRequestParts<Arc<ApiState>> for Call {
    type Rejection = Failure;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        let missing = || Failure::internal("a /v1 route ran without the authentication layer");
        Ok(Call {
            s: state.clone(),
            caller: parts
                .extensions
                .get::<Caller>()
                .cloned()
                .ok_or_else(missing)?,
            id: parts
                .extensions
                .get::<RequestId>()
                .cloned()
                .ok_or_else(missing)?,
            headers: parts.headers.clone(),
            started: Instant::now(),
        })
    }
}

impl Call {
    /// 403 unless the caller's key has `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), Failure> {
        if self.caller.may(scope) {
            Ok(())
        } else {
            Err(Failure::new(
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                format!(
                    "the key '{}' lacks the '{}' scope",
                    self.caller.name,
                    scope.name()
                ),
            ))
        }
    }

    /// The answer's format: `param`, else `Accept`, else JSON.
    pub fn format(&self, param: Option<&str>) -> Result<Format, Failure> {
        negotiate(param, &self.headers)
    }

    pub fn meta(&self, snapshot_id: Option<i64>) -> Meta {
        Meta::new(&self.id, snapshot_id, self.started)
    }

    /// The meta of an answer read from the snapshot `receipt` names.
    pub fn meta_of(&self, receipt: &k2_lake::query::Receipt) -> Meta {
        Meta {
            log_offsets: receipt.snapshot_id.map(|_| receipt.log_offsets.clone()),
            ..self.meta(receipt.snapshot_id)
        }
    }
}
