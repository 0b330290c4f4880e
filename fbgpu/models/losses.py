"""Per-date correlation losses for cross-sectional models (torch, any device).

A batch holds the samples of a few whole dates; ``group[i]`` is the batch-local date index
(0..G-1) of sample ``i``. Correlations are computed per date and then averaged over the dates of
the batch, so the loss is the negative mean cross-sectional IC, as in the report.

Per date ``g`` with ``n_g`` samples (population moments)::

    cov_g  = mean_i (a_i - mean a)(b_i - mean b)
    corr_g = cov_g / sqrt(var_g(a) * var_g(b) + eps)

``eps`` (1e-12) keeps the value and its gradient finite when one side is constant (a freshly
initialised network or a dead head): then ``cov_g = 0`` and the gradient is
``(b_i - mean b) / (n_g sqrt(eps))``-scaled, finite, pushing predictions apart. With unit-variance
labels and prediction variances above ~1e-8 the relative bias of ``eps`` is below 1e-4.

Dates with fewer than ``min_count`` samples get weight 0 in the average (their correlation is
noise); a batch with no such date returns a zero loss that still depends on the inputs, so
``backward`` works.

Group sums are one-hot matrix products rather than scatter-adds: with a few dates per batch this
is cheap, and matrix products are reproducible where atomic scatter-adds on a GPU are not.
"""

from __future__ import annotations

import torch

EPS = 1e-12


def group_onehot(group: torch.Tensor, n_groups: int, dtype: torch.dtype) -> torch.Tensor:
    """``[G, N]`` matrix with 1 where sample ``i`` belongs to date ``g``."""
    ids = torch.arange(n_groups, device=group.device)
    return (group.unsqueeze(0) == ids.unsqueeze(1)).to(dtype)


def grouped_corr(
    a: torch.Tensor,
    b: torch.Tensor,
    onehot: torch.Tensor,
    eps: float = EPS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-date Pearson correlation of ``a``, ``b`` (``[N]`` each) -> (corr ``[G]``, n ``[G]``)."""
    n = onehot.sum(1)
    n_safe = n.clamp(min=1.0)
    mean_a = onehot @ a / n_safe
    mean_b = onehot @ b / n_safe
    # Centre with the sample's own date mean (gather by the one-hot matrix).
    ac = a - onehot.t() @ mean_a
    bc = b - onehot.t() @ mean_b
    cov = onehot @ (ac * bc) / n_safe
    var_a = onehot @ (ac * ac) / n_safe
    var_b = onehot @ (bc * bc) / n_safe
    return cov / torch.sqrt(var_a * var_b + eps), n


def _date_weights(n: torch.Tensor, min_count: int) -> torch.Tensor:
    return (n >= min_count).to(n.dtype)


def ic_loss(
    pred: torch.Tensor,
    label: torch.Tensor,
    group: torch.Tensor,
    n_groups: int,
    min_count: int = 2,
) -> torch.Tensor:
    """Minus the per-date Pearson IC of ``pred`` vs ``label``, averaged over the batch's dates."""
    return multitask_loss(pred.unsqueeze(0), label, group, n_groups, 0.0, min_count)


def multitask_loss(
    heads: torch.Tensor,
    label: torch.Tensor,
    group: torch.Tensor,
    n_groups: int,
    lam: float = 0.01,
    min_count: int = 2,
) -> torch.Tensor:
    """Multi-task loss of the report, per date then averaged over dates.

    ``heads`` is ``[K, N]`` (one row per sub-task prediction y_k); per date::

        loss = -sum_k corr(y_k, y) + lam * sum_{j<k} corr(y_j, y_k)

    With K = 1 and any ``lam`` this is :func:`ic_loss`.
    """
    oh = group_onehot(group, n_groups, heads.dtype)
    K = heads.shape[0]
    total = torch.zeros(n_groups, dtype=heads.dtype, device=heads.device)
    n = oh.sum(1)
    for k in range(K):
        c, _ = grouped_corr(heads[k], label, oh)
        total = total - c
    if lam:
        for j in range(K):
            for k in range(j + 1, K):
                c, _ = grouped_corr(heads[j], heads[k], oh)
                total = total + lam * c
    w = _date_weights(n, min_count)
    return (total * w).sum() / w.sum().clamp(min=1.0)


def per_date_ic(
    pred: torch.Tensor,
    label: torch.Tensor,
    group: torch.Tensor,
    n_groups: int,
    min_count: int = 2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of per-date ICs over dates with enough samples, number of such dates), on device.

    Accumulate both over batches and divide once: the validation IC is the mean over dates.
    """
    oh = group_onehot(group, n_groups, pred.dtype)
    c, n = grouped_corr(pred, label, oh)
    w = _date_weights(n, min_count)
    return (c * w).sum(), w.sum()
