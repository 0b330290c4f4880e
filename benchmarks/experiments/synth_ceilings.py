"""Linear ceilings of the planted signal on the synthetic market, per feature set (issue 15).

Reproduces docs/synth.md, "Why the models recover little of the oracle": for each feature set
a model could see, the least-squares fit of the planted expected return ``mu_T`` (in sample, on
the truth: a ceiling for any linear use of those features) and the same regression fitted on
the *realised* 5-day return of the dates before the test period (out of sample, no truth used:
what a plain linear model learns). Each fitted signal is scored like a model: weekly RankIC
against the evaluation return ``P_{T+6} / P_{T+1} - 1`` on the model test dates (the ``scores``
table's dates with a complete return) and the default scoring pool. ``rc`` = mean over the fit
dates of the rank correlation of the in-sample fit with ``mu_T`` and with its two planted parts
(``a z_T``, informed flow; ``b pi_T``, price pressure: ``b < 0``, so this is the correlation
with the pressure's expected reversal).

The building blocks are :mod:`fbgpu.evaluate.truth`'s (``lagged_features``: each feature
z-scored per date over the pool, clipped at 5, missing = 0; ``linear_ceiling``; the fit grid of
every ``FIT_EVERY``-th day); the three feature sets that the report shows in every synthetic run
are marked ``*`` and must equal its ``planted_truth.csv`` rows.

Usage (a store made by ``fbgpu demo``, or ``fbgpu synth --preset demo`` + ``fbgpu factors`` +
``fbgpu evaluate`` + ``fbgpu train``)::

    python benchmarks/experiments/synth_ceilings.py --store ./fbgpu-demo \\
        [--out benchmarks/experiments/results/synth_ceilings.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from fbgpu.data.store import Store
from fbgpu.evaluate.stats import rank_ic
from fbgpu.evaluate.truth import (
    FIT_EVERY,
    ORACLE,
    ORACLE_PI,
    ORACLE_Z,
    PANEL_LAGS,
    RAW_LAGS,
    RETURN_LAGS,
    lagged_features,
    linear_ceiling,
    past_returns,
    planted_signals,
    stored_cube,
)
from fbgpu.models.api import read_scores
from fbgpu.panel.market import load_market

log = logging.getLogger("synth_ceilings")

RET_END = 6  # the evaluation return P_{T+6} / P_{T+1} - 1

#: (name, table or None for the returns alone, lags, with the 20 past returns, reported by truth.py)
FEATURE_SETS: tuple[tuple[str, str | None, tuple[int, ...], bool, bool], ...] = (
    ("HF panel at T (20-day smoothed, neutralized)", "panel", (0,), False, False),
    ("HF panel at lags 0,1,2,3,5,10,20,39", "panel", PANEL_LAGS, False, True),
    ("raw daily factors at T", "factors", (0,), False, False),
    ("raw daily factors, lags 0-9", "factors", RAW_LAGS, False, False),
    ("raw daily factors lags 0-9 + 20 past daily returns", "factors", RAW_LAGS, True, True),
    ("20 past daily returns", None, (), True, True),
)


def _mean_ic(signal: np.ndarray, target: np.ndarray, pool: np.ndarray) -> tuple[float, float]:
    """Mean and t-statistic (mean / (sd / sqrt(n))) of the per-row rank correlation."""
    ic = np.asarray(rank_ic(signal, target, pool), dtype=float)
    ic = ic[np.isfinite(ic)]
    if len(ic) < 2:
        return float("nan"), float("nan")
    return float(ic.mean()), float(ic.mean() / (ic.std(ddof=1) / np.sqrt(len(ic))))


def ceilings(store: Store) -> dict[str, Any]:
    market = load_market(store)
    D = len(market.dates)
    dates, _, _ = read_scores(store)
    index = {d: i for i, d in enumerate(market.dates)}
    rows = np.array([index[d] for d in dates], dtype=np.int64)
    rows = rows[rows + RET_END < D]
    grid = np.arange(max(PANEL_LAGS), D, FIT_EVERY)
    fit_rows = np.union1d(grid, rows)
    eval_idx = np.searchsorted(fit_rows, rows)
    fit_idx = np.searchsorted(fit_rows, grid)
    pool_all = np.asarray(market.pool(), dtype=bool)
    pool = pool_all[fit_rows]
    sig = planted_signals(store, market, fit_rows)
    if sig is None:
        raise SystemExit(f"{store.root}: no synth_truth (not a synthetic store)")
    fwd_all = np.asarray(market.forward_returns(1, RET_END))
    fwd = fwd_all[fit_rows]
    # out of sample: fit on the realised return of the grid dates whose return window ends
    # before the first test date
    oos_idx = fit_idx[grid + RET_END < rows[0]]
    oracle = {k: _mean_ic(sig[k][eval_idx], fwd[eval_idx], pool[eval_idx])
              for k in (ORACLE, ORACLE_Z, ORACLE_PI)}
    returns = lagged_features(past_returns(market), fit_rows, tuple(range(RETURN_LAGS)), pool)
    cubes: dict[str, np.ndarray | None] = {}
    out: list[dict[str, Any]] = []
    for name, table, lags, with_returns, reported in FEATURE_SETS:
        t0 = time.perf_counter()
        parts = []
        if table is not None:
            key = f"{table}{lags}"
            if key not in cubes:
                cubes[key] = stored_cube(store, market, table, fit_rows, lags)
            cube = cubes[key]
            if cube is None:
                log.warning("%s: table %s missing on some dates, skipped", name, table)
                continue
            parts.append(lagged_features(cube, fit_rows, lags, pool))
        if with_returns:
            parts.append(returns)
        feats = np.concatenate(parts, axis=2)
        fitted = linear_ceiling(feats, sig[ORACLE], pool, fit_idx, np.arange(len(fit_rows)))
        rc = {k: _mean_ic(fitted[fit_idx], sig[k][fit_idx], pool[fit_idx])[0]
              for k in (ORACLE, ORACLE_Z, ORACLE_PI)}
        ceil, ceil_t = _mean_ic(fitted[eval_idx], fwd[eval_idx], pool[eval_idx])
        oos = linear_ceiling(feats, fwd, pool, oos_idx, eval_idx)
        oos_ic, oos_t = _mean_ic(oos, fwd[eval_idx], pool[eval_idx])
        row = {"features": name, "n": int(feats.shape[2]), "reported_by_truth_py": reported,
               "rc_mu": rc[ORACLE], "rc_z": rc[ORACLE_Z], "rc_pi": rc[ORACLE_PI],
               "ceiling_rankic": ceil, "ceiling_t": ceil_t,
               "share_of_oracle": ceil / oracle[ORACLE][0],
               "oos_linear_rankic": oos_ic, "oos_linear_t": oos_t,
               "seconds": round(time.perf_counter() - t0, 1)}
        log.info("%s", row)
        out.append(row)
    return {"store": str(store.root), "test_dates": [str(market.dates[rows[0]]),
                                                     str(market.dates[rows[-1]]), len(rows)],
            "fit_dates": len(grid), "oos_fit_dates": len(oos_idx),
            "oracle": {k: {"rankic": v[0], "t": v[1]} for k, v in oracle.items()},
            "rows": out}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--out", default="benchmarks/experiments/results/synth_ceilings.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    res = ceilings(Store(args.store))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(f"{'features':<55} {'n':>4} {'rc mu/z/pi':>18} {'ceiling':>8} {'share':>6} "
          f"{'oos':>7}")
    for r in res["rows"]:
        star = " *" if r["reported_by_truth_py"] else ""
        print(f"{r['features'] + star:<55} {r['n']:>4} {r['rc_mu']:.2f}/{r['rc_z']:.2f}/"
              f"{r['rc_pi']:.2f}    {r['ceiling_rankic']:>7.1%} {r['share_of_oracle']:>6.0%} "
              f"{r['oos_linear_rankic']:>7.1%}")
    return res


if __name__ == "__main__":
    main()
