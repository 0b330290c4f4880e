"""Cross-sectional statistics over ``[dates, stocks]`` arrays, numpy or cupy, no loop over dates.

Conventions: axis 0 is the date, axis 1 the stock; NaN marks "not in this date's cross-section".
Every statistic of a date uses only that date's row.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fbgpu.engine.backend import array_module

Array = Any  # numpy.ndarray or cupy.ndarray


def average_ranks(x: Array) -> Array:
    """Ranks ``1..n`` of the finite values of each row, ties sharing their average rank.

    NaN stays NaN. Equals ``scipy.stats.rankdata(row, method="average")`` on each row's finite
    values (what ``pandas.Series.rank`` and alphalens use).
    """
    xp = array_module(x)
    x = xp.asarray(x, dtype=xp.float64)
    D, S = x.shape
    if D == 0 or S == 0:
        return x.copy()
    order = xp.argsort(x, axis=1)  # NaN sorts last in numpy and cupy
    xs = xp.take_along_axis(x, order, axis=1)
    new = xp.ones((D, S), dtype=bool)
    new[:, 1:] = xs[:, 1:] != xs[:, :-1]  # NaN != NaN: every NaN is its own group
    flat_new = new.ravel()
    gid = xp.cumsum(flat_new) - 1
    # Each group's first and last position, scattered by group id (no nonzero: its size would
    # be read on the host, a device sync); non-boundary positions write a spare slot, D * S.
    pos = xp.arange(D * S)
    last = xp.ones(D * S, dtype=bool)
    last[:-1] = flat_new[1:]
    starts = xp.zeros(D * S + 1, dtype=pos.dtype)
    ends = xp.zeros(D * S + 1, dtype=pos.dtype)
    starts[xp.where(flat_new, gid, D * S)] = pos
    ends[xp.where(last, gid, D * S)] = pos
    # Groups never span rows (a row always opens a group), so positions mod S are in-row ranks.
    avg = ((starts[gid] % S) + (ends[gid] % S)).astype(xp.float64) / 2.0 + 1.0
    ranked_sorted = xp.where(xp.isfinite(xs.ravel()), avg, xp.nan).reshape(D, S)
    out = xp.empty_like(x)
    out[xp.arange(D)[:, None], order] = ranked_sorted
    return out


def row_corr(a: Array, b: Array, min_obs: int = 3) -> Array:
    """Pearson correlation of ``a[t]`` and ``b[t]`` per row over pairwise-finite entries.

    NaN for rows with fewer than ``min_obs`` pairs or a zero variance. Two-pass (centred).
    """
    xp = array_module(a)
    a = xp.asarray(a, dtype=xp.float64)
    b = xp.asarray(b, dtype=xp.float64)
    ok = xp.isfinite(a) & xp.isfinite(b)
    n = ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ma = xp.where(ok, a, 0.0).sum(axis=1) / n
        mb = xp.where(ok, b, 0.0).sum(axis=1) / n
        da = xp.where(ok, a - ma[:, None], 0.0)
        db = xp.where(ok, b - mb[:, None], 0.0)
        sab = (da * db).sum(axis=1)
        saa = (da * da).sum(axis=1)
        sbb = (db * db).sum(axis=1)
        r = sab / xp.sqrt(saa * sbb)
    return xp.where((n >= min_obs) & (saa > 0) & (sbb > 0), r, xp.nan)


def rank_ic(factor: Array, returns: Array, mask: Array | None = None, min_obs: int = 3) -> Array:
    """RankIC per date: Spearman correlation of factor and return over the date's stocks.

    A stock counts on date t when ``mask[t]`` (the pool) holds and both values are finite; the
    ranks are taken among exactly those stocks (as alphalens does after dropping NaN).
    """
    xp = array_module(factor)
    f = xp.asarray(factor, dtype=xp.float64)
    r = xp.asarray(returns, dtype=xp.float64)
    ok = xp.isfinite(f) & xp.isfinite(r)
    if mask is not None:
        ok &= xp.asarray(mask, dtype=bool)
    fr = average_ranks(xp.where(ok, f, xp.nan))
    rr = average_ranks(xp.where(ok, r, xp.nan))
    return row_corr(fr, rr, min_obs)


def quantile_bins(x: Array, groups: int) -> Array:
    """Quantile group ``0..groups-1`` of each finite value per row (NaN elsewhere).

    Same rule as ``pandas.qcut(row, groups, labels=False)`` (and so alphalens'
    ``quantize_factor``): edges are the row's ``j/groups`` quantiles with linear interpolation,
    bins are right-closed ``(e_{j}, e_{j+1}]`` with the lowest edge included. Tied values fall in
    the same (lowest possible) group instead of raising on duplicate edges. Rows with fewer finite
    values than ``groups`` are NaN (some group would be empty).
    """
    xp = array_module(x)
    x = xp.asarray(x, dtype=xp.float64)
    D, S = x.shape
    n = xp.isfinite(x).sum(axis=1)
    xs = xp.sort(x, axis=1)  # NaN last
    inner = []
    for j in range(1, groups):
        pos = (n - 1).clip(0) * (j / groups)
        lo = xp.floor(pos).astype(xp.int64)
        hi = xp.minimum(lo + 1, (n - 1).clip(0))
        frac = pos - lo
        a = xp.take_along_axis(xs, lo[:, None], axis=1)[:, 0]
        b = xp.take_along_axis(xs, hi[:, None], axis=1)[:, 0]
        inner.append(a + (b - a) * frac)
    bins = xp.zeros((D, S), dtype=xp.float64)
    for e in inner:
        bins += x > e[:, None]
    return xp.where(xp.isfinite(x) & (n >= groups)[:, None], bins, xp.nan)


def group_means(values: Array, bins: Array, groups: int) -> tuple[Array, Array]:
    """Per row and group: mean of ``values`` over the stocks in the group, and their count.

    Returns ``([D, groups] means, [D, groups] counts)``; the mean is NaN for an empty group.
    """
    xp = array_module(values)
    v = xp.asarray(values, dtype=xp.float64)
    means, counts = [], []
    for g in range(groups):
        inside = (bins == g) & xp.isfinite(v)
        c = inside.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            means.append(xp.where(inside, v, 0.0).sum(axis=1) / c)
        counts.append(c)
    m = xp.stack(means, axis=1)
    c = xp.stack(counts, axis=1)
    return xp.where(c > 0, m, xp.nan), c


def masked_mean(values: Array, mask: Array) -> Array:
    """Per row: mean of the finite ``values`` where ``mask`` holds (NaN when none)."""
    xp = array_module(values)
    ok = xp.asarray(mask, dtype=bool) & xp.isfinite(values)
    n = ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = xp.where(ok, values, 0.0).sum(axis=1) / n
    return xp.where(n > 0, m, xp.nan)


def top_turnover(bins: Array, top: int) -> Array:
    """Two-sided turnover of the equal-weight ``top`` group between consecutive rows.

    ``turnover[t] = sum_i |w_t(i) - w_{t-1}(i)|`` with ``w_t = 1/n_t`` on the group's stocks
    (weights as rebalanced, ignoring drift inside the period); in ``[0, 2]``, NaN at t = 0 and
    where either row has an empty group.
    """
    xp = array_module(bins)
    inside = bins == top
    n = inside.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = inside / n[:, None].astype(xp.float64)
    w = xp.where(inside, w, 0.0)
    D = w.shape[0]
    out = xp.full(D, xp.nan)
    if D > 1:
        t = xp.abs(w[1:] - w[:-1]).sum(axis=1)
        out[1:] = xp.where((n[1:] > 0) & (n[:-1] > 0), t, xp.nan)
    return out
