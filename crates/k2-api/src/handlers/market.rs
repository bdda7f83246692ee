//! Trades and quotes: pages of rows, newest first (or oldest first for replay pages),
//! from the lake, from the lake and the live tail, or as of a snapshot; every page
//! continued by a cursor pinned to the snapshot and the query it came from.

use std::sync::Arc;

use axum::extract::Path;
use axum::response::Response;
use k2_lake::LakeTable;
use k2_lake::query::{MarketFilter, MarketPage, Pin, RowOrder};
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::cache::Kept;
use crate::call::Call;
use crate::config::Scope;
use crate::cursor::{self, Cursor};
use crate::extract::{ApiJson, ApiQuery};
use crate::failure::Failure;
use crate::format::Format;
use crate::params;
use crate::respond::{self, Pagination};
use crate::schema::{LivePage, Page, QuoteRow, TradeRow};

/// Filters of `GET /v1/trades`, `/v1/quotes` and their `/recent` twins.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Symbol, e.g. `BHP`.
    symbol: Option<String>,
    /// Exchange code, e.g. `ASX` (any case).
    exchange: Option<String>,
    /// Inclusive start: RFC 3339, or a date (the start of that trading day).
    start_time: Option<String>,
    /// Exclusive end: RFC 3339, or a date. An end not after the start answers nothing.
    end_time: Option<String>,
    /// Rows per page (default `api.default_limit`, at most `api.max_limit`).
    limit: Option<usize>,
    /// `pagination.next_cursor` of the previous page.
    cursor: Option<String>,
    /// `json` (default), `csv`, `parquet` or `arrow`; else the `Accept` header decides.
    format: Option<String>,
    /// Time travel: the snapshot current at this instant (RFC 3339, or a date: its start
    /// in UTC). Not with `/recent`.
    as_of: Option<String>,
    /// Time travel: a snapshot id, or a tag's name. Not with `as_of` or `/recent`.
    snapshot: Option<String>,
}

/// A trades query (`POST /v1/trades/query`).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TradeQuery {
    /// Any of these symbols (at most 100; none: all).
    #[serde(default)]
    symbols: Vec<String>,
    /// Any of these exchange codes (at most 20; none: all).
    #[serde(default)]
    exchanges: Vec<String>,
    /// Inclusive start: RFC 3339, or a date (the start of that trading day).
    start_time: Option<String>,
    /// Exclusive end: RFC 3339, or a date. An end not after the start answers nothing.
    end_time: Option<String>,
    /// Columns to return, each once (none: the usual set).
    #[serde(default)]
    fields: Vec<String>,
    /// Inclusive price and quantity bounds: decimal text (exact), or a JSON number (taken
    /// to 8 decimal places).
    #[schema(value_type = Option<Object>)]
    min_price: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    max_price: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    min_quantity: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    max_quantity: Option<serde_json::Value>,
    /// Rows per page (default 1000, at most `api.max_query_limit`).
    #[serde(default, deserialize_with = "params::whole")]
    limit: Option<usize>,
    /// `pagination.next_cursor` of the previous page.
    cursor: Option<String>,
    /// `json` (default), `csv`, `parquet` or `arrow`.
    format: Option<String>,
    /// Time travel: the snapshot current at this instant (RFC 3339, or a date).
    as_of: Option<String>,
    /// Time travel: a snapshot id, or a tag's name (not with `as_of`).
    snapshot: Option<String>,
}

/// A quotes query (`POST /v1/quotes/query`).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuoteQuery {
    #[serde(default)]
    symbols: Vec<String>,
    #[serde(default)]
    exchanges: Vec<String>,
    start_time: Option<String>,
    end_time: Option<String>,
    #[serde(default)]
    fields: Vec<String>,
    #[serde(default, deserialize_with = "params::whole")]
    limit: Option<usize>,
    cursor: Option<String>,
    format: Option<String>,
    as_of: Option<String>,
    snapshot: Option<String>,
}

/// A market query, whichever table it asks.
#[derive(Debug, Default)]
pub(super) struct MarketQuery {
    pub symbols: Vec<String>,
    pub exchanges: Vec<String>,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    pub fields: Vec<String>,
    pub bounds: [Option<serde_json::Value>; 4],
    pub limit: Option<usize>,
    pub cursor: Option<String>,
    pub format: Option<String>,
    pub as_of: Option<String>,
    pub snapshot: Option<String>,
}

impl From<TradeQuery> for MarketQuery {
    fn from(q: TradeQuery) -> Self {
        MarketQuery {
            symbols: q.symbols,
            exchanges: q.exchanges,
            start_time: q.start_time,
            end_time: q.end_time,
            fields: q.fields,
            bounds: [q.min_price, q.max_price, q.min_quantity, q.max_quantity],
            limit: q.limit,
            cursor: q.cursor,
            format: q.format,
            as_of: q.as_of,
            snapshot: q.snapshot,
        }
    }
}

impl From<QuoteQuery> for MarketQuery {
    fn from(q: QuoteQuery) -> Self {
        MarketQuery {
            symbols: q.symbols,
            exchanges: q.exchanges,
            start_time: q.start_time,
            end_time: q.end_time,
            fields: q.fields,
            bounds: Default::default(),
            limit: q.limit,
            cursor: q.cursor,
            format: q.format,
            as_of: q.as_of,
            snapshot: q.snapshot,
        }
    }
}

/// The table and query of a body that names its `data_type` (`trades`, the default, or
/// `quotes`): a trades query or a quotes query with that one more member.
pub(super) fn market_request(
    mut body: serde_json::Value,
) -> Result<(LakeTable, MarketQuery), Failure> {
    let object = body
        .as_object_mut()
        .ok_or_else(|| Failure::invalid("body", "must be a JSON object"))?;
    let data_type = match object.remove("data_type") {
        None => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(_) => return Err(Failure::invalid("data_type", "must be trades or quotes")),
    };
    let table = params::market_table(data_type.as_deref())?;
    let read = |e: serde_json::Error| Failure::invalid("body", e.to_string());
    let query = match table {
        LakeTable::Quotes => serde_json::from_value::<QuoteQuery>(body)
            .map_err(read)?
            .into(),
        _ => serde_json::from_value::<TradeQuery>(body)
            .map_err(read)?
            .into(),
    };
    Ok((table, query))
}

const LIST_TAG: &str = "market";

#[utoipa::path(get, path = "/v1/trades", tag = LIST_TAG, params(ListParams),
    responses((status = 200, description = "Trades, newest first, one page", body = Page<TradeRow>)),
    security(("api_key" = [])))]
pub async fn trades(call: Call, ApiQuery(p): ApiQuery<ListParams>) -> Result<Response, Failure> {
    list(call, p, LakeTable::Trades, false).await
}

#[utoipa::path(get, path = "/v1/quotes", tag = LIST_TAG, params(ListParams),
    responses((status = 200, description = "Quotes, newest first, one page", body = Page<QuoteRow>)),
    security(("api_key" = [])))]
pub async fn quotes(call: Call, ApiQuery(p): ApiQuery<ListParams>) -> Result<Response, Failure> {
    list(call, p, LakeTable::Quotes, false).await
}

#[utoipa::path(get, path = "/v1/trades/recent", tag = LIST_TAG, params(ListParams),
    responses((status = 200, description = "Trades, newest first, over the lake and the live tail: events seen by the feeds but not yet committed are included, each event once", body = LivePage<TradeRow>)),
    security(("api_key" = [])))]
pub async fn trades_recent(
    call: Call,
    ApiQuery(p): ApiQuery<ListParams>,
) -> Result<Response, Failure> {
    list(call, p, LakeTable::Trades, true).await
}

#[utoipa::path(get, path = "/v1/quotes/recent", tag = LIST_TAG, params(ListParams),
    responses((status = 200, description = "Quotes, newest first, over the lake and the live tail", body = LivePage<QuoteRow>)),
    security(("api_key" = [])))]
pub async fn quotes_recent(
    call: Call,
    ApiQuery(p): ApiQuery<ListParams>,
) -> Result<Response, Failure> {
    list(call, p, LakeTable::Quotes, true).await
}

/// A page of a GET list: newest first, from the lake (and the live tail when `live`).
async fn list(
    call: Call,
    p: ListParams,
    table: LakeTable,
    live: bool,
) -> Result<Response, Failure> {
    let q = list_query(&call, p)?;
    market(call, q, table, None, RowOrder::NewestFirst, live).await
}

fn list_query(call: &Call, p: ListParams) -> Result<MarketQuery, Failure> {
    let c = &call.s.config;
    Ok(MarketQuery {
        symbols: p.symbol.into_iter().collect(),
        exchanges: p.exchange.into_iter().collect(),
        start_time: p.start_time,
        end_time: p.end_time,
        limit: Some(params::limit(
            "limit",
            p.limit,
            c.default_limit,
            c.max_limit,
        )?),
        cursor: p.cursor,
        format: p.format,
        as_of: p.as_of,
        snapshot: p.snapshot,
        ..Default::default()
    })
}

#[utoipa::path(post, path = "/v1/trades/query", tag = LIST_TAG, request_body = TradeQuery,
    responses((status = 200, description = "Trades, newest first, one page", body = Page<TradeRow>)),
    security(("api_key" = [])))]
pub async fn trades_query(
    call: Call,
    ApiJson(q): ApiJson<TradeQuery>,
) -> Result<Response, Failure> {
    market(
        call,
        q.into(),
        LakeTable::Trades,
        None,
        RowOrder::NewestFirst,
        false,
    )
    .await
}

#[utoipa::path(post, path = "/v1/quotes/query", tag = LIST_TAG, request_body = QuoteQuery,
    responses((status = 200, description = "Quotes, newest first, one page", body = Page<QuoteRow>)),
    security(("api_key" = [])))]
pub async fn quotes_query(
    call: Call,
    ApiJson(q): ApiJson<QuoteQuery>,
) -> Result<Response, Failure> {
    market(
        call,
        q.into(),
        LakeTable::Quotes,
        None,
        RowOrder::NewestFirst,
        false,
    )
    .await
}

#[utoipa::path(post, path = "/v1/snapshots/{snapshot_id}/query", tag = "time travel",
    params(("snapshot_id" = i64, Path, description = "An Iceberg snapshot id of the table")),
    responses((status = 200, description = "Rows as of the snapshot, newest first", body = crate::schema::MarketPage),
              (status = 404, description = "The table has no such snapshot", body = crate::schema::ErrorEnvelope)),
    security(("api_key" = [])))]
pub async fn snapshot_query(
    call: Call,
    Path(snapshot_id): Path<String>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Response, Failure> {
    let snapshot_id: i64 = snapshot_id
        .parse()
        .map_err(|_| Failure::invalid("snapshot_id", "must be an integer snapshot id"))?;
    let (table, q) = market_request(body)?;
    market(
        call,
        q,
        table,
        Some(snapshot_id),
        RowOrder::NewestFirst,
        false,
    )
    .await
}

#[utoipa::path(post, path = "/v1/replay", tag = "replay",
    responses((status = 200, description = "Rows of the range in timestamp order, one page; continue with the cursor", body = crate::schema::MarketPage)),
    security(("api_key" = [])))]
pub async fn replay_page(
    call: Call,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Response, Failure> {
    let (table, q) = market_request(body)?;
    if q.start_time.is_none() {
        return Err(Failure::invalid("start_time", "a replay needs a start"));
    }
    if q.end_time.is_none() {
        return Err(Failure::invalid("end_time", "a replay needs an end"));
    }
    market(call, q, table, None, RowOrder::OldestFirst, false).await
}

/// A price or quantity bound: decimal text read exactly, or a JSON number taken to 8
/// decimal places; not negative, and within `decimal(18,8)`.
fn bound(field: &str, value: &Option<serde_json::Value>) -> Result<Option<i64>, Failure> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => params::decimal(field, Some(s)),
        Some(serde_json::Value::Number(n)) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if !(0.0..1e10).contains(&x) {
                return Err(Failure::invalid(
                    field,
                    "must be at least 0 and below 10000000000",
                ));
            }
            Ok(Some((x * 1e8).round() as i64))
        }
        Some(_) => Err(Failure::invalid(
            field,
            "must be a decimal string or a number",
        )),
    }
}

/// Answers one page of `q` from `table`, at `pinned` or the current snapshot, in `order`;
/// `live` merges the live tail.
pub(super) async fn market(
    call: Call,
    q: MarketQuery,
    table: LakeTable,
    pinned: Option<i64>,
    order: RowOrder,
    live: bool,
) -> Result<Response, Failure> {
    call.require(Scope::Read)?;
    let s = call.s.clone();
    let format = call.format(q.format.as_deref())?;
    let symbols = params::symbols("symbols", &q.symbols, 100)?;
    let exchanges = params::exchanges("exchanges", &q.exchanges, 20)?;
    let (start_us, end_us) = params::range(
        q.start_time.as_deref(),
        q.end_time.as_deref(),
        exchanges.first().map(String::as_str),
    )?;
    let limit = params::limit("limit", q.limit, 1000, s.config.max_query_limit)?;
    let names = ["min_price", "max_price", "min_quantity", "max_quantity"];
    let mut bounds = [None; 4];
    for ((slot, name), value) in bounds.iter_mut().zip(names).zip(&q.bounds) {
        *slot = bound(name, value)?;
    }
    let filter = MarketFilter {
        symbols,
        exchanges,
        start_us,
        end_us,
        min_price: bounds[0],
        max_price: bounds[1],
        min_quantity: bounds[2],
        max_quantity: bounds[3],
        fields: q.fields.clone(),
        order,
        after: None,
        limit,
    };
    // Everything but the page size decides the rows a cursor walks.
    let unpaged = MarketFilter {
        limit: 0,
        ..filter.clone()
    };
    let fp = cursor::fingerprint(&[
        table.name(),
        if live { "live" } else { "lake" },
        &format!("{unpaged:?}"),
    ]);
    let mut filter = filter;
    let asked = params::pin(q.as_of.as_deref(), q.snapshot.as_deref())?;
    let mut pin = match (pinned, asked) {
        (None, asked) => asked,
        (Some(id), Pin::Current) => Pin::Id(id),
        (Some(id), asked) => Pin::All(vec![Pin::Id(id), asked]),
    };
    if live && pin != Pin::Current {
        return Err(Failure::invalid(
            if q.as_of.is_some() {
                "as_of"
            } else {
                "snapshot"
            },
            "time travel reads the lake alone: ask /v1/trades or /v1/quotes",
        ));
    }
    if let Some(text) = &q.cursor {
        let c = cursor::decode(params::cursor(text)?, fp)?;
        if pinned.is_some() && c.snapshot != pinned {
            return Err(cursor::mismatch("this cursor belongs to another snapshot"));
        }
        // The cursor's snapshot continues the walk, whatever pinned its first page.
        pin = c.snapshot.map_or(Pin::Current, Pin::Id);
        filter.after = Some(c.after);
    }
    let tail = s.backends.tail.clone().filter(|_| live);
    let (page, receipt) = if let Some(tail) = tail {
        // The tail changes between commits: merged answers are never kept.
        let page = s
            .query(move |engine| async move {
                Ok(engine.market_with_tail(table, &filter, &tail).await?)
            })
            .await?;
        (Arc::new(Kept::new(page)), None)
    } else {
        let (page, receipt) = s
            .answer(
                table,
                pin,
                format!("{filter:?}"),
                |p: &MarketPage| p.batches.iter().map(|b| b.get_array_memory_size()).sum(),
                move |engine, snapshot| async move {
                    Ok(match table {
                        LakeTable::Quotes => engine.quotes(&filter, snapshot).await,
                        _ => engine.trades(&filter, snapshot).await,
                    }?)
                },
            )
            .await?;
        (page, Some(receipt))
    };
    let snapshot = receipt.as_ref().and_then(|r| r.snapshot_id);
    let meta = match &receipt {
        Some(r) => call.meta_of(r),
        None => call.meta(None),
    };
    let next_cursor = page
        .value
        .next
        .map(|after| cursor::encode(&Cursor { snapshot, after }, fp));
    let pagination = Pagination {
        limit,
        returned: page.value.rows(),
        has_more: next_cursor.is_some(),
        next_cursor,
    };
    if format == Format::Json {
        let data = page.json(|p| crate::format::encode(&p.batches, Format::Json))?;
        return Ok(respond::envelope(
            data,
            Some(if live {
                json!({ "pagination": pagination, "live": s.backends.tail.is_some() })
            } else {
                json!({ "pagination": pagination })
            }),
            &meta,
        ));
    }
    respond::table(
        format,
        &page.value.batches,
        Some(pagination),
        meta,
        table.name(),
    )
}
