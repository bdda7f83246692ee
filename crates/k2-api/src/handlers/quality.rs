//! The completeness ledger: per stream, what arrived and what is missing, and every gap
//! from found to filled or given up. The same rows as SQL's `quality.streams` and
//! `quality.gaps`, at the snapshot asked for.

use axum::response::Response;
use k2_lake::LakeTable;
use k2_lake::query::{LedgerFilter, LedgerView};
use k2_pipeline::GapStatus;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::call::Call;
use crate::config::Scope;
use crate::extract::ApiQuery;
use crate::failure::Failure;
use crate::params;
use crate::respond;
use crate::schema::{Answer, ErrorEnvelope, SqlRow};

/// A table with source sequences.
#[derive(Clone, Copy, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SequencedTable {
    Trades,
    Quotes,
}

/// What became of a gap.
#[derive(Clone, Copy, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GapState {
    Open,
    Filled,
    Lost,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SummaryParams {
    /// `trades` or `quotes`; both when absent.
    #[param(inline)]
    table: Option<SequencedTable>,
    /// Only this exchange's streams.
    exchange: Option<String>,
    /// Only this symbol's streams.
    symbol: Option<String>,
    /// As of this instant (RFC 3339, or a date: its start in UTC).
    as_of: Option<String>,
    /// As of this snapshot: a tag (of each table), or an id (of one table: give `table` too).
    snapshot: Option<String>,
    /// `json` (default), `csv`, `parquet` or `arrow`.
    format: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GapParams {
    /// `trades` or `quotes`; both when absent.
    #[param(inline)]
    table: Option<SequencedTable>,
    /// Only this exchange's streams.
    exchange: Option<String>,
    /// Only this symbol's streams.
    symbol: Option<String>,
    /// Only gaps in this state.
    #[param(inline)]
    status: Option<GapState>,
    /// As of this instant (RFC 3339, or a date: its start in UTC).
    as_of: Option<String>,
    /// As of this snapshot: a tag (of each table), or an id (of one table: give `table` too).
    snapshot: Option<String>,
    /// `json` (default), `csv`, `parquet` or `arrow`.
    format: Option<String>,
}

#[utoipa::path(get, path = "/v1/quality/summary", tag = "quality", params(SummaryParams),
    responses((status = 200, description = "One row per stream and table: its session, sequences, counts received, in order, gaps, late fills, missing, lost, duplicates (by sequence, and dropped by message id), resets", body = Answer<Vec<SqlRow>>),
              (status = 404, description = "No ledger here: the writer's state directory is not this server's, or the snapshot's state is no longer kept", body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub async fn summary(
    call: Call,
    ApiQuery(p): ApiQuery<SummaryParams>,
) -> Result<Response, Failure> {
    let gaps = GapParams {
        table: p.table,
        exchange: p.exchange,
        symbol: p.symbol,
        status: None,
        as_of: p.as_of,
        snapshot: p.snapshot,
        format: p.format,
    };
    answer(call, gaps, LedgerView::Streams, "quality-summary").await
}

#[utoipa::path(get, path = "/v1/quality/gaps", tag = "quality", params(GapParams),
    responses((status = 200, description = "One row per gap found, closed ones first: its range, size, status, filled, lost and missing counts, when found and when closed (exchange times)", body = Answer<Vec<SqlRow>>),
              (status = 404, description = "No ledger here: the writer's state directory is not this server's, or the snapshot's state is no longer kept", body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub async fn gaps(call: Call, ApiQuery(p): ApiQuery<GapParams>) -> Result<Response, Failure> {
    answer(call, p, LedgerView::Gaps, "quality-gaps").await
}

async fn answer(
    call: Call,
    p: GapParams,
    view: LedgerView,
    name: &str,
) -> Result<Response, Failure> {
    call.require(Scope::Read)?;
    let format = call.format(p.format.as_deref())?;
    let filter = LedgerFilter {
        table: p.table.map(|t| match t {
            SequencedTable::Trades => LakeTable::Trades,
            SequencedTable::Quotes => LakeTable::Quotes,
        }),
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
        status: p.status.map(|s| match s {
            GapState::Open => GapStatus::Open,
            GapState::Filled => GapStatus::Filled,
            GapState::Lost => GapStatus::Lost,
        }),
    };
    let pin = params::pin(p.as_of.as_deref(), p.snapshot.as_deref())?;
    let batch = call
        .s
        .query(move |engine| async move {
            let ledgers = engine
                .ledgers(&pin, filter.table)
                .await
                .map_err(|e| Failure::from_lake(e, false))?;
            view.batch(&filter.apply(ledgers))
                .map_err(|e| Failure::from_lake(e, false))
        })
        .await?;
    respond::table(format, &[batch], None, call.meta(None), name)
}
