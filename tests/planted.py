"""A small planted market written straight into a store, shared by the model tests.

A persistent AR(1) state ``z`` per stock drives the next day's return, ``r[t] = 0.004 z[t-1] +
0.01 e``, and factor ``f0`` observes ``z`` with noise; the other factors are noise. Three
industries, random float caps, optional suspensions, one optional ST stock and an optional
equal-weight index of every stock. Deterministic for a given ``seed``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa

from fbgpu.data.store import Store


def weekdays(n: int, start: dt.date = dt.date(2021, 1, 4)) -> list[dt.date]:
    """The first ``n`` weekdays from ``start`` (the planted markets have no holidays)."""
    out, d = [], start
    while len(out) < n:
        if d.weekday() < 5:
            out.append(d)
        d += dt.timedelta(1)
    return out


def write_planted_store(root: Path, *, D: int, S: int, F: int, seed: int, rho: float,
                        shock: float, factor_noise: float, suspension_rate: float = 0.0,
                        st_stock: int | None = None, amount_from_volume: bool = False,
                        index_weights: bool = False) -> Store:
    """Write ``securities``, ``daily`` and ``factors`` (and ``index_weights`` if asked).

    ``z[t] = rho z[t-1] + shock e``; ``f0 = z + factor_noise e``. ``amount`` is close x volume
    when ``amount_from_volume``, else close x 50,000. A suspended stock-day has volume 0.
    """
    rng = np.random.default_rng(seed)
    st = Store(root)
    dates = weekdays(D)
    syms = [f"{600000 + i}.SH" for i in range(S)]
    z = np.zeros((D, S))
    z[0] = rng.standard_normal(S)
    for t in range(1, D):
        z[t] = rho * z[t - 1] + shock * rng.standard_normal(S)
    r = np.zeros((D, S))
    r[1:] = 0.004 * z[:-1] + 0.01 * rng.standard_normal((D - 1, S))
    close = 10 * np.exp(np.cumsum(r, 0))
    industries = [f"ind{i % 3}" for i in range(S)]
    cap = np.exp(rng.normal(22, 1, S))
    # drawn only when asked, so that each caller's random stream stays what it was
    susp = rng.random((D, S)) < suspension_rate if suspension_rate else np.zeros((D, S), bool)
    st.write("securities", None, pa.table({
        "symbol": syms, "name": syms, "board": ["main"] * S,
        "list_date": [dt.date(2010, 1, 4)] * S, "delist_date": pa.array([None] * S, pa.date32()),
        "industry": industries, "float_shares": cap / 10,
    }))
    st_flag = np.arange(S) == st_stock if st_stock is not None else np.zeros(S, bool)
    for t, day in enumerate(dates):
        c = np.round(close[t], 2)
        pre = np.round(close[t - 1], 2) if t else c
        vol = np.where(susp[t], 0, rng.integers(10_000, 90_000, S))
        st.write("daily", day, pa.table({
            "date": [day] * S, "symbol": syms, "open": pre, "high": np.maximum(pre, c) * 1.01,
            "low": np.minimum(pre, c) * 0.99, "close": c, "pre_close": pre, "vwap": c,
            "volume": vol, "amount": c * vol if amount_from_volume else c * 50_000.0,
            "adj_factor": np.ones(S), "limit_up": np.round(pre * 1.1, 2),
            "limit_down": np.round(pre * 0.9, 2), "suspended": susp[t], "st": st_flag,
            "float_cap": cap * c / 10, "industry": industries,
        }))
        f = rng.standard_normal((S, F))
        f[:, 0] = z[t] + factor_noise * rng.standard_normal(S)
        st.write("factors", day, pa.table({"date": [day] * S, "symbol": syms,
                                           **{f"f{j}": f[:, j] for j in range(F)}}))
        if index_weights:
            st.write("index_weights", day, pa.table({
                "date": [day] * S, "index": ["idx"] * S, "symbol": syms,
                "weight": np.full(S, 1.0 / S)}))
    return st
