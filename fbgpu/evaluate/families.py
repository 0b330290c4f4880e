"""Per-family single-factor exhibits: the research report's minute / trade / order tables.

The report presents the 27 factors by data family: the single-factor table of the minute-bar
factors (exhibit 7), of the tick-trade factors (26) and of the tick-order factors (37), and the
correlation matrix within each family (23/24 minute, 35 trade, 42 order). This module cuts the
evaluation's full tables (``single_factor``, ``factor_correlation``: mean cross-sectional
Pearson correlation of the direction-signed factors) into those pieces; it computes nothing new.

Files written under ``reports/evaluate/`` (stems fixed, the HTML report anchors them):

* ``single_factor_<family>.csv`` - rows of that family (exhibits 7, 26, 37);
* ``corr_heatmap_<family>.png`` - the family's correlation heat map with cell values
  (exhibits 23, 35, 42);
* ``corr_<family>.csv`` - the same matrix as a table (exhibit 24 for the minute family, the
  report's "correlation, continued" table).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from fbgpu.data.store import Store

log = logging.getLogger(__name__)

#: Data families in the report's order, with their display names.
FAMILIES: dict[str, str] = {"minute": "minute-bar", "trade": "tick-trade",
                            "order": "tick-order"}


def factor_families(names: list[str], store: Store | None = None) -> dict[str, str]:
    """Family (``minute``/``trade``/``order``) of each factor in ``names``, from the factor
    catalog (built-ins and the store's user factors); unknown names are left out."""
    from fbgpu.factors.compute import factor_catalog

    fam = {e["name"]: str(e["family"]) for e in factor_catalog(store)}
    return {n: fam[n] for n in names if n in fam}


def write_family_exhibits(
    out_dir: Path,
    summary: pd.DataFrame,
    fcorr: pd.DataFrame,
    families: dict[str, str],
    write_table: Callable[[pd.DataFrame, Path, str], str],
    figures: bool = True,
) -> list[dict[str, str]]:
    """Write the per-family tables and heat maps (module doc); return their ``index.json``
    items. ``summary`` is indexed by factor name, ``fcorr`` is the factor x factor matrix."""
    from fbgpu.evaluate.plots import plot_heatmap

    items: list[dict[str, str]] = []
    for fam, label in FAMILIES.items():
        names = [n for n in summary.index if families.get(n) == fam]
        if not names:
            continue
        items.append({"file": write_table(summary.loc[names], out_dir, f"single_factor_{fam}"),
                      "caption": f"Single-factor test of the {len(names)} {label} factors "
                                 "(10 groups, weekly, direction-signed)"})
        cols = [n for n in names if n in fcorr.columns]
        corr = fcorr.loc[cols, cols]
        if figures and len(cols) > 1:
            p = plot_heatmap(corr, out_dir / f"corr_heatmap_{fam}.png",
                             f"Correlation of the {label} factors (mean cross-sectional)")
            items.append({"file": p.name, "caption": f"Correlation of the {label} factors "
                          "(mean cross-sectional Pearson, direction-signed)"})
        stem = write_table(corr, out_dir, f"corr_{fam}")
        if fam == "minute":
            items.append({"file": stem, "caption": "Correlation of the minute-bar factors as "
                          "a table (the report's continuation table)"})
    log.debug("family exhibits: %s", [it["file"] for it in items])
    return items


def best_single_factor(summary: pd.DataFrame) -> tuple[str, int] | None:
    """The factor with the highest direction-signed ``RankIC mean`` in a single-factor table
    (columns ``factor``, ``direction``, ``RankIC mean``), and its direction; None if empty.

    Chosen ex post over the whole evaluation window, which favours the single factor in any
    comparison against it (the report's "best single factor" row of exhibits 45/52/57)."""
    if "factor" not in summary or "RankIC mean" not in summary:
        return None
    t = summary.dropna(subset=["RankIC mean"])
    if t.empty:
        return None
    row = t.loc[t["RankIC mean"].idxmax()]
    return str(row["factor"]), int(row["direction"]) if "direction" in t else 1
