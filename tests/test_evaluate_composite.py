"""Composites (equal / trailing-ICIR weights, no look-ahead) and correlation matrices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fbgpu.evaluate.composite import icir_weights, signed, weighted_composite
from fbgpu.evaluate.correlation import factor_correlation, mean_cross_corr, style_correlation
from fbgpu.evaluate.stats import rank_ic
from fbgpu.panel.preprocess import mad_winsorize, zscore


def _icir_loop(ic: np.ndarray, rows: np.ndarray, lag: int, lookback: int, minp: int):
    R, F = ic.shape
    out = np.full((R, F), np.nan)
    for j in range(R):
        known = [i for i in range(R) if rows[i] + lag <= rows[j]][-lookback:]
        for f in range(F):
            v = ic[known, f]
            v = v[np.isfinite(v)]
            if len(v) >= max(minp, 2) and v.std(ddof=1) > 0:
                out[j, f] = v.mean() / v.std(ddof=1)
    return out


def test_icir_weights_match_explicit_loop() -> None:
    rng = np.random.default_rng(0)
    R, F = 40, 4
    ic = rng.normal(0.03, 0.1, size=(R, F))
    ic[rng.random((R, F)) < 0.1] = np.nan
    rows = np.arange(R) * 5
    w = icir_weights(ic, rows, known_lag=6, lookback=12, min_periods=6)
    np.testing.assert_allclose(w, _icir_loop(ic, rows, 6, 12, 6), rtol=1e-9, equal_nan=True)
    # With 5-day spacing and a 6-day return, rebalance j sees rebalances <= j - 2 only:
    # the 6th known IC arrives at j = 7.
    clean = icir_weights(np.nan_to_num(ic, nan=0.01), rows, 6, 12, 6)
    assert np.isnan(clean[:7]).all() and np.isfinite(clean[7]).all()


def test_icir_weights_ignore_ics_not_yet_known() -> None:
    rng = np.random.default_rng(1)
    R, F = 30, 3
    ic = rng.normal(0.02, 0.1, size=(R, F))
    rows = np.arange(R) * 5
    base = icir_weights(ic, rows)
    for j in range(R):
        moved = ic.copy()
        moved[j - 1:] = rng.normal(size=moved[j - 1:].shape) if j >= 1 else moved[j - 1:]
        # The IC of rebalance j - 1 closes at rows[j-1] + 6 = rows[j] + 1: unknown at rows[j].
        np.testing.assert_array_equal(icir_weights(moved, rows)[: j + 1], base[: j + 1])


def test_composite_weights_end_to_end_no_lookahead() -> None:
    """Prices after calendar row T move: composite weights on rebalances <= T do not."""
    rng = np.random.default_rng(2)
    D, S, F = 160, 40, 3
    price = 10 * np.exp(np.cumsum(rng.normal(0, 0.02, size=(D, S)), axis=0))
    factors = rng.normal(size=(D, S, F))
    rows = np.arange(0, D - 6, 5)

    def weights(p: np.ndarray) -> np.ndarray:
        fwd = np.full((D, S), np.nan)
        fwd[:-6] = p[6:] / p[1:-5] - 1
        ic = np.stack([rank_ic(factors[rows, :, f], fwd[rows]) for f in range(F)], axis=1)
        return icir_weights(ic, rows, known_lag=6)

    base = weights(price)
    T = 100
    moved = price.copy()
    moved[T + 1:] *= rng.uniform(0.8, 1.2, size=moved[T + 1:].shape)
    w = weights(moved)
    upto = rows <= T
    np.testing.assert_array_equal(w[upto], base[upto])
    assert not np.array_equal(w[~upto], base[~upto], equal_nan=True)


def test_weighted_composite_formula() -> None:
    rng = np.random.default_rng(3)
    D, S, F = 4, 30, 3
    v = rng.normal(size=(D, S, F))
    v[0, 0, :] = np.nan  # a stock without any factor -> NaN
    v[1, 2, 1] = np.nan  # one missing factor counts as 0
    d = np.array([1.0, -1.0, 1.0])
    sv = signed(v, d)
    w = rng.normal(size=(D, F))
    w[3] = np.nan  # no weights on date 3 -> NaN composite
    out = weighted_composite(sv, w)
    ref = np.einsum("dsf,df->ds", np.nan_to_num(sv), w) / np.abs(w).sum(axis=1)[:, None]
    ref[0, 0] = np.nan
    ref[3] = np.nan
    np.testing.assert_allclose(out, zscore(ref), equal_nan=True, atol=1e-12)
    eq = weighted_composite(sv, None)
    np.testing.assert_allclose(eq[2], zscore(np.nanmean(sv[2:3], axis=2))[0], atol=1e-12)
    assert np.isnan(out[3]).all() and np.isnan(out[0, 0])
    with pytest.raises(ValueError, match="weights"):
        weighted_composite(sv, np.ones((D, F + 1)))


def test_factor_correlation_is_mean_of_daily_pandas_corr() -> None:
    rng = np.random.default_rng(4)
    D, S = 6, 50
    base = rng.normal(size=(D, S))
    v = np.stack([base + rng.normal(size=(D, S)) * k for k in (0.3, 1.0, 3.0)], axis=2)
    v[0, :4, 1] = np.nan
    mask = rng.random((D, S)) > 0.2
    m = factor_correlation(v, ["a", "b", "c"], mask)
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        daily = [pd.Series(v[t, mask[t], i]).corr(pd.Series(v[t, mask[t], j]))
                 for t in range(D)]
        assert m.iloc[i, j] == pytest.approx(np.mean(daily), abs=1e-12)
        assert m.iloc[j, i] == m.iloc[i, j]
    assert (np.diag(m) == 1).all()
    assert m.loc["a", "b"] > m.loc["a", "c"] > 0


def test_style_correlation_winsorizes_styles() -> None:
    rng = np.random.default_rng(5)
    D, S = 5, 60
    size = rng.normal(size=(D, S))
    size[:, 0] = 1e6  # one absurd value must not dominate
    fac = size + rng.normal(size=(D, S))[..., None][:, :, 0] * 0.5
    fac[:, 0] = size[:, 1]
    out = style_correlation(fac[:, :, None], ["f"], {"size": size})
    ref = mean_cross_corr(fac, mad_winsorize(size, 5.0))
    assert out.loc["f", "size"] == pytest.approx(ref, abs=1e-12)
    assert out.loc["f", "size"] > 0.5
