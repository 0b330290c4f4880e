"""Every factor, every stock-day: the engine against the independent pandas/scipy oracle.

Two markets: the hand-made adversarial one (tests/oracle_factors.py) and the ``tiny`` synthetic
market. Tolerance: relative 1e-9, plus an absolute 1e-12 for values that are sums of
cancelling terms (log returns, concentration differences) or near-zero correlations; NaN exactly
where the oracle is NaN.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from oracle_factors import MARKET_STOCKS, make_market, oracle_day

from fbgpu.data.store import Store
from fbgpu.factors import FACTORS, FactorConfig, compute_factors, input_dates

DATES = [dt.date(2024, 1, 2), dt.date(2024, 1, 3)]


@pytest.fixture(scope="module")
def handmade(tmp_path_factory: pytest.TempPathFactory) -> Store:
    store = Store(tmp_path_factory.mktemp("handmade"))
    make_market(store, DATES, seed=11)
    return store


def compare(store: Store, dates: list[dt.date], config: FactorConfig | None = None,
            **oracle_rule: object) -> int:
    """Assert engine == oracle for every factor and stock-day; return the number of finite
    values compared (so callers can check the comparison was not vacuous)."""
    cube = compute_factors(store, dates, backend="cpu", config=config)
    wide = cube.to_pandas()
    finite = 0
    for d in dates:
        orc = oracle_day(store, d, **oracle_rule)
        eng = wide.xs(pd.Timestamp(d), level="date")
        assert list(eng.index) == list(orc.index), f"{d}: universes differ"
        for name in FACTORS:
            a = eng[name].to_numpy()
            b = orc[name].to_numpy()
            ok = np.isclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True)
            if not ok.all():
                bad = [(s, x, y) for s, x, y, o in zip(eng.index, a, b, ok, strict=True)
                       if not o]
                pytest.fail(f"{name} on {d}: engine vs oracle differ at {bad[:5]}")
            finite += int(np.isfinite(b).sum())
    return finite


def test_handmade_market_matches_oracle(handmade: Store) -> None:
    n = compare(handmade, DATES)
    assert n > 0.6 * len(DATES) * len(MARKET_STOCKS) * len(FACTORS) * 0.5


def test_handmade_edge_cases_follow_the_rules(handmade: Store) -> None:
    wide = compute_factors(handmade, DATES[:1], backend="cpu").to_pandas()
    row = wide.xs(pd.Timestamp(DATES[0]), level="date")
    # Suspended (flat bars, no trades): undefined everywhere, not 0.
    assert row.loc["600008.SH"].isna().all()
    # Locked at the limit all day, all orders the same amount: every order is big,
    # price-based statistics are undefined (constant), not +-1.
    locked = row.loc["300004.SZ"]
    assert locked["bigorder_amt_perc"] == 1.0
    assert np.isnan(locked["corr_close_nextopen"]) and np.isnan(locked["late_skew_ret"])
    assert locked["bigorder_ret2"] == 0.0
    # Trades only after lunch: early ratios undefined, early sums 0.
    afternoon = row.loc["600006.SH"]
    assert np.isnan(afternoon["early_active_buy_perc"])
    assert afternoon["early_active_bigorder_ret"] == 0.0
    # Stocks absent from a source: that family is NaN, the others are defined.
    assert row.loc["600009.SH", [n for n in FACTORS if FACTORS[n].family != "order"]] \
        .isna().all()
    assert np.isfinite(row.loc["600009.SH", "kurt_order_diff"])
    assert np.isfinite(row.loc["688010.SH", "bigorder_amt_perc"])
    assert np.isnan(row.loc["688010.SH", "corr_netactivebuy_lastret"])  # no bars, no r_k
    # Fewer than 10 orders: order moments undefined.
    assert np.isnan(row.loc["000003.SZ", "skew_order_diff"])


def test_side_unknown_stock_day_is_nan_not_zero(tmp_path: Path) -> None:
    """A stock-day whose trades all have side 0 (a vendor file without a usable BS flag): the
    side-based factors are NaN, not 0; the others are unchanged and still match the oracle."""
    store = Store(tmp_path / "s")
    make_market(store, DATES[:1], seed=11)
    before = compute_factors(store, DATES[:1], backend="cpu").to_pandas()
    t = store.read("trades", DATES[0])
    unknown = pc.equal(t.column("symbol").cast(pa.string()), "000001.SZ")
    side = pc.if_else(unknown, pa.scalar(0, pa.int8()), t.column("side"))
    store.write("trades", DATES[0], t.set_column(t.schema.get_field_index("side"), "side", side))
    assert compare(store, DATES[:1]) > 0
    after = compute_factors(store, DATES[:1], backend="cpu").to_pandas()
    a = after.xs(pd.Timestamp(DATES[0]), level="date")
    b = before.xs(pd.Timestamp(DATES[0]), level="date")
    side_based = ["early_active_bigorder_ret", "early_active_buy_perc",
                  "corr_netactivebuy_lastret", "corr_netactivebuy_nextret"]
    assert np.isfinite(b.loc["000001.SZ", side_based].to_numpy(float)).all()
    assert a.loc["000001.SZ", side_based].isna().all()
    rest = [n for n in FACTORS if n not in side_based]
    pd.testing.assert_series_equal(a.loc["000001.SZ", rest], b.loc["000001.SZ", rest])
    pd.testing.assert_frame_equal(a.drop(index="000001.SZ"), b.drop(index="000001.SZ"))


def test_fixed_notional_rule_matches_oracle(handmade: Store) -> None:
    cfg = FactorConfig(big_order_rule="fixed_notional", big_order_notional=50_000.0)
    compare(handmade, DATES[:1], cfg, rule="fixed_notional", notional=50_000.0)


def test_k_parameter_matches_oracle(handmade: Store) -> None:
    compare(handmade, DATES[:1], FactorConfig(big_order_k=2.0), k=2.0)


def test_tiny_synthetic_market_matches_oracle(tiny_store: Store) -> None:
    # Every third day keeps the test fast while covering the market's whole span (listings,
    # suspensions and limit days are spread over it).
    dates = input_dates(tiny_store, None, None)[::3]
    assert len(dates) >= 10
    n = compare(tiny_store, dates)
    assert n > 0.8 * len(dates) * 20 * len(FACTORS)
