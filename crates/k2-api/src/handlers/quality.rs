//! The completeness ledger: per stream, what arrived and what is missing, and every gap
//! from found to filled or given up. The same rows as SQL's `quality.streams` and
//! `quality.gaps`, at the snapshot asked for.

use axum::response::Response;
use k2_lake::query::{LedgerFilter, LedgerView};
use k2_pipeline::GapStatus;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::call::Call;
use crate::config::Scope;
use crate::extract::ApiQuery;
use crate::failure::Failure;
use crate::params;
use crate::respond;
use crate::schema::{Answer, ErrorEnvelope, SqlRow};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct QualityParams {
    /// `trades` or `quotes`; both when absent.
    table: Option<String>,
    /// Only this exchange's streams.
    exchange: Option<String>,
    /// Only this symbol's streams.
    symbol: Option<String>,
    /// Gaps only: `open`, `filled` or `lost`.
    status: Option<String>,
    /// As of this instant (RFC 3339, or a date: its start in UTC).
    as_of: Option<String>,
    /// As of this snapshot (an id or a tag), of each table.
    snapshot: Option<String>,
    /// `json` (default), `csv`, `parquet` or `arrow`.
    format: Option<String>,
}

#[utoipa::path(get, path = "/v1/quality/summary", tag = "quality", params(QualityParams),
    responses((status = 200, description = "One row per stream and table: its session, sequences, counts received, in order, gaps, late fills, missing, lost, duplicates (by sequence, and dropped by message id), resets", body = Answer<Vec<SqlRow>>),
              (status = 404, description = "No ledger here: the writer's state directory is not this server's, or the snapshot's state is no longer kept", body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub async fn summary(
    call: Call,
    ApiQuery(p): ApiQuery<QualityParams>,
) -> Result<Response, Failure> {
    if p.status.is_some() {
        return Err(Failure::invalid(
            "status",
            "is a filter of /v1/quality/gaps",
        ));
    }
    answer(call, p, LedgerView::Streams, "quality-summary").await
}

#[utoipa::path(get, path = "/v1/quality/gaps", tag = "quality", params(QualityParams),
    responses((status = 200, description = "One row per gap found, closed ones first: its range, size, status, filled, lost and missing counts, when found and when closed (exchange times)", body = Answer<Vec<SqlRow>>),
              (status = 404, description = "No ledger here: the writer's state directory is not this server's, or the snapshot's state is no longer kept", body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub async fn gaps(call: Call, ApiQuery(p): ApiQuery<QualityParams>) -> Result<Response, Failure> {
    answer(call, p, LedgerView::Gaps, "quality-gaps").await
}

async fn answer(
    call: Call,
    p: QualityParams,
    view: LedgerView,
    name: &str,
) -> Result<Response, Failure> {
    call.require(Scope::Read)?;
    let format = call.format(p.format.as_deref())?;
    let filter = LedgerFilter {
        table: p
            .table
            .as_deref()
            .map(|t| {
                params::market_table(Some(t)).map_err(|_| {
                    Failure::invalid("table", format!("'{t}' is not trades or quotes"))
                })
            })
            .transpose()?,
        exchange: p
            .exchange
            .as_deref()
            .map(|x| params::exchange_code("exchange", x))
            .transpose()?,
        symbol: p
            .symbol
            .as_deref()
            .map(|x| params::symbol("symbol", x))
            .transpose()?,
        status: p.status.as_deref().map(status).transpose()?,
    };
    let pin = params::pin(p.as_of.as_deref(), p.snapshot.as_deref())?;
    let batch = call
        .s
        .query(move |engine| async move {
            let ledgers = engine
                .ledgers(&pin)
                .await
                .map_err(|e| Failure::from_lake(e, false))?;
            view.batch(&filter.apply(ledgers))
                .map_err(|e| Failure::from_lake(e, false))
        })
        .await?;
    respond::table(format, &[batch], None, call.meta(None), name)
}

fn status(text: &str) -> Result<GapStatus, Failure> {
    match text {
        "open" => Ok(GapStatus::Open),
        "filled" => Ok(GapStatus::Filled),
        "lost" => Ok(GapStatus::Lost),
        other => Err(Failure::invalid(
            "status",
            format!("'{other}' is not open, filled or lost"),
        )),
    }
}
