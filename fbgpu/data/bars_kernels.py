"""The numba kernels of :mod:`fbgpu.data.bars` (minute index of a timestamp, minute bars).

A module of their own so that importing :mod:`fbgpu.data.bars` (its constants and the
functions that call these) does not import numba: ``fbgpu factors`` imports the bar constants
through :mod:`fbgpu.factors.context` long before any kernel runs, and numba costs ~0.2-0.4 s of
start-up. :mod:`fbgpu.data.bars` loads this module on the first call (and re-exports
``minute_of_ts_scalar`` lazily for the CPU engine's kernels).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from fbgpu.data.bars import NS_PER_MIN, T_0930, T_1130, T_1300, T_1500
from fbgpu.data.schemas import MINUTES_PER_DAY


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
