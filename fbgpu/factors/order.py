"""Tick-by-tick order factors (4): the distribution of new orders' sizes.

Only new orders placed ``09:15:00 <= ts <= 15:00:00`` count (cancellations are a separate table).
Early = ``09:30 <= ts < 10:00``. Moments need ``min_obs_day`` (10) orders (``min_obs_window`` (5)
in the early window) and are NaN when all volumes are exactly equal; a difference is NaN when
either side is.
"""

from __future__ import annotations

from typing import Any

from fbgpu.engine.segments import correlation, kurtosis, skewness
from fbgpu.factors.context import OrderContext
from fbgpu.factors.registry import factor

Array = Any

_DAY = "min_obs_day (10) orders per side; NaN if constant"


@factor("skew_order_diff", "order", -1, _DAY)
def skew_order_diff(c: OrderContext) -> Array:
    """``skew(volume of buy orders) - skew(volume of sell orders)``."""
    n = c.config.min_obs_day
    return skewness(c.xp, c.buy_moments, n) - skewness(c.xp, c.sell_moments, n)


@factor("kurt_order_diff", "order", -1, _DAY)
def kurt_order_diff(c: OrderContext) -> Array:
    """``kurt(volume of buy orders) - kurt(volume of sell orders)`` (excess kurtosis)."""
    n = c.config.min_obs_day
    return kurtosis(c.xp, c.buy_moments, n) - kurtosis(c.xp, c.sell_moments, n)


@factor("early_kurt_order", "order", -1, "min_obs_window (5) orders; NaN if constant")
def early_kurt_order(c: OrderContext) -> Array:
    """Excess kurtosis of the volume of all orders placed 09:30 <= ts < 10:00."""
    return kurtosis(c.xp, c.early_moments, c.config.min_obs_window)


@factor("corr_buyorder_volume_price", "order", -1, "min_obs_day (10) pairs; NaN if constant")
def corr_buyorder_volume_price(c: OrderContext) -> Array:
    """``corr(volume, price)`` over buy limit orders."""
    return correlation(c.xp, c.buy_limit_corr, c.config.min_obs_day)
