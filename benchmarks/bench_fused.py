"""Fused family passes vs the primitive path: in-process compute of one full day on the CPU.

Usage::

    python benchmarks/bench_fused.py [--store DIR] [--stocks 5000] [--threads 2] [--repeats 5]
                                     [--out benchmarks/results/fused/NAME.json] [--no-compile]

Data: one day of the synthetic ``full-day`` preset (generated once into ``--store``, default
``/tmp/fbgpu-bench-full-day-5000``, and reused), read once (:func:`fbgpu.factors.compute.load_day`);
only the compute is timed. Per family (minute / trade / order) and for all 27 factors,
``compute_loaded_day`` runs with the fused passes (``FBGPU_FUSED=1``) and without
(``FBGPU_FUSED=0``, the primitive path), the two alternating within each repeat so that a change in
the machine's load hits both alike. Recorded: the median and minimum wall seconds and process CPU
seconds (user + system of all threads: on a loaded machine wall time includes waiting for a core,
CPU time much less so), the load average before and after, numba's thread count. The values of
the two paths are checked to be the same bits.

Compile time (``--no-compile`` skips it): fresh interpreters with an empty ``NUMBA_CACHE_DIR``
compute the 27 factors of the day's first 50 stocks, first with the cache empty (numba compiles
every kernel the day uses), then again with the cache it left (numba loads the compiled code),
for both paths. Timings are never asserted in tests.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_factors import ensure_market  # the full-day market, made once per store

from fbgpu.data.store import Store
from fbgpu.engine.segments import FUSED_ENV
from fbgpu.factors.compute import compute_loaded_day, load_day
from fbgpu.factors.registry import factor_names

FAMILIES = ("minute", "trade", "order", "all")

_COMPILE_PROBE = """
import sys, time
t0 = time.perf_counter()
from fbgpu.data.store import Store
from fbgpu.factors.compute import compute_loaded_day, load_day
store = Store(sys.argv[1])
d = store.dates("trades")[0]
syms = list(load_day(store, d).universe[:50])
day = load_day(store, d, symbols=syms)
t1 = time.perf_counter()
compute_loaded_day(day)
t2 = time.perf_counter()
print(f"{t1 - t0:.4f} {t2 - t1:.4f}")
"""


def _timed(fn: Any) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def compare_paths(day: Any, repeats: int) -> list[dict[str, Any]]:
    """Wall and CPU seconds per family, fused vs primitive, alternating within each repeat."""
    rows = []
    for family in FAMILIES:
        names = factor_names(None if family == "all" else family)  # type: ignore[arg-type]
        samples: dict[str, list[tuple[float, float]]] = {"1": [], "0": []}
        for _ in range(repeats):
            for flag in ("1", "0"):
                os.environ[FUSED_ENV] = flag
                samples[flag].append(_timed(lambda names=names: compute_loaded_day(day, names)))
        for flag, path in (("1", "fused"), ("0", "primitive")):
            walls = [w for w, _ in samples[flag]]
            cpus = [c for _, c in samples[flag]]
            rows.append({"family": family, "path": path, "factors": len(names),
                         "wall_s_median": statistics.median(walls), "wall_s_min": min(walls),
                         "cpu_s_median": statistics.median(cpus), "cpu_s_min": min(cpus)})
    os.environ.pop(FUSED_ENV, None)
    return rows


def same_bits(day: Any) -> bool:
    """The 27 factors of ``day`` are the same bits on both paths (NaN at the same places)."""
    os.environ[FUSED_ENV] = "1"
    a = compute_loaded_day(day).values
    os.environ[FUSED_ENV] = "0"
    b = compute_loaded_day(day).values
    os.environ.pop(FUSED_ENV, None)
    nan = np.isnan(a)
    return bool((nan == np.isnan(b)).all() and (a.view(np.int64) == b.view(np.int64))[~nan].all())


def compile_times(store: Path, threads: int) -> list[dict[str, Any]]:
    """Seconds of the first ``compute_loaded_day`` in a fresh interpreter, with an empty numba
    cache (compiling) and then with the cache that run left (loading), per path."""
    rows = []
    for flag, path in (("1", "fused"), ("0", "primitive")):
        with tempfile.TemporaryDirectory(prefix="fbgpu-numba-cache-") as cache:
            env = {**os.environ, "NUMBA_CACHE_DIR": cache, FUSED_ENV: flag,
                   "NUMBA_NUM_THREADS": str(threads)}
            for run in ("empty cache", "cached"):
                w = time.perf_counter()
                out = subprocess.run([sys.executable, "-c", _COMPILE_PROBE, str(store)],
                                     env=env, capture_output=True, text=True, check=True)
                whole = time.perf_counter() - w
                setup, first = (float(x) for x in out.stdout.split())
                rows.append({"path": path, "run": run, "first_compute_s": first,
                             "imports_and_read_s": setup, "process_s": whole})
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", type=Path, default=Path("/tmp/fbgpu-bench-full-day-5000"))
    ap.add_argument("--stocks", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=2, help="numba threads")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--no-compile", action="store_true", help="skip the compile-time runs")
    args = ap.parse_args(argv)
    import numba

    numba.set_num_threads(args.threads)
    store = Store(args.store)
    date = ensure_market(store, args.stocks)
    day = load_day(store, date)
    compute_loaded_day(day)  # compile / load the kernels of both paths before timing
    os.environ[FUSED_ENV] = "0"
    compute_loaded_day(day)
    load_before = os.getloadavg()
    rows = compare_paths(day, args.repeats)
    load_after = os.getloadavg()
    result: dict[str, Any] = {
        "what": "in-process compute of one full day, fused family passes vs primitive path",
        "date": str(date), "stocks": len(day.universe),
        "trades": day.trades.n_rows if day.trades else 0,
        "orders": day.orders.n_rows if day.orders else 0,
        "numba_threads": numba.get_num_threads(), "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(), "python": platform.python_version(),
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "loadavg_before": list(load_before), "loadavg_after": list(load_after),
        "repeats": args.repeats, "same_bits": same_bits(day), "rows": rows,
    }
    by = {(r["family"], r["path"]): r for r in rows}
    print(f"{'family':8s} {'path':10s} {'wall med':>9s} {'cpu med':>8s} {'cpu min':>8s}")
    for r in rows:
        print(f"{r['family']:8s} {r['path']:10s} {r['wall_s_median']:9.3f} "
              f"{r['cpu_s_median']:8.3f} {r['cpu_s_min']:8.3f}")
    for fam in FAMILIES:
        f, p = by[(fam, "fused")], by[(fam, "primitive")]
        print(f"{fam}: fused saves {p['cpu_s_median'] - f['cpu_s_median']:.3f} CPU-s "
              f"({p['cpu_s_median'] / f['cpu_s_median']:.2f}x)")
    print(f"same bits: {result['same_bits']}; load average {load_before[0]:.1f} -> "
          f"{load_after[0]:.1f}")
    if not args.no_compile:
        result["compile"] = compile_times(args.store, args.threads)
        for r in result["compile"]:
            print(f"compile {r['path']:10s} {r['run']:12s} first compute "
                  f"{r['first_compute_s']:.2f}s (process {r['process_s']:.2f}s)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
