"""A stock Kafka client on K2's topics: confluent-kafka's consumer, with its
SchemaRegistryClient and AvroDeserializer pointed at K2's schema registry, reads the trades
K2 produced and must get exactly the values K2's lake holds (prices and quantities as
decimals, timestamps, symbols), record by record.

Usage: read_kafka.py BOOTSTRAP REGISTRY_URL DATA_DIR K2_BINARY
"""

import csv
import io
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

bootstrap, registry_url, data, k2 = sys.argv[1:5]
TOPIC = "market.equities.trades.asx"
EXPECTED = 91_631 + 232 + 11

# What K2's lake holds, by message id.
sql = (
    "SELECT message_id, symbol, exchange, CAST(price AS VARCHAR) AS price, "
    "CAST(quantity AS VARCHAR) AS quantity, CAST(timestamp AS BIGINT) AS ts FROM trades"
)
out = subprocess.run(
    [k2, "--data-dir", data, "sql", sql, "--format", "csv"], check=True, capture_output=True, text=True
).stdout
lake = {row["message_id"]: row for row in csv.DictReader(io.StringIO(out))}
assert len(lake) == EXPECTED, len(lake)

registry = SchemaRegistryClient({"url": registry_url})
deserialize = AvroDeserializer(registry)
consumer = Consumer(
    {
        "bootstrap.servers": bootstrap,
        "group.id": "k2-interop-python",
        "enable.auto.commit": False,
        "auto.offset.reset": "error",
    }
)
partitions = consumer.list_topics(TOPIC, timeout=10).topics[TOPIC].partitions
consumer.assign([TopicPartition(TOPIC, p, 0) for p in partitions])

epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
seen = {}
deadline = time.monotonic() + 120
while len(seen) < EXPECTED and time.monotonic() < deadline:
    for msg in consumer.consume(num_messages=10_000, timeout=1.0):
        assert msg.error() is None, msg.error()
        # The Confluent framing: magic byte 0, then the schema id K2's registry resolves.
        assert msg.value()[0] == 0
        trade = deserialize(msg.value(), SerializationContext(TOPIC, MessageField.VALUE))
        seen[trade["message_id"]] = trade
consumer.close()
assert len(seen) == EXPECTED, f"{len(seen)} distinct trades read from Kafka, {EXPECTED} expected"

for message_id, trade in seen.items():
    row = lake[message_id]
    assert isinstance(trade["price"], Decimal), type(trade["price"])
    assert trade["price"] == Decimal(row["price"]), (message_id, trade["price"], row["price"])
    assert trade["quantity"] == Decimal(row["quantity"]), (message_id, trade["quantity"], row["quantity"])
    assert trade["symbol"] == row["symbol"] and trade["exchange"] == row["exchange"], (trade, row)
    micros = (trade["timestamp"] - epoch) // timedelta(microseconds=1)
    assert micros == int(row["ts"]), (message_id, trade["timestamp"], row["ts"])

bhp = [t for t in seen.values() if t["symbol"] == "BHP"]
print(
    f"confluent-kafka read {len(seen)} trades through K2's registry; every price, quantity, "
    f"timestamp and symbol equals the lake's (e.g. BHP {min(t['price'] for t in bhp)}"
    f"–{max(t['price'] for t in bhp)})"
)
