//! The dead-letter store over HTTP: every rejected record with its stage, kind and reason,
//! counted by reason, and each one in full. What `k2 dlq list` and `k2 dlq show` print.

use axum::extract::Path;
use axum::response::Response;
use k2_log::DeadLetterStore;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::call::Call;
use crate::config::Scope;
use crate::extract::ApiQuery;
use crate::failure::Failure;
use crate::params;
use crate::present::DeadLetterRow;
use crate::respond;
use crate::schema::{Answer, ErrorEnvelope};

/// Letters one answer lists at most (the counts cover the whole store).
pub const MAX_LETTERS: usize = 1_000;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterParams {
    /// Only letters of this kind (`column_count`, `number`, `negative_price`, …).
    kind: Option<String>,
    /// Letters listed, newest first (default 50, at most 1000).
    limit: Option<usize>,
}

/// The store's letters by reason, and the newest of them.
#[derive(Serialize, ToSchema)]
pub struct DeadLetters {
    /// Letters stored (of every kind).
    pub total: u64,
    /// Letters stored per stage and kind, most first.
    pub by_reason: Vec<ReasonCount>,
    /// The newest letters (of `kind` when asked), newest first.
    pub letters: Vec<DeadLetterRow>,
}

#[derive(Serialize, ToSchema)]
pub struct ReasonCount {
    pub stage: String,
    pub kind: String,
    pub count: u64,
}

#[utoipa::path(get, path = "/v1/dead-letters", tag = "quality", params(DeadLetterParams),
    responses((status = 200, description = "Letters stored, counted by stage and kind, and the newest of them", body = Answer<DeadLetters>),
              (status = 404, description = "This server holds no dead-letter store", body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub async fn list(
    call: Call,
    ApiQuery(p): ApiQuery<DeadLetterParams>,
) -> Result<Response, Failure> {
    call.require(Scope::Read)?;
    let limit = params::limit("limit", p.limit, 50, MAX_LETTERS)?;
    let kind = p
        .kind
        .as_deref()
        .map(|k| params::letter_kind("kind", k))
        .transpose()?;
    let store = store(&call)?;
    let census = call
        .s
        .query(move |_| async move { blocking(move || store.census(kind.as_deref(), limit)).await })
        .await?;
    let mut by_reason: Vec<ReasonCount> = census
        .by_reason
        .into_iter()
        .map(|((stage, kind), count)| ReasonCount { stage, kind, count })
        .collect();
    by_reason.sort_by_key(|r| std::cmp::Reverse(r.count));
    let answer = DeadLetters {
        total: census.total,
        by_reason,
        letters: census.newest.iter().map(DeadLetterRow::from).collect(),
    };
    Ok(respond::value(answer, call.meta(None)))
}

#[utoipa::path(get, path = "/v1/dead-letters/{id}", tag = "quality",
    params(("id" = u64, Path, description = "The letter's id (from `/v1/dead-letters`)")),
    responses((status = 200, description = "The letter in full, its raw record included", body = Answer<DeadLetterRow>),
              (status = 404, description = "No such letter (replayed, or rotated out), or no store here", body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub async fn one(call: Call, Path(id): Path<String>) -> Result<Response, Failure> {
    call.require(Scope::Read)?;
    let id: u64 = id
        .parse()
        .map_err(|_| Failure::invalid("id", format!("'{id}' is not a letter's id (digits)")))?;
    let store = store(&call)?;
    let row = call
        .s
        .query(move |_| async move {
            match blocking(move || store.get(id)).await? {
                Some(letter) => Ok(DeadLetterRow::from(&(id, letter))),
                None => Err(Failure::not_found(format!(
                    "dead letter {id} (replayed, rotated out, or never stored)"
                ))),
            }
        })
        .await?;
    Ok(respond::value(row, call.meta(None)))
}

fn store(call: &Call) -> Result<DeadLetterStore, Failure> {
    call.s
        .backends
        .dead_letters
        .clone()
        .ok_or_else(|| Failure::not_found("this server holds no dead-letter store"))
}

/// Store reads (redb) off the async threads.
async fn blocking<T: Send + 'static>(
    read: impl FnOnce() -> k2_log::Result<T> + Send + 'static,
) -> Result<T, Failure> {
    match tokio::task::spawn_blocking(read).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "reading the dead-letter store");
            Err(Failure::internal(format!(
                "reading the dead-letter store: {e}"
            )))
        }
        Err(_) => Err(Failure::internal("the dead-letter read ended unexpectedly")),
    }
}
