"""The whole research chain on the synthetic market finds the planted structure (docs/synth.md).

synth ticks -> factor engine -> ``factors`` table -> panel -> ``run_evaluate``, on a market wide
enough for statistics but with few ticks per stock-day (150 stocks x 100 days, generated in a few
seconds). The ``tiny`` preset (24 stocks) cannot serve here: the standard error of a daily RankIC
over 24 stocks (~0.2) dwarfs the planted effect (RankIC of a few percent).

Documented structure (:mod:`fbgpu.data.synth`, "Planted structure"): the informed-flow state
``z`` gives 5-day returns a RankIC of about +0.08; the factors that see it all have sign +;
another list of factors is pure noise. The panel is smoothed over 3 days instead of 20 here:
``z`` has a half-life of ~6.6 days, and a 20-day mean dilutes it (a documented, configurable
choice, ``[evaluate.panel] window``). Daily evaluation dates with 5-day returns overlap, so
t-statistics use the standard error inflated by sqrt(5) (as tests/test_synth_signal.py does).
"""

from __future__ import annotations

import numpy as np
import pytest

from fbgpu.data.store import Store
from fbgpu.evaluate.composite import weighted_composite
from fbgpu.evaluate.run import run_evaluate
from fbgpu.evaluate.single import evaluate_factor
from fbgpu.evaluate.stats import row_corr
from fbgpu.panel.build import build_panel
from fbgpu.panel.market import PoolConfig, load_market
from fbgpu.panel.preprocess import PanelConfig

SIGNAL = ["early_active_buy_perc", "early_active_bigorder_ret", "early_corr_volume_ret",
          "early_bigorder_buy_perc", "concentration_diff", "bigorder_ret2"]
NOISE = ["corr_close_nextopen", "volume_perc3", "volume_perc4", "volume_perc5", "volume_perc6",
         "corr_volume_item", "corr_volume_amplitude", "bigorder_amt_perc", "early_kurt_order"]
CONFIG = {
    "factors": SIGNAL + NOISE,
    "directions": dict.fromkeys(SIGNAL + NOISE, 1),  # the synthetic market's signs
    "rebalance_every": 1,
    "periods_per_year": 250.0,
    "figures": False,
    "panel": {"window": 3, "min_valid": 2},
    "pool": {"min_listed_days": 20},
}


def _t(ic, overlap: int = 5) -> float:
    ic = np.asarray(ic, dtype=float)
    ic = ic[np.isfinite(ic)]
    return float(ic.mean() / (ic.std(ddof=1) * np.sqrt(overlap / len(ic))))


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory):
    from fbgpu.data.synth import PRESETS, generate_market
    from fbgpu.factors import run_factors

    cfg = PRESETS["small"].model_copy(update={"n_stocks": 150, "n_days": 100,
                                              "orders_per_day": 120})
    store = Store(tmp_path_factory.mktemp("wide_market"))
    generate_market(store, cfg, seed=0, progress=False)
    run_factors(store, backend="cpu", progress=False)
    result = run_evaluate(store, CONFIG, backend="cpu", progress=False)
    return store, result


def test_planted_state_has_the_documented_rank_ic(wide) -> None:
    store, _ = wide
    m = load_market(store)
    z = store.read_panel("synth_truth", m.dates, ["informed_state"],
                         symbols=list(m.symbols))["informed_state"]
    rep = evaluate_factor(z, m.forward_returns(1, 6), m.pool(PoolConfig(min_listed_days=20)), 1,
                          5, min_stocks=30)
    assert 0.03 < rep.ic.mean() < 0.2 and _t(rep.ic) > 3, (rep.ic.mean(), _t(rep.ic))
    gm = rep.mean_group_returns()
    assert gm[5] > gm[1]


def test_signal_factors_see_the_state_and_predict_returns(wide) -> None:
    """Each link with the power this market has.

    factor -> state: the daily cross-sectional correlation of a signal factor's panel with ``z``
    is strong (t of 5-30). factor -> return: a single factor's RankIC is about corr(factor, z)
    x RankIC(z) ~ 0.02-0.06, one to four standard errors here, so the test asks for the
    documented sign on most factors and on average, and leaves the size to the demo market.
    """
    store, res = wide
    m = load_market(store)
    z = store.read_panel("synth_truth", m.dates, ["informed_state"],
                         symbols=list(m.symbols))["informed_state"]
    panel = build_panel(store, m, SIGNAL, PanelConfig(window=3, min_valid=2),
                        PoolConfig(min_listed_days=20), "cpu")
    zu = np.where(np.asarray(panel.universe), z, np.nan)
    state_t = {n: _t(row_corr(panel.factor(n), zu, 30), overlap=1) for n in SIGNAL}
    assert sum(t > 3 for t in state_t.values()) >= 5, state_t
    ic_t = {n: _t(res.reports[n].ic) for n in SIGNAL}
    assert sum(t > 0 for t in ic_t.values()) >= 5, ic_t
    assert np.mean(list(ic_t.values())) > 1.0, ic_t


def test_noise_factors_are_indistinguishable_from_zero(wide) -> None:
    _, res = wide
    ts = {n: _t(res.reports[n].ic) for n in NOISE}
    assert all(abs(t) < 3 for t in ts.values()), ts
    # Jointly too: the mean |t| of pure noise is about 0.8.
    assert np.mean(np.abs(list(ts.values()))) < 1.6, ts


def test_composite_of_signal_factors(wide) -> None:
    store, _ = wide
    m = load_market(store)
    pool_cfg = PoolConfig(min_listed_days=20)
    panel = build_panel(store, m, SIGNAL, PanelConfig(window=3, min_valid=2), pool_cfg, "cpu")
    comp = weighted_composite(panel.values, None, panel.universe)
    rep = evaluate_factor(comp, m.forward_returns(1, 6), m.pool(pool_cfg), 1, 10, min_stocks=30)
    assert rep.ic.mean() > 0.02 and _t(rep.ic) > 2, (rep.ic.mean(), _t(rep.ic))
    gm = rep.mean_group_returns()
    assert gm[10] > gm[1], gm
