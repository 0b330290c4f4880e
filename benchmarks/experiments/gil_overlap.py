"""Does importing numba on a background thread overlap with Python work on the main thread?

``python benchmarks/experiments/gil_overlap.py alone|thread``: ``alone`` times a fixed
pure-Python loop, then ``import numba, fbgpu.engine.cpu_kernels``, one after the other;
``thread`` starts the import on a thread and runs the same loop on the main thread (what
``fbgpu factors``' preload thread does while the main thread imports the rest). If the import
released the GIL for a large part of its time, ``thread`` would finish well before the sum of
``alone``. Run each in a fresh process (the import must be cold), alternating; never asserted.
Result (docs/benchmarks.md, "Start-up"): no overlap.
"""

import sys
import threading
import time

import numpy  # noqa: F401  (the main thread of a real run has imported both already)
import pyarrow  # noqa: F401


def work(n: int = 3_000_000) -> int:
    """A fixed amount of pure-Python work (holds the GIL)."""
    s = 0
    for i in range(n):
        s += i * i
    return s


if __name__ == "__main__":
    if sys.argv[1:] == ["alone"]:
        t = time.perf_counter()
        work()
        loop = time.perf_counter() - t
        t = time.perf_counter()
        import fbgpu.engine.cpu_kernels  # noqa: F401
        imp = time.perf_counter() - t
        print(f"alone: loop {loop:.3f} s, import numba+kernels {imp:.3f} s, sum {loop + imp:.3f} s")
    else:
        th = threading.Thread(target=lambda: __import__("fbgpu.engine.cpu_kernels"))
        t, c = time.perf_counter(), time.process_time()
        th.start()
        work()
        loop = time.perf_counter() - t
        th.join()
        both = time.perf_counter() - t
        print(f"thread: loop {loop:.3f} s, both done {both:.3f} s, "
              f"CPU {time.process_time() - c:.3f} s")
