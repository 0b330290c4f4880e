"""The HTML report: sections from step outputs, synthetic banner, run record, self-contained."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import pyarrow as pa

from fbgpu.cli import main
from fbgpu.data.runlog import read_runlog, record_step
from fbgpu.data.store import Store
from fbgpu.report import build_report


def _store_with_outputs(root: Path, synthetic: bool) -> Store:
    s = Store(root)
    d = dt.date(2024, 1, 2)
    s.write("scores", d, pa.table({"date": [d, d], "symbol": ["A", "B"], "x": [1.0, 2.0]}))
    ev = s.report_dir / "evaluate"
    ev.mkdir(parents=True)
    pd.DataFrame({"factor": ["late_skew_ret"], "RankIC mean": [0.0123]}).to_csv(
        ev / "single_factor.csv", index=False)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 2])
    fig.savefig(ev / "cumulative_rankic.png")
    plt.close(fig)
    if synthetic:
        (root / "synth.json").write_text(json.dumps({"preset": "tiny", "seed": 7}))
    record_step(s, "factors", 1.5, backend="cpu", device="CPU (2 cores)", summary="27 factors")
    return s


def test_report_embeds_tables_figures_and_run(tmp_path: Path) -> None:
    s = _store_with_outputs(tmp_path, synthetic=True)
    out = build_report(s)
    page = out.read_text()
    assert "SYNTHETIC DATA" in page and "preset <code>tiny</code>, seed 7" in page
    assert "Single-factor tests" in page and "late_skew_ret" in page and "1.23%" in page
    assert re.search(r"src='data:image/png;base64,[A-Za-z0-9+/=]{100,}'", page)
    assert "27 factors" in page and "CPU (2 cores)" in page
    # self-contained: no external resources
    assert not re.search(r"(src|href)=['\"]https?://", page)
    summary = pd.read_csv(s.report_dir / "data_summary.csv")
    assert summary.loc[0, "table"] == "scores" and summary.loc[0, "rows"] == 2


def test_report_without_synth_has_no_banner(tmp_path: Path) -> None:
    s = _store_with_outputs(tmp_path, synthetic=False)
    assert "SYNTHETIC DATA" not in build_report(s).read_text()


def test_cli_report_and_run_record(tmp_path: Path) -> None:
    _store_with_outputs(tmp_path, synthetic=True)
    assert main(["report", "--store", str(tmp_path)]) == 0
    assert (tmp_path / "reports" / "report.html").exists()
    assert main(["report", "--store", str(tmp_path / "missing")]) != 0
    log = read_runlog(Store(tmp_path))
    assert log["steps"]["factors"]["seconds"] == 1.5 and len(log["history"]) == 1
