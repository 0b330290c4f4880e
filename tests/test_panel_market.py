"""Market: pool rules, evaluation returns and labels, style factors, store loading, look-ahead."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from fbgpu.data.store import Store, StoreError
from fbgpu.panel.market import Market, PoolConfig, load_market, rebalance_indices


def _calendar(D: int, start: dt.date = dt.date(2021, 1, 4)) -> list[dt.date]:
    return [d.date() for d in pd.bdate_range(start, periods=D)]


def make_market(D: int = 90, S: int = 8, seed: int = 0) -> Market:
    """A random but consistent market: every stock listed long ago, all trading every day."""
    rng = np.random.default_rng(seed)
    close = 10 * np.exp(np.cumsum(rng.normal(0, 0.02, size=(D, S)), axis=0))
    vwap = close * (1 + rng.normal(0, 0.003, size=(D, S)))
    pre = np.vstack([close[:1], close[:-1]])
    op = pre * (1 + rng.normal(0, 0.005, size=(D, S)))
    volume = rng.integers(1_000, 100_000, size=(D, S)).astype(float)
    float_shares = rng.uniform(1e7, 1e9, size=S)
    fields = {
        "open": op, "close": close, "vwap": vwap,
        "adj_factor": np.ones((D, S)),
        "limit_up": np.round(pre * 1.1, 2), "limit_down": np.round(pre * 0.9, 2),
        "amount": volume * vwap, "volume": volume,
        "float_cap": close * float_shares[None, :],
    }
    return Market(
        dates=_calendar(D),
        symbols=np.array([f"{600000 + i}.SH" for i in range(S)], dtype=object),
        present=np.ones((D, S), bool),
        fields=fields,
        suspended=np.zeros((D, S), bool),
        st=np.zeros((D, S), bool),
        industry=np.tile(np.arange(S) % 3, (D, 1)),
        industries=["bank", "chem", "tech"],
        list_date=np.array(["2010-01-04"] * S, dtype="datetime64[D]"),
    )


def test_pool_rules_hand_example() -> None:
    m = make_market(D=80, S=6)
    cal = np.array(m.dates, dtype="datetime64[D]")
    m.list_date[0] = cal[10]  # lists on row 10: in the universe from row 10 + 59 = 69
    m.st[30:35, 1] = True
    m.suspended[40, 2] = True  # suspended on row 40 -> not buyable -> out of pool on row 39
    m.fields["open"][50, 3] = m.fields["limit_up"][50, 3]  # opens at limit-up on row 50
    m.present[:20, 4] = False  # no rows before row 20, no listing date known
    m.list_date[4] = np.datetime64("NaT")
    cfg = PoolConfig()
    uni, pool = m.universe(cfg), m.pool(cfg)
    assert not uni[68, 0] and uni[69, 0]
    assert m.listed_days()[69, 0] == 60
    assert not uni[30:35, 1].any() and uni[29, 1] and uni[35, 1]
    assert uni[39, 2] and not pool[39, 2] and pool[38, 2]
    assert uni[49, 3] and not pool[49, 3] and pool[50, 3]
    # No listing date: counted from its first row (20).
    assert m.listed_days()[78, 4] == 59 and not uni[78, 4]
    assert m.listed_days()[79, 4] == 60 and uni[79, 4]
    assert not pool[-1].any()  # no T+1 on the last day
    assert pool[:, 5].sum() == 79
    # Switches turn the rules off.
    loose = PoolConfig(min_listed_days=0, exclude_st=False, exclude_suspended_next=False,
                       exclude_limit_up_open_next=False)
    loose_pool = m.pool(loose)
    assert loose_pool[:-1, [0, 1, 2, 3, 5]].all()
    assert loose_pool[20:-1, 4].all() and not loose_pool[:20, 4].any()


def test_listing_before_calendar_counts_weekdays() -> None:
    m = make_market(D=10, S=1)
    m.list_date[0] = np.datetime64(m.dates[0]) - np.timedelta64(7, "D")  # one week earlier
    assert m.listed_days()[0, 0] == 6  # 5 weekdays before + the first day


def test_forward_returns_and_labels_hand_values() -> None:
    m = make_market(D=30, S=5)
    m.fields["adj_factor"][12:, 0] = 2.0  # a 2-for-1 style adjustment on row 12
    m.suspended[8, 1] = True  # suspended at the exit day of T = 2: marked at the close
    r = m.forward_returns(1, 6)
    v, a, c = m["vwap"], m["adj_factor"], m["close"]
    T = 7  # entry row 8, exit row 13 for stock 0 crosses the adjustment
    assert a[13, 0] == 2.0 and a[8, 0] == 1.0
    assert r[T, 0] == pytest.approx(v[13, 0] * 2.0 / v[8, 0] - 1, rel=1e-14)
    assert r[2, 1] == pytest.approx(c[8, 1] / v[3, 1] - 1, rel=1e-14)
    assert np.isnan(r[-6:]).all() and np.isfinite(r[:-6]).all()
    lab = m.labels(m.pool(PoolConfig(min_listed_days=0)), 1, 11)
    raw = m.forward_returns(1, 11)
    row = raw[4]
    np.testing.assert_allclose(lab[4], (row - row.mean()) / row.std(), rtol=1e-12)
    assert np.isnan(lab[-11:]).all()
    with pytest.raises(ValueError):
        m.forward_returns(3, 3)


def test_rebalance_indices() -> None:
    np.testing.assert_array_equal(rebalance_indices(12, 5), [0, 5, 10])
    np.testing.assert_array_equal(rebalance_indices(12, 5, 2), [2, 7])
    with pytest.raises(ValueError):
        rebalance_indices(10, 0)


def test_style_factors_against_pandas() -> None:
    m = make_market(D=100, S=6, seed=3)
    m.suspended[50:53, 2] = True
    m.fields["volume"][50:53, 2] = 0
    m.fields["amount"][50:53, 2] = 0
    sty = m.style_factors()
    close = pd.DataFrame(m.adjusted_close())
    np.testing.assert_allclose(sty["reversal"], (close / close.shift(20) - 1).to_numpy(),
                               equal_nan=True, rtol=1e-12)
    np.testing.assert_allclose(sty["size"], np.log(m["float_cap"]))
    amt = pd.DataFrame(np.where(m.suspended, np.nan, m["amount"]))
    np.testing.assert_allclose(sty["amount"], amt.rolling(20, min_periods=10).mean().to_numpy(),
                               equal_nan=True, rtol=1e-12)
    turn = pd.DataFrame(np.where(m.suspended, np.nan,
                                 m["volume"] / (m["float_cap"] / m["close"])))
    np.testing.assert_allclose(sty["turnover"],
                               turn.rolling(20, min_periods=10).mean().to_numpy(),
                               equal_nan=True, rtol=1e-10)
    ret = close.pct_change().where(~pd.DataFrame(m.suspended))
    mkt = ret.mean(axis=1)
    T, s = 90, 2
    y = ret.iloc[T - 59: T + 1, s]
    x = mkt.iloc[T - 59: T + 1]
    ok = y.notna() & x.notna()
    slope = np.polyfit(x[ok], y[ok], 1)[0]
    assert sty["beta"][T, s] == pytest.approx(slope, rel=1e-9)
    assert np.isnan(sty["beta"][:20]).all()


def test_lookahead_probes() -> None:
    base = make_market(D=80, S=8, seed=4)
    T = 40
    moved = make_market(D=80, S=8, seed=4)
    rng = np.random.default_rng(9)
    for k in moved.fields:
        moved.fields[k][T + 2:] *= rng.uniform(0.5, 1.5, size=moved.fields[k][T + 2:].shape)
    moved.st[T + 2:] = True
    moved.suspended[T + 2:, ::2] = True
    moved.present[T + 2:, 1] = False
    # Known at T: universe and style factors; the pool (T+1 filter) is known at T+1's open.
    np.testing.assert_array_equal(moved.universe()[: T + 2], base.universe()[: T + 2])
    np.testing.assert_array_equal(moved.pool()[: T + 1], base.pool()[: T + 1])
    for k, v in base.style_factors().items():
        np.testing.assert_array_equal(moved.style_factors()[k][: T + 2], v[: T + 2], err_msg=k)
    # Returns and labels: row t depends on rows t+1 .. t+6 (t+11) only.
    np.testing.assert_array_equal(moved.forward_returns()[: T + 2 - 6],
                                  base.forward_returns()[: T + 2 - 6])
    np.testing.assert_array_equal(moved.labels(None)[: T + 2 - 11], base.labels(None)[: T + 2 - 11])


def test_changing_one_day_moves_only_returns_whose_window_contains_it() -> None:
    base = make_market(D=60, S=5, seed=5)
    Dd = 30
    moved = make_market(D=60, S=5, seed=5)
    moved.fields["vwap"][Dd] *= 1.07
    moved.fields["close"][Dd] *= 0.97
    for start, end in ((1, 6), (1, 11)):
        diff = ~np.isclose(moved.forward_returns(start, end), base.forward_returns(start, end),
                           rtol=0, atol=0, equal_nan=True)
        rows = set(np.flatnonzero(diff.any(axis=1)).tolist())
        assert rows == {Dd - start, Dd - end}, (start, end, rows)
    lab_diff = ~np.isclose(moved.labels(None), base.labels(None), rtol=0, atol=0, equal_nan=True)
    rows = np.flatnonzero(lab_diff.any(axis=1))
    assert set(rows.tolist()) <= set(range(Dd - 11, Dd))


def _daily_table(m: Market, d: int) -> pa.Table:
    keep = m.present[d]
    n = int(keep.sum())
    cols = {"date": [m.dates[d]] * n, "symbol": list(m.symbols[keep])}
    for k in ("open", "close", "vwap", "adj_factor", "limit_up", "limit_down", "amount",
              "float_cap"):
        cols[k] = m[k][d, keep]
    cols["high"] = m["close"][d, keep] * 1.01
    cols["low"] = m["close"][d, keep] * 0.99
    cols["pre_close"] = m["close"][d, keep]
    cols["volume"] = m["volume"][d, keep].astype(np.int64)
    cols["suspended"] = m.suspended[d, keep]
    cols["st"] = m.st[d, keep]
    cols["industry"] = [m.industries[i] for i in m.industry[d, keep]]
    return pa.table(cols)


def test_load_market_from_store(tmp_path) -> None:
    m = make_market(D=12, S=5, seed=6)
    m.present[:4, 3] = False
    m.st[5, 2] = True
    m.suspended[6, 1] = True
    store = Store(tmp_path / "s")
    with pytest.raises(StoreError, match="no daily table"):
        load_market(store)
    for d in range(12):
        store.write("daily", m.dates[d], _daily_table(m, d))
    got = load_market(store)
    assert got.dates == m.dates and list(got.symbols) == list(m.symbols)
    np.testing.assert_array_equal(got.present, m.present)
    np.testing.assert_array_equal(got.st, m.st)
    np.testing.assert_array_equal(got.suspended, m.suspended)
    for k in ("vwap", "close", "float_cap"):
        np.testing.assert_allclose(got[k][m.present], m[k][m.present])
        assert np.isnan(got[k][~m.present]).all()
    assert got.industries == m.industries
    np.testing.assert_array_equal(got.industry[m.present], m.industry[m.present])
    assert (got.industry[~m.present] == -1).all()
    assert np.isnat(got.list_date).all()  # no securities table
    sec = pa.table({"symbol": list(m.symbols), "name": list(m.symbols),
                    "board": ["main"] * 5, "list_date": [dt.date(2020, 1, 1)] * 5,
                    "delist_date": pa.array([None] * 5, pa.date32()),
                    "industry": ["x"] * 5, "float_shares": [1e8] * 5})
    store.write("securities", None, sec)
    got = load_market(store)
    assert (got.list_date == np.datetime64("2020-01-01")).all()
