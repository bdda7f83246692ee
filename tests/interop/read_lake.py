"""Foreign readers on K2's lake: PyIceberg opens the tables through K2's SQLite catalog,
DuckDB recomputes the BHP daily figures from the rows it gets, and both must agree with
`k2 query summary` to the last digit.

Usage: read_lake.py DATA_DIR K2_BINARY
"""

import json
import subprocess
import sys
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import duckdb
from pyiceberg.catalog.sql import SqlCatalog

data = Path(sys.argv[1]).resolve()
k2 = sys.argv[2]

catalog = SqlCatalog("k2", uri=f"sqlite:///{data / 'catalog.db'}", warehouse=f"file://{data / 'warehouse'}")
trades = catalog.load_table("market_data.trades")
arrow = trades.scan().to_arrow()
assert arrow.num_rows == 91_631 + 232 + 11, arrow.num_rows
assert str(arrow.schema.field("price").type) == "decimal128(18, 8)", arrow.schema.field("price").type
assert str(arrow.schema.field("timestamp").type).startswith("timestamp[us, tz="), arrow.schema.field("timestamp").type
quotes = catalog.load_table("market_data.quotes").scan().to_arrow()
assert quotes.num_rows == 77_849 + 549 + 60, quotes.num_rows
companies = catalog.load_table("reference_data.companies").scan().to_arrow()
assert sorted(companies.column("symbol").to_pylist()) == ["BHP", "DVN", "MWR", "RIO"]

snapshot = trades.current_snapshot()
offsets = json.loads(snapshot.summary.additional_properties["k2.log-offsets"])
assert sum(offsets.values()) == arrow.num_rows, offsets

con = duckdb.connect()
con.register("trades", arrow)
days = con.execute(
    """
    SELECT CAST(trade_date AS VARCHAR),
           CAST(first(price ORDER BY "timestamp", source_sequence) AS VARCHAR),
           CAST(max(price) AS VARCHAR), CAST(min(price) AS VARCHAR),
           CAST(last(price ORDER BY "timestamp", source_sequence) AS VARCHAR),
           CAST(sum(quantity) AS VARCHAR), count(*),
           CAST(sum(CAST(price AS DECIMAL(38, 8)) * CAST(quantity AS DECIMAL(38, 8))) AS VARCHAR)
    FROM trades WHERE symbol = 'BHP' GROUP BY trade_date ORDER BY trade_date
    """
).fetchall()
assert len(days) == 5, days


def norm(text):
    return format(Decimal(text).normalize(), "f")


for day, open_, high, low, close, volume, count, notional in days:
    out = subprocess.run(
        [k2, "--data-dir", str(data), "query", "summary", "BHP", day, "--exchange", "ASX", "--format", "json"],
        check=True, capture_output=True, text=True,
    ).stdout
    k2_row = json.loads(out)[0]
    vwap = (Decimal(notional) / Decimal(volume)).quantize(Decimal("0.00000001"), rounding=ROUND_HALF_EVEN)
    want = {
        "open": norm(open_), "high": norm(high), "low": norm(low), "close": norm(close),
        "volume": norm(volume), "trade_count": count, "vwap": norm(vwap),
    }
    got = {k: (norm(v) if isinstance(v, str) else v) for k, v in k2_row.items() if k in want}
    assert got == want, (day, got, want)
    print(f"BHP {day}: k2 and DuckDB-over-PyIceberg agree: {want}")

print(f"interop ok: {arrow.num_rows} trades, {quotes.num_rows} quotes, {len(trades.snapshots())} trade snapshots")
