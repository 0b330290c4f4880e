"""The demo pipeline on the tiny market: stages run, record themselves, resume without redoing."""

from __future__ import annotations

import shutil
from pathlib import Path

from fbgpu.data.runlog import read_runlog
from fbgpu.data.store import Store
from fbgpu.pipeline import DemoConfig, run_demo, stage_summary, synth_is_current


def test_demo_stages_record_and_resume(tiny_store: Store, tmp_path: Path) -> None:
    root = tmp_path / "demo"
    # start from a copy of the tiny market, as if `fbgpu synth --preset tiny` had run
    shutil.copytree(tiny_store.root, root, ignore=shutil.ignore_patterns("factors", "panel",
                                                                        "reports", "run.json"))
    store = Store(root)
    assert synth_is_current(store, "tiny", 0) and not synth_is_current(store, "tiny", 1)
    cfg = DemoConfig(preset="tiny", seed=0, stages=["synth", "factors", "evaluate", "report"])
    report = run_demo(store, backend="cpu", config=cfg, stage_config={
        "evaluate": {"figures": False, "min_stocks": 5}})
    page = report.read_text()
    assert "SYNTHETIC DATA" in page and "Single-factor tests" in page
    steps = read_runlog(store)["steps"]
    assert set(steps) == {"factors", "evaluate"}  # the market was current: synth skipped
    assert steps["factors"]["summary"].startswith("factors: 60 dates computed")
    assert "evaluated 27 factors" in steps["evaluate"]["summary"]
    # a second run recomputes no factor partition
    run_demo(store, backend="cpu", config=cfg.model_copy(update={"stages": ["factors"]}))
    assert "0 dates computed, 60 up to date" in read_runlog(store)["steps"]["factors"]["summary"]


def test_stage_summary_prefers_the_results_own_line() -> None:
    class R:
        def line(self) -> str:
            return "one line"

    assert stage_summary(R()) == "one line"
    assert stage_summary("text") == "text"


def test_best_score_signs_the_factor_by_direction_and_ic(tmp_path: Path) -> None:
    import pandas as pd
    import pytest

    from fbgpu.pipeline import best_score

    store = Store(tmp_path)
    out = store.report_dir / "evaluate"
    out.mkdir(parents=True)

    def table(rows: list[tuple[str, int, float]]) -> None:
        pd.DataFrame(rows, columns=["factor", "direction", "IC_IR"]).to_csv(
            out / "single_factor.csv", index=False)

    table([("a", 1, 0.2), ("b", -1, 0.5), ("c", 1, -0.1)])
    assert best_score(store) == "-b"  # direction -1, signed IC positive: small raw is good
    table([("a", 1, 0.2), ("b", -1, -0.5)])
    assert best_score(store) == "b"  # signed IC negative under direction -1: large raw is good
    table([("a", 1, -0.6), ("b", 1, 0.5)])
    assert best_score(store) == "-a"
    (out / "single_factor.csv").unlink()
    with pytest.raises(ValueError, match="neither scores nor an evaluated factor"):
        best_score(store)


def test_the_demo_checks_its_models_calendar_with_the_runs_definitions(
        tiny_store: Store, tmp_path: Path) -> None:
    """The demo refuses, before any stage, a market whose calendar leaves the train stage no
    retrain window, with the run's own definitions (sample grid, windows, the demo's training
    config): the 'tiny' and 'small' presets (60, 120 days) are refused, 'demo' (500) and a
    [synth]-lengthened 'small' (300) pass, a [train] key that asks for more history is refused;
    without the synth stage the store's own market is checked."""
    import datetime as dt

    import pytest

    from fbgpu.data.synth.universe import weekday_calendar
    from fbgpu.models import calendar_windows, make_windows, sample_grid
    from fbgpu.panel.market import rebalance_indices
    from fbgpu.pipeline import DemoConfigError, check_train_calendar, demo_train_config

    empty = Store(tmp_path / "s")
    for preset, n in (("tiny", 60), ("small", 120)):
        with pytest.raises(DemoConfigError, match=rf"preset '{preset}': no retrain window: "
                           rf"{n} trading days .*'demo' preset"):
            check_train_calendar(empty, DemoConfig(preset=preset), {})
    check_train_calendar(empty, DemoConfig(preset="demo"), {})
    check_train_calendar(empty, DemoConfig(preset="small"), {"synth": {"n_days": 300}})
    with pytest.raises(DemoConfigError, match="min_train_dates=90"):
        check_train_calendar(empty, DemoConfig(preset="demo"), {"train": {"min_train_dates": 90}})
    # the store's market when the demo does not generate one (the tiny store: 60 days)
    no_synth = DemoConfig(preset="demo", stages=["factors", "train"])
    with pytest.raises(DemoConfigError, match="the store's market: no retrain window: 60"):
        check_train_calendar(tiny_store, no_synth, {})
    # the calendar's windows are the training run's: its sample grid is the rebalance dates
    cfg = demo_train_config(DemoConfig(), {})
    dates = weekday_calendar(dt.date(2022, 1, 3), 500)
    grid = rebalance_indices(len(dates), cfg.sample_every, 0)
    assert calendar_windows(dates, cfg) == make_windows(
        dates, grid[grid >= cfg.history_days], cfg) != []
    assert sample_grid(len(dates), cfg).tolist() == [d for d in grid if d >= cfg.history_days]
