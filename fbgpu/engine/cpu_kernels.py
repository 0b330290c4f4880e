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

import logging
import sys

import numba as nb
import numpy as np

from fbgpu.data.bars import minute_of_ts_scalar
from fbgpu.engine.pooled import pooled_mean_var

log = logging.getLogger(__name__)

#: The BLAS probe numba makes on its first dispatch (see :func:`satisfy_numba_blas_probe`).
BLAS_PROBE_MODULE = "scipy.linalg.cython_blas"


def satisfy_numba_blas_probe() -> bool:
    """Let numba's BLAS probe find :data:`BLAS_PROBE_MODULE` without ``scipy.linalg``'s
    package start-up; True when the module was loaded here.

    Numba's first dispatch in a process (even one that only loads cached kernels) refreshes its
    target context, which imports ``numba.np.arraymath``, whose module code runs
    ``ensure_blas()``: ``import scipy.linalg.cython_blas``, to decide whether ``np.dot`` in
    jitted code may call BLAS. That import runs ``scipy/linalg/__init__.py`` first, which
    imports all of ``scipy.linalg`` and, through ``scipy._lib._array_api``, ``numpy.testing``
    and ``unittest``: ~0.2 CPU-s on the 2-core VM, a tenth of a whole ``fbgpu factors`` run
    that uses no BLAS at all (docs/benchmarks.md, "Start-up"). Here the probe's module, the
    compiled extension ``cython_blas`` (whose initialisation imports nothing), is loaded from
    scipy's own file and registered under its own name, so that the probe finds it: numba sees
    exactly the module it would have imported (``_HAVE_BLAS`` stays True; jitted ``np.dot``
    calls the same BLAS through it), only the package's ``__init__`` is not run. A later
    ``import scipy.linalg`` runs that ``__init__`` normally and uses this same module.

    Does nothing when ``scipy.linalg`` or numba's ``arraymath`` is already imported, when
    ``FBGPU_BLAS_PROBE=0``, or when anything goes wrong (numba then imports it as usual).
    """
    import os

    if (BLAS_PROBE_MODULE in sys.modules or "scipy.linalg" in sys.modules
            or "numba.np.arraymath" in sys.modules
            or os.environ.get("FBGPU_BLAS_PROBE", "1").strip() == "0"):
        return False
    try:
        import importlib.machinery
        import importlib.util

        import scipy  # numba itself imports the top-level package; it is light

        where = [os.path.join(os.path.dirname(scipy.__file__), "linalg")]
        spec = importlib.machinery.PathFinder.find_spec(BLAS_PROBE_MODULE, where)
        if spec is None or not isinstance(spec.loader, importlib.machinery.ExtensionFileLoader):
            return False
        module = importlib.util.module_from_spec(spec)
        sys.modules[BLAS_PROBE_MODULE] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(BLAS_PROBE_MODULE, None)
            raise
    except Exception:  # numba's own import of the module then runs as usual
        log.debug("could not pre-load %s", BLAS_PROBE_MODULE, exc_info=True)
        return False
    sys.meta_path.insert(0, _AttachToPackage())
    return True


class _AttachToPackage:
    """Meta path hook, once: when ``scipy.linalg`` is imported later, set its ``cython_blas``
    attribute to the pre-loaded module after the package's code ran (the import system sets a
    submodule's attribute only when it loads the submodule itself)."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> object:
        parent, _, child = BLAS_PROBE_MODULE.rpartition(".")
        if name != parent:
            return None
        sys.meta_path.remove(self)
        import importlib.machinery

        spec = importlib.machinery.PathFinder.find_spec(name, path)  # type: ignore[arg-type]
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_attach(module: object) -> None:
            exec_module(module)
            if BLAS_PROBE_MODULE in sys.modules and not hasattr(module, child):
                setattr(module, child, sys.modules[BLAS_PROBE_MODULE])

        spec.loader.exec_module = exec_and_attach  # type: ignore[method-assign]
        return spec


satisfy_numba_blas_probe()


@nb.njit(cache=True, inline="always")
def _mask_select(use_mask):  # pragma: no cover - compiled
    """Index bits for ``mask[i & sel]``: all ones with a mask, 0 without (the caller then passes
    a one-element ``[True]``), so the loops read the mask without a branch."""
    return np.int64(-1) if use_mask else np.int64(0)


@nb.njit(cache=True, inline="always")
def _run_mask(mask, use_mask, lo, hi):  # pragma: no cover - compiled
    """The mask of elements ``lo:hi`` as a run indexed from 0 (with :func:`_mask_select`'s
    bits), or the caller's one-element ``[True]`` without a mask."""
    return mask[lo:hi] if use_mask else mask[0:1]


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
#
# Selects in the order pass (session 11). The fused order pass writes the same arithmetic as
# selects, ``tot + (fv if m else 0.0)``, ``min(mn, (fv + 0.0) if m else _BIG)``, ``(fv - mean0)
# if m else 0.0``: each is the weighted form's value for both m (``fv * 1.0`` is fv, ``mean0 *
# 1.0`` is mean0; a masked-out term is an exact zero in both forms while mean0 is finite, and
# an infinite mean0, an overflowed sum, makes the set's statistics NaN in both), so the bits
# are the same, with three fewer floating-point operations per set and order. There LLVM keeps
# them as selects (blends, no branch): measured 12-20% faster on the full-day orders.


@nb.njit(cache=True, inline="always")
def _finish_moments(n, mean0, s1, s2, s3, s4):  # pragma: no cover - compiled
    """The corrected two-pass moments from the power sums ``s_p = sum (x - mean0)^p`` of ``n``
    values: ``(mean, m2, m3, m4)`` at the exact centre ``mean0 + c``, ``c = s1 / n``. The one
    definition of the final step, shared by :func:`seg_moments` and the fused family passes."""
    c = s1 / n
    e2 = s2 / n
    e3 = s3 / n
    e4 = s4 / n
    return (mean0 + c, e2 - c * c, e3 - 3.0 * c * e2 + 2.0 * c * c * c,
            e4 - 4.0 * c * e3 + 6.0 * c * c * e2 - 3.0 * c * c * c * c)


@nb.njit(cache=True, inline="always")
def _finish_corr(n, sx, sy, sxx, syy, sxy):  # pragma: no cover - compiled
    """``(cov, var_x, var_y)`` from the centred sums of ``n`` pairs (``dx = x - mean0_x`` ...),
    shifted to the exact centre: ``cov = sxy/n - (sx/n)(sy/n)``. Shared like
    :func:`_finish_moments`."""
    cx = sx / n
    cy = sy / n
    return sxy / n - cx * cy, sxx / n - cx * cx, syy / n - cy * cy


@nb.njit(cache=True, parallel=True)
def seg_sum(offsets, x, mask, use_mask, n_out, s_out):  # pragma: no cover - compiled
    """Per segment: count and sum of the finite (and masked-in) values, into the caller's
    ``n_out`` (int64) and ``s_out`` (float64), every element written (as the GPU's
    ``seg_sum``: kernels write into caller-allocated outputs, so that the ahead-of-time build,
    :mod:`fbgpu.engine.cpu_aot`, can run them)."""
    S = offsets.shape[0] - 1
    msel = _mask_select(use_mask)
    for s in nb.prange(S):
        lo = offsets[s]
        hi = offsets[s + 1]
        r_x = x[lo:hi]  # the run indexed from 0: no wraparound selects (see _group_ids)
        r_mask = _run_mask(mask, use_mask, lo, hi)
        n = 0
        tot = 0.0
        for j in range(hi - lo):
            v = r_x[j]
            if not np.isfinite(v):
                continue
            mk = r_mask[j & msel]
            n += np.int64(mk)
            tot += v * np.float64(mk)
        n_out[s] = n
        s_out[s] = tot


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
        mean_out[s], m2_out[s], m3_out[s], m4_out[s] = _finish_moments(n, mean0, s1, s2, s3, s4)
        min_out[s] = mn
        max_out[s] = mx
    return n_out, mean_out, m2_out, m3_out, m4_out, min_out, max_out


@nb.njit(cache=True, parallel=True)
def seg_corr(offsets, x, y, mask, use_mask, n_out, cov_out, vx_out, vy_out,
             deg_out):  # pragma: no cover - compiled
    """Per segment over pairs with both sides finite: n, cov, var_x, var_y, degenerate, into
    the caller's outputs (int64, float64 x 3, uint8; every element written).

    ``degenerate`` is 1 when all x are exactly equal or all y are exactly equal (or n == 0);
    cov and the variances are NaN where n == 0.
    """
    S = offsets.shape[0] - 1
    msel = _mask_select(use_mask)
    for s in nb.prange(S):
        lo = offsets[s]
        hi = offsets[s + 1]
        r_x = x[lo:hi]  # the run indexed from 0: no wraparound selects (see _group_ids)
        r_y = y[lo:hi]
        r_mask = _run_mask(mask, use_mask, lo, hi)
        n = 0
        tx = 0.0
        ty = 0.0
        xmn = np.inf
        xmx = -np.inf
        ymn = np.inf
        ymx = -np.inf
        for j in range(hi - lo):
            a = r_x[j]
            b = r_y[j]
            if not (np.isfinite(a) & np.isfinite(b)):
                continue
            mk = r_mask[j & msel]
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
            cov_out[s] = np.nan
            vx_out[s] = np.nan
            vy_out[s] = np.nan
            deg_out[s] = 1
            continue
        mx0 = tx / n
        my0 = ty / n
        sx = 0.0
        sy = 0.0
        sxx = 0.0
        syy = 0.0
        sxy = 0.0
        for j in range(hi - lo):
            a = r_x[j]
            b = r_y[j]
            if not (np.isfinite(a) & np.isfinite(b)):
                continue
            w = np.float64(r_mask[j & msel])
            dx = a * w - mx0 * w  # a - mx0, or exactly 0 when masked out
            dy = b * w - my0 * w
            sx += dx
            sy += dy
            sxx += dx * dx
            syy += dy * dy
            sxy += dx * dy
        cov_out[s], vx_out[s], vy_out[s] = _finish_corr(n, sx, sy, sxx, syy, sxy)
        deg_out[s] = 1 if (xmn == xmx or ymn == ymx) else 0


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
    than the kernel's own would). The grouping itself is :func:`_group_ids`.
    """
    S = offsets.shape[0] - 1
    for s in nb.prange(S):
        lo = offsets[s]
        hi = offsets[s + 1]
        m = hi - lo
        if m == 0:
            continue
        gid = np.empty(m, dtype=np.int64)
        gsum = np.zeros(m, dtype=np.float64)
        _group_ids(lo, hi, keys, x, gid, gsum)
        nxt = 0  # group ids are handed out in order of first appearance
        for j in range(m):
            g = gid[j]
            first[lo + j] = g == nxt
            if g == nxt:
                nxt += 1
            totals[lo + j] = gsum[g]


@nb.njit(cache=True)
def _group_ids(lo, hi, keys, x, gid, gsum):  # pragma: no cover - compiled
    """Group the run ``lo:hi`` by ``keys``: ``gid[j]`` (j = i - lo) is the group of element i,
    numbered 0, 1, ... in order of first appearance, and ``gsum[g]`` (zeroed by the caller)
    accumulates ``x`` over group g in element order. Returns the number of groups.

    Dense keys (span < ``DENSE_SPAN_FACTOR`` x run length + slack) use a direct-address table
    indexed by ``key - min``; other runs an open-addressing hash table (linear probing, size a
    power of two >= 2 * run length). Both are O(n), need no sort and give identical results.
    Shared by :func:`seg_group_sum` and the fused trade passes where their keys are not dense
    (:func:`_pair_group_ids`).
    """
    m = hi - lo
    # The run as its own arrays, indexed from 0 by a loop counter: an index LLVM knows is not
    # negative needs none of numba's wraparound selects, and the key scan below becomes plain
    # vector loads (with ``keys[i]``, i from lo, it was a gather per element).
    run_keys = keys[lo:hi]
    run_x = x[lo:hi]
    kmin = run_keys[0]
    kmax = run_keys[0]
    for j in range(1, m):
        kmin = min(kmin, run_keys[j])
        kmax = max(kmax, run_keys[j])
    # int64 subtraction wraps for spans >= 2**63: negative, hence "not dense" below.
    span = kmax - kmin
    n_groups = 0
    if 0 <= span < DENSE_SPAN_FACTOR * m + DENSE_SPAN_SLACK:
        slot = np.full(span + 1, -1, dtype=np.int64)
        for j in range(m):
            # Without a branch: about half of the trades start a new order, at random, so an
            # ``if g < 0`` mispredicts often; the slot is stored back every time instead.
            # (Unsigned indices: k and g are never negative, and numba then wraps nothing.)
            k = np.uint64(run_keys[j] - kmin)
            g = slot[k]
            new = g < 0
            g = n_groups if new else g
            slot[k] = g
            n_groups += np.int64(new)
            gid[j] = g
            gsum[np.uint64(g)] += run_x[j]
        return n_groups
    bits = 1
    while (1 << bits) < 2 * m:
        bits += 1
    cap = 1 << bits
    shift = np.uint64(64 - bits)
    table_key = np.empty(cap, dtype=np.int64)
    table_group = np.full(cap, -1, dtype=np.int64)
    for j in range(m):
        k = run_keys[j]
        h = np.int64((np.uint64(k) * _GOLDEN) >> shift)
        while True:
            g = table_group[h]
            if g < 0:
                table_group[h] = n_groups
                table_key[h] = k
                g = n_groups
                n_groups += 1
                break
            if table_key[h] == k:
                break
            h = (h + 1) & (cap - 1)
        gid[j] = g
        gsum[np.uint64(g)] += run_x[j]
    return n_groups


@nb.njit(cache=True, parallel=True)
def seg_topk_mask(offsets, x, valid, k, out):  # pragma: no cover - compiled
    """Per segment, mark the ``k[s]`` valid elements with the largest ``x`` (ties: earlier first).

    Elements that are not valid or whose ``x`` is not finite are never selected. Selection, not
    a sort: the k-th largest value ``t`` comes from a quickselect of the candidates (O(m);
    :func:`_select`); then, in element order, every value above ``t`` is taken and
    values equal to ``t`` while places remain, which is exactly the first k of a stable
    descending sort.
    """
    S = offsets.shape[0] - 1
    for s in nb.prange(S):
        lo = offsets[s]
        hi = offsets[s + 1]
        # the run indexed from 0: no wraparound selects (see _group_ids)
        r_x = x[lo:hi]
        r_valid = valid[lo:hi]
        r_out = out[lo:hi]
        m = 0
        for i in range(hi - lo):
            r_out[i] = False
            if r_valid[i] and np.isfinite(r_x[i]):
                m += 1
        take = min(k[s], m)
        if take <= 0:
            continue
        # buf[:m]: the candidates; buf[m + 1:]: the selection's scratch. The gather stores
        # every element and advances only past a candidate (no branch), so after the last
        # candidate it keeps storing to buf[m], one slot past them: inside buf.
        buf = np.empty(2 * m + 1, dtype=np.float64)
        j = 0
        for i in range(hi - lo):
            v = r_x[i]
            buf[j] = v
            j += np.int64(r_valid[i] and np.isfinite(v))
        t = _select(buf[:m], buf[m + 1:], m - take)
        above = 0
        for i in range(hi - lo):
            if r_valid[i] and np.isfinite(r_x[i]):
                above += np.int64(r_x[i] > t)
        ties = take - above  # how many elements equal to t are taken, earliest first
        for i in range(hi - lo):
            if r_valid[i] and np.isfinite(r_x[i]):
                v = r_x[i]
                if v > t:
                    r_out[i] = True
                elif v == t and ties > 0:
                    r_out[i] = True
                    ties -= 1


@nb.njit(cache=True)
def _heapsort(a, lo, hi):  # pragma: no cover - compiled
    """Sort ``a[lo:hi + 1]`` ascending in place (heapsort: O(m log m), no allocation, which
    the ahead-of-time runtime would not provide for ``np.sort``)."""
    n = hi - lo + 1
    for start in range(n // 2 - 1, -1, -1):
        _sift_down(a, lo, start, n)
    for end in range(n - 1, 0, -1):
        v = a[lo]
        a[lo] = a[lo + end]
        a[lo + end] = v
        _sift_down(a, lo, 0, end)


@nb.njit(cache=True, inline="always")
def _sift_down(a, lo, root, n):  # pragma: no cover - compiled
    """Max-heap sift of ``a[lo + root]`` within the heap ``a[lo:lo + n]``."""
    while True:
        child = 2 * root + 1
        if child >= n:
            return
        if child + 1 < n and a[lo + child + 1] > a[lo + child]:
            child += 1
        if not a[lo + child] > a[lo + root]:
            return
        v = a[lo + root]
        a[lo + root] = a[lo + child]
        a[lo + child] = v
        root = child


@nb.njit(cache=True)
def _select(a, scratch, kth, max_rounds=-1):  # pragma: no cover - compiled
    """The ``kth`` smallest value of ``a`` (finite floats; 0-based), with ``scratch`` (as long
    as ``a``); both are overwritten. Quickselect with a median-of-three pivot and a three-way
    partition done out of place and without branches: each value is written to the front of
    the other buffer (kept when below the pivot) and to its back (kept when above), so a
    round costs two stores per value and no mispredicted branch (the in-place version's
    branches cost ~2.5x on random data); values equal to the pivot end the search. After more
    rounds than a good pivot sequence needs (an adversarial order), the rest is heap-sorted
    instead, so the worst case is O(m log m) (``max_rounds``, default 2 log2(m) + 8, is there
    for tests of that path). The value is what ``np.partition(a, kth)[kth]`` gives (a selection
    returns the value, whichever algorithm finds it)."""
    n = a.shape[0]
    src = a
    dst = scratch
    rounds = 0
    limit = max_rounds
    if limit < 0:
        limit = 8
        size = n
        while size > 1:
            size >>= 1
            limit += 2
    while n > 1:
        rounds += 1
        if rounds > limit:
            _heapsort(src, 0, n - 1)
            return src[kth]
        x, y, z = src[0], src[n >> 1], src[n - 1]
        pivot = max(min(x, y), min(max(x, y), z))  # the median of the three
        below = 0  # dst[:below] < pivot, dst[n - above:n] > pivot
        above = 0
        for i in range(n):
            v = src[i]
            dst[below] = v
            below += np.int64(v < pivot)
            dst[n - 1 - above] = v
            above += np.int64(v > pivot)
        if kth < below:
            src, dst = dst[:below], src[:below]
            n = below
        elif kth >= n - above:
            kth -= n - above
            src, dst = dst[n - above:n], src[:above]
            n = above
        else:
            return pivot
    return src[0]


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


# --------------------------------------------------------------------------- fused family passes
# One kernel per tick family computes, per stock (one thread, element order), every reduction
# the family's built-in factors need, streaming the stock's contiguous slice of each column once
# (twice for the corrected two-pass moments: the second pass reads a slice that the first just
# brought into cache). Each accumulator sees exactly the additions, in exactly the order, of the
# primitive it replaces (seg_moments, seg_corr, seg_group_sum, seg_bin_sum, the masks and flag
# codes of fbgpu.factors.context), so the results are the same bits; the final steps are the
# shared _finish_moments / _finish_corr. Callers: fbgpu.engine.segments (CpuSegmentOps).


@nb.njit(cache=True, inline="always")
def _selected_first_pass(fv, m, n, tot, mn, mx):  # pragma: no cover - compiled
    """One value into a masked count, sum, min and max, by selects (see "Selects in the order
    pass" above): the bits of the weighted form ``n + m``, ``tot + fv w``, ``min(mn, fv w +
    (1 - w) _BIG)``, ``max(mx, fv w - (1 - w) _BIG)``."""
    return (n + np.int64(m), tot + (fv if m else 0.0), min(mn, (fv + 0.0) if m else _BIG),
            max(mx, (fv - 0.0) if m else -_BIG))


@nb.njit(cache=True, inline="always")
def _selected_central_pass(fv, m, mean0, a1, a2, a3, a4):  # pragma: no cover - compiled
    """One value into the masked central power sums ``sum d^k``, k = 1..4, ``d = fv - mean0``
    where ``m`` else an exact 0: the bits of the weighted ``d = fv w - mean0 w``."""
    d = (fv - mean0) if m else 0.0
    d2 = d * d
    return a1 + d, a2 + d2, a3 + d2 * d, a4 + d2 * d2


@nb.njit(cache=True, parallel=True)
def fused_order_stats(offsets, ts, side, volume, price, order_type, session_lo, session_hi,
                      early_lo, early_hi, limit_type, n_out, mom_out, corr_out,
                      deg_out):  # pragma: no cover - compiled
    """The order family in one pass per stock.

    In-session orders (``session_lo <= ts <= session_hi``) feed three masked volume moments,
    set k of ``n_out[k]`` / ``mom_out[k] = (mean, m2, m3, m4, min, max)``: k = 0 buy
    (side +1), 1 sell (side -1), 2 early (``early_lo <= ts < early_hi``); and the co-moments
    of (volume, price) over buy orders of type ``limit_type``: ``n_out[3]``, ``corr_out =
    (cov, var_x, var_y)``, ``deg_out`` (1 when a side is exactly constant or no pair).
    Outputs are ``[4, S]`` int64, ``[3, 6, S]``, ``[3, S]`` float64 and ``[S]`` uint8; NaN
    statistics where the count is 0.
    """
    S = offsets.shape[0] - 1
    for s in nb.prange(S):
        lo = offsets[s]
        hi = offsets[s + 1]
        # the run indexed from 0: no wraparound selects (see _group_ids)
        r_ts = ts[lo:hi]
        r_side = side[lo:hi]
        r_volume = volume[lo:hi]
        r_price = price[lo:hi]
        r_type = order_type[lo:hi]
        nb_ = 0
        ns = 0
        ne = 0
        nc = 0
        tb = 0.0
        tsl = 0.0
        te = 0.0
        tx = 0.0
        ty = 0.0
        bmn = np.inf
        bmx = -np.inf
        smn = np.inf
        smx = -np.inf
        emn = np.inf
        emx = -np.inf
        xmn = np.inf
        xmx = -np.inf
        ymn = np.inf
        ymx = -np.inf
        for j in range(hi - lo):
            v = r_volume[j]
            if not np.isfinite(v):
                continue
            fv = np.float64(v)
            t = r_ts[j]
            sd = r_side[j]
            ses = (t >= session_lo) & (t <= session_hi)
            mb = ses & (sd == 1)
            ms = ses & (sd == -1)
            me = ses & (t >= early_lo) & (t < early_hi)
            nb_, tb, bmn, bmx = _selected_first_pass(fv, mb, nb_, tb, bmn, bmx)
            ns, tsl, smn, smx = _selected_first_pass(fv, ms, ns, tsl, smn, smx)
            ne, te, emn, emx = _selected_first_pass(fv, me, ne, te, emn, emx)
            p = r_price[j]
            # a non-finite price leaves the pair out: a select, like the masks (3% of orders).
            mc = mb & (r_type[j] == limit_type) & np.isfinite(p)
            nc, tx, xmn, xmx = _selected_first_pass(fv, mc, nc, tx, xmn, xmx)
            ty += p if mc else 0.0
            ymn = min(ymn, (p + 0.0) if mc else _BIG)
            ymx = max(ymx, (p - 0.0) if mc else -_BIG)
        n_out[0, s] = nb_
        n_out[1, s] = ns
        n_out[2, s] = ne
        n_out[3, s] = nc
        mb0 = tb / nb_ if nb_ > 0 else 0.0
        ms0 = tsl / ns if ns > 0 else 0.0
        me0 = te / ne if ne > 0 else 0.0
        mx0 = tx / nc if nc > 0 else 0.0
        my0 = ty / nc if nc > 0 else 0.0
        b1 = b2 = b3 = b4 = 0.0
        s1 = s2 = s3 = s4 = 0.0
        e1 = e2 = e3 = e4 = 0.0
        sx = sy = sxx = syy = sxy = 0.0
        for j in range(hi - lo):
            v = r_volume[j]
            if not np.isfinite(v):
                continue
            fv = np.float64(v)
            t = r_ts[j]
            sd = r_side[j]
            ses = (t >= session_lo) & (t <= session_hi)
            mb = ses & (sd == 1)
            b1, b2, b3, b4 = _selected_central_pass(fv, mb, mb0, b1, b2, b3, b4)
            s1, s2, s3, s4 = _selected_central_pass(fv, ses & (sd == -1), ms0, s1, s2, s3, s4)
            e1, e2, e3, e4 = _selected_central_pass(fv, ses & (t >= early_lo) & (t < early_hi),
                                                    me0, e1, e2, e3, e4)
            p = r_price[j]
            mc = mb & (r_type[j] == limit_type) & np.isfinite(p)
            dx = (fv - mx0) if mc else 0.0
            dy = (p - my0) if mc else 0.0
            sx += dx
            sy += dy
            sxx += dx * dx
            syy += dy * dy
            sxy += dx * dy
        _put_moments(mom_out, 0, s, nb_, mb0, b1, b2, b3, b4, bmn, bmx)
        _put_moments(mom_out, 1, s, ns, ms0, s1, s2, s3, s4, smn, smx)
        _put_moments(mom_out, 2, s, ne, me0, e1, e2, e3, e4, emn, emx)
        if nc > 0:
            corr_out[0, s], corr_out[1, s], corr_out[2, s] = _finish_corr(nc, sx, sy, sxx, syy,
                                                                          sxy)
            deg_out[s] = 1 if (xmn == xmx or ymn == ymx) else 0
        else:
            corr_out[0, s] = corr_out[1, s] = corr_out[2, s] = np.nan
            deg_out[s] = 1


@nb.njit(cache=True, inline="always")
def _put_moments(mom_out, k, s, n, mean0, s1, s2, s3, s4, mn, mx):  # pragma: no cover
    """Write set k's moments of segment s (NaN when n == 0), as :func:`seg_moments` does."""
    if n == 0:
        for j in range(6):
            mom_out[k, j, s] = np.nan
        return
    mom_out[k, 0, s], mom_out[k, 1, s], mom_out[k, 2, s], mom_out[k, 3, s] = _finish_moments(
        n, mean0, s1, s2, s3, s4)
    mom_out[k, 4, s] = mn
    mom_out[k, 5, s] = mx


@nb.njit(cache=True, inline="always")
def _totals_pass(v, n, tot, mn, mx):  # pragma: no cover - compiled
    """One group total's step of the first moments pass (count, sum, min, max of the finite
    totals; the masked kernel's expressions at w = 1, so the bits of :func:`seg_moments`)."""
    if np.isfinite(v):
        n += 1
        tot += v * 1.0
        mn = min(mn, v + 0.0)  # the masked kernel's v * w + (1 - w) * _BIG at w = 1
        mx = max(mx, v - 0.0)
    return n, tot, mn, mx


@nb.njit(cache=True, inline="always")
def _central_pass(v, mean0, s1, s2, s3, s4):  # pragma: no cover - compiled
    """One group total's step of the second pass: central sums about the first pass's mean."""
    if np.isfinite(v):
        d = v - mean0
        d2 = d * d
        s1 += d
        s2 += d2
        s3 += d2 * d
        s4 += d2 * d2
    return s1, s2, s3, s4


@nb.njit(cache=True)
def _pair_group_moments(a_sums, n_a, b_sums, n_b, n_out, mom_out, s):  # pragma: no cover
    """Moments of two sets of group totals, ``a_sums[:n_a]`` as set 0 and ``b_sums[:n_b]`` as
    set 1 of segment s: the bits of ``seg_moments`` over each set's totals in order.

    Both sets go through one loop while both have totals left: each set's sums still take its
    terms in order (same bits as one set at a time), but the two sets' add chains are
    independent, so the core overlaps them (one set's passes are bound by the latency of a
    sequential add: ~20% of the whole trade-order kernel)."""
    both = min(n_a, n_b)
    na = nb_ = 0
    ta = tb = 0.0
    amn = bmn = np.inf
    amx = bmx = -np.inf
    for g in range(both):
        na, ta, amn, amx = _totals_pass(a_sums[g], na, ta, amn, amx)
        nb_, tb, bmn, bmx = _totals_pass(b_sums[g], nb_, tb, bmn, bmx)
    for g in range(both, n_a):
        na, ta, amn, amx = _totals_pass(a_sums[g], na, ta, amn, amx)
    for g in range(both, n_b):
        nb_, tb, bmn, bmx = _totals_pass(b_sums[g], nb_, tb, bmn, bmx)
    n_out[0, s] = na
    n_out[1, s] = nb_
    ma = ta / na if na > 0 else 0.0
    mb = tb / nb_ if nb_ > 0 else 0.0
    a1 = a2 = a3 = a4 = 0.0
    b1 = b2 = b3 = b4 = 0.0
    for g in range(both):
        a1, a2, a3, a4 = _central_pass(a_sums[g], ma, a1, a2, a3, a4)
        b1, b2, b3, b4 = _central_pass(b_sums[g], mb, b1, b2, b3, b4)
    for g in range(both, n_a):
        a1, a2, a3, a4 = _central_pass(a_sums[g], ma, a1, a2, a3, a4)
    for g in range(both, n_b):
        b1, b2, b3, b4 = _central_pass(b_sums[g], mb, b1, b2, b3, b4)
    _put_moments(mom_out, 0, s, na, ma, a1, a2, a3, a4, amn, amx)
    _put_moments(mom_out, 1, s, nb_, mb, b1, b2, b3, b4, bmn, bmx)


@nb.njit(cache=True)
def _pair_group_ids(lo, hi, a_keys, b_keys, x, a_gid, b_gid, a_sums,
                    b_sums):  # pragma: no cover - compiled
    """Group the run ``lo:hi`` by ``a_keys`` and, separately, by ``b_keys``: ``a_gid[j]``
    (int32, j = i - lo; runs are shorter than 2**31, checked by the caller) is element i's
    a-group, numbered 0, 1, ... in order of first appearance, and ``a_sums[g]`` (zeroed by the
    caller) accumulates ``x`` over a-group g in element order; likewise for b. Returns the two
    group counts. The bits of :func:`_group_ids` on each key.

    When both keys are dense (:data:`DENSE_SPAN_FACTOR`), one loop takes both: the two
    direct-address tables and the two group sums are independent, so each element's two
    read-modify-write chains (consecutive trades often share an order) overlap, and ``x`` is
    read once; table slots are int32 (half the scratch traffic). Otherwise each key goes
    through :func:`_group_ids`."""
    m = hi - lo
    ra = a_keys[lo:hi]  # indexed from 0: no wraparound selects (see _group_ids)
    rb = b_keys[lo:hi]
    rx = x[lo:hi]
    amin = amax = ra[0]
    bmin = bmax = rb[0]
    for j in range(1, m):
        amin = min(amin, ra[j])
        amax = max(amax, ra[j])
        bmin = min(bmin, rb[j])
        bmax = max(bmax, rb[j])
    a_span = amax - amin  # wraps negative for spans >= 2**63: "not dense"
    b_span = bmax - bmin
    dense = DENSE_SPAN_FACTOR * m + DENSE_SPAN_SLACK
    if not (0 <= a_span < dense and 0 <= b_span < dense):
        return (_group_ids(lo, hi, a_keys, x, a_gid, a_sums),
                _group_ids(lo, hi, b_keys, x, b_gid, b_sums))
    a_slot = np.full(a_span + 1, -1, dtype=np.int32)
    b_slot = np.full(b_span + 1, -1, dtype=np.int32)
    n_a = np.int32(0)
    n_b = np.int32(0)
    for j in range(m):
        # branch-free, as in _group_ids: about half of the trades start a new order
        v = rx[j]
        ka = np.uint64(ra[j] - amin)
        kb = np.uint64(rb[j] - bmin)
        ga = a_slot[ka]
        gb = b_slot[kb]
        new_a = ga < 0
        new_b = gb < 0
        ga = n_a if new_a else ga
        gb = n_b if new_b else gb
        a_slot[ka] = ga
        b_slot[kb] = gb
        n_a += np.int32(new_a)
        n_b += np.int32(new_b)
        a_gid[j] = ga
        b_gid[j] = gb
        a_sums[np.uint64(ga)] += v
        b_sums[np.uint64(gb)] += v
    return np.int64(n_a), np.int64(n_b)


@nb.njit(cache=True)
def _stock_orders(lo, hi, buy_id, sell_id, amount, n_out, mom_out, s):  # pragma: no cover
    """Stock s's orders (its trades ``lo:hi``): the group ids and sums of both sides
    (:func:`_pair_group_ids`) and their moments, set 0 buy and 1 sell of ``n_out``,
    ``mom_out`` (n = 0 and NaN for a stock without trades). Returns ``(buy_gid, sell_gid,
    buy_sums, sell_sums)``."""
    m = hi - lo
    buy_gid = np.empty(m, dtype=np.int32)
    sell_gid = np.empty(m, dtype=np.int32)
    buy_sums = np.zeros(m, dtype=np.float64)
    sell_sums = np.zeros(m, dtype=np.float64)
    if m == 0:
        for k in range(2):
            n_out[k, s] = 0
            for j in range(6):
                mom_out[k, j, s] = np.nan
        return buy_gid, sell_gid, buy_sums, sell_sums
    n_buy, n_sell = _pair_group_ids(lo, hi, buy_id, sell_id, amount, buy_gid, sell_gid,
                                    buy_sums, sell_sums)
    _pair_group_moments(buy_sums, n_buy, sell_sums, n_sell, n_out, mom_out, s)
    return buy_gid, sell_gid, buy_sums, sell_sums


@nb.njit(cache=True, parallel=True)
def fused_trade_orders(offsets, buy_id, sell_id, amount, buy_tot, sell_tot, n_out,
                       mom_out):  # pragma: no cover - compiled
    """Order reconstruction of the trade family in one pass per stock: per trade, the amount
    of its buy order (``buy_tot``, the sum over the stock-day's trades with its
    ``buy_id``, in element order) and of its sell order (``sell_tot``); per stock, the moments
    of the buy orders' and of the sell orders' amounts, one value per order in order of first
    appearance (set 0 buy, 1 sell of ``n_out [2, S]``, ``mom_out [2, 6, S]``)."""
    S = offsets.shape[0] - 1
    for s in nb.prange(S):
        lo = offsets[s]
        hi = offsets[s + 1]
        buy_gid, sell_gid, buy_sums, sell_sums = _stock_orders(lo, hi, buy_id, sell_id, amount,
                                                               n_out, mom_out, s)
        run_buy_tot = buy_tot[lo:hi]
        run_sell_tot = sell_tot[lo:hi]
        for j in range(hi - lo):
            run_buy_tot[j] = buy_sums[np.uint64(buy_gid[j])]
            run_sell_tot[j] = sell_sums[np.uint64(sell_gid[j])]


@nb.njit(cache=True, inline="always")
def _flag_code(t, sd, big_buy, big_sell, early_lo, early_hi):  # pragma: no cover - compiled
    """A trade's flag code ``early | buy << 1 | sell << 2 | big_buy << 3 | big_sell << 4``
    (early: ``early_lo <= t < early_hi``; buy/sell: side +1/-1), the index of its bins.
    Scalars only: an array handed to a per-element helper costs a reference count call per
    element in the ahead-of-time build (3x the kernel's time)."""
    return np.uint64(np.int64((t >= early_lo) & (t < early_hi))
                     | (np.int64(sd == 1) << 1) | (np.int64(sd == -1) << 2)
                     | (np.int64(big_buy) << 3) | (np.int64(big_sell) << 4))


#: The group ids :func:`_bin_run` does not read when its totals are per trade.
_NO_GROUPS = np.zeros(1, dtype=np.int32)


@nb.njit(cache=True)
def _bin_run(lo, hi, s, ts, side, amount, log_price, buy_total, buy_gid, sell_total, sell_gid,
             by_group, t_s, a_s, early_lo, early_hi, amount_bins, dlogp_bins,
             nab):  # pragma: no cover - compiled
    """Stock s's trades ``lo:hi`` into its bins (:func:`fused_trade_bins`): trade j's buy
    order is big when its total ``>= t_s`` or ``a_s``, the total being
    ``buy_total[buy_gid[j]]`` (the stock's group sums) when ``by_group``, else
    ``buy_total[j]`` (the stock's per-trade totals); likewise sell. Then
    ``amount_bins[s, code] += amount``, ``dlogp_bins[s, code] += dlogp`` (log price
    difference, 0 for the first trade) and ``nab[s, minute(t)] += amount * side``, finite
    values only. One call per stock (``by_group`` is the same for the whole loop, which the
    compiler takes out of it)."""
    # The stock's run as its own arrays, indexed from 0 (see _group_ids: no wraparound
    # selects); the bins' indices are unsigned for the same reason (never negative).
    r_ts = ts[lo:hi]
    r_side = side[lo:hi]
    r_amount = amount[lo:hi]
    r_lp = log_price[lo:hi]
    a_bins = amount_bins[s]
    d_bins = dlogp_bins[s]
    n_row = nab[s]
    for j in range(r_ts.shape[0]):
        t = r_ts[j]
        sd = r_side[j]
        a = r_amount[j]
        jb = np.uint64(buy_gid[j]) if by_group else np.uint64(j)
        js = np.uint64(sell_gid[j]) if by_group else np.uint64(j)
        code = _flag_code(t, sd, (buy_total[jb] >= t_s) | a_s, (sell_total[js] >= t_s) | a_s,
                          early_lo, early_hi)
        if np.isfinite(a):
            a_bins[code] += a
        d = 0.0
        if j > 0:
            d = r_lp[j] - r_lp[j - 1]
        if np.isfinite(d):
            d_bins[code] += d
        sg = a * np.float64(sd)
        if np.isfinite(sg):
            n_row[np.uint64(minute_of_ts_scalar(t))] += sg


@nb.njit(cache=True, parallel=True)
def fused_trade_bins(offsets, ts, side, amount, log_price, buy_tot, sell_tot, thr, always,
                     early_lo, early_hi, amount_bins, dlogp_bins,
                     nab):  # pragma: no cover - compiled
    """The trade family's flag-code and minute histograms in one pass per stock.

    Per trade i of stock s: ``dlogp = log_price[i] - log_price[i-1]`` (0 for the stock-day's
    first trade); the flag code ``early | buy << 1 | sell << 2 | big_buy << 3 | big_sell << 4``
    (early: ``early_lo <= ts < early_hi``; buy/sell: side +1/-1; big_buy: ``buy_tot[i] >=
    thr[s]`` or ``always[s]``, likewise big_sell); then ``amount_bins[s, code] += amount``,
    ``dlogp_bins[s, code] += dlogp`` and ``nab[s, minute(ts)] += amount * side`` (finite values
    only; outputs zeroed by the caller).
    """
    S = offsets.shape[0] - 1
    for s in nb.prange(S):
        lo = offsets[s]
        hi = offsets[s + 1]
        _bin_run(lo, hi, s, ts, side, amount, log_price, buy_tot[lo:hi], _NO_GROUPS,
                 sell_tot[lo:hi], _NO_GROUPS, False, thr[s], always[s], early_lo, early_hi,
                 amount_bins, dlogp_bins, nab)


@nb.njit(cache=True, inline="always")
def _nan_skipping_extreme(a, b, lower):  # pragma: no cover - compiled
    """``np.fmin(a, b)`` (``lower``) or ``np.fmax(a, b)`` of two floats: the other where one
    is NaN."""
    if a != a:
        return b
    if b != b:
        return a
    return min(a, b) if lower else max(a, b)


_pooled_mean_var = nb.njit(cache=True, inline="always")(pooled_mean_var)


@nb.njit(cache=True, inline="always")
def _big_order_cut(n_out, mom_out, s, rule):  # pragma: no cover - compiled
    """Stock s's big-order ``(threshold, all_equal)`` from its buy and sell orders' moments
    (sets 0 and 1 of ``n_out``, ``mom_out``), elementwise what
    :func:`fbgpu.factors.context.big_order_threshold` computes for every stock:
    ``rule = [fixed, k, notional]``; fixed: ``(notional, False)``; else ``mean + k std`` of the
    pooled orders (:func:`fbgpu.engine.pooled.pooled_mean_var`, std of ``max(var, 0)``, NaN
    kept) and whether every order amount is the same (``fmin`` of the minima == ``fmax`` of
    the maxima)."""
    if rule[0] != 0.0:
        return rule[2], False
    nb_ = np.float64(n_out[0, s])
    ns = np.float64(n_out[1, s])
    mean, var = _pooled_mean_var(nb_, mom_out[0, 0, s] if nb_ > 0 else 0.0,
                                 mom_out[0, 1, s] if nb_ > 0 else 0.0, ns,
                                 mom_out[1, 0, s] if ns > 0 else 0.0,
                                 mom_out[1, 1, s] if ns > 0 else 0.0)
    # np.maximum(var, 0.0): NaN stays NaN
    std = np.sqrt(var if (var >= 0.0 or var != var) else 0.0)
    lo = _nan_skipping_extreme(mom_out[0, 4, s], mom_out[1, 4, s], True)
    hi = _nan_skipping_extreme(mom_out[0, 5, s], mom_out[1, 5, s], False)
    return mean + rule[1] * std, lo == hi


@nb.njit(cache=True, parallel=True)
def fused_trade_pass(offsets, buy_id, sell_id, amount, ts, side, log_price, rule, early_lo,
                     early_hi, n_out, mom_out, amount_bins, dlogp_bins,
                     nab):  # pragma: no cover - compiled
    """The whole trade family in one pass per stock, its run kept in cache between the
    steps: the buy and sell orders (:func:`fused_trade_orders`' moments into ``n_out [2, S]``,
    ``mom_out [2, 6, S]``), the stock's big-order cut-off (:func:`_big_order_cut` of ``rule``),
    then :func:`fused_trade_bins`' histograms (outputs zeroed by the caller), each trade's
    order totals read from the stock's own group sums instead of per-trade arrays. The bits
    of those two kernels with the cut-off computed in between."""
    S = offsets.shape[0] - 1
    for s in nb.prange(S):
        lo = offsets[s]
        hi = offsets[s + 1]
        buy_gid, sell_gid, buy_sums, sell_sums = _stock_orders(lo, hi, buy_id, sell_id, amount,
                                                               n_out, mom_out, s)
        if hi == lo:
            continue
        t_s, a_s = _big_order_cut(n_out, mom_out, s, rule)
        _bin_run(lo, hi, s, ts, side, amount, log_price, buy_sums, buy_gid, sell_sums, sell_gid,
                 True, t_s, a_s, early_lo, early_hi, amount_bins, dlogp_bins, nab)


@nb.njit(cache=True, inline="always")
def _row_corr(x, xo, y, yo, L):  # pragma: no cover - compiled
    """:func:`seg_corr` of the pairs ``(x[xo + k], y[yo + k])``, k < L, without a mask (its
    masked-weight expressions at w = 1, so the same bits): ``(n, cov, var_x, var_y, deg)``."""
    n = 0
    tx = 0.0
    ty = 0.0
    xmn = np.inf
    xmx = -np.inf
    ymn = np.inf
    ymx = -np.inf
    for k in range(L):
        a = x[xo + k]
        b = y[yo + k]
        if not (np.isfinite(a) & np.isfinite(b)):
            continue
        n += 1
        aw = a * 1.0
        bw = b * 1.0
        tx += aw
        ty += bw
        xmn = min(xmn, aw + 0.0)
        xmx = max(xmx, aw - 0.0)
        ymn = min(ymn, bw + 0.0)
        ymx = max(ymx, bw - 0.0)
    if n == 0:
        return 0, np.nan, np.nan, np.nan, 1
    mx0 = tx / n
    my0 = ty / n
    sx = 0.0
    sy = 0.0
    sxx = 0.0
    syy = 0.0
    sxy = 0.0
    for k in range(L):
        a = x[xo + k]
        b = y[yo + k]
        if not (np.isfinite(a) & np.isfinite(b)):
            continue
        dx = a * 1.0 - mx0 * 1.0
        dy = b * 1.0 - my0 * 1.0
        sx += dx
        sy += dy
        sxx += dx * dx
        syy += dy * dy
        sxy += dx * dy
    cov, vx, vy = _finish_corr(n, sx, sy, sxx, syy, sxy)
    return n, cov, vx, vy, 1 if (xmn == xmx or ymn == ymx) else 0


@nb.njit(cache=True, parallel=True)
def fused_minute_stats(open_, close, volume, amount, num_trades, ret, amplitude, late_lo,
                       early_hi, bucket, n_out, mom_out, corr_out, deg_out, sums_out,
                       buckets_out):  # pragma: no cover - compiled
    """The minute family's row statistics in one pass per stock (rows of ``[S, L]`` bars).

    ``mom_out [6, S]`` / ``n_out[0]``: moments of ``ret[late_lo:]``; correlations, set j of
    ``n_out[1 + j]``, ``corr_out[j] = (cov, var_x, var_y)``, ``deg_out[j]``: 0 ``(ret_k,
    ret_{k-1})``, 1 ``(close_{k-1}, open_k)`` (k >= 1), 2 ``(volume, num_trades)``, 3 ``(volume,
    ret)`` over ``k < early_hi``, 4 ``(volume, amplitude)``; ``sums_out [6, S]``: sums of finite
    ``ret^2`` where ``ret < 0``, of ``ret^2``, of ``amount`` and ``num_trades`` where ``ret < 0``
    and over all k; ``buckets_out [S, L // bucket]``: volume per ``bucket`` bars.
    """
    S, L = ret.shape
    for s in nb.prange(S):
        r = ret[s]
        # late-window moments (seg_moments without a mask)
        n = 0
        tot = 0.0
        mn = np.inf
        mx = -np.inf
        for k in range(late_lo, L):
            v = r[k]
            if not np.isfinite(v):
                continue
            n += 1
            vw = v * 1.0
            tot += vw
            mn = min(mn, vw + 0.0)
            mx = max(mx, vw - 0.0)
        n_out[0, s] = n
        mean0 = tot / n if n > 0 else 0.0
        s1 = s2 = s3 = s4 = 0.0
        for k in range(late_lo, L):
            v = r[k]
            if not np.isfinite(v):
                continue
            d = v * 1.0 - mean0 * 1.0
            d2 = d * d
            s1 += d
            s2 += d2
            s3 += d2 * d
            s4 += d2 * d2
        if n > 0:
            mom_out[0, s], mom_out[1, s], mom_out[2, s], mom_out[3, s] = _finish_moments(
                n, mean0, s1, s2, s3, s4)
            mom_out[4, s] = mn
            mom_out[5, s] = mx
        else:
            for j in range(6):
                mom_out[j, s] = np.nan
        # the five correlations
        vol = volume[s]
        pairs = (
            _row_corr(r, 1, r, 0, L - 1),
            _row_corr(close[s], 0, open_[s], 1, L - 1),
            _row_corr(vol, 0, num_trades[s], 0, L),
            _row_corr(vol, 0, r, 0, early_hi),
            _row_corr(vol, 0, amplitude[s], 0, L),
        )
        for j in range(5):
            p = pairs[j]
            n_out[1 + j, s] = p[0]
            corr_out[j, 0, s] = p[1]
            corr_out[j, 1, s] = p[2]
            corr_out[j, 2, s] = p[3]
            deg_out[j, s] = p[4]
        # masked and plain sums (seg_sum: finite values, v * w)
        amt = amount[s]
        trd = num_trades[s]
        dv = 0.0
        av = 0.0
        da = 0.0
        aa = 0.0
        dt = 0.0
        at = 0.0
        for k in range(L):
            rk = r[k]
            w = np.float64(rk < 0)
            r2 = rk * rk
            if np.isfinite(r2):
                dv += r2 * w
                av += r2 * 1.0
            a = amt[k]
            if np.isfinite(a):
                da += a * w
                aa += a * 1.0
            t = np.float64(trd[k])
            if np.isfinite(t):
                dt += t * w
                at += t * 1.0
        sums_out[0, s] = dv
        sums_out[1, s] = av
        sums_out[2, s] = da
        sums_out[3, s] = dt
        sums_out[4, s] = aa
        sums_out[5, s] = at
        for b in range(L // bucket):
            t = 0.0
            for k in range(b * bucket, (b + 1) * bucket):
                v = np.float64(vol[k])
                if np.isfinite(v):
                    t += v * 1.0
            buckets_out[s, b] = t
