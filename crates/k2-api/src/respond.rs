//! The one data envelope, the one error envelope, formats, and what every request leaves
//! behind: its request id, one access-log line and its RED metrics.
//!
//! Data: `{"data": …, "pagination": {…}, "meta": {"request_id", "snapshot_id", …}}`.
//! Errors: `{"error": {"code", "message", "field"?}, "meta": {"request_id"}}`. Tabular
//! answers also come as CSV, Parquet or Arrow IPC (the `format` parameter, or `Accept`); then
//! pagination and meta travel in `X-Next-Cursor`, `X-Snapshot-Id`, `X-Record-Count`.

use std::time::Instant;

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, request::Parts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use k2_lake::LakeError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::format::{self, Format};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id: the client's `X-Request-Id` when it is sane, else a new one.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// Who made the request (set by the auth layer, read by the access log).
#[derive(Clone, Debug)]
pub struct CallerName(pub String);

/// An error answer.
#[derive(Debug)]
pub struct Failure {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    pub retry_after_s: Option<u64>,
}

impl Failure {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after_s: None,
        }
    }

    /// A value that parsed but is not acceptable: 422 naming the field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Failure {
        Failure {
            field: Some(field.to_string()),
            ..Failure::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_parameter",
                format!("{field}: {}", message.into()),
            )
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn busy(message: impl Into<String>, retry_after_s: u64) -> Failure {
        Failure {
            retry_after_s: Some(retry_after_s),
            ..Failure::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message)
        }
    }

    pub fn internal(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// A failure of the engine; `user_sql` when the SQL text came from the caller (its
    /// planning errors are then the caller's to fix).
    pub fn from_lake(e: LakeError, user_sql: bool) -> Failure {
        match e {
            LakeError::InvalidArgument(m) => {
                Failure::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_parameter", m)
            }
            LakeError::NotFound(m) => Failure::not_found(format!("{m} not found")),
            LakeError::Timeout(d) => Failure::new(
                StatusCode::GATEWAY_TIMEOUT,
                "query_timeout",
                format!(
                    "the query exceeded its {:.1}s limit; narrow it",
                    d.as_secs_f64()
                ),
            ),
            e @ LakeError::MemoryLimit { .. } => Failure::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "memory_limit",
                e.to_string(),
            ),
            LakeError::NotReadOnly(m) => Failure::new(
                StatusCode::BAD_REQUEST,
                "not_read_only",
                format!("only read-only queries are allowed: {m}"),
            ),
            LakeError::Query(m) if user_sql => {
                Failure::new(StatusCode::BAD_REQUEST, "sql_error", m)
            }
            e if e.is_retryable() => Failure {
                retry_after_s: Some(1),
                ..Failure::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    e.to_string(),
                )
            },
            e => {
                tracing::error!(error = %e, "query failed");
                Failure::internal("the query failed; the server log has the details")
            }
        }
    }
}

/// Engine failures of K2's own queries (the SQL text is K2's, so planning errors are ours).
impl From<LakeError> for Failure {
    fn from(e: LakeError) -> Self {
        Failure::from_lake(e, false)
    }
}

impl From<format::Error> for Failure {
    fn from(e: format::Error) -> Self {
        tracing::error!(error = %e, "encoding an answer");
        Failure::internal("encoding the answer failed")
    }
}

/// The error envelope without its request id (the observe layer adds it).
#[derive(Clone, Debug)]
struct ErrorBody {
    code: &'static str,
    message: String,
    field: Option<String>,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        if let Some(s) = self.retry_after_s {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(s));
        }
        response.extensions_mut().insert(ErrorBody {
            code: self.code,
            message: self.message,
            field: self.field,
        });
        response
    }
}

fn error_json(body: &ErrorBody, request_id: &str) -> Vec<u8> {
    let mut error = json!({"code": body.code, "message": body.message});
    if let Some(f) = &body.field {
        error["field"] = json!(f);
    }
    serde_json::to_vec(&json!({"error": error, "meta": {"request_id": request_id}}))
        .expect("an error envelope serialises")
}

/// Pagination of a list answer.
#[derive(Clone, Debug, Serialize)]
pub struct Pagination {
    pub limit: usize,
    pub returned: usize,
    pub has_more: bool,
    /// Pass as `cursor` to get the next page.
    pub next_cursor: Option<String>,
}

/// What every data answer says about itself.
#[derive(Clone, Debug, Serialize)]
pub struct Meta {
    pub request_id: String,
    /// The table snapshot the answer was read from (None: the table has no snapshot yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<i64>,
    pub elapsed_ms: f64,
    /// A SQL answer cut at `query.max_rows`: that many rows were kept of more.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated_at: Option<usize>,
}

impl Meta {
    pub fn new(request_id: &RequestId, snapshot_id: Option<i64>, started: Instant) -> Meta {
        Meta {
            request_id: request_id.0.clone(),
            snapshot_id,
            elapsed_ms: (started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
            truncated_at: None,
        }
    }
}

/// The format a request asks for: its `format` value, else its `Accept` header, else JSON.
pub fn negotiate(param: Option<&str>, headers: &HeaderMap) -> Result<Format, Failure> {
    if let Some(p) = param {
        return Format::parse(p).ok_or_else(|| {
            Failure::invalid(
                "format",
                format!("'{p}' is not one of json, csv, parquet, arrow"),
            )
        });
    }
    let Some(accept) = headers.get(axum::http::header::ACCEPT) else {
        return Ok(Format::Json);
    };
    let accept = accept.to_str().unwrap_or("");
    let mut wildcard = false;
    for media in accept.split(',') {
        let media = media.split(';').next().unwrap_or("").trim();
        if let Some(f) = Format::from_media_type(media) {
            return Ok(f);
        }
        wildcard |= media == "*/*" || media == "application/*" || media.is_empty();
    }
    if wildcard {
        Ok(Format::Json)
    } else {
        Err(Failure::new(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            format!(
                "Accept '{accept}' names no format served here: application/json, text/csv, \
                 application/vnd.apache.parquet, application/vnd.apache.arrow.stream"
            ),
        ))
    }
}

/// A tabular answer in `format`; `name` names the download.
pub fn table(
    format: Format,
    batches: &[arrow::array::RecordBatch],
    pagination: Option<Pagination>,
    meta: Meta,
    name: &str,
) -> Result<Response, Failure> {
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    if format == Format::Json {
        let data = format::encode(batches, Format::Json)?;
        let extra = pagination.map(|p| serde_json::json!({ "pagination": p }));
        let mut response = envelope(&data, extra, &meta);
        if let Some(max) = meta.truncated_at {
            response
                .headers_mut()
                .insert("x-truncated-at", HeaderValue::from(max));
        }
        return Ok(response);
    }
    let bytes = format::encode(batches, format)?;
    let mut response = ([(CONTENT_TYPE, format.content_type())], bytes).into_response();
    let h = response.headers_mut();
    let ext = match format {
        Format::Csv => "csv",
        Format::Parquet => "parquet",
        _ => "arrows",
    };
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}.{ext}\"")) {
        h.insert(CONTENT_DISPOSITION, v);
    }
    h.insert("x-record-count", HeaderValue::from(rows));
    if let Some(id) = meta.snapshot_id {
        h.insert("x-snapshot-id", HeaderValue::from(id));
    }
    if let Some(max) = meta.truncated_at {
        h.insert("x-truncated-at", HeaderValue::from(max));
    }
    if let Some(c) = pagination.and_then(|p| p.next_cursor)
        && let Ok(v) = HeaderValue::from_str(&c)
    {
        h.insert("x-next-cursor", v);
    }
    Ok(response)
}

/// Typed rows: JSON as they serialise, other formats through Arrow.
pub fn rows<T: Serialize>(
    format: Format,
    rows: &[T],
    extra: Option<serde_json::Value>,
    meta: Meta,
    name: &str,
) -> Result<Response, Failure> {
    if format == Format::Json {
        return Ok(envelope(&json_rows(rows)?, extra, &meta));
    }
    table(format, &format::to_batches(rows)?, None, meta, name)
}

/// Rows as a JSON array, written straight to bytes (a JSON value tree of every row would
/// cost more than the query behind a kept answer).
pub fn json_rows<T: Serialize>(rows: &[T]) -> Result<Vec<u8>, Failure> {
    let mut out = Vec::with_capacity(128 * rows.len() + 2);
    serde_json::to_writer(&mut out, rows)
        .map_err(|e| Failure::internal(format!("encoding the answer: {e}")))?;
    Ok(out)
}

/// The data envelope around `data` (JSON already encoded): `{"data": …, <extra's
/// members>, "meta": …}`.
pub fn envelope(data: &[u8], extra: Option<serde_json::Value>, meta: &Meta) -> Response {
    let mut body = Vec::with_capacity(data.len() + 256);
    body.extend_from_slice(b"{\"data\":");
    body.extend_from_slice(data);
    if let Some(serde_json::Value::Object(extra)) = extra {
        for (k, v) in extra {
            body.push(b',');
            serde_json::to_writer(&mut body, &k).expect("a key serialises");
            body.push(b':');
            serde_json::to_writer(&mut body, &v).expect("a value serialises");
        }
    }
    body.extend_from_slice(b",\"meta\":");
    serde_json::to_writer(&mut body, meta).expect("meta serialises");
    body.push(b'}');
    ([(CONTENT_TYPE, Format::Json.content_type())], body).into_response()
}

/// A JSON answer in the data envelope.
pub fn value(data: impl Serialize, meta: Meta) -> Response {
    axum::Json(json!({"data": data, "meta": meta})).into_response()
}

/// `Json` whose rejections are K2 errors: 413 over the body limit (counted on the bytes
/// read, chunked bodies included), 415 without a JSON content type, 422 naming the field
/// of a value of the wrong type, 400 for malformed JSON.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Failure;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(r) => Err(json_rejection(r)),
        }
    }
}

fn json_rejection(r: JsonRejection) -> Failure {
    let status = r.status();
    let text = r.body_text();
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => Failure::new(
            status,
            "payload_too_large",
            "the request body is larger than the server accepts (api.body_limit_bytes)",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Failure::new(
            status,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        ),
        StatusCode::UNPROCESSABLE_ENTITY => {
            let field = text
                .split(": ")
                .nth(1)
                .filter(|f| !f.contains(' '))
                .map(str::to_string);
            Failure {
                field,
                ..Failure::new(status, "invalid_parameter", text)
            }
        }
        _ => Failure::bad_request(text),
    }
}

/// `Query` whose rejections are K2 errors (400 naming the parameter).
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(r) => Err(query_rejection(r)),
        }
    }
}

fn query_rejection(r: QueryRejection) -> Failure {
    Failure::new(StatusCode::BAD_REQUEST, "bad_request", r.body_text())
}

/// The outermost layer: request id in and out, the error envelope completed, one access-log
/// line and the RED metrics of the route.
pub async fn observe(mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        })
        .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_string);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method: &'static str = match req.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        _ => "other",
    };
    let path = req.uri().path().to_string();
    let client = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    req.extensions_mut().insert(RequestId(id.clone()));
    metrics::gauge!("k2_api_requests_in_flight").increment(1.0);
    let mut response = next.run(req).await;
    metrics::gauge!("k2_api_requests_in_flight").decrement(1.0);

    let status = response.status();
    if let Some(body) = response.extensions_mut().remove::<ErrorBody>() {
        response = with_json_body(response, error_json(&body, &id));
    } else if status.as_u16() >= 400 && !is_json(&response) {
        // Errors raised outside the handlers (unknown route, wrong method, layers).
        let body = ErrorBody {
            code: match status {
                StatusCode::NOT_FOUND => "not_found",
                StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
                StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
                s if s.is_server_error() => "internal",
                _ => "bad_request",
            },
            message: status
                .canonical_reason()
                .unwrap_or("request failed")
                .to_string(),
            field: None,
        };
        response = with_json_body(response, error_json(&body, &id));
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    let caller = response
        .extensions()
        .get::<CallerName>()
        .map_or("-", |c| c.0.as_str())
        .to_string();
    let elapsed = started.elapsed();
    let status_label = status.as_str().to_string();
    metrics::counter!("k2_api_requests_total", "route" => route.clone(), "method" => method, "status" => status_label).increment(1);
    metrics::histogram!("k2_api_request_duration_seconds", "route" => route.clone(), "method" => method)
        .record(elapsed.as_secs_f64());
    tracing::info!(
        target: "k2_api::access",
        request_id = %id,
        method,
        route = %route,
        path = %path,
        status = status.as_u16(),
        duration_ms = elapsed.as_secs_f64() * 1e3,
        client = %client,
        key = %caller,
        "request"
    );
    response
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

fn with_json_body(response: Response, body: Vec<u8>) -> Response {
    let (mut parts, _) = response.into_parts();
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}
