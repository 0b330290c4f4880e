"""Bars from ticks: trades -> 240 one-minute bars -> daily bars (spec/factors.md "Minute bars").

Shared by the synthetic market and by ingest, so that minute bars are aggregated one way only.

Minute grid (``k = 0..239``), for a trade at ``t`` (exchange time):

* ``t < 09:30`` -> 0 (opening call auction folded into the first bar);
* ``09:30 <= t < 11:30`` -> ``floor((t - 09:30) / 1 min)``; ``11:30 <= t < 13:00`` -> 119;
* ``13:00 <= t < 15:00`` -> ``120 + floor((t - 13:00) / 1 min)``;
* ``t >= 15:00`` -> 239 (closing call auction folded into the last bar).

A minute without trades keeps volume 0, amount 0, num_trades 0 and open = high = low = close = the
previous close (the last traded price before it, or the day's ``pre_close`` before the first
trade; when ``pre_close`` is NaN the first traded price of the day is used).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from fbgpu.data.schemas import MINUTES_PER_DAY

NS_PER_MIN = 60 * 1_000_000_000
NS_PER_HOUR = 60 * NS_PER_MIN


def hhmm_to_ns(h: int, m: int, s: float = 0.0) -> int:
    """Nanoseconds since midnight of a wall-clock time."""
    return round(((h * 60 + m) * 60 + s) * 1e9)


T_0915 = hhmm_to_ns(9, 15)
T_0925 = hhmm_to_ns(9, 25)
T_0930 = hhmm_to_ns(9, 30)
T_1000 = hhmm_to_ns(10, 0)
T_1130 = hhmm_to_ns(11, 30)
T_1300 = hhmm_to_ns(13, 0)
T_1430 = hhmm_to_ns(14, 30)
T_1457 = hhmm_to_ns(14, 57)
T_1500 = hhmm_to_ns(15, 0)


@nb.njit(cache=True, inline="always")
def minute_of_ts_scalar(t: int) -> int:
    if t < T_0930:
        return 0
    if t < T_1130:
        return (t - T_0930) // NS_PER_MIN
    if t < T_1300:
        return 119
    if t < T_1500:
        return 120 + (t - T_1300) // NS_PER_MIN
    return 239


@nb.njit(cache=True)
def _minute_of_ts(ts: np.ndarray) -> np.ndarray:
    out = np.empty(ts.shape[0], dtype=np.int16)
    for i in range(ts.shape[0]):
        out[i] = minute_of_ts_scalar(ts[i])
    return out


def minute_of_ts(ts: np.ndarray) -> np.ndarray:
    """Minute index 0..239 of each timestamp (int64 ns since midnight), as int16."""
    return _minute_of_ts(np.ascontiguousarray(ts, dtype=np.int64))


@nb.njit(cache=True, parallel=True)
def _minute_bars(offsets, ts, price, volume, amount, pre_close, o, h, lo, c, v, a, n):
    S = offsets.shape[0] - 1
    for s in nb.prange(S):
        lo_i, hi_i = offsets[s], offsets[s + 1]
        for k in range(MINUTES_PER_DAY):
            o[s, k] = np.nan
            v[s, k] = 0
            a[s, k] = 0.0
            n[s, k] = 0
        for i in range(lo_i, hi_i):
            k = minute_of_ts_scalar(ts[i])
            p = price[i]
            if n[s, k] == 0:
                o[s, k] = p
                h[s, k] = p
                lo[s, k] = p
            else:
                h[s, k] = max(h[s, k], p)
                lo[s, k] = min(lo[s, k], p)
            c[s, k] = p
            v[s, k] += volume[i]
            a[s, k] += amount[i]
            n[s, k] += 1
        prev = pre_close[s]
        if not np.isfinite(prev) and hi_i > lo_i:
            prev = price[lo_i]
        for k in range(MINUTES_PER_DAY):
            if n[s, k] == 0:
                o[s, k] = prev
                h[s, k] = prev
                lo[s, k] = prev
                c[s, k] = prev
            else:
                prev = c[s, k]


def minute_bars_from_trades(
    offsets: np.ndarray,
    ts: np.ndarray,
    price: np.ndarray,
    volume: np.ndarray,
    amount: np.ndarray,
    pre_close: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Aggregate a day's trades (CSR over stocks, sequence order) into ``[stocks, 240]`` bars.

    Returns ``open, high, low, close, amount`` (float64), ``volume`` (int64) and ``num_trades``
    (int32), each ``[n_stocks, 240]``.
    """
    S = len(offsets) - 1
    if pre_close is None:
        pre_close = np.full(S, np.nan)
    shape = (S, MINUTES_PER_DAY)
    o, h, lo, c, a = (np.empty(shape) for _ in range(5))
    v = np.empty(shape, dtype=np.int64)
    n = np.empty(shape, dtype=np.int32)
    _minute_bars(
        np.ascontiguousarray(offsets, dtype=np.int64),
        np.ascontiguousarray(ts, dtype=np.int64),
        np.ascontiguousarray(price, dtype=np.float64),
        np.ascontiguousarray(volume, dtype=np.int64),
        np.ascontiguousarray(amount, dtype=np.float64),
        np.ascontiguousarray(pre_close, dtype=np.float64),
        o, h, lo, c, v, a, n,
    )
    return {"open": o, "high": h, "low": lo, "close": c, "volume": v, "amount": a,
            "num_trades": n}


def daily_from_minute(bars: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Daily OHLC, volume, amount, vwap per stock from ``[stocks, 240]`` minute bars.

    open = open of the first minute with trades, close = close of bar 239 (the last traded price),
    high/low over minutes with trades, vwap = amount / volume (NaN without volume). Stocks
    without any trade get NaN prices and zero volume (the caller marks them suspended).
    """
    n = bars["num_trades"]
    traded = n > 0
    any_trade = traded.any(axis=1)
    first = np.argmax(traded, axis=1)
    rows = np.arange(n.shape[0])
    open_ = np.where(any_trade, bars["open"][rows, first], np.nan)
    high = np.where(traded, bars["high"], -np.inf).max(axis=1)
    low = np.where(traded, bars["low"], np.inf).min(axis=1)
    volume = bars["volume"].sum(axis=1)
    amount = bars["amount"].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        vwap = np.where(volume > 0, amount / np.maximum(volume, 1), np.nan)
    return {
        "open": open_,
        "high": np.where(any_trade, high, np.nan),
        "low": np.where(any_trade, low, np.nan),
        "close": np.where(any_trade, bars["close"][:, -1], np.nan),
        "volume": volume,
        "amount": amount,
        "vwap": vwap,
    }
