"""The OSQP index-enhancement optimizer against an independent LP solved by HiGHS.

The oracle (:func:`oracle_lp`) is written in the weights themselves with per-stock turnover
variables ``t_i >= |w_i - p_i|``, not in the buy/sell variables the optimizer uses, so that a
modelling mistake is unlikely to be shared.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from fbgpu.portfolio.optimizer import (
    OptimizerConfig,
    RebalanceProblem,
    RebalanceSolver,
    check_constraints,
    random_problem,
)

TOL = 1e-6


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
    bounds = [(L[i], H[i]) for i in range(n)] + [(0, None)] * n
    res = linprog(c, A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=[1.0], bounds=bounds,
                  method="highs")
    if res.status != 0:
        return None, None
    return -res.fun, res.x[:n]


def _assert_valid(sol, pr, prev) -> None:
    assert sol.ok, (sol.status, sol.message)
    viol = check_constraints(pr, prev, sol.weights, sol.limits, 0.008)
    assert max(viol.values()) <= TOL, viol
    assert abs(sol.weights.sum() - 1) <= TOL
    assert sol.weights.min() >= -TOL


def _drifted(w: np.ndarray, rng: np.random.Generator, vol: float) -> np.ndarray:
    out = np.maximum(w * np.exp(vol * rng.standard_normal(w.size)), 0.0)
    return out / out.sum()


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(160, 500),
    member_share=st.floats(0.2, 0.6),
    n_ind=st.integers(1, 12),
    frozen=st.floats(0.0, 0.1),
    cap=st.sampled_from([None, 0.3, 0.4, 0.5, 0.8]),
    drift=st.floats(0.0, 0.3),
    seed=st.integers(0, 2**31 - 1),
)
def test_random_problems_match_highs(n, member_share, n_ind, frozen, cap, drift, seed):
    rng = np.random.default_rng(seed)
    pr = random_problem(n, max(2, int(n * member_share)), n_ind, frozen, seed=rng)
    if cap is None:
        prev = np.zeros(n)
    else:
        # a previous portfolio: the optimum for other scores, drifted by returns
        start = random_problem(n, 2, n_ind, 0.0, seed=seed)
        start.benchmark = pr.benchmark
        start.industry, start.size = pr.industry, pr.size
        first = RebalanceSolver(start).solve(None, None)
        assert first.ok
        prev = _drifted(first.weights, rng, drift)
    sol = RebalanceSolver(pr).solve(None if cap is None else prev, cap)
    best, _ = oracle_lp(pr, prev, cap)
    if best is None:  # infeasible as posed: the documented relaxation must have happened
        assert sol.status == "relaxed" and sol.relaxed, sol.message
        _assert_valid(sol, pr, prev)
        return
    assert sol.status == "optimal", sol.message
    _assert_valid(sol, pr, prev)
    assert abs(sol.objective - best) <= 1e-4 * max(abs(best), 1e-3)


@pytest.mark.parametrize("n, members", [(1500, 500), (3000, 1000)])
def test_index_sized_problems_and_warm_start(n, members):
    pr = random_problem(n, members, 30, 0.03, seed=n)
    solver = RebalanceSolver(pr)
    sol0 = solver.solve(None, None)
    best, _ = oracle_lp(pr, np.zeros(n), None)
    _assert_valid(sol0, pr, np.zeros(n))
    assert abs(sol0.objective - best) <= 1e-4 * abs(best)
    rng = np.random.default_rng(1)
    prev = _drifted(sol0.weights, rng, 0.02)
    nxt = random_problem(n, members, 30, 0.03, seed=n)
    nxt.mu = 0.9 * pr.mu + 0.4 * rng.standard_normal(n)
    solver2 = RebalanceSolver(nxt)
    for cap in (0.3, 0.4, 0.5):  # warm: duals of the previous date, then of the previous cap
        sol = solver2.solve(prev, cap, duals=sol0.duals)
        best, _ = oracle_lp(nxt, prev, cap)
        _assert_valid(sol, nxt, prev)
        assert abs(sol.objective - best) <= 1e-4 * abs(best)
        assert sol.turnover <= cap + TOL


def test_turnover_relaxed_to_the_minimum_needed():
    """A previous portfolio outside the benchmark needs ~160% turnover: the cap is raised to the
    smallest feasible turnover (HiGHS phase 1), nothing else is relaxed."""
    n = 600
    pr = random_problem(n, 200, 10, 0.02, seed=5)
    rng = np.random.default_rng(0)
    prev = np.zeros(n)
    outside = np.flatnonzero(pr.benchmark == 0)
    prev[rng.choice(outside, 100, replace=False)] = 0.01
    sol = RebalanceSolver(pr).solve(prev, 0.3)
    assert sol.status == "relaxed" and set(sol.relaxed) == {"turnover"}
    _assert_valid(sol, pr, prev)
    # minimal feasible turnover, independently: feasible at the relaxed cap, not 2e-6 below it
    cap = sol.limits.turnover
    assert oracle_lp(pr, prev, cap - 2e-6)[0] is None
    best, _ = oracle_lp(pr, prev, cap)
    assert best is not None and abs(sol.objective - best) <= 1e-4 * abs(best)
    assert cap - 0.3 == pytest.approx(sol.relaxed["turnover"])


def test_frozen_holding_forces_style_relaxation_only():
    """A suspended stock held at 10% in a one-stock-benchmark-light industry: no turnover
    helps, so the industry bound is widened by exactly what the frozen weight forces."""
    n = 400
    pr = random_problem(n, 150, 8, 0.0, seed=3)
    j = int(np.flatnonzero(pr.benchmark == 0)[0])
    pr.industry = np.where(np.arange(n) == j, 8, pr.industry)  # its own industry, b_ind = 0
    pr.industry_names = (*pr.industry_names, "lonely")
    pr.can_buy[j] = pr.can_sell[j] = False
    prev = np.zeros(n)
    prev[j] = 0.10
    members = np.flatnonzero(pr.benchmark > 0)
    prev[members] = 0.9 * pr.benchmark[members]
    sol = RebalanceSolver(pr).solve(prev, None)
    assert sol.status == "relaxed" and set(sol.relaxed) == {"style"}, sol.relaxed
    assert sol.weights[j] == prev[j]  # frozen exactly
    assert j in sol.pinned  # its band [0, 0.8%] is unreachable
    assert sol.limits.industry[8] == pytest.approx(0.10, abs=2e-6)
    _assert_valid(sol, pr, prev)


def test_nothing_buyable_from_cash_is_reported_not_raised():
    pr = random_problem(200, 80, 5, 0.0, seed=1)
    pr.can_buy[:] = False
    sol = RebalanceSolver(pr).solve(None, None)
    assert sol.status == "infeasible" and not sol.ok
    assert sol.weights.sum() == 0.0 and "cannot absorb" in sol.message


def test_tradability_is_exact():
    n = 300
    pr = random_problem(n, 120, 6, 0.3, seed=11)
    rng = np.random.default_rng(2)
    first = RebalanceSolver(random_problem(n, 120, 6, 0.0, seed=11)).solve(None, None)
    prev = _drifted(first.weights, rng, 0.1)
    sol = RebalanceSolver(pr).solve(prev, 0.5)
    assert sol.ok
    w = sol.weights
    frozen = ~pr.can_buy & ~pr.can_sell
    assert (w[frozen] == prev[frozen]).all()
    assert (w[~pr.can_buy] <= prev[~pr.can_buy]).all()
    assert (w[~pr.can_sell] >= prev[~pr.can_sell]).all()


def test_bad_inputs_are_named():
    pr = random_problem(50, 20, 3, 0.0, seed=0)
    mu = pr.mu.copy()
    mu[7] = np.nan
    with pytest.raises(ValueError, match=r"mu is not finite for S00007"):
        RebalanceProblem(pr.symbols, mu, pr.benchmark, pr.industry, pr.size, pr.can_buy,
                         pr.can_sell)
    with pytest.raises(ValueError, match="sum to"):
        RebalanceProblem(pr.symbols, pr.mu, pr.benchmark * 2, pr.industry, pr.size, pr.can_buy,
                         pr.can_sell)
    with pytest.raises(ValueError, match="extra"):
        OptimizerConfig.model_validate({"max_active_weigth": 0.01})
