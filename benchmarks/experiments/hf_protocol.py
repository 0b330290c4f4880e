"""Issue 15: how much of the oracle does the demo's HF GRU recover under each training protocol?

On a demo store after ``fbgpu demo`` (the ``demo`` preset, seed 0: factors, evaluation and the
report's ``reports/models/planted_truth.csv`` are needed), this trains the HF model exactly as the
demo's train stage does: :func:`fbgpu.models.training.fit_model` on the *unsmoothed* panel
(``[demo] model_panel_window = 1``, the evaluation's other preprocessing), the demo override
(1 seed, <= 15 epochs, patience 4, January/July windows, 24 warm-up dates) plus ``--set``
overrides of any :class:`~fbgpu.models.config.TrainConfig` key, seeds ensembled as ``run_train``
does (the mean of the per-date z-scores). It records, per run:

* the validation IC of every window and seed (what early stopping saw: the only numbers a
  protocol may be chosen by; the test dates are never used to choose);
* the weekly RankIC of the ensemble on the 47 test dates (T -> T+1..T+6, the report's pool),
  its t, and its share of the oracle IC (the planted expected return, from the demo's
  ``planted_truth.csv``) with the standard error of that share (SE of the mean weekly RankIC /
  the oracle's mean).

With no ``--set`` and ``--seeds 0`` it reproduces the demo's HF row to the digit (16.39%).

    python benchmarks/experiments/hf_protocol.py --store fbgpu-demo --seeds 0 1 2 \\
        --set max_epochs=100 patience=10 --tag report-protocol
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fbgpu.data import Store
from fbgpu.engine import get_backend
from fbgpu.evaluate.run import EvaluateConfig
from fbgpu.evaluate.single import evaluate_factor
from fbgpu.models.api import load_model_inputs
from fbgpu.models.config import load_train_config
from fbgpu.models.datasets import DeviceSamples
from fbgpu.models.rolling import make_windows
from fbgpu.models.training import fit_model, predict_model
from fbgpu.models.zscore import zscore
from fbgpu.panel.market import load_market

log = logging.getLogger("hf_protocol")

#: The evaluation return of a score at T: vwap T+1 -> T+6 (spec/research.md).
RETURN_END = 6


def oracle_ic(store_root: Path) -> float | None:
    """The oracle's mean weekly RankIC from the demo report's ``planted_truth.csv`` (or None)."""
    path = store_root / "reports" / "models" / "planted_truth.csv"
    if not path.exists():
        return None
    with path.open() as f:
        for row in csv.DictReader(f):
            if row["signal"] == "oracle: planted expected return":
                return float(row["RankIC mean"])
    return None


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``key=json`` pairs -> TrainConfig overrides (``batch_size=300``, ``seeds=[0,1]``)."""
    out: dict[str, Any] = {}
    for kv in pairs:
        key, _, value = kv.partition("=")
        if not value:
            raise SystemExit(f"--set {kv!r}: expected key=value")
        out[key] = json.loads(value)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON")
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", default="benchmarks/experiments/results/hf_protocol.jsonl")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    overrides = {"seeds": tuple(a.seeds), **parse_overrides(a.set)}
    cfg = load_train_config(overrides, demo=True)
    store = Store(a.store)
    backend = get_backend("cpu")
    ecfg = EvaluateConfig.from_dict({})
    # the demo's model panel: the evaluation's preprocessing without the 20-day mean
    panel = dataclasses.replace(ecfg.panel, window=1, min_valid=min(ecfg.panel.min_valid, 1))
    market = load_market(store)
    inputs = load_model_inputs(store, cfg, backend, ["hf"], market=market,
                               panel_config=panel, pool_config=ecfg.pool)
    data = DeviceSamples(inputs, cfg, torch.device("cpu"), ("hf",))
    windows = make_windows(inputs.dates, data.grid, cfg)
    D = len(market.dates)
    pred_days = sorted({d for w in windows for d in w.predict_days})
    rows = np.array([d for d in pred_days if d % 5 == 0 and d + RETURN_END < D], dtype=np.int64)
    fwd = market.forward_returns(1, RETURN_END)[rows]
    pool = market.pool()[rows]
    dates = [market.dates[i] for i in rows]

    t0 = time.perf_counter()
    per_seed: list[torch.Tensor] = []
    valid: list[dict[str, Any]] = []
    for seed in a.seeds:
        score = torch.full((D, data.n_stocks), float("nan"))
        for w in windows:
            nets, res = fit_model("hf", data, w.fit_days, w.valid_days, cfg, seed,
                                  inputs.n_factors)
            score[list(w.predict_days)] = predict_model(nets, data, list(w.predict_days))
            valid.append({"seed": seed, "window": w.name, "best_epoch": res.best_epoch[0],
                          "valid_ic": res.best_valid_ic[0], "n_fit": len(w.fit_days),
                          "n_valid": len(w.valid_days)})
        per_seed.append(zscore(score, 1))
    ensemble = torch.stack(per_seed).nanmean(0).numpy()[rows]
    ic = evaluate_factor(ensemble, fwd, pool, 1, 10, name="hf", dates=dates).ic.dropna()
    mean, se = float(ic.mean()), float(ic.std(ddof=1) / np.sqrt(len(ic)))
    oracle = oracle_ic(Path(a.store))
    result = {
        "tag": a.tag, "overrides": {k: v for k, v in overrides.items()},
        "valid_ic_mean": float(np.mean([v["valid_ic"] for v in valid])),
        "test_rank_ic": mean, "t": mean / se, "test_dates": len(ic),
        "oracle_rank_ic": oracle,
        "share_of_oracle": mean / oracle if oracle else None,
        "share_se": se / oracle if oracle else None,
        "windows": valid, "seconds": time.perf_counter() - t0,
    }
    log.info("%s: valid IC %.4f, test RankIC %.4f (t %.1f), %s of the oracle", a.tag,
             result["valid_ic_mean"], mean, mean / se,
             f"{result['share_of_oracle']:.1%}" if oracle else "?")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
