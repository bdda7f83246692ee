//! Exchange WebSocket frames → K2's model: Binance spot (combined streams of `<symbol>@trade`
//! and `<symbol>@bookTicker`) and Kraken's WebSocket API v2 (`trade` channel).
//!
//! Pure functions: a frame's text and the instant it was received in, records (or nothing,
//! for acknowledgements and heartbeats) or the reason the frame was refused out, so the
//! caller can dead-letter the raw frame. Every trade of a frame is kept (a Kraken frame
//! carries many). Ids are deterministic (exchange + the venue's own trade or update id), so
//! a trade seen twice — a reconnect overlap, two captures of one feed — has one identity.
//! Prices and quantities are read from the frame's text exactly, never through a float.

use std::str::FromStr;

use chrono::Datelike;
use k2_model::decimal::Decimal8;
use k2_model::{AssetClass, MarketRecord, MessageId, Quote, Text, Trade, TradeSide};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Why a frame was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameError {
    /// `malformed` (not the venue's format) or `invalid` (well-formed, impossible values).
    pub kind: &'static str,
    pub reason: String,
}

impl FrameError {
    pub(crate) fn malformed(reason: impl Into<String>) -> Self {
        FrameError {
            kind: "malformed",
            reason: reason.into(),
        }
    }

    fn invalid(reason: impl Into<String>) -> Self {
        FrameError {
            kind: "invalid",
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.reason)
    }
}

impl std::error::Error for FrameError {}

/// A positive price or quantity, from decimal text (`"0.00100000"`) or a JSON number's
/// text (`0.5117`, `1.5e-5`), exactly.
fn positive(field: &str, text: &str) -> Result<Decimal8, FrameError> {
    let d = exact_decimal(text).ok_or_else(|| {
        FrameError::invalid(format!(
            "{field} '{text}' is not a decimal K2 holds exactly (18 digits, 8 after the point)"
        ))
    })?;
    if d.units() <= 0 {
        return Err(FrameError::invalid(format!(
            "{field} {text} is not positive"
        )));
    }
    Ok(d)
}

/// Decimal text with an optional exponent, as an exact 10^-8 fixed-point value.
fn exact_decimal(text: &str) -> Option<Decimal8> {
    // Plain decimal text, nearly every value, in one pass; quotes and exponents after.
    if let Ok(d) = Decimal8::from_str(text) {
        return Some(d);
    }
    let text = text.trim_matches('"');
    let (mantissa, exp) = match text.find(['e', 'E']) {
        None => (text, 0i32),
        Some(i) => (&text[..i], text[i + 1..].parse().ok()?),
    };
    if exp == 0 {
        return Decimal8::from_str(mantissa).ok();
    }
    let (sign, digits) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa.strip_prefix('+').unwrap_or(mantissa)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty()
        || !(int.chars().chain(frac.chars())).all(|c| c.is_ascii_digit())
    {
        return None;
    }
    // Move the point `exp` places; then it is plain decimal text again.
    let all: String = format!("{int}{frac}");
    let point = int.len() as i32 + exp;
    let plain = if point <= 0 {
        format!("0.{}{all}", "0".repeat((-point) as usize))
    } else if point as usize >= all.len() {
        format!("{all}{}", "0".repeat(point as usize - all.len()))
    } else {
        format!("{}.{}", &all[..point as usize], &all[point as usize..])
    };
    let plain = trim_fraction(&plain);
    Decimal8::from_str(&format!("{sign}{plain}")).ok()
}

/// Trailing zeros after the point carry no value (and may exceed the 8 digits).
fn trim_fraction(text: &str) -> &str {
    match text.split_once('.') {
        Some(_) => text.trim_end_matches('0').trim_end_matches('.'),
        None => text,
    }
}

/// The readable id of a trade or quote: `{EXCHANGE}-{symbol}-{venue's id}`.
fn native_id(exchange: &str, symbol: &str, id: &str) -> Text {
    // Put together on the stack and copied once: pushing part by part onto the text
    // costs more than the copy.
    let mut buf = [0u8; 96];
    let mut len = 0;
    for part in [exchange, "-", symbol, "-", id] {
        let Some(room) = buf.get_mut(len..len + part.len()) else {
            return [exchange, symbol, id].join("-").into();
        };
        room.copy_from_slice(part.as_bytes());
        len += part.len();
    }
    // Whole UTF-8 parts put end to end are UTF-8.
    Text::from_utf8(&buf[..len]).expect("parts of text")
}

/// The quote currency of a Binance symbol (`BTCUSDT` → `USDT`), from the assets Binance
/// quotes in; empty when none matches.
fn binance_quote_currency(symbol: &str) -> &'static str {
    const QUOTES: [&str; 12] = [
        "FDUSD", "USDT", "USDC", "TUSD", "BUSD", "EUR", "TRY", "BRL", "BTC", "ETH", "BNB", "JPY",
    ];
    QUOTES
        .into_iter()
        .find(|q| symbol.len() > q.len() && symbol.ends_with(q))
        .unwrap_or("")
}

/// The index of the first byte at or after `i` that is not JSON whitespace.
#[inline(always)]
fn skip_whitespace(b: &[u8], mut i: usize) -> usize {
    while let Some(c) = b.get(i)
        && matches!(c, b' ' | b'\n' | b'\r' | b'\t')
    {
        i += 1;
    }
    i
}

/// The length of a string's text up to its closing quote (`b` starts after the opening
/// one); None when an escape or a control character comes first: not flat.
#[inline(always)]
fn string_len(b: &[u8]) -> Option<usize> {
    let len = b
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
    (b[len] == b'"').then_some(len)
}

/// A JSON number's text as a non-negative integer of at most 18 digits; None otherwise
/// (the full parser then decides).
#[inline(always)]
fn small_int(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    // JSON writes no leading zeros; the full parser refuses them, so this does too.
    if b.is_empty() || b.len() > 18 || b.len() > 1 && b[0] == b'0' {
        return None;
    }
    b.iter().try_fold(0i64, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
    })
}

/// A reader of JSON text laid out exactly as expected: literal punctuation and keys,
/// then values, each step None on anything else.
struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    #[inline(always)]
    fn literal(&mut self, expected: &str) -> Option<()> {
        let end = self.at + expected.len();
        (self.text.as_bytes().get(self.at..end)? == expected.as_bytes()).then(|| self.at = end)
    }

    /// A string's text, after its opening quote (which the literal before it took).
    #[inline(always)]
    fn string_rest(&mut self) -> Option<&'a str> {
        let len = string_len(&self.text.as_bytes()[self.at..])?;
        let s = &self.text[self.at..self.at + len];
        self.at += len + 1;
        Some(s)
    }

    #[inline(always)]
    fn int(&mut self) -> Option<i64> {
        let rest = &self.text.as_bytes()[self.at..];
        let len = rest
            .iter()
            .position(|c| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n = small_int(&self.text[self.at..self.at + len])?;
        self.at += len;
        Some(n)
    }

    /// A JSON number's text (`-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`).
    #[inline(always)]
    fn number(&mut self) -> Option<&'a str> {
        let b = self.text.as_bytes();
        let start = self.at;
        let digits = |i: usize| {
            b[i.min(b.len())..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count()
        };
        let mut i = start + usize::from(b.get(start) == Some(&b'-'));
        let int = digits(i);
        if int == 0 || int > 1 && b[i] == b'0' {
            return None;
        }
        i += int;
        if b.get(i) == Some(&b'.') {
            let frac = digits(i + 1);
            if frac == 0 {
                return None;
            }
            i += 1 + frac;
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1 + usize::from(matches!(b.get(i + 1), Some(b'+' | b'-')));
            let exp = digits(i);
            if exp == 0 {
                return None;
            }
            i += exp;
        }
        self.at = i;
        Some(&self.text[start..i])
    }

    #[inline(always)]
    fn boolean(&mut self) -> Option<bool> {
        if self.literal("true").is_some() {
            Some(true)
        } else {
            self.literal("false").map(|()| false)
        }
    }

    fn finished(&self) -> Option<()> {
        (self.at == self.text.len()).then_some(())
    }
}

/// A value of a flat JSON object: a string's text (without escapes), a number's text, or a
/// boolean (null and anything else make the object not flat).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Scalar<'a> {
    Str(&'a str),
    Num(&'a str),
    Bool(bool),
}

/// One pass over a flat JSON object, each member handed to `member` (which may refuse it).
/// None when the text is anything else — nested values, escapes, a duplicate key (the
/// caller's duty), bad syntax — so the caller falls back to the full parser, whose
/// messages then name the fault.
fn flat_object<'a>(
    text: &'a str,
    mut member: impl FnMut(&'a str, Scalar<'a>) -> Option<()>,
) -> Option<()> {
    let b = text.as_bytes();
    let ws = |i: usize| skip_whitespace(b, i);
    // A string starting at `i` (its opening quote): its text and the index after it.
    let string = |i: usize| -> Option<(&'a str, usize)> {
        let len = string_len(&b[i + 1..])?;
        Some((&text[i + 1..i + 1 + len], i + 2 + len))
    };
    let mut i = ws(0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = ws(i + 1);
    if b.get(i) == Some(&b'}') {
        return (ws(i + 1) == b.len()).then_some(());
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let (key, after) = string(i)?;
        i = ws(after);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = ws(i + 1);
        let (value, after) = match *b.get(i)? {
            b'"' => {
                let (s, after) = string(i)?;
                (Scalar::Str(s), after)
            }
            b't' if b[i..].starts_with(b"true") => (Scalar::Bool(true), i + 4),
            b'f' if b[i..].starts_with(b"false") => (Scalar::Bool(false), i + 5),
            b'-' | b'0'..=b'9' => {
                let len = b[i + 1..]
                    .iter()
                    .position(|c| !matches!(c, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-'))
                    .unwrap_or(b.len() - i - 1);
                (Scalar::Num(&text[i..i + 1 + len]), i + 1 + len)
            }
            _ => return None,
        };
        member(key, value)?;
        i = ws(after);
        match *b.get(i)? {
            b',' => i = ws(i + 1),
            b'}' => return (ws(i + 1) == b.len()).then_some(()),
            _ => return None,
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z` (RFC 3339 in UTC, as exchanges write it) as
/// microseconds since the epoch, the fraction past microseconds dropped as chrono drops
/// it; None for any other form (a full RFC 3339 parser then decides).
fn utc_micros(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        b.get(range)?.iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    if b.len() < 20
        || [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')]
            .iter()
            .any(|&(i, c)| b[i] != c)
    {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    let (h, m, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if h > 23 || m > 59 || s > 59 {
        return None;
    }
    let mut micros = 0i64;
    match &b[19..] {
        [b'Z'] => {}
        [b'.', frac @ .., b'Z'] if (1..=9).contains(&frac.len()) => {
            for i in 0..6 {
                let d = match frac.get(i) {
                    Some(c) if c.is_ascii_digit() => i64::from(c - b'0'),
                    Some(_) => return None,
                    None => 0,
                };
                micros = micros * 10 + d;
            }
            if !frac.iter().all(u8::is_ascii_digit) {
                return None;
            }
        }
        _ => return None,
    }
    let days = i64::from(date.num_days_from_ce() - 719_163);
    Some((days * 86_400 + i64::from(h * 3600 + m * 60 + s)) * 1_000_000 + micros)
}

pub mod binance {
    //! Binance spot, combined streams (`/stream?streams=btcusdt@trade/btcusdt@bookTicker`):
    //! `{"stream": …, "data": {…}}`; bare payloads (single-stream connections) too.

    use super::*;

    pub const EXCHANGE: &str = "BINANCE";

    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        data: Option<&'a RawValue>,
        #[serde(default)]
        result: Option<&'a RawValue>,
        #[serde(default)]
        id: Option<&'a RawValue>,
    }

    #[derive(Deserialize)]
    pub(super) struct TradeEvent<'a> {
        e: &'a str,
        #[serde(rename = "E")]
        event_ms: i64,
        s: &'a str,
        t: i64,
        p: &'a str,
        q: &'a str,
        #[serde(rename = "T")]
        trade_ms: i64,
        m: bool,
    }

    #[derive(Deserialize)]
    pub(super) struct BookTicker<'a> {
        u: i64,
        s: &'a str,
        b: &'a str,
        #[serde(rename = "B")]
        bid_qty: &'a str,
        a: &'a str,
        #[serde(rename = "A")]
        ask_qty: &'a str,
    }

    /// Appends to `out` the records of one frame received at `receive_us` (none for a
    /// subscription acknowledgement); on an error `out` is left as it was.
    pub fn parse(
        frame: &str,
        receive_us: i64,
        out: &mut Vec<MarketRecord>,
    ) -> Result<(), FrameError> {
        // The exact public shapes in one pass; anything else through the full parser.
        match scan(frame) {
            Some(Event::Trade(t)) if t.e == "trade" => {
                out.push(MarketRecord::Trade(trade(&t, receive_us)?));
            }
            Some(Event::Ticker(b)) => out.push(MarketRecord::Quote(quote(&b, receive_us)?)),
            _ => out.extend(parse_full(frame, receive_us)?),
        }
        Ok(())
    }

    /// [`parse`] through serde: every shape, and the messages that name a fault.
    pub(super) fn parse_full(
        frame: &str,
        receive_us: i64,
    ) -> Result<Vec<MarketRecord>, FrameError> {
        let env: Envelope = serde_json::from_str(frame)
            .map_err(|e| FrameError::malformed(format!("not a Binance frame: {e}")))?;
        if env.data.is_none() && env.id.is_some() {
            // `{"result": null, "id": 1}`: a (un)subscription answer.
            return match env.result.map(RawValue::get) {
                None | Some("null") => Ok(Vec::new()),
                Some(other) => Err(FrameError::invalid(format!(
                    "subscription refused: {other}"
                ))),
            };
        }
        let payload = env.data.map_or(frame, RawValue::get);
        if payload.contains("\"e\"") {
            let t: TradeEvent = serde_json::from_str(payload)
                .map_err(|e| FrameError::malformed(format!("trade event: {e}")))?;
            if t.e != "trade" {
                return Err(FrameError::malformed(format!(
                    "unexpected event type '{}'",
                    t.e
                )));
            }
            return Ok(vec![MarketRecord::Trade(trade(&t, receive_us)?)]);
        }
        let b: BookTicker = serde_json::from_str(payload)
            .map_err(|e| FrameError::malformed(format!("book ticker: {e}")))?;
        Ok(vec![MarketRecord::Quote(quote(&b, receive_us)?)])
    }

    pub(super) enum Event<'a> {
        Trade(TradeEvent<'a>),
        Ticker(BookTicker<'a>),
    }

    /// A combined-stream frame (`{"stream":"…","data":{…}}`) or a bare payload whose event
    /// is a flat object with every field of a trade or a book ticker, in one pass; None
    /// for anything else.
    pub(super) fn scan(frame: &str) -> Option<Event<'_>> {
        let payload = match frame.strip_prefix(r#"{"stream":""#) {
            Some(rest) => {
                let name = rest.find('"')?;
                rest[name + 1..]
                    .strip_prefix(r#","data":"#)?
                    .strip_suffix('}')?
            }
            None => frame,
        };
        if let Some(t) = trade_as_sent(payload) {
            return Some(Event::Trade(t));
        }
        // Fields of a trade (e E s t p q T m) and of a book ticker (u s b B a A), by bit.
        const FIELDS: &[u8] = b"eEstpqTmubBaA";
        // A field's bit by its one-letter key.
        const BIT: [u8; 128] = {
            let mut bit = [u8::MAX; 128];
            let mut f = 0;
            while f < FIELDS.len() {
                bit[FIELDS[f] as usize] = f as u8;
                f += 1;
            }
            bit
        };
        let (mut seen, mut text, mut int, mut m) = (0u16, [""; 13], [0i64; 13], false);
        flat_object(payload, |key, value| {
            let f = match key.as_bytes() {
                &[c] if c < 128 && BIT[c as usize] != u8::MAX => usize::from(BIT[c as usize]),
                _ => return Some(()), // other fields are not read, as the full parser does
            };
            if seen & (1 << f) != 0 {
                return None;
            }
            seen |= 1 << f;
            match (f, value) {
                (1 | 3 | 6 | 8, Scalar::Num(n)) => int[f] = small_int(n)?,
                (7, Scalar::Bool(b)) => m = b,
                (0 | 2 | 4 | 5 | 9..=12, Scalar::Str(s)) => text[f] = s,
                _ => return None,
            }
            Some(())
        })?;
        const TRADE: u16 = 0b0000_1111_1111;
        const TICKER: u16 = 0b1_1111_0000_0100;
        if seen & TRADE == TRADE {
            Some(Event::Trade(TradeEvent {
                e: text[0],
                event_ms: int[1],
                s: text[2],
                t: int[3],
                p: text[4],
                q: text[5],
                trade_ms: int[6],
                m,
            }))
        } else if seen & TICKER == TICKER && seen & 1 == 0 {
            Some(Event::Ticker(BookTicker {
                u: int[8],
                s: text[2],
                b: text[9],
                bid_qty: text[10],
                a: text[11],
                ask_qty: text[12],
            }))
        } else {
            None
        }
    }

    /// A trade event laid out exactly as Binance sends one — these members, in this order,
    /// without spaces — read without looking keys up (about half the work of [`scan`]'s
    /// member by member reading); None for any other layout, which [`scan`] then reads.
    pub(super) fn trade_as_sent(payload: &str) -> Option<TradeEvent<'_>> {
        let mut c = Cursor {
            text: payload,
            at: 0,
        };
        c.literal(r#"{"e":"trade","E":"#)?;
        let event_ms = c.int()?;
        c.literal(r#","s":""#)?;
        let s = c.string_rest()?;
        c.literal(r#","t":"#)?;
        let t = c.int()?;
        c.literal(r#","p":""#)?;
        let p = c.string_rest()?;
        c.literal(r#","q":""#)?;
        let q = c.string_rest()?;
        c.literal(r#","T":"#)?;
        let trade_ms = c.int()?;
        c.literal(r#","m":"#)?;
        let m = c.boolean()?;
        // "M" (an ignored flag) is optional.
        if c.literal(r#","M":"#).is_some() {
            c.boolean()?;
        }
        c.literal("}")?;
        c.finished()?;
        Some(TradeEvent {
            e: "trade",
            event_ms,
            s,
            t,
            p,
            q,
            trade_ms,
            m,
        })
    }

    fn trade(t: &TradeEvent<'_>, receive_us: i64) -> Result<Trade, FrameError> {
        let mut digits = itoa::Buffer::new();
        let id = digits.format(t.t);
        Ok(Trade {
            message_id: MessageId::from_source(&[EXCHANGE, "trade", t.s, id]),
            trade_id: native_id(EXCHANGE, t.s, id),
            symbol: t.s.into(),
            exchange: EXCHANGE.into(),
            asset_class: AssetClass::Crypto,
            timestamp_us: t.trade_ms * 1_000,
            receive_timestamp_us: receive_us,
            price: positive("price", t.p)?,
            quantity: positive("quantity", t.q)?,
            currency: binance_quote_currency(t.s).into(),
            // The buyer was the maker: the seller hit the bid.
            side: if t.m { TradeSide::Sell } else { TradeSide::Buy },
            trade_conditions: Vec::new(),
            // Trade ids are consecutive per symbol: the sequence tracker sees gaps.
            source_sequence: Some(t.t),
            ingestion_timestamp_us: receive_us,
            platform_sequence: None,
            vendor_data: Some([("event_time_ms", itoa::Buffer::new().format(t.event_ms))].into()),
        })
    }

    fn quote(b: &BookTicker<'_>, receive_us: i64) -> Result<Quote, FrameError> {
        let mut digits = itoa::Buffer::new();
        let id = digits.format(b.u);
        let side = |field: &str, text: &str| {
            // An empty side is sent as zeros.
            if exact_decimal(text).is_some_and(|d| d.units() == 0) {
                Ok(Decimal8::ZERO)
            } else {
                positive(field, text)
            }
        };
        Ok(Quote {
            message_id: MessageId::from_source(&[EXCHANGE, "bookTicker", b.s, id]),
            quote_id: native_id(EXCHANGE, b.s, id),
            symbol: b.s.into(),
            exchange: EXCHANGE.into(),
            asset_class: AssetClass::Crypto,
            // Spot book tickers carry no time: the receive time stands for it.
            timestamp_us: receive_us,
            receive_timestamp_us: receive_us,
            bid_price: side("bid price", b.b)?,
            bid_quantity: side("bid quantity", b.bid_qty)?,
            ask_price: side("ask price", b.a)?,
            ask_quantity: side("ask quantity", b.ask_qty)?,
            currency: binance_quote_currency(b.s).into(),
            // Update ids rise but skip: not a sequence to track gaps in.
            source_sequence: None,
            ingestion_timestamp_us: receive_us,
            platform_sequence: None,
            vendor_data: Some([("update_id", id)].into()),
        })
    }
}

pub mod kraken {
    //! Kraken WebSocket API v2: `{"channel": "trade", "type": "snapshot"|"update", "data":
    //! [trade, …]}`; heartbeats, status and method answers carry no records.

    use super::*;

    pub const EXCHANGE: &str = "KRAKEN";

    #[derive(Deserialize)]
    struct Frame<'a> {
        #[serde(default)]
        channel: Option<&'a str>,
        #[serde(default)]
        method: Option<&'a str>,
        #[serde(default)]
        success: Option<bool>,
        #[serde(default)]
        error: Option<String>,
        #[serde(default, borrow)]
        data: Option<Vec<&'a RawValue>>,
    }

    #[derive(Deserialize)]
    struct TradeItem<'a> {
        symbol: &'a str,
        side: &'a str,
        price: &'a RawValue,
        qty: &'a RawValue,
        trade_id: i64,
        timestamp: &'a str,
        #[serde(default)]
        ord_type: Option<&'a str>,
    }

    /// Appends to `out` the records of one frame received at `receive_us`: every trade it
    /// carries, or none if any of them is refused.
    pub fn parse(
        frame: &str,
        receive_us: i64,
        out: &mut Vec<MarketRecord>,
    ) -> Result<(), FrameError> {
        let mut items = Vec::with_capacity(16);
        if trades_as_sent(frame, &mut items).is_some() {
            return trades(items.into_iter().map(Ok), receive_us, out);
        }
        parse_full(frame, receive_us, out)
    }

    /// [`parse`] through serde, for every frame [`trades_as_sent`] does not read.
    pub(super) fn parse_full(
        frame: &str,
        receive_us: i64,
        out: &mut Vec<MarketRecord>,
    ) -> Result<(), FrameError> {
        let f: Frame = serde_json::from_str(frame)
            .map_err(|e| FrameError::malformed(format!("not a Kraken v2 frame: {e}")))?;
        if let Some(method) = f.method {
            return match (f.success, f.error.as_deref()) {
                (Some(false), e) | (_, e @ Some(_)) => Err(FrameError::invalid(format!(
                    "{method} refused: {}",
                    e.unwrap_or("no reason given")
                ))),
                _ => Ok(()),
            };
        }
        match f.channel {
            Some("trade") => {}
            Some("heartbeat" | "status") => return Ok(()),
            Some(other) => {
                return Err(FrameError::malformed(format!(
                    "unexpected channel '{other}'"
                )));
            }
            None => return Err(FrameError::malformed("a frame without channel or method")),
        }
        let items = f
            .data
            .ok_or_else(|| FrameError::malformed("a trade frame without data"))?;
        let items = items.into_iter().map(|raw| {
            serde_json::from_str(raw.get())
                .map(|t: TradeItem| Fields {
                    symbol: t.symbol,
                    side: t.side,
                    price: t.price.get(),
                    qty: t.qty.get(),
                    trade_id: t.trade_id,
                    timestamp: t.timestamp,
                    ord_type: t.ord_type,
                })
                .map_err(|e| FrameError::malformed(e.to_string()))
        });
        trades(items, receive_us, out)
    }

    /// A trade's members, as read from the frame.
    pub(super) struct Fields<'a> {
        symbol: &'a str,
        side: &'a str,
        price: &'a str,
        qty: &'a str,
        trade_id: i64,
        timestamp: &'a str,
        ord_type: Option<&'a str>,
    }

    /// Appends the trades of a frame; none if any is refused (the error names which).
    fn trades<'a>(
        items: impl Iterator<Item = Result<Fields<'a>, FrameError>>,
        receive_us: i64,
        out: &mut Vec<MarketRecord>,
    ) -> Result<(), FrameError> {
        let before = out.len();
        for (i, item) in items.enumerate() {
            match item.and_then(|t| trade(&t, receive_us)) {
                Ok(t) => out.push(MarketRecord::Trade(t)),
                Err(e) => {
                    out.truncate(before);
                    return Err(FrameError {
                        reason: format!("trade {i} of the frame: {}", e.reason),
                        ..e
                    });
                }
            }
        }
        Ok(())
    }

    /// A trade frame laid out exactly as Kraken sends one — `channel`, `type`, `data`,
    /// each trade's members in Kraken's order, no spaces — read without looking keys up
    /// (serde's reading of it was two thirds of the feed thread); None for any other
    /// layout, which the full parser then reads.
    pub(super) fn trades_as_sent<'a>(frame: &'a str, items: &mut Vec<Fields<'a>>) -> Option<()> {
        let mut c = Cursor { text: frame, at: 0 };
        c.literal(r#"{"channel":"trade","type":""#)?;
        c.string_rest()?;
        c.literal(r#","data":["#)?;
        if c.literal("]").is_none() {
            loop {
                c.literal(r#"{"symbol":""#)?;
                let symbol = c.string_rest()?;
                c.literal(r#","side":""#)?;
                let side = c.string_rest()?;
                c.literal(r#","price":"#)?;
                let price = c.number()?;
                c.literal(r#","qty":"#)?;
                let qty = c.number()?;
                let ord_type = match c.literal(r#","ord_type":""#) {
                    Some(()) => Some(c.string_rest()?),
                    None => None,
                };
                c.literal(r#","trade_id":"#)?;
                let trade_id = c.int()?;
                c.literal(r#","timestamp":""#)?;
                let timestamp = c.string_rest()?;
                c.literal("}")?;
                items.push(Fields {
                    symbol,
                    side,
                    price,
                    qty,
                    trade_id,
                    timestamp,
                    ord_type,
                });
                if c.literal(",").is_none() {
                    c.literal("]")?;
                    break;
                }
            }
        }
        c.literal("}")?;
        c.finished()
    }

    fn trade(t: &Fields<'_>, receive_us: i64) -> Result<Trade, FrameError> {
        let at = match utc_micros(t.timestamp) {
            Some(at) => at,
            None => chrono::DateTime::parse_from_rfc3339(t.timestamp)
                .map_err(|e| FrameError::malformed(format!("timestamp '{}': {e}", t.timestamp)))?
                .timestamp_micros(),
        };
        let side = match t.side {
            "buy" => TradeSide::Buy,
            "sell" => TradeSide::Sell,
            other => return Err(FrameError::invalid(format!("side '{other}'"))),
        };
        let mut digits = itoa::Buffer::new();
        let id = digits.format(t.trade_id);
        let mut vendor = k2_model::VendorData::new();
        if let Some(o) = t.ord_type {
            vendor.insert("ord_type", o);
        }
        Ok(Trade {
            message_id: MessageId::from_source(&[EXCHANGE, "trade", t.symbol, id]),
            trade_id: native_id(EXCHANGE, t.symbol, id),
            symbol: t.symbol.into(),
            exchange: EXCHANGE.into(),
            asset_class: AssetClass::Crypto,
            timestamp_us: at,
            receive_timestamp_us: receive_us,
            price: positive("price", t.price)?,
            quantity: positive("qty", t.qty)?,
            currency: t.symbol.rsplit_once('/').map_or("", |(_, q)| q).into(),
            side,
            trade_conditions: Vec::new(),
            // v2 trade ids are consecutive per pair.
            source_sequence: Some(t.trade_id),
            ingestion_timestamp_us: receive_us,
            platform_sequence: None,
            vendor_data: (!vendor.is_empty()).then_some(vendor),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000_000;

    /// The records of one frame, as [`binance::parse`] appends them to an empty batch.
    fn binance_records(frame: &str, at: i64) -> Result<Vec<MarketRecord>, FrameError> {
        let mut out = Vec::new();
        binance::parse(frame, at, &mut out).map(|()| out)
    }

    fn kraken_records(frame: &str, at: i64) -> Result<Vec<MarketRecord>, FrameError> {
        let mut out = Vec::new();
        kraken::parse(frame, at, &mut out).map(|()| out)
    }

    fn trade(r: &MarketRecord) -> &Trade {
        match r {
            MarketRecord::Trade(t) => t,
            other => panic!("not a trade: {other:?}"),
        }
    }

    #[test]
    fn binance_trade_from_a_combined_stream() {
        let frame = r#"{"stream":"btcusdt@trade","data":{"e":"trade","E":1672515782136,"s":"BTCUSDT","t":12345,"p":"16500.12000000","q":"0.00100000","T":1672515782134,"m":true,"M":true}}"#;
        let records = binance_records(frame, NOW).unwrap();
        let t = trade(&records[0]);
        assert_eq!(t.price.to_string(), "16500.12");
        assert_eq!(t.quantity.units(), 100_000);
        assert_eq!((t.side, t.currency.as_str()), (TradeSide::Sell, "USDT"));
        assert_eq!(
            (t.timestamp_us, t.source_sequence),
            (1_672_515_782_134_000, Some(12345))
        );
        assert_eq!(t.trade_id, "BINANCE-BTCUSDT-12345");
        // The same trade received again, later: the same identity.
        let again = binance_records(frame, NOW + 5).unwrap();
        assert_eq!(trade(&again[0]).message_id, t.message_id);
    }

    #[test]
    fn binance_fast_path_agrees_with_the_full_parser() {
        let frames = [
            r#"{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":7,"p":"1.5","q":"2","T":3,"m":false,"M":true}}"#,
            r#"{"e":"trade","E":1,"s":"BTCUSDT","t":7,"p":"1.5","q":"2","T":3,"m":true,"M":true}"#,
            r#"{"stream":"x","data":{ "T" : 3 , "m":true,"e":"trade","E":1,"s":"ETHBTC","t":8,"p":"0.1","q":"2"}}"#,
            r#"{"stream":"x","data":{"e":"trade","E":1,"s":"ETHBTC","t":8,"p":"0.1","q":"2","T":3,"m":true,"x":null}}"#,
            r#"{"stream":"x","data":{"e":"trade","E":1,"s":"BTCUSDT","t":7,"p":"1.5","q":"2","T":3,"m":true},"more":1}"#,
            r#"{"stream":"x","data":{"e":"trade","E":1,"s":"BTCUSDT","t":7,"p":"1.5","q":"2","T":3,"m":true}}"#,
            r#"{"stream":"x","data":{"e":"trade","E":1,"s":"BTCUSDT","t":7,"t":8,"p":"1.5","q":"2","T":3,"m":true}}"#,
            r#"{"stream":"x","data":{"e":"trade","E":1,"s":"BTCUSDT","t":7.5,"p":"1.5","q":"2","T":3,"m":true}}"#,
            r#"{"stream":"x","data":{"e":"trade","E":1,"s":"BTCUSDT","t":7,"p":1.5,"q":"2","T":3,"m":true}}"#,
            r#"{"stream":"x","data":{"e":"trade","E":1,"s":"BTCUSDT","t":7,"p":"-1.5","q":"2","T":3,"m":true}}"#,
            r#"{"stream":"x","data":{"e":"trade","E":1,"s":"BTCUSDT","p":"1.5","q":"2","T":3,"m":true}}"#,
            r#"{"stream":"x","data":{"e":"aggTrade","E":1,"s":"BTCUSDT","t":7,"p":"1.5","q":"2","T":3,"m":true}}"#,
            r#"{"stream":"x","data":{"e":"trade","E":1,"s":"BTCUSDT","t":7,"p":"1.5","q":"2","T":3,"m":"yes"}}"#,
            r#"{"stream":"x","data":{"u":9,"s":"ETHUSDT","b":"1.1","B":"2","a":"1.2","A":"0"}}"#,
            r#"{"u":9,"s":"ETHUSDT","b":"0","B":"0","a":"1.2","A":"3"}"#,
            r#"{"stream":"x","data":{"u":9,"s":"ETHUSDT","b":"1.1","B":"2","a":"1.2"}}"#,
            r#"{"result":null,"id":1}"#,
            r#"{"stream":"x","data":{"e":"trade","E":1,"s":"BTCUSDT","t":7,"p":"1.5","q":"2","T":3,"m":true}"#,
            r#"{"e":"trade","E":1,"s":"BTCUSDT","t":07,"p":"1.5","q":"2","T":3,"m":true,"M":true}"#,
            r#"{"e":"trade","E":1.5,"s":"BTCUSDT","t":7,"p":"1.5","q":"2","T":3,"m":true,"M":true}"#,
            r#"{"e":"trade","E":1,"s":"BTC\"USDT","t":7,"p":"1.5","q":"2","T":3,"m":true,"M":true}"#,
            r#"{"e":"trade","E":1,"s":"BTCUSDT","t":7,"p":"1.5","q":"2","T":3,"m":true,"M":1}"#,
            r#"{"e":"trade","E":1,"s":"BTCUSDT","t":7,"p":"1.5","q":"2","T":3,"m":true,"M":true} "#,
            "not json",
            "",
        ];
        // The public shapes take the fast path (the others fall back); trades laid out as
        // Binance sends them are read without looking keys up.
        for i in [0, 1, 2, 9, 13, 14, 22] {
            assert!(binance::scan(frames[i]).is_some(), "{}", frames[i]);
        }
        let data = |frame: &'static str| {
            frame
                .split_once(r#""data":"#)
                .map_or(frame, |(_, d)| &d[..d.len() - 1])
        };
        for i in [0, 1, 5, 9] {
            assert!(
                binance::trade_as_sent(data(frames[i])).is_some(),
                "{}",
                frames[i]
            );
        }
        for i in [2, 18, 19, 20, 21, 22] {
            assert!(
                binance::trade_as_sent(data(frames[i])).is_none(),
                "{}",
                frames[i]
            );
        }
        for frame in frames {
            assert_eq!(
                binance_records(frame, NOW),
                binance::parse_full(frame, NOW),
                "{frame}"
            );
        }
    }

    #[test]
    fn binance_book_ticker_and_acknowledgements() {
        let frame = r#"{"stream":"ethusdt@bookTicker","data":{"u":400900217,"s":"ETHUSDT","b":"1200.10","B":"31.21","a":"1200.20","A":"0.00000000"}}"#;
        let MarketRecord::Quote(q) = &binance_records(frame, NOW).unwrap()[0] else {
            panic!("not a quote")
        };
        assert_eq!(
            (q.bid_price.to_string(), q.ask_quantity),
            ("1200.1".to_string(), Decimal8::ZERO)
        );
        assert_eq!((q.timestamp_us, q.source_sequence), (NOW, None));
        assert!(
            binance_records(r#"{"result":null,"id":1}"#, NOW)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            binance_records(r#"{"result":{"code":2},"id":1}"#, NOW)
                .unwrap_err()
                .kind,
            "invalid"
        );
    }

    #[test]
    fn bad_frames_are_refused_with_a_reason() {
        for (frame, kind) in [
            ("{not json", "malformed"),
            (
                r#"{"data":{"e":"trade","E":1,"s":"X","t":1,"p":"0","q":"1","T":1,"m":false}}"#,
                "invalid",
            ),
            (
                r#"{"data":{"e":"trade","E":1,"s":"X","t":1,"p":"1.123456789","q":"1","T":1,"m":false}}"#,
                "invalid",
            ),
            (
                r#"{"data":{"e":"aggTrade","E":1,"s":"X","t":1,"p":"1","q":"1","T":1,"m":false}}"#,
                "malformed",
            ),
        ] {
            let e = binance_records(frame, NOW).unwrap_err();
            assert_eq!(e.kind, kind, "{frame}: {e}");
            assert!(!e.reason.is_empty());
        }
    }

    #[test]
    fn kraken_keeps_every_trade_of_a_frame() {
        let frame = r#"{"channel":"trade","type":"update","data":[
            {"symbol":"BTC/USD","side":"buy","price":42000.1,"qty":0.5,"ord_type":"market","trade_id":100,"timestamp":"2023-09-25T07:49:37.708706Z"},
            {"symbol":"BTC/USD","side":"sell","price":42000.05,"qty":1.5e-5,"ord_type":"limit","trade_id":101,"timestamp":"2023-09-25T07:49:37.708800Z"},
            {"symbol":"BTC/USD","side":"buy","price":42001,"qty":2,"ord_type":"market","trade_id":102,"timestamp":"2023-09-25T07:49:38Z"}]}"#;
        let records = kraken_records(frame, NOW).unwrap();
        assert_eq!(records.len(), 3, "every trade of the frame");
        let t: Vec<&Trade> = records.iter().map(trade).collect();
        assert_eq!(t[0].price.to_string(), "42000.1");
        assert_eq!(t[1].quantity.units(), 1_500, "1.5e-5 exactly");
        assert_eq!(t[1].side, TradeSide::Sell);
        assert_eq!(t[2].timestamp_us, 1_695_628_178_000_000);
        assert_eq!(
            t.iter()
                .map(|t| t.source_sequence.unwrap())
                .collect::<Vec<_>>(),
            [100, 101, 102]
        );
        assert_eq!(t[0].currency, "USD");
        assert_ne!(t[0].message_id, t[1].message_id);
    }

    #[test]
    fn kraken_fast_path_agrees_with_the_full_parser() {
        let t = |price: &str, more: &str| {
            format!(
                r#"{{"symbol":"BTC/USD","side":"buy","price":{price},"qty":0.25,"ord_type":"market","trade_id":7,"timestamp":"2023-09-25T07:49:37.708706Z"{more}}}"#
            )
        };
        let frame = |trades: &[String]| {
            format!(
                r#"{{"channel":"trade","type":"update","data":[{}]}}"#,
                trades.join(",")
            )
        };
        let fast = [
            frame(&[t("42000.5", ""), t("1", ""), t("0.1", "")]),
            frame(&[]),
            frame(&[t("1.5e-5", ""), t("2E+2", ""), t("-1", "")]),
            frame(&[t("0", "")]),
            frame(&[t("1", "").replace(r#","ord_type":"market""#, "")]),
            frame(&[t("1", "").replace("buy", "hold")]),
            frame(&[t("1", "").replace(".708706Z", "Z")]),
            frame(&[t("1", "").replace(".708706Z", ".7087069Z")]),
            frame(&[t("1", "").replace(".708706Z", "+01:00")]),
            frame(&[t("1", "").replace("07:49:37", "24:00:00")]),
            frame(&[t("1", "").replace("2023-09-25", "2023-02-29")]),
            frame(&[t("1", "").replace("2023-09-25", "2024-02-29")]),
            frame(&[t("1", "").replace(".708706Z", ".Z")]),
            frame(&[t("1", "").replace("07:49:37", "07:49:60")]),
            frame(&[t("1", "").replace("T07", "t07")]),
            frame(&[t("1", "").replace("2023", "1969")]),
            frame(&[t("1", "").replace("\"type\":\"update\"", "\"type\":\"snapshot\"")]),
        ];
        let slow = [
            frame(&[t("01", "")]),
            frame(&[t("1.", "")]),
            frame(&[t("1e", "")]),
            frame(&[t("\"1\"", "")]),
            frame(&[t("1", r#","extra":1"#)]),
            frame(&[t("1", "").replace("7,", "7.5,")]),
            frame(&[t("1", "").replace("7,", "-7,")]),
            frame(&[t("1", "").replace("BTC/USD", "BTC\\/USD")]),
            frame(&[t("1", ""), "{}".into()]),
            frame(&[t("1", "")]).replace(r#""type":"update","#, ""),
            frame(&[t("1", "")]).replace("trade", "book"),
            format!("{} ", frame(&[t("1", "")])),
            frame(&[t("1", "")]).replace("]}", "]"),
            frame(&[t("1", "")]).replace(":[", ": ["),
            "not json".into(),
            String::new(),
        ];
        let run = |f: fn(&str, i64, &mut Vec<MarketRecord>) -> Result<(), FrameError>,
                   frame: &str| {
            let mut out = Vec::new();
            f(frame, NOW, &mut out).map(|()| out)
        };
        for (frames, takes_fast_path) in [(&fast[..], true), (&slow[..], false)] {
            for frame in frames {
                let mut items = Vec::new();
                assert_eq!(
                    kraken::trades_as_sent(frame, &mut items).is_some(),
                    takes_fast_path,
                    "{frame}"
                );
                assert_eq!(
                    run(kraken::parse, frame),
                    run(kraken::parse_full, frame),
                    "{frame}"
                );
            }
        }
    }

    #[test]
    fn utc_timestamps_agree_with_chrono() {
        let plain = [
            "2023-09-25T07:49:37.708706Z",
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59.999999Z",
            "2024-02-29T12:00:00.1Z",
            "2000-02-29T00:00:00.123456789Z",
        ];
        let mut texts: Vec<String> = plain.iter().map(|t| t.to_string()).collect();
        texts.extend([
            "2100-02-29T00:00:00Z".into(),
            "2023-13-01T00:00:00Z".into(),
            "2023-00-10T00:00:00Z".into(),
            "2023-09-31T00:00:00Z".into(),
            "2023-09-25T07:49:37.1234567890Z".into(),
            "2023-09-25T07:49:37+00:00".into(),
            "2023-09-25 07:49:37Z".into(),
            "2023-9-25T07:49:37Z".into(),
            "2023-09-25T07:49:3xZ".into(),
        ]);
        for day in 0..800 {
            let d = chrono::NaiveDate::from_ymd_opt(1999, 1, 1).unwrap()
                + chrono::Duration::days(day * 37);
            texts.push(format!(
                "{d}T{:02}:{:02}:{:02}.{:06}Z",
                day % 24,
                day % 60,
                (day * 7) % 60,
                day * 1237
            ));
        }
        for text in &texts {
            let full = chrono::DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|t| t.timestamp_micros());
            match utc_micros(text) {
                Some(fast) => assert_eq!(Some(fast), full, "{text}"),
                // Rarer forms (offsets, over 9 digits of fraction) are chrono's to read.
                None => assert!(
                    !(plain.contains(&text.as_str())
                        || text.starts_with(['1', '2']) && text.len() == 27 && full.is_some()),
                    "{text} is left to chrono although it is plain UTC"
                ),
            }
        }
    }

    #[test]
    fn kraken_control_frames_and_refusals() {
        for frame in [
            r#"{"channel":"heartbeat"}"#,
            r#"{"channel":"status","type":"update","data":[{"system":"online"}]}"#,
            r#"{"method":"subscribe","result":{"channel":"trade","symbol":"BTC/USD"},"success":true,"time_in":"x","time_out":"y"}"#,
        ] {
            assert!(kraken_records(frame, NOW).unwrap().is_empty(), "{frame}");
        }
        let refused =
            r#"{"method":"subscribe","error":"Currency pair not supported","success":false}"#;
        assert_eq!(kraken_records(refused, NOW).unwrap_err().kind, "invalid");
        let bad_second = r#"{"channel":"trade","type":"update","data":[
            {"symbol":"BTC/USD","side":"buy","price":1,"qty":1,"trade_id":1,"timestamp":"2023-09-25T07:49:37Z"},
            {"symbol":"BTC/USD","side":"buy","price":-1,"qty":1,"trade_id":2,"timestamp":"2023-09-25T07:49:37Z"}]}"#;
        let e = kraken_records(bad_second, NOW).unwrap_err();
        assert!(e.reason.starts_with("trade 1 of the frame"), "{e}");
        let good = r#"{"channel":"trade","type":"update","data":[
            {"symbol":"BTC/USD","side":"buy","price":1,"qty":1,"trade_id":1,"timestamp":"2023-09-25T07:49:37Z"}]}"#;
        let mut batch = Vec::new();
        kraken::parse(good, NOW, &mut batch).unwrap();
        assert!(kraken::parse(bad_second, NOW, &mut batch).is_err());
        assert_eq!(batch.len(), 1, "a refused frame leaves the batch as it was");
    }

    #[test]
    fn numbers_with_exponents_are_exact() {
        for (text, units) in [
            ("1e0", 100_000_000),
            ("2.5E+2", 25_000_000_000),
            ("1.5e-8", -1),
            ("12e-8", 12),
            ("0.10", 10_000_000),
        ] {
            assert_eq!(
                exact_decimal(text).map_or(-1, |d| d.units()),
                units,
                "{text}"
            );
        }
    }
}
