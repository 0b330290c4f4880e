"""A/B: does importing numba on a background thread shorten a whole ``fbgpu factors`` process?

Usage::

    python benchmarks/experiments/preload_ab.py --store DIR [--rounds 8] [--out FILE.json]

Runs ``python -m fbgpu factors --backend cpu`` on the store's first day (its ``factors``
partition deleted, untimed, before each run) with ``FBGPU_PRELOAD=1`` and ``=0``, interleaved
(A, B, A, B, ...) so that load from other processes hits both alike, after one untimed warm-up
of each; prints and writes min and median wall seconds and CPU seconds of each. Never asserted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_process import commands, drop_factors, run_once

log = logging.getLogger("preload_ab")


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from fbgpu.data.store import Store

    date = Store(args.store).dates("trades")[0]
    cmd = commands(args.store, date)["fbgpu"]
    runs: dict[str, list[dict[str, float]]] = {"1": [], "0": []}
    load = [os.getloadavg()[0]]
    for k in range(args.rounds + 1):
        for flag in runs:
            os.environ["FBGPU_PRELOAD"] = flag
            drop_factors(args.store, date)
            r = run_once(cmd, "1 dates computed")
            if k:  # the first round is the warm-up
                runs[flag].append(r)
        load.append(os.getloadavg()[0])
    res: dict[str, object] = {"store": str(args.store), "rounds": args.rounds, "loadavg": load}
    for flag, rr in runs.items():
        wall = [r["wall_s"] for r in rr]
        cpu = [r["user_s"] + r["sys_s"] for r in rr]
        res[f"preload_{flag}"] = {"wall_min_s": min(wall), "wall_median_s": statistics.median(wall),
                                  "cpu_min_s": min(cpu), "cpu_median_s": statistics.median(cpu),
                                  "wall_s": wall}
        log.info("FBGPU_PRELOAD=%s  wall min %.3f median %.3f  cpu min %.3f", flag, min(wall),
                 statistics.median(wall), min(cpu))
    if args.out is not None:
        args.out.write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
