"""The report's model exhibits from the ``scores`` table, through the evaluation API.

:func:`evaluate_models` runs :func:`fbgpu.evaluate.evaluate_factor` (10 groups, RankIC against the
5-day evaluation return ``P_{T+6} / P_{T+1} - 1``, the same pool) on every score column over the
dates that have scores (the out-of-sample period) and lays the results out like the report:

* ``exhibit45_hf`` - HF deep-learning factor vs the equal-weight and trailing-ICIR composites of
  the same 27 factors (evaluated on the same dates; composites as in ``fbgpu evaluate``);
* ``exhibit52_lf`` - LF multi-task factor, the three ablations, and the equal-weight composite
  of the LF inputs (:meth:`fbgpu.models.datasets.DeviceSamples.lf_equal_weight`: what the same
  inputs give without learning);
* ``exhibit57_fusion`` - full-band fusion, HF, LF and the full-band multi-task variant;
* ``style_correlation`` - each model factor's mean cross-sectional correlation with reversal,
  size, amount, turnover and beta (the report's five), volatility, momentum, max return and
  illiquidity (:func:`fbgpu.evaluate.correlation.extended_style_factors`), and with the HF / LF
  model factors; split per block into ``style_correlation_{hf,lf,fused}`` (exhibits 49, 56, 61);
* ``model_correlation`` - the model factors' correlation matrix.

Columns of the three exhibit tables: RankIC mean, RankIC std, IC_IR, IC>0, TOP ann. excess,
TOP IR, TOP win rate, TOP turnover (:data:`fbgpu.evaluate.single.SUMMARY_COLUMNS`). Written under
``<store>/reports/models/`` as CSV + JSON, with figures and an ``index.json`` for the HTML report.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fbgpu.data.store import Store, StoreError
from fbgpu.data.writebehind import StoreWriteBehind
from fbgpu.engine.backend import Backend, get_backend
from fbgpu.evaluate.composite import icir_weights, signed, weighted_composite
from fbgpu.evaluate.correlation import (
    extended_style_factors,
    factor_correlation,
    style_correlation,
)
from fbgpu.evaluate.families import best_single_factor
from fbgpu.evaluate.run import write_table, write_text
from fbgpu.evaluate.single import SUMMARY_COLUMNS, FactorReport, evaluate_factor
from fbgpu.evaluate.stats import rank_ic
from fbgpu.models.api import SCORES_TABLE, read_scores
from fbgpu.models.config import FUSED_COLUMN, MODEL_KINDS, SCORE_COLUMNS, TrainConfig
from fbgpu.panel.market import PoolConfig, load_market, rebalance_indices
from fbgpu.panel.preprocess import PanelConfig

log = logging.getLogger(__name__)

HF_EQUAL = "hf_equal_weight"
HF_ICIR = "hf_icir_weight"
LF_EQUAL = "lf_equal_weight"
BEST_SINGLE = "best_single"
#: Non-learned comparison rows computed here, not read from the scores table.
COMPOSITES = (HF_EQUAL, HF_ICIR, LF_EQUAL, BEST_SINGLE)

#: Rows of each exhibit table, in the report's order (absent columns are skipped).
EXHIBITS: dict[str, tuple[str, list[str]]] = {
    "exhibit45_hf": ("HF deep-learning factor vs linear composites of the 27 factors",
                     [SCORE_COLUMNS["hf"], BEST_SINGLE, HF_EQUAL, HF_ICIR]),
    "exhibit52_lf": ("LF multi-task factor and ablations",
                     [*(SCORE_COLUMNS[k] for k in ("lf", "lf-daily", "lf-separate",
                                                   "lf-unshared")), LF_EQUAL, BEST_SINGLE]),
    "exhibit57_fusion": ("Full-band fusion factor",
                         [FUSED_COLUMN, SCORE_COLUMNS["hf"], SCORE_COLUMNS["lf"],
                          SCORE_COLUMNS["fullband-mtl"], BEST_SINGLE]),
}

#: Per exhibit table: file suffix of its block's figures, the model row it is about, and the
#: report's exhibit numbers of (group NAV, cumulative RankIC, style correlation).
BLOCKS: dict[str, tuple[str, str]] = {
    "exhibit45_hf": ("hf", SCORE_COLUMNS["hf"]),
    "exhibit52_lf": ("lf", SCORE_COLUMNS["lf"]),
    "exhibit57_fusion": ("fused", FUSED_COLUMN),
}

#: Forward-return horizons (trading days after the T+1 entry) of the IC-decay table.
DECAY_HORIZONS: tuple[int, ...] = (1, 2, 5, 10, 20)

#: Display names of the rows.
LABELS: dict[str, str] = {
    "hf_gru": "HF deep-learning", HF_EQUAL: "HF equal-weight", HF_ICIR: "HF ICIR-weighted",
    "lf_mtl": "LF multi-task", "lf_daily": "daily only", "lf_separate": "LF equal-weight of 3",
    "lf_unshared": "LF no shared GRU", LF_EQUAL: "LF equal-weight of inputs",
    "fused": "full-band fusion",
    "fullband_mtl": "full-band multi-task",
    BEST_SINGLE: "best single factor",
}


@dataclass
class ModelEvaluation:
    """Exhibit tables, per-factor reports and correlations of the model factors."""

    tables: dict[str, pd.DataFrame]
    reports: dict[str, FactorReport]
    style_correlation: pd.DataFrame
    model_correlation: pd.DataFrame
    dates: list[Any]
    out_dir: Path | None = None
    notes: list[str] = field(default_factory=list)
    ic_decay: pd.DataFrame | None = None
    """mean RankIC (rows: model factors) per forward horizon in days (:data:`DECAY_HORIZONS`)"""
    truth: pd.DataFrame | None = None
    """on a synthetic store: oracle and recovered RankIC (:func:`fbgpu.evaluate.truth`)"""


def _host(a: Any) -> np.ndarray:
    return a.get() if hasattr(a, "get") else np.asarray(a)


def hf_composites(store: Store, market: Any, rows: np.ndarray, be: Backend,
                   ret_end: int, panel_config: PanelConfig | None = None,
                   pool_config: PoolConfig | None = None,
                   min_stocks: int = 10) -> tuple[dict[str, np.ndarray], str]:
    """Equal-weight and trailing-ICIR composites of the signed HF panel at ``rows``, and the
    best single factor of the single-factor step (direction-signed, ``BEST_SINGLE``; its name
    is returned, "" when the step's table is absent)."""
    from fbgpu.evaluate.run import resolve_directions
    from fbgpu.panel.build import build_panel

    xp = be.xp
    panel = build_panel(store, market, panel_config=panel_config, pool_config=pool_config,
                        backend=be)
    D = len(market.dates)
    # The composites' trailing ICIR weights need the whole rebalance history before the scored
    # dates: the grid with the scores' own spacing and phase.
    every = int(np.min(np.diff(rows))) if len(rows) > 1 else 5
    grid = rebalance_indices(D, every, int(rows[0]) % every)
    grid = grid[grid + ret_end < D]
    dirs = resolve_directions(list(panel.names), store=store)
    sv = signed(panel.values[xp.asarray(grid)], np.array([dirs[n] for n in panel.names], float))
    fwd = xp.asarray(market.forward_returns(1, ret_end)[grid])
    pool = xp.asarray(market.pool(pool_config)[grid])
    # min_obs as in the single-factor tests, so both ICIR composites use the same ICs
    ic = np.stack([_host(rank_ic(sv[:, :, j], fwd, pool, min_obs=min_stocks))
                   for j in range(sv.shape[2])], axis=1)
    weights = icir_weights(ic, grid, known_lag=ret_end)
    uni = panel.universe[xp.asarray(grid)]
    pos = np.searchsorted(grid, rows)
    if not np.array_equal(grid[np.minimum(pos, len(grid) - 1)], rows):
        raise StoreError(f"score dates are not on a regular rebalance grid (every {every} days)")
    out = {
        HF_EQUAL: _host(weighted_composite(sv, None, uni))[pos],
        HF_ICIR: _host(weighted_composite(sv, xp.asarray(weights), uni))[pos],
    }
    sf = store.report_dir / "evaluate" / "single_factor.csv"
    best = best_single_factor(pd.read_csv(sf)) if sf.exists() else None
    if best is not None and best[0] in panel.names:  # already signed by its direction in sv
        out[BEST_SINGLE] = _host(sv[:, :, list(panel.names).index(best[0])])[pos]
        return out, best[0]
    return out, ""


def _lf_composite(store: Store, market: Any, rows: np.ndarray, be: Backend,
                  train_config: TrainConfig | None,
                  pool_config: PoolConfig | None) -> np.ndarray:
    """Equal-weight composite of the LF inputs at ``rows`` (``[len(rows), S]``)."""
    from fbgpu.models.api import load_model_inputs
    from fbgpu.models.datasets import LF_SOURCES, DeviceSamples
    from fbgpu.models.device import torch_device

    cfg = (train_config or TrainConfig()).model_copy(update={"lf_cache_bytes": 0})
    inputs = load_model_inputs(store, cfg, be, ["lf"], market=market, pool_config=pool_config)
    data = DeviceSamples(inputs, cfg, torch_device(be.name), LF_SOURCES)
    return data.lf_equal_weight(rows).double().cpu().numpy()


def evaluate_models(
    store: Store | str | Path,
    backend: str | Backend = "cpu",
    groups: int = 10,
    write: bool = True,
    figures: bool = True,
    panel_config: PanelConfig | None = None,
    pool_config: PoolConfig | None = None,
    train_config: TrainConfig | None = None,
    writer: StoreWriteBehind | None = None,
) -> ModelEvaluation:
    """Evaluate every score column of the store and build the model exhibits (module doc).

    ``train_config`` gives the LF sequence lengths of the LF input composite (default: the
    spec's 40/20/12). With ``writer`` (the demo's) the tables and ``index.json`` are written
    behind (:func:`fbgpu.evaluate.run.write_table`); the figures are drawn here.
    """
    st = store if isinstance(store, Store) else Store(store)
    be = backend if isinstance(backend, Backend) else get_backend(backend)
    market = load_market(st)
    dates, _, cols = read_scores(st, symbols=list(market.symbols))
    ret_end = 6
    index = {d: i for i, d in enumerate(market.dates)}
    rows = np.array([index[d] for d in dates], dtype=np.int64)
    keep = rows + ret_end < len(market.dates)
    rows = rows[keep]
    if len(rows) < 2:
        raise StoreError(f"store {st.root}: fewer than 2 scored dates with a complete "
                         f"{ret_end}-day return; train on more data")
    values = {c: v[keep] for c, v in cols.items()}
    notes = []
    labels = dict(LABELS)
    if st.dates("factors") and SCORE_COLUMNS["hf"] in values:
        comps, best = hf_composites(st, market, rows, be, ret_end, panel_config, pool_config)
        values.update(comps)
        if best:
            labels[BEST_SINGLE] = f"best single factor ({best})"
    elif SCORE_COLUMNS["hf"] in values:
        notes.append("no factors table: HF composites omitted")
    lf_cols = [SCORE_COLUMNS[k] for k in MODEL_KINDS if k.startswith("lf")]
    if any(c in values for c in lf_cols):
        values[LF_EQUAL] = _lf_composite(st, market, rows, be, train_config, pool_config)
    fwd = market.forward_returns(1, ret_end)[rows]
    pool = market.pool(pool_config)[rows]
    didx = pd.DatetimeIndex([market.dates[i] for i in rows], name="date")
    reports = {
        name: evaluate_factor(v, fwd, pool, 1, groups, name=labels.get(name, name), dates=didx)
        for name, v in values.items()
    }
    tables = {}
    for key, (_, names) in EXHIBITS.items():
        present = [n for n in names if n in reports]
        if present:
            tables[key] = pd.DataFrame([reports[n].summary() for n in present])
    order = [FUSED_COLUMN, *SCORE_COLUMNS.values()]
    model_names = [n for n in order if n in values]
    model_names += sorted(n for n in values if n not in order and n not in COMPOSITES)
    stacked = np.stack([values[n] for n in model_names], axis=2)
    styles = {k: v[rows] for k, v in {**market.style_factors(),
                                      **extended_style_factors(market)}.items()}
    scorr = style_correlation(stacked, [LABELS.get(n, n) for n in model_names], styles, pool)
    mcorr = factor_correlation(stacked, [LABELS.get(n, n) for n in model_names], pool)
    for other in ("hf_gru", "lf_mtl"):
        if other in model_names:
            scorr[LABELS[other]] = mcorr[LABELS[other]]
    ev = ModelEvaluation(tables, reports, scorr, mcorr, list(didx.date), notes=notes)
    ev.ic_decay = ic_decay({labels.get(n, n): values[n] for n in model_names if n in values},
                           market, rows, pool)
    if st.dates("synth_truth"):
        from fbgpu.evaluate.truth import truth_table

        ev.truth = truth_table(st, market, rows, pool,
                               {r.name: r.ic for r in reports.values()})
    if write:
        ev.out_dir = _write(st, ev, figures, writer)
    return ev


def ic_decay(values: dict[str, np.ndarray], market: Any, rows: np.ndarray, pool: np.ndarray,
             horizons: tuple[int, ...] = DECAY_HORIZONS) -> pd.DataFrame:
    """Mean RankIC of each ``[R, S]`` score against the forward return over ``h`` days after
    the T+1 entry, ``P_{T+1+h} / P_{T+1} - 1``, for each ``h`` in ``horizons`` (alphalens' IC
    decay). Dates whose ``h``-day return is not complete yet are left out of that horizon."""
    D = len(market.dates)
    out = {}
    for h in horizons:
        ok = rows + 1 + h < D
        fwd = market.forward_returns(1, 1 + h)[rows[ok]]
        out[f"{h}d"] = {n: float(np.nanmean(_host(rank_ic(v[ok], fwd, pool[ok]))))
                        if ok.sum() else float("nan") for n, v in values.items()}
    df = pd.DataFrame(out)
    df.index.name = "factor"
    return df


def window_table(store: Store) -> pd.DataFrame:
    """One row per trained (model, window): dates, validation IC mean over seeds, seconds."""
    rows = []
    for p in sorted((Path(store.root) / "models").glob("*/*/window.json")):
        info = json.loads(p.read_text())
        ics = [v for seed in info.get("valid_ic", {}).values() for v in seed]
        rows.append({
            "model": info.get("kind"), "retrain date": info.get("window"),
            "fit dates": " .. ".join(info.get("fit_dates", [])),
            "validation dates": " .. ".join(info.get("valid_dates", [])),
            "last label date": info.get("last_label_date"),
            "predicts": " .. ".join(info.get("predict_dates", [])),
            "validation IC": float(np.mean(ics)) if ics else float("nan"),
            "seconds": info.get("seconds"),
        })
    return pd.DataFrame(rows)


def _write(store: Store, ev: ModelEvaluation, figures: bool,
           writer: StoreWriteBehind | None = None) -> Path:
    """Tables, figures and ``index.json`` under ``reports/models/``, grouped per block as in the
    report: table (45/52/57), group net value (46/53/58), TOP net value (47/54/59), cumulative
    RankIC (48/55/60), style correlation (49/56/61); then tear-sheet figures, IC decay, the
    retrain windows and, on a synthetic store, the oracle table."""
    out = store.report_dir / "models"
    out.mkdir(parents=True, exist_ok=True)
    _write_table = functools.partial(write_table, writer=writer)
    items: list[dict[str, str]] = []
    ic = pd.DataFrame({r.name: r.ic for r in ev.reports.values()})
    _write_table(ic, out, "rank_ic")
    _write_table(ev.model_correlation, out, "model_correlation")
    _write_table(ev.style_correlation, out, "style_correlation")
    if figures:
        from fbgpu.evaluate.plots import (
            plot_cumulative_ic,
            plot_group_nav,
            plot_ic_decay,
            plot_ic_tearsheet,
            plot_quantile_returns,
            plot_top_nav,
        )
    for key, df in ev.tables.items():
        items.append({"file": _write_table(df, out, key),
                      "caption": f"{EXHIBITS[key][0]} (10 groups, weekly, out of sample)"})
        suffix, main = BLOCKS[key]
        if main not in ev.reports:
            continue
        label = ev.reports[main].name
        if key == "exhibit57_fusion":  # the report's summary page (exhibit 3): the fused row
            _write_table(df.loc[[label]] if label in df.index else df.head(1), out,
                         "exhibit3_fused")
        if figures:
            plot_group_nav(ev.reports[main], out / f"nav_{main}.png")
            items.append({"file": f"nav_{main}.png",
                          "caption": f"{label}: group net value relative to the pool"})
            plot_top_nav(ev.reports[main], out / f"top_nav_{main}.png")
            items.append({"file": f"top_nav_{main}.png",
                          "caption": f"{label}: TOP-portfolio net value vs the pool"})
            rows = [ev.reports[n] for n in EXHIBITS[key][1] if n in ev.reports]
            plot_cumulative_ic(rows, out / f"cumulative_rank_ic_{suffix}.png",
                               f"Cumulative RankIC: {EXHIBITS[key][0]}")
            items.append({"file": f"cumulative_rank_ic_{suffix}.png",
                          "caption": f"Cumulative RankIC: {EXHIBITS[key][0]}"})
        sc = ev.style_correlation
        names = [ev.reports[n].name for n in EXHIBITS[key][1]
                 if n in ev.reports and ev.reports[n].name in sc.index]
        if names:
            items.append({"file": _write_table(sc.loc[names], out, f"style_correlation_{suffix}"),
                          "caption": f"{label} and its comparison rows: mean cross-sectional "
                                     "correlation with common volume-price (style) factors and "
                                     "with the HF / LF model factors"})
    if ev.ic_decay is not None and len(ev.ic_decay):
        items.append({"file": _write_table(ev.ic_decay, out, "ic_decay"),
                      "caption": "IC decay: mean RankIC against the return h days after the "
                                 "T+1 entry"})
    main = [n for n in ("fused", "hf_gru", "lf_mtl") if n in ev.reports]
    if figures:
        if ev.ic_decay is not None and len(ev.ic_decay):
            plot_ic_decay(ev.ic_decay, out / "ic_decay.png")
            items.append({"file": "ic_decay.png", "caption": "IC decay over horizons"})
        for n in main:
            plot_ic_tearsheet(ev.reports[n], out / f"ic_tearsheet_{n}.png")
            items.append({"file": f"ic_tearsheet_{n}.png",
                          "caption": f"{LABELS[n]}: RankIC histogram and monthly RankIC"})
            plot_quantile_returns(ev.reports[n], out / f"quantile_returns_{n}.png")
            items.append({"file": f"quantile_returns_{n}.png",
                          "caption": f"{LABELS[n]}: mean return per group and period "
                                     "relative to the pool"})
        plot_cumulative_ic(list(ev.reports.values()), out / "cumulative_rank_ic.png",
                           "Cumulative RankIC of all model factors and comparison rows")
        items.append({"file": "cumulative_rank_ic.png",
                      "caption": "Cumulative RankIC of all model factors and comparison rows"})
    if ev.truth is not None:
        items.append({"file": _write_table(ev.truth, out, "planted_truth"),
                      "caption": "Ground truth: oracle RankIC of the planted expected return "
                                 "and the share of it each model recovers (docs/synth.md)"})
    wt = window_table(store)
    if len(wt):
        items.append({"file": _write_table(wt.set_index("model"), out, "windows"),
                      "caption": "Rolling retrain windows (validation IC = early-stopping "
                                 "criterion, mean over seeds)"})
    first, last = ev.dates[0], ev.dates[-1]
    text = (f"Out-of-sample scores on {len(ev.dates)} rebalance dates, {first} to {last} "
            f"(table `{SCORES_TABLE}`). " + " ".join(ev.notes))
    write_text(out / "index.json", json.dumps(
        {"title": "Deep-learning factors and full-band fusion", "text": text, "items": items},
        indent=1), writer)
    return out


def summary_columns() -> list[str]:
    """The exhibit tables' columns (the report's layout)."""
    return list(SUMMARY_COLUMNS)
