"""The pandas baseline of the benchmark computes the same numbers as the engine.

The benchmark compares the fbgpu backends with benchmarks/baseline_pandas.py; the comparison is
only meaningful if both do the same job, so here they must agree on every factor (values to
round-off, identical NaN patterns, identical universes) on synthetic and adversarial stock-days.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from fbgpu.data.store import Store
from fbgpu.factors import FactorConfig, compute_day, factor_names, resolve_names

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from baseline_pandas import compute_day_pandas, minute_of
from oracle_factors import hms, make_market


def assert_same(store: Store, date: dt.date, names: list[str] | None = None,
                config: FactorConfig | None = None) -> pd.DataFrame:
    engine = compute_day(store, date, names, backend="cpu", config=config)
    base = compute_day_pandas(store, date, names, config=config)
    assert list(base.index) == list(engine.symbols)
    assert list(base.columns) == resolve_names(names)
    ours = np.asarray(engine.values)
    for j, name in enumerate(base.columns):
        a, b = ours[:, j], base[name].to_numpy()
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"{name}: NaN pattern")
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=name)
    return base


def test_pandas_baseline_matches_engine_on_synthetic_days(tiny_store: Store) -> None:
    dates = tiny_store.dates("trades")
    for d in (dates[0], dates[len(dates) // 2]):
        base = assert_same(tiny_store, d)
        # Most of the 27 are defined on a normal synthetic day: a baseline returning NaN
        # everywhere would "agree" on nothing-but-NaN stocks only.
        assert base.notna().to_numpy().mean() > 0.9


def test_pandas_baseline_matches_engine_on_adversarial_stock_days(tmp_path: Path) -> None:
    store = Store(tmp_path)
    d = dt.date(2024, 3, 4)
    make_market(store, [d], seed=3)
    base = assert_same(store, d)
    # The hand-made day has the edge cases: a locked stock (NaN correlations), a stock without
    # minute bars (NaN minute family), an orders-only stock (NaN trade family).
    assert np.isnan(base.loc["300004.SZ", ["corr_close_nextopen", "late_skew_ret"]]).all()
    assert base.loc["688010.SH", factor_names("minute")].isna().all()
    assert base.loc["600009.SH", factor_names("trade")].isna().all()
    assert base.loc["600009.SH", factor_names("order")].notna().any()


def test_pandas_baseline_options_and_subsets(tmp_path: Path) -> None:
    store = Store(tmp_path)
    d = dt.date(2024, 3, 5)
    make_market(store, [d], seed=5)
    cfg = FactorConfig(big_order_rule="fixed_notional", big_order_notional=20_000.0,
                       bigorder_ret_top_frac=0.5, min_obs_day=20)
    assert_same(store, d, config=cfg)
    # A family subset still has the whole day's universe (every source's symbols).
    base = assert_same(store, d, ["skew_order_diff", "bigorder_ret2"])
    assert "600008.SH" in base.index  # minute bars only: in the universe, NaN for both


def test_minute_grid_of_the_baseline() -> None:
    ts = pd.Series([hms(9, 25), hms(9, 30), hms(9, 30, 59.9), hms(11, 29, 59), hms(11, 30),
                    hms(12, 59), hms(13, 0), hms(14, 59, 59), hms(15, 0), hms(15, 1)])
    assert minute_of(ts).tolist() == [0, 0, 0, 119, 119, 119, 120, 239, 239, 239]


def test_polars_peer_matches_engine(tiny_store: Store, tmp_path: Path) -> None:
    """The polars peer (lazy scan_parquet, one query) and its eager form compute the engine's
    numbers: same universe, same NaN pattern, values to round-off, on a synthetic day and on the
    adversarial hand-made day."""
    from bench_factors import compute_day_polars, polars_factors_from_frames, polars_frames

    adv = Store(tmp_path)
    d_adv = dt.date(2024, 3, 4)
    make_market(adv, [d_adv], seed=3)
    for store, d in ((tiny_store, tiny_store.dates("trades")[0]), (adv, d_adv)):
        engine = compute_day(store, d, backend="cpu")
        ours = np.asarray(engine.values)
        for pol in (compute_day_polars(store, d),
                    polars_factors_from_frames(polars_frames(store, d))):
            assert pol["symbol"].to_list() == list(engine.symbols)
            assert pol.columns[1:] == resolve_names(None)
            for j, name in enumerate(pol.columns[1:]):
                a, b = ours[:, j], pol[name].to_numpy()
                np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=name)
                np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12, equal_nan=True,
                                           err_msg=name)
        assert np.isfinite(ours).mean() > 0.5


def test_vectorised_pandas_peer_matches_engine(tiny_store: Store, tmp_path: Path) -> None:
    """The vectorised pandas peer (wide minute frames, masked columns + one groupby per
    statistic) computes the engine's numbers on a synthetic day, the adversarial day and with
    non-default options."""
    from baseline_pandas import compute_day_pandas_vec

    adv = Store(tmp_path)
    d_adv = dt.date(2024, 3, 4)
    make_market(adv, [d_adv], seed=3)
    cfg = FactorConfig(big_order_rule="fixed_notional", big_order_notional=20_000.0,
                       bigorder_ret_top_frac=0.5, min_obs_day=20)
    for store, d, c in ((tiny_store, tiny_store.dates("trades")[0], None), (adv, d_adv, None),
                        (adv, d_adv, cfg)):
        engine = compute_day(store, d, backend="cpu", config=c)
        base = compute_day_pandas_vec(store, d, config=c)
        assert list(base.index) == list(engine.symbols)
        ours = np.asarray(engine.values)
        for j, name in enumerate(base.columns):
            a, b = ours[:, j], base[name].to_numpy()
            np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"{name}: NaN")
            np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12, equal_nan=True,
                                       err_msg=name)
        assert base.notna().to_numpy().mean() > 0.5  # not an all-NaN agreement
