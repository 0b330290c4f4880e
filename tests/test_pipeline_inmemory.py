"""The demo's in-memory route (factor cube and score panel handed on in memory, the store written
behind by one background writer) stores exactly what the step-by-step commands store."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fbgpu.data.store import Store
from fbgpu.evaluate import EvaluateConfig, run_evaluate
from fbgpu.factors import run_factors
from fbgpu.models import run_train
from fbgpu.pipeline import DemoConfig, run_demo

#: Settings that fit the tiny market's 60 days. Every key of the demo's training override
#: (fbgpu.models.DEMO_OVERRIDES) is given, so the step-by-step training is the demo's.
TRAIN = {"seeds": [0], "max_epochs": 2, "patience": 4, "min_train_dates": 2,
         "retrain_months": [3], "hf_window": 5, "label_horizon": 5, "lf_daily_len": 5,
         "lf_weekly_len": 3, "lf_monthly_len": 2, "sample_every": 2, "hidden_size": 8}
EVALUATE = {"figures": False, "min_stocks": 5}


def _partitions(store: Store, table: str) -> dict[str, str]:
    """Date -> content hash (sha256 of the Parquet bytes) of every partition of ``table``."""
    out = {}
    for d in store.dates(table):
        m = store.manifest(table, d)
        assert m is not None
        out[d.isoformat()] = m.sha256
    return out


def _files(root: Path, pattern: str) -> dict[str, bytes]:
    """Relative path -> bytes of every file under ``root`` matching ``pattern``."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob(pattern))
            if p.is_file()}


def test_in_memory_demo_stores_what_the_step_by_step_commands_store(
        tiny_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    skip = shutil.ignore_patterns("factors", "panel", "reports", "run.json", "scores", "models")
    mem, steps = tmp_path / "memory", tmp_path / "steps"
    shutil.copytree(tiny_store.root, mem, ignore=skip)
    shutil.copytree(tiny_store.root, steps, ignore=skip)

    cfg = DemoConfig(preset="tiny", seed=0, stages=["factors", "evaluate", "train"],
                     models="hf")
    run_demo(Store(mem), backend="cpu", config=cfg,
             stage_config={"evaluate": EVALUATE, "train": TRAIN})

    # Step by step: what `fbgpu factors`, `fbgpu evaluate` and `fbgpu train --model hf` run,
    # each stage reading its inputs back from the store.
    st = Store(steps)
    run_factors(st, backend="cpu", progress=False)
    ecfg = EvaluateConfig.from_dict(EVALUATE)
    run_evaluate(st, ecfg, backend="cpu", progress=False)
    # the demo's models read the evaluation's panel with its own smoothing window
    # ([demo] model_panel_window, as `fbgpu train` with that [evaluate.panel] window)
    w = cfg.model_panel_window
    mpanel = dataclasses.replace(ecfg.panel, window=w, min_valid=min(ecfg.panel.min_valid, w))
    run_train(st, "hf", {**TRAIN}, backend="cpu", progress=False, panel_config=mpanel,
              pool_config=ecfg.pool)

    for table in ("factors", "panel", "scores"):
        a, b = _partitions(Store(mem), table), _partitions(Store(steps), table)
        assert a, f"the demo wrote no {table} table"
        assert a == b, f"{table}: the in-memory route and the commands stored different data"
    # the checkpoints (written behind by both routes; window.json records timings, so only
    # its presence) and the evaluation's result tables
    assert _files(mem / "models", "window.json").keys() == _files(steps / "models",
                                                                  "window.json").keys()
    for sub, pattern in (("models", "*.pt"), ("reports/evaluate", "*.csv")):
        a, b = _files(mem / sub, pattern), _files(steps / sub, pattern)
        assert a and a.keys() == b.keys(), sub
        assert a == b, f"{sub}: the routes wrote different files"

    # Resume: the demo's train stage flushed its writer, so a re-run finds every checkpoint
    # (the seed files and window.json) and fits nothing.
    from fbgpu.models import runner

    def no_fit(jobs, *args, **kwargs):
        if jobs:
            raise AssertionError(f"a checkpointed window was retrained: {jobs[0].describe()}")
        return {}

    monkeypatch.setattr(runner, "fit_all", no_fit)
    run_demo(Store(mem), backend="cpu", config=cfg.model_copy(update={"stages": ["train"]}),
             stage_config={"evaluate": EVALUATE, "train": TRAIN})
    assert _files(mem / "models", "*.pt") == _files(steps / "models", "*.pt")


@pytest.mark.parametrize("stage", ["factors", "evaluate", "train"])
def test_a_failed_write_behind_fails_the_demo_stage_naming_the_table(
        tiny_store: Store, tmp_path: Path, stage: str) -> None:
    """A write the background writer cannot make fails its stage (recorded as failed, with
    the table named), instead of being lost behind a run that reports success."""
    from fbgpu.data.runlog import read_runlog
    from fbgpu.data.writebehind import WriteBehindError

    root = tmp_path / "demo"
    shutil.copytree(tiny_store.root, root, ignore=shutil.ignore_patterns(
        "factors", "panel", "reports", "run.json", "scores", "models"))
    store = Store(root)
    table = {"factors": "factors", "evaluate": "panel", "train": "scores"}[stage]
    # The partition's directory is taken by a file: the write cannot make it (even as root).
    blocked = store.dates("trades")[-1] if stage == "factors" else None
    if blocked is not None:
        store.partition_dir(table, blocked).parent.mkdir(parents=True)
        store.partition_dir(table, blocked).write_text("in the way")
    else:
        store.root.joinpath(table).write_text("in the way")
    stages = {"factors": ["factors"], "evaluate": ["factors", "evaluate"],
              "train": ["factors", "evaluate", "train"]}[stage]
    cfg = DemoConfig(preset="tiny", seed=0, stages=stages, models="hf")
    with pytest.raises(WriteBehindError, match=f"table '{table}'") as err:
        run_demo(store, backend="cpu", config=cfg,
                 stage_config={"evaluate": EVALUATE, "train": TRAIN})
    assert err.value.failures and err.value.failures[0].table == table
    step = read_runlog(store)["steps"][stage]
    assert step["status"] == "failed" and table in step["error"]
    if stage == "factors":  # the other dates were written
        assert len(store.dates("factors")) == len(store.dates("trades")) - 1


@pytest.mark.parametrize("what", ["checkpoint", "evaluation table"])
def test_a_failed_file_write_behind_fails_the_demo_stage_naming_the_file(
        tiny_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, what: str) -> None:
    """The files written behind (a checkpoint of the train stage, a result table of the
    evaluate stage) fail their stage, recorded as failed with the file named."""
    from fbgpu.data.runlog import read_runlog
    from fbgpu.data.writebehind import WriteBehindError
    from fbgpu.models import checkpoints

    root = tmp_path / "demo"
    shutil.copytree(tiny_store.root, root, ignore=shutil.ignore_patterns(
        "factors", "panel", "reports", "run.json", "scores", "models"))
    store = Store(root)
    if what == "checkpoint":
        stage, name = "train", "seed0.pt"
        real = checkpoints.atomic_write_bytes

        def failing(path: Path, data: bytes) -> None:
            if path.name == name:
                raise OSError("disk full")
            real(path, data)

        monkeypatch.setattr(checkpoints, "atomic_write_bytes", failing)
    else:  # the table's file is taken by a directory: the write cannot replace it
        stage, name = "evaluate", "single_factor.csv"
        (store.report_dir / "evaluate" / name).mkdir(parents=True)
    stages = ["factors", "evaluate", "train"][:["factors", "evaluate", "train"].index(stage) + 1]
    cfg = DemoConfig(preset="tiny", seed=0, stages=stages, models="hf")
    with pytest.raises(WriteBehindError, match=f"file '[^']*{name}'") as err:
        run_demo(store, backend="cpu", config=cfg,
                 stage_config={"evaluate": EVALUATE, "train": TRAIN})
    assert err.value.failures[0].kind == "file"
    step = read_runlog(store)["steps"][stage]
    assert step["status"] == "failed" and name in step["error"]


def test_fbgpu_factors_exits_3_naming_the_table_when_a_write_behind_fails(
        tiny_store: Store, tmp_path: Path) -> None:
    """The command line: the failed write is an error (status 3, the table and date on
    stderr, the step recorded as failed), the other dates are written."""
    from fbgpu.data.runlog import read_runlog

    root = tmp_path / "store"
    shutil.copytree(tiny_store.root, root, ignore=shutil.ignore_patterns(
        "factors", "panel", "reports", "run.json", "scores", "models"))
    store = Store(root)
    d0, d1 = store.dates("trades")[:2]
    store.partition_dir("factors", d1).parent.mkdir(parents=True)
    store.partition_dir("factors", d1).write_text("in the way")
    r = subprocess.run([sys.executable, "-m", "fbgpu", "factors", "--store", str(root),
                        "--backend", "cpu", "--start", str(d0), "--end", str(d1)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 3, r.stderr[-2000:]
    assert "table 'factors' partition " + str(d1) in r.stderr, r.stderr[-2000:]
    assert store.dates("factors") == [d0]
    assert read_runlog(store)["steps"]["factors"]["status"] == "failed"
