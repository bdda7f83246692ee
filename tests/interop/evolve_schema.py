"""Schema evolution with stock clients: confluent-kafka registers a new version of K2's
trade schema (an optional `venue_order_id` added) in K2's schema registry, is refused an
incompatible one with the registry's error, and produces trades with the new version;
after `k2 consume`, the lake's trades table has the column (the older rows null) and
PyIceberg or DuckDB read it.

Usage: evolve_schema.py produce BOOTSTRAP REGISTRY_URL
       evolve_schema.py pyiceberg|duckdb DATA_DIR [DUCKDB_EXTENSION_DIR]
"""

import json
import sqlite3
import sys
import time
import uuid
from pathlib import Path

TOPIC = "market.equities.trades.asx"
SUBJECT = f"{TOPIC}-value"
NEW = 20
BEFORE = 91_631 + 232 + 11

mode = sys.argv[1]
if mode == "produce":
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
    from confluent_kafka.schema_registry.error import SchemaRegistryError
    from confluent_kafka.serialization import MessageField, SerializationContext

    bootstrap, registry_url = sys.argv[2:4]
    registry = SchemaRegistryClient({"url": registry_url})
    current = json.loads(registry.get_latest_version(SUBJECT).schema.schema_str)
    evolved = dict(current)
    evolved["fields"] = current["fields"] + [
        {"name": "venue_order_id", "type": ["null", "string"], "default": None}
    ]
    broken = dict(current)
    broken["fields"] = [
        dict(f, type="long") if f["name"] == "trade_id" else f for f in current["fields"]
    ]
    try:
        registry.register_schema(SUBJECT, Schema(json.dumps(broken), "AVRO"))
        raise SystemExit("an incompatible version was registered")
    except SchemaRegistryError as e:
        assert e.http_status_code == 409, e
        print(f"incompatible version refused: {e.error_message}")
    new_id = registry.register_schema(SUBJECT, Schema(json.dumps(evolved), "AVRO"))

    # A trade as K2 wrote it, the template of the new ones.
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "k2-evolve", "enable.auto.commit": False})
    partitions = consumer.list_topics(TOPIC, timeout=10).topics[TOPIC].partitions
    consumer.assign([TopicPartition(TOPIC, p, 0) for p in partitions])
    template = None
    deadline = time.monotonic() + 60
    while template is None and time.monotonic() < deadline:
        for msg in consumer.consume(num_messages=1, timeout=1.0):
            assert msg.error() is None, msg.error()
            template = AvroDeserializer(registry)(msg.value(), SerializationContext(TOPIC, MessageField.VALUE))
    consumer.close()
    assert template is not None, "no trade to copy from the topic within 60 s"
    serialize = AvroSerializer(
        registry, json.dumps(evolved), conf={"auto.register.schemas": True}
    )
    producer = Producer({"bootstrap.servers": bootstrap})
    for n in range(NEW):
        trade = dict(template)
        native = uuid.uuid5(uuid.NAMESPACE_URL, f"k2-evolve-{n}")
        trade["message_id"] = str(native) if "-" in template["message_id"] else native.hex
        trade["trade_id"] = f"ASX-evolved-{n}"
        trade["symbol"] = "RIO"
        trade["venue_order_id"] = f"ord-{n}"
        value = serialize(trade, SerializationContext(TOPIC, MessageField.VALUE))
        assert int.from_bytes(value[1:5], "big") == new_id, (value[:5], new_id)
        producer.produce(TOPIC, key=b"RIO", value=value)
    assert producer.flush(30) == 0
    print(f"{NEW} trades produced with schema id {new_id} (venue_order_id added)")
    sys.exit(0)

data = Path(sys.argv[2]).resolve()
with sqlite3.connect(data / "catalog.db") as db:
    (metadata,) = db.execute(
        "SELECT metadata_location FROM iceberg_tables WHERE table_name = 'trades'"
    ).fetchone()
if mode == "pyiceberg":
    from pyiceberg.catalog.sql import SqlCatalog

    table = SqlCatalog("k2", uri=f"sqlite:///{data / 'catalog.db'}").load_table("market_data.trades")
    field = table.schema().find_field("venue_order_id")
    assert not field.required, field
    rows = table.scan(selected_fields=("symbol", "venue_order_id")).to_arrow()
    orders = rows.column("venue_order_id")
    total, filled = rows.num_rows, len(orders) - orders.null_count
    found = sorted(o for o in orders.to_pylist() if o)
elif mode == "duckdb":
    from offline_duckdb import connect

    con = connect(sys.argv[3], ("avro", "iceberg"))
    total, filled = con.execute(
        f"SELECT count(*), count(venue_order_id) FROM iceberg_scan('{metadata}')"
    ).fetchone()
    found = sorted(
        r[0] for r in con.execute(
            f"SELECT venue_order_id FROM iceberg_scan('{metadata}') WHERE venue_order_id IS NOT NULL"
        ).fetchall()
    )
else:
    sys.exit(f"unknown mode {mode!r}")
assert (total, filled) == (BEFORE + NEW, NEW), (mode, total, filled)
assert found == sorted(f"ord-{n}" for n in range(NEW)), found
print(f"{mode} reads the evolved trades table: {total} rows, venue_order_id on the {NEW} new ones")
