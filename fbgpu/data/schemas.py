"""Canonical Arrow schemas: the one module that owns every table's columns and types.

Conventions (spec/data.md "Canonical tables"):

* ``date`` is ``date32``; ``symbol`` is a dictionary-encoded string such as ``000001.SZ``.
* ``ts`` is int64 nanoseconds since midnight, exchange time (Asia/Shanghai, no DST).
* ids and sequence numbers are int64; prices and amounts are float64 CNY; volumes are int64 shares.
* ``side`` is int8: +1 buyer-initiated / buy order, -1 seller-initiated / sell order, 0 unknown
  (call-auction trades).
* ``order_type`` is int8, see :data:`ORDER_TYPE_CODES`; market orders carry ``price = NaN``.

Within a partition (one table, one date) rows are sorted by ``(symbol, seq)`` for tick tables and
by ``(symbol, minute)`` for minute bars, so that one stock-day is one contiguous run and a reader
can describe the day with CSR offsets.
"""

from __future__ import annotations

import pyarrow as pa

SYMBOL = pa.dictionary(pa.int32(), pa.string())

ORDER_TYPE_LIMIT = 0
ORDER_TYPE_MARKET = 1
ORDER_TYPE_BEST = 2  # best-own-side price (SZSE OrdType U)
ORDER_TYPE_CODES: dict[str, int] = {
    "limit": ORDER_TYPE_LIMIT,
    "market": ORDER_TYPE_MARKET,
    "best": ORDER_TYPE_BEST,
}

MINUTES_PER_DAY = 240

TRADES = pa.schema(
    [
        ("date", pa.date32()),
        ("symbol", SYMBOL),
        ("seq", pa.int64()),
        ("ts", pa.int64()),
        ("price", pa.float64()),
        ("volume", pa.int64()),
        ("amount", pa.float64()),
        ("buy_order_id", pa.int64()),
        ("sell_order_id", pa.int64()),
        ("side", pa.int8()),
    ]
)

ORDERS = pa.schema(
    [
        ("date", pa.date32()),
        ("symbol", SYMBOL),
        ("seq", pa.int64()),
        ("ts", pa.int64()),
        ("order_id", pa.int64()),
        ("price", pa.float64()),
        ("volume", pa.int64()),
        ("side", pa.int8()),
        ("order_type", pa.int8()),
    ]
)

# Cancellations (SZSE ExecType 4 records, SSE OrdType D deletions): kept, but not trades/orders.
CANCELS = pa.schema(
    [
        ("date", pa.date32()),
        ("symbol", SYMBOL),
        ("seq", pa.int64()),
        ("ts", pa.int64()),
        ("order_id", pa.int64()),
        ("volume", pa.int64()),
        ("side", pa.int8()),
    ]
)

MINUTE = pa.schema(
    [
        ("date", pa.date32()),
        ("symbol", SYMBOL),
        ("minute", pa.int16()),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("volume", pa.int64()),
        ("amount", pa.float64()),
        ("num_trades", pa.int32()),
    ]
)

# One row per listed stock per trading day, suspended days included (suspended=True, volume 0,
# open=high=low=close=pre_close). ``limit_up``/``limit_down`` are the day's limit prices;
# ``float_cap`` is float market capitalisation in CNY at the close; ``adj_factor`` is the
# cumulative backward adjustment factor (adjusted price = price * adj_factor).
DAILY = pa.schema(
    [
        ("date", pa.date32()),
        ("symbol", SYMBOL),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("pre_close", pa.float64()),
        ("vwap", pa.float64()),
        ("volume", pa.int64()),
        ("amount", pa.float64()),
        ("adj_factor", pa.float64()),
        ("limit_up", pa.float64()),
        ("limit_down", pa.float64()),
        ("suspended", pa.bool_()),
        ("st", pa.bool_()),
        ("float_cap", pa.float64()),
        ("industry", SYMBOL),
    ]
)

INDEX_WEIGHTS = pa.schema(
    [
        ("date", pa.date32()),
        ("index", SYMBOL),
        ("symbol", SYMBOL),
        ("weight", pa.float64()),
    ]
)

# Security master: one row per security, not partitioned by date.
SECURITIES = pa.schema(
    [
        ("symbol", pa.string()),
        ("name", pa.string()),
        ("board", pa.string()),
        ("list_date", pa.date32()),
        ("delist_date", pa.date32()),
        ("industry", pa.string()),
        ("float_shares", pa.float64()),
    ]
)

# Point-in-time security names (optional): each name holds from ``start_date`` until the next
# row's; a null ``start_date`` means since the beginning. ST status on a date is read from the
# name that held then (``fbgpu.data.ingest.vendor_bars.Master.st_on``).
SECURITY_NAMES = pa.schema(
    [
        ("symbol", pa.string()),
        ("start_date", pa.date32()),
        ("name", pa.string()),
    ]
)

WEIGHTS = pa.schema(
    [
        ("date", pa.date32()),
        ("portfolio", SYMBOL),
        ("symbol", SYMBOL),
        ("weight", pa.float64()),
    ]
)

#: Tables with a fixed schema. ``factors`` and ``scores`` are wide tables whose float64 columns
#: are named by factor/score (see :func:`wide_schema`).
SCHEMAS: dict[str, pa.Schema] = {
    "trades": TRADES,
    "orders": ORDERS,
    "cancels": CANCELS,
    "minute": MINUTE,
    "daily": DAILY,
    "index_weights": INDEX_WEIGHTS,
    "securities": SECURITIES,
    "security_names": SECURITY_NAMES,
    "weights": WEIGHTS,
}

#: Sort keys within one partition (stock-day runs must be contiguous).
SORT_KEYS: dict[str, tuple[str, ...]] = {
    "trades": ("symbol", "seq"),
    "orders": ("symbol", "seq"),
    "cancels": ("symbol", "seq"),
    "minute": ("symbol", "minute"),
    "daily": ("symbol",),
    "index_weights": ("index", "symbol"),
    "securities": ("symbol",),
    "security_names": ("symbol", "start_date"),
    "weights": ("portfolio", "symbol"),
    "factors": ("symbol",),
    "scores": ("symbol",),
}

#: Tables stored as one file rather than partitioned by date.
UNPARTITIONED = frozenset({"securities", "security_names"})


def wide_schema(value_columns: list[str]) -> pa.Schema:
    """Schema of a wide derived table (``factors``, ``scores``): date, symbol, float64 columns."""
    fields = [pa.field("date", pa.date32()), pa.field("symbol", SYMBOL)]
    fields += [pa.field(c, pa.float64()) for c in value_columns]
    return pa.schema(fields)


def schema_for(table: str, value_columns: list[str] | None = None) -> pa.Schema:
    """The canonical schema of ``table``; wide tables need their value column names."""
    if table in SCHEMAS:
        return SCHEMAS[table]
    if value_columns is None:
        raise KeyError(f"table {table!r} has no fixed schema; pass its value columns")
    return wide_schema(value_columns)
