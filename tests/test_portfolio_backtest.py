"""The weekly index-enhancement backtest on small hand-made stores (known data, known answers)."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from fbgpu.data.store import Store
from fbgpu.portfolio.backtest import (
    BacktestConfig,
    BacktestError,
    Book,
    execute,
    run_backtest,
)

N_STOCKS, N_DAYS = 60, 32


def _weekdays(start: dt.date, n: int) -> list[dt.date]:
    out, d = [], start
    while len(out) < n:
        if d.weekday() < 5:
            out.append(d)
        d += dt.timedelta(days=1)
    return out


def make_store(root, seed: int = 0, constant: bool = False) -> Store:
    """A small market: random-walk prices (or constant ones), a split, suspensions, limit-up and
    limit-down opens, two cap-weighted indices and a random score every day."""
    rng = np.random.default_rng(seed)
    store = Store(root)
    dates = _weekdays(dt.date(2023, 1, 2), N_DAYS)
    symbols = [f"{600000 + i:06d}.SH" for i in range(N_STOCKS)]
    industry = [f"ind{i % 5}" for i in range(N_STOCKS)]
    shares = rng.lognormal(20, 1, N_STOCKS)
    close = rng.uniform(5, 50, N_STOCKS)
    adj = np.ones(N_STOCKS)
    for t, d in enumerate(dates):
        pre = close.copy()
        if constant:
            ret = np.zeros(N_STOCKS)
        else:
            ret = np.clip(rng.normal(0.0005, 0.02, N_STOCKS), -0.095, 0.095)
        susp = np.zeros(N_STOCKS, dtype=bool) if constant else rng.random(N_STOCKS) < 0.03
        ret[susp] = 0
        close = pre * (1 + ret)
        vwap = close if constant else close * (1 + rng.normal(0, 0.003, N_STOCKS))
        opn = pre.copy() if constant else pre * (1 + rng.normal(0, 0.01, N_STOCKS))
        up, down = np.round(pre * 1.1, 2), np.round(pre * 0.9, 2)
        if not constant:
            at_up = rng.random(N_STOCKS) < 0.03
            at_down = rng.random(N_STOCKS) < 0.03
            opn[at_up] = up[at_up]
            opn[at_down] = down[at_down]
        vwap = np.where(susp, pre, vwap)
        opn = np.where(susp, pre, opn)
        if not constant and t == 10:  # a 2-for-1 split of stock 0: price halves, adj doubles
            close[0] /= 2
            vwap[0] = close[0]
            adj[0] *= 2
        store.write("daily", d, pa.table({
            "date": [d] * N_STOCKS, "symbol": symbols,
            "open": opn, "high": np.maximum(opn, close), "low": np.minimum(opn, close),
            "close": close, "pre_close": pre, "vwap": vwap,
            "volume": np.where(susp, 0, 1000).astype(np.int64), "amount": vwap * 1000,
            "adj_factor": adj.copy(), "limit_up": up, "limit_down": down,
            "suspended": susp, "st": np.zeros(N_STOCKS, dtype=bool),
            "float_cap": shares * close, "industry": industry,
        }))
        cap = shares * close
        rank = np.argsort(-cap)
        rows = []
        for name, members in (("idx", rank[:30]), ("idx2", rank[20:50])):
            w = cap[members] / cap[members].sum()
            rows += [(name, symbols[i], float(x)) for i, x in zip(members, w, strict=True)]
        store.write("index_weights", d, pa.table({
            "date": [d] * len(rows), "index": [r[0] for r in rows],
            "symbol": [r[1] for r in rows], "weight": [r[2] for r in rows]}))
        score = np.linspace(-1, 1, N_STOCKS) if constant else rng.standard_normal(N_STOCKS)
        store.write("scores", d, pa.table({"date": [d] * N_STOCKS, "symbol": symbols,
                                           "alpha": score}))
    return store


@pytest.fixture(scope="module")
def market_store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("pf_market"))


@pytest.fixture(scope="module")
def result(market_store):
    return run_backtest(market_store, "alpha", "all", (0.3, 0.5), progress=False)


def test_outputs_weights_and_statuses(market_store, result):
    assert [r.index for r in result] == ["idx", "idx2"]
    out = market_store.report_dir / "backtest"
    for ix in ("idx", "idx2"):
        for stem in ("performance", "yearly", "daily_returns", "rebalances"):
            assert (out / f"{stem}_{ix}.csv").exists() and (out / f"{stem}_{ix}.json").exists()
        assert (out / f"cumulative_excess_{ix}.png").stat().st_size > 1000
        perf = pd.read_csv(out / f"performance_{ix}.csv")
        assert list(perf["portfolio"]) == ["turnover=30%", "turnover=50%", ix]
    index = json.loads((out / "index.json").read_text())
    assert all((out / it["file"]).exists() for it in index["items"])
    res = result[0]
    assert len(res.decision_dates) == len(range(0, N_DAYS - 1, 5))
    for d in res.decision_dates:
        w = market_store.read("weights", d).to_pandas()
        sums = w.groupby("portfolio", observed=True)["weight"].sum()
        assert set(sums.index) == {"idx_to30", "idx_to50", "idx2_to30", "idx2_to50"}
        np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=1e-6)
    for run in res.runs:
        assert all(row["status"] in ("optimal", "relaxed") for row in run.log)
        assert all(row["max_violation"] <= 1e-6 for row in run.log)
        capped = [row["planned_turnover"] for row in run.log[1:]
                  if row["status"] == "optimal"]
        assert max(capped) <= run.cap + 1e-6
        assert len(run.returns) == len(res.dates) == len(res.benchmark)


def test_benchmark_is_the_index_weighted_return(market_store, result):
    res = result[0]
    daily = {d: market_store.read("daily", d).to_pandas().set_index("symbol")
             for d in market_store.dates("daily")}
    dates = market_store.dates("daily")
    expected = []
    for d0, d1 in itertools.pairwise(dates):
        if d1 not in res.dates:
            continue
        w = market_store.read("index_weights", d0).to_pandas()
        w = w[w["index"] == "idx"].set_index("symbol")["weight"]
        p0 = daily[d0]["close"] * daily[d0]["adj_factor"]
        p1 = daily[d1]["close"] * daily[d1]["adj_factor"]
        expected.append(float((w * (p1 / p0 - 1)).sum() / w.sum()))
    np.testing.assert_allclose(res.benchmark, expected, rtol=0, atol=1e-12)


def test_no_look_ahead(tmp_path, market_store, result):
    """Perturb every input after the trade day of the 3rd decision: the weights decided up to
    that decision and the returns up to its date do not move."""
    res = result[0]
    k = 2
    decision = res.decision_dates[k]
    dates = market_store.dates("daily")
    trade_day = dates[dates.index(decision) + 1]
    other = Store(tmp_path / "perturbed")
    for table in ("daily", "index_weights", "scores"):
        shutil.copytree(market_store.root / table, other.root / table)
    rng = np.random.default_rng(99)
    for d in dates:
        if d > decision:  # scores of later dates
            t = other.read("scores", d)
            other.write("scores", d, t.set_column(2, "alpha", pa.array(
                rng.standard_normal(t.num_rows))))
        if d > trade_day:  # every market input after the trade day
            t = other.read("daily", d)
            for col in ("close", "vwap", "open", "float_cap"):
                i = t.column_names.index(col)
                t = t.set_column(i, col, pa.array(t.column(col).to_numpy() * rng.uniform(
                    0.9, 1.1, t.num_rows)))
            other.write("daily", d, t)
            w = other.read("index_weights", d)
            other.write("index_weights", d, w.set_column(3, "weight", pa.array(
                rng.uniform(0, 1, w.num_rows))))
    res2 = run_backtest(other, "alpha", "idx", (0.3, 0.5), progress=False)[0]
    for a, b in zip(res.runs, res2.runs, strict=True):
        for d in res.decision_dates[: k + 1]:
            np.testing.assert_array_equal(a.weights[d][0], b.weights[d][0])
            np.testing.assert_allclose(a.weights[d][1], b.weights[d][1], atol=1e-12)
        upto = res.dates.index(decision) + 1
        np.testing.assert_allclose(a.returns[:upto], b.returns[:upto], atol=1e-14)
        later = res.decision_dates[k + 1]
        assert not np.allclose(a.weights[later][1], b.weights[later][1])  # the test can fail


def test_a_portfolio_that_does_not_trade_pays_nothing(tmp_path):
    """Constant prices, weights and scores: after the initial build (which pays c/(1+c)), every
    rebalance keeps the portfolio, so the NAV never moves again."""
    store = make_store(tmp_path, constant=True)
    c = 0.002
    res = run_backtest(store, "alpha", "idx", (0.3,), progress=False)[0]
    nav = np.cumprod(1 + np.array(res.runs[0].returns))
    np.testing.assert_allclose(nav, 1 / (1 + c), rtol=0, atol=1e-9)
    assert max(res.runs[0].turnovers) < 1e-6  # the solver's tolerance; a real trade is >= 1e-3
    np.testing.assert_allclose(res.benchmark, 0.0, atol=1e-15)


def test_round_trip_costs_0_4_percent():
    n = 10
    book = Book(np.zeros(n))
    ok = np.ones(n, dtype=bool)
    target = np.full(n, 0.1)
    turnover, cost_in = execute(book, target, ok, ok, 0.002)
    assert cost_in == pytest.approx(0.002 / 1.002, abs=1e-15)  # 0.2% of the bought value
    assert turnover == pytest.approx(1 / 1.002)
    nav_in = book.nav
    turnover, cost_hold = execute(book, book.weights.copy(), ok, ok, 0.002)
    assert cost_hold == 0.0 and turnover == 0.0 and book.nav == nav_in
    turnover, cost_out = execute(book, np.zeros(n), ok, ok, 0.002)
    assert cost_out == pytest.approx(0.002)  # 0.2% of the sold value
    assert book.cash == 1.0
    total_paid = (1 - book.nav)  # both legs: 0.4% of the traded value, to first order
    assert total_paid == pytest.approx(0.004, abs=1e-5)


def test_execution_respects_tradability():
    book = Book(np.array([0.3, 0.3, 0.2, 0.2]), cash=0.0)
    target = np.array([0.1, 0.5, 0.1, 0.3])
    can_buy = np.array([True, False, True, True])  # stock 1 is limit-up: cannot be bought
    can_sell = np.array([False, True, True, True])  # stock 0 is limit-down: cannot be sold
    execute(book, target, can_buy, can_sell, 0.0)
    np.testing.assert_allclose(book.weights, [0.3, 0.3, 0.1, 0.3], rtol=1e-12)
    # the 0.2 that cannot go into stock 1 is spread pro rata over the free holdings
    book = Book(np.array([0.3, 0.3, 0.2, 0.2]), cash=0.0)
    execute(book, target, can_buy, np.ones(4, dtype=bool), 0.0)
    np.testing.assert_allclose(book.weights, [0.14, 0.3, 0.14, 0.42], rtol=1e-12)
    assert book.cash == pytest.approx(0.0, abs=1e-15)


def test_unsellable_holdings_never_lever_the_book():
    # stocks 0 and 1 cannot be sold; the target buys more of 0 and sells all of 1: the blocked
    # sale must not leave the book holding 130% (which would book a gain from nothing)
    book = Book(np.array([0.3, 0.5, 0.2]), cash=0.0)
    can_sell = np.array([False, False, True])
    execute(book, np.array([0.8, 0.0, 0.2]), np.ones(3, dtype=bool), can_sell, 0.0)
    assert book.weights.sum() == pytest.approx(1.0, abs=1e-12) and book.cash == 0.0
    assert book.weights[1] == pytest.approx(0.5)  # unsellable: kept at its held weight
    assert book.weights[0] >= 0.3 - 1e-12 and (book.weights >= 0).all()
    np.testing.assert_allclose(book.weights, [0.5, 0.5, 0.0], atol=1e-12)


def test_score_lookup_and_errors(tmp_path, market_store):
    store = Store(tmp_path / "s")
    for table in ("daily", "index_weights"):
        shutil.copytree(market_store.root / table, store.root / table)
    with pytest.raises(BacktestError, match="neither the scores nor the factors"):
        run_backtest(store, "alpha", "idx", progress=False)
    # a raw factor from the factors table is accepted
    for d in market_store.dates("scores"):
        t = market_store.read("scores", d).rename_columns(["date", "symbol", "my_factor"])
        store.write("factors", d, t)
    res = run_backtest(store, "my_factor", "idx", (0.4,), progress=False)
    assert res[0].runs[0].name == "idx_to40"
    # "-name" negates a column: a smaller-is-better factor gives the same portfolio as its mirror
    for d in market_store.dates("scores"):
        t = market_store.read("scores", d)
        store.write("factors", d, pa.table({
            "date": t.column("date"), "symbol": t.column("symbol"),
            "my_factor": t.column("alpha"),
            "low_is_good": pc.negate(t.column("alpha"))}))
    flipped = run_backtest(store, "-low_is_good", "idx", (0.4,), progress=False)
    assert flipped[0].runs[0].returns == res[0].runs[0].returns
    assert flipped[0].runs[0].weights.keys() == res[0].runs[0].weights.keys()
    for d, (_syms, w) in res[0].runs[0].weights.items():
        np.testing.assert_array_equal(flipped[0].runs[0].weights[d][1], w)
    unflipped = run_backtest(store, "low_is_good", "idx", (0.4,), progress=False)
    assert unflipped[0].runs[0].returns != res[0].runs[0].returns
    with pytest.raises(BacktestError, match="not in index_weights"):
        run_backtest(store, "my_factor", "csi300", progress=False)
    with pytest.raises(ValueError, match="extra"):
        BacktestConfig.model_validate({"rebalance_evry": 5})


def test_cli_on_the_synthetic_market(tiny_store, tmp_path):
    """``fbgpu backtest`` end to end on the tiny synthetic market, with a score made from the
    generator's latent drift plus noise."""
    import typer
    from typer.testing import CliRunner

    from fbgpu.cli.backtest import register

    store = Store(tmp_path / "synth")
    for table in ("daily", "index_weights"):
        shutil.copytree(tiny_store.root / table, store.root / table)
    rng = np.random.default_rng(0)
    for d in tiny_store.dates("synth_truth"):
        t = tiny_store.read("synth_truth", d, ["date", "symbol", "expected_drift_next"])
        v = t.column("expected_drift_next").to_numpy()
        store.write("scores", d, pa.table({"date": t.column("date"), "symbol": t.column("symbol"),
                                           "fused": v + rng.normal(0, v.std() + 1e-12, len(v))}))
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # a second command keeps "backtest" a sub-command
    out = CliRunner().invoke(app, ["backtest", "--store", str(store.root), "--index", "all",
                                   "--turnover", "0.3,0.5"])
    assert out.exit_code == 0, out.output
    assert "IR" in out.output
    perf = pd.read_csv(store.report_dir / "backtest" / "performance_csi500.csv")
    assert len(perf) == 3 and np.isfinite(perf["information ratio"].iloc[:2]).all()
    bad = CliRunner().invoke(app, ["backtest", "--store", str(store.root), "--turnover", "x"])
    assert bad.exit_code != 0 and "comma-separated" in bad.output


def _in_memory_scores(store: Store, backend) -> object:
    """The store's ``alpha`` scores as a ScorePanel on ``backend``'s device, stock axis reversed
    (the hand-off must align by symbol, not by position)."""
    from fbgpu.models import ScorePanel, read_scores

    dates, syms, cols = read_scores(store, ["alpha"])
    return ScorePanel(dates, syms[::-1].copy(),
                      {"alpha": backend.asarray(np.ascontiguousarray(cols["alpha"][:, ::-1]))},
                      backend)


@pytest.mark.parametrize("negate", [False, True])
def test_in_memory_scores_give_the_store_route_portfolios(tmp_path, market_store, result,
                                                          negate):
    """``run_backtest(scores=ScorePanel)`` (the demo's train -> backtest hand-off) builds the
    portfolios the store route builds, on a store whose ``scores`` table is gone (so nothing is
    read back); a ``-name`` score negates the in-memory column as it does the stored one."""
    from fbgpu.engine.backend import get_backend

    panel = _in_memory_scores(market_store, get_backend("cpu"))
    root = tmp_path / "store"
    shutil.copytree(market_store.root, root)
    shutil.rmtree(root / "scores")
    name = "-alpha" if negate else "alpha"
    ref = result if not negate else run_backtest(market_store, name, "all", (0.3, 0.5),
                                                 progress=False)
    got = run_backtest(Store(root), name, "all", (0.3, 0.5), progress=False, scores=panel)
    for a, b in zip(got, ref, strict=True):
        assert a.decision_dates == b.decision_dates
        for ra, rb in zip(a.runs, b.runs, strict=True):
            np.testing.assert_allclose(ra.returns, rb.returns, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(ra.turnovers, rb.turnovers, rtol=1e-9, atol=1e-12)


def test_in_memory_scores_cross_to_the_host_once_per_decision(tmp_path, market_store, result):
    """On the stand-in device (implicit host crossings raise) the backtest reads the scores
    through the one sanctioned crossing: one date's vector per decision date and index."""
    from fbgpu.engine.standin import CROSSINGS, standin_backend

    panel = _in_memory_scores(market_store, standin_backend())
    root = tmp_path / "store"
    shutil.copytree(market_store.root, root)
    shutil.rmtree(root / "scores")
    before = CROSSINGS["to_host"]
    got = run_backtest(Store(root), "alpha", "all", (0.3, 0.5), progress=False, scores=panel)
    n_decisions = sum(len(r.decision_dates) for r in got)
    assert CROSSINGS["to_host"] - before == n_decisions
    np.testing.assert_allclose(got[0].runs[0].returns, result[0].runs[0].returns, rtol=1e-9,
                               atol=1e-12)
