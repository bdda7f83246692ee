//! Times on the command line: RFC 3339, or a date meaning the start of that trading day in
//! the exchange's time zone.

use anyhow::Context;
use chrono::{DateTime, NaiveDate};
use k2_model::exchange;

/// A time given as RFC 3339, or a date meaning the start of that trading day.
pub fn parse_time(text: &str, exchange: Option<&str>) -> anyhow::Result<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_micros());
    }
    let date: NaiveDate = text
        .parse()
        .with_context(|| format!("'{text}' is neither an RFC 3339 time nor a YYYY-MM-DD date"))?;
    Ok(day_bounds(date, exchange).0)
}

/// A trading day's [start, end) in microseconds, in the exchange's time zone (UTC when
/// no exchange is named).
pub fn day_bounds(date: NaiveDate, exchange: Option<&str>) -> (i64, i64) {
    exchange::day_bounds_us(exchange.map_or(chrono_tz::UTC, exchange::time_zone), date)
}
