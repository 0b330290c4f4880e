"""Minute grid and bar aggregation against a direct pandas computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from fbgpu.data.bars import (
    T_0925,
    T_0930,
    T_1130,
    T_1300,
    T_1500,
    daily_from_minute,
    hhmm_to_ns,
    minute_bars_from_trades,
    minute_of_ts,
)


def _minute_ref(t: int) -> int:
    if t < T_0930:
        return 0
    if t < T_1130:
        return (t - T_0930) // 60_000_000_000
    if t < T_1300:
        return 119
    if t < T_1500:
        return 120 + (t - T_1300) // 60_000_000_000
    return 239


def test_minute_grid_boundaries() -> None:
    cases = {
        T_0925: 0,
        T_0930: 0,
        T_0930 + 59_999_999_999: 0,
        hhmm_to_ns(9, 31): 1,
        hhmm_to_ns(11, 29, 59.999): 119,
        T_1130: 119,
        T_1300 - 1: 119,
        T_1300: 120,
        hhmm_to_ns(14, 59, 59.9): 239,
        T_1500: 239,
        hhmm_to_ns(15, 0, 1): 239,
    }
    got = minute_of_ts(np.array(list(cases), dtype=np.int64))
    assert got.tolist() == list(cases.values())


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(
                st.integers(hhmm_to_ns(9, 15), hhmm_to_ns(15, 0, 30)),
                st.integers(900, 1100),
                st.integers(1, 50),
            ),
            max_size=40,
        ),
        min_size=1,
        max_size=4,
    )
)
def test_minute_bars_match_pandas(stocks: list[list[tuple[int, int, int]]]) -> None:
    ts, px, vol, offsets = [], [], [], [0]
    for trades in stocks:
        trades = sorted(trades)  # sequence order == time order
        ts += [t for t, _, _ in trades]
        px += [p / 100 for _, p, _ in trades]
        vol += [v * 100 for _, _, v in trades]
        offsets.append(len(ts))
    ts_a = np.array(ts, dtype=np.int64)
    px_a = np.array(px, dtype=np.float64)
    vol_a = np.array(vol, dtype=np.int64)
    amt = px_a * vol_a
    pre = np.full(len(stocks), 9.87)
    bars = minute_bars_from_trades(np.array(offsets), ts_a, px_a, vol_a, amt, pre)
    for s in range(len(stocks)):
        lo, hi = offsets[s], offsets[s + 1]
        df = pd.DataFrame({"k": [_minute_ref(t) for t in ts[lo:hi]], "p": px[lo:hi],
                           "v": vol[lo:hi], "a": amt[lo:hi]})
        g = df.groupby("k", sort=True)
        ref = pd.DataFrame({"open": g.p.first(), "high": g.p.max(), "low": g.p.min(),
                            "close": g.p.last(), "volume": g.v.sum(), "amount": g.a.sum(),
                            "num_trades": g.p.size()}).reindex(range(240))
        ref[["volume", "amount", "num_trades"]] = ref[["volume", "amount", "num_trades"]].fillna(0)
        ref["close"] = ref["close"].ffill().fillna(9.87)
        for c in ("open", "high", "low"):
            ref[c] = ref[c].fillna(ref["close"])
        for c in ref.columns:
            np.testing.assert_allclose(bars[c][s], ref[c].to_numpy(), rtol=0, atol=1e-9,
                                       err_msg=f"stock {s} field {c}")
    day = daily_from_minute(bars)
    for s in range(len(stocks)):
        lo, hi = offsets[s], offsets[s + 1]
        if hi == lo:
            assert np.isnan(day["close"][s]) and day["volume"][s] == 0
            continue
        assert day["open"][s] == px[lo] and day["close"][s] == px[hi - 1]
        assert day["high"][s] == max(px[lo:hi]) and day["low"][s] == min(px[lo:hi])
        assert day["volume"][s] == sum(vol[lo:hi])
        np.testing.assert_allclose(day["vwap"][s], amt[lo:hi].sum() / sum(vol[lo:hi]))
