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
from types import ModuleType
from typing import Any

import numpy as np
import torch

from fbgpu.data.store import code_version, config_hash
from fbgpu.data.writebehind import StoreWriteBehind
from fbgpu.engine.guard import sanctioned
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
from fbgpu.models.executor import FitJob, fit_all
from fbgpu.models.networks import build_nets, net_specs
from fbgpu.models.rolling import NoRetrainWindowError, RetrainWindow, make_windows
from fbgpu.models.training import FitResult, predict_model, seeded
from fbgpu.models.zscore import zscore

log = logging.getLogger(__name__)

#: ``fingerprint(window) -> str``: identifies the inputs a window's training may see.
Fingerprint = Callable[[RetrainWindow], str]

#: Keys of :class:`TrainConfig` that do not change a trained model (excluded from its hash).
_NOT_MODEL_KEYS = (
    "fusion_hf_weight", "fusion_lf_weight", "lf_cache_bytes", "seeds", "cpu_threads",
    "fit_workers",
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


@dataclass
class _WindowPlan:
    """One window of a plan: its checkpoint files, fingerprint and the seeds already trained."""

    window: RetrainWindow
    report: WindowReport
    paths: WindowPaths | None
    fingerprint: str | None
    complete: bool
    loaded: dict[int, dict[str, Any]] = field(default_factory=dict)  # seed -> checkpoint


@dataclass
class RollingPlan:
    """What training ``kind`` over its windows needs: the fits still to make (:meth:`jobs`) and
    the checkpoints that are reused. Made by :func:`plan_rolling`, finished by
    :func:`finish_rolling` once the fits are done (by any executor)."""

    kind: str
    config: TrainConfig
    config_hash: str
    n_factors: int
    n_nets: int
    windows: list[_WindowPlan]

    def jobs(self) -> list[FitJob]:
        """The fits this plan needs, one per (window, seed) without a matching checkpoint."""
        cost = self.n_nets * len(sources_for(self.kind))
        return [FitJob(self.kind, wp.window.name, seed, tuple(wp.window.fit_days),
                       tuple(wp.window.valid_days), self.n_nets,
                       float(len(wp.window.fit_days) * cost))
                for wp in self.windows for seed in self.config.seeds if seed not in wp.loaded]


def plan_rolling(
    kind: str,
    inputs: ModelInputs,
    config: TrainConfig,
    data: DeviceSamples,
    *,
    checkpoint_root: Path | None = None,
    fingerprint: Fingerprint | None = None,
    windows: Sequence[RetrainWindow] | None = None,
) -> RollingPlan:
    """The windows of ``kind`` and, per window and seed, a reusable checkpoint or a fit to make.

    A checkpoint is reused only when a ``fingerprint`` of the window's inputs is known and it
    matches, with the configuration hash (:mod:`fbgpu.models.checkpoints`).
    """
    srcs = sources_for(kind)
    missing = [s for s in srcs if s not in data.sources]
    if missing:
        raise ValueError(f"device samples lack sources {missing} needed by {kind!r}")
    if windows is None:
        windows = make_windows(inputs.dates, data.grid, config)
    if not windows:
        raise NoRetrainWindowError(len(inputs.dates), config)
    if fingerprint is None:
        fingerprint = array_fingerprint(inputs, kind)
    chash = model_config_hash(kind, config, inputs.factor_names,
                              inputs.meta.get("preprocessing"))
    n_factors = inputs.n_factors
    dates = list(inputs.dates)
    plans: list[_WindowPlan] = []
    for w in windows:
        fp = fingerprint(w) if fingerprint is not None else None
        paths = WindowPaths(checkpoint_root, kind, w.name) if checkpoint_root else None
        rep = WindowReport(
            kind, w.name, len(w.fit_days), len(w.valid_days),
            dates[w.last_label_day].isoformat(), dates[w.predict_days[0]].isoformat(),
            dates[w.predict_days[-1]].isoformat(),
        )
        complete = (paths is not None and fp is not None
                    and window_complete(paths, config.seeds, chash, fp))
        rep.resumed = complete
        wp = _WindowPlan(w, rep, paths, fp, complete)
        if paths is not None and fp is not None:
            for seed in config.seeds:
                payload = load_seed(paths.seed(seed), data.device)
                if seed_matches(payload, chash, fp):
                    assert payload is not None
                    wp.loaded[seed] = payload
        plans.append(wp)
    return RollingPlan(kind, config, chash, n_factors,
                       len(net_specs(kind, max(n_factors, 1))), plans)


def finish_rolling(
    plan: RollingPlan,
    fitted: dict[tuple[str, str, int], FitResult],
    inputs: ModelInputs,
    data: DeviceSamples,
    fit_seconds: dict[tuple[str, str, int], float] | None = None,
    writer: StoreWriteBehind | None = None,
    xp: ModuleType | None = None,
) -> RollingResult:
    """Checkpoint the new fits, predict every window's dates with each seed's networks
    (loaded or fitted), z-score per date and average the seeds; the scores stay on the device.

    With ``writer`` (and the backend's array namespace ``xp``) the checkpoints are written
    behind (:func:`fbgpu.models.checkpoints.save_seed`): on disk once the writer has flushed.
    """
    kind, config, chash = plan.kind, plan.config, plan.config_hash
    dates = list(inputs.dates)
    outputs: list[torch.Tensor] = []
    days_out: list[int] = []
    reports: list[WindowReport] = []
    for wp in plan.windows:
        t0 = time.perf_counter()
        w, rep, paths, fp = wp.window, wp.report, wp.paths, wp.fingerprint
        seed_scores = []
        fit_s = 0.0
        for seed in config.seeds:
            payload = wp.loaded.get(seed)
            if payload is not None:
                states = payload["states"]
                rep.valid_ic[seed] = list(payload.get("best_valid_ic", []))
                rep.best_epoch[seed] = list(payload.get("best_epoch", []))
            else:
                res = fitted[(kind, w.name, seed)]
                states = res.states
                rep.valid_ic[seed] = res.best_valid_ic
                rep.best_epoch[seed] = res.best_epoch
                fit_s += (fit_seconds or {}).get((kind, w.name, seed), 0.0)
                if paths is not None and fp is not None:
                    save_seed(paths.seed(seed), {
                        "kind": kind, "seed": seed, "window": w.name,
                        "config_hash": chash, "fingerprint": fp, "states": res.states,
                        "best_valid_ic": res.best_valid_ic, "best_epoch": res.best_epoch,
                        "history": res.history,
                    }, writer, xp)
            # Prediction only (eval mode: no dropout); the initial weights are overwritten by
            # the state, the seeded block keeps the caller's RNG untouched.
            with seeded(seed, data.device), sanctioned("initial weights"):
                nets = [n.to(data.device)
                        for n in build_nets(kind, plan.n_factors, config.hidden_size)]
            for net, state in zip(nets, states, strict=True):
                net.load_state_dict(state)
            seed_scores.append(zscore(predict_model(nets, data, w.predict_days), 1))
        outputs.append(torch.stack(seed_scores).mean(0))
        days_out += list(w.predict_days)
        rep.seconds = fit_s + time.perf_counter() - t0
        if paths is not None and fp is not None and not wp.complete:
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
            }, writer)
        log.info("%s window %s: fit %d dates, valid %d, valid IC %s%s (%.1fs)", kind,
                 w.name, rep.n_fit_dates, rep.n_valid_dates, format_valid_ic(rep.valid_ic),
                 " (resumed)" if wp.complete else "", rep.seconds)
        reports.append(rep)
    days = np.asarray(days_out, dtype=np.int64)
    return RollingResult(kind, days, [dates[d] for d in days], torch.cat(outputs, 0), reports)


def fit_plans(
    plans: Sequence[RollingPlan],
    data: DeviceSamples,
    config: TrainConfig,
    *,
    progress: bool = True,
) -> tuple[dict[tuple[str, str, int], FitResult], dict[tuple[str, str, int], float]]:
    """Make every fit the ``plans`` need through :func:`fbgpu.models.executor.fit_all` (serial,
    or forked CPU workers per ``config.fit_workers``); results and seconds by job key."""
    from fbgpu.progress import make_progress

    jobs = [j for p in plans for j in p.jobs()]
    seconds: dict[tuple[str, str, int], float] = {}
    if not jobs:
        return {}, seconds
    prog = make_progress() if progress else None
    task = None
    if prog is not None:
        prog.start()
        kinds = ", ".join(dict.fromkeys(p.kind for p in plans if p.jobs()))
        task = prog.add_task(f"train {kinds}", total=sum(j.n_nets for j in jobs), status="")

    def epoch_callback(job: FitJob) -> Any:
        def on_epoch(j: int, e: int, tl: float, vic: float, best: float) -> None:
            if prog is not None:
                fmt = _progress_status(f"{job.kind} {job.window}", job.seed, j, job.n_nets)
                prog.update(task, status=fmt(e, vic, best))
            log.debug("%s %s seed %d net %d epoch %d loss %.4f valid IC %.4f", job.kind,
                      job.window, job.seed, j, e, tl, vic)
        return on_epoch

    def on_done(job: FitJob, res: FitResult, secs: float) -> None:
        seconds[job.key] = secs
        log.debug("%s fitted in %.1f s: best epoch %s, valid IC %s", job.describe(), secs,
                  res.best_epoch, res.best_valid_ic)
        if prog is not None:
            prog.update(task, advance=job.n_nets, status=f"{job.describe()} done")

    try:
        fitted = fit_all(jobs, data, config, plans[0].n_factors, on_done=on_done,
                         epoch_callback=epoch_callback)
    finally:
        if prog is not None:
            prog.stop()
    return fitted, seconds


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
    The fits run per ``config.fit_workers`` (:mod:`fbgpu.models.executor`): the same bits either
    way. :func:`plan_rolling`, :func:`fit_plans` and :func:`finish_rolling` are its three steps
    (``run_train`` runs the fits of all model kinds through one executor).
    """
    if data is None:
        data = DeviceSamples(inputs, config, device, sources_for(kind))
    plan = plan_rolling(kind, inputs, config, data, checkpoint_root=checkpoint_root,
                        fingerprint=fingerprint, windows=windows)
    fitted, seconds = fit_plans([plan], data, config, progress=progress)
    return finish_rolling(plan, fitted, inputs, data, seconds)
