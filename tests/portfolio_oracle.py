"""An independent LP formulation of the index-enhancement problem, solved by HiGHS (scipy).

Used by the portfolio tests as the oracle for :mod:`fbgpu.portfolio.optimizer`. It is written in
the weights themselves with per-stock turnover variables ``t_i >= |w_i - p_i|`` (not in the
buy/sell variables the optimizer uses), so that a shared modelling mistake is unlikely.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

from fbgpu.portfolio.optimizer import RebalanceProblem


def oracle_lp(
    pr: RebalanceProblem,
    prev: np.ndarray,
    cap: float | None,
    *,
    max_active: float = 0.008,
    min_constituent: float = 0.8,
    max_industry: float = 0.02,
    max_size: float = 0.2,
    band_widen: float = 0.0,
) -> tuple[float | None, np.ndarray | None]:
    """``(max mu'w, w)`` of the LP, or ``(None, None)`` when HiGHS finds it infeasible.

    Stocks whose band cannot be reached because of tradability are pinned at ``p`` (the
    optimizer's documented rule), computed here from the definitions.
    """
    n = pr.n
    b = pr.benchmark
    lo = np.maximum(b - max_active, 0.0)
    hi = b + max_active
    # tradability
    lo_t = np.where(pr.can_sell, 0.0, prev)
    hi_t = np.where(pr.can_buy, np.inf, prev)
    L = np.maximum(lo, lo_t)
    H = np.minimum(hi, hi_t)
    pin = L > H
    L[pin] = prev[pin]
    H[pin] = prev[pin]
    if band_widen:
        L = np.maximum(L - band_widen, lo_t)
        H = np.minimum(H + band_widen, hi_t)
    # variables: w (n), t (n)
    c = np.r_[-pr.mu, np.zeros(n)]
    rows, rhs = [], []
    eye = sp.identity(n, format="csr")
    zero = sp.csr_matrix((n, n))
    # w - t <= p ; -w - t <= -p
    rows += [sp.hstack([eye, -eye]), sp.hstack([-eye, -eye])]
    rhs += [prev, -prev]
    k = pr.n_industries
    G = sp.csr_matrix((np.ones(n), (pr.industry, np.arange(n))), shape=(k, n))
    bi = G @ b
    rows += [sp.hstack([G, sp.csr_matrix((k, n))]), sp.hstack([-G, sp.csr_matrix((k, n))])]
    rhs += [bi + max_industry, -(bi - max_industry)]
    z = sp.csr_matrix(pr.size[None, :])
    rows += [sp.hstack([z, sp.csr_matrix((1, n))]), sp.hstack([-z, sp.csr_matrix((1, n))])]
    rhs += [[b @ pr.size + max_size], [-(b @ pr.size - max_size)]]
    cons = sp.csr_matrix(pr.constituent.astype(float)[None, :])
    rows += [sp.hstack([-cons, sp.csr_matrix((1, n))])]
    rhs += [[-min_constituent]]
    if cap is not None:
        rows += [sp.hstack([sp.csr_matrix((1, n)), sp.csr_matrix(np.ones((1, n)))])]
        rhs += [[cap]]
    A_ub = sp.vstack(rows, format="csr")
    b_ub = np.concatenate([np.atleast_1d(np.asarray(r, float)) for r in rhs])
    A_eq = sp.hstack([sp.csr_matrix(np.ones((1, n))), sp.csr_matrix((1, n))], format="csr")
    del zero
    bounds = [(L[i], H[i]) for i in range(n)] + [(0, None)] * n
    res = linprog(c, A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=[1.0], bounds=bounds,
                  method="highs")
    if res.status != 0:
        return None, None
    return -res.fun, res.x[:n]
