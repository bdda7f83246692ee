//! Schema evolution end to end: a producer registers a compatible new version of the
//! trade schema (a field added) and writes with it; the writer decodes both versions, the
//! table gains the column in one commit, older rows read it as null. An incompatible
//! version is refused at registration; a version whose added field cannot be a column
//! sends its records to the dead-letter store with the reason.

use super::*;

use apache_avro::Schema;
use apache_avro::types::Value;
use iceberg::Catalog;
use k2_log::{Log, TopicBatch};
use k2_model::{DataType, MarketRecord, TopicName, avro};

/// K2's trade schema with `fields` (JSON) appended.
fn trade_schema_with(fields: &[serde_json::Value]) -> String {
    let mut schema: serde_json::Value =
        serde_json::from_str(avro::schema_for(DataType::Trades)).unwrap();
    let list = schema["fields"].as_array_mut().unwrap();
    list.extend(fields.iter().cloned());
    schema.to_string()
}

/// The trade `record` written with the `writer` schema (registered as `id`), its added
/// fields set to `extra`.
fn framed(record: &MarketRecord, writer: &Schema, id: u32, extra: &[(&str, Value)]) -> Vec<u8> {
    let mut k2 = Vec::new();
    avro::encode(record, 1, &mut k2);
    let k2_schema = Schema::parse_str(avro::schema_for(DataType::Trades)).unwrap();
    let Value::Record(mut fields) =
        apache_avro::from_avro_datum(&k2_schema, &mut &k2[avro::HEADER_LEN..], None).unwrap()
    else {
        panic!("a trade is a record")
    };
    for (name, v) in extra {
        fields.push((name.to_string(), v.clone()));
    }
    let datum = apache_avro::to_avro_datum(writer, Value::Record(fields)).unwrap();
    let mut out = vec![0u8];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&datum);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compatible_new_trade_schema_adds_a_column_and_old_rows_read_it_as_null() {
    let l = lake().await;
    ingest_sample(&l).await;
    write_all(&l, 1_000_000).await;
    let topic = "market.equities.trades.asx";
    let subject = TopicName::parse(topic).unwrap().subject();
    let schemas = l.log.schemas();

    // Version 2 adds an optional venue order id and a liquidity flag.
    let v2_text = trade_schema_with(&[
        serde_json::json!({"name": "venue_order_id", "type": ["null", "string"], "default": null}),
        serde_json::json!({"name": "liquidity_flag", "type": ["null", "long"], "default": null}),
    ]);
    let v2 = schemas.register_blocking(&subject, &v2_text).unwrap();
    // An incompatible version (a field K2 reads changes type) is refused, with the reason.
    let mut broken: serde_json::Value = serde_json::from_str(&v2_text).unwrap();
    for f in broken["fields"].as_array_mut().unwrap() {
        if f["name"] == "trade_id" {
            f["type"] = serde_json::json!("long");
        }
    }
    let refused = schemas
        .register_blocking(&subject, &broken.to_string())
        .unwrap_err();
    assert!(refused.to_string().contains("cannot read"), "{refused}");
    // A version whose added field is a list cannot become a column.
    let listy = schemas
        .register_blocking(
            &subject,
            &trade_schema_with(&[serde_json::json!({
                "name": "fills", "type": {"type": "array", "items": "long"}, "default": []
            })]),
        )
        .unwrap();

    // New trades of RIO written with version 2 (and one with the list version).
    let writer_v2 = Schema::parse_str(&v2_text).unwrap();
    let writer_listy = Schema::parse_str(&listy.schema).unwrap();
    let mut batch = TopicBatch::new(topic);
    for n in 0..50i64 {
        let mut trade = sample_trade(n);
        if let MarketRecord::Trade(t) = &mut trade {
            t.symbol = "RIO".into();
        }
        let extra = [
            (
                "venue_order_id",
                Value::Union(1, Box::new(Value::String(format!("ord-{n}")))),
            ),
            (
                "liquidity_flag",
                if n % 2 == 0 {
                    Value::Union(1, Box::new(Value::Long(n)))
                } else {
                    Value::Union(0, Box::new(Value::Null))
                },
            ),
        ];
        let payload = framed(&trade, &writer_v2, v2.id, &extra);
        batch.push(b"RIO", &payload, 1_700_000_000_000);
    }
    let odd = framed(
        &sample_trade(999),
        &writer_listy,
        listy.id,
        &[("fills", Value::Array(vec![Value::Long(1)]))],
    );
    batch.push(b"RIO", &odd, 1_700_000_000_000);
    l.log.produce(vec![batch], None).await.unwrap();

    let schemas_before = trades_table(&l).await.metadata().schemas_iter().count();
    let summary = write_all(&l, 1_000_000).await;
    assert_accounts(&summary);
    assert_eq!(summary.rows_committed["market_data.trades"], 50);
    assert_eq!(summary.dead_lettered, 1);

    // One commit added both columns, optional, after K2's own.
    let table = trades_table(&l).await;
    assert_eq!(table.metadata().schemas_iter().count(), schemas_before + 1);
    let schema = table.metadata().current_schema();
    for name in ["venue_order_id", "liquidity_flag"] {
        let f = schema
            .field_by_name(name)
            .unwrap_or_else(|| panic!("{name} added"));
        assert!(!f.required);
    }
    // The new rows carry the values, the sample's rows read them as null.
    let engine = QueryEngine::new(l.catalog.clone(), QueryOptions::default()).unwrap();
    let answer = engine
        .sql(
            "SELECT count(*) AS n, count(venue_order_id) AS orders, count(liquidity_flag) AS flags, \
             sum(liquidity_flag) AS flag_sum FROM market_data.trades",
        )
        .await
        .unwrap();
    let b = &answer.batches[0];
    let int = |i: usize| b.column(i).as_primitive::<Int64Type>().value(0);
    assert_eq!(int(0), common::TRADES as i64 + 50);
    assert_eq!(int(1), 50);
    assert_eq!(int(2), 25);
    assert_eq!(int(3), (0..50).step_by(2).sum::<i64>());
    let rio = engine
        .sql("SELECT venue_order_id FROM market_data.trades WHERE symbol = 'RIO' ORDER BY venue_order_id LIMIT 1")
        .await
        .unwrap();
    assert_eq!(
        rio.batches[0].column(0).as_string::<i32>().value(0),
        "ord-0"
    );

    // The record of the list version is a dead letter saying why.
    let letters = l.dlq.list(0, 100).unwrap();
    let letter = letters
        .iter()
        .map(|(_, d)| d)
        .find(|d| d.kind == "unresolvable_schema")
        .unwrap_or_else(|| panic!("{letters:?}"));
    assert!(letter.reason.contains("'fills'"), "{}", letter.reason);

    // A restart reads nothing again, and the catalog still opens the evolved table.
    assert_eq!(write_all(&l, 1_000_000).await.records_consumed, 0);
    k2_lake::ensure_tables(l.catalog.as_ref()).await.unwrap();
    let reopened = l
        .catalog
        .load_table(&LakeTable::Trades.ident())
        .await
        .unwrap();
    assert_eq!(reopened.metadata().current_schema_id(), schema.schema_id());
}

/// A trade like the sample's, with a message id of its own.
fn sample_trade(n: i64) -> MarketRecord {
    use k2_model::{AssetClass, Decimal8, MessageId, Trade, TradeSide};
    let one = Decimal8::from_units(4_000_000_000).unwrap();
    let t = 1_394_600_000_000_000 + n * 1_000_000;
    MarketRecord::Trade(Trade {
        message_id: MessageId::from_u128(0xe0e0_0000 + n as u128),
        trade_id: format!("evolved-{n}").as_str().into(),
        symbol: "RIO".into(),
        exchange: "ASX".into(),
        asset_class: AssetClass::Equities,
        timestamp_us: t,
        receive_timestamp_us: t,
        price: one,
        quantity: one,
        currency: "AUD".into(),
        side: TradeSide::Unknown,
        trade_conditions: Vec::new(),
        source_sequence: None,
        ingestion_timestamp_us: t,
        platform_sequence: None,
        vendor_data: None,
    })
}
