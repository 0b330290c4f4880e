"""Where one process's CPU time goes: imports, numba, then ``load_day`` and
``compute_loaded_day`` three times (the first compute includes numba loading the kernels from
its cache). Usage: ``python benchmarks/experiments/phases.py STORE [DATE]``. Prints CPU seconds
(``time.process_time``, all threads) and wall seconds per phase; never asserted."""

import datetime as dt
import resource
import sys
import time

c0 = time.process_time()
import fbgpu.cli.factors  # noqa: E402,F401
import fbgpu.factors.compute as compute  # noqa: E402
from fbgpu.data.store import Store  # noqa: E402

c1 = time.process_time()
print(f"imports cpu {c1 - c0:.3f} s")
store = Store(sys.argv[1])
date = dt.date.fromisoformat(sys.argv[2]) if len(sys.argv) > 2 else store.dates("trades")[0]
import numba  # noqa: E402,F401

from fbgpu.engine import cpu_kernels  # noqa: E402,F401

c2 = time.process_time()
print(f"numba + kernels import cpu {c2 - c1:.3f} s")
for _ in range(3):
    a, wa = time.process_time(), time.perf_counter()
    day = compute.load_day(store, date)
    b, wb = time.process_time(), time.perf_counter()
    values = compute.compute_loaded_day(day)
    c, wc = time.process_time(), time.perf_counter()
    print(f"load cpu {b - a:.3f} wall {wb - wa:.3f}  compute cpu {c - b:.3f} wall {wc - wb:.3f}")
    del day, values
print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
