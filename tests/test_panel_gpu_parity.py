"""The panel and evaluation code is xp-generic: on a real GPU, cupy results equal numpy's.

Skipped without a usable CUDA device (CI runs the numpy path everywhere else).
"""

from __future__ import annotations

import numpy as np
import pytest

from fbgpu.engine.backend import BackendError, get_backend
from fbgpu.evaluate.composite import weighted_composite
from fbgpu.evaluate.single import evaluate_factor
from fbgpu.evaluate.stats import average_ranks, quantile_bins, rank_ic
from fbgpu.panel.preprocess import PanelConfig, preprocess_panel

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cp():
    try:
        return get_backend("gpu").xp
    except BackendError as e:
        pytest.skip(f"no GPU: {e}")


def _inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    D, S, F, K = 45, 120, 4, 7
    raw = rng.standard_t(4, size=(D, S, F))
    raw[rng.random(raw.shape) < 0.1] = np.nan
    uni = rng.random((D, S)) > 0.1
    ind = rng.integers(-1, K, size=(D, S))
    cap = rng.normal(21, 1, size=(D, S))
    return raw, uni, ind, cap, K


def test_preprocess_parity(cp) -> None:
    raw, uni, ind, cap, K = _inputs()
    ref = preprocess_panel(raw, uni, ind, cap, PanelConfig(), n_industries=K)
    got = preprocess_panel(cp.asarray(raw), cp.asarray(uni), cp.asarray(ind), cp.asarray(cap),
                           PanelConfig(), n_industries=K)
    np.testing.assert_allclose(cp.asnumpy(got), ref, rtol=1e-9, atol=1e-9, equal_nan=True)


def test_evaluation_parity(cp) -> None:
    rng = np.random.default_rng(1)
    f = rng.normal(size=(30, 200))
    f[rng.random(f.shape) < 0.1] = np.nan
    r = 0.02 * rng.normal(size=(30, 200)) + 0.005 * np.nan_to_num(f)
    pool = rng.random((30, 200)) > 0.1
    np.testing.assert_allclose(cp.asnumpy(average_ranks(cp.asarray(f))), average_ranks(f),
                               equal_nan=True)
    np.testing.assert_array_equal(cp.asnumpy(quantile_bins(cp.asarray(f), 5)),
                                  quantile_bins(f, 5))
    np.testing.assert_allclose(cp.asnumpy(rank_ic(cp.asarray(f), cp.asarray(r))), rank_ic(f, r),
                               rtol=1e-12, equal_nan=True)
    a = evaluate_factor(f, r, pool, -1, 5)
    b = evaluate_factor(cp.asarray(f), cp.asarray(r), cp.asarray(pool), -1, 5)
    np.testing.assert_allclose(b.summary().to_numpy(), a.summary().to_numpy(), rtol=1e-10)
    v = rng.normal(size=(30, 200, 3))
    w = rng.normal(size=(30, 3))
    np.testing.assert_allclose(cp.asnumpy(weighted_composite(cp.asarray(v), cp.asarray(w))),
                               weighted_composite(v, w), rtol=1e-10, equal_nan=True)
