"""Box-constrained QPs with few coupling rows, solved exactly by OSQP on a working set.

Problem::

    minimize    1/2 r ||x||^2 + q' x
    subject to  xl <= x <= xu                  (N variables, finite bounds)
                cl <= C x <= cu                (m coupling rows, m << N)

The index-enhancement problem has this shape (``x`` = buys and sells per stock, ``C`` = sum,
constituent, industry, size and turnover rows). Its solution is (nearly) a vertex of an LP: all
but at most ``m`` variables sit at a bound, and which bound is decided by the sign of the
*reduced cost* ``g_j = r x_j + q_j + (C' y)_j`` for the coupling duals ``y``. ADMM (OSQP) on
the full problem finds ``y`` only slowly (thousands of iterations at 10,000 variables), because
the LP is degenerate and the answer hinges on ~``m`` duals being exact. So we solve it as a
sequence of *small* OSQP problems (a working-set / column-generation method):

1. Estimate ``y``: from the caller's warm start (the previous solve's duals), else from a short
   OSQP run on the full problem (``screen_iter`` iterations, loose tolerance).
2. Working set ``W`` = variables whose reduced cost is near zero (the ``M`` smallest ``|g|``);
   every other free variable is fixed at the bound its reduced cost points to.
3. Solve the QP over ``W`` (coupling bounds shifted by the fixed variables) with OSQP at tight
   tolerance and polishing, which returns an exact vertex and exact duals ``y``.
4. *Pricing*: with those ``y``, every fixed variable must satisfy the KKT sign condition
   (``g_j >= -tol`` at its lower bound, ``g_j <= tol`` at its upper bound). Violators join
   ``W`` and we go back to 3; if the reduced problem is infeasible, ``W`` grows by the next
   variables in ``|g|`` order. When no variable violates, the assembled ``x`` satisfies the KKT
   conditions of the full problem: it is its optimum, not an approximation of it.

The loop is finite (``W`` only grows) and ends at worst with ``W`` = all variables, i.e. plain
OSQP on the full problem.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import osqp
import scipy.sparse as sp

_SOLVED = {osqp.SolverStatus.OSQP_SOLVED, osqp.SolverStatus.OSQP_SOLVED_INACCURATE}


@dataclass
class WorkingSetResult:
    """Solution of :meth:`WorkingSetQP.solve`."""

    x: np.ndarray
    y: np.ndarray  # coupling-row duals (OSQP sign convention: P x + q + A'y = 0)
    solved: bool
    status: str
    iterations: int  # OSQP iterations, all solves together
    rounds: int  # reduced solves
    working_set: int  # final |W|
    polished: bool  # the last reduced solve was polished successfully
    kkt_violation: float  # largest reduced-cost sign violation among fixed variables
    solve_time: float


@dataclass(frozen=True)
class WorkingSetSettings:
    """Solver settings (see the module docstring for what each step does)."""

    eps: tuple[float, ...] = (1e-4, 1e-5, 1e-6, 1e-7)  # reduced solves: tightened until polished
    max_iter: int = 20000  # OSQP iteration limit per reduced solve
    polish: bool = True
    screen_iter: int = 300  # OSQP iterations of the full-problem dual estimate
    min_working_set: int = 200  # |W| at least this, and at least 6 x (coupling rows)
    max_rounds: int = 30
    max_infeasible_rounds: int = 4  # reduced problem infeasible this often: report infeasible
    pricing_tol: float = 1e-8  # reduced-cost sign tolerance (objective units per weight)


class WorkingSetQP:
    """A fixed-structure box + coupling QP; :meth:`solve` takes the vectors."""

    def __init__(self, C: sp.spmatrix, ridge: float, settings: WorkingSetSettings) -> None:
        self.C = sp.csc_matrix(C)
        self.CT = self.C.T.tocsr()
        self.m, self.N = self.C.shape
        self.ridge = float(ridge)
        self.settings = settings
        self._screen: osqp.OSQP | None = None

    # ---------------------------------------------------------------- helpers
    def _osqp(self, A: sp.csc_matrix, q: np.ndarray, lo: np.ndarray, hi: np.ndarray,
              **settings: object) -> osqp.OSQP:
        n = A.shape[1]
        s = osqp.OSQP()
        s.setup(sp.identity(n, format="csc") * self.ridge, q, A, lo, hi, verbose=False,
                warm_starting=True, eps_prim_inf=1e-7, eps_dual_inf=1e-7, **settings)
        return s

    def screen(self, q: np.ndarray, xl: np.ndarray, xu: np.ndarray, cl: np.ndarray,
               cu: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """A rough dual estimate from a short OSQP run on the full problem (set up once)."""
        st = self.settings
        lo = np.r_[xl, cl]
        hi = np.r_[xu, cu]
        if self._screen is None:
            A = sp.vstack([sp.identity(self.N, format="csc"), self.C], format="csc")
            self._screen = self._osqp(A, q, lo, hi, eps_abs=1e-4, eps_rel=1e-4,
                                      max_iter=st.screen_iter, polishing=False)
        else:
            self._screen.update(q=q, l=lo, u=hi)
        res = self._screen.solve(raise_error=False)
        return res.x, res.y[self.N :], int(res.info.iter)

    def reduced_costs(self, q: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``g = r x + q + C'y``: the gradient of the Lagrangian in each variable."""
        return self.ridge * x + q + self.CT @ y

    # ---------------------------------------------------------------- solve
    def solve(
        self,
        q: np.ndarray,
        xl: np.ndarray,
        xu: np.ndarray,
        cl: np.ndarray,
        cu: np.ndarray,
        y0: np.ndarray | None = None,
        always: np.ndarray | None = None,
        known_feasible: bool = False,
    ) -> WorkingSetResult:
        """Solve for the given vectors; ``y0`` warm-starts the duals, ``always`` (bool mask)
        forces variables into the working set. An infeasible reduced problem makes the working
        set grow; after ``max_infeasible_rounds`` of those the problem is reported infeasible,
        unless ``known_feasible`` (then it grows up to the full problem)."""
        st = self.settings
        t0 = time.perf_counter()
        N = self.N
        if (xl > xu).any():
            j = int(np.argmax(xl - xu))
            raise ValueError(f"variable {j}: lower bound {xl[j]} > upper bound {xu[j]}")
        free = xl < xu
        iters = 0
        x_guess = np.clip(np.zeros(N), xl, xu)
        interior = np.zeros(N, dtype=bool)
        if y0 is None or len(y0) != self.m:
            x_adm, y0, it = self.screen(q, xl, xu, cl, cu)
            iters += it
            x_guess = np.clip(x_adm, xl, xu)
            width = xu - xl
            interior = free & (x_guess - xl > 1e-3 * width) & (xu - x_guess > 1e-3 * width)
        g = self.reduced_costs(q, x_guess, y0)
        n_free = int(free.sum())
        target = min(n_free, max(st.min_working_set, 6 * self.m))
        order = np.flatnonzero(free)[np.argsort(np.abs(g[free]), kind="stable")]
        in_w = np.zeros(N, dtype=bool)
        in_w[order[:target]] = True
        in_w |= interior
        if always is not None:
            in_w |= always & free
        next_pos = target  # next candidates in |g| order when W must grow

        x = np.where(g > 0, xl, xu)
        x[~free] = xl[~free]
        y = np.asarray(y0, dtype=np.float64).copy()
        rounds, polished, status = 0, False, "unsolved"
        warm_x: np.ndarray | None = None
        kkt = np.inf
        infeasible_rounds = 0
        while rounds < st.max_rounds:
            rounds += 1
            W = np.flatnonzero(in_w)
            F = np.flatnonzero(~in_w)
            shift = self.C[:, F] @ x[F] if F.size else np.zeros(self.m)
            CW = self.C[:, W]
            lo_c, hi_c = cl - shift, cu - shift
            rows = np.flatnonzero(np.diff(CW.tocsr().indptr) > 0)
            empty = np.setdiff1d(np.arange(self.m), rows)
            if ((lo_c[empty] > 1e-12) | (hi_c[empty] < -1e-12)).any():
                ok = False  # a row with no working variable cannot be met: grow W
            else:
                A = sp.vstack([sp.identity(W.size, format="csc"), CW[rows]], format="csc")
                solver = self._osqp(A, q[W], np.r_[xl[W], lo_c[rows]], np.r_[xu[W], hi_c[rows]],
                                    eps_abs=st.eps[0], eps_rel=st.eps[0], max_iter=st.max_iter,
                                    polishing=st.polish, polish_refine_iter=10)
                if warm_x is not None:
                    solver.warm_start(x=warm_x[W])
                for k, eps in enumerate(st.eps):
                    # ADMM to eps, then polish; a failed polish means the active set is not yet
                    # identified: tighten and continue from the current iterate.
                    if k:
                        solver.update_settings(eps_abs=eps, eps_rel=eps)
                    res = solver.solve(raise_error=False)
                    iters += int(res.info.iter)
                    if res.info.status_val not in _SOLVED or res.info.status_polish == 1:
                        break
                status = str(res.info.status)
                ok = res.info.status_val in _SOLVED
            if not ok:
                infeasible_rounds += 1
                give_up = infeasible_rounds >= st.max_infeasible_rounds and not known_feasible
                if give_up or in_w[free].all():
                    break  # (probably) infeasible: the caller's elastic phase decides
                grow = max(target, int(in_w.sum()))
                add = order[next_pos : next_pos + grow]
                next_pos += grow
                in_w[add] = True
                if not add.size:
                    in_w |= free
                continue
            polished = res.info.status_polish == 1
            # A polished vertex is exact up to rounding: clip it onto its bounds. An unpolished
            # ADMM iterate is left as it is: it meets every row to ~eps, whereas clipping each of
            # hundreds of variables by ~eps would add up in the sum rows.
            x[W] = np.clip(res.x, xl[W], xu[W]) if polished else res.x
            y = np.zeros(self.m)
            y[rows] = res.y[W.size :]
            warm_x = x.copy()
            g = self.reduced_costs(q, x, y)
            at_lo = x <= xl
            at_hi = x >= xu
            bad = ~in_w & free & ((at_lo & (g < -st.pricing_tol)) | (at_hi & (g > st.pricing_tol)))
            kkt = float(np.max(np.abs(g[bad]), initial=0.0))
            if not bad.any():
                return WorkingSetResult(x, y, True, status, iters, rounds, int(in_w.sum()),
                                        polished, 0.0, time.perf_counter() - t0)
            in_w |= bad
        return WorkingSetResult(x, y, False, status, iters, rounds, int(in_w.sum()), polished,
                                kkt, time.perf_counter() - t0)
