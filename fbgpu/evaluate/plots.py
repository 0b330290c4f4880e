"""Figures of the single-factor test (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fbgpu.evaluate.single import FactorReport


def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_group_nav(report: FactorReport, path: Path) -> Path:
    """Net value of each quantile group relative to the equal-weight pool (group G = TOP)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.4), dpi=90)
    nav = report.group_nav
    # plasma without its pale-yellow end, so every group stays visible on white.
    colors = plt.get_cmap("plasma")(np.linspace(0.0, 0.85, report.groups))
    x = pd.to_datetime(nav.index) if not isinstance(nav.index, pd.RangeIndex) else nav.index
    for g in nav.columns:
        label = f"G{g}" + (" (TOP)" if g == report.groups else "")
        ax.plot(x, nav[g].to_numpy(), color=colors[g - 1], lw=1.2, label=label)
    ax.axhline(1.0, color="grey", lw=0.6)
    ax.set_title(f"{report.name}: group net value relative to the pool", fontsize=10)
    ax.legend(fontsize=7, ncol=min(report.groups, 5), loc="upper left")
    ax.tick_params(labelsize=7)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_top_nav(report: FactorReport, path: Path) -> Path:
    """TOP-portfolio net value (report exhibits 47/54/59): ``prod(1 + r_TOP)`` of the top group,
    ``prod(1 + r_pool)`` of the equal-weight pool, and their ratio (relative strength, right axis),
    compounded over the rebalance periods; returns are fractions per period."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 4), dpi=90)
    top = report.group_returns[report.groups].fillna(0.0)
    pool = report.benchmark.reindex(top.index).fillna(0.0)
    nav_top, nav_pool = (1.0 + top).cumprod(), (1.0 + pool).cumprod()
    x = pd.to_datetime(top.index) if not isinstance(top.index, pd.RangeIndex) else top.index
    ax.plot(x, nav_top.to_numpy(), color="#c0392b", lw=1.5, label="TOP group")
    ax.plot(x, nav_pool.to_numpy(), color="#555555", lw=1.2, label="pool (equal weight)")
    ax2 = ax.twinx()
    ax2.fill_between(x, 1.0, (nav_top / nav_pool).to_numpy(), color="#2e86c1", alpha=0.25,
                     label="TOP / pool (right)")
    ax.set_ylabel("net value", fontsize=8)
    ax2.set_ylabel("relative net value", fontsize=8)
    ax.set_title(f"{report.name}: TOP-portfolio net value", fontsize=10)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left")
    ax.tick_params(labelsize=7)
    ax2.tick_params(labelsize=7)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def monthly_ic(ic: pd.Series) -> pd.DataFrame:
    """Mean RankIC per calendar month, as a years x months (1..12) table (NaN where no date)."""
    x = ic.dropna()
    idx = pd.to_datetime(x.index)
    m = x.groupby([idx.year, idx.month]).mean()
    m.index.names = ["year", "month"]
    return m.unstack("month").reindex(columns=range(1, 13))


def plot_ic_tearsheet(report: FactorReport, path: Path) -> Path:
    """IC tear sheet of one factor: histogram of the per-date RankIC (mean and +-1 sd marked)
    beside the monthly mean RankIC heat map (:func:`monthly_ic`, cells labelled in percent)."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.6), dpi=90,
                                 gridspec_kw={"width_ratios": [1, 1.6]})
    ic = report.ic.dropna()
    a1.hist(ic.to_numpy(), bins=max(5, min(30, len(ic) // 2)), color="#2e86c1", alpha=0.8)
    mu, sd = float(ic.mean()) if len(ic) else 0.0, float(ic.std()) if len(ic) > 1 else 0.0
    a1.axvline(mu, color="#c0392b", lw=1.5, label=f"mean {100 * mu:.2f}%")
    for v in (mu - sd, mu + sd):
        a1.axvline(v, color="#c0392b", lw=0.8, ls="--")
    a1.set_title(f"{report.name}: RankIC per date", fontsize=10)
    a1.legend(fontsize=7)
    a1.tick_params(labelsize=7)
    mon = monthly_ic(report.ic)
    vals = mon.to_numpy(dtype=float)
    lim = max(0.05, float(np.nanmax(np.abs(vals))) if np.isfinite(vals).any() else 0.05)
    a2.imshow(vals, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    for i in range(vals.shape[0]):
        for j in range(vals.shape[1]):
            if np.isfinite(vals[i, j]):
                a2.text(j, i, f"{100 * vals[i, j]:.1f}", ha="center", va="center", fontsize=7,
                        color="white" if abs(vals[i, j]) > 0.6 * lim else "black")
    a2.set_xticks(np.arange(12), labels=[str(k) for k in range(1, 13)], fontsize=7)
    a2.set_yticks(np.arange(len(mon)), labels=[str(y) for y in mon.index], fontsize=7)
    a2.set_title("monthly mean RankIC (%)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_cumulative_ic(reports: list[FactorReport], path: Path, title: str) -> Path:
    """Cumulative RankIC of several factors on one chart.

    Many lines stay distinguishable: 20 colours (``tab20``) times three line styles, so no two of
    up to 60 lines look alike; the legend sits beside the plot, not over it."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(11, 5), dpi=90)
    colors = plt.get_cmap("tab20")(np.arange(20))
    styles = ("-", "--", ":")
    for k, r in enumerate(reports):
        c = r.cumulative_ic
        x = pd.to_datetime(c.index) if not isinstance(c.index, pd.RangeIndex) else c.index
        ax.plot(x, c.to_numpy(), lw=1.2, label=r.name, color=colors[k % 20],
                ls=styles[(k // 20) % 3])
    ax.axhline(0.0, color="grey", lw=0.6)
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=7, ncol=1 if len(reports) <= 15 else 2, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.tick_params(labelsize=7)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_heatmap(matrix: pd.DataFrame, path: Path, title: str) -> Path:
    """A correlation matrix as a heat map (diverging colours, -1..1), each cell labelled with its
    value to two decimals (white text on dark cells)."""
    plt = _plt()
    n, m = matrix.shape
    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * m + 3), max(4.0, 0.42 * n + 1.5)), dpi=90)
    values = matrix.to_numpy(dtype=float)
    im = ax.imshow(values, cmap="RdBu_r", vmin=-1, vmax=1)
    size = 7 if max(n, m) <= 15 else 5
    for i in range(n):
        for j in range(m):
            if np.isfinite(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=size,
                        color="white" if abs(values[i, j]) > 0.6 else "black")
    ax.set_xticks(np.arange(m), labels=[str(c) for c in matrix.columns], rotation=90, fontsize=6)
    ax.set_yticks(np.arange(n), labels=[str(i) for i in matrix.index], fontsize=6)
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_quantile_returns(report: FactorReport, path: Path) -> Path:
    """Quantile mean-return bars (alphalens): mean per-period return of each group minus the
    pool's mean per-period return, in basis points (1 bp = 0.01%), group G = TOP."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.2), dpi=90)
    mean = report.group_returns.mean()
    rel = (mean - float(report.benchmark.mean())) * 1e4
    colors = ["#c0392b" if v < 0 else "#2e86c1" for v in rel.to_numpy()]
    ax.bar([f"G{g}" for g in rel.index], rel.to_numpy(), color=colors)
    ax.axhline(0.0, color="grey", lw=0.6)
    ax.set_ylabel("mean return vs pool (bp / period)", fontsize=8)
    ax.set_title(f"{report.name}: mean return per group", fontsize=10)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_ic_decay(decay: pd.DataFrame, path: Path) -> Path:
    """IC decay: mean RankIC (percent) of each factor (rows) per forward horizon (columns, e.g.
    ``1d``..``20d``), one line per factor."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 3.8), dpi=90)
    colors = plt.get_cmap("tab20")(np.arange(20))
    x = np.arange(decay.shape[1])
    for k, (name, row) in enumerate(decay.iterrows()):
        ax.plot(x, 100 * row.to_numpy(dtype=float), marker="o", lw=1.2, color=colors[k % 20],
                ls=("-", "--", ":")[(k // 20) % 3], label=str(name))
    ax.axhline(0.0, color="grey", lw=0.6)
    ax.set_xticks(x, labels=[str(c) for c in decay.columns], fontsize=7)
    ax.set_xlabel("forward horizon after the T+1 entry", fontsize=8)
    ax.set_ylabel("mean RankIC (%)", fontsize=8)
    ax.set_title("IC decay over horizons", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
