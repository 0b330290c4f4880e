"""Logs a user reads: one line per fact, not one per date or per step, and no raw dicts."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from fbgpu.data.store import Store
from fbgpu.engine import backend as backend_mod
from fbgpu.models.runner import format_valid_ic
from fbgpu.portfolio.backtest import WarningTally, load_index_weights, load_market


def test_auto_backend_fallback_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    gpu, _ = backend_mod._gpu_backend_or_reason()
    if gpu is not None:
        pytest.skip("a usable GPU: auto does not fall back to the CPU")
    backend_mod._auto_cpu_backend.cache_clear()
    with caplog.at_level(logging.INFO, logger="fbgpu.engine.backend"):
        chosen = [backend_mod.get_backend("auto") for _ in range(8)]  # the demo's eight steps
    assert all(b.name == "cpu" and b.note.startswith("GPU not used") for b in chosen)
    assert sum("auto backend" in r.getMessage() for r in caplog.records) == 1


def test_valid_ic_log_is_formatted() -> None:
    assert format_valid_ic({1: [0.025, -0.01], 0: [0.03124]}) == \
        "seed 0 +0.0312, seed 1 +0.0250/-0.0100"
    assert format_valid_ic({}) == "-"
    assert format_valid_ic({2: []}) == "seed 2 -"


def _store(root: Path, n_days: int) -> tuple[Store, list[dt.date]]:
    """Two stocks with daily rows; the index also lists a third one that has none."""
    st = Store(root)
    dates = [dt.date(2023, 1, 2) + dt.timedelta(days=i) for i in range(n_days * 7 // 5 + 3)]
    dates = [d for d in dates if d.weekday() < 5][:n_days]
    syms = ["600000.SH", "600001.SH"]
    for d in dates:
        px = np.array([10.0, 20.0])
        st.write("daily", d, pa.table({
            "date": [d] * 2, "symbol": syms, "open": px, "high": px, "low": px, "close": px,
            "pre_close": px, "vwap": px, "volume": [100, 100], "amount": px * 100,
            "adj_factor": [1.0, 1.0], "limit_up": px * 1.1, "limit_down": px * 0.9,
            "suspended": [False, False], "st": [False, False], "float_cap": px * 1e6,
            "industry": ["a", "b"]}))
        st.write("index_weights", d, pa.table({
            "date": [d] * 3, "index": ["idx"] * 3, "symbol": [*syms, "600999.SH"],
            "weight": [0.4, 0.4, 0.2]}))
    return st, dates


def test_per_date_backtest_warnings_are_one_summary_line(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    st, dates = _store(tmp_path / "s", 30)
    market = load_market(st, dates)
    with caplog.at_level(logging.DEBUG, logger="fbgpu.portfolio.backtest"):
        w = load_index_weights(st, market, "idx")
    np.testing.assert_allclose(w.sum(axis=1), 1.0)  # the missing member is dropped, renormalized
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "on 30 of 30 dates" in warnings[0] and "600999.SH" in warnings[0]
    assert f"{dates[0]} .. {dates[-1]}" in warnings[0]
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(debug) == 30  # the details are still there with -v


def test_warning_tally_groups_by_kind(caplog: pytest.LogCaptureFixture) -> None:
    t = WarningTally()
    d0, d1 = dt.date(2024, 1, 2), dt.date(2024, 1, 3)
    t.add("a", d0, "x")
    t.add("a", d1, "y")
    t.add("b", d1, "z")
    assert t.counts() == {"a": 2, "b": 1}
    with caplog.at_level(logging.WARNING, logger="fbgpu.portfolio.backtest"):
        t.flush(5)
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs == ["a on 2 of 5 dates (2024-01-02 .. 2024-01-03; first: x); per-date details "
                    "with -v", "b on 1 of 5 dates (2024-01-03 .. 2024-01-03; first: z); per-date "
                    "details with -v"]
    assert t.counts() == {}
