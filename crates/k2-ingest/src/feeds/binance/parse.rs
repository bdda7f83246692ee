//! Binance frames into records: the layout Binance sends read in one pass, every other
//! shape through serde (which names what is wrong).

use k2_model::decimal::Decimal8;
use k2_model::{AssetClass, MarketRecord, MessageId, Quote, Trade, TradeSide};
use serde_json::value::RawValue;

use super::EXCHANGE;
use super::messages::{BookTicker, Envelope, Event, TradeEvent};
use crate::feeds::FrameError;
use crate::feeds::json::{Cursor, Scalar, flat_object, small_int};
use crate::feeds::values::{exact_decimal, native_id, positive};

/// Appends to `out` the records of one frame received at `receive_us` (none for a
/// subscription acknowledgement); on an error `out` is left as it was.
pub(super) fn parse(
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
pub(super) fn parse_full(frame: &str, receive_us: i64) -> Result<Vec<MarketRecord>, FrameError> {
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
        currency: quote_currency(t.s).into(),
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
        currency: quote_currency(b.s).into(),
        // Update ids rise but skip: not a sequence to track gaps in.
        source_sequence: None,
        ingestion_timestamp_us: receive_us,
        platform_sequence: None,
        vendor_data: Some([("update_id", id)].into()),
    })
}

/// The quote currency of a Binance symbol (`BTCUSDT` → `USDT`), from the assets Binance
/// quotes in; empty when none matches.
fn quote_currency(symbol: &str) -> &'static str {
    const QUOTES: [&str; 12] = [
        "FDUSD", "USDT", "USDC", "TUSD", "BUSD", "EUR", "TRY", "BRL", "BTC", "ETH", "BNB", "JPY",
    ];
    QUOTES
        .into_iter()
        .find(|q| symbol.len() > q.len() && symbol.ends_with(q))
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use k2_model::MarketRecord;

    use super::*;
    use crate::feeds::Venue;
    use crate::feeds::testing::{records, trade};

    const NOW: i64 = 1_700_000_000_000_000;

    /// The records of one frame of this venue.
    fn binance_records(frame: &str, at: i64) -> Result<Vec<MarketRecord>, FrameError> {
        records(Venue::Binance, frame, at)
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
            assert!(scan(frames[i]).is_some(), "{}", frames[i]);
        }
        let data = |frame: &'static str| {
            frame
                .split_once(r#""data":"#)
                .map_or(frame, |(_, d)| &d[..d.len() - 1])
        };
        for i in [0, 1, 5, 9] {
            assert!(trade_as_sent(data(frames[i])).is_some(), "{}", frames[i]);
        }
        for i in [2, 18, 19, 20, 21, 22] {
            assert!(trade_as_sent(data(frames[i])).is_none(), "{}", frames[i]);
        }
        for frame in frames {
            assert_eq!(
                binance_records(frame, NOW),
                parse_full(frame, NOW),
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
}
