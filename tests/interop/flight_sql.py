"""Arrow Flight SQL from Python, as a researcher's notebook reaches K2: the ADBC Flight SQL
driver into pyarrow, pandas and polars. Counts and a day's bars equal the REST answers;
a bound parameter works; DDL and a bad key are refused.

Usage: flight_sql.py FLIGHT_URI REST_URL KEY READ_ONLY_KEY
"""

import datetime
import json
import sys
import urllib.request

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import pandas
import polars

uri, rest, key, read_only_key = sys.argv[1:5]


def connect(k):
    # K2 is read-only: no transactions, so the connection stays in autocommit.
    return flight_sql.connect(
        uri, db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {k}"}, autocommit=True
    )


def rest_post(path, body):
    request = urllib.request.Request(
        rest + path,
        data=json.dumps(body).encode(),
        headers={"X-API-Key": key, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as r:
        return json.load(r)


def rest_get(path):
    request = urllib.request.Request(rest + path, headers={"X-API-Key": key})
    with urllib.request.urlopen(request, timeout=60) as r:
        return json.load(r)


def refused(k, sql, why):
    """The statement fails for `why` (a word of the server's message)."""
    with connect(k) as conn, conn.cursor() as cur:
        try:
            cur.execute(sql)
            cur.fetch_arrow_table()
        except (adbc_driver_manager.Error, adbc_driver_manager.DatabaseError) as e:
            message = str(e)
            assert why in message, message
            return message
    raise AssertionError(f"{sql!r} was not refused")


with connect(key) as conn:
    with conn.cursor() as cur:
        # pyarrow
        cur.execute("SELECT count(*) AS n FROM trades")
        n = cur.fetch_arrow_table().column("n")[0].as_py()
        assert n == 91_874, n
        # A parameterised day's 5-minute bars, beside the REST answer for the same day.
        day = datetime.date(2014, 3, 12)
        bars_sql = (
            "SELECT date_bin(INTERVAL '5 minutes', timestamp) AS bucket, count(*) AS trades,"
            " sum(quantity) AS volume, min(price) AS low, max(price) AS high"
            " FROM trades WHERE symbol = $1 AND trade_date = $2 GROUP BY 1 ORDER BY 1"
        )
        cur.execute(bars_sql, parameters=("BHP", day))
        bars = cur.fetch_arrow_table()
    rest_bars = rest_get("/v1/ohlcv/5m?symbol=BHP&exchange=ASX&start_date=2014-03-12&end_date=2014-03-12")["data"]
    assert bars.num_rows == len(rest_bars), (bars.num_rows, len(rest_bars))
    flight_trades = [int(t) for t in bars.column("trades").to_pylist()]
    assert flight_trades == [int(b["trade_count"]) for b in rest_bars], (flight_trades, rest_bars[:2])
    assert sum(flight_trades) == sum(int(b["trade_count"]) for b in rest_bars)
    # pandas and polars over the same connection.
    frame = pandas.read_sql("SELECT symbol, count(*) AS n FROM trades GROUP BY symbol ORDER BY symbol", conn)
    assert frame.to_dict("records") == [{"symbol": "BHP", "n": 91_631}, {"symbol": "DVN", "n": 232}, {"symbol": "MWR", "n": 11}], frame
    rows = polars.read_database("SELECT symbol, count(*) AS n FROM quotes GROUP BY symbol ORDER BY symbol", conn)
    assert rows.to_dicts() == [{"symbol": "BHP", "n": 77_849}, {"symbol": "DVN", "n": 549}, {"symbol": "MWR", "n": 60}], rows
    # The same answer as POST /v1/sql.
    sql = "SELECT trade_date, count(*) AS n, sum(price * quantity) / sum(quantity) AS vwap FROM trades WHERE symbol = 'BHP' GROUP BY 1 ORDER BY 1"
    with conn.cursor() as cur:
        cur.execute(sql)
        over_flight = cur.fetch_arrow_table().to_pylist()
    over_rest = rest_post("/v1/sql", {"sql": sql})["data"]
    assert len(over_flight) == len(over_rest) == 5, (over_flight, over_rest)
    for f, r in zip(over_flight, over_rest):
        assert str(f["trade_date"]) == r["trade_date"] and f["n"] == r["n"], (f, r)
        assert abs(float(f["vwap"]) - float(r["vwap"])) < 1e-9, (f, r)
    # The catalog's metadata: what a SQL client lists.
    objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
    tables = {
        (s["db_schema_name"], t["table_name"])
        for c in objects
        for s in c["catalog_db_schemas"]
        for t in s["db_schema_tables"]
    }
    assert ("market_data", "trades") in tables and ("quality", "gaps") in tables, tables

print("refused:", refused(key, "CREATE TABLE x (a INT)", "not"))
print("refused:", refused(key, "DELETE FROM trades", "not"))
print("refused:", refused("not-a-key", "SELECT 1", "not valid"))
print("refused:", refused(read_only_key, "SELECT 1", "sql scope"))
print(f"flight sql ok: {n} trades; BHP 2014-03-12 in {bars.num_rows} 5-minute bars equal to REST's")
