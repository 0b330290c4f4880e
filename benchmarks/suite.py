"""The benchmark suite: one run, one table, one JSON (``fbgpu bench``, ``make bench``).

Usage::

    fbgpu bench --store ./fbgpu-demo-bench              # full mode (~5,000-stock day), 3 repeats
    fbgpu bench --quick --store /tmp/fbgpu-health       # smoke test: tiny sizes, 1 repeat
    python benchmarks/suite.py --store DIR [--quick] [--backend cpu|gpu|auto] [--out DIR]

Sections (each measured ``repeats`` times; the median and the min/max spread are reported):

* ``factors``: throughput of the 27 factors per family (minute / trade / order) and for all 27 on
  one full-market day, for the fbgpu ``cpu`` backend, the straightforward pandas implementation
  (:mod:`baseline_pandas`), the polars implementation of ``bench_factors.py`` when it exposes one,
  and the ``gpu`` backend when present: seconds, input records/s, ticks/s, stock-days/s, seconds
  per full-market day (5,000 stock-days), speedups over pandas and polars, and the bandwidth floor
  (bytes the family must read once / measured memory copy bandwidth) with each time's ratio to it;
* ``scaling``: all-27 seconds vs. stocks (500 -> 5,000), ticks per stock-day (x1, x4) and days
  (1 -> 20), as PNG curves;
* ``gru``: seconds per epoch of the HF and LF GRUs (``bench_models.py``);
* ``osqp``: seconds per rebalance at CSI 500 and CSI 1000 sizes (``bench_portfolio.py``);
* ``dask`` (full mode only): a 20-day factor run on a local Dask cluster, 1 vs. 2 workers;
* ``memory``: the peak resident set size of each section (and of the Dask workers) and, on a GPU,
  the peak device memory; ``meta``: machine, library versions, sizes, wall time.

Markets are generated with the synthetic generator and cached under ``<store>/bench-markets/``
(reused while their configuration is unchanged). Outputs: ``bench.json``, ``bench.md`` and PNGs in
the output directory, and the report's section (CSV tables, PNGs, ``index.json``) in
``<store>/reports/bench/``. Timings are never asserted anywhere: shared machines are noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import importlib
import json
import logging
import math
import os
import platform
import re
import resource
import shutil
import statistics
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from fbgpu.data.store import Store
from fbgpu.data.synth import SynthConfig, generate_market, resolve_config
from fbgpu.engine.backend import Backend, BackendError, get_backend
from fbgpu.factors import compute_day, compute_factors, factor_names

log = logging.getLogger("fbgpu.bench")

BENCH_DIR = Path(__file__).resolve().parent
FAMILIES = ("minute", "trade", "order", "all")
_MINUTE_FIELDS = ("open", "high", "low", "close", "volume", "amount", "num_trades")
_TRADE_COLUMNS = ("ts", "price", "amount", "buy_order_id", "sell_order_id", "side")
_ORDER_COLUMNS = ("ts", "price", "volume", "side", "order_type")
#: The columns each family needs, per table: its definitions' inputs plus ``symbol`` (the stock
#: runs). The trade family needs the bars' open and close for ``r_k``. The same columns as
#: ``bench_factors.py``'s floor, plus ``symbol``.
FAMILY_COLUMNS: dict[str, dict[str, tuple[str, ...]]] = {
    "minute": {"minute": ("symbol", *_MINUTE_FIELDS)},
    "trade": {"minute": ("symbol", "open", "close"), "trades": ("symbol", *_TRADE_COLUMNS)},
    "order": {"orders": ("symbol", *_ORDER_COLUMNS)},
    "all": {"minute": ("symbol", *_MINUTE_FIELDS), "trades": ("symbol", *_TRADE_COLUMNS),
            "orders": ("symbol", *_ORDER_COLUMNS)},
}
#: The tables each family reads.
FAMILY_TABLES: dict[str, tuple[str, ...]] = {f: tuple(c) for f, c in FAMILY_COLUMNS.items()}
TICK_TABLES = ("trades", "orders")


# ============================================================================ configuration
@dataclasses.dataclass(frozen=True)
class SuiteSizes:
    """Problem sizes of one suite run (the ``[bench]`` table of a TOML config overrides them).

    Defaults are the full mode; :func:`quick_sizes` gives the ``--quick`` ones.
    """

    #: Synthetic preset of the throughput market (one day); ``full-day`` = 5,000 stocks.
    market_preset: str = "full-day"
    #: Overrides of that preset's SynthConfig fields (e.g. ``{"n_stocks": 24}``).
    market_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: Stock-days of a full-market day, to express "seconds per full-market day".
    full_market_stocks: int = 5000
    #: Stock counts of the scaling-with-stocks curve (evenly spaced subsets of the market).
    scaling_stocks: tuple[int, ...] = (500, 1000, 2000, 5000)
    #: Stocks of the ticks-per-stock-day and days curves (and the Dask run).
    scaling_base_stocks: int = 500
    #: Multipliers of ``orders_per_day`` for the ticks-per-stock-day curve.
    scaling_tick_multipliers: tuple[int, ...] = (1, 4)
    #: Day counts of the scaling-with-days curve (the last one is the Dask run's length).
    scaling_days: tuple[int, ...] = (1, 5, 10, 20)
    #: Repeats of the pandas/polars baselines (they are slow; at most ``repeats``).
    baseline_repeats: int = 3
    #: Bytes of the array copied to measure memory bandwidth.
    bandwidth_bytes: int = 512 * 2**20
    #: GRU benchmark: stocks x days of random factor arrays, timed epochs per model.
    gru_stocks: int = 300
    gru_days: int = 500
    gru_epochs: int = 3
    #: OSQP benchmark: (candidates, constituents) sizes and weekly rebalances per size.
    osqp_sizes: tuple[tuple[int, int], ...] = ((1500, 500), (5000, 1000))
    osqp_steps: int = 8
    #: Run the Dask 1-vs-2-worker comparison.
    dask: bool = True
    dask_workers: tuple[int, ...] = (1, 2)
    #: Seed of every generated market.
    seed: int = 0


def quick_sizes() -> SuiteSizes:
    """Sizes of ``--quick``: a tiny market, well under a minute on 2 cores, no Dask."""
    return SuiteSizes(
        market_preset="tiny",
        market_overrides={"n_days": 1},
        scaling_stocks=(6, 12, 24),
        scaling_base_stocks=12,
        scaling_days=(1, 2, 3),
        bandwidth_bytes=64 * 2**20,
        gru_stocks=50,
        gru_days=300,
        gru_epochs=2,
        osqp_sizes=((150, 50), (300, 100)),
        osqp_steps=2,
        dask=False,
    )


def load_sizes(quick: bool, config: str | Path | None = None) -> SuiteSizes:
    """The sizes of the mode, with the ``[bench]`` table of ``config`` (TOML) applied."""
    sizes = quick_sizes() if quick else SuiteSizes()
    if config is None:
        return sizes
    p = Path(config)
    try:
        data = tomllib.loads(p.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"cannot read bench config {p}: {e}") from e
    section = data.get("bench", {})
    known = {f.name: f for f in dataclasses.fields(SuiteSizes)}
    unknown = sorted(set(section) - set(known))
    if unknown:
        raise ValueError(f"{p}: unknown [bench] key(s) {unknown}; known: {sorted(known)}")
    values: dict[str, Any] = {}
    for k, v in section.items():
        if isinstance(v, list):  # TOML arrays -> the dataclass's tuples
            v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
        values[k] = v
    return dataclasses.replace(sizes, **values)


# ============================================================================ measurement tools
@dataclasses.dataclass
class Timing:
    """Seconds of ``n`` repeated runs: median and spread (min, max)."""

    median: float
    min: float
    max: float
    runs: list[float]

    def as_dict(self) -> dict[str, Any]:
        return {"seconds_median": self.median, "seconds_min": self.min,
                "seconds_max": self.max, "repeats": len(self.runs)}


def time_repeated(fn: Callable[[], Any], repeats: int, warmup: bool = False) -> Timing:
    """Wall time of ``fn()`` over ``repeats`` runs (after one untimed run when ``warmup``)."""
    if warmup:
        fn()
    runs = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return Timing(statistics.median(runs), min(runs), max(runs), runs)


def _vm_hwm_kb() -> int | None:
    """Peak RSS of this process since the last reset (VmHWM, KiB), Linux only."""
    try:
        m = re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text())
    except OSError:
        return None
    return int(m.group(1)) if m else None


def _reset_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` 5); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class PeakMemory:
    """Peak host RSS (MiB) and peak device memory (MiB, GPU only) over a ``with`` block.

    Host: VmHWM after resetting it at entry (falls back to ``getrusage`` ru_maxrss, the process
    lifetime peak, where ``/proc/self/clear_refs`` is unavailable). Device: a sampler thread reads
    cupy's memory-pool size every 5 ms, and torch's own peak counter is reset and read.
    """

    def __init__(self, backend: Backend | None = None) -> None:
        self.gpu = backend is not None and backend.is_gpu
        self.rss_mb = math.nan
        self.device_mb: float | None = None
        self.scope = "section"
        self._stop = threading.Event()
        self._device_peak = 0
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        import cupy as cp

        pool = cp.get_default_memory_pool()
        while not self._stop.is_set():
            self._device_peak = max(self._device_peak, int(pool.total_bytes()))
            self._stop.wait(0.005)

    def __enter__(self) -> PeakMemory:
        if not _reset_hwm():
            self.scope = "process"
        if self.gpu:
            with contextlib.suppress(Exception):
                import torch

                if torch.cuda.is_available():
                    torch.cuda.reset_peak_memory_stats()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        kb = _vm_hwm_kb() if self.scope == "section" else None
        if kb is None:
            kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.scope = "process"
        self.rss_mb = kb / 1024
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            peak = self._device_peak
            with contextlib.suppress(Exception):
                import torch

                if torch.cuda.is_available():
                    peak = max(peak, int(torch.cuda.max_memory_allocated()))
            self.device_mb = peak / 2**20

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"peak_rss_mb": round(self.rss_mb, 1), "rss_scope": self.scope}
        if self.device_mb is not None:
            out["peak_device_mb"] = round(self.device_mb, 1)
        return out


def _sync(backend: Backend) -> None:
    if backend.is_gpu:
        backend.xp.cuda.Device().synchronize()


def copy_bandwidth(backend: Backend, nbytes: int, repeats: int = 5) -> float:
    """Memory copy bandwidth, bytes/s: ``nbytes`` / best time of copying a float64 array.

    (The STREAM "copy" figure counts read + write, i.e. twice this number.)
    """
    xp = backend.xp
    n = max(1, nbytes // 8)
    src = xp.arange(n, dtype=xp.float64)
    dst = xp.empty_like(src)
    best = math.inf
    for _ in range(repeats + 1):  # the first copy faults the destination pages in
        _sync(backend)
        t0 = time.perf_counter()
        xp.copyto(dst, src)
        _sync(backend)
        best = min(best, time.perf_counter() - t0)
    del src, dst
    return n * 8 / best


def machine_info() -> dict[str, Any]:
    """The machine and library versions the numbers were measured with."""
    import numba
    import pandas
    import scipy
    import torch

    import fbgpu

    libs: dict[str, str] = {"fbgpu": fbgpu.__version__, "python": platform.python_version(),
                            "numpy": np.__version__, "numba": numba.__version__,
                            "pyarrow": pa.__version__, "pandas": pandas.__version__,
                            "scipy": scipy.__version__, "torch": torch.__version__}
    for name in ("polars", "osqp", "dask", "cupy", "cudf"):
        try:
            from importlib.metadata import version

            libs[name] = version(name if name != "cupy" else "cupy-cuda12x")
        except Exception:
            with contextlib.suppress(Exception):
                libs[name] = importlib.import_module(name).__version__
    mem_gb = None
    with contextlib.suppress(OSError, AttributeError, ValueError):
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    cpu_model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        m = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        if m:
            cpu_model = m.group(1).strip()
    return {"hostname": platform.node(), "platform": platform.platform(), "cpu": cpu_model,
            "cpu_count": os.cpu_count(), "memory_gb": mem_gb,
            "numba_threads": numba.config.NUMBA_NUM_THREADS,
            "torch_threads": torch.get_num_threads(), "libraries": libs}


# ============================================================================ markets
def _market_config(preset: str, overrides: dict[str, Any]) -> SynthConfig:
    _, base = resolve_config(preset)
    return base.model_copy(update=overrides) if overrides else base


def ensure_market(root: Path, config: SynthConfig, seed: int) -> Store:
    """A synthetic market for ``config`` in ``root``: reused when ``root/synth.json`` records the
    same configuration and seed, else (re)generated from scratch."""
    store = Store(root)
    meta_path = root / "synth.json"
    want = json.loads(config.model_dump_json())
    if meta_path.exists():
        with contextlib.suppress(json.JSONDecodeError, OSError):
            meta = json.loads(meta_path.read_text())
            if meta.get("config") == want and meta.get("seed") == seed:
                return store
    if root.exists():
        shutil.rmtree(root)
    t0 = time.perf_counter()
    generate_market(store, config, seed=seed, progress=False)
    log.info("bench: generated %s (%d stocks x %d days) in %.1fs", root.name, config.n_stocks,
             config.n_days, time.perf_counter() - t0)
    return store


def stock_subset(source: Store, root: Path, n_stocks: int) -> Store:
    """The first day of ``source`` restricted to ``n_stocks`` evenly spaced symbols (cached).

    Evenly spaced over the sorted symbols so that every board and activity level is represented.
    """
    date = source.dates("trades")[0]
    marker = root / "subset.json"
    key = {"source": str(source.root.resolve()), "n_stocks": n_stocks, "date": date.isoformat(),
           "inputs": {t: m.sha256 for t in ("minute", "trades", "orders")
                      if (m := source.manifest(t, date)) is not None}}
    if marker.exists() and json.loads(marker.read_text()) == key:
        return Store(root)
    if root.exists():
        shutil.rmtree(root)
    symbols = source.read("minute", date, ["symbol"]).column("symbol").cast(pa.string())
    universe = sorted(set(symbols.to_pylist()))
    pick = np.unique(np.linspace(0, len(universe) - 1, min(n_stocks, len(universe))).round())
    keep = pa.array([universe[int(i)] for i in pick], pa.string())
    store = Store(root)
    import pyarrow.compute as pc

    for table in ("minute", "trades", "orders"):
        if not source.has(table, date):
            continue
        t = source.read(table, date)
        t = t.filter(pc.is_in(t.column("symbol").cast(pa.string()), value_set=keep))
        store.write(table, date, t, sort=False)
    root.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(key))
    return store


def _rows(store: Store, table: str, date: dt.date) -> int:
    m = store.manifest(table, date)
    if m is not None:
        return int(m.rows)
    return store.read(table, date, ["symbol"]).num_rows if store.has(table, date) else 0


def market_stats(store: Store, dates: Sequence[dt.date]) -> dict[str, Any]:
    """Rows per table, stock-days, and the bytes each family must read once: the Arrow
    in-memory size of its :data:`FAMILY_COLUMNS`, summed over ``dates``."""
    rows = {t: sum(_rows(store, t, d) for d in dates) for t in ("minute", "trades", "orders")}
    column_bytes: dict[tuple[str, str], int] = {}
    for t, cols in FAMILY_COLUMNS["all"].items():
        for d in dates:
            if store.has(t, d):
                part = store.read(t, d, list(cols))
                for c in cols:
                    column_bytes[t, c] = column_bytes.get((t, c), 0) + int(part.column(c).nbytes)
    family_bytes = {f: sum(column_bytes.get((t, c), 0) for t, cols in tc.items() for c in cols)
                    for f, tc in FAMILY_COLUMNS.items()}
    stock_days = sum(len(compute_universe(store, d)) for d in dates)
    return {"dates": [d.isoformat() for d in dates], "stock_days": stock_days,
            "minute_bars": rows["minute"], "trades": rows["trades"], "orders": rows["orders"],
            "ticks": rows["trades"] + rows["orders"],
            "ticks_per_stock_day": (rows["trades"] + rows["orders"]) / max(stock_days, 1),
            "bytes_read": family_bytes,
            "table_bytes": {t: sum(v for (tt, _), v in column_bytes.items() if tt == t)
                            for t in FAMILY_COLUMNS["all"]}}


def compute_universe(store: Store, date: dt.date) -> set[str]:
    """The stocks of a day: the union of the minute, trades and orders partitions' symbols."""
    out: set[str] = set()
    for t in ("minute", "trades", "orders"):
        if store.has(t, date):
            col = store.read(t, date, ["symbol"]).column("symbol").cast(pa.string())
            out.update(col.unique().to_pylist())
    return out


# ============================================================================ implementations
def _load_bench_module(name: str) -> Any | None:
    """Import ``benchmarks/<name>.py`` (None when absent)."""
    path = BENCH_DIR / f"{name}.py"
    if not path.exists():
        return None
    if name in sys.modules:
        return sys.modules[name]
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    return importlib.import_module(name)


#: Names under which ``bench_factors.py`` may expose its polars implementation
#: ``fn(store, date, names) -> table``.
POLARS_FUNCTIONS = ("compute_day_polars", "polars_compute_day", "polars_day", "polars_factors")


def polars_implementation() -> tuple[Callable[[Store, dt.date, list[str]], Any] | None, str]:
    """The polars implementation from ``bench_factors.py``, or (None, why it is skipped)."""
    try:
        mod = _load_bench_module("bench_factors")
    except Exception as e:  # a broken sibling benchmark must not take the suite down
        return None, f"bench_factors.py does not import: {e}"
    if mod is None:
        mod = _load_bench_module("baseline_polars")
        if mod is None:
            return None, "no polars implementation (benchmarks/bench_factors.py is absent)"
    for name in POLARS_FUNCTIONS:
        fn = getattr(mod, name, None)
        if callable(fn):
            return fn, ""
    return None, (f"{mod.__name__}.py exposes none of {', '.join(POLARS_FUNCTIONS)}; "
                  "polars skipped")


def _engine_runner(backend: Backend) -> Callable[[Store, dt.date, list[str]], Any]:
    def run(store: Store, date: dt.date, names: list[str]) -> Any:
        day = compute_day(store, date, names, backend)
        return backend.to_host(day.values)  # includes the device sync on the GPU

    return run


def _pandas_runner() -> Callable[[Store, dt.date, list[str]], Any]:
    mod = _load_bench_module("baseline_pandas")
    if mod is None:
        raise FileNotFoundError(f"{BENCH_DIR / 'baseline_pandas.py'} is missing")
    return lambda store, date, names: mod.compute_day_pandas(store, date, names)


# ============================================================================ sections
def _family_names(family: str) -> list[str]:
    return factor_names(None if family == "all" else family)  # type: ignore[arg-type]


def bench_factors_section(store: Store, sizes: SuiteSizes, backends: list[Backend],
                          repeats: int, memory: dict[str, Any]) -> dict[str, Any]:
    """Throughput per family and for all 27, every implementation, on the market's first day."""
    date = store.dates("trades")[0]
    stats = market_stats(store, [date])
    cpu = get_backend("cpu")
    bandwidth = {"cpu": copy_bandwidth(cpu, sizes.bandwidth_bytes)}
    impls: list[tuple[str, Callable[..., Any], int, bool, Backend | None]] = []
    for b in backends:
        impls.append((b.name, _engine_runner(b), repeats, True, b))
        if b.is_gpu:
            bandwidth["gpu"] = copy_bandwidth(b, sizes.bandwidth_bytes)
    notes: list[str] = []
    impls.append(("pandas", _pandas_runner(), min(repeats, sizes.baseline_repeats), False, None))
    polars_fn, why = polars_implementation()
    if polars_fn is not None:
        impls.append(("polars", polars_fn, min(repeats, sizes.baseline_repeats), False, None))
    else:
        notes.append(why)
    rows: list[dict[str, Any]] = []
    for impl, fn, n_rep, warm, backend in impls:
        with PeakMemory(backend) as mem:
            for family in FAMILIES:
                names = _family_names(family)
                t = time_repeated(lambda fn=fn, names=names: fn(store, date, names), n_rep, warm)
                log.info("bench: factors %-6s %-6s %8.3fs", impl, family, t.median)
                rows.append(_throughput_row(impl, family, t, stats, bandwidth, sizes))
        memory[f"factors_{impl}"] = mem.as_dict()
    _add_speedups(rows)
    return {"market": {"preset": sizes.market_preset, "overrides": sizes.market_overrides,
                       **stats},
            "bandwidth_bytes_per_s": bandwidth,
            "rows": rows, "notes": notes}


def _throughput_row(impl: str, family: str, t: Timing, stats: dict[str, Any],
                    bandwidth: dict[str, float], sizes: SuiteSizes) -> dict[str, Any]:
    tables = FAMILY_TABLES[family]
    records = sum(stats["minute_bars" if tb == "minute" else tb] for tb in tables)
    ticks = sum(stats[tb] for tb in tables if tb in TICK_TABLES)
    sd = stats["stock_days"]
    nbytes = stats["bytes_read"][family]
    # The GPU's floor is its own memory bandwidth; every host implementation has the CPU's.
    floor = nbytes / bandwidth["gpu" if impl == "gpu" else "cpu"]
    return {
        "impl": impl, "family": family, "factors": len(_family_names(family)), **t.as_dict(),
        "records": records, "records_per_s": records / t.median,
        "ticks": ticks, "ticks_per_s": ticks / t.median if ticks else None,
        "stock_days": sd, "stock_days_per_s": sd / t.median,
        "s_per_full_market_day": t.median / sd * sizes.full_market_stocks,
        "bytes_read": nbytes, "floor_s": floor, "ratio_to_floor": t.median / floor,
    }


def _add_speedups(rows: list[dict[str, Any]]) -> None:
    """``speedup_vs_<baseline>`` = baseline median seconds / this row's, same family."""
    by = {(r["impl"], r["family"]): r["seconds_median"] for r in rows}
    for r in rows:
        for base in ("pandas", "polars"):
            if (base, r["family"]) in by and r["impl"] != base:
                r[f"speedup_vs_{base}"] = by[(base, r["family"])] / r["seconds_median"]


def bench_scaling_section(markets: dict[str, Any], backends: list[Backend], repeats: int
                          ) -> dict[str, Any]:
    """All-27 seconds along the three scaling axes (one curve per backend)."""
    out: dict[str, Any] = {}
    names = factor_names()
    for axis, points in markets.items():
        curve: list[dict[str, Any]] = []
        warmed: set[str] = set()  # one untimed run per backend and axis (numba cache, cupy)
        for x, store, dates in points:
            stats = market_stats(store, dates)
            for b in backends:
                def run(b: Backend = b, store: Store = store, dates: list = dates) -> None:
                    b.to_host(compute_factors(store, dates, names, b).values)

                t = time_repeated(run, repeats, warmup=b.name not in warmed)
                warmed.add(b.name)
                curve.append({"x": x, "backend": b.name, **t.as_dict(),
                              "stock_days": stats["stock_days"], "ticks": stats["ticks"],
                              "ticks_per_stock_day": stats["ticks_per_stock_day"],
                              "stock_days_per_s": stats["stock_days"] / t.median,
                              "ticks_per_s": stats["ticks"] / t.median})
                log.info("bench: scaling %-6s %6s %s %8.3fs", axis, x, b.name, t.median)
        out[axis] = curve
    return out


def bench_gru_section(sizes: SuiteSizes, backend: Backend) -> dict[str, Any]:
    """Seconds per epoch of the HF and LF GRUs on random arrays (``bench_models.py``)."""
    bm = _load_bench_module("bench_models")
    if bm is None:
        raise FileNotFoundError(f"{BENCH_DIR / 'bench_models.py'} is missing")
    from fbgpu.models.config import DEMO_OVERRIDES, TrainConfig
    from fbgpu.models.device import torch_device

    device = torch_device(backend.name)
    inputs = bm.demo_sized_inputs(backend.xp, sizes.gru_stocks, sizes.gru_days)
    cfg = TrainConfig(**DEMO_OVERRIDES)  # the project's defaults (1 torch thread on the CPU)
    rows = [bm.bench_kind(kind, inputs, cfg, device, sizes.gru_epochs) for kind in ("hf", "lf")]
    for r in rows:
        log.info("bench: gru %s %.4f s/epoch", r["model"], r["epoch_s"])
    return {"stocks": sizes.gru_stocks, "days": sizes.gru_days, "epochs": sizes.gru_epochs,
            "device": str(device), "cpu_threads": cfg.cpu_threads, "rows": rows}


def bench_osqp_section(sizes: SuiteSizes) -> dict[str, Any]:
    """Seconds per rebalance (cold, warm, next cap) at CSI 500/1000 sizes (bench_portfolio)."""
    bp = _load_bench_module("bench_portfolio")
    if bp is None:
        raise FileNotFoundError(f"{BENCH_DIR / 'bench_portfolio.py'} is missing")
    rows = []
    for n, members in sizes.osqp_sizes:
        r = bp.bench_rebalance(n, members, sizes.osqp_steps, (0.3, 0.4, 0.5))
        log.info("bench: osqp %d:%d warm %.3fs", n, members, r["warm_s_median"])
        rows.append(r)
    return {"steps": sizes.osqp_steps, "caps": [0.3, 0.4, 0.5], "rows": rows}


def _hwm_mb(proc_status: str) -> float:
    """VmHWM of a ``/proc/<pid>/status`` text, MiB (NaN when absent)."""
    m = re.search(r"VmHWM:\s+(\d+)", proc_status)
    return int(m.group(1)) / 1024 if m else math.nan


def bench_dask_section(store: Store, dates: list[dt.date], workers: Sequence[int],
                       backend: str) -> dict[str, Any]:
    """A multi-day factor run on a local Dask cluster for each worker count (fresh outputs).

    The cluster has the settings of ``fbgpu.distributed.dask_client("local")`` (one
    single-threaded worker process per core, one numba thread each). Its start-up and the
    workers' warm-up (imports, numba cache loading: one day computed on every worker) are timed
    apart from the run, which is :func:`fbgpu.distributed.run_factors_distributed` on the
    started cluster, writing every date's ``factors`` partition from scratch.
    """
    from dask.distributed import Client, LocalCluster

    from fbgpu.distributed import run_factors_distributed

    rows = []
    hashes: dict[int, list[str]] = {}
    for n in workers:
        t0 = time.perf_counter()
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               dashboard_address=None, env={"NUMBA_NUM_THREADS": "1"})
        startup = time.perf_counter() - t0
        try:
            with Client(cluster) as client:
                t0 = time.perf_counter()
                client.run(compute_factors, str(store.root), [dates[0]], None, backend)
                warmup = time.perf_counter() - t0
                shutil.rmtree(store.root / "factors", ignore_errors=True)
                t0 = time.perf_counter()
                summary = run_factors_distributed(store, dates[0], dates[-1], backend=backend,
                                                  cluster=cluster.scheduler_address)
                seconds = time.perf_counter() - t0
                # VmHWM, not ru_maxrss: a spawned worker's ru_maxrss includes the RSS of the
                # parent it was forked from before its exec.
                status = client.run(Path("/proc/self/status").read_text)
        finally:
            cluster.close()
        hashes[n] = [m.sha256 if (m := store.manifest("factors", d)) else "" for d in dates]
        rows.append({"workers": n, "seconds": seconds, "startup_s": startup,
                     "warmup_s": warmup, "days": len(summary.dates_computed),
                     "stock_days": summary.stock_days,
                     "stock_days_per_s": summary.stock_days / seconds,
                     "worker_peak_rss_mb": max(_hwm_mb(t) for t in status.values())})
        log.info("bench: dask %d worker(s) %.2fs (start-up %.1fs, warm-up %.1fs)", n, seconds,
                 startup, warmup)
    base = rows[0]["seconds"]
    for r in rows:
        r["speedup_vs_first"] = base / r["seconds"]
    identical = len({tuple(h) for h in hashes.values()}) == 1
    return {"days": len(dates), "stocks": len(compute_universe(store, dates[0])), "rows": rows,
            "identical_outputs": identical, "target": "2 workers >= 1.6x one worker"}


# ============================================================================ figures and tables
def _plot_scaling(scaling: dict[str, Any], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"stocks": ("stocks (one day)", "scaling_stocks.png"),
              "ticks": ("ticks per stock-day", "scaling_ticks.png"),
              "days": ("days", "scaling_days.png")}
    files = []
    for axis, curve in scaling.items():
        xlabel, fname = labels[axis]
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for name in sorted({p["backend"] for p in curve}):
            pts = [p for p in curve if p["backend"] == name]
            xs = [p["ticks_per_stock_day"] if axis == "ticks" else p["x"] for p in pts]
            ys = [p["seconds_median"] for p in pts]
            err = [[p["seconds_median"] - p["seconds_min"] for p in pts],
                   [p["seconds_max"] - p["seconds_median"] for p in pts]]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=f"{name} (median, min-max)")
            ax.plot(xs, [ys[0] * x / xs[0] for x in xs], ls=":", color="grey")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("seconds, all 27 factors")
        ax.set_title(f"Scaling with {xlabel} (dotted: linear)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / fname, dpi=110)
        plt.close(fig)
        files.append(fname)
    return files


def _plot_throughput(rows: list[dict[str, Any]], out_dir: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    impls = list(dict.fromkeys(r["impl"] for r in rows))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    width = 0.8 / len(impls)
    for i, impl in enumerate(impls):
        vals = [next(r["stock_days_per_s"] for r in rows
                     if r["impl"] == impl and r["family"] == f) for f in FAMILIES]
        ax.bar(np.arange(len(FAMILIES)) + i * width, vals, width, label=impl)
    ax.set_xticks(np.arange(len(FAMILIES)) + width * (len(impls) - 1) / 2, FAMILIES)
    ax.set_yscale("log")
    ax.set_ylabel("stock-days per second")
    ax.set_title("Factor throughput per family")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "throughput.png", dpi=110)
    plt.close(fig)
    return "throughput.png"


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "-"
        a = abs(v)
        if a >= 1e6:
            return f"{v:.3g}"
        if a >= 100:
            return f"{v:,.0f}"
        if a >= 1:
            return f"{v:.2f}"
        if a >= 1e-3 or a == 0:
            return f"{v:.4f}"
        return f"{v:.2e}"
    return str(v)


def _md_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    head = "| " + " | ".join(h for h, _ in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(_fmt(r.get(k)) for _, k in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


FACTOR_COLUMNS = [("impl", "impl"), ("family", "family"), ("s (median)", "seconds_median"),
                  ("s min", "seconds_min"), ("s max", "seconds_max"), ("n", "repeats"),
                  ("ticks/s", "ticks_per_s"), ("records/s", "records_per_s"),
                  ("stock-days/s", "stock_days_per_s"),
                  ("s per full-market day", "s_per_full_market_day"),
                  ("floor s", "floor_s"), ("x floor", "ratio_to_floor"),
                  ("x pandas", "speedup_vs_pandas"), ("x polars", "speedup_vs_polars")]


def summary_tables(result: dict[str, Any]) -> dict[str, tuple[list[dict[str, Any]],
                                                             list[tuple[str, str]]]]:
    """The flat tables of a result: name -> (rows, (header, key) columns)."""
    tables: dict[str, tuple[list[dict[str, Any]], list[tuple[str, str]]]] = {
        "factor_throughput": (result["factors"]["rows"], FACTOR_COLUMNS)}
    scal = [{"axis": axis, **p} for axis, curve in result["scaling"].items() for p in curve]
    tables["scaling"] = (scal, [("axis", "axis"), ("x", "x"), ("backend", "backend"),
                                ("s (median)", "seconds_median"), ("s min", "seconds_min"),
                                ("s max", "seconds_max"), ("stock-days", "stock_days"),
                                ("ticks/stock-day", "ticks_per_stock_day"),
                                ("ticks/s", "ticks_per_s")])
    tables["gru"] = (result["gru"]["rows"], [("model", "model"), ("fit samples", "fit_samples"),
                                             ("s/epoch", "epoch_s"),
                                             ("first epoch s", "first_epoch_s"),
                                             ("window (demo) s", "window_demo_s"),
                                             ("window (full) <= s", "window_full_bound_s")])
    osqp = [{"size": f"{r['candidates']}:{r['constituents']}", **r}
            for r in result["osqp"]["rows"]]
    tables["osqp"] = (osqp, [("candidates:constituents", "size"),
                             ("cold s", "cold_s_median"), ("warm s", "warm_s_median"),
                             ("warm max s", "warm_s_max"), ("next cap s", "warm_next_cap_s_median"),
                             ("iterations (warm)", "iterations_warm_median")])
    if "rows" in result.get("dask", {}):
        tables["dask"] = (result["dask"]["rows"], [("workers", "workers"), ("s", "seconds"),
                                                   ("start-up s", "startup_s"),
                                                   ("warm-up s", "warmup_s"), ("days", "days"),
                                                   ("stock-days/s", "stock_days_per_s"),
                                                   ("speedup", "speedup_vs_first"),
                                                   ("worker peak RSS MB", "worker_peak_rss_mb")])
    mem = [{"section": k, **v} for k, v in result["memory"].items()]
    tables["memory"] = (mem, [("section", "section"), ("peak RSS MB", "peak_rss_mb"),
                              ("scope", "rss_scope"), ("peak device MB", "peak_device_mb")])
    return tables


def render_markdown(result: dict[str, Any]) -> str:
    """The suite's result as a markdown report (what is printed at the end of a run)."""
    meta = result["meta"]
    mk = result["factors"]["market"]
    lines = [
        f"# fbgpu benchmark ({'quick' if meta['quick'] else 'full'} mode)", "",
        f"{meta['started']}, {meta['machine']['cpu']} ({meta['machine']['cpu_count']} cores), "
        f"backends {', '.join(meta['backends'])}, {meta['repeats']} repeat(s), "
        f"{meta['seconds']:.0f} s in all.", "",
        f"Throughput market: preset `{mk['preset']}`, {mk['stock_days']} stock-days, "
        f"{mk['trades']:,} trades, {mk['orders']:,} orders, {mk['minute_bars']:,} minute bars "
        f"({mk['ticks_per_stock_day']:.0f} ticks per stock-day).", "",
    ]
    bw = result["factors"]["bandwidth_bytes_per_s"]
    lines.append("Copy bandwidth: " + ", ".join(f"{k} {v / 1e9:.1f} GB/s" for k, v in bw.items())
                 + ".")
    lines.append("")
    for note in result["factors"]["notes"]:
        lines.append(f"Note: {note}")
    for name, (rows, cols) in summary_tables(result).items():
        lines += ["", f"## {name.replace('_', ' ')}", "", _md_table(rows, cols)]
    if "identical_outputs" in result.get("dask", {}):
        lines += ["", f"Dask outputs identical across worker counts: "
                      f"{result['dask']['identical_outputs']}."]
    elif "skipped" in result.get("dask", {}):
        lines += ["", f"Dask: skipped ({result['dask']['skipped']})."]
    return "\n".join(lines) + "\n"


def write_report_section(result: dict[str, Any], report_dir: Path, figures: list[str],
                         figure_dir: Path) -> None:
    """CSV tables (with JSON twins), PNGs and ``index.json`` for ``fbgpu report``."""
    import pandas as pd

    report_dir.mkdir(parents=True, exist_ok=True)
    items = []
    captions = {
        "factor_throughput": "Factor throughput: fbgpu backends vs. pandas/polars baselines, "
                             "per family and all 27, with the bandwidth floor",
        "scaling": "All-27 seconds vs. stocks, ticks per stock-day and days",
        "gru": "GRU training: seconds per epoch",
        "osqp": "OSQP: seconds per rebalance at CSI 500 / CSI 1000 sizes",
        "dask": "Dask local cluster: multi-day factor run, 1 vs. 2 workers",
        "memory": "Peak memory per section",
    }
    for name, (rows, cols) in summary_tables(result).items():
        df = pd.DataFrame([{h: r.get(k) for h, k in cols} for r in rows])
        df.to_csv(report_dir / f"{name}.csv", index=False)
        df.to_json(report_dir / f"{name}.json", orient="records", indent=1)
        items.append({"file": f"{name}.csv", "caption": captions.get(name, name)})
    for fname in figures:
        if figure_dir.resolve() != report_dir.resolve():
            shutil.copyfile(figure_dir / fname, report_dir / fname)
        items.append({"file": fname, "caption": fname[:-4].replace("_", " ")})
    meta = result["meta"]
    text = (f"{'Quick' if meta['quick'] else 'Full'} benchmark run of {meta['started']} on "
            f"{meta['machine']['cpu']} ({meta['machine']['cpu_count']} cores); median of "
            f"{meta['repeats']} repeat(s), spread min-max. Timings on a shared machine are noisy.")
    (report_dir / "index.json").write_text(json.dumps(
        {"title": "Benchmarks", "text": text, "items": items}, indent=1))


# ============================================================================ the suite
def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, dt.date):
        return x.isoformat()
    return x


def _backends(backend: str) -> tuple[list[Backend], str]:
    """The backends to measure: always cpu, plus the GPU when asked for or (auto) usable."""
    cpu = get_backend("cpu")
    name = (backend or "auto").lower()
    if name not in ("cpu", "gpu", "auto"):
        raise ValueError(f"--backend must be cpu, gpu or auto, got {backend!r}")
    if name == "cpu":
        return [cpu], "gpu not measured (--backend cpu)"
    try:
        gpu = get_backend("gpu")
    except BackendError as e:
        if name == "gpu":
            raise
        return [cpu], f"gpu not present: {e}"
    return [cpu, gpu], ""


@contextlib.contextmanager
def _section(name: str, memory: dict[str, Any], backend: Backend | None = None
             ) -> Iterator[None]:
    log.info("bench: %s ...", name)
    with PeakMemory(backend) as mem:
        yield
    memory.setdefault(name, mem.as_dict())


def run_suite(
    out_dir: str | Path,
    quick: bool = False,
    backend: str = "auto",
    repeats: int = 3,
    store: str | Path | None = None,
    config: str | Path | None = None,
) -> dict[str, Any]:
    """Run every benchmark once (each timing ``repeats`` times) and write the results.

    ``out_dir`` receives ``bench.json``, ``bench.md`` and the PNGs; with ``store``, the generated
    markets are cached under ``<store>/bench-markets/`` and the report section is written to
    ``<store>/reports/bench/`` (without, markets go to ``<out_dir>/bench-markets/``). ``quick``
    uses :func:`quick_sizes` and one repeat. Returns the result dictionary written as JSON
    (sections ``meta, factors, scaling, gru, osqp, dask, memory``).
    """
    t_start = time.perf_counter()
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    repeats = 1 if quick else repeats
    sizes = load_sizes(quick, config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache = (Path(store) if store is not None else out) / "bench-markets"
    backends, gpu_note = _backends(backend)
    primary = backends[-1]
    memory: dict[str, Any] = {}
    result: dict[str, Any] = {}

    with _section("markets", memory):
        market_cfg = _market_config(sizes.market_preset, sizes.market_overrides)
        market = ensure_market(cache / "market", market_cfg, sizes.seed)
        day = market.dates("trades")[0]
        stocks_curve = []
        n_market = len(compute_universe(market, day))
        for n in sizes.scaling_stocks:
            s = market if n >= n_market else stock_subset(market, cache / f"stocks-{n}", n)
            stocks_curve.append((min(n, n_market), s, [day]))
        base = market_cfg.model_copy(update={"n_stocks": sizes.scaling_base_stocks, "n_days": 1})
        ticks_curve = []
        for m in sizes.scaling_tick_multipliers:
            cfg = base.model_copy(update={"orders_per_day": base.orders_per_day * m})
            s = ensure_market(cache / f"ticks-x{m}", cfg, sizes.seed)
            ticks_curve.append((m, s, s.dates("trades")[:1]))
        days_cfg = base.model_copy(update={"n_days": max(sizes.scaling_days)})
        days_store = ensure_market(cache / f"days-{days_cfg.n_days}", days_cfg, sizes.seed)
        all_days = days_store.dates("trades")
        days_curve = [(n, days_store, all_days[:n]) for n in sizes.scaling_days]

    log.info("bench: factors ...")
    result["factors"] = bench_factors_section(market, sizes, backends, repeats, memory)
    if gpu_note:
        result["factors"]["notes"].insert(0, gpu_note)
    with _section("scaling", memory):
        result["scaling"] = bench_scaling_section(
            {"stocks": stocks_curve, "ticks": ticks_curve, "days": days_curve}, backends,
            repeats)
    with _section("gru", memory, primary):
        result["gru"] = bench_gru_section(sizes, primary)
    with _section("osqp", memory):
        result["osqp"] = bench_osqp_section(sizes)
    if sizes.dask and not quick:
        with _section("dask", memory):
            result["dask"] = bench_dask_section(days_store, all_days, sizes.dask_workers,
                                                "cpu")
    else:
        result["dask"] = {"skipped": "quick mode" if quick else "disabled in the config"}
    # VmHWM resets also reset getrusage's ru_maxrss: the run's peak is the largest section's.
    memory["run"] = {"peak_rss_mb": max(m["peak_rss_mb"] for m in memory.values()),
                     "rss_scope": "max over sections"}
    if device := [m["peak_device_mb"] for m in memory.values() if "peak_device_mb" in m]:
        memory["run"]["peak_device_mb"] = max(device)
    result["memory"] = memory

    figures = _plot_scaling(result["scaling"], out)
    figures.append(_plot_throughput(result["factors"]["rows"], out))
    result["figures"] = figures
    result["meta"] = {
        "quick": quick, "started": started, "seconds": time.perf_counter() - t_start,
        "repeats": repeats, "backend_requested": backend,
        "backends": [b.name for b in backends],
        "devices": {b.name: b.device for b in backends},
        "machine": machine_info(), "sizes": dataclasses.asdict(sizes),
        "market_cache": str(cache),
    }
    result = _json_safe(result)
    (out / "bench.json").write_text(json.dumps(result, indent=1))
    (out / "bench.md").write_text(render_markdown(result))
    if store is not None:
        write_report_section(result, Store(store).report_dir / "bench", figures, out)
    return result


def summary_line(result: dict[str, Any]) -> str:
    """One line: the all-27 throughput of each implementation and the wall time."""
    parts = []
    for r in result["factors"]["rows"]:
        if r["family"] == "all":
            parts.append(f"{r['impl']} {r['s_per_full_market_day']:.1f} s/full-market day")
    return (f"bench ({'quick' if result['meta']['quick'] else 'full'}): " + ", ".join(parts)
            + f"; {result['meta']['seconds']:.0f} s in all")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default=None, help="store: market cache and report section")
    ap.add_argument("--out", default=None, help="output directory (default <store>/reports/"
                    "bench, or ./bench-results without a store)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--config", default=None, help="TOML file with a [bench] table")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = args.out or (Path(args.store) / "reports" / "bench" if args.store else "bench-results")
    result = run_suite(out, quick=args.quick, backend=args.backend, repeats=args.repeats,
                       store=args.store, config=args.config)
    sys.stdout.write(render_markdown(result))
    sys.stdout.write(summary_line(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
