//! Under degradation, expensive questions are refused first: from the configured level
//! on, SQL, replays, batched aggregations and market-data questions over a long time
//! range are answered 503 with Retry-After, while short questions go on being answered.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate};

use crate::ApiDegradation;
use crate::failure::Failure;
use crate::state::ApiState;

/// Paths whose every question is expensive.
const ALWAYS_EXPENSIVE: &[&str] = &[
    "/v1/sql",
    "/v1/replay",
    "/v1/aggregations",
    "/v1/ohlcv/batch",
];

pub async fn refuse_expensive(
    State(s): State<Arc<ApiState>>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(d) = &s.backends.degradation
        && let Some(refusal) = refusal(&s)
        && expensive(&req, d)
    {
        crate::metrics::degradation_refusal();
        return refusal.into_response();
    }
    next.run(req).await
}

/// The answer to an expensive question while the process is degraded at or beyond the
/// level that refuses them; None otherwise. (Flight SQL asks it too: all its questions
/// are SQL.)
pub(crate) fn refusal(s: &ApiState) -> Option<Failure> {
    let d = s.backends.degradation.as_ref()?;
    let level = d.pressure.level();
    (level >= d.refuse_from).then(|| {
        Failure::busy(
            format!(
                "K2 is degraded ({}): SQL, replays and questions over more than {} are refused until the pressure passes; retry later",
                level.as_str(),
                humantime::format_duration(d.long_range)
            ),
            d.retry_after.as_secs().max(1),
        )
    })
}

fn expensive(req: &Request, d: &ApiDegradation) -> bool {
    let path = req.uri().path();
    if ALWAYS_EXPENSIVE.iter().any(|p| path.starts_with(p)) {
        return true;
    }
    let query = req.uri().query().unwrap_or_default();
    let param = |names: &[&str]| {
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            names.contains(&k).then(|| instant(v)).flatten()
        })
    };
    match (
        param(&["start_time", "start_date"]),
        param(&["end_time", "end_date"]),
    ) {
        (Some(start), Some(end)) => end - start > d.long_range.as_secs() as i64,
        _ => false,
    }
}

/// Seconds since the epoch of an RFC 3339 time or a date (percent-encoded or not).
fn instant(value: &str) -> Option<i64> {
    let value = value
        .replace("%3A", ":")
        .replace("%3a", ":")
        .replace("%2B", "+");
    if let Ok(t) = DateTime::parse_from_rfc3339(&value) {
        return Some(t.timestamp());
    }
    let day = NaiveDate::parse_from_str(&value, "%Y-%m-%d").ok()?;
    Some(day.and_hms_opt(0, 0, 0)?.and_utc().timestamp())
}
