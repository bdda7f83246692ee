//! Kraken frames into records: every trade of a frame (or none, if any is refused), the
//! layout Kraken sends read in one pass, every other shape through serde.

use k2_model::{AssetClass, MarketRecord, MessageId, Trade, TradeSide};

use super::EXCHANGE;
use super::messages::{Fields, Frame, TradeItem};
use crate::feeds::FrameError;
use crate::feeds::json::{Cursor, utc_micros};
use crate::feeds::values::{native_id, positive};

/// Appends to `out` the records of one frame received at `receive_us`: every trade it
/// carries, or none if any of them is refused.
pub(super) fn parse(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feeds::Venue;
    use crate::feeds::testing::{records, trade};

    const NOW: i64 = 1_700_000_000_000_000;

    /// The records of one frame of this venue.
    fn kraken_records(frame: &str, at: i64) -> Result<Vec<MarketRecord>, FrameError> {
        records(Venue::Kraken, frame, at)
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
                    trades_as_sent(frame, &mut items).is_some(),
                    takes_fast_path,
                    "{frame}"
                );
                assert_eq!(run(parse, frame), run(parse_full, frame), "{frame}");
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
        parse(good, NOW, &mut batch).unwrap();
        assert!(parse(bad_second, NOW, &mut batch).is_err());
        assert_eq!(batch.len(), 1, "a refused frame leaves the batch as it was");
    }
}
