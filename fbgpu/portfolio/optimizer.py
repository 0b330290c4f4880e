"""The index-enhancement optimizer: one OSQP problem per rebalance date.

Problem (spec/research.md "Index enhancement"), for ``n`` candidate stocks with standardized
scores ``mu``, benchmark weights ``b`` (0 for non-constituents, summing to 1), previous weights
``p`` (the held portfolio at the decision date's close; 0 from cash) and trade-day tradability::

    maximize    mu' w
    subject to  sum w = 1,  w >= 0                              (full investment, long only)
                sum_{i in C} w_i >= 0.80                        (C = benchmark constituents)
                |w_i - b_i| <= 0.008                            (per-stock active weight)
                |sum_{i in k} (w_i - b_i)| <= 0.02              (every industry k)
                |(w - b)' z| <= 0.2                             (z = standardized log float cap)
                sum |w - p| <= cap                              (two-sided turnover)
                w_i = p_i if frozen, w_i <= p_i if it cannot be bought, w_i >= p_i if it
                cannot be sold                                  (tradability on the trade day)

**Variables.** OSQP sees the trades, not the weights: ``w = p + u - v`` with buys ``u >= 0`` and
sells ``v >= 0`` (the auxiliary variables of the two-sided turnover, ``sum(u + v) <= cap``). The
per-stock band, long-only and tradability are all *bounds* on ``u`` and ``v`` (a stock that
cannot be bought has ``u = 0``, one that cannot be sold ``v = 0``; see
:meth:`RebalanceSolver._variable_bounds`), so the only rows are the ``K + 4`` coupling rows: sum,
constituent floor, ``K`` industries, size, turnover. No constraint is duplicated (duplicates make
the LP degenerate, which stalls ADMM and defeats polishing).

**Fixed structure, warm starts.** The coupling matrix depends only on the date's candidates
(constituent mask, industries, size exposures); the previous weights, cap and scores enter only
the vectors. One :class:`RebalanceSolver` per date is built once and solves every (previous
portfolio, cap) variant -- the backtest's three caps -- warm-started from the duals of the
previous solve, or from the previous date's duals matched by row name.

**Solving.** ADMM on this degenerate LP converges slowly (10^4 iterations at CSI 1000 size), so
the solver runs OSQP on a *working set* (:mod:`fbgpu.portfolio.workingset`): the stocks whose
reduced cost under the current duals is near zero; every other trade is fixed at the bound its
reduced cost points to. The small OSQP problem is solved with polishing (an exact vertex with
exact duals), then every fixed trade is *priced*; KKT violators join the working set and the
loop repeats. When no trade violates, the solution satisfies the KKT conditions of the full
problem: it is the optimum, not an approximation.

**Ridge.** OSQP minimizes ``-mu'(u - v) + ridge/2 (||u||^2 + ||v||^2)`` with ``ridge = 0.01``
(``mu`` is in standard deviations, weights in fractions). It makes the optimum unique, removes
wash trades and speeds ADMM up; it costs at most ``ridge/2 * max_i |trade_i| * sum |trades|``
of ``mu'w`` (<= 1.5e-4 for an initial build with trades <= 3%, ~1e-5 typically) and in practice
leaves the LP's optimal vertex unchanged (the tests compare with HiGHS on the pure LP to 1e-4).

**Accuracy.** ADMM alone gives ~1e-3..1e-5. Each reduced solve runs OSQP at eps 1e-4 and polishes
(OSQP guesses the active set and solves the reduced KKT system with iterative refinement); when
the polish fails (a degenerate vertex, typically when last week's portfolio sits on several
bounds at once) the tolerance is tightened step by step down to 1e-9 from the current iterate,
polishing each time. An unpolished iterate is not clipped onto its bounds (clipping hundreds of
variables by ~eps each would add up in the sum rows). The weights are then checked against every
constraint (:func:`check_constraints`, tolerance 1e-6); a failure is returned as status
``"inaccurate"`` with its violations, never silently.

**Infeasibility.** When the working set cannot be made feasible (or the result fails the check),
the solver switches to the *elastic* problem: the same rows with nonnegative slacks on four
groups, relaxed in this order (first relaxed first):

1. ``turnover`` -- the cap is raised to the smallest turnover that satisfies everything else;
2. ``style``    -- per-industry and size bounds, each widened by its own minimal slack;
3. ``constituent`` -- the 80% floor lowered by the minimal amount;
4. ``band``     -- the per-stock bound ``0.8%`` widened uniformly by the minimal amount.

Full investment, long-only and tradability are never relaxed. The slacks are found
lexicographically: first the band (exactly, by bisection: with the other three groups free,
only ``sum lo(s) <= 1 <= sum hi(s)`` matters), then the constituent slack with style and turnover
free, then style with turnover free, then turnover; each minimal slack gets a margin of 1e-6 and
is fixed before the next. So a group is relaxed only if relaxing every group before it
completely is not enough. The relaxed problem is then solved with the original objective, and
:attr:`Solution.relaxed` records each relaxation (slacks below the tolerance are noise and are
not reported). Where a stock's band cannot be reached at all because of its tradability (e.g. a
suspended stock held above ``b + 0.8%``), that stock's band is moved to the reachable weight
nearest to it (``p``); such stocks are listed in :attr:`Solution.pinned` (a consequence of
tradability, not a relaxation). The only problem no relaxation fixes -- the stocks that can be
bought cannot absorb the cash (e.g. from cash when every stock is limit-up) -- returns the held
portfolio with status ``"infeasible"``.

**First rebalance.** From cash (``p = 0``) there is no turnover cap (``turnover_cap=None``): the
initial build is 100% one-sided by construction.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from fbgpu.panel.preprocess import zscore
from fbgpu.portfolio.workingset import WorkingSetQP, WorkingSetSettings

log = logging.getLogger(__name__)

#: Relaxable constraint groups in the order they are relaxed (first relaxed first).
RELAXATION_ORDER: tuple[str, ...] = ("turnover", "style", "constituent", "band")



class OptimizerConfig(BaseModel):
    """Constraint limits and solver settings of the index-enhancement problem.

    Every key has the default of the research report (exhibit 62) or of the solver design
    described in the module docstring.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_active_weight: float = Field(0.008, gt=0, description="per-stock |w - b| bound")
    min_constituent_weight: float = Field(
        0.8, ge=0, le=1, description="floor on the total weight in benchmark constituents"
    )
    max_industry_active: float = Field(0.02, ge=0, description="per-industry |active| bound")
    max_size_exposure: float = Field(0.2, ge=0, description="|(w - b)' z_size| bound")
    ridge: float = Field(1e-2, ge=0, description="ridge/2 * ||trades||^2 in the objective")
    eps: float = Field(
        1e-9, gt=0, description="tightest OSQP eps_abs = eps_rel before giving up on polishing"
    )
    max_iter: int = Field(20000, gt=0, description="OSQP iteration limit per solve")
    polish: bool = Field(True, description="OSQP solution polishing")
    tolerance: float = Field(1e-6, gt=0, description="constraint check tolerance")
    screen_iter: int = Field(
        1000, gt=0, description="OSQP iterations of the cold dual estimate on the full problem"
    )
    relax_margin: float = Field(
        1e-6, ge=0, description="added to each minimal slack found by the elastic phase"
    )


@dataclass
class RebalanceProblem:
    """One date's candidates and the data the constraints need (all arrays of length ``n``).

    ``mu`` must be finite (0 for a stock without a score); ``benchmark`` is nonnegative and sums
    to 1 (non-constituents 0); ``industry`` holds integer codes ``0..K-1`` into
    ``industry_names``; ``size`` is the standardized log float cap (finite); ``can_buy`` /
    ``can_sell`` are the trade-day tradability flags (both False: frozen).
    """

    symbols: np.ndarray
    mu: np.ndarray
    benchmark: np.ndarray
    industry: np.ndarray
    size: np.ndarray
    can_buy: np.ndarray
    can_sell: np.ndarray
    industry_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.symbols)
        self.mu = np.asarray(self.mu, dtype=np.float64)
        self.benchmark = np.asarray(self.benchmark, dtype=np.float64)
        self.size = np.asarray(self.size, dtype=np.float64)
        self.industry = np.asarray(self.industry, dtype=np.int64)
        self.can_buy = np.asarray(self.can_buy, dtype=bool)
        self.can_sell = np.asarray(self.can_sell, dtype=bool)
        for name in ("mu", "benchmark", "industry", "size", "can_buy", "can_sell"):
            arr = getattr(self, name)
            if arr.shape != (n,):
                raise ValueError(f"RebalanceProblem.{name} has shape {arr.shape}, expected ({n},)")
        for name in ("mu", "benchmark", "size"):
            bad = np.flatnonzero(~np.isfinite(getattr(self, name)))
            if bad.size:
                raise ValueError(
                    f"RebalanceProblem.{name} is not finite for {self.symbols[bad[0]]} "
                    f"({bad.size} stocks)"
                )
        if (self.benchmark < 0).any():
            i = int(np.argmin(self.benchmark))
            raise ValueError(f"negative benchmark weight for {self.symbols[i]}")
        total = float(self.benchmark.sum())
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"benchmark weights sum to {total:.12g}, expected 1 (normalize)")
        if n and (self.industry.min() < 0):
            raise ValueError("industry codes must be >= 0")
        k = int(self.industry.max()) + 1 if n else 0
        if not self.industry_names:
            self.industry_names = tuple(str(i) for i in range(k))
        elif len(self.industry_names) < k:
            raise ValueError(
                f"industry code {k - 1} has no name ({len(self.industry_names)} names)"
            )

    @property
    def n(self) -> int:
        return len(self.symbols)

    @property
    def n_industries(self) -> int:
        return len(self.industry_names)

    @property
    def constituent(self) -> np.ndarray:
        return self.benchmark > 0


@dataclass
class Limits:
    """The (possibly relaxed) limits one solution satisfies."""

    turnover: float  # inf: no cap (initial build)
    industry: np.ndarray  # per industry
    size: float
    constituent: float
    band: float


@dataclass
class Solution:
    """The result of one rebalance solve."""

    weights: np.ndarray
    status: str  # "optimal" | "relaxed" | "inaccurate" | "infeasible"
    objective: float  # mu' w
    limits: Limits
    violations: dict[str, float]  # max violation of each constraint (<= tolerance when valid)
    relaxed: dict[str, float] = field(default_factory=dict)  # group -> size of the relaxation
    pinned: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    turnover: float = 0.0  # sum |w - p|
    iterations: int = 0
    solve_time: float = 0.0
    osqp_status: str = ""
    message: str = ""
    duals: dict[str, float] = field(default_factory=dict)  # coupling-row duals, by row name
    polished: bool = False
    rounds: int = 0  # working-set rounds
    working_set: int = 0  # final working-set size

    @property
    def ok(self) -> bool:
        return self.status in ("optimal", "relaxed")


def stock_bounds(
    problem: RebalanceProblem, prev: np.ndarray, max_active: float, widen: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-stock weight bounds: the band ``[max(0, b - m), b + m]`` met with tradability.

    A stock that cannot be sold cannot go below ``p``, one that cannot be bought cannot go above
    ``p``. Where band and reachable range do not intersect, the bound collapses onto the
    reachable point nearest the band, which is always ``p`` (the stock is *pinned*). A band
    relaxation ``widen`` then widens every stock's bound by that amount on both sides, within
    what tradability and long-only allow. Returns ``(lo, hi, pinned_index)``.
    """
    b = problem.benchmark
    band_lo = np.maximum(b - max_active, 0.0)
    band_hi = b + max_active
    reach_lo = np.where(problem.can_sell, 0.0, prev)
    reach_hi = np.where(problem.can_buy, np.inf, prev)
    lo = np.maximum(band_lo, reach_lo)
    hi = np.minimum(band_hi, reach_hi)
    pinned = np.flatnonzero(lo > hi)
    lo[pinned] = prev[pinned]
    hi[pinned] = prev[pinned]
    if widen > 0:
        lo = np.maximum(lo - widen, reach_lo)
        hi = np.minimum(hi + widen, reach_hi)
    return lo, hi, pinned


def check_constraints(
    problem: RebalanceProblem,
    prev: np.ndarray,
    weights: np.ndarray,
    limits: Limits,
    max_active: float,
) -> dict[str, float]:
    """Largest violation of every constraint (0 when satisfied), against ``limits``.

    Independent of how the solution was found: it works on the weights alone. The band is
    checked against :func:`stock_bounds` widened by ``limits.band - max_active``.
    """
    w = weights
    b = problem.benchmark
    active = w - b
    lo, hi, _ = stock_bounds(problem, prev, max_active, max(0.0, limits.band - max_active))
    frozen = ~problem.can_buy & ~problem.can_sell
    k = problem.n_industries
    ind_active = np.bincount(problem.industry, weights=active, minlength=k)
    out = {
        "sum": abs(float(w.sum()) - 1.0),
        "long_only": max(0.0, -float(w.min(initial=0.0))),
        "band": max(0.0, float(np.max(np.r_[lo - w, w - hi], initial=0.0))),
        "constituent": max(0.0, limits.constituent - float(w[problem.constituent].sum())),
        "industry": max(0.0, float(np.max(np.abs(ind_active) - limits.industry, initial=0.0))),
        "size": max(0.0, abs(float(active @ problem.size)) - limits.size),
        "turnover": max(0.0, float(np.abs(w - prev).sum()) - limits.turnover),
        "frozen": float(np.max(np.abs(w - prev)[frozen], initial=0.0)),
        "no_buy": max(0.0, float(np.max((w - prev)[~problem.can_buy], initial=0.0))),
        "no_sell": max(0.0, float(np.max((prev - w)[~problem.can_sell], initial=0.0))),
    }
    return out


class RebalanceSolver:
    """OSQP solver for one date's problem; reusable for many (previous weights, cap) variants.

    The coupling matrix (sum, constituent, industries, size, turnover on ``[u, v]``) is built
    once in the constructor; :meth:`solve` only changes vectors and warm-starts from the duals of
    the last solve (of this solver, or ``duals`` given by the caller: the previous date's
    :attr:`Solution.duals`, matched by row name).
    """

    def __init__(self, problem: RebalanceProblem, config: OptimizerConfig | None = None) -> None:
        self.problem = problem
        self.config = config or OptimizerConfig()
        n, k = problem.n, problem.n_industries
        self._n, self._k = n, k
        t0 = time.perf_counter()
        self.row_names = ["sum", "constituent",
                          *(f"industry:{name}" for name in problem.industry_names),
                          "size", "turnover"]
        self._C = self._coupling_matrix()
        self._ws = WorkingSetQP(self._C, self.config.ridge, self._ws_settings())
        self._elastic_ws: WorkingSetQP | None = None
        self._last_y: np.ndarray | None = None
        self.setup_time = time.perf_counter() - t0

    def _ws_settings(self) -> WorkingSetSettings:
        cfg = self.config
        return WorkingSetSettings(
            eps=tuple(e for e in (1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9) if e >= cfg.eps),
            max_iter=cfg.max_iter, polish=cfg.polish, screen_iter=cfg.screen_iter,
        )

    # ---------------------------------------------------------------- structure
    def _onehot(self) -> sp.csr_matrix:
        pr, n = self.problem, self._n
        return sp.csr_matrix((np.ones(n), (pr.industry, np.arange(n))), shape=(self._k, n))

    def _coupling_matrix(self) -> sp.csc_matrix:
        """Rows (see :attr:`row_names`) on columns ``[u (n), v (n)]``; rows on ``w - p``
        are ``[R, -R]``, the turnover row is ``[1, 1]``.

        The per-stock band and tradability are not rows: they are bounds on ``u`` and ``v``
        (see :meth:`_variable_bounds`), which keeps the LP free of duplicate active constraints.
        """
        pr, n = self.problem, self._n
        on_w = sp.vstack(
            [
                sp.csr_matrix(np.ones((1, n))),
                sp.csr_matrix(pr.constituent.astype(np.float64)[None, :]),
                self._onehot(),
                sp.csr_matrix(pr.size[None, :]),
            ],
            format="csr",
        )
        return sp.vstack(
            [sp.hstack([on_w, -on_w]), sp.csr_matrix(np.ones((1, 2 * n)))], format="csc"
        )

    def _elastic_matrix(self) -> sp.csc_matrix:
        """The coupling rows with slacks: columns ``[u, v, s_turnover, s_industry (K), s_size,
        s_constituent]``; two-sided rows (industries, size) become an upper and a lower row."""
        pr, n, k = self.problem, self._n, self._k
        ns = k + 3

        def on_w(rows: sp.spmatrix) -> sp.csr_matrix:
            return sp.hstack([rows, -rows], format="csr")

        def slack(rows: int, cols: np.ndarray, sign: float) -> sp.csr_matrix:
            return sp.csr_matrix((np.full(rows, sign), (np.arange(rows), cols)), shape=(rows, ns))

        ind = self._onehot()
        size = sp.csr_matrix(pr.size[None, :])
        j_ind, j_size, j_const = 1 + np.arange(k), np.array([1 + k]), np.array([2 + k])
        blocks = [
            sp.hstack([on_w(sp.csr_matrix(np.ones((1, n)))), sp.csr_matrix((1, ns))]),
            sp.hstack([on_w(sp.csr_matrix(pr.constituent.astype(float)[None, :])),
                       slack(1, j_const, 1.0)]),
            sp.hstack([on_w(ind), slack(k, j_ind, -1.0)]),
            sp.hstack([on_w(ind), slack(k, j_ind, 1.0)]),
            sp.hstack([on_w(size), slack(1, j_size, -1.0)]),
            sp.hstack([on_w(size), slack(1, j_size, 1.0)]),
            sp.hstack([sp.csr_matrix(np.ones((1, 2 * n))), slack(1, np.array([0]), -1.0)]),
        ]
        return sp.vstack(blocks, format="csc")

    # ---------------------------------------------------------------- vectors
    def default_limits(self, turnover_cap: float | None) -> Limits:
        cfg = self.config
        return Limits(
            turnover=np.inf if turnover_cap is None else float(turnover_cap),
            industry=np.full(self._k, cfg.max_industry_active),
            size=cfg.max_size_exposure,
            constituent=cfg.min_constituent_weight,
            band=cfg.max_active_weight,
        )

    def _variable_bounds(
        self, prev: np.ndarray, limits: Limits
    ) -> tuple[np.ndarray, np.ndarray]:
        """Bounds of ``[u, v]``: the band and tradability folded into the trades.

        Any ``w`` in ``[lo, hi]`` is reached by the wash-free trades ``u = (w - p)+``,
        ``v = (p - w)+``, which lie within these bounds; and any ``u, v`` within them give
        ``w = p + u - v`` in ``[lo, hi]``. ``lo <= p`` when a stock cannot be sold and
        ``hi >= p`` when it cannot be bought, so the blocked trade has bounds ``[0, 0]``.
        """
        m = self.config.max_active_weight
        lo, hi, _ = stock_bounds(self.problem, prev, m, max(0.0, limits.band - m))
        xl = np.r_[np.maximum(lo - prev, 0.0), np.maximum(prev - hi, 0.0)]
        xu = np.r_[np.maximum(hi - prev, 0.0), np.maximum(prev - lo, 0.0)]
        return xl, xu

    def _row_targets(self, prev: np.ndarray, limits: Limits) -> dict[str, tuple]:
        """Lower/upper bounds of the coupling rows on ``w - p`` (and of the turnover row)."""
        pr = self.problem
        b = pr.benchmark
        k = self._k
        b_ind = np.bincount(pr.industry, weights=b, minlength=k)
        p_ind = np.bincount(pr.industry, weights=prev, minlength=k)
        size_gap = float((b - prev) @ pr.size)
        c = pr.constituent
        return {
            "sum": (1.0 - prev.sum(), 1.0 - prev.sum()),
            "constituent": (limits.constituent - prev[c].sum(), np.inf),
            "industry": (b_ind - p_ind - limits.industry, b_ind - p_ind + limits.industry),
            "size": (size_gap - limits.size, size_gap + limits.size),
            "turnover": (0.0, limits.turnover),
        }

    def _row_bounds(self, prev: np.ndarray, limits: Limits) -> tuple[np.ndarray, np.ndarray]:
        t = self._row_targets(prev, limits)
        order = ("sum", "constituent", "industry", "size", "turnover")
        lower = np.concatenate([np.atleast_1d(np.asarray(t[r][0], float)) for r in order])
        upper = np.concatenate([np.atleast_1d(np.asarray(t[r][1], float)) for r in order])
        return lower, upper

    def _elastic_row_bounds(
        self, prev: np.ndarray, limits: Limits
    ) -> tuple[np.ndarray, np.ndarray]:
        t = self._row_targets(prev, limits)
        k = self._k
        inf_k = np.full(k, np.inf)
        parts = [
            t["sum"], t["constituent"],
            (-inf_k, t["industry"][1]), (t["industry"][0], inf_k),
            (-np.inf, t["size"][1]), (t["size"][0], np.inf),
            (-np.inf, limits.turnover),
        ]
        lower = np.concatenate([np.atleast_1d(np.asarray(p[0], float)) for p in parts])
        upper = np.concatenate([np.atleast_1d(np.asarray(p[1], float)) for p in parts])
        return lower, upper

    def duals_by_name(self, y: np.ndarray) -> dict[str, float]:
        return {name: float(v) for name, v in zip(self.row_names, y, strict=True)}

    def _duals_from_names(self, duals: dict[str, float]) -> np.ndarray:
        return np.array([duals.get(name, 0.0) for name in self.row_names])

    # ---------------------------------------------------------------- solving
    def solve(
        self,
        prev: np.ndarray | None = None,
        turnover_cap: float | None = None,
        duals: dict[str, float] | None = None,
    ) -> Solution:
        """Optimal weights given the previous weights ``prev`` (None: from cash) and the cap.

        ``turnover_cap=None`` means no turnover constraint (the initial build from cash).
        ``duals`` warm-starts the coupling-row duals (e.g. the previous date's
        :attr:`Solution.duals`); without it the solver reuses its own last duals, or estimates
        them with a short OSQP run on the full problem.
        """
        pr = self.problem
        n = self._n
        prev = np.zeros(n) if prev is None else np.asarray(prev, dtype=np.float64)
        if prev.shape != (n,):
            raise ValueError(f"prev has shape {prev.shape}, expected ({n},)")
        if not np.isfinite(prev).all() or (prev < -1e-12).any():
            raise ValueError("previous weights must be finite and nonnegative")
        prev = np.maximum(prev, 0.0)
        if prev.sum() > 1.0 + 1e-9:
            raise ValueError(f"previous weights sum to {prev.sum():.12g} > 1")
        if turnover_cap is not None and not turnover_cap >= 0:
            raise ValueError(f"turnover cap must be >= 0, got {turnover_cap}")
        limits = self.default_limits(turnover_cap)
        _, _, pinned = stock_bounds(pr, prev, self.config.max_active_weight)
        y0 = self._duals_from_names(duals) if duals is not None else self._last_y

        band_slack = self._band_slack(prev)
        if band_slack is None:
            return self._hold(prev, limits, pinned, "infeasible",
                              "the candidates that can be bought cannot absorb the cash: "
                              "holding the previous portfolio")
        if band_slack == 0.0:
            sol = self._solve_main(prev, limits, pinned, y0)
            if sol.ok:
                return sol
            log.debug("main problem %s (%s): elastic phase", sol.status, sol.message)
            first = sol
        else:
            first = None
        sol = self._solve_elastic(prev, limits, pinned, band_slack, y0)
        if first is not None:
            sol.iterations += first.iterations
            sol.solve_time += first.solve_time
        return sol

    def _hold(self, prev: np.ndarray, limits: Limits, pinned: np.ndarray, status: str,
              message: str, **kw: object) -> Solution:
        viol = check_constraints(self.problem, prev, prev, limits, self.config.max_active_weight)
        return Solution(weights=prev.copy(), status=status,
                        objective=float(self.problem.mu @ prev), limits=limits,
                        violations=viol, pinned=pinned, message=message, **kw)  # type: ignore[arg-type]

    def _band_slack(self, prev: np.ndarray) -> float | None:
        """Smallest uniform band widening ``s`` with ``sum lo(s) <= 1 <= sum hi(s)``.

        With turnover, style and constituent limits relaxed away, full investment within the
        per-stock bounds is all that is left, so this one-dimensional condition decides the
        band stage exactly (bisection on monotone piecewise-linear sums). ``None``: no widening
        helps (the stocks that can be bought cannot absorb the cash).
        """
        pr, m = self.problem, self.config.max_active_weight

        def sums(s: float) -> tuple[float, float]:
            lo, hi, _ = stock_bounds(pr, prev, m, s)
            return float(lo.sum()), float(hi.sum())

        lo0, hi0 = sums(0.0)
        if lo0 <= 1.0 and hi0 >= 1.0:
            return 0.0
        lo1, hi1 = sums(1.0)
        if lo1 > 1.0 + 1e-12 or hi1 < 1.0 - 1e-12:
            return None
        a, b = 0.0, 1.0
        for _ in range(60):
            mid = 0.5 * (a + b)
            lo_m, hi_m = sums(mid)
            if lo_m <= 1.0 and hi_m >= 1.0:
                b = mid
            else:
                a = mid
        return b + self.config.relax_margin

    def _solve_main(
        self, prev: np.ndarray, limits: Limits, pinned: np.ndarray, y0: np.ndarray | None,
        relaxed: dict[str, float] | None = None, known_feasible: bool = False,
    ) -> Solution:
        pr, n = self.problem, self._n
        xl, xu = self._variable_bounds(prev, limits)
        cl, cu = self._row_bounds(prev, limits)
        res = self._ws.solve(np.r_[-pr.mu, pr.mu], xl, xu, cl, cu, y0=y0,
                             known_feasible=known_feasible)
        if not res.solved:
            sol = self._hold(prev, limits, pinned, "infeasible", f"OSQP: {res.status}")
        else:
            self._last_y = res.y
            sol = self._finish(res.x[: 2 * n], prev, limits, pinned,
                               "relaxed" if relaxed else "optimal", relaxed)
            sol.duals = self.duals_by_name(res.y)
            sol.polished = res.polished
        sol.iterations, sol.solve_time, sol.osqp_status = res.iterations, res.solve_time, res.status
        sol.rounds, sol.working_set = res.rounds, res.working_set
        return sol

    def _finish(
        self, x: np.ndarray, prev: np.ndarray, limits: Limits, pinned: np.ndarray, status: str,
        relaxed: dict[str, float] | None = None,
    ) -> Solution:
        """Weights from the trades, exact where tradability fixes them, then checked."""
        pr, n = self.problem, self._n
        w = prev + x[:n] - x[n : 2 * n]
        # Tradability is a bound on u/v: make it exact instead of 1e-12-accurate.
        w = np.where(pr.can_buy, w, np.minimum(w, prev))
        w = np.where(pr.can_sell, w, np.maximum(w, prev))
        w = np.maximum(w, 0.0)
        viol = check_constraints(pr, prev, w, limits, self.config.max_active_weight)
        worst = max(viol.values())
        if worst > self.config.tolerance:
            status = "inaccurate"
        return Solution(
            weights=w, status=status, objective=float(pr.mu @ w), limits=limits,
            violations=viol, relaxed=dict(relaxed or {}), pinned=pinned,
            turnover=float(np.abs(w - prev).sum()),
            message="" if status != "inaccurate" else f"largest constraint violation {worst:.3g}",
        )

    # ---------------------------------------------------------------- elastic phase
    def _solve_elastic(
        self, prev: np.ndarray, limits: Limits, pinned: np.ndarray, band_slack: float,
        y0: np.ndarray | None,
    ) -> Solution:
        """Lexicographic minimal relaxation, then the original objective on the relaxed set."""
        pr, n, k = self.problem, self._n, self._k
        cfg = self.config
        ns = k + 3
        if self._elastic_ws is None:
            self._elastic_ws = WorkingSetQP(self._elastic_matrix(), cfg.ridge, self._ws_settings())
        ews = self._elastic_ws
        band_limits = Limits(limits.turnover, limits.industry, limits.size, limits.constituent,
                             limits.band + band_slack)
        xl_w, xu_w = self._variable_bounds(prev, band_limits)
        cl, cu = self._elastic_row_bounds(prev, band_limits)
        groups = {"turnover": np.array([0]), "style": 1 + np.arange(k + 1),
                  "constituent": np.array([2 + k])}
        slack_hi = np.full(ns, np.inf)
        if not np.isfinite(limits.turnover):
            slack_hi[0] = 0.0
        always = np.r_[np.zeros(2 * n, dtype=bool), np.ones(ns, dtype=bool)]
        # A tiny share of the original objective breaks the ties among the many trades that
        # reach the same slack; it can only overstate a minimal slack, by <= 1e-6 * |mu' dw|.
        tie = 1e-6 * np.r_[-pr.mu, pr.mu, np.zeros(ns)]
        iters, elapsed, y = 0, 0.0, None
        needed = np.zeros(ns)  # minimal slacks found, before the margin
        for name in ("constituent", "style", "turnover"):  # the most protected group first
            idx = groups[name]
            if (slack_hi[idx] == 0).all():
                continue
            q = tie.copy()
            q[2 * n + idx] = 1.0
            res = ews.solve(q, np.r_[xl_w, np.zeros(ns)], np.r_[xu_w, slack_hi], cl, cu,
                            y0=y, always=always, known_feasible=True)
            iters += res.iterations
            elapsed += res.solve_time
            if not res.solved:
                return self._hold(prev, limits, pinned, "infeasible",
                                  f"elastic phase ({name}) failed: {res.status}; holding",
                                  iterations=iters, solve_time=elapsed, osqp_status=res.status)
            y = res.y
            s = np.maximum(res.x[2 * n + idx], 0.0)
            # A slack below 1e-9 is numerical noise: that group needs no relaxation.
            slack_hi[idx] = np.where(s > 1e-9, s + cfg.relax_margin, 0.0)
            needed[idx] = s
        slack_hi[~np.isfinite(slack_hi)] = 0.0
        relaxed_limits = Limits(
            turnover=limits.turnover + slack_hi[0],
            industry=limits.industry + slack_hi[1 : 1 + k],
            size=limits.size + slack_hi[1 + k],
            constituent=max(0.0, limits.constituent - slack_hi[2 + k]),
            band=limits.band + band_slack,
        )
        # Slacks up to the tolerance are solver noise or margins: the original limits still hold
        # within the tolerance, so they are neither reported nor counted as a relaxation.
        relaxed: dict[str, float] = {}
        for name, need, value in (
            ("turnover", needed[0], slack_hi[0]),
            ("style", needed[1 : 2 + k].max(), slack_hi[1 : 2 + k].max()),
            ("constituent", needed[2 + k], slack_hi[2 + k]),
            ("band", band_slack - cfg.relax_margin, band_slack),
        ):
            if need > cfg.tolerance:
                relaxed[name] = float(value)
        y_main = None
        if y is not None:  # elastic duals -> main rows (a two-sided row's two halves add up)
            y_main = np.r_[y[0], y[1], y[2 : 2 + k] + y[2 + k : 2 + 2 * k],
                           y[2 + 2 * k] + y[3 + 2 * k], y[4 + 2 * k]]
        sol = self._solve_main(prev, relaxed_limits, pinned, y_main, relaxed, known_feasible=True)
        sol.iterations += iters
        sol.solve_time += elapsed
        if not relaxed and sol.status == "optimal":
            sol.limits = limits
            sol.violations = check_constraints(pr, prev, sol.weights, limits, cfg.max_active_weight)
            if max(sol.violations.values()) > cfg.tolerance:
                sol.status = "inaccurate"
        if sol.status == "infeasible":
            sol.message = f"relaxed problem failed ({sol.message}); holding"
        elif relaxed:
            sol.message = "relaxed " + ", ".join(f"{g} by {v:.4g}" for g, v in relaxed.items())
        return sol


def random_problem(
    n: int,
    n_constituents: int,
    n_industries: int = 30,
    frozen_share: float = 0.02,
    seed: int | np.random.Generator = 0,
) -> RebalanceProblem:
    """A random, realistic-looking problem (for tests and benchmarks).

    Benchmark weights proportional to log-normal float caps over the ``n_constituents`` largest
    of the first stocks, scores standard normal, industries uniform, and a share of stocks made
    non-tradable (a third frozen, a third no-buy, a third no-sell).
    """
    rng = np.random.default_rng(seed)
    cap = rng.lognormal(0.0, 1.0, n)
    b = np.zeros(n)
    members = rng.choice(n, size=n_constituents, replace=False)
    b[members] = cap[members]
    b /= b.sum()
    logcap = np.log(cap)
    z = zscore(logcap[None, :])[0]
    flags = rng.random(n)
    third = frozen_share / 3
    can_buy = ~((flags < third) | ((flags >= third) & (flags < 2 * third)))
    can_sell = ~((flags < third) | ((flags >= 2 * third) & (flags < frozen_share)))
    return RebalanceProblem(
        symbols=np.array([f"S{i:05d}" for i in range(n)], dtype=object),
        mu=rng.standard_normal(n),
        benchmark=b,
        industry=rng.integers(0, n_industries, n),
        size=z,
        can_buy=can_buy,
        can_sell=can_sell,
        industry_names=tuple(f"ind{k}" for k in range(n_industries)),
    )
