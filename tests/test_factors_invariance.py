"""Invariances and causality of the daily factors.

* scaling every price by a constant leaves return/ratio/correlation factors unchanged;
* renaming stocks so that their order changes permutes the outputs, nothing else;
* adding a stock to a day leaves every other stock's values bit-identical;
* no look-ahead: a day's values depend on that day's partitions only, so rewriting a later day
  (or deleting it) leaves earlier days bit-identical.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from oracle_factors import make_market

from fbgpu.data.store import Store
from fbgpu.factors import FACTORS, compute_factors

DATES = [dt.date(2024, 5, 6), dt.date(2024, 5, 7), dt.date(2024, 5, 8)]
TABLES = ("minute", "trades", "orders")


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Store:
    store = Store(tmp_path_factory.mktemp("inv"))
    make_market(store, DATES, seed=21)
    return store


def copy_store(src: Store, dst: Store, edit: Callable[[str, dt.date, pd.DataFrame], pd.DataFrame]
               | None = None, dates: list[dt.date] | None = None) -> Store:
    for d in dates or DATES:
        for t in TABLES:
            df = src.read(t, d).to_pandas()
            df["symbol"] = df["symbol"].astype(str)
            if edit is not None:
                df = edit(t, d, df)
            dst.write(t, d, pa.Table.from_pandas(df, preserve_index=False))
    return dst


def test_price_scale_invariance(market: Store, tmp_path) -> None:
    c = 3.7

    def scale(table: str, d: dt.date, df: pd.DataFrame) -> pd.DataFrame:
        cols = {"minute": ["open", "high", "low", "close", "amount"],
                "trades": ["price", "amount"], "orders": ["price"]}[table]
        df[cols] = df[cols] * c
        return df

    scaled = copy_store(market, Store(tmp_path), scale)
    a = compute_factors(market, DATES, backend="cpu").to_numpy()
    b = compute_factors(scaled, DATES, backend="cpu").to_numpy()
    # Every one of the 27 is scale-free: returns, correlations, shares of amounts, order
    # volume moments. corr_close_nextopen and corr_buyorder_volume_price are correlations.
    # Scaled prices round differently (c * p is rounded), so returns agree to ~1e-16 relative
    # to the price, i.e. ~1e-11 relative to a 1e-5 return: dimensionless statistics of nearly
    # symmetric returns (skew ~1e-5) need an absolute tolerance.
    np.testing.assert_allclose(b, a, rtol=1e-8, atol=1e-9, equal_nan=True)
    assert np.isfinite(a).sum() > 200


def test_permuting_stocks_permutes_outputs(market: Store, tmp_path) -> None:
    symbols = sorted(market.read("minute", DATES[0]).column("symbol").to_pylist()
                     + market.read("orders", DATES[0]).column("symbol").to_pylist()
                     + market.read("trades", DATES[0]).column("symbol").to_pylist())
    symbols = sorted(set(symbols))
    # Reverse the alphabetical order: the engine sees the stocks in a different order.
    rename = {s: f"{900000 - i:06d}.SZ" for i, s in enumerate(symbols)}

    def relabel(table: str, d: dt.date, df: pd.DataFrame) -> pd.DataFrame:
        df["symbol"] = df["symbol"].map(rename)
        return df

    other = copy_store(market, Store(tmp_path), relabel)
    a = compute_factors(market, DATES, backend="cpu")
    b = compute_factors(other, DATES, backend="cpu")
    index = {s: i for i, s in enumerate(b.symbols)}
    perm = [index[rename[s]] for s in a.symbols]
    assert perm != sorted(perm)
    np.testing.assert_array_equal(b.to_numpy()[:, perm], a.to_numpy())


def test_adding_a_stock_changes_no_other_stock(market: Store, tmp_path) -> None:
    donor = "000001.SZ"

    def add(table: str, d: dt.date, df: pd.DataFrame) -> pd.DataFrame:
        extra = df[df["symbol"] == donor].copy()
        extra["symbol"] = "000000.SZ"  # sorts first: shifts every other stock's position
        if table != "minute":
            extra["price"] = extra["price"] * 1.5
            if table == "trades":
                extra["amount"] = extra["amount"] * 1.5
        return pd.concat([df, extra], ignore_index=True)

    bigger = copy_store(market, Store(tmp_path), add)
    a = compute_factors(market, DATES, backend="cpu")
    b = compute_factors(bigger, DATES, backend="cpu")
    assert list(b.symbols) == ["000000.SZ", *a.symbols]
    np.testing.assert_array_equal(b.to_numpy()[:, 1:], a.to_numpy())


def test_one_sided_stock_gives_exact_shares(market: Store, tmp_path) -> None:
    """A stock whose trades are all buyer-initiated has an early buy share of exactly 1.0 (the
    subset and superset sums add the same amounts in the same order), so such stocks tie."""
    target = "000001.SZ"

    def all_buys(table: str, d: dt.date, df: pd.DataFrame) -> pd.DataFrame:
        if table == "trades":
            df.loc[df["symbol"] == target, "side"] = 1
        return df

    edited = copy_store(market, Store(tmp_path), all_buys)
    cube = compute_factors(edited, DATES, ["early_active_buy_perc"], backend="cpu")
    j = list(cube.symbols).index(target)
    values = cube.to_numpy()[:, j, 0]
    assert np.isfinite(values).all()
    assert (values == 1.0).all(), values.tolist()


@pytest.mark.parametrize("backend", ["cpu", "gpu-emulated"])
def test_flag_code_sums_of_a_subset_equal_the_superset_when_the_rest_is_zero(backend) -> None:
    """``amount_where`` adds the codes in a fixed order, so when the codes a superset adds on top
    of a subset are all zero, both sums are bit-equal (on any backend): ``early & buy`` over
    ``early`` is exactly 1 for a stock without early sells. The GPU's ``ordered_column_sum``
    kernel runs under the host emulation."""
    from types import SimpleNamespace

    from fbgpu.engine.segments import CpuSegmentOps, GpuSegmentOps
    from fbgpu.factors.context import BUY, EARLY, N_CODES, SELL, TradeContext

    rng = np.random.default_rng(5)
    ops = CpuSegmentOps() if backend == "cpu" else GpuSegmentOps(np)
    ctx = SimpleNamespace(xp=np, ops=ops)
    codes = np.arange(N_CODES)
    for _ in range(300 if backend == "cpu" else 40):
        bins = np.zeros((4, N_CODES))
        buy_codes = codes[(codes & EARLY > 0) & (codes & BUY > 0) & (codes & SELL == 0)]
        bins[:, buy_codes] = rng.uniform(0, 1e7, (4, len(buy_codes))) * (
            rng.random((4, len(buy_codes))) < 0.7)
        sub = TradeContext._codes_sum(ctx, bins, lambda f: f.early & f.buy)
        sup = TradeContext._codes_sum(ctx, bins, lambda f: f.early)
        np.testing.assert_array_equal(sub, sup)
        np.testing.assert_allclose(sub, bins.sum(1), rtol=1e-15)
    empty = TradeContext._codes_sum(ctx, bins, lambda f: f.all & ~f.all)
    np.testing.assert_array_equal(empty, np.zeros(4))


def test_no_look_ahead(market: Store, tmp_path) -> None:
    rng = np.random.default_rng(0)

    def perturb_future(table: str, d: dt.date, df: pd.DataFrame) -> pd.DataFrame:
        if d == DATES[-1]:
            num = df.select_dtypes("number").columns.drop(["seq", "minute", "ts", "side",
                                                           "order_type"], errors="ignore")
            for col in num:
                if df[col].dtype.kind == "f":
                    df[col] = df[col] * rng.uniform(0.5, 2.0, len(df))
        return df

    changed = copy_store(market, Store(tmp_path / "changed"), perturb_future)
    truncated = copy_store(market, Store(tmp_path / "past"), dates=DATES[:-1])
    base = compute_factors(market, DATES, backend="cpu")
    alt = compute_factors(changed, DATES, backend="cpu")
    past = compute_factors(truncated, DATES[:-1], backend="cpu")
    np.testing.assert_array_equal(alt.to_numpy()[:-1], base.to_numpy()[:-1])
    np.testing.assert_array_equal(past.to_numpy(), base.to_numpy()[:-1])
    # ... while the perturbed day itself did change (the test can fail).
    assert not np.array_equal(alt.to_numpy()[-1], base.to_numpy()[-1], equal_nan=True)


def test_registry_matches_the_spec() -> None:
    assert len(FACTORS) == 27
    fams = [f.family for f in FACTORS.values()]
    assert (fams.count("minute"), fams.count("trade"), fams.count("order")) == (15, 8, 4)
    directions = {
        "late_skew_ret": -1, "down_vol_perc": 1, "corr_ret_lastret": -1,
        "corr_close_nextopen": 1, **{f"volume_perc{j}": 1 for j in range(2, 8)},
        "corr_volume_item": -1, "early_corr_volume_ret": 1, "bigorder_ret": -1,
        "down_single_amt_perc": 1, "corr_volume_amplitude": -1, "bigorder_amt_perc": 1,
        "early_bigorder_buy_perc": 1, "bigorder_ret2": -1, "early_active_bigorder_ret": 1,
        "concentration_diff": -1, "early_active_buy_perc": 1, "corr_netactivebuy_lastret": -1,
        "corr_netactivebuy_nextret": -1, "skew_order_diff": -1, "kurt_order_diff": -1,
        "early_kurt_order": -1, "corr_buyorder_volume_price": -1,
    }
    assert {n: f.direction for n, f in FACTORS.items()} == directions
    assert all(len(f.formula) > 20 for f in FACTORS.values())
