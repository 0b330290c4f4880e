"""``fbgpu convert`` as a process: the hot tables change format, their values do not, a repeat
is a no-op, and bad arguments exit 1 without touching anything."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa

from fbgpu.data.store import Store

ENV = {**os.environ, "FBGPU_PROGRESS": "0", "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}


def fbgpu(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fbgpu", *args], capture_output=True, text=True,
                          env=ENV, timeout=300, check=False)


def _tables(store: Store, dates: list) -> dict[tuple[str, object], pa.Table]:
    return {(t, d): store.read(t, d) for t in ("trades", "minute") for d in dates}


def test_convert_round_trip_keeps_values(tiny_store: Store, tmp_path: Path) -> None:
    root = tmp_path / "s"
    dates = tiny_store.dates("trades")[:2]
    for table in ("trades", "minute"):
        for d in dates:
            src = tiny_store.partition_dir(table, d)
            shutil.copytree(src, root / table / src.name)
    before = _tables(Store(root), dates)
    first = {p.name for p in root.rglob("part-0.*")}
    target = "parquet" if first == {"part-0.arrow"} else "arrow"

    res = fbgpu("convert", "--to", target, "--store", str(root))
    assert res.returncode == 0, res.stderr
    assert "4 partition(s) rewritten" in res.stderr + res.stdout
    assert {p.name for p in root.rglob("part-0.*")} == {f"part-0.{target}"}
    store = Store(root)
    assert store.hot_format == target
    after = _tables(store, dates)
    assert all(after[k].equals(before[k]) for k in before)

    again = fbgpu("convert", "--to", target, "--store", str(root))
    assert again.returncode == 0 and "0 partition(s) rewritten" in again.stderr + again.stdout


def test_convert_bad_arguments_exit_1(tmp_path: Path) -> None:
    res = fbgpu("convert", "--to", "csv", "--store", str(tmp_path))
    assert res.returncode == 1 and "unknown format 'csv'" in res.stderr
    missing = tmp_path / "nothing"
    res = fbgpu("convert", "--to", "arrow", "--store", str(missing))
    assert res.returncode == 1 and "no store at" in res.stderr
    assert not missing.exists()
