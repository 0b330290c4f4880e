"""End-to-end look-ahead probe: nothing at or before T may change when everything after T does.

One small planted store, and a copy in which every input after T is perturbed: prices, volumes,
ST flags, factor values and index weights after T, and on T+1 in particular a stock of T's pool
suspended and another opening at limit-up (the two facts that decide the report's T+1 pool).
Then every date-indexed stage is run on both stores and compared at T and before:

* the market quantities known at T (universe, scoring pool, style factors);
* the preprocessed factor panel (``build_panel``) and the composite scores (equal-weight and
  trailing-ICIR, as the evaluation step builds them);
* the model inputs at T (LF sequences normalised over the scoring pool, HF windows);
* the trained models' scores at T: ``hf_gru``, ``lf_mtl`` and ``fused`` (a tiny, deterministic
  training run on each store; windows retrained after T differ, the scores at T must not);
* the backtest's weights decided before T (the decision at T itself trades at T+1 and may use
  T+1's tradability: that is execution, not knowledge).

Factors computed from ticks have their own probe (``tests/test_factors_invariance.py``: a day's
factor values read only that day's partitions); the ingest probe is in
``tests/test_ingest_roundtrip.py``. Control: the perturbed stages do change after T (the test
can fail), and the report's T+1 pool at T does change (it is *not* known at T).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from planted import write_planted_store

from fbgpu.data.store import Store
from fbgpu.engine.backend import get_backend
from fbgpu.evaluate.composite import icir_weights, signed, weighted_composite
from fbgpu.evaluate.stats import rank_ic
from fbgpu.models import TrainConfig, load_model_inputs, read_scores, run_train
from fbgpu.models.datasets import LF_SOURCES, DeviceSamples
from fbgpu.models.device import torch_device
from fbgpu.panel.build import build_panel
from fbgpu.panel.market import load_market
from fbgpu.portfolio.backtest import run_backtest

D, S, F = 120, 24, 3
TRAIN = {
    "seeds": [0], "max_epochs": 2, "patience": 1, "hidden_size": 4, "hf_window": 10,
    "lf_daily_len": 10, "lf_weekly_len": 4, "lf_monthly_len": 3, "label_horizon": 5,
    "min_train_dates": 6, "min_date_samples": 5, "batch_size": 200,
    "retrain_months": list(range(1, 13)),
}
SCORES = ("hf_gru", "lf_mtl", "fused")


def _write(root: Path) -> Store:
    """Planted market: f0 sees a persistent state that drives next-day returns; 1% suspensions,
    one ST stock, three industries, and an equal-weight index of every stock."""
    return write_planted_store(root, D=D, S=S, F=F, seed=3, rho=0.9, shock=0.44,
                               factor_noise=1.5, suspension_rate=0.01, st_stock=5,
                               amount_from_volume=True, index_weights=True)


def _perturb_after(src: Store, dst: Path, T: int, stock_susp: int, stock_limit: int) -> Store:
    """Copy the inputs of ``src`` and change every one of them after day ``T``."""
    for table in ("daily", "factors", "index_weights", "securities"):
        shutil.copytree(src.root / table, dst / table)
    out = Store(dst)
    rng = np.random.default_rng(11)
    dates = src.dates("daily")
    for k, d in enumerate(dates[T + 1:], start=T + 1):
        cols = src.read("daily", d).to_pydict()
        n = len(cols["symbol"])
        scale = rng.uniform(0.8, 1.2, n)
        for c in ("open", "high", "low", "close", "vwap", "pre_close", "limit_up", "limit_down"):
            cols[c] = list(np.asarray(cols[c]) * scale)
        susp = rng.random(n) < 0.2
        if k == T + 1:  # the two facts that decide the report's pool at T
            susp[:] = False
            susp[stock_susp] = True
            cols["open"][stock_limit] = cols["limit_up"][stock_limit]
        cols["suspended"] = list(susp)
        cols["volume"] = list(np.where(susp, 0, rng.integers(1_000, 900_000, n)))
        cols["amount"] = list(np.asarray(cols["volume"]) * np.asarray(cols["vwap"]))
        cols["st"] = list(rng.random(n) < 0.2)
        out.write("daily", d, pa.table(cols))
        fac = src.read("factors", d).to_pydict()
        for c in fac:
            if c not in ("date", "symbol"):
                fac[c] = list(rng.standard_normal(n) * 3)
        out.write("factors", d, pa.table(fac))
        w = src.read("index_weights", d).to_pydict()
        w["weight"] = list(rng.dirichlet(np.ones(n)))
        out.write("index_weights", d, pa.table(w))
    return out


def _truncate_after(src: Store, dst: Path, T: int) -> Store:
    """Copy the inputs of ``src`` up to day ``T``: everything after T deleted."""
    out = Store(dst)
    shutil.copytree(src.root / "securities", dst / "securities")
    for table in ("daily", "factors", "index_weights"):
        for d in src.dates(table)[: T + 1]:
            shutil.copytree(src.partition_path(table, d).parent,
                            out.partition_path(table, d).parent)
    return out


def _stages(store: Store, T: int, rows: np.ndarray,
            models: bool = True) -> dict[str, np.ndarray]:
    """Every date-indexed output of ``store``, as ``[days, ...]`` arrays on the full calendar
    (``models=False``: the data stages only, without training and the backtest)."""
    be = get_backend("cpu")
    m = load_market(store)
    out: dict[str, np.ndarray] = {
        "universe": m.universe(), "scoring_pool": m.scoring_pool(), "pool": m.pool(),
        **{f"style_{k}": v for k, v in m.style_factors(10, 20).items()},
    }
    # composites as the evaluation step builds them: trailing-ICIR weights from ICs whose
    # 6-day return window has closed, over the universe of each date
    panel = build_panel(store, m, backend=be)
    out["panel"] = panel.values
    grid = rows[rows + 6 < len(m.dates)]
    sv = signed(panel.values[grid], np.ones(F))
    fwd, pool = m.forward_returns(1, 6)[grid], m.pool()[grid]
    ic = np.stack([rank_ic(sv[:, :, j], fwd, pool, min_obs=5) for j in range(F)], axis=1)
    weights = icir_weights(ic, grid, known_lag=6)
    for k, w in (("equal", None), ("icir", weights)):
        full = np.full((len(m.dates), S), np.nan)
        full[grid] = weighted_composite(sv, w, panel.universe[grid])
        out[f"composite_{k}"] = full
    cfg = TrainConfig(**TRAIN)
    inputs = load_model_inputs(store, cfg, be, ["hf", "lf"], market=m)
    data = DeviceSamples(inputs, cfg.model_copy(update={"lf_cache_bytes": 0}),
                         torch_device("cpu"), ("hf", *LF_SOURCES))
    lf = np.full((len(m.dates), S, 17, 6), np.nan)
    upto = min(T + 4, len(m.dates))  # 3 days after T: the control
    lf[:upto] = data.lf_features(np.arange(upto)).numpy()
    out["lf_inputs"] = lf
    if not models:
        return out
    run_train(store, ["hf", "lf"], cfg, backend="cpu", progress=False, report=False)
    dates, syms, cols = read_scores(store, list(SCORES))
    sym_pos = {s: i for i, s in enumerate(m.symbols)}
    pos = np.ix_([m.dates.index(d) for d in dates], [sym_pos[s] for s in syms])
    for c in SCORES:
        full = np.full((len(m.dates), S), np.nan)
        full[pos] = cols[c]
        out[c] = full
    res = run_backtest(store, "fused", "idx", (0.5,), progress=False)[0]
    wts = np.full((len(m.dates), S), np.nan)
    for d, (names, w) in res.runs[0].weights.items():
        wts[m.dates.index(d), [sym_pos[s] for s in names]] = w
    out["weights"] = wts
    return out


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory):
    base = _write(tmp_path_factory.mktemp("base"))
    m = load_market(base)
    rows = np.arange(0, D - 7, 5)
    T = int(rows[-5])  # a rebalance date with scored dates before and after it
    pool_T = np.flatnonzero(m.pool()[T] & m.scoring_pool()[T])
    changed = _perturb_after(base, tmp_path_factory.mktemp("changed"), T, int(pool_T[0]),
                             int(pool_T[1]))
    return T, _stages(base, T, rows), _stages(changed, T, rows), base, rows


def test_nothing_at_or_before_t_changes(probe) -> None:
    T, a, b, _, _ = probe
    assert np.isfinite(a["fused"][T]).sum() >= 10  # T is scored, by every model
    for name in a:
        if name in ("pool", "weights"):
            continue  # execution-side: below
        if name == "fused":
            # z-scored over the stored table, whose columns are the stocks scored on any date: a
            # stock first scored after T adds a NaN column, which moves the summation order of
            # the row sums (1 ulp); the values themselves are the same
            np.testing.assert_allclose(a[name][: T + 1], b[name][: T + 1], rtol=1e-13,
                                       atol=1e-13, err_msg=name)
            continue
        np.testing.assert_array_equal(a[name][: T + 1], b[name][: T + 1], err_msg=name)
    # the report's pool of T looks at T+1 (not known at T): identical only before T
    np.testing.assert_array_equal(a["pool"][:T], b["pool"][:T])
    assert not np.array_equal(a["pool"][T], b["pool"][T])
    # weights decided before T (traded by T) are unchanged
    np.testing.assert_array_equal(a["weights"][:T], b["weights"][:T])
    assert np.isfinite(a["weights"][:T]).any()


def test_the_probe_can_fail(probe) -> None:
    T, a, b, _, _ = probe
    for name in ("panel", "composite_icir", "lf_inputs",
                 "hf_gru", "lf_mtl", "fused", "weights", "scoring_pool"):
        assert not np.array_equal(a[name][T + 1:], b[name][T + 1:], equal_nan=True), name


def test_deleting_everything_after_t_changes_nothing_at_t(probe, tmp_path: Path) -> None:
    """The data stages on a store that ends at T equal those of the full store up to T: the
    scores' cross-section at T exists although T+1 does not (the report's pool is empty there)."""
    T, a, _, base, rows = probe
    cut = _stages(_truncate_after(base, tmp_path / "cut", T), T, rows, models=False)
    for name in ("universe", "scoring_pool", "panel", "lf_inputs",
                 *(k for k in cut if k.startswith("style_"))):
        np.testing.assert_array_equal(cut[name][: T + 1], a[name][: T + 1], err_msg=name)
    assert cut["scoring_pool"][T].sum() >= 10
    assert not cut["pool"][T].any() and a["pool"][T].any()  # the T+1 filter needs T+1
