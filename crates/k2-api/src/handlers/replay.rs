//! Streamed replays: a time range in timestamp order across symbols, as NDJSON over HTTP
//! or one row per message over a WebSocket, paced or at full speed.

use axum::extract::Request;
use axum::response::Response;
use k2_lake::replay::ReplayRequest;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::call::Call;
use crate::config::Scope;
use crate::extract::ApiQuery;
use crate::failure::Failure;
use crate::params;
use crate::stream;

/// Parameters of a streamed replay (`GET /v1/replay/stream`, `GET /v1/replay/ws`).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReplayParams {
    /// `trades` (default) or `quotes`.
    data_type: Option<String>,
    /// Comma-separated symbols, e.g. `BHP,RIO` (at most 100; none: all).
    symbols: Option<String>,
    /// Comma-separated exchange codes (at most 20; none: all).
    exchanges: Option<String>,
    /// Inclusive start: RFC 3339, or a date (the start of that trading day).
    #[param(required = true)]
    start_time: Option<String>,
    /// Exclusive end: RFC 3339, or a date. An end not after the start replays nothing.
    #[param(required = true)]
    end_time: Option<String>,
    /// `max` (default: as fast as the client takes rows), or a factor of the recorded pace
    /// from the first row: `1` as it happened, `10` ten times faster, `0.5` half speed.
    speed: Option<String>,
    /// Comma-separated columns of trades or quotes (default: every column of the table
    /// replayed); a column only the other table has is left out.
    fields: Option<String>,
    /// Replay the table as of this snapshot (default: the current one when it starts).
    snapshot_id: Option<i64>,
}

#[utoipa::path(get, path = "/v1/replay/stream", tag = "replay", params(ReplayParams),
    responses((status = 200, description = "The range's rows in timestamp order across symbols, one JSON object per line (NDJSON), streamed and paced; a failure after the first rows ends the stream with an {\"error\": …} line and a broken body", content_type = "application/x-ndjson", body = String),
              (status = 404, description = "The table has no such snapshot", body = crate::schema::ErrorEnvelope)),
    security(("api_key" = [])))]
pub async fn replay_stream(
    call: Call,
    ApiQuery(p): ApiQuery<ReplayParams>,
) -> Result<Response, Failure> {
    let started = start_replay(&call, p).await?;
    Ok(stream::ndjson_response(started))
}

/// A replay over a WebSocket: one row per text message (the NDJSON line), closed with
/// 1000 when complete, 1011 with the reason when it failed, 1001 when the server shuts
/// down. Not in the OpenAPI document, which cannot describe a WebSocket conversation: its
/// parameters and rows are those of `/v1/replay/stream`.
pub async fn replay_ws(
    call: Call,
    ApiQuery(p): ApiQuery<ReplayParams>,
    mut req: Request,
) -> Result<Response, Failure> {
    let accept = stream::websocket_accept(req.headers())?;
    let upgrade = req
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
        .ok_or_else(|| Failure::internal("this connection cannot be upgraded"))?;
    let started = start_replay(&call, p).await?;
    Ok(stream::websocket_response(accept, upgrade, started))
}

/// Validates a streamed replay, takes a replay slot and starts it (its first rows ready).
async fn start_replay(call: &Call, p: ReplayParams) -> Result<stream::Started, Failure> {
    call.require(Scope::Read)?;
    let s = &call.s;
    let table = params::market_table(p.data_type.as_deref())?;
    let symbols = params::symbol_list("symbols", p.symbols.as_deref())?;
    let exchanges = params::exchange_list("exchanges", p.exchanges.as_deref())?;
    let (Some(start), Some(end)) = (p.start_time.as_deref(), p.end_time.as_deref()) else {
        let field = if p.start_time.is_none() {
            "start_time"
        } else {
            "end_time"
        };
        return Err(Failure::invalid(field, "a replay needs a start and an end"));
    };
    let (start_us, end_us) = params::range(
        Some(start),
        Some(end),
        exchanges.first().map(String::as_str),
    )?;
    let (start_us, end_us) = (
        start_us.expect("a start was given"),
        end_us.expect("an end was given"),
    );
    let speed = params::speed(p.speed.as_deref())?;
    let own = k2_lake::query::columns(table);
    let fields: Vec<String> = params::column_list(p.fields.as_deref())?
        .into_iter()
        .filter(|f| own.contains(f))
        .collect();
    if end_us <= start_us {
        // As everywhere in the API, a range that ends before it starts holds nothing.
        return Ok(stream::Started::empty());
    }
    let permit = s.replays.clone().try_acquire_owned().map_err(|_| {
        Failure::busy(
            format!(
                "{} replays are running, as many as this server runs at once (api.max_replays); retry later",
                s.config.max_replays
            ),
            5,
        )
    })?;
    let request = ReplayRequest {
        table,
        symbols,
        exchanges,
        start_us,
        end_us,
        fields,
        speed,
        snapshot: p.snapshot_id,
        options: Default::default(),
    };
    stream::start(
        &s.runtime,
        s.engine.clone(),
        request,
        permit,
        s.stop.clone(),
    )
    .await
}
