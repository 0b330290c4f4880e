"""Issue 17 experiments: does the LF model learn on real daily bars? (docs/models.md).

Development window only: the market is read up to ``--end`` (at most 2022-12-31); nothing on a
2023+ date is read, computed or evaluated. Protocol: weekly RankIC (fbgpu's
``evaluate_factor``) against the ``T+1 -> T+6`` return of ``Market.forward_returns(1, 6)`` (the
trade price; the qlib data has no vwap, so it is the close), over CSI 500 members on T (the
latest ``index_weights`` partition on or before T) that are in ``Market.pool()``, on the model's
sample grid (every 5th trading day) in the test years ``--test-start``..``--end``.

Models are trained with fbgpu's own code (``DeviceSamples``, ``make_windows``, ``fit_model``,
``predict_model``): yearly retraining (January), the last 20% of the known sample dates validate
(a contiguous later window, purged). The training universe is every ingested stock in the scoring
pool (stocks ever in the CSI 500 weights file), not only the members.

Usage (the store from ``fbgpu ingest --format qlib`` + ``--format index-weights``)::

    python benchmarks/experiments/lf_real.py --store /tmp/q17/store --exp trivial ridge \
        gru_rel --seeds 0 1 2 --out benchmarks/experiments/results/lf_real.jsonl
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fbgpu.data import Store
from fbgpu.engine import get_backend
from fbgpu.evaluate.correlation import mean_cross_corr
from fbgpu.evaluate.single import evaluate_factor
from fbgpu.models.api import load_model_inputs
from fbgpu.models.config import TrainConfig
from fbgpu.models.datasets import DeviceSamples
from fbgpu.models.rolling import RetrainWindow, make_windows
from fbgpu.models.runner import sources_for
from fbgpu.models.training import fit_model, predict_model
from fbgpu.models.zscore import zscore
from fbgpu.panel.market import Market, load_market

log = logging.getLogger("lf_real")
LAST_DEV_DATE = dt.date(2022, 12, 31)  # 2023-01-01 onward is reserved (issue 17)

#: named GRU experiments: (model kind, TrainConfig overrides)
GRU_EXPERIMENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "gru_rel": ("lf", {}),
    "gru_logdiff": ("lf", {"lf_inputs": "logdiff"}),
    "gru_rel_lr1e-3": ("lf", {"lr": 0.001}),
    "gru_logdiff_lr1e-3": ("lf", {"lf_inputs": "logdiff", "lr": 0.001}),
    "gru_logdiff_daily": ("lf-daily", {"lf_inputs": "logdiff"}),
    "gru_logdiff_unshared": ("lf-unshared", {"lf_inputs": "logdiff"}),
    "gru_logdiff_separate": ("lf-separate", {"lf_inputs": "logdiff"}),
    "gru_logdiff_lambda0": ("lf", {"lf_inputs": "logdiff", "mtl_lambda": 0.0}),
    "gru_logdiff_lambda0.1": ("lf", {"lf_inputs": "logdiff", "mtl_lambda": 0.1}),
    "gru_logdiff_h5": ("lf", {"lf_inputs": "logdiff", "label_horizon": 5}),
    "gru_logdiff_daily_dates": ("lf", {"lf_inputs": "logdiff", "sample_every": 1}),
    "gru_rel_daily": ("lf-daily", {}),
    "gru_rel_unshared": ("lf-unshared", {}),
    # issue 17 suspects (docs/models.md, "Suspects"): the multi-task logdiff baseline with one
    # setting changed. Dates per batch = batch_size // S (S = 853 stocks in the store): 1000 ->
    # 1 date, 9000 -> 10 dates (the default 5000 -> 5 dates, ~3.8k samples in the pool).
    "gru_logdiff_wd1e-4": ("lf", {"lf_inputs": "logdiff", "weight_decay": 1e-4}),
    "gru_logdiff_wd1e-3": ("lf", {"lf_inputs": "logdiff", "weight_decay": 1e-3}),
    "gru_logdiff_batch1d": ("lf", {"lf_inputs": "logdiff", "batch_size": 1000}),
    "gru_logdiff_batch10d": ("lf", {"lf_inputs": "logdiff", "batch_size": 9000}),
    "gru_logdiff_dropout0.1": ("lf", {"lf_inputs": "logdiff", "dropout": 0.1}),
    "gru_logdiff_dropout0.3": ("lf", {"lf_inputs": "logdiff", "dropout": 0.3}),
}


def membership(store: Store, market: Market, index: str = "csi500") -> np.ndarray:
    """``[D, S]`` bool: in ``index`` on T by the latest weights partition dated <= T."""
    wdates = [d for d in store.dates("index_weights") if d <= market.dates[-1]]
    pos = {s: i for i, s in enumerate(market.symbols.tolist())}
    out = np.zeros(market.shape, dtype=bool)
    k = -1
    cur = np.zeros(market.shape[1], dtype=bool)
    for t, day in enumerate(market.dates):
        while k + 1 < len(wdates) and wdates[k + 1] <= day:
            k += 1
            w = store.read("index_weights", wdates[k]).to_pandas()
            w = w[(w["index"].astype(str) == index) & (w["weight"] > 0)]
            cur = np.zeros(market.shape[1], dtype=bool)
            cur[[pos[s] for s in w["symbol"].astype(str) if s in pos]] = True
        out[t] = cur
    return out


def trivial_factors(market: Market) -> dict[str, np.ndarray]:
    """The issue's three trivial factors at T (known at the close of T), sign = expected.

    ``low_vol20`` = -std of the 20 daily log returns of the adjusted close ending at T;
    ``low_volratio`` = -(mean volume over T-19..T / mean over T-119..T) (raw shares; NaN-aware,
    suspended days carry 0 volume and are skipped); ``rev5`` = -(close_T / close_{T-5} - 1).
    """
    c = np.where(market.traded(), market.adjusted_close(), np.nan)
    lr = np.full_like(c, np.nan)
    lr[1:] = np.log(c[1:] / c[:-1])
    D = c.shape[0]
    vol20 = np.full_like(c, np.nan)
    for t in range(20, D):
        w = lr[t - 19 : t + 1]
        n = np.isfinite(w).sum(0)
        vol20[t] = np.where(n >= 15, np.nanstd(w, axis=0), np.nan)
    v = np.where(market.traded(), market["volume"], np.nan)
    csum = np.vstack([np.zeros((1, v.shape[1])), np.nancumsum(v, axis=0)])
    cnt = np.vstack([np.zeros((1, v.shape[1])), np.cumsum(np.isfinite(v), axis=0)])

    def mean(L: int) -> np.ndarray:
        out = np.full_like(v, np.nan)
        s = csum[L:] - csum[:-L]
        n = cnt[L:] - cnt[:-L]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[L - 1 :] = np.where(n >= 0.75 * L, s / n, np.nan)
        return out

    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = mean(20) / mean(120)
        rev = np.full_like(c, np.nan)
        rev[5:] = c[5:] / c[:-5] - 1
    return {"low_vol20": -vol20, "low_volratio": -ratio, "rev5": -rev}


def evaluate(score: np.ndarray, fwd: np.ndarray, pool: np.ndarray, rows: np.ndarray,
             name: str, dates: list[dt.date]) -> dict[str, Any]:
    """Weekly RankIC mean, std, IC_IR and t over ``rows`` (fbgpu's evaluate_factor)."""
    rep = evaluate_factor(score[rows], fwd[rows], pool[rows], groups=10, name=name,
                          dates=[dates[i] for i in rows])
    ic = rep.ic.dropna().to_numpy()
    by_year: dict[str, float] = {}
    for y in sorted({d.year for d in rep.ic.dropna().index}):
        s = rep.ic.dropna()
        by_year[str(y)] = float(s[[d.year == y for d in s.index]].mean())
    m, sd = float(ic.mean()), float(ic.std(ddof=1))
    return {"name": name, "rank_ic": m, "ic_std": sd, "ic_ir": m / sd,
            "t": m / sd * np.sqrt(len(ic)), "n_dates": len(ic), "by_year": by_year}


def ridge_scores(data: DeviceSamples, windows: list[RetrainWindow], alphas: list[float],
                 S: int, D: int, squares: bool = False) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Ridge on the 432 flattened LF inputs (the GRU's own tensor), per window.

    ``squares`` appends the 432 squared inputs (864 regressors): a linear model that can
    express second moments such as a volatility.

    ``w = argmin sum (y - X w)^2 + alpha * n * |w|^2`` over the fitting samples (label = the
    z-scored training label), alpha picked by the mean per-date Pearson IC on the validation
    dates. Returns ``[D, S]`` predictions (NaN off the predicted dates) and per-window info.
    """
    out = np.full((D, S), np.nan)
    info = []

    def xy(days: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        X = data.lf_features(list(days)).flatten(2).numpy()  # [n, S, 432]
        if squares:
            X = np.concatenate([X, X**2], -1)
        y = data.label[list(days)].numpy()
        ok = data.pool[list(days)].numpy() & np.isfinite(y)
        return X, y, ok

    for w in windows:
        X, y, ok = xy(w.fit_days)
        Xf, yf = X[ok].astype(np.float64), y[ok].astype(np.float64)
        XtX, Xty = Xf.T @ Xf, Xf.T @ yf
        Xv, yv, okv = xy(w.valid_days)
        best = (-np.inf, None, None)
        for a in alphas:
            coef = np.linalg.solve(XtX + a * len(yf) * np.eye(XtX.shape[0]), Xty)
            p = Xv @ coef
            ics = [np.corrcoef(p[i][okv[i]], yv[i][okv[i]])[0, 1] for i in range(len(p))
                   if okv[i].sum() > 10]
            vic = float(np.nanmean(ics))
            if vic > best[0]:
                best = (vic, a, coef)
        Xp = xy(w.predict_days)[0]
        pr = Xp @ best[2]
        pool = data.pool[list(w.predict_days)].numpy()
        out[list(w.predict_days)] = np.where(pool, pr, np.nan)
        info.append({"window": w.name, "alpha": best[1], "valid_ic": best[0],
                     "n_fit": len(yf)})
    return out, info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--end", default="2022-12-30")
    ap.add_argument("--test-start", default="2020-01-01")
    ap.add_argument("--exp", nargs="+", default=["trivial", "ridge", "gru_rel"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--max-epochs", type=int, default=20)
    ap.add_argument("--patience", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--single-window", action="store_true",
                    help="screening: train once (January of the first test year) and predict "
                         "every test date with it, instead of retraining every January")
    ap.add_argument("--out", default="benchmarks/experiments/results/lf_real.jsonl")
    ap.add_argument("--save-dir", default="",
                    help="write each GRU experiment's per-seed and ensemble scores there "
                         "(npz; keep it under /tmp, never commit)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    end = dt.date.fromisoformat(a.end)
    if end > LAST_DEV_DATE:
        raise SystemExit(f"--end {end} is in the reserved window (> {LAST_DEV_DATE})")
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    store = Store(a.store)
    dates = [d for d in store.dates("daily") if d <= end]
    market = load_market(store, dates)
    members = membership(store, market)
    fwd = market.forward_returns(1, 6)
    evalpool = market.pool() & members
    base_cfg = TrainConfig(max_epochs=a.max_epochs, patience=a.patience, seeds=tuple(a.seeds),
                           retrain_months=(1,), cpu_threads=a.threads)
    test0 = dt.date.fromisoformat(a.test_start)
    log.info("market %d dates x %d stocks, %d members on the last day (%.0fs)",
             *market.shape, members[-1].sum(), time.perf_counter() - t0)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cpu = torch.device("cpu")
    be = get_backend("cpu")
    cache: dict[tuple[Any, ...], tuple[DeviceSamples, list[RetrainWindow], np.ndarray]] = {}

    def samples(cfg: TrainConfig) -> tuple[DeviceSamples, list[RetrainWindow], np.ndarray]:
        key = (cfg.lf_inputs, cfg.label_horizon, cfg.sample_every)
        if key not in cache:
            cache.clear()
            inputs = load_model_inputs(store, cfg, be, ["lf"], market=market)
            data = DeviceSamples(inputs, cfg, cpu, sources_for("lf-unshared"))
            ws = [w for w in make_windows(inputs.dates, data.grid, cfg)
                  if test0 <= w.retrain_date <= end]
            if a.single_window:
                ws = [replace(ws[0], predict_days=tuple(
                    int(d) for d in data.grid if d >= ws[0].retrain_day))]
            # evaluation rows: the 5-day grid (weekly) whatever the training sample spacing
            g5 = np.arange(0, len(dates), 5)
            rows = g5[[test0 <= dates[i] for i in g5]]
            cache[key] = (data, ws, rows)
        data, ws, rows = cache[key]
        if data.config != cfg:
            # the same tensors, this experiment's config: DeviceSamples reads batch_size (dates
            # per batch) and min_date_samples (validation) from its own config
            data = copy.copy(data)
            data.config = cfg
        return data, ws, rows

    def record(res: dict[str, Any], extra: dict[str, Any]) -> None:
        res.update(extra)
        res["end"] = end.isoformat()
        log.info("%-28s RankIC %+.4f  IC_IR %.2f  t %.1f  %s", res["name"], res["rank_ic"],
                 res["ic_ir"], res["t"], {k: round(v, 4) for k, v in res["by_year"].items()})
        with out.open("a") as f:
            f.write(json.dumps(res) + "\n")

    _, _, rows = samples(base_cfg)
    for exp in a.exp:
        t1 = time.perf_counter()
        if exp.startswith("merge:"):
            # ensemble of the seeds saved by earlier runs (--save-dir): merge:NAME:A.npz,B.npz
            _, name, files = exp.split(":", 2)
            seeds = np.concatenate([np.load(f)["seeds"] for f in files.split(",")])
            ens = torch.stack([zscore(torch.as_tensor(x), 1) for x in seeds]).nanmean(0).numpy()
            triv = trivial_factors(market)
            corr = {k: mean_cross_corr(ens[rows], v[rows], evalpool[rows]) for k, v in triv.items()}
            record(evaluate(ens, fwd, evalpool, rows, f"{name}/ensemble", dates),
                   {"exp": name, "merged": files.split(","), "n_seeds": len(seeds),
                    "corr_trivial": corr})
            continue
        if exp == "trivial":
            for name, f in trivial_factors(market).items():
                record(evaluate(f, fwd, evalpool, rows, name, dates), {"exp": exp})
            continue
        if exp in ("ridge", "ridge_logdiff", "ridge_sq", "ridge_logdiff_sq", "equal_weight",
                   "equal_weight_logdiff"):
            cfg = base_cfg.model_copy(update={"lf_inputs": "logdiff" if "logdiff" in exp
                                              else "relative"})
            data, ws, rows = samples(cfg)
            if exp.startswith("ridge"):
                D, S = market.shape
                sc, info = ridge_scores(data, ws, [1e-3, 1e-2, 1e-1, 1.0, 10.0], S, D,
                                        squares=exp.endswith("_sq"))
            else:
                sc = np.full(market.shape, np.nan)
                sc[rows] = data.lf_equal_weight(rows).numpy()
                info = []
            record(evaluate(sc, fwd, evalpool, rows, exp, dates),
                   {"exp": exp, "windows": info, "seconds": time.perf_counter() - t1})
            continue
        kind, over = GRU_EXPERIMENTS[exp]
        cfg = base_cfg.model_copy(update=over)
        data, ws, rows = samples(cfg)
        per_seed = []
        wins: list[dict[str, Any]] = []
        for seed in a.seeds:
            t_seed = time.perf_counter()
            sc = np.full(market.shape, np.nan)
            for w in ws:
                def on_epoch(j: int, e: int, tl: float, vic: float, best: float,
                             w: RetrainWindow = w, seed: int = seed, exp: str = exp) -> None:
                    log.info("  %s seed %d %s net %d epoch %d: train loss %.4f valid IC %.4f",
                             exp, seed, w.name, j, e, tl, vic)

                nets, fr = fit_model(kind, data, w.fit_days, w.valid_days, cfg, seed, 0,
                                     on_epoch)
                pred = predict_model(nets, data, list(w.predict_days))
                sc[list(w.predict_days)] = pred.numpy()
                wins.append({"seed": seed, "window": w.name, "best_epoch": fr.best_epoch,
                             "valid_ic": fr.best_valid_ic, "n_fit_dates": len(w.fit_days),
                             "epochs": [len(h) for h in fr.history],
                             "valid_curve": [[round(e["valid_ic"], 4) for e in h]
                                             for h in fr.history],
                             "train_loss": [[round(e["train_loss"], 4) for e in h]
                                            for h in fr.history]})
                log.info("%s seed %d window %s: best epoch %s valid IC %s", exp, seed, w.name,
                         fr.best_epoch, [round(v, 4) for v in fr.best_valid_ic])
            per_seed.append(sc)
            record(evaluate(sc, fwd, evalpool, rows, f"{exp}/seed{seed}", dates),
                   {"exp": exp, "seed": seed, "kind": kind, "overrides": over,
                    "seconds": time.perf_counter() - t_seed})
        ens = torch.stack([zscore(torch.as_tensor(s), 1) for s in per_seed]).nanmean(0).numpy()
        if a.save_dir:
            Path(a.save_dir).mkdir(parents=True, exist_ok=True)
            np.savez_compressed(Path(a.save_dir) / f"{exp}.npz", ensemble=ens,
                                seeds=np.stack(per_seed), rows=rows)
        # what the ensemble shares with the trivial factors: mean cross-sectional Pearson
        # correlation on the evaluation rows, and the RankIC of the equal blend with low_vol20
        triv = trivial_factors(market)
        corr = {k: mean_cross_corr(ens[rows], v[rows], evalpool[rows]) for k, v in triv.items()}
        z = zscore(torch.as_tensor(np.where(evalpool, triv["low_vol20"], np.nan)), 1)
        blend = np.nanmean(np.stack([zscore(torch.as_tensor(ens), 1).numpy(), z.numpy()]), 0)
        blend_ic = evaluate(blend, fwd, evalpool, rows, "blend", dates)["rank_ic"]
        record(evaluate(ens, fwd, evalpool, rows, f"{exp}/ensemble", dates),
               {"exp": exp, "kind": kind, "overrides": over, "windows": wins,
                "corr_trivial": corr, "blend_low_vol20_rank_ic": blend_ic,
                "seconds": time.perf_counter() - t1, "max_epochs": a.max_epochs,
                "patience": a.patience, "threads": a.threads,
                "single_window": a.single_window})


if __name__ == "__main__":
    main()
