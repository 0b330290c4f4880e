"""The model factors on the tick-simulated synthetic market: the whole pipeline, store to exhibits.

Market: the ``small`` preset widened to 200 stocks x 300 weekdays (2022-01-03..2023-02-24), with
``informed_drift`` = 0.003 (3x the default; docs/synth.md, "Planted structure"), so that the
test period (170 daily scored dates, 34 independent 5-day returns) separates the models from the
composites by several standard errors. The
factors come from the order book through the factor engine, the models see only the store.

What the planted mechanisms give each model (docs/synth.md):

* HF: the informed flow ``z`` leaves a footprint in the tick factors, kinked in ``z`` and decaying
  with a 6.6-day half-life (shorter than the panel's 20-day smoothing), and several factors' signs
  differ from the report's directions. A GRU over 40 days of factors can weight recent days and
  learn the signs; the equal-weight composite of the same 27 factors (report directions, today's
  smoothed values) cannot.
* LF: the bars carry short-term reversal (the transient pressure, half-life 1.4 days: past 1-3
  day returns predict negatively) and medium-term momentum (informed drift: past 10-20 day
  returns predict positively). The GRU over daily/weekly/monthly bars can learn opposite signs at
  different lags; the equal-weight composite of its inputs mixes them.

Measured on market seeds 1-3 (training seed 0, settings below): see the assertions' comments;
on market seed 1 with training seeds 0 / 1 / 2: HF 0.077 / 0.069 / 0.088, LF 0.028 / 0.038 /
0.033 (t 2.2 / 2.7 / 2.3), fused 0.054 / 0.057 / 0.058.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from fbgpu.data.store import Store

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

#: Training settings: the spec's except one seed, fewer epochs, quarterly retrains, and daily
#: sample dates in batches of 1,000 (the spec: every 5 days, batches of 5,000) so that the small
#: market still gives each window enough samples and gradient steps; the LF signal in bars is
#: weak. Documented in docs/models.md ("Testing on the synthetic market").
SETTINGS = {"seeds": [0], "max_epochs": 30, "patience": 8, "min_train_dates": 16,
            "retrain_months": [1, 4, 7, 10], "sample_every": 1, "batch_size": 1000}
#: The evaluation return spans 5 days, so daily scored dates overlap: t-statistics count one
#: independent observation per 5 dates.
OVERLAP = 5


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.Series]:
    from fbgpu.data.synth import PRESETS, generate_market
    from fbgpu.factors.compute import run_factors
    from fbgpu.models import evaluate_models, run_train

    root = Path(tmp_path_factory.mktemp("model_market"))
    store = Store(root)
    cfg = PRESETS["small"].model_copy(update={"n_stocks": 200, "n_days": 300,
                                              "informed_drift": 0.003})
    generate_market(store, cfg, seed=1, progress=False)
    run_factors(store, backend="cpu", progress=False)
    run_train(store, ["hf", "lf"], SETTINGS, backend="cpu", progress=False, report=False)
    ev = evaluate_models(store, "cpu", write=False, figures=False)
    rows: dict[str, pd.Series] = {}
    for table in ev.tables.values():
        for label, row in table.iterrows():
            rows[str(label)] = row
    rows["_n_dates"] = pd.Series({"n": len(ev.dates)})
    return rows


def _ic(rows: dict[str, pd.Series], label: str) -> tuple[float, float]:
    """(RankIC mean, its t-statistic over the test dates, counting overlaps once)."""
    r = rows[label]
    n = int(rows["_n_dates"]["n"])
    return float(r["RankIC mean"]), float(r["IC_IR"]) * math.sqrt(n / OVERLAP)


def test_hf_model_finds_the_signal_and_beats_the_equal_weight_composite(trained) -> None:
    ic, t = _ic(trained, "HF deep-learning")
    ic_ew, _ = _ic(trained, "HF equal-weight")
    # Market seeds 1-3: RankIC 0.077 / 0.044 / 0.082 (t 7.0 / 3.4 / 6.6), equal-weight
    # -0.027 / -0.021 / -0.018.
    assert ic > 0.03 and t > 2.5, (ic, t)
    assert ic > ic_ew + 0.04, (ic, ic_ew)


def test_lf_model_finds_the_signal_and_beats_the_equal_weight_composite(trained) -> None:
    ic, t = _ic(trained, "LF multi-task")
    ic_ew, _ = _ic(trained, "LF equal-weight of inputs")
    # Market seeds 1-3: RankIC 0.028 / 0.037 / 0.039 (t 2.2 / 2.7 / 2.5), equal-weight of the
    # inputs -0.022 / -0.021 / -0.046.
    assert ic > 0.015 and t > 1.5, (ic, t)
    assert ic > ic_ew + 0.03, (ic, ic_ew)


def test_fusion_keeps_a_positive_ic(trained) -> None:
    ic, t = _ic(trained, "full-band fusion")
    # Market seeds 1-3: RankIC 0.054 / 0.049 / 0.059 (t 4.3 / 3.9 / 4.2).
    assert ic > 0.015 and t > 2, (ic, t)
