"""Dask scale-out: map blocks of consecutive trading days over a ``dask.distributed`` cluster.

Days are independent for factor computation, so a multi-day run is split into contiguous blocks
of dates (:func:`date_blocks`), one task per block. Each task opens the store itself and calls
:func:`fbgpu.factors.run_factors` on its block (``first .. last``): the same code path as a
single-process run, so within a block the next day's read (and on a GPU its pinned upload,
:class:`fbgpu.factors.compute.DayPrefetch`) overlaps the current day's compute, and each day's
``factors`` partition is written atomically (with its manifest) behind the compute. Hence the
outputs are byte-for-byte those of a single-process run, a lost worker's task is rescheduled
by the scheduler (its ``allowed-failures`` setting; a half-done block left no partition that
reads as complete, and its finished days are skipped when it runs again), and a re-run skips
finished dates. Errors raised by a task are not retried by Dask (``retries=0``): the task
itself already retries a failed block one date at a time, and a deterministic failure would
otherwise run three times more.

Block size (``dates_per_task``): by default ``max(1, D // (2 * W))`` for ``D`` dates and ``W``
workers, so there are at least ``2 W`` blocks whenever ``D >= 2 W``: every worker gets two or
more, and a worker that finishes early takes another (load balance), while each block is as
long as that allows (the prefetch overlap is lost only at a block's first day). A block that
fails is run again one date at a time, which retries it and names the failing date
(:class:`FactorDateError`).

Clusters (``--cluster``):

* ``local``: :class:`dask.distributed.LocalCluster` with one single-threaded worker process per
  core (numba's own thread pool is limited to one thread per worker, so the cores are not
  oversubscribed);
* ``local-cuda``: :class:`dask_cuda.LocalCUDACluster`, one worker per visible GPU (``gpu`` extra);
* anything else is taken as a scheduler address (``tcp://host:8786``) of an existing cluster,
  which may span several nodes; the store must then be on a file system all workers see.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

from fbgpu.data.store import Store
from fbgpu.errors import ExitStatus, exit_status_of
from fbgpu.factors import (
    FactorConfig,
    FactorRunSummary,
    input_dates,
    load_modules,
    resolve_names,
    run_factors,
)
from fbgpu.factors.compute import PartialRunError

log = logging.getLogger(__name__)


@contextmanager
def dask_client(cluster: str = "local", n_workers: int | None = None) -> Any:
    """A ``dask.distributed.Client`` for ``cluster`` (see the module docstring), closed on exit."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as e:  # pragma: no cover - the dist extra is part of dev
        raise RuntimeError("Dask scale-out needs the `dist` extra: pip install fbgpu[dist]") from e
    owned = None
    if cluster == "local":
        n = n_workers or os.cpu_count() or 1
        owned = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                             dashboard_address=None, env={"NUMBA_NUM_THREADS": "1"})
        client = Client(owned)
    elif cluster == "local-cuda":
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError as e:
            raise RuntimeError("--cluster local-cuda needs the `gpu` extra (dask-cuda)") from e
        owned = LocalCUDACluster(n_workers=n_workers, dashboard_address=None)
        client = Client(owned)
    else:
        client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        if owned is not None:
            owned.close()


class FactorDateError(RuntimeError):
    """Computing the factors of one date failed on a worker; the message names the date.

    ``exit_status`` (:mod:`fbgpu.errors`): the cause's own when the task wrote nothing (a
    rejected input stays 2, as in a single-process run), else 3 (the store changed)."""

    def __init__(self, date: dt.date, cause: str,
                 exit_status: int = ExitStatus.FAILED) -> None:
        self.date = date
        self.cause = cause
        self.exit_status = ExitStatus(exit_status)
        super().__init__(f"factors for {date} failed: {cause}")

    def __reduce__(self) -> tuple[Any, ...]:  # raised on a worker, re-raised on the client
        return (FactorDateError, (self.date, self.cause, int(self.exit_status)))


def date_blocks(dates: Sequence[dt.date], n_workers: int,
                dates_per_task: int | None = None) -> list[list[dt.date]]:
    """Split ``dates`` (sorted) into contiguous blocks, in order: every date in exactly one.

    ``dates_per_task`` dates per block (the last may be shorter); None: ``max(1, D // (2 W))``
    for ``D`` dates and ``W = n_workers``, i.e. at least ``2 W`` blocks when ``D >= 2 W``
    (module doc).
    """
    if dates_per_task is None:
        dates_per_task = max(1, len(dates) // (2 * max(1, n_workers)))
    if dates_per_task < 1:
        raise ValueError(f"dates_per_task must be >= 1, got {dates_per_task}")
    return [list(dates[i:i + dates_per_task]) for i in range(0, len(dates), dates_per_task)]


def _factors_block(root: str, block: list[dt.date], names: list[str], backend: str,
                   config: dict[str, Any],
                   modules: list[tuple[str, str]] | None = None) -> FactorRunSummary:
    """One task: :func:`run_factors` over the block's dates (first .. last, with prefetch).

    If the block fails, its dates are run again one at a time (those already written are
    skipped as current): a transient error is thus retried, and a lasting one is raised as
    :class:`FactorDateError` naming the date it happens on, after the block's other dates
    were tried.
    """
    # User modules travel as source text: the worker registers the very code the client
    # loaded, whether or not it sees the client's files.
    from fbgpu.factors.user import load_source

    for origin, source in modules or []:
        load_source(origin, source)
    cfg = FactorConfig(**{**config, "modules": ()})
    store = Store(root)
    total = FactorRunSummary(factors=len(names), backend=backend)
    try:
        return run_factors(store, block[0], block[-1], names=names, backend=backend,
                           config=cfg, progress=False)
    except Exception as e:
        # dates the block computed before failing: written, so counted as computed (the
        # one-date-at-a-time pass below finds them current)
        early = list(e.written) if isinstance(e, PartialRunError) else []
        total.dates_computed += early
        if len(block) == 1:
            raise FactorDateError(block[0], f"{type(e).__name__}: {e}",
                                  exit_status_of(e)) from e
        log.warning("factors block %s .. %s failed (%s: %s); running it one date at a time",
                    block[0], block[-1], type(e).__name__, e)
    failed: list[tuple[dt.date, Exception]] = []
    for d in block:  # every date is tried: one bad day does not cost the others
        if d in early:
            continue
        try:
            _add(total, run_factors(store, d, d, names=names, backend=backend, config=cfg,
                                    progress=False))
        except Exception as e:
            failed.append((d, e))
    if failed:
        (d, e), more = failed[0], len(failed) - 1
        # nothing written by this task: the cause's status (a rejected input stays 2)
        status = exit_status_of(e) if not total.dates_computed else ExitStatus.FAILED
        raise FactorDateError(d, f"{type(e).__name__}: {e}" + (
            f" (and {more} more failed dates: {', '.join(str(f[0]) for f in failed[1:])})"
            if more else ""), status) from e
    return total


def _add(total: FactorRunSummary, part: FactorRunSummary) -> None:
    """Sum ``part`` (one task's summary) into ``total``."""
    total.dates_computed += part.dates_computed
    total.dates_skipped += part.dates_skipped
    total.stock_days += part.stock_days
    total.backend = part.backend


def run_factors_distributed(
    store: Store | str,
    start: dt.date | str | None = None,
    end: dt.date | str | None = None,
    names: Sequence[str] | None = None,
    backend: str = "auto",
    config: FactorConfig | None = None,
    cluster: str = "local",
    n_workers: int | None = None,
    dates_per_task: int | None = None,
) -> FactorRunSummary:
    """:func:`fbgpu.factors.run_factors` with one task per block of consecutive dates on a Dask
    cluster (:func:`date_blocks`; ``dates_per_task`` None: at least two blocks per worker).

    A date that fails raises :class:`FactorDateError` naming it, once every block has run (after
    the task's retries; the other dates are written).
    """
    t0 = time.perf_counter()
    store = store if isinstance(store, Store) else Store(store)
    dates = input_dates(store, start, end)
    if not dates:
        raise ValueError(f"store {store.root} has no input data between {start} and {end}")
    config = config or FactorConfig()
    modules = [(m.origin, m.source) for m in load_modules(config.modules)]
    names = resolve_names(list(names) if names is not None else None)
    cfg = config.to_dict()
    total = FactorRunSummary(factors=len(names), backend=backend)
    with dask_client(cluster, n_workers) as client:
        from dask.distributed import wait  # importable: dask_client checked the extra

        workers = max(1, len(client.nthreads()))  # the workers connected now
        blocks = date_blocks(dates, workers, dates_per_task)
        log.info("dask %s: %d dates in %d tasks of <= %d dates over %d workers", cluster,
                 len(dates), len(blocks), max(len(b) for b in blocks), workers)
        futures = client.map(_factors_block, [str(store.root)] * len(blocks), blocks,
                             names=names, backend=backend, config=cfg, modules=modules,
                             pure=False, retries=0)
        # every block runs to its end (a failed one does not cancel the others), then the
        # earliest failure is raised
        wait(futures)
        errors: list[BaseException] = []
        for f in futures:
            if f.status == "error":
                errors.append(f.exception())
            else:
                _add(total, f.result())
        for e in errors[1:]:
            log.error("dask %s: %s", cluster, e)
        if errors:
            raise errors[0]
    total.dates_computed.sort()
    total.dates_skipped.sort()
    total.seconds = time.perf_counter() - t0
    log.info("%s (dask %s)", total.line(), cluster)
    return total
