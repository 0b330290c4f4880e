"""Figures of the index-enhancement backtest (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fbgpu.data.store import atomic_write_bytes

if TYPE_CHECKING:
    from fbgpu.portfolio.backtest import BacktestResult


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
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path
