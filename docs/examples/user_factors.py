"""Eight example user factors, two per family (docs/user-factors.md).

Compute them with the built-ins::

    fbgpu factors --store STORE --factors-module docs/examples/user_factors.py
    fbgpu factors check docs/examples/user_factors.py

Every function gets one day's context of its family and returns one float64 per stock of that
context, written against ``ctx.xp`` and ``ctx.ops`` only, so it runs unchanged on the CPU and
GPU backends. The docstring is the formula.
"""

from fbgpu.factors.api import (
    T_0930,
    T_1000,
    CancelTicks,
    MinuteContext,
    OrderContext,
    TradeContext,
    factor,
    quiet,
    ratio,
    skewness,
    time_window,
)

# ---------------------------------------------------------------------------- minute bars


@factor("minute_amihud", "minute", 1, "min_obs_day (10) minutes with amount > 0")
def minute_amihud(ctx: MinuteContext):
    """Amihud illiquidity: mean over minutes with ``amount_k > 0`` of ``|r_k| / amount_k``,
    times 1e8 (CNY). NaN with fewer than ``min_obs_day`` such minutes."""
    xp = ctx.xp
    amount = ctx.field("amount")
    traded = amount > 0
    with quiet(xp):
        illiq = xp.abs(ctx.ret) / xp.where(traded, amount, 1.0) * 1e8
    n, total = ctx.ops.sum(ctx.rows(240), illiq, traded)
    with quiet(xp):
        mean = total / n
    return xp.where(n >= ctx.config.min_obs_day, mean, xp.nan)


@factor("minute_up_volume_share", "minute", -1)
def minute_up_volume_share(ctx: MinuteContext):
    """Share of the day's volume traded in up minutes: ``sum(volume_k | r_k > 0) /
    sum(volume_k)``; NaN on a day without volume."""
    up = ctx.ret > 0
    return ratio(ctx.xp, ctx.row_sum(ctx.volume, up), ctx.row_sum(ctx.volume))


# ---------------------------------------------------------------------------- trades


@factor("active_sell_amt_perc", "trade", 1)
def active_sell_amt_perc(ctx: TradeContext):
    """Seller-initiated share of the day's amount: ``sum(amount_t | side_t = -1) / T``."""
    return ctx.ratio(ctx.amount_where(lambda f: f.sell), ctx.total_amount)


@factor("trade_size_skew", "trade", -1, "min_obs_day (10) trades; NaN if constant")
def trade_size_skew(ctx: TradeContext):
    """Skewness of the trades' volumes (shares) over the day."""
    m = ctx.ops.moments(ctx.offsets, ctx.col("volume"))
    return skewness(ctx.xp, m, ctx.config.min_obs_day)


# ---------------------------------------------------------------------------- new orders


@factor("order_buy_volume_share", "order", 1)
def order_buy_volume_share(ctx: OrderContext):
    """Buy share of the session's new-order volume: ``sum(volume | buy) / sum(volume)`` over
    orders placed 09:15 <= ts <= 15:00."""
    buy = ctx.ops.sum(ctx.offsets, ctx.volume, ctx.buy)[1]
    total = ctx.ops.sum(ctx.offsets, ctx.volume, ctx.session)[1]
    return ratio(ctx.xp, buy, total)


@factor("early_order_size_cv", "order", -1, "min_obs_window (5) orders")
def early_order_size_cv(ctx: OrderContext):
    """Coefficient of variation ``std / mean`` (population std) of the volumes of the orders
    placed 09:30 <= ts < 10:00; NaN with fewer than ``min_obs_window`` orders."""
    xp = ctx.xp
    m = ctx.moments(time_window(ctx.col("ts"), T_0930, T_1000))
    with quiet(xp):
        cv = xp.sqrt(m.m2) / m.mean
    return xp.where(m.n >= ctx.config.min_obs_window, cv, xp.nan)


# ---------------------------------------------------------------------------- cancellations


@factor("cancel_volume_ratio", "order", -1, cancels=True)
def cancel_volume_ratio(ctx: OrderContext):
    """Cancelled volume over new-order volume of the day: ``sum(cancel volume) /
    sum(new order volume, 09:15-15:00)``; NaN without new orders."""
    c: CancelTicks = ctx.cancels
    cancelled = ctx.ops.sum(c.offsets, c.volume)[1]
    placed = ctx.ops.sum(ctx.offsets, ctx.volume, ctx.session)[1]
    return ratio(ctx.xp, cancelled, placed)


@factor("buy_cancel_imbalance", "order", -1, cancels=True)
def buy_cancel_imbalance(ctx: OrderContext):
    """Side imbalance of the cancellations: ``(V_buy - V_sell) / (V_buy + V_sell)``, ``V`` the
    cancelled volume of buy (side +1) and sell (side -1) orders; NaN without cancellations."""
    c: CancelTicks = ctx.cancels
    v_buy = ctx.ops.sum(c.offsets, c.volume, c.side == 1)[1]
    v_sell = ctx.ops.sum(c.offsets, c.volume, c.side == -1)[1]
    return ratio(ctx.xp, v_buy - v_sell, v_buy + v_sell)
