"""The attainable ceilings of the planted signal (fbgpu/evaluate/truth.py): the least-squares
projection recovers a target it is given exactly, finds nothing in noise out of sample, and the
lagged features use only rows at or before each date."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fbgpu.data.store import Store
from fbgpu.evaluate.stats import rank_ic
from fbgpu.evaluate.truth import (
    ATTAIN_BARS,
    ATTAIN_PANEL,
    ORACLE,
    lagged_features,
    linear_ceiling,
    truth_table,
)
from fbgpu.panel.market import load_market


def _corr_rows(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([np.corrcoef(x, y)[0, 1] for x, y in zip(a, b, strict=True)]))


def test_linear_ceiling_recovers_an_exact_target_and_not_noise() -> None:
    rng = np.random.default_rng(0)
    R, S = 40, 60
    target = rng.standard_normal((R, S)) * 3.0 + 1.0  # any scale: the fit z-scores it
    pool = rng.random((R, S)) > 0.1
    noise = rng.standard_normal((R, S, 4))
    fit_idx, eval_idx = np.arange(0, 30), np.arange(30, 40)
    # the target itself among noise (as features, z-scored over the pool): recovered exactly
    feats = lagged_features(np.concatenate([noise, target[:, :, None]], axis=2), np.arange(R), (0,),
                      pool)
    sig = linear_ceiling(feats, target, pool, fit_idx, eval_idx)
    ok = pool[eval_idx]
    assert np.isnan(sig[~ok]).all()
    assert _corr_rows(np.where(ok, sig, 0), np.where(ok, feats[eval_idx, :, 4], 0)) > 0.999999
    # noise alone, judged out of sample: no information
    sig_n = linear_ceiling(lagged_features(noise, np.arange(R), (0,), pool), target, pool, fit_idx,
                           eval_idx)
    ic = np.asarray(rank_ic(sig_n, target[eval_idx], pool[eval_idx]))
    assert abs(float(np.nanmean(ic))) < 0.1


def test_features_are_lagged_zscores_without_look_ahead() -> None:
    rng = np.random.default_rng(1)
    D, S = 30, 20
    x = rng.standard_normal((D, S)) * 5 + 2
    pool = np.ones((3, S), dtype=bool)
    rows = np.array([3, 10, 25])
    f = lagged_features(x, rows, (0, 2, 5), pool)
    assert f.shape == (3, S, 3)
    z = (x[8] - x[8].mean()) / x[8].std()
    np.testing.assert_allclose(f[1, :, 1], z, atol=1e-12)  # row 10, lag 2 = day 8
    assert (f[0, :, 2] == 0).all()  # row 3, lag 5: before day 0 -> missing -> 0
    y = x.copy()
    y[11:] = rng.standard_normal((D - 11, S))  # change everything after day 10
    np.testing.assert_array_equal(lagged_features(y, rows[:2], (0, 2, 5), pool[:2]), f[:2])


def test_truth_table_reports_the_bars_ceiling_on_the_tiny_market(tiny_store: Store) -> None:
    """The tiny market has no panel/factors tables: only the returns ceiling, which is a
    weaker signal than the oracle itself (it sees the planted states through noisy prices)."""
    market = load_market(tiny_store)
    rows = np.arange(40, len(market.dates) - 7)
    t = truth_table(tiny_store, market, rows, market.pool()[rows], {})
    assert ATTAIN_BARS in t.index and ATTAIN_PANEL not in t.index
    assert np.isfinite(t.loc[ATTAIN_BARS, "RankIC mean"])
    assert t.loc[ATTAIN_BARS, "RankIC mean"] < t.loc[ORACLE, "RankIC mean"]
    t0 = truth_table(tiny_store, market, rows, market.pool()[rows], {}, attainable=False)
    assert ATTAIN_BARS not in t0.index
    assert t0.loc[ORACLE, "RankIC mean"] == pytest.approx(t.loc[ORACLE, "RankIC mean"])


def test_truth_summary_states_the_ceilings(tmp_path: Path) -> None:
    import pandas as pd

    from fbgpu.evaluate.truth import ATTAIN_RAW, ORACLE_Z
    from fbgpu.report.html import truth_summary

    (tmp_path / "models").mkdir()
    pd.DataFrame({"RankIC mean": [0.2, 0.1, 0.08, 0.12, 0.02, 0.09],
                  "t": [20.0, 9.0, 8.0, 11.0, 2.0, 9.5], "dates": [47] * 6,
                  "share of oracle IC": [1.0, 0.5, 0.4, 0.6, 0.1, 0.45]},
                 index=pd.Index([ORACLE, ORACLE_Z, ATTAIN_PANEL, ATTAIN_RAW, ATTAIN_BARS,
                                 "HF deep-learning"], name="signal")
                 ).to_csv(tmp_path / "models" / "planted_truth.csv")
    s = truth_summary(tmp_path)
    assert "20-day smoothed factor panel (40 days) 8.00% (40% of the oracle)" in s
    assert "raw daily factors (10 days) and returns 12.00% (60% of the oracle)" in s
    assert "past daily returns (the LF bars' part) 2.00% (10% of the oracle)" in s
    assert "HF deep-learning 9.00% (t = 9.5), 45% of the oracle and 90% of its informed" in s
