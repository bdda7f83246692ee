//! The codec against the reference: apache-avro must read what K2 writes (and vice versa)
//! using only the `.avsc` files, for any record.

use std::collections::HashMap;

use apache_avro::types::Value;
use apache_avro::{Schema, from_avro_datum, to_avro_datum};
use proptest::prelude::*;

use crate::avro::{self, HEADER_LEN};
use crate::*;

/// Empty, short (kept inline) and long (on the heap) text.
fn text() -> impl Strategy<Value = Text> {
    prop_oneof![
        Just(String::new()),
        "[a-zA-Z0-9 _.-]{1,12}",
        "\\PC{0,6}",
        "[a-z0-9-]{25,40}"
    ]
    .prop_map(Text::from)
}

fn decimal() -> impl Strategy<Value = Decimal8> {
    (-999_999_999_999_999_999i64..=999_999_999_999_999_999)
        .prop_map(|u| Decimal8::from_units(u).unwrap())
}

fn vendor() -> impl Strategy<Value = Option<VendorData>> {
    proptest::option::of(
        proptest::collection::btree_map(text(), text(), 0..4).prop_map(|m| m.into_iter().collect()),
    )
}

fn asset() -> impl Strategy<Value = AssetClass> {
    proptest::sample::select(AssetClass::ALL)
}

prop_compose! {
    fn trade()(ids in (any::<u128>().prop_map(MessageId::from_u128), text(), text(), text(), text()), asset in asset(), ts in any::<(i64, i64, i64)>(),
               price in decimal(), qty in decimal(), side in proptest::sample::select(TradeSide::ALL),
               conds in proptest::collection::vec(text(), 0..3), seqs in any::<(Option<i64>, Option<i64>)>(),
               vendor in vendor()) -> Trade {
        Trade { message_id: ids.0, trade_id: ids.1, symbol: ids.2, exchange: ids.3, asset_class: asset,
                timestamp_us: ts.0, receive_timestamp_us: ts.1, price, quantity: qty, currency: ids.4, side,
                trade_conditions: conds, source_sequence: seqs.0, ingestion_timestamp_us: ts.2,
                platform_sequence: seqs.1, vendor_data: vendor }
    }
}

prop_compose! {
    fn quote()(ids in (any::<u128>().prop_map(MessageId::from_u128), text(), text(), text(), text()), asset in asset(), ts in any::<(i64, i64, i64)>(),
               px in (decimal(), decimal(), decimal(), decimal()), seqs in any::<(Option<i64>, Option<i64>)>(),
               vendor in vendor()) -> Quote {
        Quote { message_id: ids.0, quote_id: ids.1, symbol: ids.2, exchange: ids.3, asset_class: asset,
                timestamp_us: ts.0, receive_timestamp_us: ts.1, bid_price: px.0, bid_quantity: px.1,
                ask_price: px.2, ask_quantity: px.3, currency: ids.4, source_sequence: seqs.0,
                ingestion_timestamp_us: ts.2, platform_sequence: seqs.1, vendor_data: vendor }
    }
}

prop_compose! {
    fn reference()(ids in (any::<u128>().prop_map(MessageId::from_u128), text(), text(), text(), text()), asset in asset(),
                   opts in (proptest::option::of(text()), proptest::option::of(text())),
                   dates in any::<(Option<i64>, Option<i64>)>(), active in any::<bool>(),
                   ts in any::<(i64, i64)>(), vendor in vendor()) -> ReferenceData {
        ReferenceData { message_id: ids.0, company_id: ids.1, symbol: ids.2, exchange: ids.3, asset_class: asset,
                        company_name: ids.4, isin: opts.0, currency: opts.1, listing_date_us: dates.0,
                        delisting_date_us: dates.1, is_active: active, receive_timestamp_us: ts.0,
                        ingestion_timestamp_us: ts.1, vendor_data: vendor }
    }
}

fn record() -> impl Strategy<Value = MarketRecord> {
    prop_oneof![
        trade().prop_map(MarketRecord::Trade),
        quote().prop_map(MarketRecord::Quote),
        reference().prop_map(MarketRecord::Reference),
    ]
}

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}
fn dec(d: Decimal8) -> Value {
    let (buf, start) = d.to_be_bytes_min();
    Value::Decimal(apache_avro::Decimal::from(buf[start..].to_vec()))
}
fn opt_long(v: Option<i64>) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(v) => Value::Union(1, Box::new(Value::Long(v))),
    }
}
fn opt_ts(v: Option<i64>) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(v) => Value::Union(1, Box::new(Value::TimestampMicros(v))),
    }
}
fn opt_str(v: &Option<Text>) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(v) => Value::Union(1, Box::new(s(v))),
    }
}
fn vendor_value(v: &Option<VendorData>) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(m) => Value::Union(
            1,
            Box::new(Value::Map(
                m.iter()
                    .map(|(k, v)| (k.to_string(), s(v)))
                    .collect::<HashMap<_, _>>(),
            )),
        ),
    }
}
fn enum_value<T: Copy + std::fmt::Display>(index: usize, v: T) -> Value {
    Value::Enum(index as u32, v.to_string())
}

/// The record as apache-avro's generic value, built field by field from the schema's order.
fn to_value(record: &MarketRecord) -> Value {
    let fields: Vec<(&str, Value)> = match record {
        MarketRecord::Trade(t) => vec![
            ("message_id", s(&t.message_id.to_string())),
            ("trade_id", s(&t.trade_id)),
            ("symbol", s(&t.symbol)),
            ("exchange", s(&t.exchange)),
            (
                "asset_class",
                enum_value(t.asset_class.index(), t.asset_class),
            ),
            ("timestamp", Value::TimestampMicros(t.timestamp_us)),
            (
                "receive_timestamp",
                Value::TimestampMicros(t.receive_timestamp_us),
            ),
            ("price", dec(t.price)),
            ("quantity", dec(t.quantity)),
            ("currency", s(&t.currency)),
            ("side", enum_value(t.side.index(), t.side)),
            (
                "trade_conditions",
                Value::Array(t.trade_conditions.iter().map(|c| s(c)).collect()),
            ),
            ("source_sequence", opt_long(t.source_sequence)),
            (
                "ingestion_timestamp",
                Value::TimestampMicros(t.ingestion_timestamp_us),
            ),
            ("platform_sequence", opt_long(t.platform_sequence)),
            ("vendor_data", vendor_value(&t.vendor_data)),
        ],
        MarketRecord::Quote(q) => vec![
            ("message_id", s(&q.message_id.to_string())),
            ("quote_id", s(&q.quote_id)),
            ("symbol", s(&q.symbol)),
            ("exchange", s(&q.exchange)),
            (
                "asset_class",
                enum_value(q.asset_class.index(), q.asset_class),
            ),
            ("timestamp", Value::TimestampMicros(q.timestamp_us)),
            (
                "receive_timestamp",
                Value::TimestampMicros(q.receive_timestamp_us),
            ),
            ("bid_price", dec(q.bid_price)),
            ("bid_quantity", dec(q.bid_quantity)),
            ("ask_price", dec(q.ask_price)),
            ("ask_quantity", dec(q.ask_quantity)),
            ("currency", s(&q.currency)),
            ("source_sequence", opt_long(q.source_sequence)),
            (
                "ingestion_timestamp",
                Value::TimestampMicros(q.ingestion_timestamp_us),
            ),
            ("platform_sequence", opt_long(q.platform_sequence)),
            ("vendor_data", vendor_value(&q.vendor_data)),
        ],
        MarketRecord::Reference(r) => vec![
            ("message_id", s(&r.message_id.to_string())),
            ("company_id", s(&r.company_id)),
            ("symbol", s(&r.symbol)),
            ("exchange", s(&r.exchange)),
            (
                "asset_class",
                enum_value(r.asset_class.index(), r.asset_class),
            ),
            ("company_name", s(&r.company_name)),
            ("isin", opt_str(&r.isin)),
            ("currency", opt_str(&r.currency)),
            ("listing_date", opt_ts(r.listing_date_us)),
            ("delisting_date", opt_ts(r.delisting_date_us)),
            ("is_active", Value::Boolean(r.is_active)),
            (
                "receive_timestamp",
                Value::TimestampMicros(r.receive_timestamp_us),
            ),
            (
                "ingestion_timestamp",
                Value::TimestampMicros(r.ingestion_timestamp_us),
            ),
            ("vendor_data", vendor_value(&r.vendor_data)),
        ],
    };
    Value::Record(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

fn schema(data_type: DataType) -> Schema {
    Schema::parse_str(avro::schema_for(data_type)).expect("schema parses")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn wire_round_trip(record in record(), id in any::<u32>()) {
        let mut buf = Vec::new();
        avro::encode(&record, id, &mut buf);
        prop_assert_eq!(avro::schema_id(&buf).unwrap(), id);
        let dt = record.data_type();
        let back = avro::decode(&buf, |got| (got == id).then_some(dt)).unwrap();
        prop_assert_eq!(back, record);
    }

    #[test]
    fn reference_implementation_reads_what_k2_writes(record in record()) {
        let mut buf = Vec::new();
        avro::encode(&record, 1, &mut buf);
        let schema = schema(record.data_type());
        let value = from_avro_datum(&schema, &mut &buf[HEADER_LEN..], None).unwrap();
        prop_assert_eq!(value, to_value(&record));
    }

    #[test]
    fn k2_reads_what_the_reference_implementation_writes(record in record()) {
        let schema = schema(record.data_type());
        let datum = to_avro_datum(&schema, to_value(&record)).unwrap();
        prop_assert_eq!(avro::decode_datum(record.data_type(), &datum).unwrap(), record);
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        for dt in DataType::ALL {
            let _ = avro::decode_datum(*dt, &bytes);
        }
    }
}

#[test]
fn framing_errors_name_the_problem() {
    assert!(
        avro::schema_id(&[])
            .unwrap_err()
            .to_string()
            .contains("shorter than")
    );
    assert!(
        avro::schema_id(&[1, 0, 0, 0, 1])
            .unwrap_err()
            .to_string()
            .contains("magic byte is 1")
    );
    let err = avro::decode(&[0, 0, 0, 0, 9, 1], |_| None).unwrap_err();
    assert_eq!(err, ModelError::UnknownSchema(9));
}

#[test]
fn a_message_id_that_is_not_a_uuid_is_a_decode_error() {
    // A datum another producer wrote: schema-valid, but its message id is free text.
    let schema = schema(DataType::Trades);
    let trade = Trade {
        message_id: MessageId::from_source(&["x"]),
        trade_id: "T1".into(),
        symbol: "BHP".into(),
        exchange: "ASX".into(),
        asset_class: AssetClass::Equities,
        timestamp_us: 1,
        receive_timestamp_us: 2,
        price: Decimal8::from_units(1).unwrap(),
        quantity: Decimal8::from_units(1).unwrap(),
        currency: "AUD".into(),
        side: TradeSide::Buy,
        trade_conditions: Vec::new(),
        source_sequence: None,
        ingestion_timestamp_us: 3,
        platform_sequence: None,
        vendor_data: None,
    };
    let Value::Record(mut fields) = to_value(&MarketRecord::Trade(trade)) else {
        panic!("a trade is an Avro record")
    };
    fields[0].1 = Value::String("trade-42".into());
    let datum = to_avro_datum(&schema, Value::Record(fields)).unwrap();
    let err = avro::decode_datum(DataType::Trades, &datum).unwrap_err();
    assert!(err.to_string().contains("message_id"), "{err}");
    assert!(err.to_string().contains("'trade-42'"), "{err}");
}
