"""run_evaluate / ``fbgpu evaluate`` end to end on a small store with a planted signal."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import typer
from typer.testing import CliRunner

from fbgpu.data.store import Store, StoreError
from fbgpu.evaluate.run import EvaluateConfig, EvaluateConfigError, run_evaluate
from fbgpu.panel.build import read_panel

D, S, K = 110, 70, 6
DIRECTIONS = {"informed": 1, "contrarian": -1, "noise": 1}


def _write_store(root, seed: int = 0) -> Store:
    """Daily bars whose next returns load on a slow latent state; factors observe the state."""
    rng = np.random.default_rng(seed)
    dates = [d.date() for d in pd.bdate_range("2022-01-03", periods=D)]
    syms = [f"{i:06d}.SZ" for i in range(S)]
    z = np.zeros((D, S))
    z[0] = rng.normal(size=S)
    for t in range(1, D):
        z[t] = 0.95 * z[t - 1] + np.sqrt(1 - 0.95**2) * rng.normal(size=S)
    ret = np.zeros((D, S))
    ret[1:] = 0.004 * z[:-1] + 0.015 * rng.normal(size=(D - 1, S))
    close = 10 * np.exp(np.cumsum(ret, axis=0))
    vwap = close * np.exp(0.002 * rng.normal(size=(D, S)))
    pre = np.vstack([close[:1], close[:-1]])
    shares = rng.uniform(1e7, 1e9, size=S)
    industry = np.array([f"ind{i % K}" for i in range(S)])
    suspended = rng.random((D, S)) < 0.01
    st = np.zeros((D, S), bool)
    st[:, 7] = True
    store = Store(root)
    for t, d in enumerate(dates):
        vol = np.where(suspended[t], 0, rng.integers(1e4, 1e6, size=S))
        store.write("daily", d, pa.table({
            "date": [d] * S, "symbol": syms, "open": pre[t], "high": close[t] * 1.01,
            "low": close[t] * 0.99, "close": close[t], "pre_close": pre[t], "vwap": vwap[t],
            "volume": vol, "amount": vol * vwap[t], "adj_factor": np.ones(S),
            "limit_up": np.round(pre[t] * 1.1, 2), "limit_down": np.round(pre[t] * 0.9, 2),
            "suspended": suspended[t], "st": st[t], "float_cap": close[t] * shares,
            "industry": industry,
        }))
        store.write("factors", d, pa.table({
            "date": [d] * S, "symbol": syms,
            "informed": z[t] + 0.8 * rng.normal(size=S),
            "contrarian": -z[t] + 0.8 * rng.normal(size=S) + 1e3,  # far from zero on purpose
            "noise": rng.standard_t(3, size=S),
        }))
    store.write("securities", None, pa.table({
        "symbol": syms, "name": syms, "board": ["main"] * S,
        "list_date": [dt.date(2015, 1, 5)] * S,
        "delist_date": pa.array([None] * S, pa.date32()), "industry": industry.tolist(),
        "float_shares": shares}))
    return store


@pytest.fixture(scope="module")
def planted_store(tmp_path_factory) -> Store:
    return _write_store(tmp_path_factory.mktemp("evalstore") / "store")


@pytest.fixture(scope="module")
def result(planted_store):
    return run_evaluate(planted_store, {"directions": DIRECTIONS}, backend="cpu", progress=False)


def test_planted_signal_found_and_noise_not(result) -> None:
    s = result.summary
    assert list(s.index) == ["informed", "contrarian", "noise"]
    assert (s.loc[["informed", "contrarian"], "direction"] == [1, -1]).all()
    n = len(result.reports["informed"].ic.dropna())
    assert n >= 15
    for name in ("informed", "contrarian"):
        assert s.loc[name, "RankIC mean"] > 0.05
        assert s.loc[name, "IC_IR"] > 0.5
        assert s.loc[name, "TOP ann. excess"] > 0
    t_noise = s.loc["noise", "IC_IR"] * np.sqrt(n)
    assert abs(t_noise) < 3.5
    c = result.composites
    assert list(c.index) == ["composite_equal", "composite_icir"]
    assert c.loc["composite_equal", "RankIC mean"] > 0.05
    fc = result.factor_correlation
    assert fc.loc["informed", "contrarian"] > 0.3  # both signed toward the same state
    assert abs(fc.loc["informed", "noise"]) < 0.2
    assert set(result.style_correlation.columns) == {"reversal", "size", "amount", "turnover",
                                                     "beta"}


def test_outputs_written(result) -> None:
    out = result.out_dir
    for stem in ("single_factor", "composites", "rank_ic", "group_nav", "factor_correlation",
                 "style_correlation", "icir_weights", "group_mean_returns"):
        assert (out / f"{stem}.csv").exists() and (out / f"{stem}.json").exists()
    table = pd.read_csv(out / "single_factor.csv", index_col=0)
    assert list(table.columns[1:]) == ["RankIC mean", "RankIC std", "IC_IR", "IC>0",
                                       "TOP ann. excess", "TOP IR", "TOP win rate",
                                       "TOP turnover"]
    index = json.loads((out / "index.json").read_text())
    for item in index["items"]:
        assert (out / item["file"]).exists(), item
    assert (out / "nav_informed.png").read_bytes()[:4] == b"\x89PNG"
    w = pd.read_csv(out / "icir_weights.csv", index_col=0)
    assert w.iloc[:6].isna().all().all() and w.iloc[-1].notna().all()


def test_panel_table_round_trip_and_rerun_skips(planted_store, result) -> None:
    assert result.panel_partitions_written == D
    p = read_panel(planted_store, ["informed", "contrarian", "noise"])
    assert len(p.dates) == D and p.values.shape[2] == 3
    T = 60
    row = p.values[T, :, 0]
    ok = np.isfinite(row)
    assert ok.sum() > 50 and abs(row[ok].mean()) < 1e-9 and abs(row[ok].std() - 1) < 1e-9
    again = run_evaluate(planted_store, {"directions": DIRECTIONS, "figures": False},
                         backend="cpu", progress=False)
    assert again.panel_partitions_written == 0
    pd.testing.assert_frame_equal(again.summary, result.summary)


def test_config_validation(tmp_path) -> None:
    with pytest.raises(EvaluateConfigError, match="unknown"):
        EvaluateConfig.from_dict({"grups": 5})
    with pytest.raises(EvaluateConfigError, match=r"evaluate\.panel"):
        EvaluateConfig.from_dict({"panel": {"windw": 3}})
    with pytest.raises(EvaluateConfigError, match="directions"):
        EvaluateConfig.from_dict({"directions": {"x": 2}})
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text("[evaluate]\ngroups = 3\n[evaluate.pool]\nmin_listed_days = 5\n")
    cfg = EvaluateConfig.from_toml(cfg_path)
    assert cfg.groups == 3 and cfg.pool.min_listed_days == 5 and cfg.panel.window == 20
    with pytest.raises(StoreError, match="does not exist"):
        run_evaluate(tmp_path / "nope")
    Store(tmp_path / "empty").root.mkdir()
    with pytest.raises(StoreError, match="daily"):
        run_evaluate(tmp_path / "empty", backend="cpu")


def _app() -> typer.Typer:
    from fbgpu.cli.evaluate import register

    app = typer.Typer()
    register(app)

    @app.command("noop")
    def _noop() -> None:  # a second command keeps typer's sub-command layout
        pass

    return app


def test_cli(planted_store, tmp_path) -> None:
    runner = CliRunner()
    app = _app()
    res = runner.invoke(app, ["evaluate", "--store", str(planted_store.root), "--backend", "cpu",
                              "--factors", "informed,noise", "--no-figures"])
    assert res.exit_code == 0, res.output
    assert "evaluated 2 factors" in res.output
    res = runner.invoke(app, ["evaluate", "--store", str(tmp_path / "missing")])
    assert res.exit_code != 0 and "does not exist" in res.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[evaluate]\nbogus = 1\n")
    res = runner.invoke(app, ["evaluate", "--store", str(planted_store.root), "--config",
                              str(bad), "--backend", "cpu"])
    assert res.exit_code != 0 and "bogus" in res.output
    res = runner.invoke(app, ["evaluate", "--store", str(planted_store.root), "--backend", "cpu",
                              "--factors", "nosuch", "--no-figures"])
    # a usage error naming the factor, before the table is read (click's own runner exits 2
    # for it; `fbgpu` maps usage errors to 1: tests/test_cli_exit_codes.py)
    assert res.exit_code != 0 and "unknown factor(s) 'nosuch'" in res.output
    assert "Invalid value" in res.output


def test_store_level_lookahead_probe(planted_store, tmp_path) -> None:
    """Rewrite every daily and factors partition after T: nothing at or before T moves."""
    import shutil

    from fbgpu.evaluate.composite import icir_weights
    from fbgpu.evaluate.stats import rank_ic
    from fbgpu.panel.build import build_panel
    from fbgpu.panel.market import load_market

    copy = Store(tmp_path / "copy")
    shutil.copytree(planted_store.root, copy.root, ignore=shutil.ignore_patterns("reports"))
    dates = copy.dates("daily")
    T = 70
    rng = np.random.default_rng(1)
    for d in dates[T + 1:]:
        for table in ("daily", "factors"):
            t = copy.read(table, d)
            cols = {c: t.column(c) for c in t.column_names}
            for c in ("vwap", "close", "open", "informed", "noise", "float_cap"):
                if c in cols:
                    cols[c] = pa.array(cols[c].to_numpy() * rng.uniform(0.5, 1.5, t.num_rows))
            if "st" in cols:
                cols["st"] = pa.array(rng.random(t.num_rows) < 0.5)
            copy.write(table, d, pa.table(cols))

    def chain(store: Store):
        m = load_market(store)
        p = build_panel(store, m, ["informed", "contrarian", "noise"], backend="cpu")
        rows = np.arange(0, len(m.dates) - 6, 5)
        fwd = m.forward_returns(1, 6)[rows]
        ic = np.stack([rank_ic(p.values[rows, :, j], fwd, m.pool()[rows]) for j in range(3)], 1)
        return p.values, m.pool(), icir_weights(ic, rows, 6), rows

    v0, pool0, w0, rows = chain(planted_store)
    v1, pool1, w1, _ = chain(copy)
    np.testing.assert_array_equal(v1[: T + 1], v0[: T + 1])
    np.testing.assert_array_equal(pool1[:T], pool0[:T])  # the pool looks at T+1's open
    np.testing.assert_array_equal(w1[rows <= T], w0[rows <= T])
    assert not np.array_equal(v1[T + 1:], v0[T + 1:], equal_nan=True)


def test_icir_weights_use_history_before_start(planted_store, result) -> None:
    # restricting the evaluated dates must not throw away ICs that were known before `start`
    dates = result.icir_weights.index
    start = dates[len(dates) // 2]
    late = run_evaluate(planted_store, {"directions": DIRECTIONS, "figures": False,
                                        "write_panel": False, "start": str(start.date())},
                        backend="cpu", progress=False)
    assert late.icir_weights.index[0] == start
    assert late.icir_weights.iloc[0].notna().all()
    pd.testing.assert_frame_equal(late.icir_weights, result.icir_weights.loc[start:],
                                  check_freq=False)
