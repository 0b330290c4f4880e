"""Store-level training: ``run_train`` -> checkpoints and the ``scores`` table, fusion, exhibits,
resume, and the ``fbgpu train`` command.

The store is written directly (daily bars, raw factors, securities) from a small planted market,
so these tests do not depend on the tick simulator: factor f0 is a noisy view of a persistent
state that drives each stock's next-days return, the others are noise.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import typer
from planted import write_planted_store
from typer.testing import CliRunner

from fbgpu.data.store import Store, StoreError
from fbgpu.models import (
    FUSED_COLUMN,
    SCORE_COLUMNS,
    evaluate_models,
    fuse_scores,
    read_scores,
    run_train,
    write_scores,
)

CFG = {
    "seeds": [0], "max_epochs": 3, "patience": 2, "min_train_dates": 12, "hidden_size": 8,
    "retrain_months": [1, 3, 5, 7, 9, 11], "batch_size": 400, "min_date_samples": 5,
}


def _write_planted_store(root: Path, D: int = 200, S: int = 30, F: int = 4) -> Store:
    return write_planted_store(root, D=D, S=S, F=F, seed=7, rho=0.95, shock=0.31,
                               factor_noise=2.0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, object]:
    st = _write_planted_store(tmp_path_factory.mktemp("planted"))
    summary = run_train(st, "all", CFG, backend="cpu", progress=False)
    return st, summary


def test_run_train_writes_every_score_and_checkpoints(trained) -> None:
    st, summary = trained
    dates, _, cols = read_scores(st)
    assert set(cols) == {*SCORE_COLUMNS.values(), FUSED_COLUMN}
    assert summary.dates_written == len(dates) and len(summary.windows["hf"]) >= 2
    first_retrain = dt.date.fromisoformat(summary.windows["hf"][0].window)
    assert dates[0] >= first_retrain
    all_dates = st.dates("daily")
    pos = [all_dates.index(d) for d in dates]
    assert all(p % 5 == 0 for p in pos)  # the rebalance grid
    for c in SCORE_COLUMNS.values():
        v = cols[c]
        ok = np.isfinite(v)
        assert ok.sum(1).min() >= 10
        np.testing.assert_allclose(np.nanmean(v, 1), 0, atol=1e-6)  # ensemble of z-scores
    hf, lf = cols["hf_gru"], cols["lf_mtl"]
    np.testing.assert_allclose(cols[FUSED_COLUMN], fuse_scores(hf, lf, 1.0, 3.0), atol=1e-9)
    for kind, reps in summary.windows.items():
        for rep in reps:
            wdir = st.root / "models" / kind / rep.window
            assert (wdir / "seed0.pt").exists() and (wdir / "window.json").exists()
            last_label = dt.date.fromisoformat(rep.last_label_date)
            assert last_label < dt.date.fromisoformat(rep.window)
    assert "resumed" in summary.line()
    assert (summary.report_dir / "exhibit57_fusion.csv").exists()


def test_in_memory_scores_are_the_stored_scores(trained) -> None:
    """``summary.scores`` (the device-resident hand-off to the backtest) holds every column the
    step wrote, ``fused`` included, with the values the ``scores`` table holds."""
    st, summary = trained
    panel = summary.scores
    assert panel is not None and panel.backend.name == "cpu"
    dates, syms, cols = read_scores(st)
    assert set(panel.columns) == set(cols) == set(summary.columns)
    assert panel.dates == dates
    pos = np.array([list(panel.symbols).index(s) for s in syms])
    for name, host in panel.to_host().items():
        np.testing.assert_allclose(host[:, pos], cols[name], rtol=1e-12, atol=1e-12,
                                   equal_nan=True)
    row = panel.row_on(FUSED_COLUMN, dates[-1], syms)
    np.testing.assert_allclose(row, cols[FUSED_COLUMN][-1], equal_nan=True)
    assert np.isnan(panel.row_on(FUSED_COLUMN, dt.date(1990, 1, 1), syms)).all()
    # the same list object reordered in place (same id, same length) is aligned afresh
    order = list(syms)
    panel.row_on(FUSED_COLUMN, dates[-1], order)
    order.reverse()
    np.testing.assert_allclose(panel.row_on(FUSED_COLUMN, dates[-1], order),
                               cols[FUSED_COLUMN][-1][::-1], equal_nan=True)


def test_rerun_resumes_and_single_model_keeps_other_columns(trained, monkeypatch) -> None:
    st, _ = trained
    _, _, before = read_scores(st)
    from fbgpu.models import runner

    def boom(jobs, *a, **k):
        if jobs:
            raise AssertionError(f"a finished window was retrained: {jobs[0].describe()}")
        return {}

    monkeypatch.setattr(runner, "fit_all", boom)
    again = run_train(st, "hf", CFG, backend="cpu", progress=False, report=False)
    assert all(w.resumed for w in again.windows["hf"])
    _, _, after = read_scores(st)
    for c in before:
        np.testing.assert_allclose(after[c], before[c], equal_nan=True)


def test_fuse_scores_formula() -> None:
    hf = np.array([[1.0, 2.0, 3.0, np.nan], [0.0, 1.0, 0.0, 1.0]])
    lf = np.array([[3.0, 1.0, 2.0, 5.0], [1.0, 1.0, 2.0, np.nan]])
    z = lambda x: (x - x.mean()) / x.std()  # noqa: E731
    got = fuse_scores(hf, lf, 1.0, 3.0)
    np.testing.assert_allclose(got[0, :3], z(hf[0, :3]) + 3 * z(lf[0, :3]))
    np.testing.assert_allclose(got[1, :3], z(hf[1, :3]) + 3 * z(lf[1, :3]))
    assert np.isnan(got[0, 3]) and np.isnan(got[1, 3])


def test_write_scores_merges_columns(tmp_path) -> None:
    st = Store(tmp_path)
    d = [dt.date(2022, 1, 3), dt.date(2022, 1, 10)]
    syms = np.array(["A", "B", "C"], dtype=object)
    write_scores(st, d, syms, {"x": np.array([[1.0, 2.0, np.nan], [3.0, 4.0, 5.0]])})
    write_scores(st, d[1:], syms, {"y": np.array([[7.0, np.nan, 9.0]])})
    dates, s, cols = read_scores(st)
    assert dates == d and list(s) == ["A", "B", "C"]
    np.testing.assert_array_equal(cols["x"], [[1, 2, np.nan], [3, 4, 5]])
    np.testing.assert_array_equal(cols["y"], [[np.nan] * 3, [7, np.nan, 9]])
    # Rewriting a column on fewer dates drops it elsewhere (the latest run of a model wins).
    write_scores(st, d[1:], syms, {"x": np.array([[0.0, 0.0, 0.0]])})
    _, _, cols = read_scores(st)
    assert np.isnan(cols["x"][0]).all() and np.isfinite(cols["y"][1, 0])


def test_exhibits_have_the_report_layout(trained) -> None:
    st, _ = trained
    ev = evaluate_models(st, "cpu", figures=False)
    assert list(ev.tables["exhibit45_hf"].index) == ["HF deep-learning", "HF equal-weight",
                                                     "HF ICIR-weighted"]
    assert list(ev.tables["exhibit52_lf"].index) == ["LF multi-task", "daily only",
                                                     "LF equal-weight of 3", "LF no shared GRU",
                                                     "LF equal-weight of inputs"]
    assert ev.tables["exhibit57_fusion"].index[0] == "full-band fusion"
    assert list(ev.tables["exhibit57_fusion"].columns) == [
        "RankIC mean", "RankIC std", "IC_IR", "IC>0", "TOP ann. excess", "TOP IR",
        "TOP win rate", "TOP turnover"]
    sc = ev.style_correlation
    assert {"reversal", "size", "amount", "turnover", "beta", "HF deep-learning",
            "LF multi-task"} <= set(sc.columns)
    assert sc.loc["HF deep-learning", "HF deep-learning"] == pytest.approx(1.0)
    assert (ev.out_dir / "exhibit57_fusion.csv").exists() and (ev.out_dir / "index.json").exists()
    # The planted signal: the HF model's out-of-sample RankIC is positive.
    assert ev.tables["exhibit45_hf"].loc["HF deep-learning", "RankIC mean"] > 0


def test_bad_input_errors(tmp_path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        run_train(tmp_path / "nope", "hf", CFG, backend="cpu")
    with pytest.raises(ValueError, match="unknown model 'gru'"):
        run_train(tmp_path, "gru", CFG, backend="cpu")
    with pytest.raises(ValueError, match="learning_rate"):
        run_train(tmp_path, "hf", {"learning_rate": 0.1}, backend="cpu")


def test_cli_train(trained, tmp_path) -> None:
    from fbgpu.cli.train import register

    st, _ = trained
    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:  # keeps "train" a sub-command
        pass

    toml = tmp_path / "c.toml"
    toml.write_text("[train]\n" + "\n".join(
        f"{k} = {v!r}".replace("'", '"') for k, v in CFG.items()) + "\n")
    runner = CliRunner()
    ok = runner.invoke(app, ["train", "--store", str(st.root), "--model", "lf-daily",
                             "--backend", "cpu", "--config", str(toml), "--no-report"])
    assert ok.exit_code == 0, ok.output
    assert "trained lf-daily" in ok.output
    bad = runner.invoke(app, ["train", "--store", str(st.root), "--model", "gru"])
    assert bad.exit_code != 0 and "unknown model" in bad.output
    toml.write_text("[train]\nlr = -1\n")
    bad = runner.invoke(app, ["train", "--store", str(st.root), "--config", str(toml)])
    assert bad.exit_code != 0 and "lr" in bad.output


def test_models_use_the_evaluation_panel_and_pool_settings(tmp_path: Path) -> None:
    from fbgpu.engine.backend import get_backend
    from fbgpu.models import TrainConfig, load_model_inputs
    from fbgpu.models.runner import model_config_hash
    from fbgpu.panel.market import PoolConfig
    from fbgpu.panel.preprocess import PanelConfig

    st = _write_planted_store(tmp_path / "s", D=80, S=20, F=3)
    cfg, be = TrainConfig(**CFG), get_backend("cpu")
    base = load_model_inputs(st, cfg, be, ["hf"])
    other = load_model_inputs(st, cfg, be, ["hf"], panel_config=PanelConfig(window=5),
                              pool_config=PoolConfig(min_listed_days=1))
    # the panel settings reach the model inputs, the pool settings their provenance ...
    assert other.meta["preprocessing"]["pool"]["min_listed_days"] == 1
    assert not np.allclose(np.nan_to_num(base.hf_panel), np.nan_to_num(other.hf_panel))
    # ... and the checkpoints' hash, so a saved window is not reused with other settings
    h = [model_config_hash("hf", cfg, x.factor_names, x.meta["preprocessing"])
         for x in (base, other)]
    assert h[0] != h[1]


def test_score_panel_stays_on_the_standin_device() -> None:
    """torch scores -> ScorePanel -> fusion on the stand-in device (implicit host crossings
    raise): DLPack views, no upload, no download; the fused values are numpy's."""
    import torch

    from fbgpu.engine.standin import CROSSINGS, standin_backend
    from fbgpu.models import ScorePanel

    b = standin_backend()
    g = torch.Generator().manual_seed(0)
    hf = torch.randn(4, 6, generator=g, dtype=torch.float64)
    lf = torch.randn(4, 6, generator=g, dtype=torch.float64)
    lf[1, 2] = float("nan")
    dates = [dt.date(2022, 1, 3) + dt.timedelta(7 * i) for i in range(4)]
    before = dict(CROSSINGS)
    panel = ScorePanel.from_torch(dates, np.array([f"S{i}" for i in range(6)]),
                                  {"hf_gru": hf, "lf_mtl": lf}, b)
    fused = fuse_scores(panel.columns["hf_gru"], panel.columns["lf_mtl"], 1.0, 3.0)
    assert dict(CROSSINGS) == before
    assert type(fused).__name__ == "StandinArray"
    np.testing.assert_allclose(b.to_host(fused), fuse_scores(hf.numpy(), lf.numpy(), 1.0, 3.0),
                               equal_nan=True)
    assert np.isnan(b.to_host(fused)[1, 2])
