"""Foreign readers on a K2 lake whose files are in an S3 bucket: PyIceberg (through K2's
SQLite catalog, reading the bucket with its own S3 client) or DuckDB (the iceberg and
httpfs extensions on each table's current metadata file) counts every table and
recomputes BHP's daily figures, which must agree with `k2 query summary` to the last
digit.

Usage: read_s3_lake.py pyiceberg|duckdb DATA_DIR K2_BINARY S3_ENDPOINT [DUCKDB_EXTENSION_DIR]
The bucket's credentials are the test servers' (k2test / k2test-secret-key).
"""

import sqlite3
import sys
from pathlib import Path

from bhp_days import DAILY, check

reader, data, k2, endpoint = sys.argv[1], Path(sys.argv[2]).resolve(), sys.argv[3], sys.argv[4]
KEY, SECRET = "k2test", "k2test-secret-key"
EXPECTED = {"market_data.trades": 91_874, "market_data.quotes": 78_458, "reference_data.companies": 4}

# Where each table's current metadata is: K2's catalog records it.
with sqlite3.connect(data / "catalog.db") as db:
    metadata = {
        f"{ns}.{name}": location
        for ns, name, location in db.execute(
            "SELECT table_namespace, table_name, metadata_location FROM iceberg_tables"
        )
    }
assert all(m.startswith("s3://") for m in metadata.values()), metadata

if reader == "pyiceberg":
    import duckdb
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog(
        "k2",
        uri=f"sqlite:///{data / 'catalog.db'}",
        **{
            "s3.endpoint": endpoint,
            "s3.access-key-id": KEY,
            "s3.secret-access-key": SECRET,
            "s3.region": "us-east-1",
            "s3.force-virtual-addressing": "false",
        },
    )
    counts = {name: catalog.load_table(name).scan().to_arrow().num_rows for name in EXPECTED}
    con = duckdb.connect()
    con.register("trades", catalog.load_table("market_data.trades").scan().to_arrow())
    days = con.execute(DAILY).fetchall()
elif reader == "duckdb":
    from offline_duckdb import connect

    con = connect(sys.argv[5])
    host = endpoint.removeprefix("http://")
    con.execute(
        f"CREATE SECRET k2 (TYPE s3, KEY_ID '{KEY}', SECRET '{SECRET}', REGION 'us-east-1', "
        f"ENDPOINT '{host}', URL_STYLE 'path', USE_SSL false)"
    )
    counts = {
        name: con.execute(f"SELECT count(*) FROM iceberg_scan('{metadata[name]}')").fetchone()[0]
        for name in EXPECTED
    }
    con.execute(f"CREATE VIEW trades AS SELECT * FROM iceberg_scan('{metadata['market_data.trades']}')")
    days = con.execute(DAILY).fetchall()
else:
    sys.exit(f"unknown reader {reader!r}: pyiceberg or duckdb")

assert counts == EXPECTED, (reader, counts)
check(days, k2, data, reader)
print(f"{reader} on the bucket: {counts}; BHP's 5 days agree with k2 query summary")
