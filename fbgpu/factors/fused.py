"""Fused family passes: a family's shared intermediates from one kernel pass per stock.

The factor contexts (:mod:`fbgpu.factors.context`) compute their intermediates lazily, one
segmented primitive at a time (a group-by, then masked moments, then masks, flag codes and bin
sums: about ten passes over a day's trades). On a backend with fused passes
(:attr:`fbgpu.engine.segments.SegmentOps.fused_passes`: the CPU and the GPU backend) :func:`prime`
fills the same cached intermediates from the fused kernels instead, which stream each stock's
contiguous slice of the columns once, one stock per thread (numba ``prange``) on the CPU, one
thread block per stock (CUDA C, ``kernels/segments.cu``) on the GPU:

* ``minute``: ``late_ret_moments``, the five correlations' co-moments (``ret_lastret_corr``
  ...), ``down_var_sums``, ``down_single_sums``, ``volume_buckets``
  (:meth:`~fbgpu.engine.segments.SegmentOps.minute_family_stats`): one kernel over the bars
  (``bigorder_ret``'s top-k selection keeps its primitive);
* ``order``: ``buy_moments``, ``sell_moments``, ``early_moments``, ``buy_limit_corr``
  (:meth:`~fbgpu.engine.segments.SegmentOps.order_family_stats`): one kernel;
* ``trade``: ``order_moments`` (:meth:`~fbgpu.engine.segments.SegmentOps.trade_order_stats`),
  then the big-order threshold in array code (:attr:`TradeContext.big_threshold`, unchanged),
  then ``amount_bins``, ``dlogp_bins``, ``net_active_buy``
  (:meth:`~fbgpu.engine.segments.SegmentOps.trade_flag_bins`): two kernels plus ``log(price)``.

The factor functions read these intermediates whichever path filled them (the minute and order
factors read them as context properties rather than calling the primitives themselves), and the
values are the same bits on both paths (each fused accumulator adds the same terms in the same
order; ``tests/test_fused.py``). User factors and every intermediate not listed (``buy_orders``,
``flags``, ...) keep the primitive path. :func:`fbgpu.engine.segments.fused_enabled` is the
one switch (``FBGPU_FUSED=0`` turns the fused passes off, on both backends).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fbgpu.data.schemas import ORDER_TYPE_LIMIT
from fbgpu.engine.segments import fused_enabled
from fbgpu.factors.context import (
    BUCKET_BARS,
    EARLY_BARS,
    EARLY_WINDOW,
    LATE_FROM,
    ORDER_SESSION,
    MinuteContext,
    OrderContext,
    TradeContext,
)
from fbgpu.factors.registry import FACTORS

log = logging.getLogger(__name__)


def _seed(ctx: Any, **values: Any) -> None:
    """Store ``values`` as the context's cached intermediates (``functools.cached_property``
    keeps its value in the instance ``__dict__`` under the property's name)."""
    ctx.__dict__.update(values)


def prime_orders(ctx: OrderContext) -> None:
    """Fill the order context's volume moments and buy-limit co-moments from one fused pass."""
    st = ctx.ops.order_family_stats(ctx.offsets, ctx.col("ts"), ctx.side, ctx.volume, ctx.price,
                                    ctx.col("order_type"), ORDER_SESSION, EARLY_WINDOW,
                                    ORDER_TYPE_LIMIT)
    _seed(ctx, buy_moments=st.buy, sell_moments=st.sell, early_moments=st.early,
          buy_limit_corr=st.buy_limit)


def prime_trades(ctx: TradeContext) -> None:
    """Fill the trade context's order moments, flag-code bins and net active buying per minute
    from two fused passes (the big-order threshold between them is the context's own)."""
    ops = ctx.ops
    orders = ops.trade_order_stats(ctx.offsets, ctx.col("buy_order_id"), ctx.col("sell_order_id"),
                                   ctx.amount)
    _seed(ctx, order_moments=(orders.buy, orders.sell))
    thr, always = ctx.big_threshold
    bins = ops.trade_flag_bins(ctx.offsets, ctx.col("ts"), ctx.side, ctx.amount, ctx.log_price,
                               orders.buy_totals, orders.sell_totals, thr, always, EARLY_WINDOW)
    _seed(ctx, amount_bins=bins.amount, dlogp_bins=bins.dlogp, net_active_buy=bins.nab)


def prime_minutes(ctx: MinuteContext) -> None:
    """Fill the minute context's row statistics (late-window moments, the five correlations'
    co-moments, the down/all sums, the volume buckets) from one fused pass over the bars."""
    bars = ctx.bars
    st = ctx.ops.minute_family_stats(ctx.field("open"), ctx.field("close"), bars["volume"],
                                     ctx.field("amount"), bars["num_trades"], ctx.ret,
                                     ctx.amplitude, LATE_FROM, EARLY_BARS, BUCKET_BARS)
    _seed(ctx, late_ret_moments=st.late, ret_lastret_corr=st.ret_lastret,
          close_nextopen_corr=st.close_nextopen, volume_item_corr=st.volume_item,
          early_volume_ret_corr=st.early_volume_ret, volume_amplitude_corr=st.volume_amplitude,
          down_var_sums=st.sums[:2], down_single_sums=st.sums[2:], volume_buckets=st.buckets)


_PRIMERS = {"minute": prime_minutes, "order": prime_orders, "trade": prime_trades}


def prime(ctx: Any, names: Sequence[str]) -> bool:
    """Run ``ctx``'s family pass when the backend has fused passes, they are enabled
    (:func:`~fbgpu.engine.segments.fused_enabled`) and a built-in factor of the family is among
    ``names`` (user factors alone do not pay for it). Returns whether it ran."""
    primer = _PRIMERS.get(getattr(ctx, "family", ""))
    if primer is None or not fused_enabled(ctx.ops):
        return False
    if not any(FACTORS[n].builtin and FACTORS[n].family == ctx.family for n in names):
        return False
    primer(ctx)
    return True
