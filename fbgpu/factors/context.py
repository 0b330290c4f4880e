"""Per-day, per-family inputs of the factors, with the intermediates they share (computed once).

A context holds one source's arrays for one day *on the backend* (numpy or cupy) and the segment
primitives (:class:`fbgpu.engine.segments.SegmentOps`). Shared intermediates (minute returns, the
reconstructed orders and their "big" flags, early-window masks, ``dlogp``) are cached properties,
so computing several factors of a family touches the raw ticks once per intermediate, not once per
factor. Everything here is written against ``xp``: the same code runs on both backends.

Times are nanoseconds since midnight, exchange time (:mod:`fbgpu.data.bars` constants).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np

from fbgpu.data.bars import NS_PER_MIN, T_0915, T_0930, T_1000, T_1130, T_1300, T_1500, minute_of_ts
from fbgpu.data.schemas import MINUTES_PER_DAY
from fbgpu.engine.segments import Moments, SegmentOps, quiet, ratio, segment_starts_mask
from fbgpu.factors.config import FactorConfig

Array = Any


def minute_index(xp: Any, ts: Array) -> Array:
    """Minute 0..239 of each tick timestamp on the bar grid (spec/factors.md "Minute bars").

    ``t < 09:30`` -> 0; ``09:30 <= t < 11:30`` -> ``(t - 09:30) // 1 min``; the lunch break ->
    119; ``13:00 <= t < 15:00`` -> ``120 + (t - 13:00) // 1 min``; ``t >= 15:00`` -> 239.
    """
    if xp is np:
        # Same mapping, compiled (the bar builder's own kernel): one pass instead of five.
        return minute_of_ts(ts).astype(np.int64)
    morning = (ts - T_0930) // NS_PER_MIN
    afternoon = 120 + (ts - T_1300) // NS_PER_MIN
    k = xp.where(ts < T_1130, morning, xp.where(ts < T_1300, 119, afternoon))
    return xp.clip(k, 0, MINUTES_PER_DAY - 1)


class MinuteContext:
    """One day of minute bars, ``[S, 240]`` per field (open, high, low, close, volume, amount,
    num_trades), for the S stocks of the minute partition."""

    family = "minute"

    def __init__(self, ops: SegmentOps, config: FactorConfig, bars: dict[str, Array]) -> None:
        self.ops = ops
        self.xp = ops.xp
        self.config = config
        self.bars = bars
        self.S = int(bars["close"].shape[0])

    def field(self, name: str) -> Array:
        return self.xp.asarray(self.bars[name], dtype=self.xp.float64)

    def rows(self, width: int, n_rows: int | None = None) -> Array:
        """CSR offsets of ``n_rows`` (default S) dense rows of ``width`` elements."""
        return self.ops.rows(self.S if n_rows is None else n_rows, width)

    @cached_property
    def ret(self) -> Array:
        """Returns ``r_k = close_k/close_{k-1} - 1`` (k >= 1), ``r_0 = close_0/open_0 - 1``."""
        xp = self.xp
        close = self.field("close")
        r = xp.empty_like(close)
        with quiet(xp):
            r[:, 0] = close[:, 0] / self.field("open")[:, 0] - 1.0
            r[:, 1:] = close[:, 1:] / close[:, :-1] - 1.0
        return r

    @cached_property
    def volume(self) -> Array:
        return self.field("volume")

    @cached_property
    def num_trades(self) -> Array:
        return self.field("num_trades")

    def row_sum(self, x: Array, mask: Array | None = None) -> Array:
        """Per stock: sum of the finite values of ``x [S, 240]`` where ``mask``."""
        return self.ops.sum(self.rows(x.shape[1]), x, mask)[1]

    def row_moments(self, x: Array) -> Moments:
        return self.ops.moments(self.rows(x.shape[1]), x)

    def row_corr(self, x: Array, y: Array, min_obs: int) -> Array:
        from fbgpu.engine.segments import correlation

        return correlation(self.xp, self.ops.corr_stats(self.rows(x.shape[1]), x, y), min_obs)


class TickContext:
    """One day of a tick table: flat columns (on the backend) plus CSR ``offsets`` over stocks."""

    def __init__(
        self, ops: SegmentOps, config: FactorConfig, offsets: Array, columns: dict[str, Array]
    ) -> None:
        self.ops = ops
        self.xp = ops.xp
        self.config = config
        self.offsets = offsets
        self.columns = columns
        self.S = int(offsets.shape[0] - 1)
        self.n = int(columns["ts"].shape[0])

    def col(self, name: str) -> Array:
        return self.columns[name]

    def seg_sum(self, x: Array, mask: Array | None = None) -> Array:
        return self.ops.sum(self.offsets, x, mask)[1]

    @cached_property
    def early(self) -> Array:
        """Early window on the tick timestamp: ``09:30:00 <= ts < 10:00:00``."""
        ts = self.col("ts")
        return (ts >= T_0930) & (ts < T_1000)

    @cached_property
    def side(self) -> Array:
        return self.col("side")


class TradeContext(TickContext):
    """One day of trades, plus the minute returns ``r [S, 240]`` of the same stocks (NaN rows
    where a stock has trades but no minute bars)."""

    family = "trade"

    def __init__(
        self,
        ops: SegmentOps,
        config: FactorConfig,
        offsets: Array,
        columns: dict[str, Array],
        minute_ret: Array,
    ) -> None:
        super().__init__(ops, config, offsets, columns)
        self.minute_ret = minute_ret

    @cached_property
    def amount(self) -> Array:
        return self.xp.asarray(self.col("amount"), dtype=self.xp.float64)

    @cached_property
    def total_amount(self) -> Array:
        """``T`` per stock: the day's traded amount (CNY)."""
        return self.seg_sum(self.amount)

    @cached_property
    def dlogp(self) -> Array:
        """``log(p_t) - log(p_{t-1})`` within the stock-day; 0 for its first trade."""
        xp = self.xp
        lp = xp.log(xp.asarray(self.col("price"), dtype=xp.float64))
        d = xp.zeros_like(lp)
        d[1:] = lp[1:] - lp[:-1]
        d[segment_starts_mask(xp, self.offsets, self.n)] = 0.0
        return d

    @cached_property
    def buy_orders(self) -> tuple[Array, Array]:
        """``(B, first)``: each trade's buy-order amount ``B_j`` and a one-per-order flag."""
        return self.ops.group_sum(self.offsets, self.col("buy_order_id"), self.amount)

    @cached_property
    def sell_orders(self) -> tuple[Array, Array]:
        """``(S, first)``: each trade's sell-order amount ``S_j`` and a one-per-order flag."""
        return self.ops.group_sum(self.offsets, self.col("sell_order_id"), self.amount)

    @cached_property
    def big_threshold(self) -> tuple[Array, Array]:
        """Per stock: ``(threshold, all_equal)`` of the big-order rule over all its orders.

        ``mean_plus_k_std``: mean and population std over the union of buy and sell orders,
        merged exactly from the two sets' moments (Chan et al.), ``all_equal`` when every order
        amount is exactly the same (then every order is big). ``fixed_notional``: the constant.
        """
        xp = self.xp
        cfg = self.config
        if cfg.big_order_rule == "fixed_notional":
            return xp.full(self.S, cfg.big_order_notional), xp.zeros(self.S, dtype=bool)
        B, fb = self.buy_orders
        Sv, fs = self.sell_orders
        mb = self.ops.moments(self.offsets, B, fb)
        ms = self.ops.moments(self.offsets, Sv, fs)
        nb = mb.n.astype(xp.float64)
        ns = ms.n.astype(xp.float64)
        n = nb + ns
        with quiet(xp):
            mean_b = xp.where(nb > 0, mb.mean, 0.0)
            mean_s = xp.where(ns > 0, ms.mean, 0.0)
            m2b = xp.where(nb > 0, mb.m2, 0.0)
            m2s = xp.where(ns > 0, ms.m2, 0.0)
            mean = (nb * mean_b + ns * mean_s) / n
            delta = mean_s - mean_b
            var = (nb * m2b + ns * m2s + nb * ns / n * delta * delta) / n
            std = xp.sqrt(xp.maximum(var, 0.0))
        lo = xp.fmin(mb.min, ms.min)
        hi = xp.fmax(mb.max, ms.max)
        return mean + cfg.big_order_k * std, lo == hi

    def _is_big(self, order_amount: Array) -> Array:
        from fbgpu.engine.segments import segment_ids

        thr, all_equal = self.big_threshold
        seg = segment_ids(self.xp, self.offsets)
        return (order_amount >= thr[seg]) | all_equal[seg]

    @cached_property
    def big_buy(self) -> Array:
        """Per trade: its buy order is big."""
        return self._is_big(self.buy_orders[0])

    @cached_property
    def big_sell(self) -> Array:
        """Per trade: its sell order is big."""
        return self._is_big(self.sell_orders[0])

    @cached_property
    def net_active_buy(self) -> Array:
        """``NAB [S, 240]``: buyer- minus seller-initiated amount per minute (side 0 ignored)."""
        xp = self.xp
        signed = self.amount * self.side.astype(xp.float64)
        k = minute_index(xp, self.col("ts"))
        return self.ops.bin_sum(self.offsets, k, signed, MINUTES_PER_DAY)

    def ratio(self, num: Array, den: Array) -> Array:
        return ratio(self.xp, num, den)


class OrderContext(TickContext):
    """One day of new orders (placed 09:15:00 <= ts <= 15:00:00 count; others are ignored)."""

    family = "order"

    @cached_property
    def session(self) -> Array:
        ts = self.col("ts")
        return (ts >= T_0915) & (ts <= T_1500)

    @cached_property
    def volume(self) -> Array:
        return self.xp.asarray(self.col("volume"), dtype=self.xp.float64)

    @cached_property
    def price(self) -> Array:
        return self.xp.asarray(self.col("price"), dtype=self.xp.float64)

    def moments(self, mask: Array) -> Moments:
        return self.ops.moments(self.offsets, self.volume, mask)

    @cached_property
    def buy_moments(self) -> Moments:
        """Volume moments of the session's buy orders (shared by skew and kurtosis factors)."""
        return self.moments(self.session & (self.side == 1))

    @cached_property
    def sell_moments(self) -> Moments:
        """Volume moments of the session's sell orders."""
        return self.moments(self.session & (self.side == -1))
