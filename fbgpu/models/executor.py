"""Where a training run's fits execute: one after another here, or in forked CPU workers.

A training run is a set of independent fits, one per (model kind, retrain window, seed)
(:class:`FitJob`). A fit is seeded by its own seed (torch's generator and the date shuffle) and
reads only the run's :class:`~fbgpu.models.datasets.DeviceSamples`, so neither the order of the
fits nor the process that runs one changes a bit of its weights: on the CPU, with
``deterministic`` on and ``cpu_threads`` threads per fit, a fit is bit-identical wherever it runs
(``tests/test_models_executor.py``).

:func:`fit_all` runs the jobs through one of two executors:

* **serial** -- in this process, one after another, with per-epoch progress. Always on a GPU
  (one device per process; CUDA state does not survive a fork) and where ``fit_workers`` is 1.
* **fork** -- ``W`` worker processes forked from this one (Linux, CPU device). Each inherits the
  run's samples copy-on-write, so nothing is sent but the job; it returns the best weights
  (a few hundred kB) and the learning curve. The jobs are handed out longest first
  (:attr:`FitJob.cost`) so the last ones to finish are short. Each worker runs torch with
  ``cpu_threads`` threads, so ``W x cpu_threads`` threads run in all.

``fit_workers`` (``[train]``): 1 = serial; ``W > 1`` = ``W`` workers; 0 = auto: one worker per
``cpu_threads`` of the CPUs this process may use (``os.sched_getaffinity``), at most one per job,
serial when that is one. The parent writes the checkpoints and predicts; workers touch no file.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import torch

from fbgpu.models.config import TrainConfig
from fbgpu.models.datasets import DeviceSamples
from fbgpu.models.training import EpochCallback, FitResult, fit_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitJob:
    """One fit: every network of model ``kind`` on one retrain window, from one seed."""

    kind: str
    window: str
    seed: int
    fit_days: tuple[int, ...]
    valid_days: tuple[int, ...]
    n_nets: int
    #: Relative cost for the longest-first order: fitting dates x networks x input sources.
    cost: float

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.kind, self.window, self.seed)

    def describe(self) -> str:
        return f"{self.kind} {self.window} seed {self.seed}"


#: ``on_done(job, result, seconds)``: called in the parent as each fit completes.
DoneCallback = Callable[[FitJob, FitResult, float], None]
#: ``epoch_callback(job) -> EpochCallback | None``: per-epoch progress (serial executor only).
EpochCallbackFactory = Callable[[FitJob], EpochCallback | None]


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def fork_available() -> bool:
    """Whether forked workers are supported here (Linux: fork is the safe, cheap default)."""
    return sys.platform.startswith("linux") and "fork" in mp.get_all_start_methods()


def resolve_workers(config: TrainConfig, device: torch.device, n_jobs: int) -> int:
    """Worker processes for ``n_jobs`` fits on ``device`` (1 = run them here, one by one)."""
    if device.type != "cpu" or n_jobs <= 1 or not fork_available():
        if config.fit_workers > 1 and device.type == "cpu" and not fork_available():
            log.warning("fit_workers=%d needs fork (Linux); fitting in this process",
                        config.fit_workers)
        return 1
    if config.fit_workers == 0:
        per_fit = config.cpu_threads if config.cpu_threads > 0 else torch.get_num_threads()
        workers = available_cpus() // max(per_fit, 1)
    else:
        workers = config.fit_workers
    return max(1, min(workers, n_jobs))


# The state a forked worker inherits: set in the parent just before the workers are forked and
# cleared after they are gone (module-level, because that is what a fork copies).
_FORK_STATE: dict[str, Any] = {}


def _fit_in_worker(job: FitJob) -> tuple[tuple[str, str, int], FitResult, float]:
    """A worker's fit: the same call as the serial executor, without progress callbacks."""
    data: DeviceSamples = _FORK_STATE["data"]
    t0 = time.perf_counter()
    _, res = fit_model(job.kind, data, job.fit_days, job.valid_days, _FORK_STATE["config"],
                       job.seed, _FORK_STATE["n_factors"])
    return job.key, res, time.perf_counter() - t0


def fit_all(
    jobs: Sequence[FitJob],
    data: DeviceSamples,
    config: TrainConfig,
    n_factors: int,
    *,
    on_done: DoneCallback | None = None,
    epoch_callback: EpochCallbackFactory | None = None,
) -> dict[tuple[str, str, int], FitResult]:
    """Fit every job; ``{job.key: FitResult}``. Serial or forked workers (module docstring).

    A fit that raises, in either executor, raises here (the other workers are stopped); a
    worker that dies (killed, out of memory) raises ``BrokenProcessPool``.
    """
    workers = resolve_workers(config, data.device, len(jobs))
    out: dict[tuple[str, str, int], FitResult] = {}
    if not jobs:
        return out
    if workers == 1:
        for job in jobs:
            t0 = time.perf_counter()
            cb = epoch_callback(job) if epoch_callback is not None else None
            _, res = fit_model(job.kind, data, job.fit_days, job.valid_days, config, job.seed,
                               n_factors, cb)
            out[job.key] = res
            if on_done is not None:
                on_done(job, res, time.perf_counter() - t0)
        return out
    by_key = {j.key: j for j in jobs}
    order = sorted(jobs, key=lambda j: -j.cost)
    log.info("fitting %d models in %d worker processes (%s torch thread(s) each)", len(jobs),
             workers, config.cpu_threads or "default")
    _FORK_STATE.update(data=data, config=config, n_factors=n_factors)
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns on fork() in a process with threads (the progress display, the
            # store writer). The workers only run torch on the inherited samples and leave
            # through os._exit: none of those threads' locks is taken in a worker.
            warnings.filterwarnings("ignore", category=DeprecationWarning,
                                    message=".*fork.*")
            with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
                futures = [pool.submit(_fit_in_worker, j) for j in order]
                try:
                    for fut in as_completed(futures):
                        key, res, seconds = fut.result()
                        out[key] = res
                        if on_done is not None:
                            on_done(by_key[key], res, seconds)
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
    finally:
        _FORK_STATE.clear()
    return out
