//! What a request's values may be, stated once: each grammar is a regular expression the
//! OpenAPI document publishes as the parameter's `pattern` and the server checks with the
//! same expression, so the document and the server cannot disagree. A value outside its
//! grammar is refused with 422 naming the field; every value inside it is answered.

use std::sync::LazyLock;

use chrono::{DateTime, NaiveDate};
use k2_lake::LakeTable;
use k2_lake::query::Pin;
use k2_model::exchange;
use regex::Regex;

use crate::failure::Failure;

/// A symbol: 1 to 32 letters, digits or `. - _ / :` (`BHP`, `BTCUSDT`, `BTC/USD`).
pub const SYMBOL: &str = r"^[A-Za-z0-9._/:\-]{1,32}$";
/// An exchange code: 1 to 16 letters or digits, any case (`ASX`, `binance`).
pub const EXCHANGE: &str = r"^[A-Za-z0-9]{1,16}$";
/// Comma-separated symbols, at most 100.
pub const SYMBOL_LIST: &str = r"^[A-Za-z0-9._/:\-]{1,32}(,[A-Za-z0-9._/:\-]{1,32}){0,99}$";
/// Comma-separated exchange codes, at most 20.
pub const EXCHANGE_LIST: &str = r"^[A-Za-z0-9]{1,16}(,[A-Za-z0-9]{1,16}){0,19}$";
/// A trading day, in the years 1700 to 2259: the engine computes bars in nanoseconds,
/// which reach from 1677 to 2262.
pub const DATE: &str =
    r"^(1[7-9][0-9]{2}|2[01][0-9]{2}|22[0-5][0-9])-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$";
/// An instant: RFC 3339 (`2014-03-12T00:00:00Z`, any offset), or a date meaning the start
/// of that trading day in the exchange's time zone (UTC without an exchange); the years
/// of [`DATE`].
pub const INSTANT: &str = r"^(1[7-9][0-9]{2}|2[01][0-9]{2}|22[0-5][0-9])-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])([Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?([Zz]|[+\-]([01][0-9]|2[0-3]):[0-5][0-9]))?$";
/// A non-negative decimal that `decimal(18,8)` holds exactly.
pub const DECIMAL: &str = r"^[0-9]{1,10}(\.[0-9]{1,8})?$";
/// A replay's pace: `max`, or a factor of the recorded pace above 0 and at most 10^6
/// (`1`, `10`, `0.5`, optionally `x10`).
pub const SPEED: &str =
    r"^([mM][aA][xX]|[xX]?([1-9][0-9]{0,5}(\.[0-9]{1,6})?|1000000(\.0{1,6})?|0\.[0-9]{0,5}[1-9]))$";
/// A snapshot: its id, or a tag's name (`k2 snapshot tag`).
pub const SNAPSHOT: &str = r"^(-?[0-9]{1,19}|[A-Za-z0-9._\-]{1,128})$";
/// An opaque page cursor: what `pagination.next_cursor` gave.
pub const CURSOR: &str = r"^[A-Za-z0-9_\-]{64}$";
/// Read-only SQL: any text with something besides white space.
pub const SQL: &str = r"\S";
/// A dead letter's kind (`column_count`, `negative_price`, …).
pub const LETTER_KIND: &str = r"^[a-z0-9_]{1,64}$";

fn compiled(pattern: &str) -> Regex {
    Regex::new(pattern).expect("the grammars are valid regular expressions")
}

static SYMBOL_RE: LazyLock<Regex> = LazyLock::new(|| compiled(SYMBOL));
static EXCHANGE_RE: LazyLock<Regex> = LazyLock::new(|| compiled(EXCHANGE));
static SYMBOL_LIST_RE: LazyLock<Regex> = LazyLock::new(|| compiled(SYMBOL_LIST));
static EXCHANGE_LIST_RE: LazyLock<Regex> = LazyLock::new(|| compiled(EXCHANGE_LIST));
static DATE_RE: LazyLock<Regex> = LazyLock::new(|| compiled(DATE));
static INSTANT_RE: LazyLock<Regex> = LazyLock::new(|| compiled(INSTANT));
static DECIMAL_RE: LazyLock<Regex> = LazyLock::new(|| compiled(DECIMAL));
static SPEED_RE: LazyLock<Regex> = LazyLock::new(|| compiled(SPEED));
static CURSOR_RE: LazyLock<Regex> = LazyLock::new(|| compiled(CURSOR));
static SNAPSHOT_RE: LazyLock<Regex> = LazyLock::new(|| compiled(SNAPSHOT));
static LETTER_KIND_RE: LazyLock<Regex> = LazyLock::new(|| compiled(LETTER_KIND));

fn check<'a>(re: &Regex, field: &str, text: &'a str, what: &str) -> Result<&'a str, Failure> {
    if re.is_match(text) {
        Ok(text)
    } else {
        Err(Failure::invalid(field, format!("'{text}' is not {what}")))
    }
}

pub fn letter_kind(field: &str, text: &str) -> Result<String, Failure> {
    check(
        &LETTER_KIND_RE,
        field,
        text,
        "a kind (lowercase letters, digits, _; e.g. column_count)",
    )
    .map(str::to_string)
}

pub fn symbol(field: &str, text: &str) -> Result<String, Failure> {
    check(
        &SYMBOL_RE,
        field,
        text,
        "a symbol (1 to 32 letters, digits or . - _ / :)",
    )
    .map(str::to_string)
}

/// An exchange code, upper case.
pub fn exchange_code(field: &str, text: &str) -> Result<String, Failure> {
    check(
        &EXCHANGE_RE,
        field,
        text,
        "an exchange code (1 to 16 letters or digits)",
    )
    .map(str::to_ascii_uppercase)
}

/// Comma-separated symbols (none when absent).
pub fn symbol_list(field: &str, text: Option<&str>) -> Result<Vec<String>, Failure> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    check(
        &SYMBOL_LIST_RE,
        field,
        text,
        "1 to 100 comma-separated symbols",
    )?;
    Ok(text.split(',').map(str::to_string).collect())
}

/// Comma-separated exchange codes, upper case (none when absent).
pub fn exchange_list(field: &str, text: Option<&str>) -> Result<Vec<String>, Failure> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    check(
        &EXCHANGE_LIST_RE,
        field,
        text,
        "1 to 20 comma-separated exchange codes",
    )?;
    Ok(text.split(',').map(str::to_ascii_uppercase).collect())
}

/// Symbols of a JSON body: each a symbol, at most `max`.
pub fn symbols(field: &str, values: &[String], max: usize) -> Result<Vec<String>, Failure> {
    if values.len() > max {
        return Err(Failure::invalid(field, format!("at most {max} values")));
    }
    values.iter().map(|v| symbol(field, v)).collect()
}

/// Exchange codes of a JSON body, upper case, at most `max`.
pub fn exchanges(field: &str, values: &[String], max: usize) -> Result<Vec<String>, Failure> {
    if values.len() > max {
        return Err(Failure::invalid(field, format!("at most {max} values")));
    }
    values.iter().map(|v| exchange_code(field, v)).collect()
}

/// A calendar date, `YYYY-MM-DD`.
pub fn date(field: &str, text: &str) -> Result<NaiveDate, Failure> {
    let not = || Failure::invalid(field, format!("'{text}' is not a YYYY-MM-DD date"));
    check(&DATE_RE, field, text, "a YYYY-MM-DD date").map_err(|_| not())?;
    NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| not())
}

/// An instant in UTC microseconds: RFC 3339, or a date meaning the start of that trading
/// day on `exchange` (UTC without one).
pub fn instant(field: &str, text: &str, exchange: Option<&str>) -> Result<i64, Failure> {
    let not = || {
        Failure::invalid(
            field,
            format!("'{text}' is neither an RFC 3339 time nor a YYYY-MM-DD date"),
        )
    };
    check(&INSTANT_RE, field, text, "an RFC 3339 time or a date").map_err(|_| not())?;
    if text.len() == 10 {
        let day = date(field, text)?;
        let tz = exchange.map_or(chrono_tz::UTC, exchange::time_zone);
        return Ok(exchange::day_bounds_us(tz, day).0);
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_micros())
        .map_err(|_| not())
}

/// Time travel: `snapshot` (an id or a tag) and/or `as_of` (the snapshot current at that
/// instant; a date means its start in UTC); both: the named snapshot, which must be the
/// one current then; neither: the current snapshot.
pub fn pin(as_of: Option<&str>, snapshot: Option<&str>) -> Result<Pin, Failure> {
    match (as_of, snapshot) {
        (Some(t), Some(s)) => Ok(Pin::All(vec![pin(None, Some(s))?, pin(Some(t), None)?])),
        (Some(t), None) => Ok(Pin::AsOf(instant("as_of", t, None)?.div_euclid(1_000))),
        (None, Some(text)) => {
            check(&SNAPSHOT_RE, "snapshot", text, "a snapshot id or tag name")?;
            match Pin::snapshot(text) {
                // Digits beyond an id's range name no snapshot (and no tag).
                Pin::Named(n)
                    if n.trim_start_matches('-')
                        .bytes()
                        .all(|b| b.is_ascii_digit()) =>
                {
                    Err(Failure::not_found(format!("snapshot {n}")))
                }
                pin => Ok(pin),
            }
        }
        (None, None) => Ok(Pin::Current),
    }
}

/// A time range `[start, end)` in UTC microseconds; an end not after the start is an
/// empty range, which answers nothing.
pub fn range(
    start: Option<&str>,
    end: Option<&str>,
    exchange: Option<&str>,
) -> Result<(Option<i64>, Option<i64>), Failure> {
    Ok((
        start
            .map(|t| instant("start_time", t, exchange))
            .transpose()?,
        end.map(|t| instant("end_time", t, exchange)).transpose()?,
    ))
}

/// A whole number in a JSON body, written as an integer or as a number with no fraction
/// (`100` or `100.0`: JSON Schema's `integer` admits both).
pub fn whole<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    use serde::Deserialize;
    use serde::de::Error;
    match Option::<serde_json::Number>::deserialize(d)? {
        None => Ok(None),
        Some(n) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|x| x.fract() == 0.0 && *x >= 0.0 && *x < 1e19)
                    .map(|x| x as u64)
            })
            .and_then(|v| usize::try_from(v).ok())
            .map(Some)
            .ok_or_else(|| D::Error::custom(format!("{n} is not a whole number of at least 0"))),
    }
}

/// A page size: `value` or `default`, between 1 and `max`.
pub fn limit(
    field: &str,
    value: Option<usize>,
    default: usize,
    max: usize,
) -> Result<usize, Failure> {
    let v = value.unwrap_or(default);
    if v == 0 || v > max {
        return Err(Failure::invalid(
            field,
            format!("must be between 1 and {max}"),
        ));
    }
    Ok(v)
}

/// A price or quantity bound in units of 10^-8.
pub fn decimal(field: &str, text: Option<&str>) -> Result<Option<i64>, Failure> {
    let Some(text) = text else {
        return Ok(None);
    };
    check(
        &DECIMAL_RE,
        field,
        text,
        "a non-negative decimal with at most 10 digits before the point and 8 after",
    )?;
    let d: k2_model::Decimal8 = text
        .parse()
        .map_err(|e| Failure::invalid(field, format!("'{text}': {e}")))?;
    Ok(Some(d.units()))
}

/// A replay's pace.
pub fn speed(text: Option<&str>) -> Result<k2_lake::replay::ReplaySpeed, Failure> {
    let text = text.unwrap_or("max");
    check(
        &SPEED_RE,
        "speed",
        text,
        "'max' or a factor above 0 and at most 1000000 (e.g. 1, 10, 0.5)",
    )?;
    k2_lake::replay::ReplaySpeed::parse(text).map_err(|e| Failure::invalid("speed", e.to_string()))
}

/// A cursor's text, checked for its shape (what it says is the cursor module's to read).
pub fn cursor(text: &str) -> Result<&str, Failure> {
    check(&CURSOR_RE, "cursor", text, "a cursor this API gave")
}

/// `trades` (the default) or `quotes`.
pub fn market_table(text: Option<&str>) -> Result<LakeTable, Failure> {
    match text.unwrap_or("trades") {
        "trades" => Ok(LakeTable::Trades),
        "quotes" => Ok(LakeTable::Quotes),
        other => Err(Failure::invalid(
            "data_type",
            format!("'{other}' is not trades or quotes"),
        )),
    }
}

/// Columns asked for by name, comma-separated (none when absent): each a column of trades
/// or quotes.
pub fn column_list(text: Option<&str>) -> Result<Vec<String>, Failure> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    let known = market_columns();
    let fields: Vec<String> = text.split(',').map(str::to_string).collect();
    if let Some(bad) = fields.iter().find(|f| !known.contains(f)) {
        return Err(Failure::invalid(
            "fields",
            format!(
                "unknown field '{bad}'; fields are the columns of trades or quotes: {}",
                known.join(", ")
            ),
        ));
    }
    Ok(fields)
}

/// Every column of trades and quotes, each once.
pub fn market_columns() -> Vec<String> {
    let mut all = k2_lake::query::columns(LakeTable::Trades);
    for c in k2_lake::query::columns(LakeTable::Quotes) {
        if !all.contains(&c) {
            all.push(c);
        }
    }
    all
}

/// The grammar of a comma-separated list of `columns` (for the document).
pub fn column_list_pattern(columns: &[String]) -> String {
    let one = format!("({})", columns.join("|"));
    format!("^{one}(,{one})*$")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_pin_is_an_instant_an_id_or_a_tag_never_two() {
        use k2_lake::query::Pin;
        assert_eq!(super::pin(None, None).unwrap(), Pin::Current);
        assert_eq!(
            super::pin(Some("2014-03-12T00:00:00Z"), None).unwrap(),
            Pin::AsOf(1_394_582_400_000)
        );
        assert_eq!(super::pin(None, Some("42")).unwrap(), Pin::Id(42));
        assert_eq!(
            super::pin(None, Some("eod-2014-03-14")).unwrap(),
            Pin::Named("eod-2014-03-14".into())
        );
        assert_eq!(
            super::pin(Some("2014-03-12"), Some("42")).unwrap(),
            Pin::All(vec![Pin::Id(42), Pin::AsOf(1_394_582_400_000)])
        );
        assert!(super::pin(None, Some("a tag")).is_err());
        assert!(super::pin(None, Some("99999999999999999999")).is_err());
    }

    use super::*;

    fn ok<T>(r: Result<T, Failure>) -> T {
        r.unwrap_or_else(|f| panic!("refused: {}", f.message))
    }

    fn refused<T: std::fmt::Debug>(r: Result<T, Failure>, field: &str) {
        let f = r.expect_err("accepted");
        assert_eq!(f.status.as_u16(), 422);
        assert_eq!(f.field.as_deref(), Some(field));
    }

    #[test]
    fn symbols_and_exchanges_follow_their_grammar_exactly() {
        assert_eq!(ok(symbol("symbol", "BTC/USD")), "BTC/USD");
        assert_eq!(ok(exchange_code("exchange", "asx")), "ASX");
        for bad in ["", "BHP ", " BHP", "BHP\n", "B'HP", &"X".repeat(33)] {
            refused(symbol("symbol", bad), "symbol");
        }
        refused(exchange_code("exchange", "AS-X"), "exchange");
        assert_eq!(ok(symbol_list("symbols", Some("BHP,RIO"))), ["BHP", "RIO"]);
        refused(symbol_list("symbols", Some("BHP, RIO")), "symbols");
        refused(symbol_list("symbols", Some("BHP,")), "symbols");
        let hundred = vec!["A"; 100].join(",");
        assert_eq!(ok(symbol_list("symbols", Some(&hundred))).len(), 100);
        refused(
            symbol_list("symbols", Some(&format!("{hundred},B"))),
            "symbols",
        );
        assert_eq!(
            ok(exchange_list("exchanges", Some("asx,x1"))),
            ["ASX", "X1"]
        );
    }

    #[test]
    fn instants_are_rfc3339_or_a_trading_day_start() {
        let t = |s: &str| instant("start_time", s, Some("ASX"));
        assert_eq!(ok(t("2014-03-12T00:00:00Z")), 1_394_582_400_000_000);
        assert_eq!(ok(t("2014-03-12t01:00:00.5+01:00")), 1_394_582_400_500_000);
        // ASX's trading day 12 March starts at midnight Sydney time, 13:00 UTC the day
        // before.
        assert_eq!(ok(t("2014-03-12")), 1_394_542_800_000_000);
        // The years the engine's nanosecond arithmetic holds.
        assert_eq!(
            ok(instant("x", "1700-01-01T00:00:00+23:59", None)),
            -8_520_422_340_000_000
        );
        assert!(ok(instant("x", "2259-12-31T23:59:59.999999999-23:59", None)) > 0);
        for bad in [
            "0000-01-01T00:00:00Z",
            "1699-12-31",
            "2260-01-01T00:00:00Z",
            "2014-03-12T24:00:00Z",
            "2014-03-12T23:59:60Z",
            "2014-03-12T00:00:00+24:00",
            "2014-03-12 00:00:00Z",
            "2014-03-12T00:00:00",
            "2014-3-12",
            "2014-02-30",
            "yesterday",
            "2014-03-12T00:00:00.1234567890Z",
        ] {
            refused(t(bad), "start_time");
        }
        // An empty range is a range.
        assert_eq!(
            ok(range(Some("2014-03-13"), Some("2014-03-12"), None)),
            (Some(1_394_668_800_000_000), Some(1_394_582_400_000_000))
        );
    }

    #[test]
    fn decimals_speeds_limits_and_cursors() {
        assert_eq!(ok(decimal("min_price", Some("36.5"))), Some(3_650_000_000));
        assert_eq!(ok(decimal("min_price", None)), None);
        for bad in ["-1", "1e3", "0.123456789", "12345678901", ".5", "5."] {
            refused(decimal("min_price", Some(bad)), "min_price");
        }
        for good in [
            "max",
            "MAX",
            "1",
            "x10",
            "0.001",
            "1000000",
            "999999.5",
            "1000000.0",
        ] {
            ok(speed(Some(good)));
        }
        for bad in [
            "0",
            "0.0",
            "1000001",
            "-1",
            "fast",
            " 1",
            "1e3",
            "0.0000001",
        ] {
            refused(speed(Some(bad)), "speed");
        }
        assert_eq!(ok(limit("limit", None, 100, 1000)), 100);
        refused(limit("limit", Some(0), 100, 1000), "limit");
        refused(limit("limit", Some(1001), 100, 1000), "limit");
        ok(cursor(&"A".repeat(64)));
        refused(cursor(&"A".repeat(63)), "cursor");
        refused(cursor(&format!("{}=", "A".repeat(63))), "cursor");
    }

    #[test]
    fn column_lists_name_columns_of_either_table() {
        assert_eq!(
            ok(column_list(Some("price,bid_price"))),
            ["price", "bid_price"]
        );
        refused(column_list(Some("colour")), "fields");
        refused(column_list(Some("price,")), "fields");
        let pattern = Regex::new(&column_list_pattern(&market_columns())).unwrap();
        assert!(pattern.is_match("price,bid_price"));
        assert!(!pattern.is_match("price,colour"));
    }
}
