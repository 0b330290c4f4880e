"""Tick-by-tick trade factors (8), built on the reconstructed orders of each stock-day.

Order reconstruction: the day's trades of a stock grouped by ``buy_order_id`` give the buy orders'
amounts ``B_j``, grouped by ``sell_order_id`` the sell orders' ``S_j``; together they are the
day's orders. An order is big under :attr:`FactorConfig.big_order_rule` (default: amount >= mean +
1 std over all the stock-day's orders; all amounts equal -> all big). A trade's *active* order is
its buy order when ``side = +1`` and its sell order when ``side = -1``. ``dlogp`` is the log price
change from the previous trade of the stock-day (0 for the first). Early = ``09:30 <= ts < 10:00``
on the trade timestamp.

Sums over filtered trades are 0 when nothing passes; ratios are NaN only when their denominator is
0 (or not finite); stocks without trades that day get NaN for the whole family.

Side unknown: a stock-day none of whose trades has side +1 or -1 (call-auction prints carry side
0, so in practice every continuous-session trade has side 0: a vendor file without a usable BS
flag) has no aggressor information. The factors built on the side are NaN there, not 0
(:func:`side_known`): ``early_active_bigorder_ret``, ``early_active_buy_perc``, and the two
``corr_netactivebuy_*`` (NAB is identically 0 then, a constant, so the correlation is NaN).
Ingest counts such trades (``trades_side_unknown``, docs/ingest.md).
"""

from __future__ import annotations

from typing import Any

from fbgpu.engine.segments import correlation
from fbgpu.factors.context import TradeContext
from fbgpu.factors.registry import factor

Array = Any


def side_known(c: TradeContext) -> Array:
    """Per stock: some trade of the day has a side (+1 or -1), i.e. the amount of the trades
    with a side is > 0 (trade amounts are positive)."""
    return c.amount_where(lambda f: f.buy | f.sell) > 0


def _where_side_known(c: TradeContext, x: Array) -> Array:
    """``x`` where the stock-day's side is known, NaN elsewhere."""
    return c.xp.where(side_known(c), x, c.xp.nan)


@factor("bigorder_amt_perc", "trade", 1)
def bigorder_amt_perc(c: TradeContext) -> Array:
    """Share of the day's amount in big orders:
    ``(sum B_j over big buy orders + sum S_j over big sell orders) / (2 T)``, T = total amount.

    ``sum B_j`` over big buy orders is the amount of the trades whose buy order is big (each
    order's amount is the sum of its trades), likewise for sell orders. A non-finite trade
    amount drops that trade only (ingest rejects them, so stored data has none)."""
    big = c.amount_where(lambda f: f.big_buy) + c.amount_where(lambda f: f.big_sell)
    return c.ratio(big, 2.0 * c.total_amount)


@factor("early_bigorder_buy_perc", "trade", 1)
def early_bigorder_buy_perc(c: TradeContext) -> Array:
    """Big buyers' share of big-order flow in the early window:
    ``A_buy / (A_buy + A_sell)`` over early trades, ``A_buy`` = amount of trades whose buy order
    is big, ``A_sell`` likewise for the sell order (bigness judged on whole-day amounts)."""
    a_buy = c.amount_where(lambda f: f.early & f.big_buy)
    a_sell = c.amount_where(lambda f: f.early & f.big_sell)
    return c.ratio(a_buy, a_buy + a_sell)


@factor("bigorder_ret2", "trade", -1)
def bigorder_ret2(c: TradeContext) -> Array:
    """Log return carried by big-order trades: ``sum(dlogp_t)`` over trades whose buy or sell
    order is big (0 when the day has no such trade)."""
    return c.dlogp_where(lambda f: f.big_buy | f.big_sell)


@factor("early_active_bigorder_ret", "trade", 1)
def early_active_bigorder_ret(c: TradeContext) -> Array:
    """Early log return of big aggressors: ``sum(dlogp_t)`` over early trades whose active order
    (buy order if side = +1, sell order if side = -1) is big. NaN when the stock-day's side is
    unknown (no trade with side +1/-1)."""
    return _where_side_known(
        c, c.dlogp_where(lambda f: f.early & ((f.buy & f.big_buy) | (f.sell & f.big_sell))))


@factor("concentration_diff", "trade", -1)
def concentration_diff(c: TradeContext) -> Array:
    """Buy minus sell amount concentration: ``sum(B_j^2) / T^2 - sum(S_j^2) / T^2``."""
    b2, s2 = c.order_square_sums
    t2 = c.total_amount * c.total_amount
    return c.ratio(b2, t2) - c.ratio(s2, t2)


@factor("early_active_buy_perc", "trade", 1)
def early_active_buy_perc(c: TradeContext) -> Array:
    """Early buyer-initiated share: over early trades, amount with side = +1 / total amount.
    NaN when the stock-day's side is unknown (no trade with side +1/-1), not 0."""
    return _where_side_known(
        c, c.ratio(c.amount_where(lambda f: f.early & f.buy), c.amount_where(lambda f: f.early)))


@factor("corr_netactivebuy_lastret", "trade", -1, "min_obs_day (10) pairs; NaN if constant")
def corr_netactivebuy_lastret(c: TradeContext) -> Array:
    """Net active buying after a move: ``corr(NAB_k, r_{k-1})``, k = 1..239, where ``NAB_k`` =
    buyer- minus seller-initiated amount in minute k (0 without trades) and r the bar return."""
    stats = c.ops.lagged_row_corr_stats(c.net_active_buy, c.minute_ret, 1)
    return correlation(c.xp, stats, c.config.min_obs_day)


@factor("corr_netactivebuy_nextret", "trade", -1, "min_obs_day (10) pairs; NaN if constant")
def corr_netactivebuy_nextret(c: TradeContext) -> Array:
    """Net active buying before a move: ``corr(NAB_{k-1}, r_k)``, k = 1..239."""
    stats = c.ops.lagged_row_corr_stats(c.net_active_buy, c.minute_ret, -1)
    return correlation(c.xp, stats, c.config.min_obs_day)
