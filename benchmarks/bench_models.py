"""GRU training speed: seconds per epoch and per retrain window, HF and LF, CPU (and GPU).

Usage::

    python benchmarks/bench_models.py                       # demo-sized arrays, cpu
    python benchmarks/bench_models.py --backend gpu         # on a CUDA machine
    python benchmarks/bench_models.py --threads 1,0         # compare torch CPU thread settings
    python benchmarks/bench_models.py --store ./fbgpu-demo  # also: train + RankIC on a store

The default market is an array-level one of the ``demo`` preset's size (300 stocks x 500 trading
days, 27 factors; timings do not depend on the values), with a full-protocol batch (5000) and
window: the first half-year retrain date with the demo override's history requirement. Per model
it reports the sample-building time, the mean seconds per epoch (no early stopping: a fixed number
of epochs), and the seconds of one retrain window under the demo override (1 seed, <= 15 epochs,
early stopping) and, extrapolated, under the full protocol (3 seeds x up to 100 epochs: the report
states the bound ``3 * 100 * epoch``). With ``--store`` it then trains ``hf`` and ``lf`` on the
store (demo override) and prints the out-of-sample RankIC of each model next to the equal-weight
composite of the 27 factors. Prints a table and writes JSON (``--json``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fbgpu.engine.backend import get_backend
from fbgpu.models.config import DEMO_OVERRIDES, TrainConfig
from fbgpu.models.datasets import DeviceSamples, ModelInputs, make_labels
from fbgpu.models.device import torch_device
from fbgpu.models.networks import build_nets
from fbgpu.models.rolling import make_windows
from fbgpu.models.runner import sources_for, train_rolling
from fbgpu.models.training import fit_net, torch_runtime


def demo_sized_inputs(xp: Any, stocks: int, days: int, factors: int = 27,
                      seed: int = 0) -> ModelInputs:
    """Random market arrays of the given size on the backend's device (weekday calendar)."""
    rng = np.random.default_rng(seed)
    dates, d = [], dt.date(2022, 1, 3)
    while len(dates) < days:
        if d.weekday() < 5:
            dates.append(d)
        d += dt.timedelta(1)
    vwap = 10 * np.exp(np.cumsum(0.02 * rng.standard_normal((days, stocks)), 0))
    bars = np.stack([vwap * 0.99, vwap * 1.02, vwap * 0.98, vwap, vwap,
                     rng.integers(10_000, 90_000, (days, stocks)).astype(float)], -1)
    pool = rng.random((days, stocks)) > 0.05
    panel = rng.standard_normal((days, stocks, factors))
    return ModelInputs(dates, np.array([f"S{i}" for i in range(stocks)]), xp.asarray(pool),
                       xp.asarray(make_labels(vwap, pool), dtype=xp.float32),
                       xp.asarray(panel, dtype=xp.float32), xp.asarray(bars, dtype=xp.float32),
                       tuple(f"f{i}" for i in range(factors)))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_kind(kind: str, inputs: ModelInputs, cfg: TrainConfig, device: torch.device,
               epochs: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    data = DeviceSamples(inputs, cfg, device, sources_for(kind))
    _sync(device)
    build_s = time.perf_counter() - t0
    w = make_windows(inputs.dates, data.grid, cfg)[0]
    stamps: list[float] = []
    fixed = cfg.model_copy(update={"max_epochs": epochs, "patience": epochs + 1})
    with torch_runtime(fixed, device):
        torch.manual_seed(0)
        net = build_nets(kind, inputs.n_factors, cfg.hidden_size)[0].to(device)
        start = time.perf_counter()
        fit_net(net, data, w.fit_days, w.valid_days, fixed, np.random.default_rng(0),
                lambda *a: stamps.append(time.perf_counter()))
    epoch_times = np.diff([start, *stamps])
    t1 = time.perf_counter()
    res = train_rolling(kind, inputs, cfg, device, data=data, progress=False, windows=[w])
    _sync(device)
    window_s = time.perf_counter() - t1
    n_samples = int(sum(int(data.pool[d].sum()) for d in w.fit_days))
    return {
        "model": kind, "fit_dates": len(w.fit_days), "fit_samples": n_samples,
        "build_samples_s": round(build_s, 3),
        "epoch_s": round(float(np.median(epoch_times[1:] if epochs > 1 else epoch_times)), 4),
        "first_epoch_s": round(float(epoch_times[0]), 4),
        "window_demo_s": round(window_s, 3),
        "window_demo_epochs": [int(e) + 1 for e in res.windows[0].best_epoch[cfg.seeds[0]]],
        "window_full_bound_s": round(3 * 100 * float(np.median(epoch_times)), 1),
    }


def bench_store(store: str, backend: str) -> dict[str, Any]:
    """Train hf and lf on a store (demo override) and compare out-of-sample RankIC."""
    from fbgpu.models import evaluate_models, run_train

    t0 = time.perf_counter()
    summary = run_train(store, ["hf", "lf"], dict(DEMO_OVERRIDES), backend=backend,
                        progress=False, report=False)
    ev = evaluate_models(store, backend=summary.backend, figures=False)
    rows = {n: ev.tables["exhibit45_hf"].loc[n].to_dict()
            for n in ev.tables["exhibit45_hf"].index}
    rows.update({n: ev.tables["exhibit57_fusion"].loc[n].to_dict()
                 for n in ev.tables["exhibit57_fusion"].index})
    return {"store": store, "seconds": round(time.perf_counter() - t0, 1),
            "dates": len(ev.dates), "summary": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--stocks", type=int, default=300)
    ap.add_argument("--days", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=4, help="timed epochs per model")
    ap.add_argument("--threads", default="1", help="torch CPU threads to compare, e.g. 1,0")
    ap.add_argument("--models", default="hf,lf")
    ap.add_argument("--store", default=None)
    ap.add_argument("--json", default="bench_models.json")
    args = ap.parse_args(argv)
    be = get_backend(args.backend)
    device = torch_device(be.name)
    inputs = demo_sized_inputs(be.xp, args.stocks, args.days)
    results = []
    for threads in [int(t) for t in args.threads.split(",")]:
        cfg = TrainConfig(**{**DEMO_OVERRIDES, "cpu_threads": threads})
        for kind in args.models.split(","):
            r = bench_kind(kind, inputs, cfg, device, args.epochs)
            r["threads"] = threads if device.type == "cpu" else "-"
            results.append(r)
            print(f"{kind:13s} threads={r['threads']!s:3s} samples {r['fit_samples']:7d}  "
                  f"build {r['build_samples_s']:7.3f}s  epoch {r['epoch_s']:8.4f}s  "
                  f"window(demo) {r['window_demo_s']:8.2f}s  "
                  f"window(full) <= {r['window_full_bound_s']:8.1f}s", flush=True)
    out: dict[str, Any] = {
        "backend": be.name, "device": be.device, "torch": torch.__version__,
        "python": platform.python_version(), "stocks": args.stocks, "days": args.days,
        "results": results,
    }
    if args.store:
        out["store"] = bench_store(args.store, args.backend)
        for name, row in out["store"]["summary"].items():
            print(f"{name:24s} RankIC {row['RankIC mean']:+.4f}  IC_IR {row['IC_IR']:+.2f}  "
                  f"TOP excess {row['TOP ann. excess']:+.2%}")
    Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
