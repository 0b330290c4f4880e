"""Issue 16: can the CPU kernels run compiled ahead of time, without numba in the process?

The whole-process profile (docs/benchmarks.md, "Session 10") leaves ~0.37 s of numba's
per-process cost (its import, the context refresh, the cached kernels' loads) that no change
inside numba's dispatcher removes. This experiment measures the route past it on the largest
kernel, the order family pass (:func:`fbgpu.engine.cpu_kernels.fused_order_stats`):

1. **Build** (needs numba, once): the kernel's own Python source compiled by numba without
   ``parallel`` (``prange`` becomes ``range``), behind a ``numba.cfunc`` with a C ABI (array
   pointers and lengths, rebuilt with ``numba.carray``); the cfunc's final LLVM module compiled
   by llvmlite for this host with position-independent code; linked by ``gcc -shared`` with
   ``kernels/cpu_aot_runtime.c``, a small stand-in for the numba runtime symbols the object needs
   (allocation, the GIL helpers and the exception paths; an exception sets a flag the caller
   checks instead of raising through numba).
2. **Run** (no numba): ``ctypes.CDLL`` of the library; the stocks split into contiguous chunks
   of about equal element counts, taken by two Python threads (``ctypes`` releases the GIL for
   the call, so the chunks run on both cores, as ``prange`` does); the per-stock outputs of a
   chunk are written to its own buffers and joined after.
3. **Measure**: warm in-process time of the JIT kernel (``prange``, two threads) against the
   library on one and two threads, the outputs compared **bit for bit**; and two fresh
   processes each computing the pass once from the mapped store: one that imports numba and
   the cached kernels module (today's route), one that loads the library with ``ctypes`` only.

    python benchmarks/experiments/aot_kernels.py --store STORE [--repeats 5]

STORE holds a day of the ``full-day`` preset (``fbgpu synth --preset full-day``). Results go to
``benchmarks/experiments/results/aot_kernels.json``. This probe came first; fbgpu's own route is
:mod:`fbgpu.engine.cpu_aot` (all the hot-path kernels, the same runtime shim).
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
SHIM = HERE.parents[1] / "kernels" / "cpu_aot_runtime.c"

def _order_scalars() -> tuple[tuple[int, int], tuple[int, int], int]:
    """The order pass's session window, early window and limit type, as fbgpu passes them."""
    from fbgpu.data.schemas import ORDER_TYPE_LIMIT
    from fbgpu.factors.context import EARLY_WINDOW, ORDER_SESSION

    return (tuple(map(int, ORDER_SESSION)), tuple(map(int, EARLY_WINDOW)),  # type: ignore
            int(ORDER_TYPE_LIMIT))


SESSION, EARLY, LIMIT_TYPE = _order_scalars()

#: (name, numpy dtype) of the per-order input columns, in the kernel's argument order.
ORDER_COLUMNS = (("ts", np.int64), ("side", np.int8), ("volume", np.int64),
                 ("price", np.float64), ("order_type", np.int8))


def build_library(out_dir: Path) -> tuple[Path, str]:
    """Compile the order pass ahead of time into ``out_dir/orders_aot.so``; return its path and
    the exported symbol name. Imports numba (the build step only)."""
    import llvmlite.binding as llvm
    import numba as nb
    from numba import carray, types

    from fbgpu.engine import cpu_kernels

    serial = nb.njit(parallel=False)(cpu_kernels.fused_order_stats.py_func)
    i64p, i8p, f64p, u8p = (types.CPointer(t) for t in
                            (types.int64, types.int8, types.float64, types.uint8))
    sig = types.void(i64p, types.int64,  # offsets (a chunk's S + 1 entries), S + 1
                     i64p, i8p, i64p, f64p, i8p, types.int64,  # columns, their length
                     types.int64, types.int64, types.int64, types.int64, types.int64,
                     i64p, f64p, f64p, u8p)  # outputs of the chunk: [4,S] [3,6,S] [3,S] [S]

    @nb.cfunc(sig)
    def order_pass(po, no, pts, pside, pvol, pprice, ptype, n, slo, shi, elo, ehi, lim,
                   pn, pmom, pcorr, pdeg):  # pragma: no cover - compiled
        S = no - 1
        serial(carray(po, (no,)), carray(pts, (n,)), carray(pside, (n,)), carray(pvol, (n,)),
               carray(pprice, (n,)), carray(ptype, (n,)), slo, shi, elo, ehi, lim,
               carray(pn, (4, S)), carray(pmom, (3, 6, S)), carray(pcorr, (3, S)),
               carray(pdeg, (S,)))

    target = llvm.Target.from_default_triple()
    tm = target.create_target_machine(cpu=llvm.get_host_cpu_name(),
                                      features=llvm.get_host_cpu_features().flatten(),
                                      opt=3, reloc="pic", codemodel="default")
    module = llvm.parse_assembly(str(order_pass._library._final_module))
    obj = out_dir / "orders_aot.o"
    obj.write_bytes(tm.emit_object(module))
    lib = out_dir / "orders_aot.so"
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(lib), str(obj), str(SHIM)],
                   check=True)
    undefined = subprocess.run(["nm", "-u", str(lib)], capture_output=True, text=True).stdout
    (out_dir / "undefined_symbols.txt").write_text(undefined)
    return lib, order_pass.native_name


class OrderPassLibrary:
    """The ahead-of-time order pass, called through ``ctypes`` on ``threads`` threads."""

    def __init__(self, path: Path, symbol: str, threads: int = 2, chunks: int = 16) -> None:
        self.lib = ctypes.CDLL(str(path))
        self.fn = getattr(self.lib, symbol)
        self.fn.restype = None
        self.error = ctypes.c_int.in_dll(self.lib, "fbgpu_kernel_error")
        self.threads = threads
        self.chunks = chunks
        self.pool = ThreadPoolExecutor(threads) if threads > 1 else None

    def __call__(self, offsets: np.ndarray, cols: dict[str, np.ndarray]) -> list[np.ndarray]:
        S = offsets.shape[0] - 1
        n = offsets[-1]
        # chunk bounds at about equal element counts (the work is per element)
        cuts = np.searchsorted(offsets, np.linspace(0, n, self.chunks + 1)[1:-1])
        bounds = np.unique(np.concatenate([[0], np.clip(cuts, 0, S), [S]]))
        ptr = ctypes.c_void_p
        colp = [ptr(np.ascontiguousarray(cols[c]).ctypes.data) for c, _ in ORDER_COLUMNS]

        def run(lo: int, hi: int) -> list[np.ndarray]:
            k = hi - lo
            outs = [np.empty((4, k), np.int64), np.empty((3, 6, k)), np.empty((3, k)),
                    np.empty(k, np.uint8)]
            off = offsets[lo : hi + 1]
            self.fn(ptr(off.ctypes.data), ctypes.c_int64(k + 1), *colp, ctypes.c_int64(n),
                    *(ctypes.c_int64(v) for v in (*SESSION, *EARLY, LIMIT_TYPE)),
                    *(ptr(o.ctypes.data) for o in outs))
            return outs

        pairs = list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))
        parts = (list(self.pool.map(lambda p: run(*p), pairs)) if self.pool
                 else [run(*p) for p in pairs])
        if self.error.value:
            raise RuntimeError("the compiled order pass raised (see stderr)")
        return [np.concatenate([p[j] for p in parts], axis=-1) for j in range(4)]


def jit_order_pass(offsets: np.ndarray, cols: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Today's route: the numba dispatcher (``prange``, numba's threads)."""
    from fbgpu.engine import cpu_kernels

    S = offsets.shape[0] - 1
    outs = [np.empty((4, S), np.int64), np.empty((3, 6, S)), np.empty((3, S)),
            np.empty(S, np.uint8)]
    cpu_kernels.fused_order_stats(offsets, *(cols[c] for c, _ in ORDER_COLUMNS),
                                  *(np.int64(v) for v in (*SESSION, *EARLY, LIMIT_TYPE)),
                                  *outs)
    return outs


def load_orders(store: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The first day's orders from the store, memory-mapped (fbgpu's reader)."""
    from fbgpu.data import Store
    from fbgpu.factors.compute import load_day

    s = Store(store)
    day = load_day(s, s.dates("orders")[0])
    o = day.orders
    return np.asarray(o.offsets, dtype=np.int64), {c: o.columns[c] for c, _ in ORDER_COLUMNS}


def same_bits(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(x.shape == y.shape and x.tobytes() == y.tobytes() for x, y in zip(a, b, strict=True))


def timed(fn: Any, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


CHILD = """
import sys, time, os
t0 = time.perf_counter()
sys.path.insert(0, {here!r})
import numpy as np
import aot_kernels as ak
offsets, cols = ak.load_orders({store!r})
t1 = time.perf_counter()
if {route!r} == "aot":
    f = ak.OrderPassLibrary(ak.Path({lib!r}), {symbol!r}, threads=2)
    res = f(offsets, cols)
else:
    import numba
    res = ak.jit_order_pass(offsets, cols)
t2 = time.perf_counter()
print(t1 - t0, t2 - t1, "numba" in sys.modules)
"""


def fresh_process(route: str, store: str, lib: Path, symbol: str) -> dict[str, Any]:
    """One fresh interpreter computing the pass once; wall seconds of the whole process."""
    code = CHILD.format(here=str(HERE), store=store, route=route, lib=str(lib), symbol=symbol)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    read_s, pass_s, numba_imported = p.stdout.split()
    return {"route": route, "process_wall_s": wall, "read_s": float(read_s),
            "pass_incl_setup_s": float(pass_s), "numba_imported": numba_imported == "True"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(HERE / "results" / "aot_kernels.json"))
    a = ap.parse_args()
    build_dir = Path(tempfile.mkdtemp(prefix="fbgpu-aot-"))
    t0 = time.perf_counter()
    lib, symbol = build_library(build_dir)
    build_s = time.perf_counter() - t0
    offsets, cols = load_orders(a.store)
    jit = jit_order_pass(offsets, cols)  # compile / load once
    aot2 = OrderPassLibrary(lib, symbol, threads=2)
    aot1 = OrderPassLibrary(lib, symbol, threads=1)
    result: dict[str, Any] = {
        "orders": int(offsets[-1]), "stocks": int(offsets.shape[0] - 1),
        "build_s": build_s,
        "undefined_symbols": (build_dir / "undefined_symbols.txt").read_text().split("\n"),
        "same_bits_2_threads": same_bits(jit, aot2(offsets, cols)),
        "same_bits_1_thread": same_bits(jit, aot1(offsets, cols)),
        "load_avg_before": os.getloadavg()[0],
    }
    for _ in range(2):  # interleaved
        for name, fn in (("jit_prange", lambda: jit_order_pass(offsets, cols)),
                         ("aot_2_threads", lambda: aot2(offsets, cols)),
                         ("aot_1_thread", lambda: aot1(offsets, cols))):
            result.setdefault(name, []).extend(timed(fn, a.repeats))
    procs = [fresh_process(r, a.store, lib, symbol) for _ in range(3) for r in ("jit", "aot")]
    result["processes"] = procs
    result["load_avg_after"] = os.getloadavg()[0]
    summary = {k: min(result[k]) for k in ("jit_prange", "aot_2_threads", "aot_1_thread")}
    for r in ("jit", "aot"):
        summary[f"process_{r}_min_s"] = min(p["process_wall_s"] for p in procs if p["route"] == r)
        summary[f"process_{r}_pass_incl_setup_min_s"] = min(
            p["pass_incl_setup_s"] for p in procs if p["route"] == r)
    result["summary_min_s"] = summary
    result["source_sha"] = hashlib.sha256(SHIM.read_bytes()).hexdigest()[:12]
    Path(a.out).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("same_bits_2_threads", "same_bits_1_thread",
                                             "build_s", "summary_min_s")}, indent=1))


if __name__ == "__main__":
    main()
