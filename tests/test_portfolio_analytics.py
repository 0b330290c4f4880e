"""Performance analytics against hand-computed values and pandas."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fbgpu.portfolio.analytics import (
    annualized_return,
    annualized_volatility,
    max_drawdown,
    monthly_win_rate,
    performance,
    yearly_returns,
)


def test_max_drawdown_by_hand():
    # NAV 1.1, 0.88, 0.968, 0.484, 0.968: peak 1.1, trough 0.484 -> 1 - 0.484 / 1.1 = 0.56
    assert max_drawdown(np.array([0.1, -0.2, 0.1, -0.5, 1.0])) == pytest.approx(0.56)
    assert max_drawdown(np.array([0.01, 0.02])) == 0.0
    # a loss on day one counts from the starting value 1
    assert max_drawdown(np.array([-0.1, 0.05])) == pytest.approx(0.1)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-0.2, 0.2), min_size=2, max_size=80))
def test_drawdown_and_volatility_match_pandas(rets):
    r = np.array(rets)
    nav = pd.Series(np.r_[1.0, np.cumprod(1 + r)])
    assert max_drawdown(r) == pytest.approx(float((1 - nav / nav.cummax()).max()), abs=1e-12)
    assert annualized_volatility(r) == pytest.approx(float(pd.Series(r).std() * np.sqrt(250)),
                                                     rel=1e-9, abs=1e-12)


def test_annualized_return_closed_form():
    r = np.full(125, 0.001)  # half a year of 0.1% a day
    assert annualized_return(r) == pytest.approx(1.001**250 - 1)
    assert annualized_return(np.full(250, -0.001)) == pytest.approx(0.999**250 - 1)


def test_ir_calmar_win_rate_turnover_by_hand():
    dates = [dt.date(2023, 1, 30), dt.date(2023, 1, 31), dt.date(2023, 2, 1),
             dt.date(2023, 2, 2), dt.date(2023, 3, 1)]
    bench = np.array([0.01, -0.01, 0.0, 0.02, 0.0])
    excess = np.array([0.01, -0.02, 0.005, 0.0, 0.01])
    port = bench + excess
    stats = performance(dates, port, bench, turnovers=[0.3, 0.2, 0.4], periods=250)
    ex_nav = np.prod(1 + excess)
    ann_ex = ex_nav ** (250 / 5) - 1
    te = np.std(excess, ddof=1) * np.sqrt(250)
    # excess NAV: 1.01, 0.9898, 0.994749, 0.994749, 1.00469649 -> drawdown 1 - 0.9898/1.01
    mdd = 1 - 0.9898 / 1.01
    assert stats["annual_excess"] == pytest.approx(ann_ex)
    assert stats["tracking_error"] == pytest.approx(te)
    assert stats["information_ratio"] == pytest.approx(ann_ex / te)
    assert stats["excess_max_drawdown"] == pytest.approx(mdd)
    assert stats["calmar"] == pytest.approx(ann_ex / mdd)
    # January: 1.01 * 0.98 - 1 < 0 (loss); February: 1.005 - 1 > 0; March: > 0 -> 2 / 3
    assert stats["monthly_win_rate"] == pytest.approx(2 / 3)
    assert monthly_win_rate(dates, excess) == pytest.approx(2 / 3)
    assert stats["avg_turnover"] == pytest.approx(0.3)
    assert stats["sharpe"] == pytest.approx(stats["annual_return"] / stats["annual_volatility"])


def test_yearly_returns():
    dates = [dt.date(2022, 12, 29), dt.date(2022, 12, 30), dt.date(2023, 1, 3)]
    out = yearly_returns(dates, np.array([0.1, -0.1, 0.05]))
    assert out == {2022: pytest.approx(1.1 * 0.9 - 1), 2023: pytest.approx(0.05)}


def test_benchmark_row_has_only_absolute_statistics():
    stats = performance([dt.date(2023, 1, 2), dt.date(2023, 1, 3)], np.array([0.01, 0.02]))
    assert set(stats) == {"annual_return", "annual_volatility", "sharpe", "max_drawdown"}
