"""Dask scale-out: map independent trading days over a ``dask.distributed`` cluster.

Days are independent for factor computation, so a multi-day run is one task per date. Each task
opens the store itself, reads its own input partitions and writes its own ``factors`` partition
atomically (with its manifest) through the same :func:`fbgpu.factors.run_factors` code path as a
single-process run: the outputs are byte-for-byte the same, a lost worker's task is simply retried
(a half-done task left no partition that reads as complete), and a re-run skips finished dates.

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
from fbgpu.factors import (
    FactorConfig,
    FactorRunSummary,
    input_dates,
    load_modules,
    resolve_names,
    run_factors,
)

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


def _factors_one_day(root: str, date: dt.date, names: list[str], backend: str,
                     config: dict[str, Any],
                     modules: list[tuple[str, str]] | None = None) -> FactorRunSummary:
    # User modules travel as source text: the worker registers the very code the client
    # loaded, whether or not it sees the client's files.
    from fbgpu.factors.user import load_source

    for origin, source in modules or []:
        load_source(origin, source)
    cfg = FactorConfig(**{**config, "modules": ()})
    return run_factors(Store(root), date, date, names=names, backend=backend, config=cfg,
                       progress=False)


def run_factors_distributed(
    store: Store | str,
    start: dt.date | str | None = None,
    end: dt.date | str | None = None,
    names: Sequence[str] | None = None,
    backend: str = "auto",
    config: FactorConfig | None = None,
    cluster: str = "local",
    n_workers: int | None = None,
) -> FactorRunSummary:
    """:func:`fbgpu.factors.run_factors` with one task per date on a Dask cluster."""
    t0 = time.perf_counter()
    store = store if isinstance(store, Store) else Store(store)
    dates = input_dates(store, start, end)
    if not dates:
        raise ValueError(f"store {store.root} has no input data between {start} and {end}")
    config = config or FactorConfig()
    modules = [(m.origin, m.source) for m in load_modules(config.modules)]
    names = resolve_names(list(names) if names is not None else None)
    cfg = config.model_dump(mode="json")
    total = FactorRunSummary(factors=len(names), backend=backend)
    with dask_client(cluster, n_workers) as client:
        futures = client.map(_factors_one_day, [str(store.root)] * len(dates), dates,
                             names=names, backend=backend, config=cfg, modules=modules,
                             pure=False, retries=2)
        for part in client.gather(futures):
            total.dates_computed += part.dates_computed
            total.dates_skipped += part.dates_skipped
            total.stock_days += part.stock_days
            total.backend = part.backend
    total.dates_computed.sort()
    total.dates_skipped.sort()
    total.seconds = time.perf_counter() - t0
    log.info("%s (dask %s)", total.line(), cluster)
    return total
