"""Performance analytics of a daily portfolio against its benchmark (report exhibits 64-68).

All functions take *daily simple returns* (fractions, not percent) aligned on trading dates and
return fractions. Conventions (they reproduce the report's own arithmetic: e.g. exhibit 64's IR
3.31 = 19.46% / 5.88% and Calmar 2.70 = 19.46% / 7.21%):

* annualized return ``R = NAV_end^(A / N) - 1`` with ``NAV = prod(1 + r)``, ``N`` daily returns,
  ``A`` = 250 trading days a year;
* annualized volatility ``sigma = std(r, ddof=1) * sqrt(A)``; Sharpe ``= R / sigma`` (no
  risk-free rate, as in the report);
* maximum drawdown ``max_t (1 - NAV_t / max_{s <= t} NAV_s)`` with ``NAV_0 = 1`` included;
* daily excess return ``e_t = r_t - r^b_t``; the excess NAV is ``prod(1 + e)``; annualized
  excess return, tracking error (``std(e, ddof=1) sqrt(A)``) and the excess max drawdown are the
  three statistics above applied to ``e``; information ratio ``= annualized excess / tracking
  error``; Calmar ``= annualized excess / excess max drawdown``;
* monthly win rate: share of calendar months (partial first/last months included) whose
  compounded excess return ``prod_{t in month}(1 + e_t) - 1`` is positive;
* average turnover: mean two-sided turnover ``sum_i |w_after - w_before|`` over the rebalances,
  excluding the initial build from cash (which is 100% one-sided by construction).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np

TRADING_DAYS = 250


def nav(returns: np.ndarray) -> np.ndarray:
    """Net asset value path ``prod_{s <= t}(1 + r_s)`` (starting value 1 is implicit)."""
    return np.cumprod(1.0 + np.asarray(returns, dtype=np.float64))


def annualized_return(returns: np.ndarray, periods: int = TRADING_DAYS) -> float:
    """``NAV_end^(periods / N) - 1``; NaN for an empty series."""
    r = np.asarray(returns, dtype=np.float64)
    if r.size == 0:
        return float("nan")
    end = float(np.prod(1.0 + r))
    if end <= 0:
        return -1.0
    return end ** (periods / r.size) - 1.0


def annualized_volatility(returns: np.ndarray, periods: int = TRADING_DAYS) -> float:
    """``std(r, ddof=1) * sqrt(periods)``; NaN with fewer than two returns."""
    r = np.asarray(returns, dtype=np.float64)
    if r.size < 2:
        return float("nan")
    return float(np.std(r, ddof=1) * np.sqrt(periods))


def drawdown(returns: np.ndarray) -> np.ndarray:
    """Drawdown after each return, ``1 - NAV_t / max_{s <= t} NAV_s`` with ``NAV_0 = 1`` (>= 0,
    fractions; one value per return)."""
    path = np.r_[1.0, nav(returns)]
    return (1.0 - path / np.maximum.accumulate(path))[1:]


def max_drawdown(returns: np.ndarray) -> float:
    """Largest peak-to-trough loss of the NAV, as a positive fraction (0 if it never falls)."""
    dd = drawdown(returns)
    return float(np.max(dd)) if dd.size else 0.0


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 and np.isfinite(a) else float("nan")


def monthly_win_rate(dates: Sequence[dt.date], excess: np.ndarray) -> float:
    """Share of calendar months whose compounded excess return is > 0."""
    e = np.asarray(excess, dtype=np.float64)
    if e.size == 0:
        return float("nan")
    keys = np.array([d.year * 12 + d.month for d in dates])
    wins = []
    for k in np.unique(keys):
        wins.append(np.prod(1.0 + e[keys == k]) - 1.0 > 0)
    return float(np.mean(wins))


def yearly_returns(dates: Sequence[dt.date], returns: np.ndarray) -> dict[int, float]:
    """Compounded return per calendar year (partial years as they are)."""
    r = np.asarray(returns, dtype=np.float64)
    years = np.array([d.year for d in dates])
    return {int(y): float(np.prod(1.0 + r[years == y]) - 1.0) for y in np.unique(years)}


def performance(
    dates: Sequence[dt.date],
    returns: np.ndarray,
    benchmark: np.ndarray | None = None,
    turnovers: Sequence[float] | None = None,
    periods: int = TRADING_DAYS,
) -> dict[str, float]:
    """The statistics of exhibits 64/67 for one portfolio (see the module docstring).

    Without a benchmark only the absolute statistics are returned (the benchmark's own row).
    """
    r = np.asarray(returns, dtype=np.float64)
    ann = annualized_return(r, periods)
    vol = annualized_volatility(r, periods)
    out = {
        "annual_return": ann,
        "annual_volatility": vol,
        "sharpe": _ratio(ann, vol),
        "max_drawdown": max_drawdown(r),
    }
    if benchmark is None:
        return out
    e = r - np.asarray(benchmark, dtype=np.float64)
    ex = annualized_return(e, periods)
    te = annualized_volatility(e, periods)
    mdd = max_drawdown(e)
    out.update({
        "annual_excess": ex,
        "tracking_error": te,
        "excess_max_drawdown": mdd,
        "information_ratio": _ratio(ex, te),
        "calmar": _ratio(ex, mdd),
        "monthly_win_rate": monthly_win_rate(dates, e),
        "avg_turnover": float(np.mean(turnovers)) if turnovers else float("nan"),
    })
    return out


#: Column labels of the performance table, in the report's order (exhibits 64 and 67).
PERFORMANCE_COLUMNS: dict[str, str] = {
    "annual_return": "annualized return",
    "annual_volatility": "annualized volatility",
    "sharpe": "Sharpe ratio",
    "max_drawdown": "max drawdown",
    "annual_excess": "annualized excess return",
    "tracking_error": "tracking error",
    "excess_max_drawdown": "excess max drawdown",
    "information_ratio": "information ratio",
    "calmar": "Calmar ratio",
    "monthly_win_rate": "monthly win rate vs benchmark",
    "avg_turnover": "avg two-sided turnover",
}
