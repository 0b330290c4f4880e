"""Figures of the index-enhancement backtest (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fbgpu.data.store import atomic_write_bytes

if TYPE_CHECKING:
    from fbgpu.portfolio.backtest import BacktestResult


def _save_png(fig: Any, path: Path) -> Path:
    """Render ``fig`` to PNG, close it, and write the bytes atomically to ``path``."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def cumulative_excess_figure(result: BacktestResult, path: Path) -> Path:
    """Cumulative excess NAV ``prod(1 + r - r_b) - 1`` of every cap (report exhibits 63/66)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4), dpi=110)
    for run in result.runs:
        excess = np.cumprod(1.0 + np.array(run.returns) - result.benchmark) - 1.0
        ax.plot(result.dates, excess * 100, label=f"turnover={run.cap:.0%}", lw=1.3)
    ax.axhline(0, color="grey", lw=0.6)
    ax.set_ylabel("cumulative excess return (%)")
    ax.set_title(f"{result.index} enhancement: cumulative excess return")
    ax.legend(loc="upper left", frameon=False)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    return _save_png(fig, path)


def tearsheet_figure(daily: pd.DataFrame, exposures: pd.DataFrame, mean_industry: pd.DataFrame,
                     index: str, path: Path) -> Path:
    """pyfolio-style tear sheet of one index's enhancement portfolios, six panels:

    * net value of each portfolio and of the benchmark (``prod(1 + r)``);
    * drawdown of the excess NAV ``prod(1 + r - r_b)`` (:func:`fbgpu.portfolio.analytics.drawdown`,
      percent);
    * holdings per decision date; active size exposure (standard deviations of log float cap)
      and active industry share (percent of the book, :mod:`fbgpu.portfolio.exposures`);
    * mean active weight per industry (percent) of each portfolio.

    ``daily`` has ``date``, ``benchmark`` and one column of daily returns per portfolio (the
    backtest's ``daily_returns_<index>.csv``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fbgpu.portfolio.analytics import drawdown, nav

    ports = [c for c in daily.columns if c not in ("date", "benchmark")]
    x = pd.to_datetime(daily["date"])
    bench = daily["benchmark"].to_numpy(dtype=float)
    fig, axes = plt.subplots(3, 2, figsize=(12, 10), dpi=90)
    (a_nav, a_dd), (a_hold, a_size), (a_ind, a_bar) = axes
    for p in ports:
        r = daily[p].to_numpy(dtype=float)
        a_nav.plot(x, nav(r), lw=1.2, label=p)
        a_dd.plot(x, -100 * drawdown(r - bench), lw=1.1, label=p)
    a_nav.plot(x, nav(bench), color="black", lw=1.5, ls="--", label=f"{index} (benchmark)")
    a_nav.set_title("net value", fontsize=10)
    a_dd.set_title("drawdown of the excess net value (%)", fontsize=10)
    if len(exposures):
        ex = exposures.assign(date=pd.to_datetime(exposures["date"]))
        for p, g in ex.groupby("portfolio"):
            a_hold.plot(g["date"], g["holdings"], lw=1.1, label=str(p))
            a_size.plot(g["date"], g["active size"], lw=1.1, label=str(p))
            a_ind.plot(g["date"], 100 * g["active industry"], lw=1.1, label=str(p))
    a_hold.set_title("holdings (stocks with weight > 0)", fontsize=10)
    a_size.set_title("active size exposure (sd of log float cap)", fontsize=10)
    a_size.axhline(0.0, color="grey", lw=0.6)
    a_ind.set_title("active industry weight, half the sum of |active| (%)", fontsize=10)
    if len(mean_industry):
        m = 100 * mean_industry
        pos = np.arange(len(m))
        width = 0.8 / max(1, m.shape[1])
        for k, p in enumerate(m.columns):
            a_bar.bar(pos + k * width, m[p].to_numpy(), width=width, label=str(p))
        a_bar.set_xticks(pos + 0.4 - width / 2, labels=[str(i) for i in m.index], rotation=90,
                         fontsize=6)
        a_bar.axhline(0.0, color="grey", lw=0.6)
    a_bar.set_title("mean active weight per industry (%)", fontsize=10)
    for ax in axes.flat:
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, frameon=False)
    for ax in (a_nav, a_dd, a_hold, a_size, a_ind):
        for lbl in ax.get_xticklabels():
            lbl.set_rotation(30)
    fig.suptitle(f"{index} enhancement: tear sheet", fontsize=12)
    fig.tight_layout()
    return _save_png(fig, path)
