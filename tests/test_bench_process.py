"""benchmarks/bench_process.py times real whole-process runs: fbgpu recomputes the day (an
up-to-date day would be skipped and time only start-up), every child succeeds, and the JSON carries
the floor and per-child peak RSS."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

from fbgpu.data.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_process import main
from oracle_factors import make_market


def test_bench_process_recomputes_and_reports(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    d = dt.date(2024, 3, 4)
    make_market(store, [d], seed=3)
    res = main(["--store", str(store.root), "--repeats", "1", "--only",
                "fbgpu,fbgpu_budget,polars,import", "--budget-gb", "0.5",
                "--out", str(tmp_path / "out"), "--multi-store", str(store.root)])
    on_disk = json.loads((tmp_path / "out" / "bench_process.json").read_text())
    assert on_disk["date"] == d.isoformat() == res["date"]
    assert set(on_disk["process"]) == {"fbgpu", "fbgpu_budget", "polars", "import"}
    # The import child's stamp: after its start, before it ended (so start-up + imports, less
    # than the whole child, which then exits), one per run; no other child prints one.
    imp = on_disk["process"]["import"]
    assert len(imp["until_imported_runs_s"]) == len(imp["runs_s"]) == 1
    assert 0 < imp["until_imported_runs_s"][0] < imp["runs_s"][0]
    assert imp["until_imported_min_s"] == imp["until_imported_median_s"]
    assert all("until_imported_min_s" not in on_disk["process"][k]
               for k in ("fbgpu", "fbgpu_budget", "polars"))
    for row in on_disk["process"].values():
        assert row["min_s"] > 0 and len(row["runs_s"]) == 1
        assert row["peak_rss_mb_max"] > 20  # a Python process with numpy loaded
        # CPU seconds of the child itself: positive, and a 1-run min is that run's user + sys
        assert row["cpu_s_min"] > 0
        assert row["cpu_s_min"] == row["user_s_runs"][0] + row["sys_s_runs"][0]
        assert row["minflt_min"] > 0
    budget = on_disk["process"]["fbgpu_budget"]
    assert budget["budget_gb"] == 0.5
    assert budget["x_unbudgeted"] == budget["min_s"] / on_disk["process"]["fbgpu"]["min_s"]
    assert len(on_disk["loadavg_before"]) == 3
    assert on_disk["bytecode_cache"]  # the children imported cached bytecode (child_env)
    assert on_disk["floor"]["bytes"] > 0 and on_disk["floor"]["floor_s"] > 0
    for row in on_disk["process"].values():
        assert row["peak_rss_x_tick_bytes"] == (row["peak_rss_mb_max"] * 2**20
                                                / on_disk["floor"]["bytes"])
    info = on_disk["store_info"]
    assert info["hot_format"] == store.hot_format
    assert info["partitions"]["trades"]["file"] == store.partition_path("trades", d).name
    # multi-day: the store's ticks, one timed run after the warm-up, rates from the best run
    multi = on_disk["multi_day"]
    ticks = sum(store.manifest(t, d).rows for t in ("trades", "orders"))
    assert multi["days"] == 1 and multi["ticks"] == ticks and len(multi["runs"]) == 1
    assert multi["ticks_per_cpu_s"] == ticks / multi["runs"][0]["cpu_s"]
    # fbgpu's timed run recomputed the day and left a current factors partition behind.
    assert store.has("factors", d)
