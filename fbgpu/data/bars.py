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

from typing import Any

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


def __getattr__(name: str) -> Any:
    """``minute_of_ts_scalar`` (a numba function, for other kernels) from
    :mod:`fbgpu.data.bars_kernels`, imported on first use so that this module does not import
    numba."""
    if name == "minute_of_ts_scalar":
        from fbgpu.data.bars_kernels import minute_of_ts_scalar

        return minute_of_ts_scalar
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def minute_of_ts(ts: np.ndarray) -> np.ndarray:
    """Minute index 0..239 of each timestamp (int64 ns since midnight), as int16."""
    from fbgpu.data.bars_kernels import _minute_of_ts

    return _minute_of_ts(np.ascontiguousarray(ts, dtype=np.int64))


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
    from fbgpu.data.bars_kernels import _minute_bars

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
