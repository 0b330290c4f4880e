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
  (:meth:`~fbgpu.engine.segments.SegmentOps.trade_flag_bins`): two kernels plus ``log(price)``;
  on the CPU one kernel with the threshold per stock inside
  (:meth:`~fbgpu.engine.segments.SegmentOps.trade_family_stats`, the same bits) plus
  ``log(price)``.

The factor functions read these intermediates whichever path filled them (the minute and order
factors read them as context properties rather than calling the primitives themselves), and the
values are the same bits on both paths (each fused accumulator adds the same terms in the same
order; ``tests/test_fused.py``). User factors and every intermediate not listed (``buy_orders``,
``flags``, ...) keep the primitive path. :func:`fbgpu.engine.segments.fused_enabled` is the
one switch (``FBGPU_FUSED=0`` turns the fused passes off, on both backends).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from fbgpu.data.schemas import MINUTES_PER_DAY, ORDER_TYPE_LIMIT
from fbgpu.engine.segments import Moments, fused_enabled
from fbgpu.factors.context import (
    BUCKET_BARS,
    EARLY_BARS,
    EARLY_WINDOW,
    LATE_FROM,
    ORDER_SESSION,
    MinuteContext,
    OrderContext,
    TradeContext,
    big_order_rule,
    big_order_threshold,
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
    from two fused passes (the big-order threshold between them is the context's own rule,
    :func:`~fbgpu.factors.context.big_order_threshold`).

    Where the backend asks for it (:attr:`~fbgpu.engine.segments.SegmentOps.
    trade_group_trades`: the CPU) the passes run over groups of consecutive stocks, so the
    per-trade intermediates (order totals, log prices) exist for one group at a time; every
    output is per stock, so the values are the same bits as one whole-day pass."""
    trades = ctx.ops.trade_group_trades
    off = np.asarray(ctx.offsets) if trades is not None else None  # host offsets (the CPU)
    groups = _stock_groups(off, trades)
    xp = ctx.xp
    if groups is None:
        parts = [_trade_passes(ctx)]
        bins = parts[0][2]
    else:
        width = max(int(off[hi] - off[lo]) for lo, hi in groups)
        # log prices (and the per-trade order totals of the two-pass route): reused
        rows = 1 if ctx.ops.one_pass_trades else 3
        scratch = xp.empty((rows, width), dtype=xp.float64)
        # The whole day's bins, each group accumulating into its rows (no concatenation).
        bins = tuple(xp.empty((ctx.S, w), dtype=xp.float64) for w in (32, 32, MINUTES_PER_DAY))
        parts = [_trade_passes(ctx.subset(lo, hi), scratch, tuple(b[lo:hi] for b in bins))
                 for lo, hi in groups]
    buy, sell = (Moments(*(xp.concatenate(field_parts)
                           for field_parts in zip(*(p[k] for p in parts), strict=True)))
                 for k in (0, 1))
    _seed(ctx, order_moments=(buy, sell),
          **dict(zip(("amount_bins", "dlogp_bins", "net_active_buy"), bins, strict=True)))


def _trade_passes(ctx: TradeContext, scratch: Any = None, bins_out: Any = None,
                  ) -> tuple[Moments, Moments, tuple[Any, Any, Any]]:
    """The fused trade passes over ``ctx``'s stocks (one where the backend has
    ``one_pass_trades``, else two): ``(buy moments, sell moments, (amount bins, dlogp bins,
    net active buying))``. ``scratch`` (``[1 or 3, >= ctx.n]`` float64, reused across groups)
    holds the log prices (and, for two passes, the per-trade order totals); without it they
    are allocated (and the log prices cached on ``ctx``). ``bins_out``: the three bin arrays'
    rows for these stocks, written in place."""
    ops, xp = ctx.ops, ctx.xp
    if scratch is None:
        totals, log_price = None, ctx.log_price
    else:
        n = ctx.n
        totals = None if ops.one_pass_trades else (scratch[1, :n], scratch[2, :n])
        # the same bits as ctx.log_price (elementwise), into the reused row
        log_price = ops.log(xp.asarray(ctx.col("price"), dtype=xp.float64), out=scratch[0, :n])
    if ops.one_pass_trades:
        st = ops.trade_family_stats(ctx.offsets, ctx.col("buy_order_id"),
                                    ctx.col("sell_order_id"), ctx.amount, ctx.col("ts"),
                                    ctx.side, log_price, big_order_rule(ctx.config), EARLY_WINDOW,
                                    bins_out)
        return st.buy, st.sell, (st.bins.amount, st.bins.dlogp, st.bins.nab)
    orders = ops.trade_order_stats(ctx.offsets, ctx.col("buy_order_id"), ctx.col("sell_order_id"),
                                   ctx.amount, totals)
    thr, always = big_order_threshold(xp, ctx.config, orders.buy, orders.sell)
    bins = ops.trade_flag_bins(ctx.offsets, ctx.col("ts"), ctx.side, ctx.amount, log_price,
                               orders.buy_totals, orders.sell_totals, thr, always, EARLY_WINDOW,
                               bins_out)
    return orders.buy, orders.sell, (bins.amount, bins.dlogp, bins.nab)


def _stock_groups(offsets: Any, trades: int | None) -> list[tuple[int, int]] | None:
    """Consecutive stock ranges ``(lo, hi)`` of about ``trades`` trades each (a stock is never
    split; at least one stock per group), or None for one group: ``trades`` is None, or the
    day fits in one. ``offsets`` are host CSR offsets (the groups are planned on the host)."""
    if trades is None:
        return None
    off = np.asarray(offsets)  # no copy for the host offsets prime_trades passes
    S = off.shape[0] - 1
    if S <= 1 or int(off[-1]) <= trades:
        return None
    # the first stock whose start reaches each multiple of ``trades``
    cuts = np.searchsorted(off[:-1], np.arange(trades, int(off[-1]), trades), side="left")
    # sorted already: pairs with b == a are the duplicates (np.unique would import numpy.ma,
    # ~0.03 s of a whole run)
    bounds = [0, *cuts.tolist(), S]
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]


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
