"""Rolling training of one model kind over all retrain windows: fit, checkpoint, resume, predict.

:func:`train_rolling` works on arrays (:class:`~fbgpu.models.datasets.ModelInputs`) and keeps
everything on one torch device: it returns the out-of-sample scores as a device tensor
``[dates, stocks]``; the caller decides when they leave the device (the store writer does, once).

Per window and seed the networks are fitted (:func:`fbgpu.models.training.fit_model`) or, when a
checkpoint for the same configuration and inputs exists, loaded; each seed's predictions over
the window's prediction dates are z-scored per date and the seeds averaged (equal-weight
ensemble of the report; z-scoring first keeps a seed whose outputs happen to be compressed from
counting less).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fbgpu.data.store import code_version, config_hash
from fbgpu.models.checkpoints import (
    WindowPaths,
    load_seed,
    save_seed,
    seed_matches,
    window_complete,
    write_window_manifest,
)
from fbgpu.models.config import TrainConfig
from fbgpu.models.datasets import LF_SOURCES, DeviceSamples, ModelInputs
from fbgpu.models.networks import build_nets, net_specs
from fbgpu.models.rolling import RetrainWindow, make_windows
from fbgpu.models.training import fit_model, predict_model, zscore_rows

log = logging.getLogger(__name__)

#: ``fingerprint(window) -> str``: identifies the inputs a window's training may see.
Fingerprint = Callable[[RetrainWindow], str]

#: Keys of :class:`TrainConfig` that do not change a trained model (excluded from its hash).
_NOT_MODEL_KEYS = (
    "fusion_hf_weight", "fusion_lf_weight", "lf_cache_bytes", "seeds", "cpu_threads",
)


@dataclass
class WindowReport:
    """One window of one model: its dates, validation ICs per seed, and whether it was reused."""

    kind: str
    window: str
    n_fit_dates: int
    n_valid_dates: int
    last_label_date: str
    first_predict_date: str
    last_predict_date: str
    valid_ic: dict[int, list[float]] = field(default_factory=dict)
    best_epoch: dict[int, list[int]] = field(default_factory=dict)
    resumed: bool = False
    seconds: float = 0.0


@dataclass
class RollingResult:
    """Out-of-sample scores of one model kind over all its windows (on the model device)."""

    kind: str
    days: np.ndarray  # day indices (into inputs.dates) with a prediction
    dates: list[Any]
    scores: torch.Tensor  # [len(days), S], NaN outside the pool
    windows: list[WindowReport]


def sources_for(kind: str) -> tuple[str, ...]:
    """The input sources that model ``kind`` reads."""
    out: list[str] = []
    for spec in net_specs(kind, 1):
        out += [s for s in spec.sources if s not in out]
    return tuple(out)


@cache
def model_code_hash() -> str:
    """Hash of the code that turns store data into trained networks: ``fbgpu/models`` and
    ``fbgpu/panel`` (pool, labels, panel preprocessing), without the reporting module.
    Unrelated code changes keep checkpoints valid; a change here retrains."""
    h = hashlib.sha256()
    pkg = Path(__file__).resolve().parents[1]
    for sub in ("models", "panel"):
        for p in sorted((pkg / sub).glob("*.py")):
            if p.name == "exhibits.py":
                continue
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def model_config_hash(kind: str, config: TrainConfig, factor_names: Sequence[str],
                      preprocessing: dict[str, Any] | None = None) -> str:
    """Hash of everything that shapes a trained network of ``kind``: config, factors, the panel
    and pool settings its inputs were built with (``ModelInputs.meta["preprocessing"]``), code.
    """
    cfg = config.model_dump(mode="json", exclude=set(_NOT_MODEL_KEYS))
    return config_hash({"kind": kind, "config": cfg, "factors": list(factor_names),
                        "preprocessing": preprocessing or {}, "code": model_code_hash()})


def array_fingerprint(inputs: ModelInputs, kind: str) -> Fingerprint | None:
    """Fingerprint from host (numpy) arrays: the rows a window may know; None for device arrays.

    Hashes the pool, panel and bars of days before the retrain date and the labels of the
    window's training days (all known before R), so data after R never change it.
    """
    arrays = {"pool": inputs.pool, "label": inputs.label}
    srcs = sources_for(kind)
    if "hf" in srcs:
        arrays["hf_panel"] = inputs.hf_panel
    if any(s in LF_SOURCES for s in srcs):
        arrays["bars"] = inputs.bars
    if not all(isinstance(a, np.ndarray) for a in arrays.values()):
        return None

    def fp(w: RetrainWindow) -> str:
        h = hashlib.sha256()
        h.update(np.asarray(inputs.symbols, dtype=str).tobytes())
        h.update(str([d.isoformat() for d in inputs.dates[: w.retrain_day]]).encode())
        for name in sorted(arrays):
            a = arrays[name]
            part = a[list(w.train_days)] if name == "label" else a[: w.retrain_day]
            h.update(name.encode())
            h.update(np.ascontiguousarray(part).tobytes())
        return h.hexdigest()[:32]

    return fp


def format_valid_ic(valid_ic: dict[int, list[float]]) -> str:
    """Best validation RankIC per seed for a log line: ``seed 0 +0.0312, seed 1 +0.0250``.

    A seed with several networks (``lf-separate``) shows them joined by ``/``; no seed -> ``-``.
    """
    parts = [f"seed {s} " + ("/".join(f"{v:+.4f}" for v in ics) or "-")
             for s, ics in sorted(valid_ic.items())]
    return ", ".join(parts) if parts else "-"


def _progress_status(window: str, seed: int, net: int, n_nets: int) -> Callable[..., str]:
    tag = f"{window} seed {seed}" + (f" net {net + 1}/{n_nets}" if n_nets > 1 else "")

    def fmt(epoch: int, vic: float, best: float) -> str:
        return f"{tag} epoch {epoch + 1} valid IC {vic:+.4f} (best {best:+.4f})"

    return fmt


def train_rolling(
    kind: str,
    inputs: ModelInputs,
    config: TrainConfig,
    device: torch.device,
    *,
    data: DeviceSamples | None = None,
    checkpoint_root: Path | None = None,
    fingerprint: Fingerprint | None = None,
    progress: bool = True,
    windows: Sequence[RetrainWindow] | None = None,
) -> RollingResult:
    """Train (or resume) ``kind`` on every rolling window and predict out of sample.

    ``data`` reuses device-resident samples across kinds (built here when absent).
    ``checkpoint_root`` enables checkpoints and resume; a window is reused only when a
    ``fingerprint`` of its inputs is known (``array_fingerprint`` for host arrays, the store's
    partition hashes in :func:`fbgpu.models.run_train`); without one every window is retrained.
    """
    from fbgpu.progress import make_progress

    srcs = sources_for(kind)
    if data is None:
        data = DeviceSamples(inputs, config, device, srcs)
    missing = [s for s in srcs if s not in data.sources]
    if missing:
        raise ValueError(f"device samples lack sources {missing} needed by {kind!r}")
    if windows is None:
        windows = make_windows(inputs.dates, data.grid, config)
    if not windows:
        raise ValueError(
            f"no retrain window: {len(inputs.dates)} trading days with sample every "
            f"{config.sample_every} days give fewer than min_train_dates="
            f"{config.min_train_dates} training dates before any retrain month "
            f"{config.retrain_months}"
        )
    if fingerprint is None:
        fingerprint = array_fingerprint(inputs, kind)
    n_factors = inputs.n_factors
    chash = model_config_hash(kind, config, inputs.factor_names,
                              inputs.meta.get("preprocessing"))
    n_nets = len(net_specs(kind, max(n_factors, 1)))
    dates = list(inputs.dates)
    reports: list[WindowReport] = []
    outputs: list[torch.Tensor] = []
    days_out: list[int] = []
    prog = make_progress() if progress else None
    if prog is not None:
        prog.start()
        task = prog.add_task(f"train {kind}", total=len(windows) * len(config.seeds) * n_nets,
                             status="")
    try:
        for w in windows:
            t0 = time.perf_counter()
            fp = fingerprint(w) if fingerprint is not None else None
            paths = WindowPaths(checkpoint_root, kind, w.name) if checkpoint_root else None
            rep = WindowReport(
                kind, w.name, len(w.fit_days), len(w.valid_days),
                dates[w.last_label_day].isoformat(), dates[w.predict_days[0]].isoformat(),
                dates[w.predict_days[-1]].isoformat(),
            )
            complete = (
                paths is not None and fp is not None
                and window_complete(paths, config.seeds, chash, fp)
            )
            rep.resumed = complete
            seed_scores = []
            for seed in config.seeds:
                payload = load_seed(paths.seed(seed), device) if (paths and fp) else None
                if seed_matches(payload, chash, fp or ""):
                    nets = [n.to(device) for n in build_nets(kind, n_factors, config.hidden_size)]
                    for net, state in zip(nets, payload["states"], strict=True):
                        net.load_state_dict(state)
                    rep.valid_ic[seed] = list(payload.get("best_valid_ic", []))
                    rep.best_epoch[seed] = list(payload.get("best_epoch", []))
                    if prog is not None:
                        prog.update(task, advance=n_nets, status=f"{w.name} seed {seed} loaded")
                else:
                    def on_epoch(j: int, e: int, tl: float, vic: float, best: float,
                                 seed: int = seed, wname: str = w.name) -> None:
                        if prog is not None:
                            fmt = _progress_status(wname, seed, j, n_nets)
                            prog.update(task, status=fmt(e, vic, best))
                        log.debug("%s %s seed %d net %d epoch %d loss %.4f valid IC %.4f",
                                  kind, wname, seed, j, e, tl, vic)

                    nets, res = fit_model(kind, data, w.fit_days, w.valid_days, config, seed,
                                          n_factors, on_epoch)
                    rep.valid_ic[seed] = res.best_valid_ic
                    rep.best_epoch[seed] = res.best_epoch
                    if paths is not None and fp is not None:
                        save_seed(paths.seed(seed), {
                            "kind": kind, "seed": seed, "window": w.name,
                            "config_hash": chash, "fingerprint": fp, "states": res.states,
                            "best_valid_ic": res.best_valid_ic, "best_epoch": res.best_epoch,
                            "history": res.history,
                        })
                    if prog is not None:
                        prog.update(task, advance=n_nets)
                seed_scores.append(zscore_rows(predict_model(nets, data, w.predict_days)))
            outputs.append(torch.stack(seed_scores).mean(0))
            days_out += list(w.predict_days)
            rep.seconds = time.perf_counter() - t0
            if paths is not None and fp is not None and not complete:
                write_window_manifest(paths, {
                    "kind": kind, "window": w.name, "config_hash": chash, "fingerprint": fp,
                    "code_version": code_version(), "seeds": list(config.seeds),
                    "config": config.model_dump(mode="json"),
                    "fit_dates": [dates[d].isoformat() for d in (w.fit_days[0], w.fit_days[-1])],
                    "valid_dates": [dates[d].isoformat()
                                    for d in (w.valid_days[0], w.valid_days[-1])],
                    "last_label_date": rep.last_label_date,
                    "predict_dates": [rep.first_predict_date, rep.last_predict_date],
                    "valid_ic": rep.valid_ic, "best_epoch": rep.best_epoch,
                    "seconds": rep.seconds,
                })
            log.info("%s window %s: fit %d dates, valid %d, valid IC %s%s (%.1fs)", kind,
                     w.name, rep.n_fit_dates, rep.n_valid_dates, format_valid_ic(rep.valid_ic),
                     " (resumed)" if complete else "", rep.seconds)
            reports.append(rep)
    finally:
        if prog is not None:
            prog.stop()
    days = np.asarray(days_out, dtype=np.int64)
    return RollingResult(kind, days, [dates[d] for d in days], torch.cat(outputs, 0), reports)
