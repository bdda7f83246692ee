"""Stock engines attach a K2 lake by URL through `k2 catalog serve`: PyIceberg's
RestCatalog (OAuth2 client credentials: the key's name and the key) or DuckDB's iceberg
extension (`ATTACH … (TYPE iceberg, ENDPOINT …)` with the key as a bearer token) list the
namespaces and tables, load them, and read the files from the bucket with the credentials
the catalog vends. Every table's count and BHP's daily figures must agree with
`k2 query summary` to the last digit.

Usage: read_rest_catalog.py pyiceberg|duckdb CATALOG_URI KEY_NAME KEY DATA_DIR K2_BINARY [DUCKDB_EXTENSION_DIR]
DATA_DIR is the catalog server's (K2 answers from it directly, for comparison).
"""

import sys
from pathlib import Path

from bhp_days import DAILY, check

reader, uri, name, key = sys.argv[1:5]
data, k2 = Path(sys.argv[5]).resolve(), sys.argv[6]
EXPECTED = {"market_data.trades": 91_874, "market_data.quotes": 78_458, "reference_data.companies": 4}

if reader == "pyiceberg":
    import duckdb
    from pyiceberg.catalog.rest import RestCatalog

    catalog = RestCatalog("k2", uri=uri, credential=f"{name}:{key}")
    listed = {
        ".".join(ident)
        for ns in catalog.list_namespaces()
        for ident in catalog.list_tables(ns)
    }
    assert listed == set(EXPECTED), listed
    tables = {t: catalog.load_table(t) for t in EXPECTED}
    assert all(t.metadata.location.startswith("s3://") for t in tables.values())
    counts = {t: table.scan().to_arrow().num_rows for t, table in tables.items()}
    con = duckdb.connect()
    con.register("trades", tables["market_data.trades"].scan().to_arrow())
    days = con.execute(DAILY).fetchall()
elif reader == "duckdb":
    from offline_duckdb import connect

    con = connect(sys.argv[7])
    con.execute(f"CREATE SECRET k2_catalog (TYPE iceberg, TOKEN '{key}')")
    con.execute(f"ATTACH 'k2' AS lake (TYPE iceberg, SECRET k2_catalog, ENDPOINT '{uri}')")
    listed = {
        f"{schema}.{table}"
        for _, schema, table, *_ in con.execute("SHOW ALL TABLES").fetchall()
    }
    assert listed == set(EXPECTED), listed
    counts = {t: con.execute(f"SELECT count(*) FROM lake.{t}").fetchone()[0] for t in EXPECTED}
    con.execute("CREATE VIEW trades AS SELECT * FROM lake.market_data.trades")
    days = con.execute(DAILY).fetchall()
else:
    sys.exit(f"unknown reader {reader!r}: pyiceberg or duckdb")

assert counts == EXPECTED, (reader, counts)
check(days, k2, data, reader)
print(f"{reader} through the REST catalog: {counts}; BHP's 5 days agree with k2 query summary")
