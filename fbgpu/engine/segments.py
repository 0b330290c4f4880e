"""Segmented primitives: reductions over stock-day runs, with one implementation per backend.

A day of ticks sorted by (stock, seq) is a flat array plus CSR ``offsets`` (``S + 1`` int64,
stock ``s`` owns ``offsets[s]:offsets[s+1]``). A dense ``[S, L]`` tensor (minute bars, a window
of them) is the same thing with ``offsets = L * arange(S + 1)``; :meth:`SegmentOps.rows` gives
those offsets. Every primitive returns one value per segment (or one per element for the
group-by and top-k selections):

=====================  =========================================================================
``sum``                count and sum of finite values (masked)
``moments``            n, mean, population central moments m2, m3, m4, min, max (masked)
``corr_stats``         n, covariance, variances over finite pairs, "a side is constant" flag
``bin_sum``            per-segment histogram of values by an integer bin (minute of a tick)
``group_sum``          group by an integer key inside each segment: the group total at each
                       element and a "first element of its group" flag (order reconstruction)
``topk_mask``          the k largest valid values per segment, ties to the earlier element
``threshold_mask``     per element: ``x >= thr[s]`` (or every element of segments flagged
                       ``always``), the cut-off given per segment (big-order flags)
=====================  =========================================================================

The statistics that factors use (skewness, excess kurtosis, correlation, ratios) are computed
*once*, in array-namespace code (:func:`skewness`, :func:`kurtosis`, :func:`correlation`,
:func:`ratio`), from these raw outputs, so the NaN rules (``min_obs``, exact-equality "variance
0") live in one place for both backends.

Backends: :class:`CpuSegmentOps` (numba ``prange`` kernels in :mod:`.cpu_kernels`) and
:class:`GpuSegmentOps` (numba.cuda kernels in :mod:`.cuda_kernels` plus array code in ``xp``,
which is cupy on a device and numpy under the CUDA simulator). :func:`segment_ops` picks one.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from fbgpu.engine import cpu_kernels
from fbgpu.engine.backend import Backend

Array = Any  # numpy.ndarray or cupy.ndarray


class SegmentError(ValueError):
    """Inputs of a segmented primitive are inconsistent (offsets vs. array lengths, shapes)."""


@dataclass(frozen=True)
class Moments:
    """Per-segment moments of the finite, masked-in values (population, i.e. divided by n).

    ``mean``, ``m2``, ``m3``, ``m4``, ``min``, ``max`` are NaN where ``n == 0``.
    """

    n: Array
    mean: Array
    m2: Array
    m3: Array
    m4: Array
    min: Array
    max: Array


@dataclass(frozen=True)
class CorrStats:
    """Per-segment co-moments over pairs where both values are finite (population).

    ``degenerate`` (uint8) is 1 when every x is exactly equal or every y is exactly equal (or no
    pair exists): the correlation is then undefined, whatever the float variances say.
    """

    n: Array
    cov: Array
    var_x: Array
    var_y: Array
    degenerate: Array


@contextlib.contextmanager
def quiet(xp: ModuleType) -> Iterator[None]:
    """Silence numpy's divide/invalid warnings (the NaN results are intended); no-op on cupy."""
    if xp is np:
        with np.errstate(divide="ignore", invalid="ignore"):
            yield
    else:
        yield


# --------------------------------------------------------------------------- shared statistics
def skewness(xp: ModuleType, m: Moments, min_obs: int) -> Array:
    """Skewness ``m3 / m2**1.5`` (= ``scipy.stats.skew(bias=True)``).

    NaN when fewer than ``min_obs`` finite values or when all values are exactly equal.
    """
    ok = (m.n >= min_obs) & (m.min < m.max) & (m.m2 > 0)
    with quiet(xp):
        val = m.m3 / xp.where(ok, m.m2, 1.0) ** 1.5
    return xp.where(ok, val, xp.nan)


def kurtosis(xp: ModuleType, m: Moments, min_obs: int) -> Array:
    """Excess kurtosis ``m4 / m2**2 - 3`` (= ``scipy.stats.kurtosis(fisher=True, bias=True)``).

    NaN when fewer than ``min_obs`` finite values or when all values are exactly equal.
    """
    ok = (m.n >= min_obs) & (m.min < m.max) & (m.m2 > 0)
    with quiet(xp):
        val = m.m4 / xp.where(ok, m.m2, 1.0) ** 2 - 3.0
    return xp.where(ok, val, xp.nan)


def correlation(xp: ModuleType, c: CorrStats, min_obs: int) -> Array:
    """Pearson correlation ``cov / sqrt(var_x * var_y)`` over finite pairs, clipped to [-1, 1].

    NaN when fewer than ``min_obs`` pairs, or when either side is exactly constant.
    """
    ok = (c.n >= min_obs) & (c.degenerate == 0) & (c.var_x > 0) & (c.var_y > 0)
    with quiet(xp):
        den = xp.sqrt(xp.where(ok, c.var_x * c.var_y, 1.0))
        val = xp.clip(c.cov / den, -1.0, 1.0)
    return xp.where(ok, val, xp.nan)


def ratio(xp: ModuleType, num: Array, den: Array) -> Array:
    """``num / den``, NaN exactly where ``den`` is 0 or not finite (no minimum count)."""
    ok = xp.isfinite(den) & (den != 0)
    with quiet(xp):
        val = num / xp.where(ok, den, 1.0)
    return xp.where(ok, val, xp.nan)


def segment_ids(xp: ModuleType, offsets: Array) -> Array:
    """The segment index of every element (``repeat(arange(S), diff(offsets))``), int64."""
    S = offsets.shape[0] - 1
    return xp.repeat(xp.arange(S, dtype=xp.int64), xp.diff(offsets))


def segment_starts_mask(xp: ModuleType, offsets: Array, n: int) -> Array:
    """Boolean ``[n]``: True at the first element of every non-empty segment."""
    out = xp.zeros(n, dtype=bool)
    starts = offsets[:-1][xp.diff(offsets) > 0]
    out[starts] = True
    return out


def check_offsets(offsets: np.ndarray, n: int, what: str = "array") -> None:
    """Raise :class:`SegmentError` unless ``offsets`` is a valid CSR over ``n`` elements."""
    if offsets.ndim != 1 or offsets.shape[0] < 1:
        raise SegmentError(f"offsets for {what} must be 1-D with S+1 >= 1 entries")
    if int(offsets[0]) != 0 or int(offsets[-1]) != n:
        raise SegmentError(
            f"offsets for {what} must start at 0 and end at its length {n}, "
            f"got {int(offsets[0])}..{int(offsets[-1])}"
        )
    if offsets.shape[0] > 1 and (np.diff(offsets) < 0).any():
        raise SegmentError(f"offsets for {what} decrease at index "
                           f"{int(np.flatnonzero(np.diff(offsets) < 0)[0])}")


# --------------------------------------------------------------------------- the interface
class SegmentOps:
    """Backend-independent front of the primitives: validation, dtype coercion, dense helpers."""

    name: str = "?"

    def __init__(self, xp: ModuleType) -> None:
        self.xp = xp

    # -- helpers
    def rows(self, n_rows: int, row_len: int) -> Array:
        """CSR offsets of a dense ``[n_rows, row_len]`` tensor flattened in C order."""
        return self.xp.arange(n_rows + 1, dtype=self.xp.int64) * row_len

    def _f64(self, x: Array) -> Array:
        return self.xp.ascontiguousarray(self.xp.asarray(x).reshape(-1), dtype=self.xp.float64)

    def _i64(self, x: Array) -> Array:
        return self.xp.ascontiguousarray(self.xp.asarray(x).reshape(-1), dtype=self.xp.int64)

    def _values(self, x: Array) -> Array:
        """Values of a reduction as the kernels take them (default: float64)."""
        return self._f64(x)

    def as_values(self, x: Array) -> Array:
        """``x`` as the reductions read it: float64 on the GPU; on the CPU integer and float64
        columns as they are (the kernels convert while reading). Contexts call it once per
        column that several reductions share, so nothing is converted twice."""
        return self._values(x)

    def _bins(self, x: Array) -> Array:
        """Bin indices of :meth:`bin_sum` as the kernels take them (default: int64)."""
        return self._i64(x)

    def _mask(self, mask: Array | None, n: int) -> tuple[Array, bool]:
        if mask is None:
            return self.xp.ones(1, dtype=bool), False
        m = self.xp.ascontiguousarray(self.xp.asarray(mask).reshape(-1), dtype=bool)
        if m.shape[0] != n:
            raise SegmentError(f"mask has {m.shape[0]} elements, values have {n}")
        return m, True

    def _check(self, offsets: Array, *arrays: Array) -> Array:
        offsets = self._i64(offsets)
        n = arrays[0].shape[0]
        for a in arrays[1:]:
            if a.shape[0] != n:
                raise SegmentError(f"arrays of different lengths: {n} and {a.shape[0]}")
        if isinstance(offsets, np.ndarray):
            # Device offsets are built on the host first and checked there by the caller; a
            # check here would cost a device->host copy per call.
            check_offsets(offsets, n)
        return offsets

    # -- primitives (backend kernels)
    def sum(self, offsets: Array, x: Array, mask: Array | None = None) -> tuple[Array, Array]:
        """Per segment: (count, sum) of the finite values where ``mask``."""
        x = self._values(x)
        offsets = self._check(offsets, x)
        m, use = self._mask(mask, x.shape[0])
        return self._sum(offsets, x, m, use)

    def moments(self, offsets: Array, x: Array, mask: Array | None = None) -> Moments:
        """Per segment :class:`Moments` of the finite values where ``mask``."""
        x = self._values(x)
        offsets = self._check(offsets, x)
        m, use = self._mask(mask, x.shape[0])
        return Moments(*self._moments(offsets, x, m, use))

    def corr_stats(
        self, offsets: Array, x: Array, y: Array, mask: Array | None = None
    ) -> CorrStats:
        """Per segment :class:`CorrStats` over pairs with both sides finite, where ``mask``."""
        x = self._values(x)
        y = self._values(y)
        offsets = self._check(offsets, x, y)
        m, use = self._mask(mask, x.shape[0])
        return CorrStats(*self._corr(offsets, x, y, m, use))

    def bin_sum(
        self, offsets: Array, bins: Array, x: Array, n_bins: int, mask: Array | None = None
    ) -> Array:
        """``[S, n_bins]``: per segment, the sum of finite ``x`` by ``bins`` (out-of-range bins
        are ignored)."""
        x = self._values(x)
        bins = self._bins(bins)
        offsets = self._check(offsets, x, bins)
        m, use = self._mask(mask, x.shape[0])
        return self._bin_sum(offsets, bins, x, m, use, int(n_bins))

    def group_sum(self, offsets: Array, keys: Array, x: Array) -> tuple[Array, Array]:
        """Group elements by ``keys`` inside each segment; sum ``x`` per group in element order.

        Returns ``(totals, first)``: ``totals[i]`` is the sum over i's group, ``first[i]`` marks
        exactly one element (the first) of every group.
        """
        x = self._f64(x)
        keys = self._i64(keys)
        offsets = self._check(offsets, keys, x)
        return self._group_sum(offsets, keys, x)

    def topk_mask(self, offsets: Array, x: Array, valid: Array, k: Array) -> Array:
        """Mark, per segment s, the ``k[s]`` valid finite elements with the largest ``x``.

        Ties are broken in favour of the earlier element; fewer are marked when fewer are valid.
        """
        x = self._f64(x)
        offsets = self._check(offsets, x)
        valid_m, _ = self._mask(valid, x.shape[0])
        k = self._i64(k)
        if k.shape[0] != offsets.shape[0] - 1:
            raise SegmentError(f"k has {k.shape[0]} entries for {offsets.shape[0] - 1} segments")
        return self._topk(offsets, x, valid_m, k)

    def threshold_mask(
        self, offsets: Array, x: Array, thr: Array, always: Array | None = None
    ) -> Array:
        """Per element i of segment s: ``x[i] >= thr[s]``, or True whenever ``always[s]``.

        ``thr`` (one cut-off per segment, float64) is compared exactly; NaN ``x`` or ``thr`` give
        False unless ``always``. Big-order flags use it: no per-element copy of the cut-offs.
        """
        x = self._f64(x)
        offsets = self._check(offsets, x)
        S = offsets.shape[0] - 1
        thr = self._f64(thr)
        if always is None:
            always = self.xp.zeros(S, dtype=bool)
        always = self.xp.ascontiguousarray(self.xp.asarray(always).reshape(-1), dtype=bool)
        if thr.shape[0] != S or always.shape[0] != S:
            raise SegmentError(f"thr/always have {thr.shape[0]}/{always.shape[0]} entries for "
                               f"{S} segments")
        return self._threshold(offsets, x, thr, always)

    # -- backend hooks
    def _sum(self, offsets, x, m, use):  # pragma: no cover - abstract
        raise NotImplementedError

    def _moments(self, offsets, x, m, use):  # pragma: no cover - abstract
        raise NotImplementedError

    def _corr(self, offsets, x, y, m, use):  # pragma: no cover - abstract
        raise NotImplementedError

    def _bin_sum(self, offsets, bins, x, m, use, n_bins):  # pragma: no cover - abstract
        raise NotImplementedError

    def _group_sum(self, offsets, keys, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def _topk(self, offsets, x, valid, k):  # pragma: no cover - abstract
        raise NotImplementedError

    def _threshold(self, offsets, x, thr, always):  # pragma: no cover - abstract
        raise NotImplementedError


#: Below this many elements a CPU kernel runs on one thread: waking the thread pool costs more
#: than the work (and much more on a loaded machine, where a parallel region waits for a core).
PARALLEL_MIN_ELEMENTS = 1 << 20


class CpuSegmentOps(SegmentOps):
    """numpy arrays, numba ``@njit(parallel=True)`` kernels (:mod:`.cpu_kernels`)."""

    name = "cpu"

    def __init__(self, parallel_min_elements: int = PARALLEL_MIN_ELEMENTS) -> None:
        super().__init__(np)
        self.parallel_min_elements = parallel_min_elements

    def _values(self, x: Array) -> Array:
        # The kernels are compiled per input dtype and convert each element to float64 as they
        # read it (exactly what astype does), so integer columns (order volume, bar volume and
        # trade counts) are reduced in place instead of through a float64 copy.
        a = np.asarray(x).reshape(-1)
        if a.dtype.kind in "iu" or a.dtype == np.float64:
            return np.ascontiguousarray(a)
        return self._f64(a)

    def _bins(self, x: Array) -> Array:
        a = np.asarray(x).reshape(-1)
        if a.dtype.kind in "iu":  # minute indices are int16, flag codes uint8: no int64 copy
            return np.ascontiguousarray(a)
        return self._i64(a)

    def _run(self, kernel: Any, n: int, *args: Any) -> Any:
        import numba

        if n >= self.parallel_min_elements:
            return kernel(*args)
        threads = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            return kernel(*args)
        finally:
            numba.set_num_threads(threads)

    def _sum(self, offsets, x, m, use):
        return self._run(cpu_kernels.seg_sum, x.shape[0], offsets, x, m, use)

    def _moments(self, offsets, x, m, use):
        return self._run(cpu_kernels.seg_moments, 2 * x.shape[0], offsets, x, m, use)

    def _corr(self, offsets, x, y, m, use):
        return self._run(cpu_kernels.seg_corr, 2 * x.shape[0], offsets, x, y, m, use)

    def _bin_sum(self, offsets, bins, x, m, use, n_bins):
        return self._run(cpu_kernels.seg_bin_sum, x.shape[0], offsets, bins, x, m, use, n_bins)

    # Per-element outputs are allocated here, by numpy: it asks the kernel for transparent huge
    # pages on large arrays, so first touching them costs a fraction of what the 4 KiB page
    # faults of an allocation inside the compiled kernel cost (~2x the whole group-by on a VM).
    def _group_sum(self, offsets, keys, x):
        totals = np.empty(x.shape[0], dtype=np.float64)
        first = np.empty(x.shape[0], dtype=bool)
        # Grouping costs several times a plain pass: parallel from a quarter of the size.
        self._run(cpu_kernels.seg_group_sum, 4 * x.shape[0], offsets, keys, x, totals, first)
        return totals, first

    def _topk(self, offsets, x, valid, k):
        out = np.empty(x.shape[0], dtype=bool)
        self._run(cpu_kernels.seg_topk_mask, 4 * x.shape[0], offsets, x, valid, k, out)
        return out

    def _threshold(self, offsets, x, thr, always):
        out = np.empty(x.shape[0], dtype=bool)
        self._run(cpu_kernels.seg_threshold_mask, x.shape[0], offsets, x, thr, always, out)
        return out


class GpuSegmentOps(SegmentOps):
    """numba.cuda kernels (:mod:`.cuda_kernels`) launched on ``xp`` arrays.

    ``xp`` is cupy on a real device (kernels read cupy memory through the CUDA array interface)
    and numpy under the CUDA simulator, so the same code path is testable without a GPU.
    """

    name = "gpu"

    def __init__(self, xp: ModuleType) -> None:
        super().__init__(xp)
        from fbgpu.engine import cuda_kernels  # imports numba.cuda: only on the GPU path

        self._k = cuda_kernels

    def _launch(self, name: str, grid: int, *args: Any) -> None:
        if grid <= 0:
            return
        # The simulator copies every host array back after a launch, which fails on read-only
        # inputs (zero-copy Arrow buffers); on a device the arguments are cupy arrays.
        args = tuple(
            a.copy() if isinstance(a, np.ndarray) and not a.flags.writeable else a for a in args
        )
        with warnings.catch_warnings():
            # Small grids (tests, small universes) trigger an under-utilisation warning.
            warnings.simplefilter("ignore")
            self._k.kernel(name)[grid, self._k.BLOCK](*args)

    def _sum(self, offsets, x, m, use):
        xp = self.xp
        S = offsets.shape[0] - 1
        n = xp.zeros(S, dtype=xp.int64)
        tot = xp.zeros(S, dtype=xp.float64)
        self._launch("seg_sum", S, offsets, x, m, use, n, tot)
        return n, tot

    def _moments(self, offsets, x, m, use):
        xp = self.xp
        S = offsets.shape[0] - 1
        n = xp.zeros(S, dtype=xp.int64)
        outs = [xp.full(S, xp.nan) for _ in range(6)]
        self._launch("seg_moments", S, offsets, x, m, use, n, *outs)
        return (n, *outs)

    def _corr(self, offsets, x, y, m, use):
        xp = self.xp
        S = offsets.shape[0] - 1
        n = xp.zeros(S, dtype=xp.int64)
        outs = [xp.full(S, xp.nan) for _ in range(3)]
        deg = xp.ones(S, dtype=xp.uint8)
        self._launch("seg_corr", S, offsets, x, y, m, use, n, *outs, deg)
        return (n, *outs, deg)

    def _bin_sum(self, offsets, bins, x, m, use, n_bins):
        xp = self.xp
        S = offsets.shape[0] - 1
        out = xp.zeros((S, n_bins), dtype=xp.float64)
        self._launch("seg_bin_sum", S, offsets, bins, x, m, use, out)
        return out

    def _group_sum(self, offsets, keys, x):
        xp = self.xp
        n = keys.shape[0]
        totals = xp.empty(n, dtype=xp.float64)
        first = xp.zeros(n, dtype=bool)
        if n == 0:
            return totals, first
        seg = segment_ids(xp, offsets)
        idx = xp.arange(n, dtype=xp.int64)
        # Sort by (segment, key, position): a group is a run, its elements in element order.
        order = xp.ascontiguousarray(xp.lexsort(xp.stack([idx, keys, seg])), dtype=xp.int64)
        ks = keys[order]
        ss = seg[order]
        new = xp.empty(n, dtype=bool)
        new[0] = True
        new[1:] = (ks[1:] != ks[:-1]) | (ss[1:] != ss[:-1])
        starts = xp.flatnonzero(new).astype(xp.int64)
        group_offsets = xp.concatenate([starts, xp.asarray([n], dtype=xp.int64)])
        G = starts.shape[0]
        block = self._k.BLOCK
        # One thread per group (not one block per segment): groups are short runs.
        self._launch("group_total", (G + block - 1) // block, order, group_offsets, x, totals,
                     first)
        return totals, first

    def _topk(self, offsets, x, valid, k):
        xp = self.xp
        n = x.shape[0]
        out = xp.zeros(n, dtype=bool)
        if n == 0:
            return out
        ok = valid & xp.isfinite(x)
        seg = segment_ids(xp, offsets)
        idx = xp.arange(n, dtype=xp.float64)
        neg = xp.where(ok, -x, 0.0)
        # Sort by (segment, valid first, x descending, position): rank within segment = position
        # in this order minus the segment start.
        keys = xp.stack([idx, neg, (~ok).astype(xp.float64), seg.astype(xp.float64)])
        order = xp.lexsort(keys)
        rank = xp.arange(n, dtype=xp.int64) - offsets[:-1][seg[order]]
        out[order] = ok[order] & (rank < k[seg[order]])
        return out

    def _threshold(self, offsets, x, thr, always):
        out = self.xp.zeros(x.shape[0], dtype=bool)
        self._launch("seg_threshold_mask", offsets.shape[0] - 1, offsets, x, thr, always, out)
        return out


def segment_ops(backend: Backend | str) -> SegmentOps:
    """The primitives for ``backend`` (a :class:`Backend`, or "cpu"/"gpu"/"auto")."""
    from fbgpu.engine.backend import get_backend

    b = get_backend(backend)
    if b.name == "gpu":
        return GpuSegmentOps(b.xp)
    return CpuSegmentOps()
