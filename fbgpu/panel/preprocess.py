"""Daily factor values -> the factor panel (spec/factors.md "From daily values to the factor
panel").

Every function here is written once against an array namespace ``xp`` (numpy on the CPU backend,
cupy on the GPU backend; :func:`fbgpu.engine.backend.array_module` picks it from the input), works
on dense ``[days, stocks, factors]`` arrays with NaN for "no value", and is batched over all days:
there is no Python loop over days anywhere (loops run over the 20 window lags or the handful of
exposure columns only).

Steps, in order (:func:`preprocess_panel`):

1. **Smoothing** (:func:`trailing_mean`): value on day T = mean of the daily values of the last
   ``window`` (20) trading days up to and including T, NaN days skipped, NaN when fewer than
   ``min_valid`` (10) are finite. Uses days <= T only.
2. **Universe mask**: stocks outside the day's universe become NaN (the cross-section of day T is
   the stocks in the universe on T).
3. **Winsorizing** (:func:`mad_winsorize`): clip to ``median +- k * 1.4826 * MAD`` per day and
   factor, ``MAD = median(|x - median(x)|)``; 1.4826 makes ``1.4826 * MAD`` estimate the standard
   deviation of normal data. When MAD is 0 (over half the cross-section shares one value) the day
   is left unclipped: clipping to a zero-width band would turn the factor into a constant.
4. **Neutralizing** (:func:`neutralize`): residual of the per-day OLS of the factor on industry
   dummies plus log float cap (plus any extra exposure columns).
5. **Standardizing** (:func:`zscore`): ``(x - mean) / std`` over the day's valid values
   (population std, ``ddof = 0``); NaN when the std is 0.
6. **Fill** (optional, models only): remaining NaN -> ``fill_value``.

A cross-section with fewer than ``min_stocks`` valid values gives NaN for the whole day (a
median, a regression or a z-score over a handful of stocks is noise, not a factor value).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from fbgpu.engine.backend import array_module
from fbgpu.engine.segments import ops_for

log = logging.getLogger(__name__)

#: Scale turning a median absolute deviation into a normal-consistent standard deviation.
MAD_TO_STD = 1.4826

Array = Any  # numpy.ndarray or cupy.ndarray


@dataclass(frozen=True)
class PanelConfig:
    """Panel preprocessing parameters (TOML section ``[evaluate.panel]``); defaults = the report.

    Attributes:
        window: smoothing window in trading days (20). 1 disables smoothing.
        min_valid: minimum finite daily values inside the window (10), else NaN; capped at
            ``window``.
        mad_k: winsorize at ``median +- mad_k * 1.4826 * MAD`` (5). 0 disables winsorizing.
        neutralize_industry: include industry dummies in the neutralizing regression (True).
        neutralize_size: include log float cap in the neutralizing regression (True).
        standardize: cross-sectional z-score at the end (True).
        min_stocks: minimum valid stocks in a day's cross-section (10), else the day is NaN.
        min_industry_size: industries with fewer valid stocks on a day are pooled into one
            "small industries" dummy for the neutralizing regression (3; 1 = never pool).
        fill_value: value replacing the remaining NaN (None = keep NaN, which evaluation needs;
            models that need a dense tensor use 0.0).
    """

    window: int = 20
    min_valid: int = 10
    mad_k: float = 5.0
    neutralize_industry: bool = True
    neutralize_size: bool = True
    standardize: bool = True
    min_stocks: int = 10
    min_industry_size: int = 3
    fill_value: float | None = None

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"panel.window must be >= 1, got {self.window}")
        if self.min_valid < 1:
            raise ValueError(f"panel.min_valid must be >= 1, got {self.min_valid}")
        if self.mad_k < 0:
            raise ValueError(f"panel.mad_k must be >= 0, got {self.mad_k}")
        if self.min_stocks < 2:
            raise ValueError(f"panel.min_stocks must be >= 2, got {self.min_stocks}")


def _xp(a: Array) -> ModuleType:
    return array_module(a)


def _as3d(values: Array) -> tuple[Array, bool]:
    """View a ``[D, S]`` array as ``[D, S, 1]``; returns (array, was_2d)."""
    if values.ndim == 2:
        return values[:, :, None], True
    if values.ndim != 3:
        raise ValueError(f"expected a [days, stocks] or [days, stocks, factors] array, "
                         f"got shape {values.shape}")
    return values, False


def trailing_mean(values: Array, window: int = 20, min_valid: int = 10) -> Array:
    """Trailing mean over the last ``window`` rows (days) up to and including each row.

    ``out[t] = mean(values[t-window+1 .. t])`` over the finite entries, NaN where fewer than
    ``min_valid`` are finite. Axis 0 is time; any trailing shape is allowed. Row ``t`` depends on
    rows ``<= t`` only (the sum is accumulated lag by lag, so no later value enters it even
    through rounding).
    """
    xp = _xp(values)
    total, count = trailing_sum(values, window)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = total / count
    return xp.where(count >= min_valid, out, xp.nan)


def trailing_sum(values: Array, window: int) -> tuple[Array, Array]:
    """Sum and count of the finite values among rows ``t-window+1 .. t`` (axis 0 is time).

    Accumulated lag by lag (``window`` vectorized passes), so row ``t`` never sees a later row.
    """
    xp = _xp(values)
    x = xp.asarray(values, dtype=xp.float64)
    finite = xp.isfinite(x)
    x0 = xp.where(finite, x, 0.0)
    total = x0.copy()
    count = finite.astype(xp.int32)
    for lag in range(1, min(window, x.shape[0])):
        total[lag:] += x0[:-lag]
        count[lag:] += finite[:-lag]
    return total, count


def _enough(valid: Array, min_stocks: int) -> Array:
    """``[D, 1, F]`` mask of cross-sections with at least ``min_stocks`` valid stocks."""
    return valid.sum(axis=1, keepdims=True) >= min_stocks


def mad_winsorize(values: Array, k: float = 5.0, min_stocks: int = 2) -> Array:
    """Clip each day's cross-section (axis 1) to ``median +- k * 1.4826 * MAD``.

    ``values`` is ``[D, S]`` or ``[D, S, F]`` with NaN for stocks outside the cross-section;
    NaN stays NaN. Days whose MAD is 0 are returned unclipped (see the module docstring), days
    with fewer than ``min_stocks`` finite values become NaN.
    """
    xp = _xp(values)
    x, was_2d = _as3d(xp.asarray(values, dtype=xp.float64))
    valid = xp.isfinite(x)
    enough = _enough(valid, min_stocks)
    with np.errstate(invalid="ignore"), quiet_nan_warnings():
        med = xp.nanmedian(xp.where(enough, x, xp.nan), axis=1, keepdims=True)
        mad = xp.nanmedian(xp.abs(x - med), axis=1, keepdims=True)
    half = k * MAD_TO_STD * mad
    clipped = xp.where(mad > 0, xp.clip(x, med - half, med + half), x)
    out = xp.where(valid & enough, clipped, xp.nan)
    return out[:, :, 0] if was_2d else out


def zscore(values: Array, min_stocks: int = 2) -> Array:
    """Cross-sectional z-score along axis 1: ``(x - mean) / std`` over finite values, ``ddof=0``.

    NaN where the input is NaN, and for whole days with fewer than ``min_stocks`` finite values or
    a zero standard deviation.
    """
    xp = _xp(values)
    x, was_2d = _as3d(xp.asarray(values, dtype=xp.float64))
    valid = xp.isfinite(x)
    n = valid.sum(axis=1, keepdims=True)
    x0 = xp.where(valid, x, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = x0.sum(axis=1, keepdims=True) / n
        # Two-pass (centred) variance: factor values can sit far from zero.
        dev = xp.where(valid, x - mean, 0.0)
        std = xp.sqrt((dev * dev).sum(axis=1, keepdims=True) / n)
        out = dev / std
    ok = valid & (n >= min_stocks) & (std > 0)
    out = xp.where(ok, out, xp.nan)
    return out[:, :, 0] if was_2d else out


def neutralize(
    values: Array,
    industry: Array | None,
    exposures: Array | None,
    *,
    n_industries: int | None = None,
    min_stocks: int = 2,
    min_industry_size: int = 1,
) -> Array:
    """Residuals of the per-day OLS ``y ~ industry dummies + exposures``, batched over all days.

    Args:
        values: ``[D, S]`` or ``[D, S, F]`` factor values, NaN outside the cross-section.
        industry: ``[D, S]`` integer industry codes ``0..K-1`` (-1 = unknown: the stock is left
            out and gets NaN), or None for no industry dummies (an intercept is used instead).
        exposures: ``[D, S]`` or ``[D, S, C]`` continuous exposures (log float cap), or None.
        n_industries: K (default: ``industry.max() + 1``).
        min_stocks: days (per factor) with fewer valid stocks give NaN.
        min_industry_size: industries with fewer valid stocks on a day (per factor) share one
            pooled "small industries" dummy for that day. A singleton industry's dummy would
            fit its stock exactly and leave a residual of exactly 0 (an artificial tie); 1
            keeps every industry separate.

    Method (Frisch-Waugh-Lovell): with a full set of industry dummies the OLS residual equals the
    residual of the within-industry-demeaned factor regressed on the within-industry-demeaned
    exposures. Industry means come from one segmented histogram (``bin_sum`` over the ``(day,
    factor)`` rows by industry: fixed order, no atomics, no host sync); the ``C x C`` normal
    equations of all ``(day, factor)`` pairs are then solved
    in one batched ``xp.linalg.solve``. Each ``(day, factor)`` uses exactly the stocks where that
    factor, the industry and every exposure are finite, so the result equals a per-day
    ``numpy.linalg.lstsq`` on those rows. A degenerate exposure (zero within-industry variance)
    gets coefficient 0; the residual is then the industry-demeaned factor.
    """
    xp = _xp(values)
    y, was_2d = _as3d(xp.asarray(values, dtype=xp.float64))
    D, S, F = y.shape
    valid = xp.isfinite(y)
    if industry is None:
        groups = xp.zeros((D, S), dtype=xp.int64)
        K = 1
    else:
        groups = xp.asarray(industry).astype(xp.int64)
        if groups.shape != (D, S):
            raise ValueError(f"industry has shape {groups.shape}, expected {(D, S)}")
        K = int(n_industries) if n_industries is not None else int(groups.max()) + 1
        K = max(K, 1)
        valid &= ((groups >= 0) & (groups < K))[:, :, None]
        groups = xp.clip(groups, 0, K - 1)
    if exposures is not None:
        Z = xp.asarray(exposures, dtype=xp.float64)
        if Z.ndim == 2:
            Z = Z[:, :, None]
        if Z.shape[:2] != (D, S):
            raise ValueError(f"exposures have shape {Z.shape}, expected ({D}, {S}, C)")
        valid &= xp.isfinite(Z).all(axis=2)[:, :, None]
        C = Z.shape[2]
    else:
        Z, C = None, 0
    valid &= _enough(valid, min_stocks)
    w = valid.astype(xp.float64)

    cell_group = xp.broadcast_to(groups[:, :, None], (D, S, F))
    ops = ops_for(xp)
    rows = ops.rows(D * F, S)

    def group_sums(g: Array, v: Array, n_groups: int) -> Array:
        """``[D, n_groups, F]``: per (day, group, factor), the sum of ``v`` over the stocks.

        One segmented histogram (:meth:`~fbgpu.engine.segments.SegmentOps.bin_sum`) over the
        (day, factor) rows, stocks in order: a fixed order of additions on both backends (no
        float atomics, unlike a weighted ``bincount`` on a GPU) and no device->host sync (a
        ``bincount`` reads its keys' maximum back). ``v`` must be finite.
        """
        vals = xp.ascontiguousarray(xp.moveaxis(v, 1, 2)).reshape(-1)
        bins = xp.ascontiguousarray(xp.moveaxis(g, 1, 2)).reshape(-1)
        out = ops.bin_sum(rows, bins, vals, n_groups).reshape(D, F, n_groups)
        return xp.moveaxis(out, 1, 2)

    if min_industry_size > 1 and industry is not None:
        small = group_sums(cell_group, w, K) < min_industry_size
        cell_group = xp.where(xp.take_along_axis(small, cell_group, axis=1), K, cell_group)
        K += 1
    n_group = group_sums(cell_group, w, K)

    def group_mean(v: Array) -> Array:
        """Per-cell mean of ``v`` over the valid stocks of the cell's (day, industry, factor)."""
        s = group_sums(cell_group, w * v, K)
        with np.errstate(invalid="ignore", divide="ignore"):
            m = s / n_group
        m = xp.where(n_group > 0, m, 0.0)
        return xp.take_along_axis(m, cell_group, axis=1)

    y0 = xp.where(valid, y, 0.0)
    resid = y0 - group_mean(y0)
    if C:
        z_til, z_total = [], []
        n_day = w.sum(axis=1, keepdims=True)
        for c in range(C):
            zc = xp.broadcast_to(xp.where(xp.isfinite(Z[:, :, c]), Z[:, :, c], 0.0)[:, :, None],
                                 (D, S, F))
            z_til.append(w * (zc - group_mean(zc)))
            with np.errstate(invalid="ignore", divide="ignore"):
                z_dev = w * (zc - (w * zc).sum(axis=1, keepdims=True) / n_day)
            z_total.append((z_dev * z_dev).sum(axis=1))
        Zt = xp.stack(z_til, axis=-1)  # [D, S, F, C], zero outside the valid cells
        A = xp.einsum("dsfc,dsfe->dfce", Zt, Zt)
        b = xp.einsum("dsfc,dsf->dfc", Zt, resid)
        # An exposure with no variance left inside industries (e.g. log cap constant within
        # each industry) would make A singular; its within sum of squares is then rounding noise
        # against its total one. Give it a unit diagonal and b = 0 so its coefficient solves to
        # exactly 0 instead of failing (or exploding) the whole batch.
        diag = xp.diagonal(A, axis1=-2, axis2=-1)
        dead = ~(diag > 1e-12 * xp.stack(z_total, axis=-1))
        eye = xp.eye(C, dtype=xp.float64)
        A = xp.where(dead[..., None] | dead[..., None, :], 0.0, A) + eye * dead[..., None]
        b = xp.where(dead, 0.0, b)
        beta = xp.linalg.solve(A, b[..., None])[..., 0]  # [D, F, C]
        resid = resid - xp.einsum("dsfc,dfc->dsf", Zt, beta)
    out = xp.where(valid, resid, xp.nan)
    return out[:, :, 0] if was_2d else out


def preprocess_panel(
    daily_values: Array,
    universe: Array,
    industry: Array | None,
    log_cap: Array | None,
    config: PanelConfig | None = None,
    *,
    n_industries: int | None = None,
) -> Array:
    """Raw daily factor values ``[D, S, F]`` -> the preprocessed panel ``[D, S, F]``.

    Args:
        daily_values: raw daily factor values on the trading-day calendar (axis 0 consecutive
            trading days, so the smoothing window counts trading days), NaN where undefined.
        universe: ``[D, S]`` bool, the stocks forming day T's cross-section. It must be known at
            T (see :func:`fbgpu.panel.market.Market.universe`): then panel value ``[T]`` depends
            only on data up to T.
        industry: ``[D, S]`` integer industry codes (-1 unknown), or None.
        log_cap: ``[D, S]`` log float market cap, or None.
        config: :class:`PanelConfig` (defaults = the report).
        n_industries: number of industry codes (default ``industry.max() + 1``).

    Returns NaN wherever a value is undefined, unless ``config.fill_value`` is set. The result
    lives on the same device as ``daily_values``.
    """
    cfg = config or PanelConfig()
    xp = _xp(daily_values)
    x, was_2d = _as3d(xp.asarray(daily_values, dtype=xp.float64))
    uni = xp.asarray(universe, dtype=bool)
    if uni.shape != x.shape[:2]:
        raise ValueError(f"universe has shape {uni.shape}, expected {x.shape[:2]}")
    if cfg.window > 1:
        x = trailing_mean(x, cfg.window, min(cfg.min_valid, cfg.window))
    x = xp.where(uni[:, :, None], x, xp.nan)
    if cfg.mad_k > 0:
        x = mad_winsorize(x, cfg.mad_k, cfg.min_stocks)
    ind = industry if cfg.neutralize_industry else None
    cap = log_cap if cfg.neutralize_size else None
    if ind is not None or cap is not None:
        x = neutralize(x, ind, cap, n_industries=n_industries, min_stocks=cfg.min_stocks,
                       min_industry_size=cfg.min_industry_size)
    if cfg.standardize:
        x = zscore(x, cfg.min_stocks)
    if cfg.fill_value is not None:
        x = xp.where(xp.isfinite(x), x, cfg.fill_value)
    return x[:, :, 0] if was_2d else x


@contextlib.contextmanager
def quiet_nan_warnings() -> Iterator[None]:
    """Silence numpy's empty-slice warnings: an empty cross-section is a normal NaN day."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="All-NaN slice")
        warnings.filterwarnings("ignore", message="Mean of empty slice")
        warnings.filterwarnings("ignore", message="Degrees of freedom")
        yield
