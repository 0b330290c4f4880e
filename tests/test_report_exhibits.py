"""Numbers behind the report's new exhibits: family split, best single factor, IC decay, oracle
IC of the planted signal, active exposures, drawdown; closed forms and planted data."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fbgpu.data.store import Store
from fbgpu.evaluate.families import best_single_factor, write_family_exhibits
from fbgpu.evaluate.truth import ORACLE, ORACLE_PI, ORACLE_Z, planted_coefficients, truth_table
from fbgpu.models.exhibits import ic_decay
from fbgpu.panel.market import load_market
from fbgpu.portfolio.analytics import drawdown, max_drawdown
from fbgpu.portfolio.exposures import active_exposures


def _write(df: pd.DataFrame, out: Path, stem: str) -> str:
    df.to_csv(out / f"{stem}.csv")
    return f"{stem}.csv"


def test_family_exhibits_split_rows_and_correlations(tmp_path: Path) -> None:
    names = ["a", "b", "c", "d"]
    fam = {"a": "minute", "b": "trade", "c": "minute", "d": "order"}
    summary = pd.DataFrame({"RankIC mean": [0.01, 0.02, 0.03, 0.04]}, index=names)
    corr = pd.DataFrame(np.arange(16.0).reshape(4, 4), index=names, columns=names)
    items = write_family_exhibits(tmp_path, summary, corr, fam, _write, figures=True)
    files = [it["file"] for it in items]
    assert files[0] == "single_factor_minute.csv" and "corr_heatmap_minute.png" in files
    assert "corr_heatmap_order.png" not in files  # one order factor: no matrix to draw
    minute = pd.read_csv(tmp_path / "single_factor_minute.csv", index_col=0)
    assert list(minute.index) == ["a", "c"]
    c = pd.read_csv(tmp_path / "corr_minute.csv", index_col=0)
    assert c.loc["a", "c"] == 2.0 and c.loc["c", "a"] == 8.0 and c.shape == (2, 2)


def test_best_single_factor_is_the_highest_signed_rankic() -> None:
    t = pd.DataFrame({"factor": ["x", "y", "z"], "direction": [1, -1, 1],
                      "RankIC mean": [0.02, 0.05, float("nan")]})
    assert best_single_factor(t) == ("y", -1)
    assert best_single_factor(t.iloc[2:]) is None


class _Market:
    """The two things ic_decay needs of a Market: dates and forward_returns(start, end)."""

    def __init__(self, px: np.ndarray) -> None:
        self.px = px
        self.dates = [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(len(px))]

    def forward_returns(self, start: int, end: int) -> np.ndarray:
        out = np.full_like(self.px, np.nan)
        D = len(self.px)
        out[: D - end] = self.px[end:] / self.px[start: D - end + start] - 1.0
        return out


def test_ic_decay_is_one_at_the_horizon_a_score_predicts() -> None:
    rng = np.random.default_rng(0)
    px = np.exp(np.cumsum(rng.normal(0, 0.02, (80, 40)), axis=0))
    m = _Market(px)
    rows = np.arange(0, 50, 5)
    oracle_5d = m.forward_returns(1, 6)[rows]  # knows the 5-day return after the T+1 entry
    pool = np.ones_like(oracle_5d, dtype=bool)
    d = ic_decay({"oracle": oracle_5d, "noise": rng.normal(size=oracle_5d.shape)}, m, rows, pool)
    assert list(d.columns) == ["1d", "2d", "5d", "10d", "20d"]
    assert d.loc["oracle", "5d"] == pytest.approx(1.0)
    assert d.loc["oracle", "1d"] < 0.9 and abs(d.loc["noise", "5d"]) < 0.3


def test_planted_coefficients_closed_form() -> None:
    a, b = planted_coefficients({"informed_drift": 0.001, "informed_phi": 0.9,
                                 "pressure_psi": 0.6})
    assert a == pytest.approx(0.001 * (0.9 + 0.81 + 0.729 + 0.6561 + 0.59049))
    assert b == pytest.approx(0.6 ** 6 - 0.6)


def test_oracle_of_the_planted_market_predicts_returns(tiny_store: Store) -> None:
    """On the tiny synthetic market the oracle (planted expected return) has a clearly positive
    RankIC, and a model row equal to the oracle's own RankIC recovers 100% of it."""
    market = load_market(tiny_store)
    D = len(market.dates)
    rows = np.arange(5, D - 7)
    pool = market.pool()[rows]
    t = truth_table(tiny_store, market, rows, pool, {})
    assert t is not None and list(t.index[:3]) == [ORACLE, ORACLE_Z, ORACLE_PI]
    assert t.loc[ORACLE, "RankIC mean"] > 0.1 and t.loc[ORACLE, "t"] > 3
    assert t.loc[ORACLE, "share of oracle IC"] == pytest.approx(1.0)
    dates = pd.DatetimeIndex([market.dates[i] for i in rows])
    own = pd.Series(t.loc[ORACLE, "RankIC mean"], index=dates)  # constant = the oracle's mean
    t2 = truth_table(tiny_store, market, rows, pool, {"copy": own})
    assert t2.loc["copy", "share of oracle IC"] == pytest.approx(1.0)
    assert truth_table(Store(tiny_store.root.parent / "no_such_store"), market, rows, pool,
                       {}) is None


def test_active_exposures_closed_form() -> None:
    syms = ["A", "B", "C", "D"]
    ind = pd.Series(["x", "x", "y", "y"], index=syms)
    log_cap = pd.Series([1.0, 2.0, 3.0, 4.0], index=syms)
    b = pd.Series([0.25] * 4, index=syms)
    size, ind_share, per = active_exposures(b, b, ind, log_cap)
    assert size == 0.0 and ind_share == 0.0 and (per == 0).all()
    w = pd.Series([0.5, 0.5], index=["C", "D"])  # all in industry y, the two largest caps
    size, ind_share, per = active_exposures(w, b, ind, log_cap)
    z = (log_cap - 2.5) / log_cap.std(ddof=0)
    assert size == pytest.approx(float(((w.reindex(syms, fill_value=0) - b) * z).sum()))
    assert ind_share == pytest.approx(0.5) and per["y"] == pytest.approx(0.5)


def test_drawdown_path() -> None:
    r = np.array([0.1, -0.2, 0.05, 0.3])
    nav = np.cumprod(1 + r)
    peak = np.maximum.accumulate(np.r_[1.0, nav])[1:]
    assert np.allclose(drawdown(r), 1 - nav / peak)
    assert max_drawdown(r) == pytest.approx(0.2) and math.isclose(max_drawdown(np.array([])), 0)


class _Daily:
    """What extended_style_factors reads of a Market."""

    def __init__(self, adj: np.ndarray, amount: np.ndarray) -> None:
        self.adj, self.amount = adj, amount

    def adjusted_close(self) -> np.ndarray:
        return self.adj

    def traded(self) -> np.ndarray:
        return np.ones(self.adj.shape, dtype=bool)

    def __getitem__(self, name: str) -> np.ndarray:
        assert name == "amount"
        return self.amount


def test_extended_style_factors_closed_form() -> None:
    from fbgpu.evaluate.correlation import extended_style_factors

    rng = np.random.default_rng(3)
    adj = np.exp(np.cumsum(rng.normal(0, 0.02, (90, 5)), axis=0))
    amount = rng.uniform(1e7, 1e9, (90, 5))
    s = extended_style_factors(_Daily(adj, amount), window=20, momentum_window=60)
    r = adj[1:] / adj[:-1] - 1.0  # r[t-1] is the return of day t
    t = 70
    last = r[t - 20: t]  # days t-19 .. t
    assert np.allclose(s["volatility"][t], last.std(axis=0))
    assert np.allclose(s["max return"][t], last.max(axis=0))
    assert np.allclose(s["momentum"][t], adj[t] / adj[t - 60] - 1.0)
    assert np.allclose(s["illiquidity"][t],
                       (np.abs(last) / amount[t - 19: t + 1] * 1e8).mean(axis=0))
    assert np.isnan(s["momentum"][59]).all() and np.isnan(s["volatility"][5]).all()


def test_costs_in_basis_points_and_shares_in_percent() -> None:
    from fbgpu.report.html import table_html

    h = table_html(pd.DataFrame({"portfolio": ["a"], "cost": [0.0006],
                                 "share of oracle IC": [0.08], "t": [2.5]}))
    assert "<td>6.0 bp</td>" in h and "<td>8.00%</td>" in h and "<td>2.50</td>" in h


def test_truth_summary_states_the_recovered_share(tmp_path: Path) -> None:
    from fbgpu.report.html import truth_summary

    (tmp_path / "models").mkdir()
    assert truth_summary(tmp_path) == ""  # not a synthetic store
    pd.DataFrame({"RankIC mean": [0.2, 0.08, 0.18, 0.05], "t": [20.0, 9.0, 18.0, 3.2],
                  "dates": [47, 47, 47, 47], "share of oracle IC": [1.0, 0.4, 0.9, 0.25]},
                 index=pd.Index([ORACLE, ORACLE_Z, ORACLE_PI, "full-band fusion"],
                                name="signal")).to_csv(tmp_path / "models" / "planted_truth.csv")
    s = truth_summary(tmp_path)
    assert "20.00% (t = 20.0, 47 test dates)" in s and "reaches 8.00%" in s
    assert "full-band fusion 5.00% (t = 3.2), 25% of the oracle and 62% of its informed" in s


def test_factor_truth_table_signs_the_planted_states(tiny_store: Store) -> None:
    """The planted states themselves, used as factors: z carries the informed part (rank corr
    1, planted direction +1) and pi the pressure part with the reversal sign (-1)."""
    from fbgpu.evaluate.truth import factor_truth_table

    market = load_market(tiny_store)
    rows = np.arange(5, len(market.dates) - 7)
    p = tiny_store.read_panel("synth_truth", [market.dates[i] for i in rows],
                              ["informed_state", "pressure"], symbols=list(market.symbols))
    values = np.stack([p["informed_state"], p["pressure"]], axis=2)
    pool = market.pool()[rows]
    t = factor_truth_table(tiny_store, market, rows, pool, values, ["z", "pi"], {"pi": -1}, {})
    assert t.loc["z", "corr with informed part"] == pytest.approx(1.0)
    assert t.loc["pi", "corr with pressure part"] == pytest.approx(-1.0)
    assert t.loc["z", "planted direction"] == 1 and t.loc["pi", "planted direction"] == -1
    assert list(t["paper direction"]) == [1, -1]
