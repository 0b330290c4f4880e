"""The public factor API: everything a user factor may use (docs/user-factors.md).

A user factor is a function ``compute(ctx) -> values`` registered with :func:`factor`
(also ``fbgpu.factor``). ``ctx`` is the day context of its family; ``values`` is one float per
stock of that context (``ctx.S`` of them, on ``ctx.xp``'s device). Write it against ``ctx.xp``
(numpy on the CPU backend, cupy on the GPU) and the segmented primitives ``ctx.ops``, never
against numpy directly, and never loop over stocks in Python: the same code then runs unchanged
on both backends and stays fast.

Contexts (one day of one source; tick columns are flat arrays, stock after stock, with CSR
``ctx.offsets`` so that stock ``s`` owns rows ``offsets[s]:offsets[s+1]``):

* :class:`MinuteContext` (family ``"minute"``): ``ctx.field(name) -> [S, 240]`` float64 for
  ``open, high, low, close, volume, amount, num_trades``; ``ctx.ret`` the minute returns;
  ``ctx.row_sum / row_moments / row_corr`` per-stock reductions over a ``[S, 240]`` array.
* :class:`TradeContext` (``"trade"``): ``ctx.col(name)`` for ``seq, ts, price, volume, amount,
  buy_order_id, sell_order_id, side``; reconstructed orders ``ctx.buy_orders`` /
  ``ctx.sell_orders`` (each trade's order amount, and a first-of-order flag), big-order flags
  ``ctx.big_buy`` / ``ctx.big_sell``, ``ctx.dlogp``, ``ctx.early``, flag-code sums
  ``ctx.amount_where(lambda f: ...)`` / ``ctx.dlogp_where``, ``ctx.minute_ret [S, 240]``.
* :class:`OrderContext` (``"order"``): ``ctx.col(name)`` for ``seq, ts, order_id, price, volume,
  side, order_type``; ``ctx.session`` (09:15-15:00), ``ctx.early``, ``ctx.buy``,
  ``ctx.moments(mask)``; with ``cancels=True`` also ``ctx.cancels`` (:class:`CancelTicks`:
  ``ts, order_id, volume, side`` of the day's cancellations on the same stocks' CSR).

Primitives (``ctx.ops``, :class:`SegmentOps`), all per segment (stock) and NaN-aware:
``sum(offsets, x, mask) -> (count, sum)``, ``moments(offsets, x, mask) -> Moments``,
``corr_stats(offsets, x, y, mask) -> CorrStats``, ``lagged_row_corr_stats(x, y, lag)`` (a
lead-lag correlation within each row of ``[S, L]`` arrays), ``bin_sum(offsets, bins, x,
n_bins, mask) -> [S, n_bins]``, ``group_sum(offsets, keys, x)`` (order reconstruction: group
totals by id),
``threshold_mask(offsets, x, thr, always)``, ``topk_mask(offsets, x, valid, k)``,
``rows(n_rows, width)`` (CSR of a dense ``[n_rows, width]`` array). Statistics from them:
:func:`skewness`, :func:`kurtosis`, :func:`correlation`, :func:`ratio`. Time windows:
:func:`time_window` and the exchange-time constants ``T_0915 ... T_1500`` (ns since midnight),
:func:`minute_index`. A small host constant goes to the device with :func:`to_device`, never
with ``ctx.xp.asarray`` (a hidden upload: the CPU stand-in device refuses it and
``fbgpu factors check`` reports it; cupy itself would copy silently).
"""

from typing import Any

from fbgpu.data.bars import (
    NS_PER_MIN,
    T_0915,
    T_0930,
    T_1000,
    T_1130,
    T_1300,
    T_1430,
    T_1500,
    hhmm_to_ns,
)
from fbgpu.engine.backend import index_to_device
from fbgpu.engine.segments import (
    CorrStats,
    Moments,
    SegmentOps,
    correlation,
    kurtosis,
    quiet,
    ratio,
    skewness,
)
from fbgpu.factors.context import (
    FLAGS,
    CancelTicks,
    MinuteContext,
    OrderContext,
    TradeContext,
    TradeFlags,
    minute_index,
    time_window,
)
from fbgpu.factors.registry import FactorDefinitionError, FactorSpec, factor


def to_device(xp: Any, a: Any) -> Any:
    """The small host array ``a`` (a constant table, weights read from a file) as an array of
    ``xp``'s device (``ctx.xp``): the explicit upload a factor may make, counted as the
    ``to_device index`` crossing (:func:`fbgpu.engine.backend.index_to_device`). On the CPU
    backend ``a`` itself, no copy. ``ctx.xp.asarray(a)`` of a host array is a hidden upload
    instead: the CPU stand-in device refuses it and ``fbgpu factors check`` reports it (cupy
    itself would copy silently). Prefer
    building the array on the device with ``ctx.xp`` (``ctx.xp.linspace``, ``arange``,
    ``full``): on a GPU every call of this is a blocking host->device copy."""
    return index_to_device(xp, a)

__all__ = [
    "FLAGS",
    "NS_PER_MIN",
    "T_0915",
    "T_0930",
    "T_1000",
    "T_1130",
    "T_1300",
    "T_1430",
    "T_1500",
    "CancelTicks",
    "CorrStats",
    "FactorDefinitionError",
    "FactorSpec",
    "MinuteContext",
    "Moments",
    "OrderContext",
    "SegmentOps",
    "TradeContext",
    "TradeFlags",
    "correlation",
    "factor",
    "hhmm_to_ns",
    "kurtosis",
    "minute_index",
    "quiet",
    "ratio",
    "skewness",
    "time_window",
    "to_device",
]
