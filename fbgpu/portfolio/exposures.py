"""Holdings and active exposures of the enhancement portfolios (pyfolio-style tear sheet).

From the ``weights`` table the backtest writes (one row per held stock: ``date`` = decision date
T, ``portfolio``, ``symbol``, ``weight``), the benchmark's ``index_weights`` and the ``daily``
table of the same date T (so everything is known at T), per decision date and portfolio:

* ``holdings``: number of stocks with weight > 0;
* ``active size``: ``sum_i (w_i - b_i) z_i`` where ``z`` is the cross-sectional z-score of
  ``log(float_cap)`` over the stocks with a daily row on T (units: standard deviations of size);
* ``active industry``: ``0.5 * sum_k |sum_{i in k} w_i - sum_{i in k} b_i|`` over industries
  (fraction of the book that would have to move to match the benchmark's industry weights; 0
  when industry-neutral);
* ``active weight <industry>``: the per-industry active weight ``W_k - B_k`` (long table).

Weights ``w`` and ``b`` are fractions summing to 1 (the portfolio's may sum to less when part of
the book is blocked; the residual counts as cash, with no industry and zero size exposure).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from fbgpu.data.store import Store
from fbgpu.panel.preprocess import zscore

log = logging.getLogger(__name__)


def active_exposures(w: pd.Series, b: pd.Series, industry: pd.Series,
                     log_cap: pd.Series) -> tuple[float, float, pd.Series]:
    """``(active size, active industry, active weight per industry)`` of portfolio weights ``w``
    against benchmark weights ``b`` (both indexed by symbol); ``industry`` and ``log_cap`` are
    indexed by the symbols of the day's cross-section (module doc)."""
    cap = log_cap.dropna()
    # The project's one cross-sectional z-score (ddof 0); NaN for a constant or single cap,
    # counted as no size exposure below.
    z = pd.Series(zscore(cap.to_numpy(dtype=np.float64)[None, :], min_stocks=2)[0], index=cap.index)
    syms = w.index.union(b.index)
    active = w.reindex(syms, fill_value=0.0) - b.reindex(syms, fill_value=0.0)
    size = float((active * z.reindex(syms).fillna(0.0)).sum())
    ind = active.groupby(industry.reindex(syms).fillna("unknown")).sum()
    return size, float(0.5 * ind.abs().sum()), ind


def exposure_table(store: Store | str | Path, index: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per decision date and portfolio of ``index``: holdings, active size and active industry
    (first frame), and the mean active weight per industry and portfolio over the dates
    (second frame, industries x portfolios). Empty frames when the store has no weights."""
    st = store if isinstance(store, Store) else Store(store)
    rows, inds = [], []
    have_bench = set(st.dates("index_weights"))
    for d in st.dates("weights"):
        w = st.read("weights", d).to_pandas()
        w = w[w["portfolio"].astype(str).str.startswith(f"{index}_")]
        if w.empty or d not in have_bench:
            continue
        b = st.read("index_weights", d).to_pandas()
        b = b[b["index"].astype(str) == index]
        b = b.set_index(b["symbol"].astype(str))["weight"]
        day = st.read("daily", d, ["symbol", "float_cap", "industry"]).to_pandas()
        day["symbol"] = day["symbol"].astype(str)
        day = day.set_index("symbol")
        with np.errstate(divide="ignore", invalid="ignore"):
            log_cap = np.log(day["float_cap"].where(day["float_cap"] > 0))
        for p, g in w.groupby(w["portfolio"].astype(str)):
            ws = g.set_index(g["symbol"].astype(str))["weight"]
            size, ind_sum, ind = active_exposures(ws, b, day["industry"].astype(str), log_cap)
            rows.append({"date": d, "portfolio": p, "holdings": int((ws > 0).sum()),
                         "active size": size, "active industry": ind_sum})
            inds.append(ind.rename(p).to_frame().T.assign(date=d))
    table = pd.DataFrame(rows)
    if not inds:
        return table, pd.DataFrame()
    ind_long = pd.concat(inds)
    mean_ind = ind_long.drop(columns="date").fillna(0.0).groupby(level=0).mean().T
    mean_ind.index.name = "industry"
    log.debug("exposures of %s: %d rows", index, len(table))
    return table, mean_ind
