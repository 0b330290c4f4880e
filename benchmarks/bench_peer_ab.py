"""Old vs new polars peer, and ``fbgpu factors``, each as whole processes in the same run.

Usage::

    git show COMMIT:benchmarks/bench_factors.py > OLD/bench_factors.py
    python benchmarks/bench_peer_ab.py --store DIR --old OLD [--repeats 3] [--out FILE.json]

Contenders (all compute the 27 factors of one day from the same store files, each a fresh
subprocess with cold imports and a warm page cache, after one untimed warm-up of each):

* ``fbgpu``: ``python -m fbgpu factors --backend cpu`` (:func:`bench_process.commands`; the
  day's ``factors`` partition deleted, untimed, before each run), or with ``--fbgpu-src DIR``
  the same command run from the package in ``DIR`` (a ``git archive`` of a commit, so that
  uncommitted changes in a shared working tree are not timed);
* ``polars_new``: :func:`bench_factors.compute_day_polars` of this checkout;
* ``polars_old``: ``compute_day_polars`` of the ``bench_factors.py`` in ``--old``.

Runs are interleaved (fbgpu, new, old, fbgpu, ...) so that load from other processes on a
shared machine hits all alike; per run: wall seconds, user + system CPU seconds and peak RSS of
the child (``wait4``), and the 1-minute load average right after it. Then, in one child per
peer, each family alone (minute / trade / order, and all 27), lazily from the scans, timed
in-process after one warm-up (``--family-repeats`` times; wall and process CPU seconds).
Writes JSON; timings are never asserted anywhere.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
log = logging.getLogger("bench_peer_ab")

FAMILY_CODE = """
import importlib.util, json, os, sys, time
import polars as pl
from fbgpu.data.store import Store
from fbgpu.factors import FactorConfig
path, root, date, reps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
spec = importlib.util.spec_from_file_location("peer", path)
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
st, cfg = Store(root), FactorConfig()
import datetime as dt
d = dt.date.fromisoformat(date)

def run(parts):  # the old peer returns one frame per family, the new one a list of parts
    return pl.collect_all(parts) if isinstance(parts, list) else parts.collect()

jobs = {
    "minute": lambda: run(m.polars_minute(m.polars_scans(st, d)["minute"], cfg)),
    "trade": lambda: run(m.polars_trade(m.polars_scans(st, d)["trades"],
                                        m.polars_scans(st, d)["minute"], cfg)),
    "order": lambda: run(m.polars_order(m.polars_scans(st, d)["orders"], cfg)),
    "all": lambda: m.compute_day_polars(st, d),
}
out = {}
for k, f in jobs.items():
    f()
    rows = []
    for _ in range(reps):
        w, c = time.perf_counter(), time.process_time()
        f()
        rows.append({"wall_s": time.perf_counter() - w, "cpu_s": time.process_time() - c,
                     "load1": os.getloadavg()[0]})
    out[k] = rows
print(json.dumps(out))
"""


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--old", type=Path, required=True,
                    help="a folder with the old bench_factors.py")
    ap.add_argument("--date", type=dt.date.fromisoformat, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--family-repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("peer-ab.json"))
    ap.add_argument("--fbgpu-src", type=Path, default=None,
                    help="run the fbgpu package in this folder (e.g. `git archive HEAD fbgpu "
                         "kernels | tar -x -C DIR`) instead of the installed one")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.path.insert(0, str(HERE))
    from bench_process import (
        _peer_code,
        child_env,
        commands,
        drop_factors,
        interleaved,
        run_once,
        run_summary,
    )

    from fbgpu.data.store import Store

    date = args.date or Store(args.store).dates("trades")[0]
    old_code = _peer_code("compute_day_polars", "bench_factors", args.store, date).replace(
        repr(str(HERE)), repr(str(args.old.resolve())))
    fbgpu_cmd = commands(args.store, date)["fbgpu"]
    if args.fbgpu_src is not None:  # ahead of the editable install; same argv after "-c"
        fbgpu_cmd = [sys.executable, "-c",
                     f"import sys, runpy; sys.path.insert(0, {str(args.fbgpu_src.resolve())!r}); "
                     "runpy.run_module('fbgpu', run_name='__main__', alter_sys=True)",
                     *fbgpu_cmd[3:]]
    cmds = {"fbgpu": fbgpu_cmd,
            "polars_new": commands(args.store, date)["polars"],
            "polars_old": [sys.executable, "-c", old_code]}
    expect = {"fbgpu": "1 dates computed"}

    def one(name: str) -> dict[str, float]:
        if name == "fbgpu":
            drop_factors(args.store, date)
        r = run_once(cmds[name], expect.get(name))
        r["load1_after"] = os.getloadavg()[0]
        return r

    load_before = list(os.getloadavg())
    runs = interleaved(list(cmds), one, args.repeats)
    rows: dict[str, dict[str, Any]] = {}
    for k, rr in runs.items():
        rows[k] = {**run_summary(rr),
                   "peak_rss_mb_max": max(r["rss_mb"] for r in rr),
                   "load1_after_runs": [r["load1_after"] for r in rr]}
    for k in ("polars_new", "polars_old"):
        rows[k]["fbgpu_speedup"] = rows[k]["min_s"] / rows["fbgpu"]["min_s"]
        rows[k]["fbgpu_speedup_cpu"] = rows[k]["cpu_s_min"] / rows["fbgpu"]["cpu_s_min"]
    rows["polars_new"]["speedup_vs_old"] = rows["polars_old"]["min_s"] / rows["polars_new"]["min_s"]
    families = {}
    for k, path in (("polars_new", HERE / "bench_factors.py"),
                    ("polars_old", args.old / "bench_factors.py")):
        out = subprocess.run([sys.executable, "-c", FAMILY_CODE, str(path), str(args.store),
                              date.isoformat(), str(args.family_repeats)],
                             env=child_env(), capture_output=True, text=True, check=True)
        families[k] = json.loads(out.stdout.strip().splitlines()[-1])
        for fam, fr in families[k].items():
            log.info("%-11s %-7s %.2f s wall, %.2f CPU s (best)", k, fam,
                     min(r["wall_s"] for r in fr), min(r["cpu_s"] for r in fr))
    import polars

    res = {"store": str(args.store), "date": date.isoformat(), "repeats": args.repeats,
           "cpus": os.cpu_count(), "polars_version": polars.__version__,
           "old_peer": str(args.old / "bench_factors.py"),
           "fbgpu_src": str(args.fbgpu_src) if args.fbgpu_src else "installed (editable)",
           "commands": {k: " ".join(v) for k, v in cmds.items()},
           "loadavg_before": load_before, "loadavg_after": list(os.getloadavg()),
           "process": rows, "families_in_process": families}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    for k, r in rows.items():
        log.info("%-11s min %.2f s median %.2f s cpu %.2f s rss %.0f MB", k, r["min_s"],
                 r["median_s"], r["cpu_s_min"], r["peak_rss_mb_max"])
    return res


if __name__ == "__main__":
    main()
