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

Fused family passes (:meth:`SegmentOps.order_family_stats`, :meth:`~SegmentOps.trade_order_stats`,
:meth:`~SegmentOps.trade_flag_bins`) compute everything a tick family's built-in factors need in
one kernel per stock, with the bits of the primitives they replace; backends with
``fused_passes`` (the CPU's numba kernels, the GPU's CUDA C kernels) implement them, the others
fall back to the primitives, chosen by
:func:`fused_enabled` (docs/engine.md, "Fused family passes").

The statistics that factors use (skewness, excess kurtosis, correlation, ratios) are computed
*once*, in array-namespace code (:func:`skewness`, :func:`kurtosis`, :func:`correlation`,
:func:`ratio`), from these raw outputs, so the NaN rules (``min_obs``, exact-equality "variance
0") live in one place for both backends.

Backends: :class:`CpuSegmentOps` (numba ``prange`` kernels in :mod:`.cpu_kernels`) and
:class:`GpuSegmentOps` (the CUDA C kernels of ``kernels/``, :mod:`.cuda_c`, plus array code in
``xp``, which is cupy on a device and numpy under the host emulation of the kernels).
:func:`segment_ops` picks one.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from fbgpu.engine.backend import Backend, index_to_device


@functools.cache
def _cpu_kernels() -> ModuleType:
    """:mod:`.cpu_kernels`, imported on the first CPU kernel call: importing numba costs
    ~0.3 s, which commands that never run a kernel (``--help``, GPU runs, a day that is up to
    date) should not pay. The kernels are ``cache=True``, so this loads compiled code."""
    from fbgpu.engine import cpu_kernels

    return cpu_kernels

Array = Any  # numpy.ndarray or cupy.ndarray


class SegmentError(ValueError):
    """Inputs of a segmented primitive are inconsistent (offsets vs. array lengths, shapes)."""


# The primitives' result records are NamedTuples rather than frozen dataclasses: as immutable,
# and ~0.06 ms each to define at import instead of ~0.5 ms (a dataclass compiles six generated
# methods), which every fbgpu process pays before it does anything.
class Moments(NamedTuple):
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


class CorrStats(NamedTuple):
    """Per-segment co-moments over pairs where both values are finite (population).

    ``degenerate`` (uint8) is 1 when every x is exactly equal or every y is exactly equal (or no
    pair exists): the correlation is then undefined, whatever the float variances say.
    """

    n: Array
    cov: Array
    var_x: Array
    var_y: Array
    degenerate: Array


class OrderFamilyStats(NamedTuple):
    """What one fused pass over a day's new orders gives per stock
    (:meth:`SegmentOps.order_family_stats`): volume :class:`Moments` of the in-session buy,
    sell and early orders, and the (volume, price) :class:`CorrStats` of the buy limit orders."""

    buy: Moments
    sell: Moments
    early: Moments
    buy_limit: CorrStats


class TradeOrderStats(NamedTuple):
    """Order reconstruction of a day's trades in one fused pass
    (:meth:`SegmentOps.trade_order_stats`): per trade, the amount of its buy order and of its
    sell order (``group_sum`` totals); per stock, the :class:`Moments` of the buy orders' and
    of the sell orders' amounts (one value per order)."""

    buy_totals: Array
    sell_totals: Array
    buy: Moments
    sell: Moments


class BigOrderRule(NamedTuple):
    """The big-order cut-off of a stock-day, as numbers a kernel can take: a fixed
    ``notional`` (when set), else ``mean + k std`` over the day's buy and sell orders' amounts
    pooled, every order big when all amounts are equal
    (:func:`fbgpu.factors.context.big_order_threshold` is the definition)."""

    k: float
    notional: float | None = None

    def as_array(self) -> np.ndarray:
        """``[fixed, k, notional]`` (float64; 0 for an unused field)."""
        fixed = self.notional is not None
        return np.array([float(fixed), float(self.k), float(self.notional) if fixed else 0.0])


class TradeFamilyStats(NamedTuple):
    """The trade family's intermediates from one pass (:meth:`SegmentOps.trade_family_stats`):
    the buy and sell orders' :class:`Moments` and the flag-code and minute histograms."""

    buy: Moments
    sell: Moments
    bins: TradeBins


class MinuteFamilyStats(NamedTuple):
    """The minute family's row statistics from one fused pass over ``[S, L]`` bars
    (:meth:`SegmentOps.minute_family_stats`)."""

    late: Moments  #: moments of ``ret[:, late_from:]``
    ret_lastret: CorrStats  #: ``(ret_k, ret_{k-1})``, k >= 1
    close_nextopen: CorrStats  #: ``(close_{k-1}, open_k)``, k >= 1
    volume_item: CorrStats  #: ``(volume_k, num_trades_k)``
    early_volume_ret: CorrStats  #: ``(volume_k, ret_k)``, k < early_bars
    volume_amplitude: CorrStats  #: ``(volume_k, amplitude_k)``
    #: sums of finite values: ``ret^2`` where ``ret < 0``, ``ret^2``, ``amount`` and
    #: ``num_trades`` where ``ret < 0``, ``amount``, ``num_trades``
    sums: tuple[Array, Array, Array, Array, Array, Array]
    buckets: Array  #: ``[S, L // bucket]`` volume per bucket of bars


class TradeBins(NamedTuple):
    """The trade family's histograms from one fused pass (:meth:`SegmentOps.trade_flag_bins`):
    ``amount`` and ``dlogp`` ``[S, 32]`` by flag code, ``nab`` ``[S, 240]`` (amount x side by
    minute)."""

    amount: Array
    dlogp: Array
    nab: Array


#: Environment switch of the fused family passes: ``FBGPU_FUSED=0`` computes every family
#: primitive by primitive (the reference path) on every backend.
FUSED_ENV = "FBGPU_FUSED"


def fused_enabled(ops: SegmentOps) -> bool:
    """Whether the factor contexts take the fused family passes on ``ops``: the one place that
    chooses between them and the primitive path. True when the backend implements them
    (:attr:`SegmentOps.fused_passes`: the CPU and GPU backends) and
    ``FBGPU_FUSED`` is not ``0`` (read at each call, so a process can compare both paths)."""
    return ops.fused_passes and os.environ.get(FUSED_ENV, "1").strip() != "0"


@contextlib.contextmanager
def quiet(xp: ModuleType) -> Iterator[None]:
    """Silence numpy's divide/invalid warnings (the NaN results are intended); no-op on cupy."""
    if xp is np or getattr(xp, "host_standin", False):
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
        self._rows: dict[tuple[int, int], Array] = {}
        self._no_mask = xp.ones(1, dtype=bool)

    # -- helpers
    def rows(self, n_rows: int, row_len: int) -> Array:
        """CSR offsets of a dense ``[n_rows, row_len]`` tensor flattened in C order (built once
        per shape and kept: the minute factors ask for the same few shapes every day)."""
        key = (int(n_rows), int(row_len))
        out = self._rows.get(key)
        if out is None:
            if len(self._rows) > 64:
                self._rows.clear()
            out = self._rows[key] = self.xp.arange(n_rows + 1, dtype=self.xp.int64) * row_len
        return out

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
            return self._no_mask, False  # a one-element stand-in the kernels never read
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
        if self.xp is np:
            # Device offsets (cupy, or the CPU stand-in device's) are built on the host first
            # and checked there by the caller; a check here would cost a device->host copy.
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

    def log(self, x: Array, out: Array | None = None) -> Array:
        """Elementwise natural log of a 1-D float64 array (``xp.log``), into ``out`` when
        given (the trade family's log prices)."""
        return self.xp.log(x, out=out)

    def lagged_row_corr_stats(self, x: Array, y: Array, lag: int) -> CorrStats:
        """Per row s of ``x, y [S, L]``: the :class:`CorrStats` of the pairs
        ``(x[s, k + lag], y[s, k])`` for ``lag > 0``, ``(x[s, k], y[s, k - lag])`` for
        ``lag < 0`` (a lead-lag correlation within each row; ``L - |lag|`` pairs): the bits of
        ``corr_stats(rows(S, L - |lag|), x[:, lag:], y[:, :-lag])`` (or the mirror slices)."""
        if x.ndim != 2:
            raise SegmentError(f"lagged rows: x must be [S, L], not {tuple(x.shape)}")
        S, L = (int(d) for d in x.shape)
        if tuple(y.shape) != (S, L) or not 0 < abs(lag) < L:
            raise SegmentError(f"lagged rows: x {tuple(x.shape)}, y {tuple(y.shape)}, lag {lag}")
        return self._lagged_row_corr_stats(x, y, int(lag))

    def _lagged_row_corr_stats(self, x: Array, y: Array, lag: int) -> CorrStats:
        # The shifted views, made contiguous (a copy each): a device copy is cheap.
        S, L = (int(d) for d in x.shape)
        k = abs(lag)
        a, b = (x[:, k:], y[:, :L - k]) if lag > 0 else (x[:, :L - k], y[:, k:])
        return self.corr_stats(self.rows(S, L - k), a, b)

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

    # -- fused family passes (backends with ``fused_passes``; the others use the primitives)
    #: Whether :meth:`order_family_stats`, :meth:`trade_order_stats` and
    #: :meth:`trade_flag_bins` are implemented (:func:`fused_enabled` decides their use).
    fused_passes: bool = False

    #: Trades per group of stocks in the fused trade pass (:func:`fbgpu.factors.fused.
    #: prime_trades`), or None for the whole day in one group (one launch per kernel: the GPU).
    trade_group_trades: int | None = None
    #: Whether :meth:`trade_family_stats` runs (the CPU); else the trade family is the two
    #: passes :meth:`trade_order_stats` and :meth:`trade_flag_bins` with the cut-off between.
    one_pass_trades: bool = False

    def order_family_stats(
        self, offsets: Array, ts: Array, side: Array, volume: Array, price: Array,
        order_type: Array, session: tuple[int, int], early: tuple[int, int], limit_type: int,
    ) -> OrderFamilyStats:
        """One pass over each stock's orders: the bits of ``moments(offsets, volume, m)`` for
        the masks buy (``session[0] <= ts <= session[1]`` and side +1), sell (side -1) and
        early (in session and ``early[0] <= ts < early[1]``), and of ``corr_stats(offsets,
        volume, price, buy & (order_type == limit_type))``."""
        volume = self._values(volume)
        price = self._values(price)
        ts = self._i64(ts)
        offsets = self._check(offsets, volume, price, ts, side, order_type)
        return self._order_family_stats(offsets, ts, side, volume, price, order_type,
                                        session, early, int(limit_type))

    def trade_order_stats(self, offsets: Array, buy_id: Array, sell_id: Array,
                          amount: Array, totals_out: tuple[Array, Array] | None = None,
                          ) -> TradeOrderStats:
        """One pass over each stock's trades: ``group_sum`` of ``amount`` by ``buy_id`` and by
        ``sell_id`` (the per-trade order totals) and the bits of ``moments(offsets, totals,
        first)`` for both.

        ``totals_out``: two contiguous float64 arrays of ``len(amount)`` (a caller's reused
        buffers) that the CPU writes the per-trade totals into instead of allocating; the GPU
        allocates from its memory pool and does not use them."""
        amount = self._f64(amount)
        buy_id = self._i64(buy_id)
        sell_id = self._i64(sell_id)
        offsets = self._check(offsets, amount, buy_id, sell_id)
        return self._trade_order_stats(offsets, buy_id, sell_id, amount, totals_out)

    def trade_flag_bins(
        self, offsets: Array, ts: Array, side: Array, amount: Array, log_price: Array,
        buy_totals: Array, sell_totals: Array, thr: Array, always: Array,
        early: tuple[int, int], bins_out: tuple[Array, Array, Array] | None = None,
    ) -> TradeBins:
        """One pass over each stock's trades: the flag code of every trade (early window,
        side +1, side -1, buy order ``>= thr[s]`` or ``always[s]``, sell order likewise) and
        ``bin_sum`` by code of ``amount`` and of ``dlogp`` (``log_price`` differences within
        the stock-day, 0 first), plus ``bin_sum`` by minute of ``amount * side``: the bits of
        the primitive path (:class:`fbgpu.factors.context.TradeContext`).

        ``bins_out``: three C-contiguous float64 arrays ``[S, 32]``, ``[S, 32]``, ``[S, 240]``
        (rows of a caller's whole-day outputs) that the CPU zero-fills and accumulates into
        instead of allocating; the GPU allocates from its memory pool and does not use them."""
        amount = self._f64(amount)
        log_price = self._f64(log_price)
        ts = self._i64(ts)
        buy_totals = self._f64(buy_totals)
        sell_totals = self._f64(sell_totals)
        offsets = self._check(offsets, amount, log_price, ts, side, buy_totals, sell_totals)
        S = offsets.shape[0] - 1
        thr = self._f64(thr)
        always = self.xp.ascontiguousarray(self.xp.asarray(always).reshape(-1), dtype=bool)
        if thr.shape[0] != S or always.shape[0] != S:
            raise SegmentError(f"thr/always have {thr.shape[0]}/{always.shape[0]} entries for "
                               f"{S} segments")
        return self._trade_flag_bins(offsets, ts, side, amount, log_price, buy_totals,
                                     sell_totals, thr, always, early, bins_out)

    def trade_family_stats(
        self, offsets: Array, buy_id: Array, sell_id: Array, amount: Array, ts: Array,
        side: Array, log_price: Array, rule: BigOrderRule, early: tuple[int, int],
        bins_out: tuple[Array, Array, Array] | None = None,
    ) -> TradeFamilyStats:
        """:meth:`trade_order_stats` (its moments; no per-trade totals), the big-order cut-off
        of ``rule`` per stock, and :meth:`trade_flag_bins` with it, in one pass per stock
        (where :attr:`one_pass_trades`): the bits of the two passes with
        :func:`fbgpu.factors.context.big_order_threshold` in between."""
        amount = self._f64(amount)
        log_price = self._f64(log_price)
        buy_id = self._i64(buy_id)
        sell_id = self._i64(sell_id)
        ts = self._i64(ts)
        offsets = self._check(offsets, amount, buy_id, sell_id, ts, side, log_price)
        return self._trade_family_stats(offsets, buy_id, sell_id, amount, ts, side, log_price,
                                        rule, early, bins_out)

    def _trade_family_stats(self, *args: Any) -> TradeFamilyStats:
        raise NotImplementedError(f"{self.name}: no one-pass trade kernel (one_pass_trades)")

    def minute_family_stats(
        self, open_: Array, close: Array, volume: Array, amount: Array, num_trades: Array,
        ret: Array, amplitude: Array, late_from: int, early_bars: int, bucket: int,
    ) -> MinuteFamilyStats:
        """One pass over each stock's row of ``[S, L]`` bars: the bits of ``moments``,
        ``corr_stats`` and ``sum`` over the rows (``rows(S, L)`` offsets) of the slices and
        masks listed in :class:`MinuteFamilyStats`."""
        S, L = (int(d) for d in ret.shape)
        arrays = [open_, close, volume, amount, num_trades, ret, amplitude]
        if any(tuple(a.shape) != (S, L) for a in arrays):
            raise SegmentError(f"minute fields must all be [{S}, {L}]")
        if not (0 <= late_from <= L and 0 <= early_bars <= L and bucket > 0):
            raise SegmentError(f"windows {late_from}/{early_bars}/{bucket} outside 0..{L}")
        return self._minute_family_stats(
            *(np.ascontiguousarray(a) if self.xp is np else a for a in arrays),
            int(late_from), int(early_bars), int(bucket))

    def _minute_family_stats(self, *args: Any) -> MinuteFamilyStats:
        raise NotImplementedError(f"{self.name}: no fused minute pass (use fused_enabled)")

    def _order_family_stats(self, *args: Any) -> OrderFamilyStats:
        raise NotImplementedError(f"{self.name}: no fused order pass (use fused_enabled)")

    def _trade_order_stats(self, *args: Any) -> TradeOrderStats:
        raise NotImplementedError(f"{self.name}: no fused trade pass (use fused_enabled)")

    def _trade_flag_bins(self, *args: Any) -> TradeBins:
        raise NotImplementedError(f"{self.name}: no fused trade pass (use fused_enabled)")

    def ordered_column_sum(self, m: Array, cols: np.ndarray) -> Array:
        """Per row s of ``m [S, W]``: ``m[s, cols[0]] + m[s, cols[1]] + ...``, added left to
        right in the order of ``cols`` (host integers; empty -> zeros).

        A fixed order, unlike a pairwise ``sum(axis=1)`` whose grouping depends on how many
        columns are kept: a subset of flag codes whose complement holds only zeros sums to
        exactly its superset, on both backends.
        """
        cols = np.ascontiguousarray(np.asarray(cols, dtype=np.int64).reshape(-1))
        S, W = int(m.shape[0]), int(m.shape[1])
        if cols.size and (cols.min() < 0 or cols.max() >= W):
            raise SegmentError(f"columns {cols.tolist()} outside 0..{W - 1}")
        if cols.size == 0:
            return self.xp.zeros(S, dtype=self.xp.float64)
        return self._ordered_column_sum(self._f64(m).reshape(S, W), cols)

    def _ordered_column_sum(self, m: Array, cols: np.ndarray) -> Array:
        acc = m[:, int(cols[0])].copy()
        for k in cols[1:]:
            acc += m[:, int(k)]
        return acc

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
        #: (S, L, |lag|) -> the offsets and mask of :meth:`lagged_row_corr_stats`'s rows
        self._seams: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}

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

    def _run(self, name: str, n: int, *args: Any) -> Any:
        """Kernel ``name`` of :mod:`.cpu_kernels` on ``args``, parallel over stocks when the
        call's work ``n`` (elements) reaches ``parallel_min_elements``: its ahead-of-time build
        when there is one for these argument types (:mod:`.cpu_aot`: no numba in the process;
        same bits), else numba's dispatcher. Returns what the kernel returns (None for the
        ahead-of-time ones, which all write into their outputs)."""
        from fbgpu.engine import cpu_aot

        parallel = n >= self.parallel_min_elements
        aot = cpu_aot.kernels()
        if aot is not None and aot.run(name, args, parallel):
            return None
        import numba

        kernel = getattr(_cpu_kernels(), name)
        if parallel:
            return kernel(*args)
        threads = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            return kernel(*args)
        finally:
            numba.set_num_threads(threads)

    def _sum(self, offsets, x, m, use):
        S = offsets.shape[0] - 1
        n = np.empty(S, dtype=np.int64)
        tot = np.empty(S, dtype=np.float64)
        self._run("seg_sum", x.shape[0], offsets, x, m, use, n, tot)
        return n, tot

    def _moments(self, offsets, x, m, use):
        return self._run("seg_moments", 2 * x.shape[0], offsets, x, m, use)

    def log(self, x: Array, out: Array | None = None) -> Array:
        # numpy's log releases the GIL and runs at ~1 ns per element on one core while the
        # kernel threads wait: a large array is cut into one part per kernel thread (10.3 M
        # trade prices: 11.3 -> 6.2 ms on two cores). Elementwise, so the same bits however
        # it is cut (numpy's vector loop handles any part's tail with a masked vector).
        from fbgpu.engine.cpu_aot import kernel_pool, thread_count

        if out is None:
            out = np.empty(np.shape(x), dtype=np.float64)
        threads = thread_count()
        # (worth splitting from a quarter of the kernels' size: a group of ~1 M trades too)
        if threads < 2 or x.ndim != 1 or 4 * int(x.shape[0]) < self.parallel_min_elements:
            return np.log(x, out=out)
        n = int(x.shape[0])
        bounds = [n * i // threads for i in range(threads + 1)]
        err = np.geterr()  # the caller's (thread-local) floating-point error handling

        def part(lo: int, hi: int) -> None:
            with np.errstate(**err):
                np.log(x[lo:hi], out=out[lo:hi])

        list(kernel_pool(threads).map(lambda b: part(*b), itertools.pairwise(bounds)))
        return out

    def _lagged_row_corr_stats(self, x, y, lag):
        # In place, no copy of the shifted views: the flat rows shifted by |lag| elements, read
        # in rows of L with each row's last |lag| pairs (which straddle two rows) masked out.
        # A masked-out pair adds exactly +-0 to every sum and +-_BIG to no min or max (the
        # masked kernel's arithmetic), and the kept pairs go through the same expressions as
        # unmasked ones (w = 1): the bits of the copying path.
        S, L = (int(d) for d in x.shape)
        k = abs(lag)
        xf = np.ascontiguousarray(x).reshape(-1)
        yf = np.ascontiguousarray(y).reshape(-1)
        n = S * L - k
        a, b = (xf[k:], yf[:n]) if lag > 0 else (xf[:n], yf[k:])
        key = (S, L, k)
        seams = self._seams.get(key)
        if seams is None:
            offsets = self.rows(S, L).copy()
            offsets[-1] = n
            keep = np.ones((S, L), dtype=bool)
            keep[:, L - k:] = False
            if len(self._seams) > 16:
                self._seams.clear()
            seams = self._seams[key] = (offsets, keep.reshape(-1)[:n])
        offsets, keep = seams
        return CorrStats(*self._corr(offsets, self._values(a), self._values(b), keep, True))

    def _corr(self, offsets, x, y, m, use):
        S = offsets.shape[0] - 1
        n = np.empty(S, dtype=np.int64)
        cov, vx, vy = (np.empty(S, dtype=np.float64) for _ in range(3))
        deg = np.empty(S, dtype=np.uint8)
        self._run("seg_corr", 2 * x.shape[0], offsets, x, y, m, use, n, cov, vx, vy, deg)
        return n, cov, vx, vy, deg

    def _bin_sum(self, offsets, bins, x, m, use, n_bins):
        return self._run("seg_bin_sum", x.shape[0], offsets, bins, x, m, use, n_bins)

    # Per-element outputs are allocated here, by numpy: it asks the kernel for transparent huge
    # pages on large arrays, so first touching them costs a fraction of what the 4 KiB page
    # faults of an allocation inside the compiled kernel cost (~2x the whole group-by on a VM).
    def _group_sum(self, offsets, keys, x):
        totals = np.empty(x.shape[0], dtype=np.float64)
        first = np.empty(x.shape[0], dtype=bool)
        # Grouping costs several times a plain pass: parallel from a quarter of the size.
        self._run("seg_group_sum", 4 * x.shape[0], offsets, keys, x, totals, first)
        return totals, first

    def _topk(self, offsets, x, valid, k):
        out = np.empty(x.shape[0], dtype=bool)
        self._run("seg_topk_mask", 4 * x.shape[0], offsets, x, valid, k, out)
        return out

    def _threshold(self, offsets, x, thr, always):
        out = np.empty(x.shape[0], dtype=bool)
        self._run("seg_threshold_mask", x.shape[0], offsets, x, thr, always, out)
        return out

    # -- fused family passes (numba, prange over stocks; fbgpu.engine.cpu_kernels)
    fused_passes = True

    #: The trade pass's per-trade intermediates (the order totals of both sides and the log
    #: prices, float64) are made for groups of stocks of about this many trades, in one
    #: scratch buffer reused by every group (24 MB), instead of for the whole day (3 x 82 MB on
    #: the full-day preset): fresh memory is faulted in page by page on first touch, which on
    #: the development VM costs more than the kernels (docs/engine.md, "Fused family passes").
    #: The values do not depend on it (per-stock kernels).
    trade_group_trades = 1_000_000
    #: The trade family in one kernel per stock (``fused_trade_pass``).
    one_pass_trades = True

    def _order_family_stats(self, offsets, ts, side, volume, price, order_type, session, early,
                            limit_type):
        S = offsets.shape[0] - 1
        n = np.empty((4, S), dtype=np.int64)
        mom = np.empty((3, 6, S), dtype=np.float64)
        corr = np.empty((3, S), dtype=np.float64)
        deg = np.empty(S, dtype=np.uint8)
        # Two streamed passes over five columns: parallel from a quarter of the usual size.
        # (Ahead of time, eight stocks per AVX-512 vector where the CPU has it: same bits.)
        self._run("fused_order_stats", 4 * volume.shape[0], offsets, ts, side,
                  volume, price, order_type, np.int64(session[0]), np.int64(session[1]),
                  np.int64(early[0]), np.int64(early[1]), np.int64(limit_type), n, mom, corr,
                  deg)
        return OrderFamilyStats(*(Moments(n[k], *mom[k]) for k in range(3)),
                                CorrStats(n[3], corr[0], corr[1], corr[2], deg))

    def _minute_family_stats(self, open_, close, volume, amount, num_trades, ret, amplitude,
                             late_from, early_bars, bucket):
        S, L = ret.shape
        n = np.empty((6, S), dtype=np.int64)
        mom = np.empty((6, S), dtype=np.float64)
        corr = np.empty((5, 3, S), dtype=np.float64)
        deg = np.empty((5, S), dtype=np.uint8)
        sums = np.empty((6, S), dtype=np.float64)
        buckets = np.empty((S, L // bucket), dtype=np.float64)
        # ~30 reductions per bar: parallel from a thirtieth of the usual size.
        self._run("fused_minute_stats", 30 * ret.size, open_, close, volume,
                  amount, num_trades, ret, amplitude, np.int64(late_from), np.int64(early_bars),
                  np.int64(bucket), n, mom, corr, deg, sums, buckets)
        corrs = [CorrStats(n[1 + j], corr[j, 0], corr[j, 1], corr[j, 2], deg[j])
                 for j in range(5)]
        return MinuteFamilyStats(Moments(n[0], *mom), *corrs, tuple(sums), buckets)

    def _trade_order_stats(self, offsets, buy_id, sell_id, amount, totals_out=None):
        S = offsets.shape[0] - 1
        if totals_out is not None:
            buy_tot, sell_tot = totals_out
            if any(t.shape != amount.shape or t.dtype != np.float64
                   or not t.flags.c_contiguous for t in totals_out):
                raise ValueError("totals_out: two contiguous float64 arrays of len(amount)")
        else:
            buy_tot = np.empty(amount.shape[0], dtype=np.float64)
            sell_tot = np.empty(amount.shape[0], dtype=np.float64)
        _check_run_lengths(offsets)
        n = np.empty((2, S), dtype=np.int64)
        mom = np.empty((2, 6, S), dtype=np.float64)
        self._run("fused_trade_orders", 8 * amount.shape[0], offsets, buy_id,
                  sell_id, amount, buy_tot, sell_tot, n, mom)
        return TradeOrderStats(buy_tot, sell_tot, Moments(n[0], *mom[0]), Moments(n[1], *mom[1]))

    def _trade_family_stats(self, offsets, buy_id, sell_id, amount, ts, side, log_price, rule,
                            early, bins_out=None):
        _check_run_lengths(offsets)
        S = offsets.shape[0] - 1
        n = np.empty((2, S), dtype=np.int64)
        mom = np.empty((2, 6, S), dtype=np.float64)
        amount_bins, dlogp_bins, nab = _zeroed_bins(S, bins_out)
        self._run("fused_trade_pass", 10 * amount.shape[0], offsets, buy_id, sell_id, amount,
                  ts, side, log_price, rule.as_array(), np.int64(early[0]), np.int64(early[1]),
                  n, mom, amount_bins, dlogp_bins, nab)
        return TradeFamilyStats(Moments(n[0], *mom[0]), Moments(n[1], *mom[1]),
                                TradeBins(amount_bins, dlogp_bins, nab))

    def _trade_flag_bins(self, offsets, ts, side, amount, log_price, buy_tot, sell_tot, thr,
                         always, early, bins_out=None):
        S = offsets.shape[0] - 1
        amount_bins, dlogp_bins, nab = _zeroed_bins(S, bins_out)
        self._run("fused_trade_bins", 2 * amount.shape[0], offsets, ts, side,
                  amount, log_price, buy_tot, sell_tot, thr, always, np.int64(early[0]),
                  np.int64(early[1]), amount_bins, dlogp_bins, nab)
        return TradeBins(amount_bins, dlogp_bins, nab)


def _check_run_lengths(offsets: np.ndarray) -> None:
    """The trade-order kernels number a stock's groups in int32: refuse a stock-day of 2**31
    trades or more (never seen; a clear error rather than wrapped group ids)."""
    if offsets.shape[0] > 1 and int(np.diff(offsets).max()) >= 2**31:
        raise SegmentError("a stock-day has 2**31 trades or more: beyond the trade kernels")


def _zeroed_bins(S: int, bins_out: tuple[np.ndarray, ...] | None) -> tuple[np.ndarray, ...]:
    """The trade family's three histograms ``[S, 32]``, ``[S, 32]``, ``[S, 240]``, zeroed
    for the kernels to accumulate into: fresh (:func:`_zeroed`) or the caller's ``bins_out``
    (checked: C-contiguous float64 of those shapes)."""
    from fbgpu.data.schemas import MINUTES_PER_DAY

    shapes = ((S, 32), (S, 32), (S, MINUTES_PER_DAY))
    if bins_out is None:
        return tuple(_zeroed(shape) for shape in shapes)
    if any(b.shape != shape or b.dtype != np.float64 or not b.flags.c_contiguous
           for b, shape in zip(bins_out, shapes, strict=True)):
        raise ValueError(f"bins_out: C-contiguous float64 arrays of shapes {shapes}")
    for b in bins_out:  # the kernels accumulate (out[i] += x)
        b.fill(0.0)
    return tuple(bins_out)


def _zeroed(shape: tuple[int, ...]) -> np.ndarray:
    """A float64 host array of zeros written, not ``calloc``-ed, for kernels that accumulate
    into it (``out[i] += x``). ``np.zeros`` of a large array maps fresh pages that read as the
    shared zero page: the kernel's first ``+=`` reads one (mapping the zero page) and then
    writes it, a second, copy-on-write fault whose TLB flush interrupts the other kernel
    threads' cores. Writing the zeros first takes one plain fault per page."""
    out = np.empty(shape, dtype=np.float64)
    out.fill(0.0)
    return out


def _rows(a: Array, k: int) -> tuple[Array, ...]:
    """The first ``k`` rows of a device array as views, by index: iterating a device array is an
    implicit host crossing on the stand-in device (:mod:`fbgpu.engine.standin`)."""
    return tuple(a[j] for j in range(k))


class GpuSegmentOps(SegmentOps):
    """The CUDA C kernels of ``kernels/`` (:mod:`.cuda_c`) launched on ``xp`` arrays.

    ``xp`` is cupy on a real device (the NVRTC-built kernels run on the current stream, and no
    primitive synchronises with the host) and
    numpy on a CPU, where the same kernels run under the host emulation: that is how CI, which
    has no GPU, checks the GPU kernels against the CPU ones.

    Every reduction is deterministic (no float atomics): sums inside a block follow a fixed tree,
    bin sums and group totals add in element order and equal the CPU backend bit for bit.
    """

    name = "gpu"

    def __init__(self, xp: ModuleType, kernels: Any = None) -> None:
        super().__init__(xp)
        from fbgpu.engine.cuda_c import kernels_for

        self.kernels = kernels if kernels is not None else kernels_for(xp)
        self.block = int(self.kernels.block)
        self._cols: dict[tuple[int, ...], Array] = {}

    def _launch(self, name: str, grid: int, *args: Any) -> None:
        self.kernels.launch(name, int(grid), self.block, args)

    def _flag(self, use: bool) -> np.bool_:
        return np.bool_(use)

    def _sum(self, offsets, x, m, use):
        xp = self.xp
        S = offsets.shape[0] - 1
        # Outputs are allocated uninitialised wherever the kernel writes every element (one
        # fill launch fewer per output: the minute family is launch-bound on a device).
        n = xp.empty(S, dtype=xp.int64)
        tot = xp.empty(S, dtype=xp.float64)
        self._launch("seg_sum", S, offsets, x, m, self._flag(use), n, tot)
        return n, tot

    def _moments(self, offsets, x, m, use):
        xp = self.xp
        S = offsets.shape[0] - 1
        n = xp.empty(S, dtype=xp.int64)
        outs = [xp.empty(S, dtype=xp.float64) for _ in range(6)]
        self._launch("seg_moments", S, offsets, x, m, self._flag(use), n, *outs)
        return (n, *outs)

    def _corr(self, offsets, x, y, m, use):
        xp = self.xp
        S = offsets.shape[0] - 1
        n = xp.empty(S, dtype=xp.int64)
        outs = [xp.empty(S, dtype=xp.float64) for _ in range(3)]
        deg = xp.empty(S, dtype=xp.uint8)
        self._launch("seg_corr", S, offsets, x, y, m, self._flag(use), n, *outs, deg)
        return (n, *outs, deg)

    def _bin_sum(self, offsets, bins, x, m, use, n_bins):
        from fbgpu.engine.cuda_c import BINS_PER_THREAD

        xp = self.xp
        S = offsets.shape[0] - 1
        out = xp.empty((S, n_bins), dtype=xp.float64)  # every bin is written by some launch
        per_launch = self.block * BINS_PER_THREAD
        for lo in range(0, n_bins, per_launch):  # one launch for up to 1,024 bins on a device
            self._launch("seg_bin_sum", S, offsets, bins, x, m, self._flag(use), out,
                         np.int64(n_bins), np.int64(lo))
        return out

    #: Environment switch of order reconstruction (:meth:`_group_sum`): ``FBGPU_GROUP_SORT=global``
    #: takes the two global radix sorts and ``group_total``; anything else (the default,
    #: ``segmented``) the one-launch ``seg_group_total``. Read at each call, so a process can
    #: time and compare both (benchmarks/bench_gpu_engine.py). Both give the same bits.
    GROUP_ENV = "FBGPU_GROUP_SORT"

    def segmented_groups(self) -> bool:
        """Whether :meth:`_group_sum` takes the segmented kernel (``FBGPU_GROUP_SORT`` is not
        ``global``)."""
        return os.environ.get(self.GROUP_ENV, "segmented").strip().lower() != "global"

    def _group_sum(self, offsets, keys, x, seg=None, scratch=None):
        """Group by key inside each segment and add ``x`` per group in element order (the CPU's
        bits); nothing is read back to the host.

        Segmented (default): one ``seg_group_total`` launch, one block per segment, which
        sorts the segment's (key, element) pairs with a bitonic network in shared memory (in
        ``scratch``, two int64/int32 arrays of one slot per element, for segments longer than
        the kernel's ``FBGPU_GROUP_CAP``) and adds each group in element order.
        ``scratch``: the caller's, to share between calls (allocated here when None).

        Global (``FBGPU_GROUP_SORT=global``): order the elements by (segment, key), element
        order kept inside a group: a stable radix sort by key, then a stable one by the int32
        segment id (:meth:`_stable_argsort`, the two passes of an LSD sort); one thread per
        group start then adds its group in element order. ``seg``: the segment ids when the
        caller has them (:meth:`segment_ids`)."""
        xp = self.xp
        n = keys.shape[0]
        if self.segmented_groups():
            totals = xp.empty(n, dtype=xp.float64)  # the kernel writes every element of both
            first = xp.empty(n, dtype=bool)
            if n == 0:
                return totals, first
            key_scratch, idx_scratch = scratch if scratch is not None else self._group_scratch(n)
            self._launch("seg_group_total", offsets.shape[0] - 1, offsets, keys, x, key_scratch,
                         idx_scratch, totals, first)
            return totals, first
        totals = xp.empty(n, dtype=xp.float64)
        first = xp.zeros(n, dtype=bool)
        if n == 0:
            return totals, first
        if seg is None:
            seg = self.segment_ids(offsets, n)
        by_key = self._stable_argsort(keys)
        order = xp.ascontiguousarray(by_key[self._stable_argsort(seg[by_key])])
        key_sorted = xp.ascontiguousarray(keys[order])
        seg_sorted = xp.ascontiguousarray(seg[order])
        block = self.block
        self._launch("group_total", (n + block - 1) // block, order, key_sorted, seg_sorted, x,
                     totals, first, np.int64(n))
        return totals, first

    def _group_scratch(self, n: int) -> tuple[Array, Array]:
        """``seg_group_total``'s global scratch for ``n`` elements: int64 keys and int32 element
        indices, 12 bytes an element, uninitialised (only segments longer than the kernel's cap
        touch their slice, and each writes it before reading it)."""
        return self.xp.empty(n, dtype=self.xp.int64), self.xp.empty(n, dtype=self.xp.int32)

    def _ordered_column_sum(self, m, cols):
        S, W = m.shape
        out = self.xp.empty(S, dtype=self.xp.float64)
        # The column lists are a handful of fixed filters: each is uploaded once per ops, not
        # once per call (a pageable host->device copy waits for the stream on a GPU).
        key = tuple(int(c) for c in cols)
        dev_cols = self._cols.get(key)
        if dev_cols is None:
            dev_cols = self._cols[key] = index_to_device(self.xp, cols)
        self._launch("ordered_column_sum", (S + self.block - 1) // self.block, m, np.int64(S),
                     np.int64(W), dev_cols, np.int64(cols.size), out)
        return out

    def _stable_argsort(self, keys: Array) -> Array:
        """Stable argsort of integer ``keys``, int64 indices on ``xp`` (a radix sort: cupy's
        on a device, numpy's for integers on a host; measured on an H200, cupy's and torch's
        sorts of 10M int64 keys take the same 1.1 ms)."""
        return self.xp.ascontiguousarray(self.xp.argsort(keys, kind="stable"),
                                         dtype=self.xp.int64)

    def segment_ids(self, offsets: Array, n: int) -> Array:
        """The segment index of every element, int32 (one launch, no host round trip)."""
        out = self.xp.empty(n, dtype=self.xp.int32)
        self._launch("segment_ids", offsets.shape[0] - 1, offsets, out)
        return out

    def _topk(self, offsets, x, valid, k):
        out = self.xp.empty(x.shape[0], dtype=bool)
        self._launch("seg_topk_mask", offsets.shape[0] - 1, offsets, x, valid, k, out)
        return out

    def _threshold(self, offsets, x, thr, always):
        out = self.xp.empty(x.shape[0], dtype=bool)
        self._launch("seg_threshold_mask", offsets.shape[0] - 1, offsets, x, thr, always, out)
        return out

    # -- fused family passes (kernels/segments.cu: one launch per family pass, one block per
    # stock, or per bar row; docs/engine.md, "GPU kernels")
    fused_passes = True

    def _i8(self, x: Array) -> Array:
        """``side`` / ``order_type`` codes as the fused kernels read them: int8, as stored
        (:mod:`fbgpu.data.schemas`); other integer dtypes are narrowed (codes are -1..3)."""
        return self.xp.ascontiguousarray(self.xp.asarray(x).reshape(-1), dtype=self.xp.int8)

    def _order_family_stats(self, offsets, ts, side, volume, price, order_type, session, early,
                            limit_type):
        xp = self.xp
        S = offsets.shape[0] - 1
        n = xp.empty((4, S), dtype=xp.int64)  # every output element is written by its block
        mom = xp.empty((3, 6, S), dtype=xp.float64)
        corr = xp.empty((3, S), dtype=xp.float64)
        deg = xp.empty(S, dtype=xp.uint8)
        self._launch("fused_order_stats", S, offsets, ts, self._i8(side), volume, price,
                     self._i8(order_type), np.int64(session[0]), np.int64(session[1]),
                     np.int64(early[0]), np.int64(early[1]), np.int64(limit_type), n, mom, corr,
                     deg)
        return OrderFamilyStats(*(Moments(n[k], *_rows(mom[k], 6)) for k in range(3)),
                                CorrStats(n[3], corr[0], corr[1], corr[2], deg))

    def _trade_order_stats(self, offsets, buy_id, sell_id, amount, totals_out=None):
        """Order reconstruction is :meth:`_group_sum` per side: one ``seg_group_total``
        launch each (sharing one scratch), or with ``FBGPU_GROUP_SORT=global`` two stable radix
        sorts and one ``group_total`` launch each (the segment ids built once for both); the
        moments of both sides' order amounts are one ``trade_order_moments`` launch."""
        xp = self.xp
        S = offsets.shape[0] - 1
        n_trades = amount.shape[0]
        seg = scratch = None
        if n_trades and self.segmented_groups():
            scratch = self._group_scratch(n_trades)
        elif n_trades:
            seg = self.segment_ids(offsets, n_trades)
        buy_tot, buy_first = self._group_sum(offsets, buy_id, amount, seg, scratch)
        sell_tot, sell_first = self._group_sum(offsets, sell_id, amount, seg, scratch)
        n = xp.empty((2, S), dtype=xp.int64)
        mom = xp.empty((2, 6, S), dtype=xp.float64)
        self._launch("trade_order_moments", S, offsets, buy_tot, buy_first, sell_tot,
                     sell_first, n, mom)
        return TradeOrderStats(buy_tot, sell_tot, Moments(n[0], *_rows(mom[0], 6)),
                               Moments(n[1], *_rows(mom[1], 6)))

    def _trade_flag_bins(self, offsets, ts, side, amount, log_price, buy_tot, sell_tot, thr,
                         always, early, bins_out=None):
        from fbgpu.data.bars import NS_PER_MIN, T_0930, T_1130, T_1300, T_1500
        from fbgpu.data.schemas import MINUTES_PER_DAY

        xp = self.xp
        S = offsets.shape[0] - 1
        # Every bin is written by the thread that owns it (zeros where no trade falls).
        amount_bins = xp.empty((S, 32), dtype=xp.float64)
        dlogp_bins = xp.empty((S, 32), dtype=xp.float64)
        nab = xp.empty((S, MINUTES_PER_DAY), dtype=xp.float64)
        self._launch("fused_trade_bins", S, offsets, ts, self._i8(side), amount, log_price,
                     buy_tot, sell_tot, thr, always, np.int64(early[0]), np.int64(early[1]),
                     np.int64(T_0930), np.int64(T_1130), np.int64(T_1300), np.int64(T_1500),
                     np.int64(NS_PER_MIN), amount_bins, dlogp_bins, nab)
        return TradeBins(amount_bins, dlogp_bins, nab)

    def _minute_family_stats(self, open_, close, volume, amount, num_trades, ret, amplitude,
                             late_from, early_bars, bucket):
        xp = self.xp
        S, L = (int(d) for d in ret.shape)
        fields = [self._f64(a) for a in (open_, close, volume, amount, num_trades, ret,
                                         amplitude)]
        n = xp.empty((6, S), dtype=xp.int64)
        mom = xp.empty((6, S), dtype=xp.float64)
        corr = xp.empty((5, 3, S), dtype=xp.float64)
        deg = xp.empty((5, S), dtype=xp.uint8)
        sums = xp.empty((6, S), dtype=xp.float64)
        buckets = xp.empty((S, L // bucket), dtype=xp.float64)
        self._launch("fused_minute_stats", S, *fields, np.int64(L), np.int64(late_from),
                     np.int64(early_bars), np.int64(bucket), n, mom, corr, deg, sums, buckets)
        corrs = [CorrStats(n[1 + j], corr[j, 0], corr[j, 1], corr[j, 2], deg[j])
                 for j in range(5)]
        return MinuteFamilyStats(Moments(n[0], *_rows(mom, 6)), *corrs, _rows(sums, 6),
                                 buckets)


@functools.cache
def ops_for(xp: Any) -> SegmentOps:
    """The primitives that run on ``xp``'s arrays: the CPU kernels for numpy, the GPU kernels for
    cupy (and for the CPU stand-in device). For array code that has an ``xp`` but no backend."""
    if xp is np:
        return CpuSegmentOps()
    return GpuSegmentOps(xp)


def segment_ops(backend: Backend | str) -> SegmentOps:
    """The primitives for ``backend`` (a :class:`Backend`, or "cpu"/"gpu"/"auto")."""
    from fbgpu.engine.backend import get_backend

    b = get_backend(backend)
    if b.name == "gpu":
        return GpuSegmentOps(b.xp)
    return CpuSegmentOps()
