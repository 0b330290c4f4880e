"""Linear composites of direction-signed factors: equal weight and trailing-ICIR weight.

Both combine the signed panel values ``s_f = direction_f * panel_f`` (each already a
cross-sectional z-score) of a date:

* equal weight: ``c = mean_f s_f``;
* ICIR weight: ``c = sum_f w_f s_f / sum_f |w_f|`` with ``w_f`` = IC_IR of factor f (signed
  RankIC mean / std, ``ddof = 1``) over the last ``lookback`` (12) rebalances **whose IC is known
  at T**. The RankIC of rebalance date ``T_i`` uses the return up to ``T_i + end`` (6), so it is
  known at the close of ``T_i + end``; on ``T_j`` only rebalances with ``T_i + end <= T_j``
  count. With a 5-day spacing that excludes the immediately preceding rebalance. Dates with fewer
  than ``min_periods`` known ICs get no weights (NaN composite).

A factor missing for a stock contributes 0 (the cross-sectional mean of a z-score); a stock
without any factor is NaN. The composite is z-scored cross-sectionally again (over ``mask``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fbgpu.engine.backend import array_module
from fbgpu.panel.preprocess import zscore

Array = Any


def signed(values: Array, directions: Array) -> Array:
    """``values[..., f] * directions[f]`` on the values' device."""
    xp = array_module(values)
    return values * xp.asarray(directions, dtype=xp.float64)


def weighted_composite(signed_values: Array, weights: Array | None, mask: Array | None = None,
                       min_stocks: int = 2) -> Array:
    """``[D, S]`` composite of ``[D, S, F]`` signed factors with weights ``[D, F]`` (None = equal).

    Rows whose weights are all NaN/zero are NaN. The result is z-scored per row over ``mask``.
    """
    xp = array_module(signed_values)
    v = xp.asarray(signed_values, dtype=xp.float64)
    D, _, F = v.shape
    if weights is None:
        w = xp.ones((D, F), dtype=xp.float64)
    else:
        w = xp.asarray(weights, dtype=xp.float64)
        if w.shape != (D, F):
            raise ValueError(f"weights have shape {w.shape}, expected {(D, F)}")
    w = xp.where(xp.isfinite(w), w, 0.0)
    norm = xp.abs(w).sum(axis=1)
    any_value = xp.isfinite(v).any(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = xp.einsum("dsf,df->ds", xp.where(xp.isfinite(v), v, 0.0), w) / norm[:, None]
    c = xp.where(any_value & (norm > 0)[:, None], c, xp.nan)
    if mask is not None:
        c = xp.where(xp.asarray(mask, dtype=bool), c, xp.nan)
    return zscore(c, min_stocks=min_stocks)


def icir_weights(ic: np.ndarray, rows: np.ndarray, known_lag: int = 6, lookback: int = 12,
                 min_periods: int = 6) -> np.ndarray:
    """Trailing IC_IR weights ``[R, F]`` for the rebalances at calendar rows ``rows``.

    Args:
        ic: ``[R, F]`` RankIC of each signed factor on each rebalance (NaN = no IC).
        rows: ``[R]`` calendar row of each rebalance, increasing.
        known_lag: the IC of rebalance i is known at row ``rows[i] + known_lag`` (the end of its
            return window).
        lookback: number of most recent known rebalances used.
        min_periods: fewer finite ICs in the window -> NaN weight.

    Weight of rebalance j uses rebalances ``i`` with ``rows[i] + known_lag <= rows[j]`` only.
    """
    ic = np.asarray(ic, dtype=np.float64)
    rows = np.asarray(rows, dtype=np.int64)
    R, F = ic.shape
    if rows.shape != (R,):
        raise ValueError(f"rows has shape {rows.shape}, expected ({R},)")
    # k_j = number of rebalances known at rebalance j; window = [max(0, k_j - lookback), k_j).
    k = np.searchsorted(rows + known_lag, rows, side="right")
    lo = np.maximum(k - lookback, 0)
    finite = np.isfinite(ic)
    x = np.where(finite, ic, 0.0)
    zero = np.zeros((1, F))
    c1 = np.concatenate([zero, np.cumsum(x, axis=0)])
    c2 = np.concatenate([zero, np.cumsum(x * x, axis=0)])
    cn = np.concatenate([zero, np.cumsum(finite, axis=0)])
    n = cn[k] - cn[lo]
    s1 = c1[k] - c1[lo]
    s2 = c2[k] - c2[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / n
        var = np.maximum(s2 - n * mean * mean, 0.0) / (n - 1)
        ir = mean / np.sqrt(var)
    return np.where((n >= max(min_periods, 2)) & (var > 0), ir, np.nan)
