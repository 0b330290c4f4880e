"""Per-date IC and multi-task losses against numpy oracles; finite gradients when degenerate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fbgpu.models.losses import ic_loss, multitask_loss, per_date_ic


def _np_per_date(a: np.ndarray, b: np.ndarray, group: np.ndarray) -> list[float]:
    return [float(np.corrcoef(a[group == g], b[group == g])[0, 1]) for g in np.unique(group)]


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(3, 40), min_size=1, max_size=5),
    seed=st.integers(0, 2**31 - 1),
)
def test_ic_loss_is_minus_mean_numpy_pearson_per_date(sizes: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    group = np.repeat(np.arange(len(sizes)), sizes)
    perm = rng.permutation(len(group))  # samples of a date need not be contiguous
    group = group[perm]
    a = rng.standard_normal(len(group)) * rng.uniform(0.01, 10)
    b = 0.3 * a + rng.standard_normal(len(group))
    loss = ic_loss(torch.tensor(a), torch.tensor(b), torch.tensor(group), len(sizes))
    expected = -np.mean(_np_per_date(a, b, group))
    assert float(loss) == pytest.approx(expected, rel=1e-7, abs=1e-9)


def test_ic_loss_gradient_is_finite_for_constant_predictions() -> None:
    pred = torch.full((50,), 0.5, dtype=torch.float32, requires_grad=True)
    label = torch.randn(50)
    group = torch.arange(50) // 25
    loss = ic_loss(pred, label, group, 2)
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert pred.grad is not None and torch.isfinite(pred.grad).all()
    # The gradient points the predictions along the label (descending raises the IC).
    step = pred.detach() - 1e-6 * pred.grad
    assert float(ic_loss(step, label, group, 2)) < 0


def test_dates_below_min_count_carry_no_weight() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(23), rng.standard_normal(23)
    group = np.r_[np.zeros(20, int), np.ones(3, int)]
    loss = ic_loss(torch.tensor(a), torch.tensor(b), torch.tensor(group), 2, min_count=10)
    assert float(loss) == pytest.approx(-np.corrcoef(a[:20], b[:20])[0, 1])
    empty = ic_loss(torch.tensor(a[:3]), torch.tensor(b[:3]), torch.zeros(3, dtype=torch.long),
                    1, min_count=10)
    assert float(empty) == 0.0


def test_multitask_loss_matches_direct_computation() -> None:
    rng = np.random.default_rng(2)
    K, sizes = 3, [30, 45, 12]
    group = np.repeat(np.arange(3), sizes)
    y = rng.standard_normal(len(group))
    heads = np.stack([0.2 * (k + 1) * y + rng.standard_normal(len(group)) for k in range(K)])
    lam = 0.37
    per_date = []
    for g in range(3):
        m = group == g

        def c(u: np.ndarray, v: np.ndarray, m: np.ndarray = m) -> float:
            return float(np.corrcoef(u[m], v[m])[0, 1])

        val = -sum(c(heads[k], y) for k in range(K))
        val += lam * sum(c(heads[j], heads[k]) for j in range(K) for k in range(j + 1, K))
        per_date.append(val)
    loss = multitask_loss(torch.tensor(heads), torch.tensor(y), torch.tensor(group), 3, lam)
    assert float(loss) == pytest.approx(np.mean(per_date), rel=1e-9)
    # K = 1 is the IC loss whatever lambda.
    one = multitask_loss(torch.tensor(heads[:1]), torch.tensor(y), torch.tensor(group), 3, 5.0)
    assert float(one) == pytest.approx(float(ic_loss(torch.tensor(heads[0]), torch.tensor(y),
                                                     torch.tensor(group), 3)))


def test_per_date_ic_accumulates_sum_and_count() -> None:
    rng = np.random.default_rng(3)
    group = np.repeat([0, 1], [15, 18])
    a, b = rng.standard_normal(33), rng.standard_normal(33)
    s, n = per_date_ic(torch.tensor(a), torch.tensor(b), torch.tensor(group), 2)
    assert float(n) == 2
    assert float(s) == pytest.approx(sum(_np_per_date(a, b, group)))
