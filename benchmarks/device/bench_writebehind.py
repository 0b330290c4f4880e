"""Write-behind A/B: ``run_factors`` with the store written behind the compute
(:class:`fbgpu.data.writebehind.StoreWriteBehind`) against the same writes made synchronously
in the caller's thread (the writer's jobs run inline), on copies of one store.

    python benchmarks/device/bench_writebehind.py --store S [--backend cpu|gpu] [--repeats 5]

Prints one JSON line: wall seconds per repeat and their medians. Both variants take every
array through ``Backend.to_host_async`` (on a GPU: a pinned side-stream copy) and write the
same bytes; only where and when the Parquet encoding and the atomic writes run differs.
Measured, not asserted (docs/engine.md, "write-behind persistence").
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fbgpu.data.store import Store
from fbgpu.data.writebehind import StoreWriteBehind
from fbgpu.engine.backend import get_backend
from fbgpu.factors import run_factors


class InlineWriter(StoreWriteBehind):
    """The synchronous baseline: each job waits for its copies and writes at ``submit``."""

    def submit(self, table: str, date: Any, arrays: Sequence[Any],
               write: Callable[[list[np.ndarray]], Any]) -> None:
        write([self._to_host(a)() for a in arrays])
        self.written += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True, type=Path, help="a store with ticks (synth/ingest)")
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    b = get_backend(args.backend)
    times: dict[str, list[float]] = {"behind": [], "inline": []}
    skip = shutil.ignore_patterns("factors", "panel", "reports", "run.json", "scores", "models")
    for _ in range(args.repeats):
        for mode in ("inline", "behind"):
            tmp = Path(tempfile.mkdtemp(prefix="fbgpu-wb-"))
            try:
                shutil.copytree(args.store, tmp / "s", ignore=skip)
                st = Store(tmp / "s")
                cls = InlineWriter if mode == "inline" else StoreWriteBehind
                w = cls(st, b.to_host_async, name=mode)
                t0 = time.perf_counter()
                run_factors(st, backend=b, progress=False, writer=w)
                w.close()
                times[mode].append(round(time.perf_counter() - t0, 3))
            finally:
                shutil.rmtree(tmp)
    print(json.dumps({"backend": b.name, "device": b.device, "store": str(args.store),
                      "seconds": times,
                      "median": {k: float(np.median(v)) for k, v in times.items()}}))


if __name__ == "__main__":
    main()
