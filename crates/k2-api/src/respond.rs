//! The one data envelope and the formats of an answer.
//!
//! Data: `{"data": …, "pagination": {…}, "meta": {"request_id", "snapshot_id", …}}`.
//! Errors: `{"error": {"code", "message", "field"?}, "meta": {"request_id"}}`. Tabular
//! answers also come as CSV, Parquet or Arrow IPC (the `format` parameter, or `Accept`); then
//! pagination and meta travel in `X-Next-Cursor`, `X-Snapshot-Id`, `X-Record-Count`.

use std::time::Instant;

use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use crate::failure::Failure;
use crate::format::{self, Format};
use crate::middleware::RequestId;

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
    /// The log positions the snapshot covers (`topic/partition` → next offset): with the
    /// snapshot id, what someone else needs to ask the same question of the same rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_offsets: Option<std::collections::BTreeMap<String, u64>>,
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
            log_offsets: None,
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
