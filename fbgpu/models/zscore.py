"""The one cross-sectional z-score of the models layer, on torch tensors (any device).

``z = (x - mean) / sqrt(var)`` along ``dim`` over the *counted* entries (finite, and inside
``valid`` when given), with ``mean`` and ``var`` (``ddof = 0``, two-pass: the variance of the
centred values) taken over those entries only. Dimensionless.

Used for the LF model inputs (per date, position and feature across the pool's stocks; missing
entries become 0, the networks' neutral input) and for predictions (per date across stocks,
before seeds or networks are averaged; NaN outside the pool stays NaN). The panel layer's
:func:`fbgpu.panel.preprocess.zscore` is the same statistic on ``xp`` (numpy / cupy) arrays,
where undefined values are NaN; the two are kept apart because the panel layer does not import
torch.
"""

from __future__ import annotations

import torch


def zscore(x: torch.Tensor, dim: int, valid: torch.Tensor | None = None, *,
           min_var: float = 0.0, keep_missing: bool = True) -> torch.Tensor:
    """``(x - mean) / sqrt(var)`` along ``dim`` over the finite entries of ``x`` that are also
    ``valid`` (a bool tensor broadcastable to ``x``; all when None).

    Counted entries of a slice whose variance is ``<= min_var`` (constant, or a single entry)
    get 0. Entries not counted keep their value when ``keep_missing`` (NaN stays NaN), else get
    0. Every operation is elementwise or a reduction along ``dim``: no host synchronisation.
    """
    m = torch.isfinite(x) if valid is None else torch.isfinite(x) & valid
    cnt = m.sum(dim, keepdim=True).clamp(min=1)
    mean = torch.where(m, x, 0.0).sum(dim, keepdim=True) / cnt
    var = (torch.where(m, x - mean, 0.0) ** 2).sum(dim, keepdim=True) / cnt
    ok = var > min_var
    z = torch.where(m & ok, (x - mean) / torch.sqrt(torch.where(ok, var, 1.0)), 0.0)
    return torch.where(m, z, x) if keep_missing else z
