"""Index enhancement: the OSQP optimizer, the weekly backtest and its analytics.

See docs/portfolio.md. Main entry points: :func:`run_backtest` (what ``fbgpu backtest`` runs),
:class:`RebalanceSolver` (one date's optimization problem) and :mod:`.analytics`.
"""

from fbgpu.portfolio.analytics import performance, yearly_returns
from fbgpu.portfolio.backtest import (
    BacktestConfig,
    BacktestError,
    BacktestResult,
    run_backtest,
)
from fbgpu.portfolio.optimizer import (
    OptimizerConfig,
    RebalanceProblem,
    RebalanceSolver,
    Solution,
    check_constraints,
)

__all__ = [
    "BacktestConfig",
    "BacktestError",
    "BacktestResult",
    "OptimizerConfig",
    "RebalanceProblem",
    "RebalanceSolver",
    "Solution",
    "check_constraints",
    "performance",
    "run_backtest",
    "yearly_returns",
]
