"""Issue 17, item 3: is the HF GRU limited by its architecture or by its training?

On a synthetic store with the 27-factor table (the ``demo`` preset: 300 stocks x 500 days from
2022-01-03, ``fbgpu synth --preset demo`` + ``fbgpu factors``), every learner below is trained by
fbgpu's own loop (:func:`fbgpu.models.training.fit_net`: per-date IC loss, whole-date batches,
Adam, early stopping on the validation IC of the last 20% of the known dates) on the *same*
``[40, 27]`` HF windows (:class:`DeviceSamples`), with the same rolling windows
(:func:`make_windows`), and scored with fbgpu's ``evaluate_factor`` (weekly RankIC of the score
at T against the ``T+1 -> T+6`` return, ``Market.pool()``) on the predicted dates. The
reference is the trailing-ICIR composite of the same 27 preprocessed factors (what exhibit 45
compares against, :func:`fbgpu.models.exhibits.hf_composites`).

Learners (``--learners``):

* ``gru`` - the HF model (``build_nets("hf")``: GRU(27, 30) -> BN -> Linear -> Sigmoid);
* ``linear_last`` - ``Linear(27, 1)`` on the window's last day (a learned linear composite of the
  factors at T: what the ICIR composite is, with weights fitted by the IC loss);
* ``linear_window`` - ``Linear(40 * 27, 1)`` on the whole window (linear in every lag);
* ``mlp_last`` - ``Linear(27, 30) -> ReLU -> Linear(30, 1)`` on the last day.

Training settings: the demo override (1 seed, <= 15 epochs, patience 4, January/July windows,
24 warm-up dates) by default; ``--max-epochs``/``--patience``/``--seeds``/``--sample-every``
change them (the "training" axis). Results are appended to ``--out`` as JSON lines.

    python benchmarks/experiments/hf_synth.py --store /tmp/q17s/hfstore --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fbgpu.data import Store
from fbgpu.engine import get_backend
from fbgpu.evaluate.single import evaluate_factor
from fbgpu.models.api import load_model_inputs
from fbgpu.models.config import load_train_config
from fbgpu.models.datasets import DeviceSamples
from fbgpu.models.exhibits import HF_EQUAL, HF_ICIR, hf_composites
from fbgpu.models.networks import NetSpec, build_nets
from fbgpu.models.rolling import make_windows
from fbgpu.models.training import fit_net, predict_model, seeded, torch_runtime
from fbgpu.models.zscore import zscore
from fbgpu.panel.market import load_market

log = logging.getLogger("hf_synth")


class LastDayHead(nn.Module):
    """A non-recurrent learner on the HF window, with :class:`MultiSourceGRU`'s interface.

    ``window = False``: input = the window's last day ``x[:, -1, :]`` (27 factors at T);
    ``window = True``: the flattened window (40 x 27). ``hidden = 0``: linear,
    ``y = w'x + b``; ``hidden > 0``: ``Linear -> ReLU -> Linear`` (an MLP).
    """

    def __init__(self, n_factors: int, length: int, window: bool, hidden: int) -> None:
        super().__init__()
        self.spec = NetSpec(("hf",), (n_factors,), (0,))
        self.window = window
        d = n_factors * (length if window else 1)
        self.body: nn.Module = (nn.Linear(d, 1) if hidden == 0 else
                                nn.Sequential(nn.Linear(d, hidden), nn.ReLU(),
                                              nn.Linear(hidden, 1)))

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        """Head outputs ``[1, B]`` (one head)."""
        x = xs[0]
        x = x.flatten(1) if self.window else x[:, -1, :]
        return self.body(x).squeeze(-1).unsqueeze(0)

    def predict(self, xs: list[torch.Tensor]) -> torch.Tensor:
        """The score ``[B]``."""
        return self.forward(xs)[0]


def make_learner(name: str, n_factors: int, length: int) -> nn.Module:
    """A fresh learner (initialised from torch's current RNG state)."""
    if name == "gru":
        return build_nets("hf", n_factors)[0]
    if name == "linear_last":
        return LastDayHead(n_factors, length, window=False, hidden=0)
    if name == "linear_window":
        return LastDayHead(n_factors, length, window=True, hidden=0)
    if name == "mlp_last":
        return LastDayHead(n_factors, length, window=False, hidden=30)
    raise ValueError(f"unknown learner {name!r}")


def summary(rep: Any) -> dict[str, Any]:
    """RankIC mean, IC_IR and t (one observation per scored date) of an evaluation report."""
    ic = rep.ic.dropna().to_numpy()
    m, sd = float(ic.mean()), float(ic.std(ddof=1))
    return {"rank_ic": m, "ic_ir": m / sd, "t": m / sd * np.sqrt(len(ic)), "n_dates": len(ic)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--learners", nargs="+", default=["gru", "linear_last", "linear_window",
                                                       "mlp_last"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--max-epochs", type=int, default=15)
    ap.add_argument("--patience", type=int, default=4)
    ap.add_argument("--sample-every", type=int, default=5)
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", default="benchmarks/experiments/results/hf_synth.jsonl")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    store = Store(a.store)
    be = get_backend("cpu")
    cfg = load_train_config({"max_epochs": a.max_epochs, "patience": a.patience,
                             "seeds": tuple(a.seeds), "sample_every": a.sample_every},
                            demo=True)
    market = load_market(store)
    inputs = load_model_inputs(store, cfg, be, ["hf"], market=market)
    data = DeviceSamples(inputs, cfg, torch.device("cpu"), ("hf",))
    windows = make_windows(inputs.dates, data.grid, cfg)
    ret_end = 6
    D = len(market.dates)
    # evaluation rows: the weekly grid (every 5th day, phase 0) among the predicted dates
    pred_days = sorted({d for w in windows for d in w.predict_days})
    rows = np.array([d for d in pred_days if d % 5 == 0 and d + ret_end < D], dtype=np.int64)
    fwd = market.forward_returns(1, ret_end)[rows]
    pool = market.pool()[rows]
    dates = [market.dates[i] for i in rows]
    comps, _ = hf_composites(store, market, rows, be, ret_end)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def record(name: str, score: np.ndarray, extra: dict[str, Any]) -> None:
        res = {"name": name, "tag": a.tag, **summary(
            evaluate_factor(score, fwd, pool, 1, 10, name=name, dates=dates)), **extra}
        log.info("%-34s RankIC %+.4f IC_IR %.2f t %.1f", name, res["rank_ic"], res["ic_ir"],
                 res["t"])
        with out.open("a") as f:
            f.write(json.dumps(res) + "\n")

    for name in (HF_EQUAL, HF_ICIR):
        record(name, comps[name], {"kind": "composite"})
    for learner in a.learners:
        t0 = time.perf_counter()
        per_seed = []
        info = []
        for seed in a.seeds:
            sc = torch.full((D, data.n_stocks), float("nan"))
            for w in windows:
                with torch_runtime(cfg, data.device), seeded(seed, data.device):
                    net = make_learner(learner, inputs.n_factors, cfg.hf_window)
                    _, be_, bic, hist = fit_net(net, data, w.fit_days, w.valid_days, cfg,
                                                np.random.default_rng([seed, 0]))
                sc[list(w.predict_days)] = predict_model([net], data, list(w.predict_days))
                info.append({"seed": seed, "window": w.name, "best_epoch": be_,
                             "valid_ic": bic, "epochs": len(hist)})
            per_seed.append(sc)
            record(f"{learner}/seed{seed}", sc.numpy()[rows], {"kind": learner, "seed": seed})
        ens = torch.stack([zscore(s, 1) for s in per_seed]).nanmean(0).numpy()[rows]
        record(f"{learner}/ensemble", ens,
               {"kind": learner, "seeds": a.seeds, "windows": info,
                "seconds": time.perf_counter() - t0, "max_epochs": a.max_epochs,
                "patience": a.patience, "sample_every": a.sample_every})


if __name__ == "__main__":
    main()
