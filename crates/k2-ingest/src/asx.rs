//! Parsing of the ASX sample layout into model records.
//!
//! Files are headerless CSV with CRLF line ends (see the data README):
//! - `trades/{company_id}.csv`: Date `MM/DD/YYYY`, Time `HH:MM:SS.mmm`, Price, Volume,
//!   Qualifiers (int), Venue (`X` or empty), BuyerID (mostly empty);
//! - `quotes/{company_id}.csv`: Date, Time, Bid, Ask, BidVolume, AskVolume (an empty side is
//!   price 0 and volume 0);
//! - `reference-data/company_info.csv`: header, then company_id, symbol, name, ISIN,
//!   start_date, end_date.
//!
//! Times are Australia/Sydney local time and become UTC microseconds. Row order is the
//! source sequence: `source_sequence` is the 1-based line number, and the message id is
//! derived from (exchange, data type, company, trading date, line), never from content —
//! the sample has thousands of byte-identical rows that are distinct fills.

use std::collections::BTreeMap;

use chrono::{LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};
use chrono_tz::Tz;
use compact_str::{ToCompactString, format_compact};
use k2_model::{
    AssetClass, Decimal8, MarketRecord, MessageId, Quote, ReferenceData, Text, Trade, TradeSide,
    VendorData,
};

/// The exchange code and its calendar.
pub const EXCHANGE: &str = "ASX";
pub const TIME_ZONE: Tz = chrono_tz::Australia::Sydney;
pub const CURRENCY: &str = "AUD";

/// Why a row was rejected: a kind from a closed set and a sentence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub kind: &'static str,
    pub reason: String,
}

impl Rejection {
    fn new(kind: &'static str, reason: impl Into<String>) -> Self {
        Rejection {
            kind,
            reason: reason.into(),
        }
    }
}

/// What a company is, from company_info.csv.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Company {
    pub company_id: Text,
    pub symbol: Text,
    pub name: Text,
    pub isin: Text,
    pub start_date: Text,
    pub end_date: Text,
}

/// Converts exchange-local wall-clock times to UTC, caching the offset per local hour
/// (rows come in time order, so nearly every lookup hits the cache).
pub struct LocalClock {
    cached: Option<(NaiveDate, u32, i64)>,
}

impl Default for LocalClock {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalClock {
    pub fn new() -> Self {
        LocalClock { cached: None }
    }

    /// UTC microseconds of a local date-time. An ambiguous time (the repeated hour when
    /// daylight saving ends) takes the earlier instant; a time that does not exist (the
    /// skipped hour) is rejected.
    pub fn to_utc_us(&mut self, local: NaiveDateTime) -> Result<i64, Rejection> {
        use chrono::Timelike;
        let (date, hour) = (local.date(), local.hour());
        let offset_us = match self.cached {
            Some((d, h, off)) if d == date && h == hour => off,
            _ => {
                let off = match TIME_ZONE.from_local_datetime(&local) {
                    LocalResult::Single(t) => t,
                    LocalResult::Ambiguous(earlier, _) => earlier,
                    LocalResult::None => {
                        return Err(Rejection::new(
                            "date",
                            format!("{local} does not exist in {TIME_ZONE} (daylight-saving gap)"),
                        ));
                    }
                };
                let offset_us = local.and_utc().timestamp_micros() - off.timestamp_micros();
                self.cached = Some((date, hour, offset_us));
                offset_us
            }
        };
        Ok(local.and_utc().timestamp_micros() - offset_us)
    }
}

/// `MM/DD/YYYY`, parsed by position (chrono's format-string parser costs more than the
/// rest of the row).
fn parse_date(text: &str) -> Result<NaiveDate, Rejection> {
    let bad = || Rejection::new("date", format!("date '{text}' is not MM/DD/YYYY"));
    let b = text.as_bytes();
    if b.len() != 10 || b[2] != b'/' || b[5] != b'/' {
        return Err(bad());
    }
    let (m, d, y) = (digits(&b[0..2]), digits(&b[3..5]), digits(&b[6..10]));
    match (m, d, y) {
        (Some(m), Some(d), Some(y)) => NaiveDate::from_ymd_opt(y as i32, m, d).ok_or_else(bad),
        _ => Err(bad()),
    }
}

/// `HH:MM:SS.mmm`, parsed by position.
fn parse_time(text: &str) -> Result<NaiveTime, Rejection> {
    let bad = || Rejection::new("date", format!("time '{text}' is not HH:MM:SS.mmm"));
    let b = text.as_bytes();
    if b.len() != 12 || b[2] != b':' || b[5] != b':' || b[8] != b'.' {
        return Err(bad());
    }
    match (
        digits(&b[0..2]),
        digits(&b[3..5]),
        digits(&b[6..8]),
        digits(&b[9..12]),
    ) {
        (Some(h), Some(m), Some(s), Some(ms)) => {
            NaiveTime::from_hms_milli_opt(h, m, s, ms).ok_or_else(bad)
        }
        _ => Err(bad()),
    }
}

fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

fn parse_decimal(field: &str, text: &str) -> Result<Decimal8, Rejection> {
    text.parse::<Decimal8>()
        .map_err(|e| Rejection::new("number", format!("{field} '{text}': {e}")))
}

fn non_negative(field: &str, value: Decimal8, kind: &'static str) -> Result<Decimal8, Rejection> {
    if value.is_negative() {
        return Err(Rejection::new(kind, format!("{field} {value} is negative")));
    }
    Ok(value)
}

/// Splits a line into exactly `N` fields, or says how many it had.
fn fields<'a, const N: usize>(line: &'a str, what: &str) -> Result<[&'a str; N], Rejection> {
    let mut out = [""; N];
    let mut n = 0;
    for part in line.split(',') {
        if let Some(slot) = out.get_mut(n) {
            *slot = part;
        }
        n += 1;
    }
    if n != N {
        return Err(Rejection::new(
            "column_count",
            format!("{what} row has {n} columns, expected {N}"),
        ));
    }
    Ok(out)
}

/// Identity of a row at its source.
pub struct RowSource<'a> {
    pub company: &'a Company,
    pub line: u64,
    pub receive_us: i64,
}

fn ids(kind: &str, src: &RowSource<'_>, date: NaiveDate) -> (MessageId, Text) {
    use chrono::Datelike;
    let day = format_compact!("{:04}{:02}{:02}", date.year(), date.month(), date.day());
    let line = src.line.to_compact_string();
    let message_id =
        MessageId::from_source(&[EXCHANGE, kind, &src.company.company_id, &day, &line]);
    let native = format_compact!("{EXCHANGE}-{}-{day}-{line}", src.company.company_id);
    (message_id, native)
}

/// How far ahead of K2's clock an exchange time may be (clock skew); beyond it the row is
/// rejected rather than stored with a time that has not happened.
pub const FUTURE_TOLERANCE_US: i64 = 5 * 60 * 1_000_000;

fn timestamp(
    clock: &mut LocalClock,
    date_text: &str,
    time_text: &str,
    src: &RowSource<'_>,
) -> Result<(NaiveDate, i64), Rejection> {
    let date = parse_date(date_text)?;
    let time = parse_time(time_text)?;
    let ts = clock.to_utc_us(date.and_time(time))?;
    if ts > src.receive_us.saturating_add(FUTURE_TOLERANCE_US) {
        return Err(Rejection::new(
            "future_timestamp",
            format!(
                "{date_text} {time_text} is in the future (more than {} minutes after it was read)",
                FUTURE_TOLERANCE_US / 60_000_000
            ),
        ));
    }
    Ok((date, ts))
}

/// Parses one trade row (without its line terminator).
pub fn parse_trade(
    line: &str,
    src: &RowSource<'_>,
    clock: &mut LocalClock,
) -> Result<MarketRecord, Rejection> {
    let f = fields::<7>(line, "trade")?;
    let (date, ts) = timestamp(clock, f[0], f[1], src)?;
    let price = parse_decimal("price", f[2])?;
    if price.is_negative() || price.is_zero() {
        return Err(Rejection::new(
            "non_positive_price",
            format!("price {price} is not positive"),
        ));
    }
    let quantity = non_negative(
        "volume",
        parse_decimal("volume", f[3])?,
        "negative_quantity",
    )?;
    let qualifiers = f[4].trim();
    if !qualifiers.is_empty() && qualifiers.parse::<u32>().is_err() {
        return Err(Rejection::new(
            "number",
            format!("qualifiers '{qualifiers}' is not an integer code"),
        ));
    }
    let mut vendor = VendorData::new();
    vendor.insert("company_id", src.company.company_id.clone());
    let mut conditions = Vec::new();
    if !qualifiers.is_empty() {
        vendor.insert("qualifiers", qualifiers);
        conditions.push(qualifiers.into());
    }
    if !f[5].trim().is_empty() {
        vendor.insert("venue", f[5].trim());
    }
    if !f[6].trim().is_empty() {
        vendor.insert("buyer_id", f[6].trim());
    }
    let (message_id, trade_id) = ids("trades", src, date);
    Ok(MarketRecord::Trade(Trade {
        message_id,
        trade_id,
        symbol: src.company.symbol.clone(),
        exchange: EXCHANGE.into(),
        asset_class: AssetClass::Equities,
        timestamp_us: ts,
        receive_timestamp_us: src.receive_us,
        price,
        quantity,
        currency: CURRENCY.into(),
        side: TradeSide::Unknown,
        trade_conditions: conditions,
        source_sequence: Some(src.line as i64),
        ingestion_timestamp_us: 0,
        platform_sequence: None,
        vendor_data: Some(vendor),
    }))
}

/// Parses one quote row: Date, Time, Bid, Ask, BidVolume, AskVolume.
pub fn parse_quote(
    line: &str,
    src: &RowSource<'_>,
    clock: &mut LocalClock,
) -> Result<MarketRecord, Rejection> {
    let f = fields::<6>(line, "quote")?;
    let (date, ts) = timestamp(clock, f[0], f[1], src)?;
    let bid_price = non_negative("bid", parse_decimal("bid", f[2])?, "negative_price")?;
    let ask_price = non_negative("ask", parse_decimal("ask", f[3])?, "negative_price")?;
    let bid_quantity = non_negative(
        "bid volume",
        parse_decimal("bid volume", f[4])?,
        "negative_quantity",
    )?;
    let ask_quantity = non_negative(
        "ask volume",
        parse_decimal("ask volume", f[5])?,
        "negative_quantity",
    )?;
    let (message_id, quote_id) = ids("quotes", src, date);
    let mut vendor = VendorData::new();
    vendor.insert("company_id", src.company.company_id.clone());
    Ok(MarketRecord::Quote(Quote {
        message_id,
        quote_id,
        symbol: src.company.symbol.clone(),
        exchange: EXCHANGE.into(),
        asset_class: AssetClass::Equities,
        timestamp_us: ts,
        receive_timestamp_us: src.receive_us,
        bid_price,
        bid_quantity,
        ask_price,
        ask_quantity,
        currency: CURRENCY.into(),
        source_sequence: Some(src.line as i64),
        ingestion_timestamp_us: 0,
        platform_sequence: None,
        vendor_data: Some(vendor),
    }))
}

/// A rejected line: its 1-based number, its text, and why.
pub type RejectedLine = (u64, String, Rejection);

/// Parses company_info.csv (with header) into companies by id; bad rows are returned apart.
pub fn parse_company_info(text: &str) -> (BTreeMap<Text, Company>, Vec<RejectedLine>) {
    let mut companies = BTreeMap::new();
    let mut rejected = Vec::new();
    for (i, raw) in text.lines().enumerate().skip(1) {
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let line_no = i as u64 + 1;
        let parsed = fields::<6>(line, "company_info").and_then(|f| {
            if f[0].trim().is_empty() || f[1].trim().is_empty() {
                return Err(Rejection::new(
                    "missing_field",
                    "company_id and symbol are required",
                ));
            }
            Ok(Company {
                company_id: f[0].trim().into(),
                symbol: f[1].trim().into(),
                name: f[2].trim().into(),
                isin: f[3].trim().into(),
                start_date: f[4].trim().into(),
                end_date: f[5].trim().into(),
            })
        });
        match parsed {
            Ok(c) => {
                companies.insert(c.company_id.clone(), c);
            }
            Err(r) => rejected.push((line_no, line.to_string(), r)),
        }
    }
    (companies, rejected)
}

/// The reference-data record of a company. The sample's start/end dates bound the vendor's
/// coverage, not the listing, so they are kept verbatim in vendor data; `listing_date` takes
/// the start date and the company stays active.
pub fn company_record(company: &Company, receive_us: i64) -> MarketRecord {
    let listing = parse_date(&company.start_date)
        .ok()
        .and_then(|d| LocalClock::new().to_utc_us(d.and_time(NaiveTime::MIN)).ok());
    let mut vendor = VendorData::new();
    vendor.insert("start_date", company.start_date.clone());
    vendor.insert("end_date", company.end_date.clone());
    MarketRecord::Reference(ReferenceData {
        message_id: MessageId::from_source(&[EXCHANGE, "reference_data", &company.company_id]),
        company_id: company.company_id.clone(),
        symbol: company.symbol.clone(),
        exchange: EXCHANGE.into(),
        asset_class: AssetClass::Equities,
        company_name: company.name.clone(),
        isin: Some(company.isin.clone()).filter(|s| !s.is_empty()),
        currency: Some(CURRENCY.into()),
        listing_date_us: listing,
        delisting_date_us: None,
        is_active: true,
        receive_timestamp_us: receive_us,
        ingestion_timestamp_us: 0,
        vendor_data: Some(vendor),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bhp() -> Company {
        Company {
            company_id: "7078".into(),
            symbol: "BHP".into(),
            name: "BHP BILLITON LTD".into(),
            isin: "AU000000BHP4".into(),
            start_date: "05/07/2008".into(),
            end_date: "03/31/2014".into(),
        }
    }

    /// Read on 2026-11-22 (rows dated later than that are in the future).
    const READ_AT_US: i64 = 1_795_300_000_000_000;

    fn src(c: &Company, line: u64) -> RowSource<'_> {
        RowSource {
            company: c,
            line,
            receive_us: READ_AT_US,
        }
    }

    #[test]
    fn trade_row_to_utc_with_vendor_fields() {
        let c = bhp();
        let mut clock = LocalClock::new();
        let MarketRecord::Trade(t) = parse_trade(
            "03/10/2014,10:24:23.348,36.76,8,0,,36.79",
            &src(&c, 5),
            &mut clock,
        )
        .unwrap() else {
            panic!()
        };
        // 10:24:23.348 AEDT (UTC+11) is 23:24:23.348 UTC the day before.
        assert_eq!(t.timestamp_us, 1_394_407_463_348_000);
        assert_eq!(t.price.to_string(), "36.76");
        assert_eq!(t.quantity.to_string(), "8");
        assert_eq!(t.source_sequence, Some(5));
        assert_eq!(t.trade_id, "ASX-7078-20140310-5");
        let v = t.vendor_data.unwrap();
        assert_eq!(v.get("buyer_id"), Some("36.79"));
        assert_eq!(v.get("qualifiers"), Some("0"));
        assert!(
            v.get("venue").is_none(),
            "empty venue is absent, not invented"
        );
    }

    #[test]
    fn identical_rows_on_different_lines_are_different_trades() {
        let c = bhp();
        let mut clock = LocalClock::new();
        let row = "03/10/2014,13:55:41.879,1.11,3000,0,,";
        let a = parse_trade(row, &src(&c, 2), &mut clock).unwrap();
        let b = parse_trade(row, &src(&c, 3), &mut clock).unwrap();
        assert_ne!(a.message_id(), b.message_id());
        assert_eq!(
            a.message_id(),
            parse_trade(row, &src(&c, 2), &mut clock)
                .unwrap()
                .message_id()
        );
    }

    #[test]
    fn quote_columns_are_bid_ask_bidvol_askvol() {
        let c = bhp();
        let MarketRecord::Quote(q) = parse_quote(
            "03/10/2014,05:46:13.604,1.11,1.18,10300,3667",
            &src(&c, 2),
            &mut LocalClock::new(),
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            (q.bid_price.to_string(), q.ask_price.to_string()),
            ("1.11".into(), "1.18".into())
        );
        assert_eq!(
            (q.bid_quantity.to_string(), q.ask_quantity.to_string()),
            ("10300".into(), "3667".into())
        );
        let empty_ask = parse_quote(
            "03/10/2014,05:46:13.604,1.11,0.0,10300,0",
            &src(&c, 1),
            &mut LocalClock::new(),
        );
        assert!(empty_ask.is_ok(), "an empty side is price 0, volume 0");
    }

    #[test]
    fn malformed_rows_name_what_is_wrong() {
        let c = bhp();
        let mut clock = LocalClock::new();
        let cases = [
            ("03/10/2014,10:00:00.000,36.7,100,0,", "column_count"),
            ("03/10/2014,10:00:00.000,abc,100,0,,", "number"),
            ("13/45/2014,10:00:00.000,36.7,100,0,,", "date"),
            ("03/10/2014,25:00:00.000,36.7,100,0,,", "date"),
            (
                "03/10/2014,10:00:00.000,-36.7,100,0,,",
                "non_positive_price",
            ),
            ("03/10/2014,10:00:00.000,36.7,-100,0,,", "negative_quantity"),
            ("03/10/2014,10:00:00.000,36.7,100,x,,", "number"),
            ("03/10/2099,10:00:00.000,36.7,100,0,,", "future_timestamp"),
        ];
        for (row, kind) in cases {
            let err = parse_trade(row, &src(&c, 1), &mut clock).unwrap_err();
            assert_eq!(err.kind, kind, "{row}: {}", err.reason);
        }
        let err =
            parse_quote("03/10/2014,10:00:00.000,-1,1,1,1", &src(&c, 1), &mut clock).unwrap_err();
        assert_eq!(err.kind, "negative_price");
    }

    #[test]
    fn daylight_saving_edges() {
        let mut clock = LocalClock::new();
        // 2014-10-05 02:30 does not exist in Sydney (clocks jump 02:00 → 03:00).
        let gap = NaiveDate::from_ymd_opt(2014, 10, 5)
            .unwrap()
            .and_hms_opt(2, 30, 0)
            .unwrap();
        assert_eq!(clock.to_utc_us(gap).unwrap_err().kind, "date");
        // 2014-04-06 02:30 happens twice; the earlier (AEDT, UTC+11) is taken.
        let twice = NaiveDate::from_ymd_opt(2014, 4, 6)
            .unwrap()
            .and_hms_opt(2, 30, 0)
            .unwrap();
        assert_eq!(
            clock.to_utc_us(twice).unwrap(),
            twice.and_utc().timestamp_micros() - 11 * 3_600_000_000
        );
    }

    #[test]
    fn company_info_with_header() {
        let text = "company_id,symbol,company_name,ISIN,start_date,end_date\r\n7078,BHP,BHP BILLITON LTD,AU000000BHP4,05/07/2008,03/31/2014\r\nbad\r\n";
        let (companies, rejected) = parse_company_info(text);
        assert_eq!(companies["7078"].symbol, "BHP");
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].0, 3);
    }
}
