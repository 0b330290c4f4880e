"""CPU kernels of the segmented primitives: numba ``@njit(parallel=True)``, prange over segments.

A *segment* is a contiguous run ``offsets[s]:offsets[s+1]`` of a flat array: one stock-day of
ticks (CSR over stocks) or one row of a dense ``[stocks, L]`` minute tensor (``offsets = L *
arange(S+1)``). Every kernel loops over segments in parallel and over a segment's elements
sequentially, so the result of each segment is computed by one thread in element order
(deterministic, independent of the thread count).

Conventions shared with the GPU kernels (:mod:`fbgpu.engine.cuda_kernels`):

* an element takes part when ``mask[i]`` (only if ``use_mask``) and its value is finite;
* moments are *corrected two-pass*: pass 1 gives ``mean0 = sum/n``; pass 2 accumulates power sums
  of ``d = x - mean0`` and the shift ``c = sum(d)/n`` moves them to the exact centre
  (``m2 = S2/n - c^2`` ...). Since ``|c|`` is at rounding level of ``mean0`` there is no
  cancellation, so prices near 1e8 with tiny moves keep their digits, unlike raw power sums;
* ``xmin``/``xmax`` are returned so that "all values exactly equal" is an exact test
  (``xmin == xmax``), not a float variance test.

Callers use :mod:`fbgpu.engine.segments`, which validates and allocates; these are the raw loops.
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, parallel=True)
def seg_sum(offsets, x, mask, use_mask):  # pragma: no cover - compiled
    """Per segment: count and sum of the finite (and masked-in) values."""
    S = offsets.shape[0] - 1
    n_out = np.zeros(S, dtype=np.int64)
    s_out = np.zeros(S, dtype=np.float64)
    for s in nb.prange(S):
        n = 0
        tot = 0.0
        for i in range(offsets[s], offsets[s + 1]):
            if use_mask and not mask[i]:
                continue
            v = x[i]
            if np.isfinite(v):
                n += 1
                tot += v
        n_out[s] = n
        s_out[s] = tot
    return n_out, s_out


@nb.njit(cache=True, parallel=True)
def seg_moments(offsets, x, mask, use_mask):  # pragma: no cover - compiled
    """Per segment: n, mean, central moments m2, m3, m4 (population), min and max."""
    S = offsets.shape[0] - 1
    n_out = np.zeros(S, dtype=np.int64)
    mean_out = np.full(S, np.nan)
    m2_out = np.full(S, np.nan)
    m3_out = np.full(S, np.nan)
    m4_out = np.full(S, np.nan)
    min_out = np.full(S, np.nan)
    max_out = np.full(S, np.nan)
    for s in nb.prange(S):
        lo = offsets[s]
        hi = offsets[s + 1]
        n = 0
        tot = 0.0
        mn = np.inf
        mx = -np.inf
        for i in range(lo, hi):
            if use_mask and not mask[i]:
                continue
            v = x[i]
            if np.isfinite(v):
                n += 1
                tot += v
                mn = min(mn, v)
                mx = max(mx, v)
        n_out[s] = n
        if n == 0:
            continue
        mean0 = tot / n
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        s4 = 0.0
        for i in range(lo, hi):
            if use_mask and not mask[i]:
                continue
            v = x[i]
            if np.isfinite(v):
                d = v - mean0
                d2 = d * d
                s1 += d
                s2 += d2
                s3 += d2 * d
                s4 += d2 * d2
        c = s1 / n
        e2 = s2 / n
        e3 = s3 / n
        e4 = s4 / n
        mean_out[s] = mean0 + c
        m2_out[s] = e2 - c * c
        m3_out[s] = e3 - 3.0 * c * e2 + 2.0 * c * c * c
        m4_out[s] = e4 - 4.0 * c * e3 + 6.0 * c * c * e2 - 3.0 * c * c * c * c
        min_out[s] = mn
        max_out[s] = mx
    return n_out, mean_out, m2_out, m3_out, m4_out, min_out, max_out


@nb.njit(cache=True, parallel=True)
def seg_corr(offsets, x, y, mask, use_mask):  # pragma: no cover - compiled
    """Per segment over pairs with both sides finite: n, cov, var_x, var_y, degenerate.

    ``degenerate`` is 1 when all x are exactly equal or all y are exactly equal (or n == 0).
    """
    S = offsets.shape[0] - 1
    n_out = np.zeros(S, dtype=np.int64)
    cov_out = np.full(S, np.nan)
    vx_out = np.full(S, np.nan)
    vy_out = np.full(S, np.nan)
    deg_out = np.ones(S, dtype=np.uint8)
    for s in nb.prange(S):
        lo = offsets[s]
        hi = offsets[s + 1]
        n = 0
        tx = 0.0
        ty = 0.0
        xmn = np.inf
        xmx = -np.inf
        ymn = np.inf
        ymx = -np.inf
        for i in range(lo, hi):
            if use_mask and not mask[i]:
                continue
            a = x[i]
            b = y[i]
            if np.isfinite(a) and np.isfinite(b):
                n += 1
                tx += a
                ty += b
                xmn = min(xmn, a)
                xmx = max(xmx, a)
                ymn = min(ymn, b)
                ymx = max(ymx, b)
        n_out[s] = n
        if n == 0:
            continue
        mx0 = tx / n
        my0 = ty / n
        sx = 0.0
        sy = 0.0
        sxx = 0.0
        syy = 0.0
        sxy = 0.0
        for i in range(lo, hi):
            if use_mask and not mask[i]:
                continue
            a = x[i]
            b = y[i]
            if np.isfinite(a) and np.isfinite(b):
                dx = a - mx0
                dy = b - my0
                sx += dx
                sy += dy
                sxx += dx * dx
                syy += dy * dy
                sxy += dx * dy
        cx = sx / n
        cy = sy / n
        cov_out[s] = sxy / n - cx * cy
        vx_out[s] = sxx / n - cx * cx
        vy_out[s] = syy / n - cy * cy
        deg_out[s] = 1 if (xmn == xmx or ymn == ymx) else 0
    return n_out, cov_out, vx_out, vy_out, deg_out


@nb.njit(cache=True, parallel=True)
def seg_bin_sum(offsets, bins, x, mask, use_mask, n_bins):  # pragma: no cover - compiled
    """Per segment: ``out[s, b] = sum(x[i] for i in segment s if bins[i] == b)`` (finite x)."""
    S = offsets.shape[0] - 1
    out = np.zeros((S, n_bins), dtype=np.float64)
    for s in nb.prange(S):
        for i in range(offsets[s], offsets[s + 1]):
            if use_mask and not mask[i]:
                continue
            b = bins[i]
            v = x[i]
            if 0 <= b < n_bins and np.isfinite(v):
                out[s, b] += v
    return out


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@nb.njit(cache=True, parallel=True)
def seg_group_sum(offsets, keys, x):  # pragma: no cover - compiled
    """Group by key inside each segment and sum ``x`` per group (in element order).

    Returns ``totals[i]`` = the sum of ``x`` over the elements of i's segment with i's key, and
    ``first[i]`` = True for the first element of each group (one representative per group).
    An open-addressing hash table per segment (linear probing, size a power of two >= 2 * run
    length) makes this O(n) instead of a sort.
    """
    n_all = keys.shape[0]
    totals = np.empty(n_all, dtype=np.float64)
    first = np.zeros(n_all, dtype=np.bool_)
    S = offsets.shape[0] - 1
    for s in nb.prange(S):
        lo = offsets[s]
        hi = offsets[s + 1]
        m = hi - lo
        if m == 0:
            continue
        bits = 1
        while (1 << bits) < 2 * m:
            bits += 1
        cap = 1 << bits
        shift = np.uint64(64 - bits)
        table_key = np.empty(cap, dtype=np.int64)
        table_group = np.full(cap, -1, dtype=np.int64)
        group_of = np.empty(m, dtype=np.int64)
        group_sum = np.zeros(m, dtype=np.float64)
        n_groups = 0
        for j in range(m):
            k = keys[lo + j]
            h = np.int64((np.uint64(k) * _GOLDEN) >> shift)
            while True:
                g = table_group[h]
                if g < 0:
                    table_group[h] = n_groups
                    table_key[h] = k
                    g = n_groups
                    n_groups += 1
                    first[lo + j] = True
                    break
                if table_key[h] == k:
                    break
                h = (h + 1) & (cap - 1)
            group_of[j] = g
            group_sum[g] += x[lo + j]
        for j in range(m):
            totals[lo + j] = group_sum[group_of[j]]
    return totals, first


@nb.njit(cache=True, parallel=True)
def seg_topk_mask(offsets, x, valid, k):  # pragma: no cover - compiled
    """Per segment, mark the ``k[s]`` valid elements with the largest ``x`` (ties: earlier first).

    Elements that are not valid or whose ``x`` is not finite are never selected.
    """
    n_all = x.shape[0]
    out = np.zeros(n_all, dtype=np.bool_)
    S = offsets.shape[0] - 1
    for s in nb.prange(S):
        lo = offsets[s]
        hi = offsets[s + 1]
        m = 0
        for i in range(lo, hi):
            if valid[i] and np.isfinite(x[i]):
                m += 1
        take = min(k[s], m)
        if take <= 0:
            continue
        idx = np.empty(m, dtype=np.int64)
        neg = np.empty(m, dtype=np.float64)
        j = 0
        for i in range(lo, hi):
            if valid[i] and np.isfinite(x[i]):
                idx[j] = i
                neg[j] = -x[i]
                j += 1
        # A stable sort of -x keeps equal values in element order: ties go to the earlier one.
        order = np.argsort(neg, kind="mergesort")
        for t in range(take):
            out[idx[order[t]]] = True
    return out
