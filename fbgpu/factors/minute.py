"""Minute-bar factors (15): statistics of one day's 240 one-minute bars per stock.

Notation (spec/factors.md): bars ``k = 0..239``; ``r_k = close_k / close_{k-1} - 1`` for
``k >= 1`` and ``r_0 = close_0 / open_0 - 1``; ``a_k = amount_k / num_trades_k``; half-hour
bucket ``h(k) = k // 30``. Moments and correlations drop non-finite values, need ``min_obs_day``
(10) observations over the full day or ``min_obs_window`` (5) inside a 30-minute window, and are
NaN when a side is exactly constant.
"""

from __future__ import annotations

from typing import Any

from fbgpu.engine.segments import correlation, quiet, ratio, skewness
from fbgpu.factors.context import MinuteContext
from fbgpu.factors.registry import factor

Array = Any

_DAY = "min_obs_day (10) observations; NaN if constant"
_WINDOW = "min_obs_window (5) observations; NaN if constant"


@factor("late_skew_ret", "minute", -1, _WINDOW)
def late_skew_ret(c: MinuteContext) -> Array:
    """Skewness of the minute returns of the last 30 minutes: ``skew(r_k, k = 210..239)``."""
    return skewness(c.xp, c.late_ret_moments, c.config.min_obs_window)


@factor("down_vol_perc", "minute", 1)
def down_vol_perc(c: MinuteContext) -> Array:
    """Downside share of realised variance: ``sum(r_k^2 : r_k < 0) / sum(r_k^2)``, all k."""
    down, total = c.down_var_sums
    return ratio(c.xp, down, total)


@factor("corr_ret_lastret", "minute", -1, _DAY)
def corr_ret_lastret(c: MinuteContext) -> Array:
    """First-order autocorrelation of minute returns: ``corr(r_k, r_{k-1})``, k = 1..239."""
    return correlation(c.xp, c.ret_lastret_corr, c.config.min_obs_day)


@factor("corr_close_nextopen", "minute", 1, _DAY)
def corr_close_nextopen(c: MinuteContext) -> Array:
    """Close-to-next-open linkage: ``corr(close_{k-1}, open_k)``, k = 1..239."""
    return correlation(c.xp, c.close_nextopen_corr, c.config.min_obs_day)


def _volume_bucket_share(c: MinuteContext, j: int) -> Array:
    buckets = c.volume_buckets
    return ratio(c.xp, buckets[:, j - 1], buckets.sum(axis=1))


def _register_volume_perc(j: int) -> None:
    def volume_perc(c: MinuteContext) -> Array:
        return _volume_bucket_share(c, j)

    lo = 30 * (j - 1)
    volume_perc.__doc__ = (
        f"Share of the day's volume traded in half-hour bucket {j - 1} (bars {lo}..{lo + 29}): "
        f"``sum(volume_k : k // 30 = {j - 1}) / sum(volume_k)``."
    )
    volume_perc.__name__ = f"volume_perc{j}"
    factor(f"volume_perc{j}", "minute", 1)(volume_perc)


for _j in range(2, 8):
    _register_volume_perc(_j)


@factor("corr_volume_item", "minute", -1, _DAY)
def corr_volume_item(c: MinuteContext) -> Array:
    """Volume vs. trade count: ``corr(volume_k, num_trades_k)``, all k."""
    return correlation(c.xp, c.volume_item_corr, c.config.min_obs_day)


@factor("early_corr_volume_ret", "minute", 1, _WINDOW)
def early_corr_volume_ret(c: MinuteContext) -> Array:
    """Early volume-return correlation: ``corr(volume_k, r_k)``, k = 0..29 (09:30-10:00)."""
    return correlation(c.xp, c.early_volume_ret_corr, c.config.min_obs_window)


@factor("bigorder_ret", "minute", -1, "NaN when no minute has trades")
def bigorder_ret(c: MinuteContext) -> Array:
    """Log return earned in the minutes of the largest trades.

    Among the minutes with trades (``num_trades_k > 0``, n of them), keep the ``ceil(0.3 n)`` with
    the largest amount per trade ``a_k`` (ties keep the earlier minute);
    factor = ``sum(log(1 + r_k))`` over the kept minutes. NaN when the stock-day has no trade.
    """
    xp = c.xp
    count = c.bars["num_trades"]  # as stored: no float64 copy
    traded = count > 0
    with_trades = traded.sum(axis=1).astype(xp.int64)
    frac = c.config.top_frac_fraction
    # Exact integer ceil(frac * n): 0.3 * 10 in floats is 3.0000000000000004, whose ceil is 4.
    keep = -((-with_trades * frac.numerator) // frac.denominator)
    # a_k (the division converts the count exactly); the minutes without trades divide by 0,
    # and topk_mask never selects them (not valid): one array op instead of three
    with quiet(xp):
        per_trade = c.field("amount") / count
    chosen = c.ops.topk_mask(c.rows(240), per_trade, traded, keep).reshape(c.S, 240)
    # log(1 + r) into per_trade's memory (not needed after the selection; already paged in)
    total = c.row_sum(xp.log1p(c.ret, out=per_trade), chosen)
    return xp.where(with_trades > 0, total, xp.nan)


@factor("down_single_amt_perc", "minute", 1)
def down_single_amt_perc(c: MinuteContext) -> Array:
    """Relative trade size in falling minutes:
    ``(sum amount_k / sum num_trades_k over r_k < 0) / (sum amount_k / sum num_trades_k)``."""
    xp = c.xp
    amount_down, trades_down, amount_all, trades_all = c.down_single_sums
    per_trade_down = ratio(xp, amount_down, trades_down)
    per_trade_all = ratio(xp, amount_all, trades_all)
    return ratio(xp, per_trade_down, per_trade_all)


@factor("corr_volume_amplitude", "minute", -1, _DAY)
def corr_volume_amplitude(c: MinuteContext) -> Array:
    """Volume vs. intraminute range: ``corr(volume_k, (high_k - low_k) / open_k)``, all k."""
    return correlation(c.xp, c.volume_amplitude_corr, c.config.min_obs_day)
