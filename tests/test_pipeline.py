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
