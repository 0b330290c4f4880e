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
                "fbgpu,fbgpu_budget,polars", "--budget-gb", "0.001",
                "--out", str(tmp_path / "out")])
    on_disk = json.loads((tmp_path / "out" / "bench_process.json").read_text())
    assert on_disk["date"] == d.isoformat() == res["date"]
    assert set(on_disk["process"]) == {"fbgpu", "fbgpu_budget", "polars"}
    for row in on_disk["process"].values():
        assert row["min_s"] > 0 and len(row["runs_s"]) == 1
        assert row["peak_rss_mb_max"] > 20  # a Python process with numpy loaded
        # CPU seconds of the child itself: positive, and a 1-run min is that run's user + sys
        assert row["cpu_s_min"] > 0
        assert row["cpu_s_min"] == row["user_s_runs"][0] + row["sys_s_runs"][0]
        assert row["minflt_min"] > 0
    budget = on_disk["process"]["fbgpu_budget"]
    assert budget["budget_gb"] == 0.001
    assert budget["x_unbudgeted"] == budget["min_s"] / on_disk["process"]["fbgpu"]["min_s"]
    assert len(on_disk["loadavg_before"]) == 3
    assert on_disk["floor"]["bytes"] > 0 and on_disk["floor"]["floor_s"] > 0
    # fbgpu's timed run recomputed the day and left a current factors partition behind.
    assert store.has("factors", d)
