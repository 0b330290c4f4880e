"""Invariants on bars and ticks before they are stored (issue 13): values that cannot be true.

Each check looks at parsed :class:`~fbgpu.data.ingest.reader.Rows` and raises
:class:`~fbgpu.data.ingest.errors.IngestError` for the first violating row, naming its file, data
row and vendor column. A violation rejects the whole ingest (nothing is written); there is no
policy that drops such rows, because a bar with ``close > high`` or a trade with a price of
``1e308`` says the file is corrupt or mis-mapped, not that one row is noise.

Rules (docs/ingest.md, "Rules"):

- prices are finite, positive and at most :data:`MAX_PRICE` CNY (minute and daily bars: open,
  high, low, close, where given; trades: the price);
- bars: ``high >= low`` and open and close within ``[low, high]`` (to :data:`PRICE_TOL`), volume
  and amount not negative;
- trades: a vendor amount (``TradeMoney``) equals price x volume within
  ``AMOUNT_RTOL * |price x volume| + AMOUNT_ATOL``;
- tick tables: ``seq >= 0``;
- trades: a price within a factor :data:`BAND_RATIO` of its reference, the stock's previous
  close when the store knows it, else the median trade price of its stock-day
  (``ref / 5 <= price <= 5 * ref``), so a 100x or 1e9 price is rejected while the widest real
  moves pass (a 30% limit day, a 10-for-10 ex-rights day halving the price, a no-limit IPO day).
"""

from __future__ import annotations

import numpy as np

from fbgpu.data.ingest.reader import Rows

#: Highest plausible price of an A-share instrument, CNY (the dearest stocks trade near 2,000).
MAX_PRICE = 1e6
#: Slack for the OHLC ordering of bars, CNY (prices are multiples of 0.001 or 0.01).
PRICE_TOL = 1e-6
#: Tolerance of a vendor trade amount against price x volume: relative, plus absolute CNY.
AMOUNT_RTOL, AMOUNT_ATOL = 1e-6, 0.01

#: Plausibility band of trade prices: within [ref / BAND_RATIO, ref * BAND_RATIO].
BAND_RATIO = 5.0

PRICES = ("open", "high", "low", "close")


def _fmt(x: float) -> str:
    return f"{float(x):g}"


def check_prices(rows: Rows, field: str, what: str, mask: np.ndarray | None = None,
                 optional: bool = False) -> None:
    """``rows.values[field]`` finite, > 0 and <= :data:`MAX_PRICE` (NaN allowed if ``optional``)."""
    p = rows.values[field]
    bad = ~(np.isfinite(p) & (p > 0) & (p <= MAX_PRICE))
    if optional:
        bad &= ~np.isnan(p)
    if mask is not None:
        bad &= mask
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        x = float(p[i])
        why = ("is not positive" if x <= 0 else f"is above {MAX_PRICE:,.0f} CNY"
               if np.isfinite(x) else "is not finite")
        raise rows.error(i, field, f"{what} {field} {_fmt(x)} {why}: not a plausible price "
                         "(corrupt input or a wrong column/unit in the mapping)")


def check_bars(rows: Rows, what: str, mask: np.ndarray | None = None,
               optional: bool = False) -> None:
    """OHLC bars: plausible prices, ``low <= open, close <= high``, volume and amount >= 0.

    ``mask`` limits the check to some rows (e.g. the stock rows of a daily file); with
    ``optional`` empty (NaN) prices, volumes and amounts are allowed and skip the rules that need
    them (daily rows of suspended stocks often leave open/high/low empty).
    """
    v = rows.values
    m = np.ones(rows.n, dtype=bool) if mask is None else mask
    for f in ("volume", "amount"):
        if f in v:
            a = v[f]
            bad = m & (a < 0)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise rows.error(i, f, f"{what} {f} {_fmt(a[i])} is negative")
    for f in PRICES:
        check_prices(rows, f, what, m, optional=optional)
    hi, lo = v["high"], v["low"]
    bad = m & (hi < lo - PRICE_TOL)  # NaN compares False: a missing high or low is not checked
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise rows.error(i, "high", f"{what} high {_fmt(hi[i])} is below low {_fmt(lo[i])}")
    for f in ("open", "close"):
        x = v[f]
        bad = m & ((x > hi + PRICE_TOL) | (x < lo - PRICE_TOL))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise rows.error(i, f, f"{what} {f} {_fmt(x[i])} lies outside [low {_fmt(lo[i])}, "
                             f"high {_fmt(hi[i])}]")


#: Largest magnitude a float count can have and still convert to int64 (2**63).
INT64_LIMIT = 2.0**63


def check_int64(rows: Rows, field: str, values: np.ndarray) -> None:
    """Float counts (volumes, after ``volume_multiplier``) that an int64 can hold.

    A value at or beyond 2**63 would wrap to a negative number on conversion; it is reported as
    an overflow, with the value as the file gives it, instead.
    """
    over = np.isfinite(values) & (np.abs(values) >= INT64_LIMIT)
    if over.any():
        i = int(np.flatnonzero(over)[0])
        raise rows.error(i, field, f"overflow: {field} {_fmt(values[i])} is out of the int64 "
                         "range (|value| < 2**63); corrupt input or a wrong column/unit")


def check_seq(table: str, rows: Rows) -> None:
    """Sequence numbers are not negative."""
    seq = rows.values["seq"]
    bad = seq < 0
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise rows.error(i, "seq", f"sequence number {int(seq[i])} of a {table[:-1]} is "
                         "negative")


def check_trades(rows: Rows) -> None:
    """Canonical trades: plausible prices; amount = price x volume (the vendor's, when given)."""
    check_prices(rows, "price", "trade")
    v = rows.values
    expect = v["price"] * v["volume"]
    amount = v["amount"]
    bad = np.abs(amount - expect) > AMOUNT_RTOL * np.abs(expect) + AMOUNT_ATOL
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise rows.error(i, "amount", f"trade amount {_fmt(amount[i])} is not price x volume "
                         f"({_fmt(v['price'][i])} x {int(v['volume'][i])} = {_fmt(expect[i])}); "
                         "is the volume in lots (volume_multiplier = 100)?")


def stock_day_median(rows: Rows, field: str) -> np.ndarray:
    """Per row, the median of ``field`` over the row's stock-day (same symbol and date)."""
    v = rows.values
    p = v[field]
    key = v["date"].astype(np.int64) << 32 | v["symbol"].astype(np.int64)
    _, inv = np.unique(key, return_inverse=True)
    order = np.lexsort((p, inv))
    counts = np.bincount(inv)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    srt = p[order]
    lo = srt[starts + (counts - 1) // 2]
    hi = srt[starts + counts // 2]
    return ((lo + hi) / 2)[inv]


def check_price_band(rows: Rows, prev_close: np.ndarray | None = None) -> None:
    """Trade prices within a factor :data:`BAND_RATIO` of their reference price.

    The reference is ``prev_close`` (per row; NaN where unknown), else the stock-day median.
    """
    if rows.n == 0:
        return
    p = rows.values["price"]
    med = stock_day_median(rows, "price")
    ref = med if prev_close is None else np.where(np.isfinite(prev_close) & (prev_close > 0),
                                                  prev_close, med)
    bad = (p > ref * BAND_RATIO) | (p < ref / BAND_RATIO)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        what = ("the previous close" if prev_close is not None and np.isfinite(prev_close[i])
                and prev_close[i] > 0 else "the median trade price of its stock-day")
        raise rows.error(i, "price", f"trade price {_fmt(p[i])} is more than {BAND_RATIO:g}x "
                         f"away from {what} {_fmt(ref[i])}: not a plausible price (corrupt "
                         "input, or a price in the wrong unit)")
