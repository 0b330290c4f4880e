"""Panel preprocessing against straightforward numpy/pandas oracles, properties and look-ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fbgpu.panel.preprocess import (
    MAD_TO_STD,
    PanelConfig,
    mad_winsorize,
    neutralize,
    preprocess_panel,
    trailing_mean,
    zscore,
)


def _random_panel(rng: np.random.Generator, D: int = 30, S: int = 50, F: int = 3,
                  nan_share: float = 0.15) -> np.ndarray:
    x = rng.standard_t(3, size=(D, S, F)) * rng.uniform(0.5, 50, size=F) + rng.normal(0, 5, F)
    x[rng.random((D, S, F)) < nan_share] = np.nan
    return x


def test_trailing_mean_matches_pandas_rolling() -> None:
    rng = np.random.default_rng(0)
    x = _random_panel(rng, D=60, S=7, F=2, nan_share=0.4)
    x[10:35, 3, 0] = np.nan  # a long gap: the window must go NaN, then recover
    out = trailing_mean(x, 20, 10)
    for s in range(7):
        for f in range(2):
            ref = pd.Series(x[:, s, f]).rolling(20, min_periods=10).mean().to_numpy()
            np.testing.assert_allclose(out[:, s, f], ref, rtol=1e-12, atol=1e-12)
    assert np.isnan(out[34, 3, 0])


def test_trailing_mean_precision_far_from_zero() -> None:
    x = 1e8 + np.arange(40, dtype=float)[:, None] * 1e-3
    out = trailing_mean(x, 20, 10)
    ref = pd.Series(x[:, 0]).rolling(20, min_periods=10).mean().to_numpy()
    np.testing.assert_allclose(out[:, 0], ref, rtol=0, atol=1e-7)


def _mad_reference(row: np.ndarray, k: float) -> np.ndarray:
    ok = np.isfinite(row)
    v = row[ok]
    med = np.median(v)
    mad = np.median(np.abs(v - med))
    out = row.copy()
    if mad > 0:
        out[ok] = np.clip(v, med - k * MAD_TO_STD * mad, med + k * MAD_TO_STD * mad)
    return out


def test_mad_winsorize_matches_numpy_per_day() -> None:
    rng = np.random.default_rng(1)
    x = _random_panel(rng)
    x[3, 7, 1] = 1e9  # a single outlier must be clipped
    out = mad_winsorize(x, 5.0)
    for d in range(x.shape[0]):
        for f in range(x.shape[2]):
            np.testing.assert_allclose(out[d, :, f], _mad_reference(x[d, :, f], 5.0),
                                       rtol=1e-13, equal_nan=True)
    assert out[3, 7, 1] < 1e9


def test_mad_zero_leaves_day_unclipped_and_small_days_are_nan() -> None:
    row = np.array([[1.0, 1.0, 1.0, 1.0, 1.0, 7.0, -3.0, np.nan]])
    np.testing.assert_array_equal(mad_winsorize(row, 5.0), row)
    assert np.isnan(mad_winsorize(row, 5.0, min_stocks=10)).all()


def test_zscore_matches_numpy() -> None:
    rng = np.random.default_rng(2)
    x = _random_panel(rng) + 1e6  # a huge offset must not cost digits (centred variance)
    out = zscore(x)
    for d in range(x.shape[0]):
        for f in range(x.shape[2]):
            row = x[d, :, f]
            ok = np.isfinite(row)
            ref = np.full_like(row, np.nan)
            ref[ok] = (row[ok] - row[ok].mean()) / row[ok].std()
            np.testing.assert_allclose(out[d, :, f], ref, rtol=1e-9, atol=1e-9, equal_nan=True)
    const = np.full((1, 5), 3.0)
    assert np.isnan(zscore(const)).all()


def _design(ind: np.ndarray, cap: np.ndarray, K: int) -> np.ndarray:
    return np.column_stack([(ind == k).astype(float) for k in range(K)] + [cap])


def _lstsq_loop(y: np.ndarray, ind: np.ndarray, cap: np.ndarray, K: int) -> np.ndarray:
    D, _, F = y.shape
    out = np.full_like(y, np.nan)
    for d in range(D):
        for f in range(F):
            ok = np.isfinite(y[d, :, f]) & (ind[d] >= 0) & np.isfinite(cap[d])
            X = _design(ind[d, ok], cap[d, ok], K)
            beta, *_ = np.linalg.lstsq(X, y[d, ok, f], rcond=None)
            out[d, ok, f] = y[d, ok, f] - X @ beta
    return out


def test_neutralize_equals_per_date_lstsq_and_is_orthogonal() -> None:
    rng = np.random.default_rng(3)
    D, S, F, K = 12, 80, 4, 6
    y = _random_panel(rng, D, S, F)
    ind = rng.integers(0, K, size=(D, S))
    ind[0, :3] = -1  # unknown industry: left out
    cap = rng.normal(22, 1.5, size=(D, S))
    cap[2, 5] = np.nan
    y[:, :, 0] += 0.8 * cap + ind * 0.3  # real exposure to remove
    res = neutralize(y, ind, cap, n_industries=K)
    ref = _lstsq_loop(y, ind, cap, K)
    np.testing.assert_allclose(res, ref, rtol=0, atol=1e-9, equal_nan=True)
    assert np.isnan(res[0, :3]).all()
    for d in range(D):
        for f in range(F):
            ok = np.isfinite(res[d, :, f])
            X = _design(ind[d, ok], cap[d, ok], K)
            # Orthogonal to every industry dummy and to log cap (relative to their scale).
            np.testing.assert_allclose(X.T @ res[d, ok, f] / np.abs(X).sum(axis=0).clip(1), 0,
                                       atol=1e-10)


def test_neutralize_degenerate_cap_gives_industry_demeaned() -> None:
    rng = np.random.default_rng(4)
    y = rng.normal(size=(2, 30))
    ind = np.repeat(np.arange(3), 10)[None].repeat(2, axis=0)
    cap = np.repeat(np.array([20.0, 21.0, 22.0]), 10)[None].repeat(2, axis=0)  # = industry
    res = neutralize(y, ind, cap, n_industries=3)
    ref = y - np.stack([pd.Series(y[d]).groupby(ind[d]).transform("mean").to_numpy()
                        for d in range(2)])
    np.testing.assert_allclose(res, ref, atol=1e-12)


def test_small_industries_are_pooled() -> None:
    rng = np.random.default_rng(8)
    D, S, K = 3, 40, 8
    y = rng.normal(size=(D, S, 2))
    y[1, :, 1] = np.nan
    y[1, :25, 1] = rng.normal(size=25)
    ind = rng.integers(0, 4, size=(D, S))
    ind[:, 0] = 5  # singleton industries
    ind[:, 1] = 6
    ind[:, 2:4] = 7  # a pair
    cap = rng.normal(20, 2, size=(D, S))
    res = neutralize(y, ind, cap, n_industries=K, min_industry_size=3)
    for d in range(D):
        for f in range(2):
            ok = np.isfinite(y[d, :, f])
            sizes = np.bincount(ind[d, ok], minlength=K)
            merged = np.where(sizes[ind[d]] < 3, K, ind[d])
            X = _design(merged[ok], cap[d, ok], K + 1)
            beta, *_ = np.linalg.lstsq(X, y[d, ok, f], rcond=None)
            np.testing.assert_allclose(res[d, ok, f], y[d, ok, f] - X @ beta, atol=1e-10)
    # Without pooling a singleton industry's residual is exactly 0.
    assert (neutralize(y, ind, cap, n_industries=K)[:, 0, 0] == 0).all()
    assert (res[:, 0, 0] != 0).all()


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 8), st.floats(-1e6, 1e6))
def test_neutralize_property_vs_lstsq(seed: int, K: int, offset: float) -> None:
    rng = np.random.default_rng(seed)
    D, S = 3, 25
    y = rng.normal(size=(D, S, 2)) + offset
    y[rng.random(y.shape) < 0.2] = np.nan
    ind = rng.integers(0, K, size=(D, S))
    cap = rng.normal(20, 2, size=(D, S))
    res = neutralize(y, ind, cap, n_industries=K)
    ref = _lstsq_loop(y, ind, cap, K)
    scale = 1 + abs(offset)
    np.testing.assert_allclose(res, ref, rtol=0, atol=1e-9 * scale, equal_nan=True)


def test_preprocess_panel_composes_the_steps() -> None:
    rng = np.random.default_rng(5)
    D, S, F, K = 40, 60, 2, 4
    raw = _random_panel(rng, D, S, F)
    uni = rng.random((D, S)) > 0.1
    ind = rng.integers(0, K, size=(D, S))
    cap = rng.normal(21, 1, size=(D, S))
    cfg = PanelConfig()
    out = preprocess_panel(raw, uni, ind, cap, cfg, n_industries=K)
    step = trailing_mean(raw, 20, 10)
    step = np.where(uni[:, :, None], step, np.nan)
    step = mad_winsorize(step, 5.0, cfg.min_stocks)
    step = neutralize(step, ind, cap, n_industries=K, min_stocks=cfg.min_stocks,
                      min_industry_size=cfg.min_industry_size)
    step = zscore(step, cfg.min_stocks)
    np.testing.assert_allclose(out, step, equal_nan=True)
    assert np.isnan(out[:9]).all()  # fewer than 10 valid days
    assert np.isnan(out[~uni]).all()
    ok = np.isfinite(out[30, :, 0])
    assert abs(out[30, ok, 0].mean()) < 1e-12 and abs(out[30, ok, 0].std() - 1) < 1e-12
    filled = preprocess_panel(raw, uni, ind, cap, PanelConfig(fill_value=0.0), n_industries=K)
    assert np.isfinite(filled).all()
    np.testing.assert_array_equal(filled[np.isfinite(out)], out[np.isfinite(out)])


def test_preprocess_2d_input_and_bad_shapes() -> None:
    rng = np.random.default_rng(6)
    raw = rng.normal(size=(25, 30))
    out = preprocess_panel(raw, np.ones((25, 30), bool), None, None, PanelConfig(window=1))
    np.testing.assert_allclose(out, zscore(mad_winsorize(raw, 5.0)))
    with pytest.raises(ValueError, match="universe has shape"):
        preprocess_panel(raw, np.ones((24, 30), bool), None, None)
    with pytest.raises(ValueError, match="window"):
        PanelConfig(window=0)


def test_no_lookahead_future_changes_leave_past_panel_unchanged() -> None:
    rng = np.random.default_rng(7)
    D, S, F, K = 50, 40, 3, 5
    raw = _random_panel(rng, D, S, F)
    uni = rng.random((D, S)) > 0.1
    ind = rng.integers(0, K, size=(D, S))
    cap = rng.normal(21, 1, size=(D, S))
    base = preprocess_panel(raw, uni, ind, cap, n_industries=K)
    T = 31
    raw2, uni2, ind2, cap2 = raw.copy(), uni.copy(), ind.copy(), cap.copy()
    raw2[T + 1:] = rng.normal(size=raw2[T + 1:].shape) * 1e3
    uni2[T + 1:] = ~uni2[T + 1:]
    ind2[T + 1:] = rng.integers(0, K, size=ind2[T + 1:].shape)
    cap2[T + 1:] += 5
    moved = preprocess_panel(raw2, uni2, ind2, cap2, n_industries=K)
    np.testing.assert_array_equal(moved[: T + 1], base[: T + 1])
    assert not np.array_equal(moved[T + 1:], base[T + 1:], equal_nan=True)
