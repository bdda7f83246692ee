"""`k2 bench flight`'s client: the same SQL answer fetched into pyarrow over Arrow Flight
SQL (the ADBC driver) and over POST /v1/sql as Arrow IPC, alternately, `runs` times each.
Prints JSON: rows, bytes of the table, and each run's seconds per path.

Usage: flight_fetch.py FLIGHT_URI REST_URL KEY SQL RUNS
"""

import json
import sys
import time
import urllib.request

import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow.ipc

uri, rest, key, sql, runs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])


def over_flight(conn):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()


def over_rest():
    request = urllib.request.Request(
        rest + "/v1/sql",
        data=json.dumps({"sql": sql, "format": "arrow"}).encode(),
        headers={"X-API-Key": key, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=300) as r:
        return pyarrow.ipc.open_stream(r).read_all()


conn = flight_sql.connect(
    uri, db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {key}"}, autocommit=True
)
times = {"flight": [], "rest": []}
tables = {}
# One warm-up each: the server's metadata and footers in memory, the client's imports done.
tables["flight"], tables["rest"] = over_flight(conn), over_rest()
for _ in range(runs):
    for name, fetch in (("flight", lambda: over_flight(conn)), ("rest", over_rest)):
        started = time.perf_counter()
        tables[name] = fetch()
        times[name].append(time.perf_counter() - started)
conn.close()
assert tables["flight"].num_rows == tables["rest"].num_rows, (tables["flight"].num_rows, tables["rest"].num_rows)
# Rows come in no promised order (the scan is parallel): compare them in one order.
ordered = {k: t.sort_by("message_id") for k, t in tables.items()}
assert ordered["flight"].equals(ordered["rest"]), "the two paths answered differently"
print(json.dumps({"rows": tables["flight"].num_rows, "bytes": tables["flight"].nbytes, "seconds": times}))
