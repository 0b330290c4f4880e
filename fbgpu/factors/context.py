"""Per-day, per-family inputs of the factors, with the intermediates they share (computed once).

A context holds one source's arrays for one day *on the backend* (numpy or cupy) and the segment
primitives (:class:`fbgpu.engine.segments.SegmentOps`). Shared intermediates (minute returns, the
reconstructed orders and their "big" flags, early-window masks, ``dlogp``) are cached properties,
so computing several factors of a family touches the raw ticks once per intermediate, not once per
factor. Everything here is written against ``xp``: the same code runs on both backends.

Times are nanoseconds since midnight, exchange time (:mod:`fbgpu.data.bars` constants).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any

import numpy as np

from fbgpu.data.bars import NS_PER_MIN, T_0915, T_0930, T_1000, T_1130, T_1300, T_1500, minute_of_ts
from fbgpu.data.schemas import MINUTES_PER_DAY, ORDER_TYPE_LIMIT
from fbgpu.engine.pooled import pooled_mean_var
from fbgpu.engine.segments import (
    BigOrderRule,
    CorrStats,
    Moments,
    SegmentOps,
    quiet,
    ratio,
)
from fbgpu.factors.config import FactorConfig

Array = Any


#: Minute-bar windows: the last 30 minutes are bars ``LATE_FROM..239``, the early window
#: (09:30-10:00) bars ``0..EARLY_BARS - 1``; volume buckets are ``BUCKET_BARS`` bars wide.
LATE_FROM, EARLY_BARS, BUCKET_BARS = 210, 30, 30
#: The early window on a tick timestamp, ``lo <= ts < hi`` (09:30-10:00).
EARLY_WINDOW = (T_0930, T_1000)
#: The orders that count, ``lo <= ts <= hi`` (09:15-15:00, both ends included).
ORDER_SESSION = (T_0915, T_1500)


def minute_index(xp: Any, ts: Array) -> Array:
    """Minute 0..239 of each tick timestamp on the bar grid (spec/factors.md "Minute bars").

    ``t < 09:30`` -> 0; ``09:30 <= t < 11:30`` -> ``(t - 09:30) // 1 min``; the lunch break ->
    119; ``13:00 <= t < 15:00`` -> ``120 + (t - 13:00) // 1 min``; ``t >= 15:00`` -> 239.
    int16 on the CPU (the bar builder's kernel; the CPU ``bin_sum`` takes narrow bins), int64 on
    the GPU: use it as bin indices only.
    """
    if xp is np:
        # Same mapping, compiled (the bar builder's own kernel): one pass instead of five. int16
        # as it comes: the CPU bin_sum takes narrow bins, so no int64 copy.
        return minute_of_ts(ts)
    morning = (ts - T_0930) // NS_PER_MIN
    afternoon = 120 + (ts - T_1300) // NS_PER_MIN
    k = xp.where(ts < T_1130, morning, xp.where(ts < T_1300, 119, afternoon))
    return xp.clip(k, 0, MINUTES_PER_DAY - 1)


def time_window(ts: Array, lo: int, hi: int, include_hi: bool = False) -> Array:
    """``lo <= ts < hi`` (``<= hi`` with ``include_hi``), with one boolean temporary fewer than
    the plain expression (the second comparison is and-ed in place)."""
    out = ts >= lo
    out &= (ts <= hi) if include_hi else (ts < hi)
    return out


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
            # in place: no [S, 239] temporaries (fresh memory faulted in page by page)
            xp.divide(close[:, 1:], close[:, :-1], out=r[:, 1:])
            xp.subtract(r[:, 1:], 1.0, out=r[:, 1:])
        return r

    @cached_property
    def volume(self) -> Array:
        return self.field("volume")

    @cached_property
    def num_trades(self) -> Array:
        return self.field("num_trades")

    @cached_property
    def volume_buckets(self) -> Array:
        """``[S, 8]``: volume per half-hour bucket ``h = k // 30`` (shared by volume_perc2..7)."""
        n = MINUTES_PER_DAY // BUCKET_BARS
        return self.ops.sum(self.rows(BUCKET_BARS, self.S * n), self.volume)[1].reshape(self.S, n)

    @cached_property
    def amplitude(self) -> Array:
        """Intraminute range ``(high_k - low_k) / open_k``."""
        xp = self.xp
        with quiet(xp):
            amplitude = xp.subtract(self.field("high"), self.field("low"))
            return xp.divide(amplitude, self.field("open"), out=amplitude)  # in place

    @cached_property
    def late_ret_moments(self) -> Moments:
        """Moments of the last 30 minutes' returns ``r_k``, k = 210..239."""
        return self.row_moments(self.ret[:, LATE_FROM:])

    @cached_property
    def down_var_sums(self) -> tuple[Array, Array]:
        """``(sum r_k^2 over r_k < 0, sum r_k^2)``."""
        r2 = self.ret * self.ret
        return self.row_sum(r2, self.ret < 0), self.row_sum(r2)

    @cached_property
    def down_single_sums(self) -> tuple[Array, Array, Array, Array]:
        """``(sum amount_k, sum num_trades_k)`` over ``r_k < 0``, then over all k."""
        amount = self.field("amount")
        down = self.ret < 0
        return (self.row_sum(amount, down), self.row_sum(self.num_trades, down),
                self.row_sum(amount), self.row_sum(self.num_trades))

    @cached_property
    def ret_lastret_corr(self) -> CorrStats:
        """Co-moments of ``(r_k, r_{k-1})``, k = 1..239."""
        return self.row_corr_stats(self.ret[:, 1:], self.ret[:, :-1])

    @cached_property
    def close_nextopen_corr(self) -> CorrStats:
        """Co-moments of ``(close_{k-1}, open_k)``, k = 1..239."""
        return self.row_corr_stats(self.field("close")[:, :-1], self.field("open")[:, 1:])

    @cached_property
    def volume_item_corr(self) -> CorrStats:
        """Co-moments of ``(volume_k, num_trades_k)``."""
        return self.row_corr_stats(self.volume, self.num_trades)

    @cached_property
    def early_volume_ret_corr(self) -> CorrStats:
        """Co-moments of ``(volume_k, r_k)``, k = 0..29."""
        return self.row_corr_stats(self.volume[:, :EARLY_BARS], self.ret[:, :EARLY_BARS])

    @cached_property
    def volume_amplitude_corr(self) -> CorrStats:
        """Co-moments of ``(volume_k, amplitude_k)``."""
        return self.row_corr_stats(self.volume, self.amplitude)

    def row_corr_stats(self, x: Array, y: Array) -> CorrStats:
        """Per stock: co-moments of the finite pairs of two ``[S, L]`` arrays' rows."""
        return self.ops.corr_stats(self.rows(x.shape[1]), x, y)

    def row_sum(self, x: Array, mask: Array | None = None) -> Array:
        """Per stock: sum of the finite values of ``x [S, 240]`` where ``mask``."""
        return self.ops.sum(self.rows(x.shape[1]), x, mask)[1]

    def row_moments(self, x: Array) -> Moments:
        return self.ops.moments(self.rows(x.shape[1]), x)

    def row_corr(self, x: Array, y: Array, min_obs: int) -> Array:
        from fbgpu.engine.segments import correlation

        return correlation(self.xp, self.row_corr_stats(x, y), min_obs)

    def subset(self, lo: int, hi: int) -> MinuteContext:
        """The same day restricted to stocks ``lo:hi`` (a fresh context: nothing cached)."""
        return MinuteContext(self.ops, self.config, {k: v[lo:hi] for k, v in self.bars.items()})


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
        """Column ``name`` as stored (flat over the day's rows, stock after stock)."""
        return self.columns[name]

    def _slice(self, lo: int, hi: int) -> tuple[Array, dict[str, Array]]:
        """CSR offsets and columns of stocks ``lo:hi`` (offsets rebased to 0)."""
        # A named download (the error path that localises a failing stock is the only caller).
        off = self.offsets.get() if hasattr(self.offsets, "get") else self.offsets
        a, b = int(off[lo]), int(off[hi])
        return self.offsets[lo:hi + 1] - a, {k: v[a:b] for k, v in self.columns.items()}

    def subset(self, lo: int, hi: int) -> TickContext:
        """The same day restricted to stocks ``lo:hi`` (a fresh context: nothing cached)."""
        return type(self)(self.ops, self.config, *self._slice(lo, hi))

    def seg_sum(self, x: Array, mask: Array | None = None) -> Array:
        return self.ops.sum(self.offsets, x, mask)[1]

    @cached_property
    def early(self) -> Array:
        """Early window on the tick timestamp: ``09:30:00 <= ts < 10:00:00``."""
        return time_window(self.col("ts"), *EARLY_WINDOW)

    @cached_property
    def side(self) -> Array:
        return self.col("side")


#: Bits of a trade's flag code (:attr:`TradeContext.flags`, uint8): the filters the trade
#: factors combine. Every factor sum over trades is a sum over some of the 32 codes.
EARLY, BUY, SELL, BIG_BUY, BIG_SELL = 1, 2, 4, 8, 16
N_CODES = 32


class TradeFlags:
    """The 32 flag codes as boolean vectors, one per bit: ``f.early[k]`` is True when code k has
    the early bit. A factor states its filter as a predicate over these (``lambda f: f.early &
    f.big_buy``) and :meth:`TradeContext.amount_where` sums the codes that pass."""

    def __init__(self) -> None:
        k = np.arange(N_CODES)
        self.all = np.ones(N_CODES, dtype=bool)
        self.early = (k & EARLY) > 0
        self.buy = (k & BUY) > 0
        self.sell = (k & SELL) > 0
        self.big_buy = (k & BIG_BUY) > 0
        self.big_sell = (k & BIG_SELL) > 0


FLAGS = TradeFlags()


class TradeContext(TickContext):
    """One day of trades, plus the minute returns ``r [S, 240]`` of the same stocks (NaN rows
    where a stock has trades but no minute bars).

    The trade factors are sums over filtered trades. Rather than one masked pass per factor,
    every trade gets a flag code (early window, side, big buy order, big sell order: 5 bits) and
    one :meth:`~fbgpu.engine.segments.SegmentOps.bin_sum` per summed quantity (amount, dlogp)
    gives ``[S, 32]`` partial sums per code; a factor's filtered sum adds the codes its filter
    accepts (:meth:`amount_where`, :meth:`dlogp_where`). The raw trades are read twice in total
    for all eight factors instead of about twenty times.
    """

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

    def subset(self, lo: int, hi: int) -> TradeContext:
        return TradeContext(self.ops, self.config, *self._slice(lo, hi), self.minute_ret[lo:hi])

    @cached_property
    def amount(self) -> Array:
        return self.xp.asarray(self.col("amount"), dtype=self.xp.float64)

    @cached_property
    def log_price(self) -> Array:
        """``log(p_t)`` of every trade (float64)."""
        return self.ops.log(self.xp.asarray(self.col("price"), dtype=self.xp.float64))

    @cached_property
    def dlogp(self) -> Array:
        """``log(p_t) - log(p_{t-1})`` within the stock-day; 0 for its first trade."""
        xp = self.xp
        lp = self.log_price
        n = lp.shape[0]
        # One slot more than the trades: every segment start, empty segments' (== the next
        # start, or n) included, is a valid index, so the starts are zeroed by one scatter with
        # no boolean compaction (which would cost a device->host sync on the GPU).
        d = xp.empty(n + 1, dtype=xp.float64)
        d[:1] = 0.0
        xp.subtract(lp[1:], lp[:-1], out=d[1:n])
        d[self.offsets[:-1]] = 0.0  # a stock-day's first trade has no predecessor
        return d[:n]

    @cached_property
    def buy_orders(self) -> tuple[Array, Array]:
        """``(B, first)``: each trade's buy-order amount ``B_j`` and a one-per-order flag."""
        return self.ops.group_sum(self.offsets, self.col("buy_order_id"), self.amount)

    @cached_property
    def sell_orders(self) -> tuple[Array, Array]:
        """``(S, first)``: each trade's sell-order amount ``S_j`` and a one-per-order flag."""
        return self.ops.group_sum(self.offsets, self.col("sell_order_id"), self.amount)

    @cached_property
    def order_moments(self) -> tuple[Moments, Moments]:
        """Per stock, the moments of the buy orders' amounts ``B_j`` and of the sell orders'
        ``S_j`` (one value per order). Shared by the big-order threshold and the
        concentration (sums of squares)."""
        B, fb = self.buy_orders
        Sv, fs = self.sell_orders
        return self.ops.moments(self.offsets, B, fb), self.ops.moments(self.offsets, Sv, fs)

    @cached_property
    def order_square_sums(self) -> tuple[Array, Array]:
        """Per stock: ``(sum B_j^2, sum S_j^2)`` over the orders, as ``n (m2 + mean^2)`` from
        :attr:`order_moments` (the same sum, no extra pass; 0 without orders)."""
        xp = self.xp
        out = []
        for m in self.order_moments:
            with quiet(xp):
                sq = m.n * (m.m2 + m.mean * m.mean)
            out.append(xp.where(m.n > 0, sq, 0.0))
        return out[0], out[1]

    @cached_property
    def big_threshold(self) -> tuple[Array, Array]:
        """Per stock: ``(threshold, all_equal)`` of the big-order rule over all its orders
        (:func:`big_order_threshold` of :attr:`order_moments`)."""
        return big_order_threshold(self.xp, self.config, *self.order_moments)

    def _is_big(self, order_amount: Array) -> Array:
        thr, all_equal = self.big_threshold
        return self.ops.threshold_mask(self.offsets, order_amount, thr, all_equal)

    @cached_property
    def big_buy(self) -> Array:
        """Per trade: its buy order is big."""
        return self._is_big(self.buy_orders[0])

    @cached_property
    def big_sell(self) -> Array:
        """Per trade: its sell order is big."""
        return self._is_big(self.sell_orders[0])

    @cached_property
    def flags(self) -> Array:
        """Per trade, the uint8 code ``EARLY | BUY | SELL | BIG_BUY | BIG_SELL`` of the bits
        that hold (side +1 sets BUY, side -1 sets SELL, side 0 neither)."""
        xp = self.xp
        u8 = xp.uint8
        code = self.early.astype(u8)
        # In place, one bit at a time (a bool viewed as uint8 is 0/1): one byte-wide temporary
        # per bit, never a wider one.
        for bit, cond in ((BUY, self.side == 1), (SELL, self.side == -1),
                          (BIG_BUY, self.big_buy), (BIG_SELL, self.big_sell)):
            code |= cond.view(u8) << (bit.bit_length() - 1)
        return code

    @cached_property
    def amount_bins(self) -> Array:
        """``[S, 32]``: per stock and flag code, the sum of the trades' amounts."""
        return self.ops.bin_sum(self.offsets, self.flags, self.amount, N_CODES)

    @cached_property
    def dlogp_bins(self) -> Array:
        """``[S, 32]``: per stock and flag code, the sum of ``dlogp``."""
        return self.ops.bin_sum(self.offsets, self.flags, self.dlogp, N_CODES)

    def amount_where(self, where: Callable[[TradeFlags], np.ndarray]) -> Array:
        """Per stock: the amount of the trades whose flags pass ``where(FLAGS)``."""
        return self._codes_sum(self.amount_bins, where)

    def dlogp_where(self, where: Callable[[TradeFlags], np.ndarray]) -> Array:
        """Per stock: the sum of ``dlogp`` over the trades whose flags pass ``where(FLAGS)``."""
        return self._codes_sum(self.dlogp_bins, where)

    def _codes_sum(self, bins: Array, where: Callable[[TradeFlags], np.ndarray]) -> Array:
        """Sum of the kept codes' columns, added one at a time in ascending code order
        (:meth:`~fbgpu.engine.segments.SegmentOps.ordered_column_sum`): an all-buy stock's
        ``buy / total`` is exactly 1.0 on both backends, and ties stay ties in the ranks."""
        return self.ops.ordered_column_sum(bins, np.flatnonzero(where(FLAGS)))

    @cached_property
    def total_amount(self) -> Array:
        """``T`` per stock: the day's traded amount (CNY)."""
        return self.amount_where(lambda f: f.all)

    @cached_property
    def net_active_buy(self) -> Array:
        """``NAB [S, 240]``: buyer- minus seller-initiated amount per minute (side 0 ignored)."""
        # amount * side: numpy/cupy convert the int8 side inside the multiply, no float copy.
        signed = self.amount * self.side
        k = minute_index(self.xp, self.col("ts"))
        return self.ops.bin_sum(self.offsets, k, signed, MINUTES_PER_DAY)

    def ratio(self, num: Array, den: Array) -> Array:
        return ratio(self.xp, num, den)


class CancelTicks(TickContext):
    """One day of cancellations (``ts``, ``order_id``, ``volume``, ``side``), CSR over the *order*
    context's stocks (a stock without cancellations has an empty segment). ``order_id`` names
    the cancelled order (:attr:`OrderContext` ``order_id``); ``side`` is the cancelled order's
    side (+1 buy, -1 sell, 0 unknown)."""

    family = "cancel"

    @cached_property
    def volume(self) -> Array:
        """Cancelled volumes (shares) as the reductions read them."""
        return self.ops.as_values(self.col("volume"))


class OrderContext(TickContext):
    """One day of new orders (placed 09:15:00 <= ts <= 15:00:00 count; others are ignored).

    ``cancels`` is the same stocks' cancellations (:class:`CancelTicks`) when a requested factor
    was registered with ``cancels=True`` and the day has a ``cancels`` partition, else None.
    """

    family = "order"

    def __init__(self, ops: SegmentOps, config: FactorConfig, offsets: Array,
                 columns: dict[str, Array], cancels: CancelTicks | None = None) -> None:
        super().__init__(ops, config, offsets, columns)
        self.cancels = cancels

    def subset(self, lo: int, hi: int) -> OrderContext:
        c = self.cancels.subset(lo, hi) if self.cancels is not None else None
        return OrderContext(self.ops, self.config, *self._slice(lo, hi), c)  # type: ignore[arg-type]

    @cached_property
    def session(self) -> Array:
        return time_window(self.col("ts"), *ORDER_SESSION, include_hi=True)

    @cached_property
    def volume(self) -> Array:
        """Order volumes as the reductions read them (no float64 copy on the CPU)."""
        return self.ops.as_values(self.col("volume"))

    @cached_property
    def price(self) -> Array:
        return self.ops.as_values(self.col("price"))

    def moments(self, mask: Array) -> Moments:
        return self.ops.moments(self.offsets, self.volume, mask)

    @cached_property
    def buy(self) -> Array:
        """Session buy orders."""
        out = self.side == 1
        out &= self.session
        return out

    @cached_property
    def buy_moments(self) -> Moments:
        """Volume moments of the session's buy orders (shared by skew and kurtosis factors)."""
        return self.moments(self.buy)

    @cached_property
    def sell_moments(self) -> Moments:
        """Volume moments of the session's sell orders."""
        return self.moments(self.session & (self.side == -1))

    @cached_property
    def early_moments(self) -> Moments:
        """Volume moments of the session's orders placed in the early window."""
        return self.moments(self.session & self.early)

    @cached_property
    def buy_limit_corr(self) -> CorrStats:
        """(volume, price) co-moments of the session's buy limit orders."""
        mask = self.buy & (self.col("order_type") == ORDER_TYPE_LIMIT)
        return self.ops.corr_stats(self.offsets, self.volume, self.price, mask)


def big_order_rule(config: FactorConfig) -> BigOrderRule:
    """:func:`big_order_threshold`'s rule as the numbers a one-pass kernel takes."""
    if config.big_order_rule == "fixed_notional":
        return BigOrderRule(config.big_order_k, config.big_order_notional)
    if config.big_order_rule == "mean_plus_k_std":
        return BigOrderRule(config.big_order_k)
    raise ValueError(f"big_order_rule {config.big_order_rule!r}: no kernel form")


def big_order_threshold(xp: Any, config: FactorConfig, buy: Moments,
                        sell: Moments) -> tuple[Array, Array]:
    """Per stock: ``(threshold, all_equal)`` of the big-order rule, from the moments of its buy
    orders' and sell orders' amounts (one value per order).

    ``mean_plus_k_std``: mean and population std over the union of buy and sell orders,
    merged exactly from the two sets' moments (Chan et al.), threshold ``mean + k std``;
    ``all_equal`` when every order amount is exactly the same (then every order is big).
    ``fixed_notional``: the constant. Elementwise per stock, so computing it on a subset of the
    stocks gives the same bits for them (:func:`fbgpu.factors.fused.prime_trades` does, per
    group of stocks). The CPU's one-pass trade kernel applies the same rule per stock
    (:class:`fbgpu.engine.segments.BigOrderRule`; the pooling is one function for both,
    :func:`fbgpu.engine.pooled.pooled_mean_var`, and a test holds the two to the same bits)."""
    S = int(buy.n.shape[0])
    if config.big_order_rule == "fixed_notional":
        return xp.full(S, config.big_order_notional), xp.zeros(S, dtype=bool)
    nb = buy.n.astype(xp.float64)
    ns = sell.n.astype(xp.float64)
    with quiet(xp):
        mean, var = pooled_mean_var(nb, xp.where(nb > 0, buy.mean, 0.0),
                                    xp.where(nb > 0, buy.m2, 0.0), ns,
                                    xp.where(ns > 0, sell.mean, 0.0),
                                    xp.where(ns > 0, sell.m2, 0.0))
        std = xp.sqrt(xp.maximum(var, 0.0))
    lo = xp.fmin(buy.min, sell.min)
    hi = xp.fmax(buy.max, sell.max)
    return mean + config.big_order_k * std, lo == hi
