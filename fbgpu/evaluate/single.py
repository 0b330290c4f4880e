"""Single-factor test (spec/research.md "Single-factor test"), in the spirit of alphalens.

:func:`evaluate_factor` takes any factor - a pandas DataFrame (dates x symbols) or a ``[D, S]``
array - with the matching forward returns and pool, and returns a :class:`FactorReport` whose
tables are pandas objects. Definitions (all on the evaluated dates, the rebalance dates):

* **RankIC** on date t: Spearman correlation of the direction-signed factor with the forward
  return over the pool's stocks where both are finite. Summary: mean, std (``ddof = 1``),
  ``IC_IR = mean / std``, share of dates with IC > 0; cumulative RankIC = running sum.
* **Quantile groups**: the direction-signed factor is cut into ``groups`` equal-count groups per
  date (``pandas.qcut`` rule); group ``groups`` (TOP) is the predicted best. Group return =
  equal-weight mean of its stocks' forward returns; benchmark = equal-weight mean return of the
  pool (stocks with a finite return).
* **Excess** ``e_t = r_group,t - r_bench,t``; relative net value ``prod(1 + e)``.
* **TOP metrics**: annualized excess ``prod(1 + e)^(P / N) - 1`` (geometric, P periods a year,
  default 250 / 5 = 50, N periods with a finite excess); IR ``mean(e) / std(e) * sqrt(P)``;
  win rate = share of periods with ``e > 0``; turnover = mean two-sided turnover
  ``sum |w_t - w_{t-1}|`` of the equal-weight TOP portfolio between consecutive rebalances.

The evaluation is correct only when consecutive evaluated dates are one holding period apart
(returns over ``T+1..T+6`` and a rebalance every 5 days): pass the rebalance dates, or daily data
with ``rebalance_every=5``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fbgpu.engine.backend import array_module
from fbgpu.evaluate.stats import (
    group_means,
    masked_mean,
    quantile_bins,
    rank_ic,
    top_turnover,
)

#: Column names of the summary table, in the report's order (exhibits 7, 26, 37, 42, 45).
SUMMARY_COLUMNS = [
    "RankIC mean", "RankIC std", "IC_IR", "IC>0",
    "TOP ann. excess", "TOP IR", "TOP win rate", "TOP turnover",
]

DEFAULT_PERIODS_PER_YEAR = 250 / 5


@dataclass
class FactorReport:
    """Everything the single-factor test produces for one factor (host pandas objects)."""

    name: str
    direction: int
    groups: int
    periods_per_year: float
    ic: pd.Series  # RankIC of the signed factor per date
    group_returns: pd.DataFrame  # dates x groups 1..G (G = TOP)
    benchmark: pd.Series  # equal-weight pool return per date
    turnover: pd.Series  # TOP two-sided turnover per date (NaN on the first)
    group_counts: pd.DataFrame  # stocks per group per date
    meta: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ IC
    @property
    def cumulative_ic(self) -> pd.Series:
        """Running sum of the RankIC (NaN dates count as 0)."""
        return self.ic.fillna(0.0).cumsum()

    def ic_summary(self) -> pd.Series:
        """RankIC mean, std (ddof 1), IC_IR and share of dates with IC > 0."""
        ic = self.ic.dropna()
        std = float(ic.std(ddof=1)) if len(ic) > 1 else float("nan")
        mean = float(ic.mean()) if len(ic) else float("nan")
        return pd.Series({
            "RankIC mean": mean,
            "RankIC std": std,
            "IC_IR": mean / std if std and std == std and std > 0 else float("nan"),
            "IC>0": float((ic > 0).mean()) if len(ic) else float("nan"),
            "dates": len(ic),
        })

    # ------------------------------------------------------------------ groups
    @property
    def excess(self) -> pd.DataFrame:
        """Per-period excess return of each group over the benchmark."""
        return self.group_returns.sub(self.benchmark, axis=0)

    @property
    def group_nav(self) -> pd.DataFrame:
        """Net value of each group relative to the benchmark: ``prod(1 + excess)``."""
        return (1.0 + self.excess.fillna(0.0)).cumprod()

    @property
    def top_excess(self) -> pd.Series:
        return self.excess[self.groups]

    def mean_group_returns(self) -> pd.Series:
        """Mean per-period return of each group (the quantile bar chart)."""
        return self.group_returns.mean()

    def top_summary(self) -> pd.Series:
        """TOP group: annualized excess, IR, win rate, mean turnover."""
        return performance(self.top_excess, self.turnover, self.periods_per_year)

    def summary(self) -> pd.Series:
        """One row of the report's table (:data:`SUMMARY_COLUMNS`)."""
        s = pd.concat([self.ic_summary(), self.top_summary()])
        return s[SUMMARY_COLUMNS].rename(self.name)


def performance(excess: pd.Series, turnover: pd.Series | None,
                periods_per_year: float = DEFAULT_PERIODS_PER_YEAR) -> pd.Series:
    """Annualized excess (geometric), IR, win rate and mean turnover of per-period excesses."""
    e = excess.dropna()
    n = len(e)
    if n:
        growth = float(np.prod(1.0 + e.to_numpy()))
        ann = growth ** (periods_per_year / n) - 1.0 if growth > 0 else -1.0
        sd = float(e.std(ddof=1)) if n > 1 else float("nan")
        # A constant excess has no volatility (its float std is rounding noise): IR undefined.
        flat = not sd > 1e-12 * max(abs(float(e.mean())), 1e-300)
        ir = float("nan") if flat else float(e.mean()) / sd * math.sqrt(periods_per_year)
        win = float((e > 0).mean())
    else:
        ann = ir = win = float("nan")
    to = float(turnover.dropna().mean()) if turnover is not None and turnover.notna().any() \
        else float("nan")
    return pd.Series({"TOP ann. excess": ann, "TOP IR": ir, "TOP win rate": win,
                      "TOP turnover": to})


def _to_array(obj: Any, name: str, like: pd.DataFrame | None,
              shape: tuple[int, int] | None) -> Any:
    """A DataFrame (aligned to ``like``) or an array-like -> a 2-D array, with shape checks."""
    if isinstance(obj, pd.DataFrame):
        if like is not None:
            obj = obj.reindex(index=like.index, columns=like.columns)
        return obj.to_numpy(dtype=np.float64 if name != "pool" else bool, na_value=np.nan
                            if name != "pool" else False)
    xp = array_module(obj)
    a = xp.asarray(obj)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D [dates, stocks], got shape {a.shape}")
    if shape is not None and a.shape != shape:
        raise ValueError(f"{name} has shape {a.shape}, the factor has shape {shape}")
    return a


def evaluate_factor(
    factor: pd.DataFrame | Any,
    returns: pd.DataFrame | Any,
    pool: pd.DataFrame | Any | None = None,
    direction: int = 1,
    groups: int = 5,
    *,
    name: str = "factor",
    dates: Any = None,
    rebalance_every: int = 1,
    periods_per_year: float = DEFAULT_PERIODS_PER_YEAR,
    min_stocks: int = 10,
) -> FactorReport:
    """Single-factor test of ``factor`` against ``returns`` over ``pool``.

    Args:
        factor: dates x symbols DataFrame, or a ``[D, S]`` numpy/cupy array.
        returns: forward returns aligned to the factor's dates (row t = the return earned by a
            position formed from row t, e.g. ``Market.forward_returns()``); a DataFrame is
            reindexed to the factor's labels.
        pool: bool mask of the same shape (None = every stock with finite values).
        direction: +1 if high values predict high returns, -1 otherwise; the factor is multiplied
            by it before everything, so the RankIC reported is that of the signed factor.
        groups: number of quantile groups (5 for single factors, 10 for composites).
        name: label of the factor in the tables.
        dates: labels of the rows (default: the DataFrame's index or 0..D-1).
        rebalance_every: evaluate rows ``0, k, 2k, ...`` only (daily input with k-day returns).
        periods_per_year: evaluated periods per year for annualizing (250 / 5).
        min_stocks: dates with fewer valid stocks get no IC and no groups.
    """
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction!r}")
    if groups < 2:
        raise ValueError(f"groups must be >= 2, got {groups}")
    like = factor if isinstance(factor, pd.DataFrame) else None
    f = _to_array(factor, "factor", None, None)
    shape = tuple(f.shape)
    r = _to_array(returns, "returns", like, shape)
    xp = array_module(f)
    r = xp.asarray(r, dtype=xp.float64)
    if pool is None:
        p = xp.ones(shape, dtype=bool)
    else:
        p = xp.asarray(_to_array(pool, "pool", like, shape), dtype=bool)
    if dates is None:
        dates = like.index if like is not None else pd.RangeIndex(shape[0], name="date")
    dates = pd.Index(dates)
    if len(dates) != shape[0]:
        raise ValueError(f"{len(dates)} dates for {shape[0]} factor rows")
    rows = np.arange(0, shape[0], rebalance_every)
    f = xp.asarray(f, dtype=xp.float64)[rows] * direction
    r, p, dates = r[rows], p[rows], dates[rows]

    ok = p & xp.isfinite(f) & xp.isfinite(r)
    enough = ok.sum(axis=1) >= min_stocks
    ok &= enough[:, None]
    ic = rank_ic(f, r, ok, min_obs=max(min_stocks, 3))
    bins = quantile_bins(xp.where(ok, f, xp.nan), groups)
    means, counts = group_means(r, bins, groups)
    bench = masked_mean(r, p)
    turnover = top_turnover(bins, groups - 1)

    def host(a: Any) -> np.ndarray:
        return a.get() if hasattr(a, "get") else np.asarray(a)

    cols = pd.Index(range(1, groups + 1), name="group")
    dates = dates.rename("date")
    return FactorReport(
        name=name,
        direction=direction,
        groups=groups,
        periods_per_year=periods_per_year,
        ic=pd.Series(host(ic), index=dates, name=name),
        group_returns=pd.DataFrame(host(means), index=dates, columns=cols),
        benchmark=pd.Series(np.where(host(enough), host(bench), np.nan), index=dates,
                            name="benchmark"),
        turnover=pd.Series(host(turnover), index=dates, name="turnover"),
        group_counts=pd.DataFrame(host(counts), index=dates, columns=cols),
    )
