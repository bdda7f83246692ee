//! Exchange calendars: the time zone whose local date is an exchange's trading day.
//!
//! K2 stores UTC, but a "day" (daily summary, 1d bars, `date` parameters) is the
//! exchange's trading day in its own time zone: an ASX session opening at 10:00 Sydney
//! time is 23:00 UTC the previous day, and a UTC date would split it.

use chrono::{NaiveDate, TimeZone};
use chrono_tz::Tz;

/// Time zone of an exchange's trading day. Crypto venues trade around the clock and
/// close their day at UTC midnight; unknown venues default to UTC.
pub fn time_zone(exchange: &str) -> Tz {
    match exchange.to_ascii_uppercase().as_str() {
        "ASX" => chrono_tz::Australia::Sydney,
        "NYSE" | "NASDAQ" => chrono_tz::America::New_York,
        "LSE" => chrono_tz::Europe::London,
        _ => chrono_tz::UTC,
    }
}

/// The trading day of a UTC instant (microseconds) on an exchange.
pub fn trading_day(exchange_tz: Tz, utc_us: i64) -> NaiveDate {
    let secs = utc_us.div_euclid(1_000_000);
    let nanos = (utc_us.rem_euclid(1_000_000) * 1000) as u32;
    exchange_tz
        .timestamp_opt(secs, nanos)
        .single()
        .map(|t| t.date_naive())
        .unwrap_or(NaiveDate::MIN)
}

/// The UTC instants `[start, end)` (microseconds) covering a trading day.
pub fn day_bounds_us(exchange_tz: Tz, day: NaiveDate) -> (i64, i64) {
    let start_of = |d: NaiveDate| {
        // Midnight can fall in a daylight-saving gap in a few zones; the earliest valid
        // instant of the day is then its start.
        (0..=3)
            .find_map(|h| {
                exchange_tz
                    .from_local_datetime(&d.and_hms_opt(h, 0, 0).expect("valid hour"))
                    .earliest()
            })
            .map(|t| t.timestamp_micros())
            .expect("a day has a valid hour")
    };
    (
        start_of(day),
        start_of(day.succ_opt().expect("date in range")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asx_day_starts_the_previous_utc_evening() {
        let tz = time_zone("asx");
        let day = NaiveDate::from_ymd_opt(2014, 3, 10).unwrap();
        let (start, end) = day_bounds_us(tz, day);
        // 2014-03-10 00:00 AEDT = 2014-03-09 13:00 UTC.
        assert_eq!(start, 1_394_370_000_000_000);
        assert_eq!(end - start, 86_400_000_000);
        assert_eq!(trading_day(tz, start), day);
        assert_eq!(trading_day(tz, end - 1), day);
        assert_eq!(trading_day(tz, end), day.succ_opt().unwrap());
        // A DST-ending day in Sydney lasts 25 hours.
        let (s, e) = day_bounds_us(tz, NaiveDate::from_ymd_opt(2014, 4, 6).unwrap());
        assert_eq!(e - s, 25 * 3_600_000_000);
    }
}
