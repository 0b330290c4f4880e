"""Paper-vs-run verdicts (paired weekly RankIC t-statistics) and the report's table hygiene."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fbgpu.report import build_report
from fbgpu.report.claims import paired_t, paper_vs_run, verdict
from fbgpu.report.html import table_html


def _write_models(root: Path, gap: float, n: int = 40, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    base = rng.normal(0.03, 0.05, n)
    dates = pd.date_range("2022-01-03", periods=n, freq="7D").strftime("%Y-%m-%d")
    d = root / "reports" / "models"
    d.mkdir(parents=True)
    pd.DataFrame({"date": dates, "HF deep-learning": base + gap + rng.normal(0, 0.01, n),
                  "HF equal-weight": base, "HF ICIR-weighted": base - 0.01}).to_csv(
        d / "rank_ic.csv", index=False)
    pd.DataFrame({"": ["HF deep-learning"], "RankIC mean": [0.05]}).to_csv(
        d / "exhibit45_hf.csv", index=False)


def test_paired_t_matches_closed_form() -> None:
    a = pd.Series([0.1, 0.2, 0.3, 0.5])
    b = pd.Series([0.0, 0.1, 0.1, 0.2])
    d = a - b
    m, t, n = paired_t(a, b)
    assert n == 4 and math.isclose(m, d.mean())
    assert math.isclose(t, d.mean() / (d.std(ddof=1) / 2.0))
    assert verdict(2.5, 10) == "reproduced" and verdict(-2.5, 10) == "contradicted"
    assert verdict(1.0, 10) == "inconclusive" and verdict(5.0, 2) == "inconclusive"


def test_claims_verdicts_follow_the_data(tmp_path: Path) -> None:
    _write_models(tmp_path / "up", gap=0.03)
    up = paper_vs_run(tmp_path / "up" / "reports").set_index("claim")
    assert (up["verdict"] == "reproduced").all() and len(up) == 2
    assert "9.10%" in up.iloc[0]["paper"]  # the report's published HF RankIC is quoted
    _write_models(tmp_path / "down", gap=-0.03)
    down = paper_vs_run(tmp_path / "down" / "reports")
    eq = down[down["claim"].str.contains("equal-weight")]
    assert eq["verdict"].tolist() == ["contradicted"]


def test_report_has_anchors_toc_claims_and_no_unnamed(tmp_path: Path) -> None:
    _write_models(tmp_path, gap=-0.03)
    page = build_report(tmp_path).read_text()
    assert 'id="exhibit-45"' in page and 'href="#exhibit-45"' in page
    assert 'id="paper-vs-run"' in page and "contradicted" in page
    assert "HF deep-learning beats HF equal-weight" in page
    assert "Unnamed" not in page
    assert (tmp_path / "reports" / "paper_vs_run.csv").exists()


def test_long_table_is_summarised_with_csv_link() -> None:
    df = pd.DataFrame({"date": range(100), "annualized excess return": np.linspace(0, 0.1, 100)})
    h = table_html(df, max_rows=10, link="backtest/daily.csv")
    assert h.count("<tr>") == 11 and "90 more rows" in h and "href='backtest/daily.csv'" in h
    assert re.search(r"<td>10\.00%</td>", table_html(df.tail(1), link=None))


def test_top_nav_figure_is_numbered_exhibit(tmp_path: Path) -> None:
    from fbgpu.evaluate.plots import plot_top_nav
    from fbgpu.evaluate.single import FactorReport

    idx = [f"2022-01-{d:02d}" for d in (3, 10, 17, 24)]
    gr = pd.DataFrame({g: [0.01 * g, -0.005, 0.002, 0.01] for g in range(1, 6)}, index=idx)
    rep = FactorReport("HF deep-learning", 1, 5, 52.0, pd.Series(0.05, index=idx), gr,
                       gr.mean(axis=1), pd.Series(0.5, index=idx), gr * 0 + 10)
    d = tmp_path / "reports" / "models"
    d.mkdir(parents=True)
    plot_top_nav(rep, d / "top_nav_hf_gru.png")
    assert (d / "top_nav_hf_gru.png").read_bytes()[:4] == b"\x89PNG"
    page = build_report(tmp_path).read_text()
    assert 'id="exhibit-47"' in page and "Exhibit 47:" in page


def test_monthly_ic_is_the_calendar_month_mean() -> None:
    from fbgpu.evaluate.plots import monthly_ic

    ic = pd.Series([0.1, 0.3, -0.2, np.nan, 0.05],
                   index=["2022-01-03", "2022-01-10", "2022-02-07", "2022-02-14", "2023-03-06"])
    m = monthly_ic(ic)
    assert list(m.columns) == list(range(1, 13)) and list(m.index) == [2022, 2023]
    assert m.loc[2022, 1] == pytest.approx(0.2) and m.loc[2022, 2] == pytest.approx(-0.2)
    assert m.loc[2023, 3] == pytest.approx(0.05) and np.isnan(m.loc[2022, 3])


def test_unreadable_model_output_does_not_break_the_report(tmp_path: Path) -> None:
    d = tmp_path / "reports" / "models"
    d.mkdir(parents=True)
    (d / "rank_ic.csv").write_text("when,HF deep-learning\n2022-01-03,0.1\n")  # no date column
    assert paper_vs_run(tmp_path / "reports").empty
    assert "none of the paper" in build_report(tmp_path).read_text()


def test_enhancement_claims_one_per_cap_with_t_from_ir(tmp_path: Path) -> None:
    d = tmp_path / "backtest"
    d.mkdir(parents=True)
    pd.DataFrame({"portfolio": ["turnover=30%", "turnover=50%", "csi500"],
                  "annualized excess return": [0.10, -0.05, np.nan],
                  "information ratio": [2.0, -1.5, np.nan]}).to_csv(
        d / "performance_csi500.csv", index=False)
    pd.DataFrame({"date": range(1008)}).to_csv(d / "daily_returns_csi500.csv", index=False)
    c = paper_vs_run(tmp_path)
    assert len(c) == 2 and c["t"].tolist() == [4.0, -3.0]  # IR * sqrt(4 years)
    assert c["verdict"].tolist() == ["reproduced", "contradicted"]
    assert "19.46%" in c.iloc[0]["paper"] and "17.68%" in c.iloc[1]["paper"]
