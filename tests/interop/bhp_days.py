"""BHP's daily figures recomputed by a foreign reader, checked against `k2 query summary`.

`DAILY` is the SQL a reader runs over a `trades` relation; `check` compares its rows with
K2's answer for each day, to the last digit.
"""

import json
import subprocess
from decimal import ROUND_HALF_EVEN, Decimal

DAILY = """
    SELECT CAST(trade_date AS VARCHAR),
           CAST(first(price ORDER BY "timestamp", source_sequence) AS VARCHAR),
           CAST(max(price) AS VARCHAR), CAST(min(price) AS VARCHAR),
           CAST(last(price ORDER BY "timestamp", source_sequence) AS VARCHAR),
           CAST(sum(quantity) AS VARCHAR), count(*),
           CAST(sum(CAST(price AS DECIMAL(38, 8)) * CAST(quantity AS DECIMAL(38, 8))) AS VARCHAR)
    FROM trades WHERE symbol = 'BHP' GROUP BY trade_date ORDER BY trade_date
"""


def norm(text):
    return format(Decimal(text).normalize(), "f")


def check(days, k2, data, reader):
    """Each row of DAILY equals K2's summary of that day; returns what was compared."""
    assert len(days) == 5, days
    compared = []
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
        assert got == want, (reader, day, got, want)
        compared.append((day, want))
    return compared
