"""Single-factor test: hand-computed example, alphalens-reloaded and scipy/pandas oracles."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.stats import rankdata, spearmanr

from fbgpu.evaluate.single import SUMMARY_COLUMNS, evaluate_factor, performance
from fbgpu.evaluate.stats import average_ranks, quantile_bins, rank_ic, row_corr

F_HAND = np.array([[1, 2, 3, 4, 5, 6], [6, 2, 3, 4, 5, 1], [1, 3, 2, 6, 5, 4]], dtype=float)
R_HAND = np.array([[.01, .02, .03, .04, .05, .06], [.01, .02, .03, .04, .05, .06],
                   [.06, .05, .04, .03, .02, .01]])


@pytest.mark.parametrize("direction", [1, -1])
def test_hand_example_three_dates_six_stocks(direction: int) -> None:
    rep = evaluate_factor(F_HAND * direction, R_HAND, None, direction, groups=3, min_stocks=3,
                          name="hand")
    # Spearman by 1 - 6 sum d^2 / (n (n^2 - 1)): d^2 sums 0, 50, 60 with n = 6.
    np.testing.assert_allclose(rep.ic.to_numpy(), [1.0, -3 / 7, -5 / 7], atol=1e-15)
    # Groups of 2 by the pandas.qcut rule; TOP = the two largest factor values.
    np.testing.assert_allclose(rep.group_returns.to_numpy(),
                               [[.015, .035, .055], [.04, .035, .03], [.05, .03, .025]],
                               atol=1e-15)
    np.testing.assert_allclose(rep.benchmark.to_numpy(), [.035] * 3, atol=1e-15)
    excess = np.array([.02, -.005, -.01])
    np.testing.assert_allclose(rep.top_excess.to_numpy(), excess, atol=1e-15)
    np.testing.assert_allclose(rep.group_nav[3].to_numpy(), np.cumprod(1 + excess), atol=1e-15)
    np.testing.assert_allclose(rep.turnover.to_numpy()[1:], [1.0, 1.0], atol=1e-15)
    s = rep.summary()
    assert list(s.index) == SUMMARY_COLUMNS
    ic = np.array([1.0, -3 / 7, -5 / 7])
    assert s["RankIC mean"] == pytest.approx(ic.mean())
    assert s["RankIC std"] == pytest.approx(ic.std(ddof=1))
    assert s["IC_IR"] == pytest.approx(ic.mean() / ic.std(ddof=1))
    assert s["IC>0"] == pytest.approx(1 / 3)
    assert s["TOP ann. excess"] == pytest.approx(np.prod(1 + excess) ** (50 / 3) - 1)
    assert s["TOP IR"] == pytest.approx(excess.mean() / excess.std(ddof=1) * math.sqrt(50))
    assert s["TOP win rate"] == pytest.approx(1 / 3)
    assert s["TOP turnover"] == pytest.approx(1.0)
    assert rep.cumulative_ic.iloc[-1] == pytest.approx(ic.sum())


def _alphalens_frames(f: pd.DataFrame, r: pd.DataFrame, quantiles: int):
    from alphalens import performance as alp
    from alphalens import utils

    fd = pd.DataFrame({"5D": r.stack(), "factor": f.stack()}).dropna()
    fd.index.names = ["date", "asset"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fd["factor_quantile"] = utils.quantize_factor(fd, quantiles=quantiles)
        ic = alp.factor_information_coefficient(fd)["5D"]
        mr = alp.mean_return_by_quantile(fd, by_date=True, demeaned=False)[0]["5D"].unstack(0)
    return ic, mr


@pytest.mark.parametrize(("direction", "groups"), [(1, 5), (-1, 5), (1, 10)])
def test_agrees_with_alphalens(direction: int, groups: int) -> None:
    rng = np.random.default_rng(11)
    D, S = 15, 60
    dates = pd.bdate_range("2022-03-01", periods=D, name="date")
    syms = [f"{i:06d}.SZ" for i in range(S)]
    f = pd.DataFrame(rng.normal(size=(D, S)), index=dates, columns=syms)
    r = pd.DataFrame(0.02 * rng.normal(size=(D, S)) + 0.01 * f.to_numpy(), index=dates,
                     columns=syms)
    f.iloc[rng.random((D, S)) < 0.05] = np.nan
    r.iloc[rng.random((D, S)) < 0.05] = np.nan
    # Columns shuffled: the DataFrame path must align by label.
    rep = evaluate_factor(f, r[syms[::-1]], None, direction, groups, min_stocks=3)
    ic, mr = _alphalens_frames(f * direction, r, groups)
    np.testing.assert_allclose(rep.ic.to_numpy(), ic.to_numpy(), atol=1e-12)
    np.testing.assert_allclose(rep.group_returns.to_numpy(), mr.to_numpy(), atol=1e-12)
    assert np.sign(rep.ic.mean()) == direction  # the planted signal is positive


def test_pool_and_min_stocks() -> None:
    rng = np.random.default_rng(12)
    f = rng.normal(size=(6, 30))
    r = rng.normal(size=(6, 30))
    pool = rng.random((6, 30)) > 0.3
    pool[4, :] = False
    pool[4, :5] = True  # too few stocks on date 4
    rep = evaluate_factor(f, r, pool, 1, 5, min_stocks=10)
    for t in range(6):
        ok = pool[t]
        if ok.sum() >= 10:
            ref = spearmanr(f[t, ok], r[t, ok]).statistic
            assert rep.ic.iloc[t] == pytest.approx(ref, abs=1e-12)
            assert rep.benchmark.iloc[t] == pytest.approx(r[t, ok].mean())
    assert np.isnan(rep.ic.iloc[4]) and rep.group_returns.iloc[4].isna().all()


def test_rebalance_every_subsamples_rows() -> None:
    rng = np.random.default_rng(13)
    f = rng.normal(size=(21, 20))
    r = rng.normal(size=(21, 20))
    rep = evaluate_factor(f, r, None, 1, 5, rebalance_every=5, min_stocks=5)
    sub = evaluate_factor(f[::5], r[::5], None, 1, 5, min_stocks=5)
    assert list(rep.ic.index) == [0, 5, 10, 15, 20]
    np.testing.assert_allclose(rep.ic.to_numpy(), sub.ic.to_numpy())


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="direction"):
        evaluate_factor(np.zeros((3, 4)), np.zeros((3, 4)), None, 0)
    with pytest.raises(ValueError, match="shape"):
        evaluate_factor(np.zeros((3, 4)), np.zeros((3, 5)), None, 1)
    with pytest.raises(ValueError, match="2-D"):
        evaluate_factor(np.zeros(3), np.zeros(3), None, 1)


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float64, (3, 12), elements=st.sampled_from([0.0, 1.0, 2.5, -3.0, np.nan])))
def test_average_ranks_match_scipy_with_ties(x: np.ndarray) -> None:
    out = average_ranks(x)
    for row_in, row_out in zip(x, out, strict=True):
        ok = np.isfinite(row_in)
        np.testing.assert_array_equal(np.isfinite(row_out), ok)
        if ok.any():
            np.testing.assert_allclose(row_out[ok], rankdata(row_in[ok]))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 10), st.integers(10, 60))
def test_quantile_bins_match_pandas_qcut(seed: int, groups: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2, n))
    x[1, rng.random(n) < 0.2] = np.nan
    bins = quantile_bins(x, groups)
    for row_in, row_out in zip(x, bins, strict=True):
        ok = np.isfinite(row_in)
        if ok.sum() < groups:  # too few stocks to fill every group: the date is skipped
            assert np.isnan(row_out).all()
            continue
        ref, edges = pd.qcut(row_in[ok], groups, labels=False, retbins=True)
        # Edges are interpolated in floating point: a value within an ulp or two of an edge may
        # fall on either side depending on the order of operations (pandas' own quantile and
        # numpy's differ there too); every other value must be in pandas' group.
        clear = np.abs(row_in[ok][:, None] - edges[None, 1:-1]).min(axis=1) > 1e-12
        np.testing.assert_array_equal(row_out[ok][clear], ref[clear])


def test_rank_ic_and_row_corr_vs_scipy() -> None:
    rng = np.random.default_rng(14)
    a = rng.normal(size=(5, 40))
    b = a + rng.normal(size=(5, 40))
    a[0, :3] = np.nan
    b[1, 5] = np.nan
    ic = rank_ic(a, b)
    rc = row_corr(a, b)
    for t in range(5):
        ok = np.isfinite(a[t]) & np.isfinite(b[t])
        assert ic[t] == pytest.approx(spearmanr(a[t, ok], b[t, ok]).statistic, abs=1e-12)
        assert rc[t] == pytest.approx(np.corrcoef(a[t, ok], b[t, ok])[0, 1], abs=1e-12)
    assert np.isnan(row_corr(np.ones((1, 5)), np.arange(5.0)[None]))[0]


def test_performance_closed_forms() -> None:
    e = pd.Series([0.01] * 50)
    s = performance(e, pd.Series([np.nan, 0.5, 0.7]), 50)
    assert s["TOP ann. excess"] == pytest.approx(1.01 ** 50 - 1)
    assert np.isnan(s["TOP IR"])  # zero volatility
    assert s["TOP win rate"] == 1.0 and s["TOP turnover"] == pytest.approx(0.6)
