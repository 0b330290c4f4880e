"""On-disk format of the hot tick tables: disk size and read time, Parquet LZ4 vs Arrow IPC.

Usage::

    python benchmarks/experiments/store_format.py --parquet DIR --arrow DIR [--repeats 5]
        [--out FILE.json]

``--parquet`` and ``--arrow`` are the same store in the two hot formats (``Store.convert``
turns one into the other). For the first date and each hot table: the partition's file size,
and the seconds of :meth:`Store.read_ticks` / :meth:`Store.read_minute` with the columns the
27 factors read (min and median of ``--repeats``, warm page cache after one untimed read; CPU
seconds of the reading thread too), in one process, formats alternated so that load from other
processes hits both alike. Also: the same read followed by touching every page of the returned
arrays (a sum of one value per 4 KiB page), which is what the kernels pay on first access for a
memory-mapped file. Timings are printed and written as JSON, never asserted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from fbgpu.data.store import Store
from fbgpu.factors.compute import MINUTE_FIELDS, ORDER_COLUMNS, TRADE_COLUMNS

log = logging.getLogger("store_format")
COLUMNS = {"trades": TRADE_COLUMNS, "orders": ORDER_COLUMNS,
           "cancels": ("ts", "order_id", "volume", "side"), "minute": MINUTE_FIELDS}


def _read(store: Store, table: str, date: Any) -> dict[str, np.ndarray]:
    if table == "minute":
        return dict(store.read_minute(date).fields)
    return dict(store.read_ticks(table, date, COLUMNS[table]).columns)


def _touch(arrays: dict[str, np.ndarray]) -> float:
    """Sum one element per 4 KiB page of every array (faults a mapped file's pages in)."""
    total = 0.0
    for a in arrays.values():
        flat = a.reshape(-1)
        step = max(1, 4096 // flat.itemsize)
        total += float(flat[::step].astype(np.float64).sum())
    return total


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parquet", type=Path, required=True)
    ap.add_argument("--arrow", type=Path, required=True)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stores = {"parquet": Store(args.parquet), "arrow": Store(args.arrow)}
    date = stores["parquet"].dates("trades")[0]
    res: dict[str, Any] = {"date": date.isoformat(), "repeats": args.repeats,
                           "loadavg_before": list(os.getloadavg()), "tables": {}}
    for table in ("trades", "orders", "cancels", "minute"):
        row: dict[str, Any] = {}
        for fmt, st in stores.items():
            path = st.partition_path(table, date)
            assert path.suffix == (".arrow" if fmt == "arrow" else ".parquet"), path
            row[fmt] = {"file_mb": path.stat().st_size / 1e6, "read_s": [], "read_cpu_s": [],
                        "read_touch_s": []}
            _read(st, table, date)  # warm the page cache
        for _ in range(args.repeats):
            for fmt, st in stores.items():
                t, c = time.perf_counter(), time.thread_time()
                arrays = _read(st, table, date)
                row[fmt]["read_s"].append(time.perf_counter() - t)
                row[fmt]["read_cpu_s"].append(time.thread_time() - c)
                _touch(arrays)
                row[fmt]["read_touch_s"].append(time.perf_counter() - t)
                row[fmt]["bytes"] = int(sum(a.nbytes for a in arrays.values()))
                del arrays
        for fmt in stores:
            r = row[fmt]
            for k in ("read_s", "read_cpu_s", "read_touch_s"):
                r[k.replace("_s", "_min_s")] = min(r[k])
                r[k.replace("_s", "_median_s")] = statistics.median(r[k])
            log.info("%-8s %-8s %8.1f MB on disk  read %.4f s (cpu %.4f s)  read+touch %.4f s",
                     table, fmt, r["file_mb"], r["read_min_s"], r["read_cpu_min_s"],
                     r["read_touch_min_s"])
        res["tables"][table] = row
    res["loadavg_after"] = list(os.getloadavg())
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
