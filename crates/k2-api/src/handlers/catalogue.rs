//! What the lake holds: symbols, the tables' state, and their snapshots (for time travel).

use axum::response::Response;
use chrono::Utc;
use k2_lake::LakeTable;
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;

use crate::call::Call;
use crate::config::Scope;
use crate::extract::ApiQuery;
use crate::failure::Failure;
use crate::params;
use crate::present;
use crate::respond;
use crate::schema::{Answer, SnapshotEntry, Stats};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SymbolParams {
    /// Only this exchange's symbols.
    exchange: Option<String>,
}

#[utoipa::path(get, path = "/v1/symbols", tag = "catalogue", params(SymbolParams),
    responses((status = 200, description = "Symbols with trades or quotes, sorted", body = Answer<Vec<String>>)),
    security(("api_key" = [])))]
pub async fn symbols(call: Call, ApiQuery(p): ApiQuery<SymbolParams>) -> Result<Response, Failure> {
    call.require(Scope::Read)?;
    let exchange = p
        .exchange
        .as_deref()
        .map(|x| params::exchange_code("exchange", x))
        .transpose()?;
    let list = call
        .s
        .query(move |engine| async move { Ok(engine.symbols(exchange.as_deref()).await?) })
        .await?;
    Ok(respond::value(list, call.meta(None)))
}

#[utoipa::path(get, path = "/v1/stats", tag = "catalogue",
    responses((status = 200, description = "Per table: rows, current snapshot, last commit and its age", body = Answer<Stats>)),
    security(("api_key" = [])))]
pub async fn stats(call: Call) -> Result<Response, Failure> {
    call.require(Scope::Read)?;
    let tables = call
        .s
        .query(move |engine| async move {
            let mut out = Vec::new();
            for table in LakeTable::ALL {
                let snaps = engine.snapshots(table).await?;
                let current = engine.current_snapshot(table).await?;
                let cur = snaps.iter().find(|x| Some(x.snapshot_id) == current);
                let now_ms = Utc::now().timestamp_millis();
                out.push(json!({
                    "table": table.qualified(),
                    "rows": cur.and_then(|c| c.total_records).unwrap_or(0),
                    "snapshot_id": current,
                    "snapshots": snaps.len(),
                    "last_commit": cur.map(|c| present::iso_us(c.timestamp_ms * 1000)),
                    "freshness_seconds": cur.map(|c| (now_ms - c.timestamp_ms) as f64 / 1e3),
                }));
            }
            Ok(out)
        })
        .await?;
    Ok(respond::value(
        json!({"tables": tables, "uptime_seconds": call.s.started.elapsed().as_secs()}),
        call.meta(None),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SnapshotParams {
    /// `trades` (default), `quotes` or `companies` (or a qualified name).
    table: Option<String>,
    /// The newest N (default 100, at most 1000).
    limit: Option<usize>,
}

/// Snapshots listed at most per request.
pub const MAX_SNAPSHOTS: usize = 1000;

/// Every name a table answers to: its own and its qualified one.
pub fn table_names() -> Vec<String> {
    LakeTable::ALL
        .iter()
        .flat_map(|t| [t.name().to_string(), t.qualified()])
        .collect()
}

#[utoipa::path(get, path = "/v1/snapshots", tag = "time travel", params(SnapshotParams),
    responses((status = 200, description = "Snapshots of the table, newest first", body = Answer<Vec<SnapshotEntry>>)),
    security(("api_key" = [])))]
pub async fn snapshots(
    call: Call,
    ApiQuery(p): ApiQuery<SnapshotParams>,
) -> Result<Response, Failure> {
    call.require(Scope::Read)?;
    let name = p.table.as_deref().unwrap_or("trades");
    let table = LakeTable::parse(name).ok_or_else(|| {
        Failure::invalid(
            "table",
            format!("'{name}' is not trades, quotes or companies"),
        )
    })?;
    let limit = params::limit("limit", p.limit, 100, MAX_SNAPSHOTS)?;
    let mut snaps = call
        .s
        .query(move |engine| async move { Ok(engine.snapshots(table).await?) })
        .await?;
    snaps.reverse();
    snaps.truncate(limit);
    let rows: Vec<serde_json::Value> = snaps
        .iter()
        .map(|x| {
            let mut v = serde_json::to_value(present::SnapshotRow::from(x)).expect("serialises");
            v["log_offsets"] = json!(x.log_offsets);
            v
        })
        .collect();
    Ok(respond::value(rows, call.meta(None)))
}
