"""Factor-factor and factor-style correlations: time means of cross-sectional correlations.

``corr(a, b)`` of two ``[D, S]`` panels = mean over dates of the Pearson correlation of the date's
cross-section (stocks in ``mask`` with both values finite). Style factors (reversal, size, amount,
turnover, beta) are raw quantities with heavy tails (amount spans orders of magnitude), so before
correlating they are MAD-winsorized (``median +- 5 * 1.4826 * MAD``) per date over the same mask;
the factors themselves are already preprocessed panel values.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from fbgpu.engine.backend import array_module
from fbgpu.evaluate.stats import row_corr
from fbgpu.panel.preprocess import mad_winsorize, quiet_nan_warnings

Array = Any


def _host(a: Any) -> np.ndarray:
    return a.get() if hasattr(a, "get") else np.asarray(a)


def mean_cross_corr(a: Array, b: Array, mask: Array | None = None, min_obs: int = 3) -> float:
    """Mean over dates of the cross-sectional Pearson correlation of ``a`` and ``b``."""
    xp = array_module(a)
    if mask is not None:
        m = xp.asarray(mask, dtype=bool)
        a = xp.where(m, a, xp.nan)
    r = _host(row_corr(a, b, min_obs))
    with quiet_nan_warnings():
        return float(np.nanmean(r)) if np.isfinite(r).any() else float("nan")


def factor_correlation(values: Array, names: list[str], mask: Array | None = None,
                       min_obs: int = 3) -> pd.DataFrame:
    """``[F, F]`` matrix of mean cross-sectional correlations of ``values[D, S, F]``."""
    F = values.shape[2]
    out = np.eye(F)
    for i in range(F):
        for j in range(i + 1, F):
            out[i, j] = out[j, i] = mean_cross_corr(values[:, :, i], values[:, :, j], mask,
                                                    min_obs)
    return pd.DataFrame(out, index=names, columns=names)


def style_correlation(values: Array, names: list[str], styles: dict[str, Array],
                      mask: Array | None = None, min_obs: int = 3,
                      winsorize_k: float = 5.0) -> pd.DataFrame:
    """``[F, styles]`` mean cross-sectional correlations of each factor with each style."""
    xp = array_module(values)
    out = np.full((len(names), len(styles)), np.nan)
    m = xp.asarray(mask, dtype=bool) if mask is not None else None
    for k, s in enumerate(styles.values()):
        s = xp.asarray(s, dtype=xp.float64)
        if m is not None:
            s = xp.where(m, s, xp.nan)
        if winsorize_k > 0:
            s = mad_winsorize(s, winsorize_k)
        for i in range(len(names)):
            out[i, k] = mean_cross_corr(values[:, :, i], s, m, min_obs)
    return pd.DataFrame(out, index=names, columns=list(styles))


def extended_style_factors(market: Any, window: int = 20, momentum_window: int = 60,
                           min_valid: int = 10) -> dict[str, np.ndarray]:
    """More common volume-price factors for the style-correlation exhibits (49/56/61), each
    ``[D, S]`` and known at T, from the daily bars (``r_t`` = adjusted close-to-close return on
    traded days, NaN otherwise; means over the finite values among the last ``window`` days, at
    least ``min_valid``):

    * ``volatility``: ``sqrt(mean(r^2) - mean(r)^2)`` over the last ``window`` days;
    * ``momentum``: ``C_T / C_{T-momentum_window} - 1`` (adjusted closes);
    * ``max return``: largest ``r_t`` over the last ``window`` days;
    * ``illiquidity`` (Amihud): ``mean(|r_t| / amount_t)`` x 1e8 (per 100 million CNY).
    """
    from fbgpu.panel.preprocess import trailing_mean

    adj = np.asarray(market.adjusted_close(), dtype=np.float64)
    traded = np.asarray(market.traded(), dtype=bool)
    D = adj.shape[0]
    r = np.full_like(adj, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        r[1:] = np.where(traded[1:], adj[1:] / adj[:-1] - 1.0, np.nan)
    m1 = trailing_mean(r, window, min_valid)
    m2 = trailing_mean(r * r, window, min_valid)
    vol = np.sqrt(np.maximum(m2 - m1 * m1, 0.0))
    mom = np.full_like(adj, np.nan)
    if momentum_window < D:
        with np.errstate(invalid="ignore", divide="ignore"):
            mom[momentum_window:] = adj[momentum_window:] / adj[:-momentum_window] - 1.0
    mx = np.full_like(adj, np.nan)
    with quiet_nan_warnings():
        for t in range(D):
            w = r[max(0, t - window + 1): t + 1]
            ok = np.isfinite(w).sum(axis=0) >= min_valid
            mx[t] = np.where(ok, np.nanmax(np.where(np.isfinite(w), w, -np.inf), axis=0),
                             np.nan)
    amount = np.asarray(market["amount"], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        amihud = np.where(traded & (amount > 0), np.abs(r) / amount * 1e8, np.nan)
    illiq = trailing_mean(amihud, window, min_valid)
    return {"volatility": vol, "momentum": mom, "max return": mx, "illiquidity": illiq}
