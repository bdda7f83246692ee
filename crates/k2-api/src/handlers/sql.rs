//! Read-only SQL over every table: what the structured routes do not ask.

use axum::response::Response;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::call::Call;
use crate::config::Scope;
use crate::extract::ApiJson;
use crate::failure::Failure;
use crate::respond::{self, Meta};
use crate::schema::{Answer, ErrorEnvelope, SqlRow};

/// `POST /v1/sql`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlQuery {
    /// One read-only statement over `trades`, `quotes` and `reference_data.companies`.
    sql: String,
    /// `json` (default), `csv`, `parquet` or `arrow`.
    format: Option<String>,
}

#[utoipa::path(post, path = "/v1/sql", tag = "sql", request_body = SqlQuery,
    responses((status = 200, description = "The result, at most query.max_rows rows; a longer one is cut there and says so (`meta.truncated_at`, header `x-truncated-at`)", body = Answer<Vec<SqlRow>>),
              (status = 400, description = "Not read-only (`not_read_only`), or not a statement the engine can run (`sql_error`)", body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub async fn sql(call: Call, ApiJson(q): ApiJson<SqlQuery>) -> Result<Response, Failure> {
    call.require(Scope::Sql)?;
    let format = call.format(q.format.as_deref())?;
    if q.sql.trim().is_empty() {
        return Err(Failure::invalid("sql", "is empty"));
    }
    let text = q.sql;
    let answer = call
        .s
        .query(move |engine| async move {
            engine
                .sql(&text)
                .await
                .map_err(|e| Failure::from_lake(e, true))
        })
        .await?;
    let meta = Meta {
        truncated_at: answer.truncated_at,
        ..call.meta(None)
    };
    respond::table(format, &answer.batches, None, meta, "sql")
}
