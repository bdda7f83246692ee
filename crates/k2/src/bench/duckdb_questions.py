"""DuckDB answers `k2 bench query`'s questions from K2's trades table, timed warm.

It reads the table the way any Iceberg reader does: DuckDB's iceberg extension on the
table's current metadata file. Each answer is fetched as Arrow (K2's engine answers in
Arrow too), and the answers are printed with the timings so K2 can check both engines
agree before it compares their speed.

Usage: duckdb_questions.py EXTENSION_DIR METADATA_JSON SYMBOL EXCHANGE DAY_START_US DAY_END_US ORIGIN_US RUNS
Prints one JSON object on stdout.
"""

import json
import sys
import time
from decimal import Decimal

import duckdb

ext_dir, metadata, symbol, exchange = sys.argv[1:5]
day_start, day_end, origin, runs = (int(a) for a in sys.argv[5:9])

con = duckdb.connect(
    config={
        "extension_directory": ext_dir,
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "threads": 2,
    }
)
con.execute("LOAD avro")
con.execute("LOAD iceberg")

# The same filters and order as K2's engine: the symbol, the exchange and the trading day's
# bounds in UTC microseconds; newest first by (timestamp, sequence, message id).
scan = f"iceberg_scan('{metadata}')"
window = (
    'symbol = $symbol AND exchange = $exchange AND "timestamp" >= make_timestamptz($lo) '
    'AND "timestamp" < make_timestamptz($hi)'
)
aggregates = (
    'first(price ORDER BY "timestamp", source_sequence, message_id) AS open, max(price) AS high, '
    'min(price) AS low, last(price ORDER BY "timestamp", source_sequence, message_id) AS close, '
    "sum(quantity) AS volume, count(*) AS trade_count"
)
questions = {
    "trades": (
        'SELECT "timestamp", symbol, exchange, price, quantity, side, trade_conditions, '
        f"source_sequence, trade_id, CAST(message_id AS VARCHAR) AS message_id FROM {scan} "
        f'WHERE {window} ORDER BY "timestamp" DESC, coalesce(source_sequence, -1) DESC, '
        "message_id DESC LIMIT 100"
    ),
    "summary": f"SELECT {aggregates} FROM {scan} WHERE {window}",
    "bars": (
        f'SELECT epoch_us(time_bucket(INTERVAL 1 MINUTE, "timestamp", make_timestamptz($origin))) AS bucket, '
        f"{aggregates} FROM {scan} WHERE {window} GROUP BY 1 ORDER BY 1"
    ),
}
params = {"symbol": symbol, "exchange": exchange, "lo": day_start, "hi": day_end}


def units(value):
    """A DECIMAL(…, 8) value as an integer count of 10^-8."""
    return int(Decimal(value).scaleb(8))


def answer(name, table):
    rows = table.to_pylist()
    if name == "trades":
        return [r["message_id"] for r in rows]
    out = []
    for r in rows:
        out.append(
            [r.get("bucket", 0)]
            + [units(r[k]) for k in ("open", "high", "low", "close", "volume")]
            + [r["trade_count"]]
        )
    return out


result = {"duckdb": duckdb.__version__, "questions": {}}
for name, sql in questions.items():
    p = dict(params, origin=origin) if "$origin" in sql else params
    for _ in range(5):
        table = con.execute(sql, p).fetch_arrow_table()
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        table = con.execute(sql, p).fetch_arrow_table()
        samples.append(time.perf_counter() - t)
    result["questions"][name] = {"seconds": samples, "answer": answer(name, table)}

print(json.dumps(result))
