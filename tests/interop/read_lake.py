"""Foreign readers on K2's lake: PyIceberg opens the tables through K2's SQLite catalog,
DuckDB recomputes the BHP daily figures from the rows it gets, and both must agree with
`k2 query summary` to the last digit.

Usage: read_lake.py DATA_DIR K2_BINARY
"""

import json
import sys
from pathlib import Path

import duckdb
from pyiceberg.catalog.sql import SqlCatalog

from bhp_days import DAILY, check

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
for day, want in check(con.execute(DAILY).fetchall(), k2, data, "DuckDB over PyIceberg"):
    print(f"BHP {day}: k2 and DuckDB-over-PyIceberg agree: {want}")

print(f"interop ok: {arrow.num_rows} trades, {quotes.num_rows} quotes, {len(trades.snapshots())} trade snapshots")
