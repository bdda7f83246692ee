//! Summaries, bars and aggregations of trades. A "day" is the exchange's trading day in
//! its own time zone; prices, volumes and averages are exact decimal text.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use k2_lake::LakeTable;
use k2_lake::query::{AggregateRequest, Bar, BarInterval, DailySummary};
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::call::Call;
use crate::config::Scope;
use crate::extract::{ApiJson, ApiQuery};
use crate::failure::Failure;
use crate::format::Format;
use crate::params;
use crate::present;
use crate::present::{BarRow, SummaryRow};
use crate::respond::{self, Meta};
use crate::schema::{AggregationsAnswer, Answer, BarBatchItem, ErrorEnvelope};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SummaryParams {
    /// The exchange code (its calendar decides the trading day; UTC without one).
    exchange: Option<String>,
    /// Time travel: the snapshot current at this instant (RFC 3339, or a date: its start
    /// in UTC).
    as_of: Option<String>,
    /// Time travel: a snapshot id, or a tag's name (not with `as_of`).
    snapshot: Option<String>,
}

#[utoipa::path(get, path = "/v1/summary/{symbol}/{date}", tag = "analytics",
    params(("symbol" = String, Path, description = "Symbol, e.g. `BHP`"),
           ("date" = String, Path, description = "Trading day, YYYY-MM-DD"), SummaryParams),
    responses((status = 200, description = "Open, high, low, close, volume, trade count and VWAP of the day", body = Answer<SummaryRow>),
              (status = 404, description = "No trades of the symbol that day", body = ErrorEnvelope)),
    security(("api_key" = [])))]
pub async fn summary(
    call: Call,
    Path((sym, day)): Path<(String, String)>,
    ApiQuery(p): ApiQuery<SummaryParams>,
) -> Result<Response, Failure> {
    call.require(Scope::Read)?;
    let s = &call.s;
    let sym = params::symbol("symbol", &sym)?;
    let day = params::date("date", &day)?;
    let exchange = p
        .exchange
        .as_deref()
        .map(|x| params::exchange_code("exchange", x))
        .transpose()?;
    let pin = params::pin(p.as_of.as_deref(), p.snapshot.as_deref())?;
    let (found, receipt) = s
        .answer(
            LakeTable::Trades,
            pin,
            format!("summary {sym} {day} {exchange:?}"),
            |_| std::mem::size_of::<DailySummary>() + 64,
            move |engine, snapshot| async move {
                engine
                    .daily_summary(&sym, day, exchange.as_deref(), snapshot)
                    .await?
                    .ok_or_else(|| Failure::not_found(format!("no trades of {sym} on {day}")))
            },
        )
        .await?;
    Ok(respond::value(
        present::SummaryRow::from(&found.value),
        call.meta_of(&receipt),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BarParams {
    /// Symbol, e.g. `BHP`.
    #[param(required = true)]
    symbol: Option<String>,
    /// The exchange code (its calendar decides the days; UTC without one).
    exchange: Option<String>,
    /// First trading day, YYYY-MM-DD.
    #[param(required = true)]
    start_date: Option<String>,
    /// Last trading day (default: `start_date`); before `start_date`: no bars.
    end_date: Option<String>,
    /// `json` (default), `csv`, `parquet` or `arrow`.
    format: Option<String>,
    /// Time travel: the snapshot current at this instant (RFC 3339, or a date: its start
    /// in UTC).
    as_of: Option<String>,
    /// Time travel: a snapshot id, or a tag's name (not with `as_of`).
    snapshot: Option<String>,
}

/// One request of `POST /v1/ohlcv/batch`. Its values are checked as those of
/// `GET /v1/ohlcv/{timeframe}` are, but a bad one fails this item alone, in its place in
/// the answer.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BarRequest {
    /// Symbol, e.g. `BHP`.
    symbol: String,
    /// `1m`, `5m`, `15m`, `30m`, `1h` or `1d`.
    timeframe: String,
    /// The exchange code.
    exchange: Option<String>,
    /// First trading day, YYYY-MM-DD.
    start_date: String,
    /// Last trading day (default: `start_date`; before it: no bars).
    end_date: Option<String>,
}

/// What a bars request asks, validated.
struct Bars {
    symbol: String,
    exchange: Option<String>,
    interval: BarInterval,
    from: NaiveDate,
    to: NaiveDate,
}

impl Bars {
    /// The bars asked for, at `snapshot`.
    async fn query(
        &self,
        engine: &k2_lake::query::QueryEngine,
        snapshot: Option<i64>,
    ) -> k2_lake::Result<Vec<Bar>> {
        engine
            .ohlcv(
                &self.symbol,
                self.interval,
                self.from,
                self.to,
                self.exchange.as_deref(),
                snapshot,
            )
            .await
    }
}

fn interval(field: &str, text: &str) -> Result<BarInterval, Failure> {
    BarInterval::parse(text).map_err(|_| {
        Failure::invalid(
            field,
            format!("'{text}' is not one of 1m, 5m, 15m, 30m, 1h, 1d"),
        )
    })
}

fn bars_request(r: &BarRequest, prefix: &str) -> Result<Bars, Failure> {
    let f = |name: &str| format!("{prefix}{name}");
    let from = params::date(&f("start_date"), &r.start_date)?;
    Ok(Bars {
        symbol: params::symbol(&f("symbol"), &r.symbol)?,
        exchange: r
            .exchange
            .as_deref()
            .map(|x| params::exchange_code(&f("exchange"), x))
            .transpose()?,
        interval: interval(&f("timeframe"), &r.timeframe)?,
        from,
        to: r
            .end_date
            .as_deref()
            .map(|d| params::date(&f("end_date"), d))
            .transpose()?
            .unwrap_or(from),
    })
}

#[utoipa::path(get, path = "/v1/ohlcv/{timeframe}", tag = "analytics",
    params(("timeframe" = String, Path, description = "`1m`, `5m`, `15m`, `30m`, `1h` or `1d`"), BarParams),
    responses((status = 200, description = "Bars of the symbol over the trading days, oldest first", body = Answer<Vec<BarRow>>)),
    security(("api_key" = [])))]
pub async fn ohlcv(
    call: Call,
    Path(timeframe): Path<String>,
    ApiQuery(p): ApiQuery<BarParams>,
) -> Result<Response, Failure> {
    call.require(Scope::Read)?;
    let s = &call.s;
    let format = call.format(p.format.as_deref())?;
    let pin = params::pin(p.as_of.as_deref(), p.snapshot.as_deref())?;
    let symbol = p
        .symbol
        .ok_or_else(|| Failure::invalid("symbol", "is required"))?;
    let start_date = p
        .start_date
        .ok_or_else(|| Failure::invalid("start_date", "is required"))?;
    let b = bars_request(
        &BarRequest {
            symbol,
            timeframe,
            exchange: p.exchange,
            start_date,
            end_date: p.end_date,
        },
        "",
    )?;
    let (bars, receipt) = s
        .answer(
            LakeTable::Trades,
            pin,
            format!(
                "ohlcv {} {:?} {} {} {:?}",
                b.symbol, b.interval, b.from, b.to, b.exchange
            ),
            |bars: &Vec<Bar>| bars.len() * std::mem::size_of::<Bar>(),
            move |engine, snapshot| async move { Ok(b.query(&engine, snapshot).await?) },
        )
        .await?;
    let rows = |bars: &Vec<Bar>| -> Vec<present::BarRow> {
        bars.iter().map(present::BarRow::from).collect()
    };
    if format == Format::Json {
        let data = bars.json(|b| respond::json_rows(&rows(b)))?;
        return Ok(respond::envelope(data, None, &call.meta_of(&receipt)));
    }
    respond::rows(
        format,
        &rows(&bars.value),
        None,
        call.meta_of(&receipt),
        "ohlcv",
    )
}

/// `POST /v1/ohlcv/batch`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BarBatch {
    /// 1 to 10 requests; all their bars together at most `api.max_query_limit` (an item
    /// past that budget fails alone).
    requests: Vec<BarRequest>,
}

/// Requests in a batch, at most.
pub const MAX_BATCH: usize = 10;

#[utoipa::path(post, path = "/v1/ohlcv/batch", tag = "analytics", request_body = BarBatch,
    responses((status = 200, description = "One result per request, in order; an item that fails says why in its place", body = Answer<Vec<BarBatchItem>>)),
    security(("api_key" = [])))]
pub async fn ohlcv_batch(
    call: Call,
    ApiJson(batch): ApiJson<BarBatch>,
) -> Result<Response, Failure> {
    call.require(Scope::Read)?;
    let s = &call.s;
    if batch.requests.is_empty() || batch.requests.len() > MAX_BATCH {
        return Err(Failure::invalid(
            "requests",
            format!("between 1 and {MAX_BATCH} requests"),
        ));
    }
    // An item that asks for something impossible fails in its place; the rest answer.
    let items: Vec<(String, String, Result<Bars, Failure>)> = batch
        .requests
        .iter()
        .enumerate()
        .map(|(i, r)| {
            (
                r.symbol.clone(),
                r.timeframe.clone(),
                bars_request(r, &format!("requests[{i}].")),
            )
        })
        .collect();
    let budget = s.config.max_query_limit;
    let (results, snapshot) = s
        .query(move |engine| async move {
            let snapshot = engine.current_snapshot(LakeTable::Trades).await?;
            let mut used = 0usize;
            let mut out = Vec::with_capacity(items.len());
            for (i, (sym, tf, item)) in items.into_iter().enumerate() {
                let result = match item {
                    Err(f) => Err(f),
                    Ok(b) => b.query(&engine, snapshot).await.map_err(Failure::from),
                }
                .and_then(|bars| {
                    used += bars.len();
                    if used > budget {
                        Err(Failure::new(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "row_budget_exceeded",
                            format!("the batch's bars exceed {budget} in all; ask for fewer"),
                        ))
                    } else {
                        Ok(bars)
                    }
                });
                out.push(match result {
                    Ok(bars) => json!({"index": i, "symbol": sym, "timeframe": tf, "ok": true,
                        "data": bars.iter().map(present::BarRow::from).collect::<Vec<_>>()}),
                    Err(f) => json!({"index": i, "symbol": sym, "timeframe": tf, "ok": false,
                        "error": {"code": f.code, "message": f.message, "field": f.field}}),
                });
            }
            Ok((out, snapshot))
        })
        .await?;
    Ok(respond::value(results, call.meta(snapshot)))
}

/// `POST /v1/aggregations`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AggregationQuery {
    /// 1 to 50 symbols.
    symbols: Vec<String>,
    /// Any of `vwap`, `twap`, `ohlcv`, `trade_count`, `volume_profile`.
    metrics: Vec<String>,
    /// `1m`, `5m`, `15m`, `30m`, `1h` or `1d`.
    interval: String,
    /// Inclusive start: RFC 3339, or a date (the start of that trading day).
    start_time: String,
    /// Exclusive end: RFC 3339, or a date. An end not after the start answers nothing.
    end_time: String,
    /// The exchange code (its calendar places days and intervals; UTC without one).
    exchange: Option<String>,
    /// `json` (default), `csv`, `parquet` or `arrow`.
    format: Option<String>,
}

pub const METRICS: [&str; 5] = ["vwap", "twap", "ohlcv", "trade_count", "volume_profile"];

#[utoipa::path(post, path = "/v1/aggregations", tag = "analytics", request_body = AggregationQuery,
    responses((status = 200, description = "Per symbol and interval, the metrics asked for; the volume profile is cut at query.max_rows price levels and says so (`meta.truncated_at`)", body = AggregationsAnswer)),
    security(("api_key" = [])))]
pub async fn aggregations(
    call: Call,
    ApiJson(q): ApiJson<AggregationQuery>,
) -> Result<Response, Failure> {
    call.require(Scope::Read)?;
    let s = &call.s;
    let format = call.format(q.format.as_deref())?;
    if q.symbols.is_empty() {
        return Err(Failure::invalid("symbols", "at least one symbol"));
    }
    let symbols = params::symbols("symbols", &q.symbols, 50)?;
    if q.metrics.is_empty() {
        return Err(Failure::invalid(
            "metrics",
            format!("at least one of {}", METRICS.join(", ")),
        ));
    }
    for m in &q.metrics {
        if !METRICS.contains(&m.as_str()) {
            return Err(Failure::invalid(
                "metrics",
                format!("'{m}' is not one of {}", METRICS.join(", ")),
            ));
        }
    }
    let interval = interval("interval", &q.interval)?;
    let exchange = q
        .exchange
        .as_deref()
        .map(|x| params::exchange_code("exchange", x))
        .transpose()?;
    let (start_us, end_us) =
        params::range(Some(&q.start_time), Some(&q.end_time), exchange.as_deref())?;
    let want = |m: &str| q.metrics.iter().any(|x| x == m);
    let profile = want("volume_profile");
    let request = AggregateRequest {
        symbols,
        exchange,
        interval,
        start_us: start_us.expect("given"),
        end_us: end_us.expect("given"),
    };
    let (agg, snapshot) = s
        .query(move |engine| async move {
            let snapshot = engine.current_snapshot(LakeTable::Trades).await?;
            let agg = engine.aggregate(&request, profile, snapshot).await?;
            Ok((agg, snapshot))
        })
        .await?;
    let rows: Vec<serde_json::Value> = agg
        .rows
        .iter()
        .map(|r| {
            let full = present::AggregateRow::from(r);
            let mut v = serde_json::to_value(&full).expect("a row serialises");
            let obj = v.as_object_mut().expect("an object");
            if !want("ohlcv") {
                for k in ["open", "high", "low", "close", "volume"] {
                    obj.remove(k);
                }
            }
            for m in ["vwap", "twap", "trade_count"] {
                if !want(m) {
                    obj.remove(m);
                }
            }
            v
        })
        .collect();
    let levels: Vec<present::PriceLevelRow> = agg.levels.iter().map(Into::into).collect();
    let meta = Meta {
        truncated_at: agg.levels_truncated_at,
        ..call.meta(snapshot)
    };
    if format == Format::Json {
        let mut body = json!({"data": rows, "meta": meta});
        if profile {
            body["volume_profile"] = json!(levels);
        }
        return Ok(axum::Json(body).into_response());
    }
    if q.metrics.len() == 1 && profile {
        respond::rows(format, &levels, None, meta, "volume_profile")
    } else {
        respond::rows(format, &rows, None, meta, "aggregations")
    }
}
