"""CPU kernels of the segmented primitives: numba ``@njit(parallel=True)``, prange over segments.

A *segment* is a contiguous run ``offsets[s]:offsets[s+1]`` of a flat array: one stock-day of
ticks (CSR over stocks) or one row of a dense ``[stocks, L]`` minute tensor (``offsets = L *
arange(S+1)``). Every kernel loops over segments in parallel and over a segment's elements
sequentially, so the result of each segment is computed by one thread in element order
(deterministic, independent of the thread count).

Conventions shared with the GPU kernels (``kernels/segments.cu``, :mod:`fbgpu.engine.cuda_c`):

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


@nb.njit(cache=True, inline="always")
def _mask_select(use_mask):  # pragma: no cover - compiled
    """Index bits for ``mask[i & sel]``: all ones with a mask, 0 without (the caller then passes
    a one-element ``[True]``), so the loops read the mask without a branch."""
    return np.int64(-1) if use_mask else np.int64(0)


#: Stand-in for a masked-out value in a running min (``+_BIG``) or max (``-_BIG``): finite, so
#: that ``0 * _BIG`` is 0 and the substitution below is plain arithmetic.
_BIG = np.finfo(np.float64).max

# How the masked loops avoid branches. A random mask (buy orders, first trade of an order) makes
# ``if mask[i]`` mispredict about half the time, and LLVM turns a ``v if mask[i] else 0.0`` that
# feeds several accumulators back into that branch. So the mask enters as a weight
# ``w = float(mask[i])`` (1.0 or 0.0): ``v * w`` is v or 0 (adding an exact 0 leaves a sum's bits
# unchanged: a sum starting at +0.0 is never -0.0), a running minimum takes
# ``v * w + (1 - w) * _BIG`` (v, or _BIG which never wins). Non-finite values, rare in practice,
# are skipped by a branch that the predictor gets right. Results are the same bits as skipping
# masked-out elements, except that a minimum/maximum of -0.0 comes out as +0.0 (-0.0 + 0.0 is
# +0.0); the min/max only feed the constant-segment test, where -0.0 == +0.0.


@nb.njit(cache=True, parallel=True)
def seg_sum(offsets, x, mask, use_mask):  # pragma: no cover - compiled
    """Per segment: count and sum of the finite (and masked-in) values."""
    S = offsets.shape[0] - 1
    n_out = np.zeros(S, dtype=np.int64)
    s_out = np.zeros(S, dtype=np.float64)
    msel = _mask_select(use_mask)
    for s in nb.prange(S):
        n = 0
        tot = 0.0
        for i in range(offsets[s], offsets[s + 1]):
            v = x[i]
            if not np.isfinite(v):
                continue
            mk = mask[i & msel]
            n += np.int64(mk)
            tot += v * np.float64(mk)
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
    msel = _mask_select(use_mask)
    for s in nb.prange(S):
        lo = offsets[s]
        hi = offsets[s + 1]
        n = 0
        tot = 0.0
        mn = np.inf
        mx = -np.inf
        for i in range(lo, hi):
            v = x[i]
            if not np.isfinite(v):
                continue
            mk = mask[i & msel]
            w = np.float64(mk)
            n += np.int64(mk)
            vw = v * w
            tot += vw
            far = (1.0 - w) * _BIG
            mn = min(mn, vw + far)
            mx = max(mx, vw - far)
        n_out[s] = n
        if n == 0:
            continue
        mean0 = tot / n
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        s4 = 0.0
        for i in range(lo, hi):
            v = x[i]
            if not np.isfinite(v):
                continue
            w = np.float64(mask[i & msel])
            d = v * w - mean0 * w  # v - mean0, or exactly 0 when masked out
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
    msel = _mask_select(use_mask)
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
            a = x[i]
            b = y[i]
            if not (np.isfinite(a) & np.isfinite(b)):
                continue
            mk = mask[i & msel]
            w = np.float64(mk)
            n += np.int64(mk)
            aw = a * w
            bw = b * w
            tx += aw
            ty += bw
            far = (1.0 - w) * _BIG
            xmn = min(xmn, aw + far)
            xmx = max(xmx, aw - far)
            ymn = min(ymn, bw + far)
            ymx = max(ymx, bw - far)
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
            a = x[i]
            b = y[i]
            if not (np.isfinite(a) & np.isfinite(b)):
                continue
            w = np.float64(mask[i & msel])
            dx = a * w - mx0 * w  # a - mx0, or exactly 0 when masked out
            dy = b * w - my0 * w
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

#: A segment whose keys span at most ``DENSE_SPAN_FACTOR * run length + DENSE_SPAN_SLACK``
#: values is grouped through a direct-address table (slot = key - min key): no hashing, no
#: probing. Per-stock order ids (exchange order numbers within a stock-day) are like that; ids
#: drawn from a channel-wide sequence are sparse and take the hash table.
DENSE_SPAN_FACTOR = 8
DENSE_SPAN_SLACK = 64


@nb.njit(cache=True, parallel=True)
def seg_group_sum(offsets, keys, x, totals, first):  # pragma: no cover - compiled
    """Group by key inside each segment and sum ``x`` per group (in element order).

    Writes ``totals[i]`` = the sum of ``x`` over the elements of i's segment with i's key, and
    ``first[i]`` = True for the first element of each group (one representative per group), into
    the caller's arrays (allocated by numpy, whose large allocations fault in far fewer pages
    than the kernel's own would).
    Dense keys (span <= ``DENSE_SPAN_FACTOR`` x run length + slack) use a direct-address table
    indexed by ``key - min``; other segments an open-addressing hash table (linear probing, size
    a power of two >= 2 * run length). Both are O(n), add each group in element order (so the
    two paths give identical bits) and need no sort.
    """
    S = offsets.shape[0] - 1
    for s in nb.prange(S):
        lo = offsets[s]
        hi = offsets[s + 1]
        m = hi - lo
        if m == 0:
            continue
        kmin = keys[lo]
        kmax = keys[lo]
        for i in range(lo + 1, hi):
            kmin = min(kmin, keys[i])
            kmax = max(kmax, keys[i])
        # int64 subtraction wraps for spans >= 2**63: negative, hence "not dense" below.
        span = kmax - kmin
        if 0 <= span < DENSE_SPAN_FACTOR * m + DENSE_SPAN_SLACK:
            _group_dense(lo, hi, keys, x, kmin, span + 1, totals, first)
        else:
            _group_hashed(lo, hi, keys, x, totals, first)


@nb.njit(cache=True)
def _group_dense(lo, hi, keys, x, kmin, width, totals, first):  # pragma: no cover - compiled
    acc = np.zeros(width, dtype=np.float64)
    seen = np.zeros(width, dtype=np.bool_)
    for i in range(lo, hi):
        j = keys[i] - kmin
        first[i] = not seen[j]
        seen[j] = True
        acc[j] += x[i]
    for i in range(lo, hi):
        totals[i] = acc[keys[i] - kmin]


@nb.njit(cache=True)
def _group_hashed(lo, hi, keys, x, totals, first):  # pragma: no cover - compiled
    m = hi - lo
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
        is_new = False
        while True:
            g = table_group[h]
            if g < 0:
                table_group[h] = n_groups
                table_key[h] = k
                g = n_groups
                n_groups += 1
                is_new = True
                break
            if table_key[h] == k:
                break
            h = (h + 1) & (cap - 1)
        first[lo + j] = is_new
        group_of[j] = g
        group_sum[g] += x[lo + j]
    for j in range(m):
        totals[lo + j] = group_sum[group_of[j]]


@nb.njit(cache=True, parallel=True)
def seg_topk_mask(offsets, x, valid, k, out):  # pragma: no cover - compiled
    """Per segment, mark the ``k[s]`` valid elements with the largest ``x`` (ties: earlier first).

    Elements that are not valid or whose ``x`` is not finite are never selected. Selection, not
    a sort: the k-th largest value ``t`` comes from ``np.partition`` (O(m)); then, in element
    order, every value above ``t`` is taken and values equal to ``t`` while places remain,
    which is exactly the first k of a stable descending sort.
    """
    S = offsets.shape[0] - 1
    for s in nb.prange(S):
        lo = offsets[s]
        hi = offsets[s + 1]
        m = 0
        for i in range(lo, hi):
            out[i] = False
            if valid[i] and np.isfinite(x[i]):
                m += 1
        take = min(k[s], m)
        if take <= 0:
            continue
        vals = np.empty(m, dtype=np.float64)
        j = 0
        for i in range(lo, hi):
            if valid[i] and np.isfinite(x[i]):
                vals[j] = x[i]
                j += 1
        t = np.partition(vals, m - take)[m - take]
        above = 0
        for j in range(m):
            if vals[j] > t:
                above += 1
        ties = take - above  # how many elements equal to t are taken, earliest first
        for i in range(lo, hi):
            if valid[i] and np.isfinite(x[i]):
                v = x[i]
                if v > t:
                    out[i] = True
                elif v == t and ties > 0:
                    out[i] = True
                    ties -= 1


@nb.njit(cache=True, parallel=True)
def seg_threshold_mask(offsets, x, thr, always, out):  # pragma: no cover - compiled
    """Per element i of segment s: ``out[i] = x[i] >= thr[s] or always[s]`` (NaN compares
    False)."""
    S = offsets.shape[0] - 1
    for s in nb.prange(S):
        t = thr[s]
        a = always[s]
        for i in range(offsets[s], offsets[s + 1]):
            out[i] = (x[i] >= t) | a
