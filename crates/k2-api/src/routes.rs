//! The endpoints. Each handler validates its input (naming the field at fault), resolves the
//! snapshot it answers from, and runs its query through the gate on the query runtime.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Request, State as AxState};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, NaiveDate, Utc};
use k2_lake::LakeTable;
use k2_lake::query::{
    AggregateRequest, Bar, BarInterval, DailySummary, MarketFilter, MarketPage, QueryEngine,
    RowOrder,
};
use k2_lake::replay::{ReplayRequest, ReplaySpeed};
use k2_model::decimal::Decimal8;
use k2_model::exchange;
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Caller, Keys, Scope};
use crate::cache::{AnswerCache, Kept};
use crate::cursor::{self, Cursor};
use crate::format::Format;
use crate::limits::{Decision, QueryGate, RateLimiter, run_query};
use crate::present;
use crate::respond::{
    self, ApiJson, ApiQuery, CallerName, Failure, Meta, Pagination, RequestId, negotiate,
};
use crate::{ApiConfig, ApiError, Backends};

pub struct State {
    config: ApiConfig,
    keys: Keys,
    limiter: RateLimiter,
    ip_limiter: RateLimiter,
    gate: QueryGate,
    runtime: tokio::runtime::Handle,
    engine: Arc<QueryEngine>,
    backends: Backends,
    started: Instant,
    answers: AnswerCache,
    /// Slots of streamed replays.
    replays: Arc<tokio::sync::Semaphore>,
    /// Becomes true when the server begins to shut down.
    stop: tokio::sync::watch::Receiver<bool>,
}

type S = Arc<State>;

impl State {
    pub fn new(
        config: ApiConfig,
        keys: Keys,
        backends: Backends,
        runtime: tokio::runtime::Handle,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> S {
        Arc::new(State {
            replays: Arc::new(tokio::sync::Semaphore::new(config.max_replays)),
            stop,
            gate: QueryGate::new(
                config.max_concurrent_queries,
                config.max_queued,
                Duration::from_millis(config.queue_timeout_ms),
            ),
            engine: backends.engine.clone(),
            answers: AnswerCache::new(config.cache_mb.saturating_mul(1 << 20)),
            config,
            keys,
            limiter: RateLimiter::default(),
            ip_limiter: RateLimiter::default(),
            runtime,
            backends,
            started: Instant::now(),
        })
    }

    /// Runs `work` on the query runtime behind the gate.
    async fn query<T, F>(&self, work: impl FnOnce(Arc<QueryEngine>) -> F) -> Result<T, Failure>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, Failure>> + Send + 'static,
    {
        let permit = self.gate.enter().await.map_err(|r| match r {
            crate::limits::Refused::QueueFull => {
                Failure::busy("too many queries are running and waiting; retry shortly", 1)
            }
            crate::limits::Refused::Waited(d) => Failure::busy(
                format!(
                    "no query slot became free within {:.1}s; retry shortly",
                    d.as_secs_f64()
                ),
                1,
            ),
        })?;
        run_query(&self.runtime, permit, work(self.engine.clone()))
            .await
            .unwrap_or_else(|| Err(Failure::internal("the query task ended unexpectedly")))
    }
}

impl State {
    /// Answers `question` with `work` at the table's current snapshot (or at `pinned`),
    /// from memory when the same question was answered at the same snapshot (see
    /// [`AnswerCache`]). `weigh` estimates an answer's bytes.
    async fn answer<T, F>(
        &self,
        table: LakeTable,
        pinned: Option<i64>,
        question: String,
        weigh: impl FnOnce(&T) -> usize,
        work: impl FnOnce(Arc<QueryEngine>, Option<i64>) -> F,
    ) -> Result<(Arc<Kept<T>>, Option<i64>), Failure>
    where
        T: Send + Sync + 'static,
        F: Future<Output = Result<T, Failure>> + Send + 'static,
    {
        let snapshot = match pinned {
            Some(id) => Some(id),
            None => {
                // Table metadata is cached by the engine, so this is cheap; it runs on the
                // query runtime, where the engine's I/O belongs.
                let engine = self.engine.clone();
                self.runtime
                    .spawn(async move { engine.current_snapshot(table).await })
                    .await
                    .map_err(|_| Failure::internal("the snapshot lookup ended unexpectedly"))??
            }
        };
        let key = format!("{}|{question}@{snapshot:?}", table.name());
        if self.answers.enabled()
            && let Some(hit) = self.answers.get::<Kept<T>>(&key)
        {
            return Ok((hit, snapshot));
        }
        let value = Arc::new(Kept::new(
            self.query(move |engine| work(engine, snapshot)).await?,
        ));
        if self.answers.enabled() {
            // Its JSON encoding, kept once asked for, is about as large again.
            self.answers
                .put(key, value.clone(), 2 * weigh(&value.value));
        }
        Ok((value, snapshot))
    }
}

/// What every `/v1` handler starts from: the state, the caller (authenticated by the layer),
/// the request id, the request's headers (for `Accept`) and when the handler began.
pub struct Call {
    s: S,
    caller: Caller,
    id: RequestId,
    headers: HeaderMap,
    started: Instant,
}

impl FromRequestParts<S> for Call {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
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
    fn require(&self, scope: Scope) -> Result<(), Failure> {
        if self.caller.may(scope) {
            Ok(())
        } else {
            Err(Failure::new(
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                format!(
                    "the key '{}' lacks the '{}' scope",
                    self.caller.name,
                    scope.as_str()
                ),
            ))
        }
    }

    /// The answer's format: `param`, else `Accept`, else JSON.
    fn format(&self, param: Option<&str>) -> Result<Format, Failure> {
        negotiate(param, &self.headers)
    }

    fn meta(&self, snapshot_id: Option<i64>) -> Meta {
        Meta::new(&self.id, snapshot_id, self.started)
    }
}

pub fn router(state: S) -> Result<Router, ApiError> {
    let v1 = Router::new()
        .route("/v1/trades", get(trades))
        .route("/v1/quotes", get(quotes))
        .route("/v1/trades/recent", get(trades_recent))
        .route("/v1/quotes/recent", get(quotes_recent))
        .route("/v1/trades/query", post(trades_query))
        .route("/v1/quotes/query", post(quotes_query))
        .route("/v1/summary/{symbol}/{date}", get(summary))
        .route("/v1/ohlcv/batch", post(ohlcv_batch))
        .route("/v1/ohlcv/{timeframe}", get(ohlcv))
        .route("/v1/aggregations", post(aggregations))
        .route("/v1/symbols", get(symbols))
        .route("/v1/stats", get(stats))
        .route("/v1/snapshots", get(snapshots))
        .route("/v1/snapshots/{snapshot_id}/query", post(snapshot_query))
        .route("/v1/replay", post(replay))
        .route("/v1/replay/stream", get(replay_stream))
        .route("/v1/replay/ws", get(replay_ws))
        .route("/v1/sql", post(sql))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    let public = Router::new()
        .route("/health", get(health))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(crate::docs::openapi_json))
        .route("/docs", get(crate::docs::page))
        .route_layer(middleware::from_fn_with_state(state.clone(), ip_limit));
    let cors = cors(&state.config)?;
    let body_limit = state.config.body_limit_bytes;
    let mut app = v1
        .merge(public)
        .fallback(|| async { Failure::not_found("no such endpoint; see /openapi.json") })
        .with_state(state)
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(
            tower_http::compression::CompressionLayer::new()
                .gzip(true)
                .zstd(true),
        );
    if let Some(cors) = cors {
        app = app.layer(cors);
    }
    Ok(app.layer(middleware::from_fn(respond::observe)))
}

fn cors(config: &ApiConfig) -> Result<Option<tower_http::cors::CorsLayer>, ApiError> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if config.cors_origins.is_empty() {
        return Ok(None);
    }
    let origins = if config.cors_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let mut list = Vec::new();
        for o in &config.cors_origins {
            list.push(HeaderValue::from_str(o).map_err(|_| {
                ApiError::Config(format!("api.cors_origins: '{o}' is not a valid origin"))
            })?);
        }
        AllowOrigin::list(list)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
            .allow_headers([
                header::CONTENT_TYPE,
                header::ACCEPT,
                header::AUTHORIZATION,
                header::HeaderName::from_static("x-api-key"),
                respond::REQUEST_ID,
            ])
            .expose_headers([
                respond::REQUEST_ID,
                header::HeaderName::from_static("ratelimit-limit"),
                header::HeaderName::from_static("ratelimit-remaining"),
                header::HeaderName::from_static("ratelimit-reset"),
                header::RETRY_AFTER,
                header::HeaderName::from_static("x-next-cursor"),
                header::HeaderName::from_static("x-snapshot-id"),
                header::HeaderName::from_static("x-record-count"),
            ])
            .max_age(Duration::from_secs(600)),
    ))
}

// ---------------------------------------------------------------------------------------
// Keys and rate limits

fn client_ip(req: &Request, trust_forwarded: bool) -> String {
    if trust_forwarded
        && let Some(first) = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
        && let Ok(ip) = first.trim().parse::<std::net::IpAddr>()
    {
        return ip.to_string();
    }
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".into(), |c| c.0.ip().to_string())
}

fn rate_headers(response: &mut Response, d: &Decision) {
    let h = response.headers_mut();
    h.insert("ratelimit-limit", HeaderValue::from(d.limit));
    h.insert("ratelimit-remaining", HeaderValue::from(d.remaining));
    h.insert("ratelimit-reset", HeaderValue::from(d.reset_s));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{};w={}",
        d.limit,
        (f64::from(d.limit) / d.rate_per_second).ceil() as u64
    )) {
        h.insert("ratelimit-policy", v);
    }
}

fn limited(d: &Decision, whose: &str) -> Response {
    metrics::counter!("k2_api_rate_limited_total", "by" => whose.to_string()).increment(1);
    let mut r = Failure {
        retry_after_s: Some(d.retry_after_s),
        ..Failure::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "rate limit of {} requests per second (burst {}) exceeded; retry after {}s",
                d.rate_per_second, d.limit, d.retry_after_s
            ),
        )
    }
    .into_response();
    rate_headers(&mut r, d);
    r
}

/// The address's bucket, for requests that carry no valid key.
fn check_ip(s: &State, req: &Request) -> Result<Decision, Box<Response>> {
    let ip = client_ip(req, s.config.trust_forwarded_for);
    let d = s
        .ip_limiter
        .check(&ip, s.config.ip_rate_per_second, s.config.ip_burst);
    if d.allowed {
        Ok(d)
    } else {
        Err(Box::new(limited(&d, "address")))
    }
}

async fn authenticate(AxState(s): AxState<S>, mut req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            req.headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(|v| v.trim().to_string())
        });
    let Some(presented) = presented else {
        if let Err(r) = check_ip(&s, &req) {
            return *r;
        }
        metrics::counter!("k2_api_auth_failures_total", "reason" => "missing").increment(1);
        let mut r = Failure::new(
            StatusCode::UNAUTHORIZED,
            "missing_key",
            "this endpoint needs an API key in X-API-Key (or Authorization: Bearer)",
        )
        .into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    };
    let Some(caller) = s.keys.check(&presented).cloned() else {
        if let Err(r) = check_ip(&s, &req) {
            return *r;
        }
        metrics::counter!("k2_api_auth_failures_total", "reason" => "invalid").increment(1);
        return Failure::new(
            StatusCode::FORBIDDEN,
            "invalid_key",
            "the API key is not valid",
        )
        .into_response();
    };
    let d = s
        .limiter
        .check(&caller.name, caller.rate_per_second, caller.burst);
    if !d.allowed {
        let mut r = limited(&d, "key");
        r.extensions_mut().insert(CallerName(caller.name));
        return r;
    }
    let name = caller.name.clone();
    req.extensions_mut().insert(caller);
    let mut response = next.run(req).await;
    rate_headers(&mut response, &d);
    response.extensions_mut().insert(CallerName(name));
    response
}

async fn ip_limit(AxState(s): AxState<S>, req: Request, next: Next) -> Response {
    match check_ip(&s, &req) {
        Err(r) => *r,
        Ok(d) => {
            let mut response = next.run(req).await;
            rate_headers(&mut response, &d);
            response
        }
    }
}

// ---------------------------------------------------------------------------------------
// Validation

fn symbol(field: &str, s: &str) -> Result<String, Failure> {
    let ok = !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/' | b':'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(Failure::invalid(
            field,
            "a symbol is 1 to 32 letters, digits or . - _ / :",
        ))
    }
}

fn exchange_code(field: &str, s: &str) -> Result<String, Failure> {
    if !s.is_empty() && s.len() <= 16 && s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(s.to_ascii_uppercase())
    } else {
        Err(Failure::invalid(
            field,
            "an exchange is 1 to 16 letters or digits",
        ))
    }
}

/// RFC 3339, or a date meaning the start of that trading day on `exchange` (UTC without one).
fn instant(field: &str, text: &str, exchange: Option<&str>) -> Result<i64, Failure> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_micros());
    }
    let date: NaiveDate = text.parse().map_err(|_| {
        Failure::invalid(
            field,
            format!("'{text}' is neither an RFC 3339 time nor a YYYY-MM-DD date"),
        )
    })?;
    Ok(exchange::day_bounds_us(exchange.map_or(chrono_tz::UTC, exchange::time_zone), date).0)
}

fn date(field: &str, text: &str) -> Result<NaiveDate, Failure> {
    text.parse()
        .map_err(|_| Failure::invalid(field, format!("'{text}' is not a YYYY-MM-DD date")))
}

fn limit(field: &str, value: Option<usize>, default: usize, max: usize) -> Result<usize, Failure> {
    let v = value.unwrap_or(default);
    if v == 0 || v > max {
        return Err(Failure::invalid(
            field,
            format!("must be between 1 and {max}"),
        ));
    }
    Ok(v)
}

fn price(field: &str, value: &Option<serde_json::Value>) -> Result<Option<i64>, Failure> {
    let text = match value {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        Some(_) => {
            return Err(Failure::invalid(
                field,
                "must be a decimal number or string",
            ));
        }
    };
    let d: Decimal8 = text
        .parse()
        .map_err(|e| Failure::invalid(field, format!("'{text}': {e}")))?;
    if d.is_negative() {
        return Err(Failure::invalid(field, "must not be negative"));
    }
    Ok(Some(d.units()))
}

/// A validated time range: start not before the lookback, end after start.
fn range(
    s: &State,
    start: Option<&str>,
    end: Option<&str>,
    exchange: Option<&str>,
) -> Result<(Option<i64>, Option<i64>), Failure> {
    let start_us = start
        .map(|t| instant("start_time", t, exchange))
        .transpose()?;
    let end_us = end.map(|t| instant("end_time", t, exchange)).transpose()?;
    if let (Some(a), Some(b)) = (start_us, end_us)
        && b <= a
    {
        return Err(Failure::invalid("end_time", "must be after start_time"));
    }
    let earliest =
        Utc::now().timestamp_micros() - i64::from(s.config.max_lookback_days) * 86_400_000_000;
    if let Some(a) = start_us
        && a < earliest
    {
        return Err(Failure::invalid(
            "start_time",
            format!(
                "reaches back more than {} days (api.max_lookback_days)",
                s.config.max_lookback_days
            ),
        ));
    }
    Ok((start_us, end_us))
}

fn list_of(
    field: &str,
    values: &[String],
    max: usize,
    check: fn(&str, &str) -> Result<String, Failure>,
) -> Result<Vec<String>, Failure> {
    if values.len() > max {
        return Err(Failure::invalid(field, format!("at most {max} values")));
    }
    values.iter().map(|v| check(field, v)).collect()
}

// ---------------------------------------------------------------------------------------
// Trades and quotes

/// Filters of `GET /v1/trades` and `GET /v1/quotes`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Symbol, e.g. `BHP`.
    symbol: Option<String>,
    /// Exchange, e.g. `ASX`.
    exchange: Option<String>,
    /// Inclusive start: RFC 3339, or a date (the start of that trading day).
    start_time: Option<String>,
    /// Exclusive end: RFC 3339, or a date.
    end_time: Option<String>,
    /// Rows per page (default 100, at most `api.max_limit`).
    limit: Option<usize>,
    /// `pagination.next_cursor` of the previous page.
    cursor: Option<String>,
    /// json (default), csv, parquet or arrow.
    format: Option<String>,
}

/// A trades or quotes query: `POST /v1/trades/query`, `/v1/quotes/query`,
/// `/v1/snapshots/{id}/query` and `/v1/replay`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarketQuery {
    /// `trades` or `quotes` (snapshot queries and replay only).
    #[serde(default)]
    data_type: Option<String>,
    /// Any of these symbols (at most 100; empty: all).
    #[serde(default)]
    symbols: Vec<String>,
    /// Any of these exchanges (at most 20; empty: all).
    #[serde(default)]
    exchanges: Vec<String>,
    start_time: Option<String>,
    end_time: Option<String>,
    /// Columns to return (default: the usual set); any column of the table.
    #[serde(default)]
    fields: Vec<String>,
    /// Inclusive price and quantity bounds, as decimal strings or numbers (trades only).
    #[schema(value_type = Option<String>)]
    min_price: Option<serde_json::Value>,
    #[schema(value_type = Option<String>)]
    max_price: Option<serde_json::Value>,
    #[schema(value_type = Option<String>)]
    min_quantity: Option<serde_json::Value>,
    #[schema(value_type = Option<String>)]
    max_quantity: Option<serde_json::Value>,
    /// Rows per page (default 1000; at most `api.max_query_limit`).
    limit: Option<usize>,
    cursor: Option<String>,
    format: Option<String>,
}

#[utoipa::path(get, path = "/v1/trades", tag = "market", params(ListParams),
    responses((status = 200, description = "Trades, newest first, one page", body = DataEnvelope),
              (status = 422, description = "A parameter is invalid", body = ErrorEnvelope)),
    security(("api_key" = [])))]
async fn trades(call: Call, ApiQuery(p): ApiQuery<ListParams>) -> Result<Response, Failure> {
    list(call, p, LakeTable::Trades).await
}

#[utoipa::path(get, path = "/v1/quotes", tag = "market", params(ListParams),
    responses((status = 200, description = "Quotes, newest first, one page", body = DataEnvelope),
              (status = 422, description = "A parameter is invalid", body = ErrorEnvelope)),
    security(("api_key" = [])))]
async fn quotes(call: Call, ApiQuery(p): ApiQuery<ListParams>) -> Result<Response, Failure> {
    list(call, p, LakeTable::Quotes).await
}

async fn list(call: Call, p: ListParams, table: LakeTable) -> Result<Response, Failure> {
    let q = list_query(&call, p)?;
    market(call, q, table, None, RowOrder::NewestFirst, false).await
}

fn list_query(call: &Call, p: ListParams) -> Result<MarketQuery, Failure> {
    let s = &call.s;
    Ok(MarketQuery {
        symbols: p.symbol.into_iter().collect(),
        exchanges: p.exchange.into_iter().collect(),
        start_time: p.start_time,
        end_time: p.end_time,
        limit: Some(limit(
            "limit",
            p.limit,
            s.config.default_limit,
            s.config.max_limit,
        )?),
        cursor: p.cursor,
        format: p.format,
        ..Default::default()
    })
}

#[utoipa::path(get, path = "/v1/trades/recent", tag = "market", params(ListParams),
    responses((status = 200, description = "Trades, newest first, over the lake and the live tail: events seen by the feeds but not yet committed are included, each event once", body = DataEnvelope),
              (status = 422, description = "A parameter is invalid", body = ErrorEnvelope)),
    security(("api_key" = [])))]
async fn trades_recent(call: Call, ApiQuery(p): ApiQuery<ListParams>) -> Result<Response, Failure> {
    recent(call, p, LakeTable::Trades).await
}

#[utoipa::path(get, path = "/v1/quotes/recent", tag = "market", params(ListParams),
    responses((status = 200, description = "Quotes, newest first, over the lake and the live tail", body = DataEnvelope),
              (status = 422, description = "A parameter is invalid", body = ErrorEnvelope)),
    security(("api_key" = [])))]
async fn quotes_recent(call: Call, ApiQuery(p): ApiQuery<ListParams>) -> Result<Response, Failure> {
    recent(call, p, LakeTable::Quotes).await
}

async fn recent(call: Call, p: ListParams, table: LakeTable) -> Result<Response, Failure> {
    let q = list_query(&call, p)?;
    market(call, q, table, None, RowOrder::NewestFirst, true).await
}

#[utoipa::path(post, path = "/v1/trades/query", tag = "market", request_body = MarketQuery,
    responses((status = 200, description = "Trades, newest first, one page", body = DataEnvelope),
              (status = 422, description = "A field is invalid", body = ErrorEnvelope)),
    security(("api_key" = [])))]
async fn trades_query(call: Call, ApiJson(q): ApiJson<MarketQuery>) -> Result<Response, Failure> {
    market(
        call,
        q,
        LakeTable::Trades,
        None,
        RowOrder::NewestFirst,
        false,
    )
    .await
}

#[utoipa::path(post, path = "/v1/quotes/query", tag = "market", request_body = MarketQuery,
    responses((status = 200, description = "Quotes, newest first, one page", body = DataEnvelope),
              (status = 422, description = "A field is invalid", body = ErrorEnvelope)),
    security(("api_key" = [])))]
async fn quotes_query(call: Call, ApiJson(q): ApiJson<MarketQuery>) -> Result<Response, Failure> {
    market(
        call,
        q,
        LakeTable::Quotes,
        None,
        RowOrder::NewestFirst,
        false,
    )
    .await
}

#[utoipa::path(post, path = "/v1/snapshots/{snapshot_id}/query", tag = "time travel",
    params(("snapshot_id" = i64, Path, description = "An Iceberg snapshot id of the table")),
    request_body = MarketQuery,
    responses((status = 200, description = "Rows as of the snapshot", body = DataEnvelope),
              (status = 404, description = "No such snapshot", body = ErrorEnvelope)),
    security(("api_key" = [])))]
async fn snapshot_query(
    call: Call,
    Path(snapshot_id): Path<String>,
    ApiJson(q): ApiJson<MarketQuery>,
) -> Result<Response, Failure> {
    let snapshot_id: i64 = snapshot_id
        .parse()
        .map_err(|_| Failure::invalid("snapshot_id", "must be an integer snapshot id"))?;
    let table = data_type(q.data_type.as_deref())?;
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

#[utoipa::path(post, path = "/v1/replay", tag = "market", request_body = MarketQuery,
    responses((status = 200, description = "Rows of the range in timestamp order, one page; continue with the cursor", body = DataEnvelope),
              (status = 422, description = "A field is invalid", body = ErrorEnvelope)),
    security(("api_key" = [])))]
async fn replay(call: Call, ApiJson(q): ApiJson<MarketQuery>) -> Result<Response, Failure> {
    let table = data_type(q.data_type.as_deref())?;
    if q.start_time.is_none() {
        return Err(Failure::invalid("start_time", "a replay needs a start"));
    }
    if q.end_time.is_none() {
        return Err(Failure::invalid("end_time", "a replay needs an end"));
    }
    market(call, q, table, None, RowOrder::OldestFirst, false).await
}

/// Parameters of a streamed replay (`GET /v1/replay/stream`, `GET /v1/replay/ws`).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReplayParams {
    /// `trades` (default) or `quotes`.
    data_type: Option<String>,
    /// Comma-separated symbols, e.g. `BHP,RIO` (at most 100; none: all).
    symbols: Option<String>,
    /// Comma-separated exchanges (at most 20; none: all).
    exchanges: Option<String>,
    /// Inclusive start: RFC 3339, or a date (the start of that trading day). Required.
    start_time: Option<String>,
    /// Exclusive end: RFC 3339, or a date. Required.
    end_time: Option<String>,
    /// `max` (default: as fast as the client takes rows), or a factor of the recorded pace
    /// from the first row: `1` as it happened, `10` ten times faster, `0.5` half speed.
    speed: Option<String>,
    /// Comma-separated columns (default: every column of the table).
    fields: Option<String>,
    /// Replay the table as of this snapshot (default: the current one when it starts).
    snapshot_id: Option<i64>,
}

#[utoipa::path(get, path = "/v1/replay/stream", tag = "market", params(ReplayParams),
    responses((status = 200, description = "The range's rows in timestamp order across symbols, one JSON object per line (NDJSON), streamed and paced; a failure after the first rows ends the stream with an {\"error\": …} line and a broken body", content_type = "application/x-ndjson", body = String),
              (status = 422, description = "A parameter is invalid", body = ErrorEnvelope),
              (status = 503, description = "As many replays as the server runs at once are running", body = ErrorEnvelope)),
    security(("api_key" = [])))]
async fn replay_stream(
    call: Call,
    ApiQuery(p): ApiQuery<ReplayParams>,
) -> Result<Response, Failure> {
    let started = start_replay(&call, p).await?;
    Ok(crate::stream::ndjson_response(started))
}

#[utoipa::path(get, path = "/v1/replay/ws", tag = "market", params(ReplayParams),
    responses((status = 101, description = "WebSocket: one row per text message (the NDJSON line), in timestamp order and paced; closed with 1000 when complete, 1011 with the reason when it failed, 1001 when the server shuts down"),
              (status = 426, description = "Not a WebSocket upgrade request", body = ErrorEnvelope),
              (status = 422, description = "A parameter is invalid", body = ErrorEnvelope)),
    security(("api_key" = [])))]
async fn replay_ws(
    call: Call,
    ApiQuery(p): ApiQuery<ReplayParams>,
    mut req: Request,
) -> Result<Response, Failure> {
    let accept = crate::stream::websocket_accept(req.headers())?;
    let upgrade = req
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
        .ok_or_else(|| Failure::internal("this connection cannot be upgraded"))?;
    let started = start_replay(&call, p).await?;
    Ok(crate::stream::websocket_response(accept, upgrade, started))
}

/// Validates a streamed replay, takes a replay slot and starts it (its first rows ready).
async fn start_replay(call: &Call, p: ReplayParams) -> Result<crate::stream::Started, Failure> {
    call.require(Scope::Read)?;
    let s = &call.s;
    let table = data_type(p.data_type.as_deref())?;
    let split = |v: &Option<String>| -> Vec<String> {
        v.as_deref()
            .map(|t| {
                t.split(',')
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let symbols = list_of("symbols", &split(&p.symbols), 100, symbol)?;
    let exchanges = list_of("exchanges", &split(&p.exchanges), 20, exchange_code)?;
    let (Some(start), Some(end)) = (p.start_time.as_deref(), p.end_time.as_deref()) else {
        let field = if p.start_time.is_none() {
            "start_time"
        } else {
            "end_time"
        };
        return Err(Failure::invalid(field, "a replay needs a start and an end"));
    };
    let (start_us, end_us) = range(
        s,
        Some(start),
        Some(end),
        exchanges.first().map(String::as_str),
    )?;
    let speed = ReplaySpeed::parse(p.speed.as_deref().unwrap_or("max"))
        .map_err(|e| Failure::invalid("speed", e.to_string()))?;
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
        start_us: start_us.expect("a start was given"),
        end_us: end_us.expect("an end was given"),
        fields: split(&p.fields),
        speed,
        snapshot: p.snapshot_id,
        options: Default::default(),
    };
    crate::stream::start(
        &s.runtime,
        s.engine.clone(),
        request,
        permit,
        s.stop.clone(),
    )
    .await
}

fn data_type(text: Option<&str>) -> Result<LakeTable, Failure> {
    match text.unwrap_or("trades") {
        "trades" => Ok(LakeTable::Trades),
        "quotes" => Ok(LakeTable::Quotes),
        other => Err(Failure::invalid(
            "data_type",
            format!("'{other}' is not trades or quotes"),
        )),
    }
}

async fn market(
    call: Call,
    q: MarketQuery,
    table: LakeTable,
    pinned: Option<i64>,
    order: RowOrder,
    live: bool,
) -> Result<Response, Failure> {
    call.require(Scope::Read)?;
    let s = &call.s;
    let format = call.format(q.format.as_deref())?;
    let symbols = list_of("symbols", &q.symbols, 100, symbol)?;
    let exchanges = list_of("exchanges", &q.exchanges, 20, exchange_code)?;
    let (start_us, end_us) = range(
        s,
        q.start_time.as_deref(),
        q.end_time.as_deref(),
        exchanges.first().map(String::as_str),
    )?;
    let limit = limit("limit", q.limit, 1000, s.config.max_query_limit)?;
    let filter = MarketFilter {
        symbols,
        exchanges,
        start_us,
        end_us,
        min_price: price("min_price", &q.min_price)?,
        max_price: price("max_price", &q.max_price)?,
        min_quantity: price("min_quantity", &q.min_quantity)?,
        max_quantity: price("max_quantity", &q.max_quantity)?,
        fields: q.fields.clone(),
        order,
        after: None,
        limit,
    };
    if table == LakeTable::Quotes
        && let Some(f) = [
            ("min_price", filter.min_price),
            ("max_price", filter.max_price),
            ("min_quantity", filter.min_quantity),
            ("max_quantity", filter.max_quantity),
        ]
        .iter()
        .find(|(_, v)| v.is_some())
    {
        return Err(Failure::invalid(
            f.0,
            "price and quantity bounds apply to trades only",
        ));
    }
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
    let mut snapshot = pinned;
    if let Some(text) = &q.cursor {
        let c = cursor::decode(text, &fp).map_err(|m| Failure::invalid("cursor", m))?;
        if pinned.is_some() && c.snapshot != pinned {
            return Err(Failure::invalid(
                "cursor",
                "this cursor belongs to another snapshot",
            ));
        }
        snapshot = c.snapshot;
        filter.after = Some(c.after);
    }
    let tail = s.backends.tail.clone().filter(|_| live);
    let (page, snapshot) = if let Some(tail) = tail {
        // The tail changes between commits: merged answers are never kept.
        let page = s
            .query(move |engine| async move {
                Ok(engine.market_with_tail(table, &filter, &tail).await?)
            })
            .await?;
        (Arc::new(Kept::new(page)), None)
    } else {
        s.answer(
            table,
            snapshot,
            format!("{filter:?}"),
            |p: &MarketPage| p.batches.iter().map(|b| b.get_array_memory_size()).sum(),
            move |engine, snapshot| async move {
                Ok(match table {
                    LakeTable::Quotes => engine.quotes(&filter, snapshot).await,
                    _ => engine.trades(&filter, snapshot).await,
                }?)
            },
        )
        .await?
    };
    let next_cursor = page
        .value
        .next
        .map(|after| cursor::encode(&Cursor { snapshot, after }, &fp));
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
            &call.meta(snapshot),
        ));
    }
    respond::table(
        format,
        &page.value.batches,
        Some(pagination),
        call.meta(snapshot),
        table.name(),
    )
}

// ---------------------------------------------------------------------------------------
// Summaries, bars, aggregations

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SummaryParams {
    /// The exchange (its calendar decides the trading day).
    exchange: Option<String>,
}

#[utoipa::path(get, path = "/v1/summary/{symbol}/{date}", tag = "analytics",
    params(("symbol" = String, Path), ("date" = String, Path, description = "Trading day, YYYY-MM-DD"), SummaryParams),
    responses((status = 200, description = "Open, high, low, close, volume, trade count and VWAP of the day", body = DataEnvelope),
              (status = 404, description = "No trades that day", body = ErrorEnvelope)),
    security(("api_key" = [])))]
async fn summary(
    call: Call,
    Path((sym, day)): Path<(String, String)>,
    ApiQuery(p): ApiQuery<SummaryParams>,
) -> Result<Response, Failure> {
    call.require(Scope::Read)?;
    let s = &call.s;
    let sym = symbol("symbol", &sym)?;
    let day = date("date", &day)?;
    let exchange = p
        .exchange
        .as_deref()
        .map(|x| exchange_code("exchange", x))
        .transpose()?;
    let (found, snapshot) = s
        .answer(
            LakeTable::Trades,
            None,
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
        call.meta(snapshot),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BarParams {
    symbol: String,
    exchange: Option<String>,
    /// First trading day, YYYY-MM-DD.
    start_date: String,
    /// Last trading day (default: `start_date`).
    end_date: Option<String>,
    format: Option<String>,
}

/// One request of `POST /v1/ohlcv/batch`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BarRequest {
    symbol: String,
    /// 1m, 5m, 15m, 30m, 1h or 1d.
    timeframe: String,
    exchange: Option<String>,
    start_date: String,
    end_date: Option<String>,
}

const MAX_BATCH: usize = 10;

struct Bars {
    symbol: String,
    exchange: Option<String>,
    interval: BarInterval,
    from: NaiveDate,
    to: NaiveDate,
}

fn bars_request(s: &State, r: &BarRequest, prefix: &str) -> Result<Bars, Failure> {
    let f = |name: &str| format!("{prefix}{name}");
    let interval = BarInterval::parse(&r.timeframe).map_err(|_| {
        Failure::invalid(
            &f("timeframe"),
            format!("'{}' is not one of 1m, 5m, 15m, 30m, 1h, 1d", r.timeframe),
        )
    })?;
    let from = date(&f("start_date"), &r.start_date)?;
    let to = r
        .end_date
        .as_deref()
        .map(|d| date(&f("end_date"), d))
        .transpose()?
        .unwrap_or(from);
    if to < from {
        return Err(Failure::invalid(
            &f("end_date"),
            "must not be before start_date",
        ));
    }
    if (to - from).num_days() >= i64::from(s.config.max_range_days) {
        return Err(Failure::invalid(
            &f("end_date"),
            format!(
                "the range is longer than {} days (api.max_range_days)",
                s.config.max_range_days
            ),
        ));
    }
    Ok(Bars {
        symbol: symbol(&f("symbol"), &r.symbol)?,
        exchange: r
            .exchange
            .as_deref()
            .map(|x| exchange_code(&f("exchange"), x))
            .transpose()?,
        interval,
        from,
        to,
    })
}

#[utoipa::path(get, path = "/v1/ohlcv/{timeframe}", tag = "analytics",
    params(("timeframe" = String, Path, description = "1m, 5m, 15m, 30m, 1h or 1d"), BarParams),
    responses((status = 200, description = "Bars of the symbol over the trading days", body = DataEnvelope),
              (status = 422, description = "A parameter is invalid", body = ErrorEnvelope)),
    security(("api_key" = [])))]
async fn ohlcv(
    call: Call,
    Path(timeframe): Path<String>,
    ApiQuery(p): ApiQuery<BarParams>,
) -> Result<Response, Failure> {
    call.require(Scope::Read)?;
    let s = &call.s;
    let format = call.format(p.format.as_deref())?;
    let b = bars_request(
        s,
        &BarRequest {
            symbol: p.symbol,
            timeframe,
            exchange: p.exchange,
            start_date: p.start_date,
            end_date: p.end_date,
        },
        "",
    )?;
    let (bars, snapshot) = s
        .answer(
            LakeTable::Trades,
            None,
            format!(
                "ohlcv {} {:?} {} {} {:?}",
                b.symbol, b.interval, b.from, b.to, b.exchange
            ),
            |bars: &Vec<Bar>| bars.len() * std::mem::size_of::<Bar>(),
            move |engine, snapshot| async move {
                Ok(engine
                    .ohlcv(
                        &b.symbol,
                        b.interval,
                        b.from,
                        b.to,
                        b.exchange.as_deref(),
                        snapshot,
                    )
                    .await?)
            },
        )
        .await?;
    let rows = |bars: &Vec<Bar>| -> Vec<present::BarRow> {
        bars.iter().map(present::BarRow::from).collect()
    };
    if format == Format::Json {
        let data = bars.json(|b| respond::json_rows(&rows(b)))?;
        return Ok(respond::envelope(data, None, &call.meta(snapshot)));
    }
    respond::rows(
        format,
        &rows(&bars.value),
        None,
        call.meta(snapshot),
        "ohlcv",
    )
}

/// `POST /v1/ohlcv/batch`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BarBatch {
    /// At most 10 requests; all their bars together at most `api.max_query_limit`.
    requests: Vec<BarRequest>,
}

#[utoipa::path(post, path = "/v1/ohlcv/batch", tag = "analytics", request_body = BarBatch,
    responses((status = 200, description = "One result per request, failures reported per item", body = DataEnvelope),
              (status = 422, description = "The batch is invalid", body = ErrorEnvelope)),
    security(("api_key" = [])))]
async fn ohlcv_batch(call: Call, ApiJson(batch): ApiJson<BarBatch>) -> Result<Response, Failure> {
    call.require(Scope::Read)?;
    let s = &call.s;
    if batch.requests.is_empty() || batch.requests.len() > MAX_BATCH {
        return Err(Failure::invalid(
            "requests",
            format!("between 1 and {MAX_BATCH} requests"),
        ));
    }
    let items: Vec<(String, String, Result<Bars, Failure>)> = batch
        .requests
        .iter()
        .enumerate()
        .map(|(i, r)| {
            (
                r.symbol.clone(),
                r.timeframe.clone(),
                bars_request(s, r, &format!("requests[{i}].")),
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
                    Ok(b) => engine
                        .ohlcv(
                            &b.symbol,
                            b.interval,
                            b.from,
                            b.to,
                            b.exchange.as_deref(),
                            snapshot,
                        )
                        .await
                        .map_err(Failure::from)
                        .and_then(|bars| {
                            used += bars.len();
                            if used > budget {
                                Err(Failure::new(
                                    StatusCode::UNPROCESSABLE_ENTITY,
                                    "row_budget_exceeded",
                                    format!(
                                        "the batch's bars exceed {budget} in all; ask for fewer"
                                    ),
                                ))
                            } else {
                                Ok(bars)
                            }
                        }),
                };
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
    /// Any of vwap, twap, ohlcv, trade_count, volume_profile.
    metrics: Vec<String>,
    /// 1m, 5m, 15m, 30m, 1h or 1d.
    interval: String,
    start_time: String,
    end_time: String,
    exchange: Option<String>,
    format: Option<String>,
}

const METRICS: [&str; 5] = ["vwap", "twap", "ohlcv", "trade_count", "volume_profile"];

#[utoipa::path(post, path = "/v1/aggregations", tag = "analytics", request_body = AggregationQuery,
    responses((status = 200, description = "Per symbol and interval, the metrics asked for", body = DataEnvelope),
              (status = 422, description = "A field is invalid", body = ErrorEnvelope)),
    security(("api_key" = [])))]
async fn aggregations(
    call: Call,
    ApiJson(q): ApiJson<AggregationQuery>,
) -> Result<Response, Failure> {
    call.require(Scope::Read)?;
    let s = &call.s;
    let format = call.format(q.format.as_deref())?;
    if q.symbols.is_empty() {
        return Err(Failure::invalid("symbols", "at least one symbol"));
    }
    let symbols = list_of("symbols", &q.symbols, 50, symbol)?;
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
    let interval = BarInterval::parse(&q.interval).map_err(|_| {
        Failure::invalid(
            "interval",
            format!("'{}' is not one of 1m, 5m, 15m, 30m, 1h, 1d", q.interval),
        )
    })?;
    let exchange = q
        .exchange
        .as_deref()
        .map(|x| exchange_code("exchange", x))
        .transpose()?;
    let (start_us, end_us) = range(
        s,
        Some(&q.start_time),
        Some(&q.end_time),
        exchange.as_deref(),
    )?;
    let (start_us, end_us) = (start_us.expect("given"), end_us.expect("given"));
    if end_us - start_us > i64::from(s.config.max_range_days) * 86_400_000_000 {
        return Err(Failure::invalid(
            "end_time",
            format!(
                "the range is longer than {} days (api.max_range_days)",
                s.config.max_range_days
            ),
        ));
    }
    let want = |m: &str| q.metrics.iter().any(|x| x == m);
    let profile = want("volume_profile");
    let request = AggregateRequest {
        symbols,
        exchange,
        interval,
        start_us,
        end_us,
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
    let meta = call.meta(snapshot);
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

// ---------------------------------------------------------------------------------------
// Catalogue

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SymbolParams {
    exchange: Option<String>,
}

#[utoipa::path(get, path = "/v1/symbols", tag = "catalogue", params(SymbolParams),
    responses((status = 200, description = "Symbols with trades or quotes", body = DataEnvelope)),
    security(("api_key" = [])))]
async fn symbols(call: Call, ApiQuery(p): ApiQuery<SymbolParams>) -> Result<Response, Failure> {
    call.require(Scope::Read)?;
    let s = &call.s;
    let exchange = p
        .exchange
        .as_deref()
        .map(|x| exchange_code("exchange", x))
        .transpose()?;
    let list = s
        .query(move |engine| async move { Ok(engine.symbols(exchange.as_deref()).await?) })
        .await?;
    Ok(respond::value(list, call.meta(None)))
}

#[utoipa::path(get, path = "/v1/stats", tag = "catalogue",
    responses((status = 200, description = "Per table: rows, current snapshot, last commit and its age", body = DataEnvelope)),
    security(("api_key" = [])))]
async fn stats(call: Call) -> Result<Response, Failure> {
    call.require(Scope::Read)?;
    let s = &call.s;
    let tables = s
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
        json!({"tables": tables, "uptime_seconds": s.started.elapsed().as_secs()}),
        call.meta(None),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SnapshotParams {
    /// trades (default), quotes or companies.
    table: Option<String>,
    /// The newest N (default 100, at most 1000).
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/v1/snapshots", tag = "time travel", params(SnapshotParams),
    responses((status = 200, description = "Snapshots of the table, newest first", body = DataEnvelope)),
    security(("api_key" = [])))]
async fn snapshots(call: Call, ApiQuery(p): ApiQuery<SnapshotParams>) -> Result<Response, Failure> {
    call.require(Scope::Read)?;
    let s = &call.s;
    let name = p.table.as_deref().unwrap_or("trades");
    let table = LakeTable::parse(name).ok_or_else(|| {
        Failure::invalid(
            "table",
            format!("'{name}' is not trades, quotes or companies"),
        )
    })?;
    let limit = limit("limit", p.limit, 100, 1000)?;
    let mut snaps = s
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

// ---------------------------------------------------------------------------------------
// SQL

/// `POST /v1/sql`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlQuery {
    /// One read-only statement over `trades`, `quotes`, `reference_data.companies`.
    sql: String,
    format: Option<String>,
}

#[utoipa::path(post, path = "/v1/sql", tag = "sql", request_body = SqlQuery,
    responses((status = 200, description = "The result, at most query.max_rows rows; a longer one is cut there and says so (`meta.truncated_at`, header `x-truncated-at`)", body = DataEnvelope),
              (status = 400, description = "Not read-only, or not valid SQL", body = ErrorEnvelope),
              (status = 403, description = "The key lacks the sql scope", body = ErrorEnvelope),
              (status = 504, description = "The query ran out of time", body = ErrorEnvelope)),
    security(("api_key" = [])))]
async fn sql(call: Call, ApiJson(q): ApiJson<SqlQuery>) -> Result<Response, Failure> {
    call.require(Scope::Sql)?;
    let s = &call.s;
    let format = call.format(q.format.as_deref())?;
    if q.sql.trim().is_empty() {
        return Err(Failure::invalid("sql", "is empty"));
    }
    let text = q.sql;
    let answer = s
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

// ---------------------------------------------------------------------------------------
// Operations

#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "The process is alive")))]
async fn health(AxState(s): AxState<S>) -> Response {
    axum::Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": s.started.elapsed().as_secs(),
    }))
    .into_response()
}

#[utoipa::path(get, path = "/health/ready", tag = "operations",
    responses((status = 200, description = "Every dependency answered"),
              (status = 503, description = "A dependency failed; the body says which")))]
async fn ready(AxState(s): AxState<S>) -> Response {
    let checks = s.backends.checks.iter().map(|(name, check)| async move {
        let t = Instant::now();
        let outcome = tokio::time::timeout(Duration::from_secs(2), check()).await;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let (ok, detail) = match outcome {
            Ok(Ok(d)) => (true, d),
            Ok(Err(e)) => (false, e),
            Err(_) => (false, "no answer within 2 s".to_string()),
        };
        metrics::gauge!("k2_api_dependency_up", "dependency" => *name).set(if ok {
            1.0
        } else {
            0.0
        });
        json!({"name": name, "ok": ok, "latency_ms": (ms * 1e3).round() / 1e3, "detail": detail})
    });
    let results = futures::future::join_all(checks).await;
    let all_ok = results.iter().all(|r| r["ok"] == json!(true));
    let body = json!({"status": if all_ok { "ready" } else { "not_ready" }, "checks": results});
    let status = if all_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format")))]
async fn metrics_text(AxState(s): AxState<S>) -> Response {
    match &s.backends.metrics {
        Some(h) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => Failure::not_found("this process records no metrics").into_response(),
    }
}

/// The data envelope.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DataEnvelope {
    /// The answer: rows, or an object.
    #[schema(value_type = Object)]
    data: serde_json::Value,
    /// List answers: `limit`, `returned`, `has_more`, `next_cursor`.
    #[schema(value_type = Option<Object>)]
    pagination: Option<serde_json::Value>,
    /// `request_id`, `snapshot_id` (the table snapshot answered from), `elapsed_ms`.
    #[schema(value_type = Object)]
    meta: serde_json::Value,
}

/// The error envelope.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorEnvelope {
    /// `code` (stable, machine-readable), `message`, and `field` when one input is at fault.
    #[schema(value_type = Object)]
    error: serde_json::Value,
    /// `request_id`.
    #[schema(value_type = Object)]
    meta: serde_json::Value,
}

pub(crate) mod doc {
    pub use super::{
        __path_aggregations, __path_health, __path_metrics_text, __path_ohlcv, __path_ohlcv_batch,
        __path_quotes, __path_quotes_query, __path_quotes_recent, __path_ready, __path_replay,
        __path_replay_stream, __path_replay_ws, __path_snapshot_query, __path_snapshots,
        __path_sql, __path_stats, __path_summary, __path_symbols, __path_trades,
        __path_trades_query, __path_trades_recent,
    };
    pub use super::{
        AggregationQuery, BarBatch, BarRequest, DataEnvelope, ErrorEnvelope, MarketQuery, SqlQuery,
    };
}
