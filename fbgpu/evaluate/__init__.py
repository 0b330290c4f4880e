"""Evaluation layer: single-factor tests (RankIC, quantile backtests), composites, correlations.

Library use, in the spirit of alphalens::

    from fbgpu.evaluate import evaluate_factor
    rep = evaluate_factor(factor_df, forward_returns_df, pool_df, direction=-1, groups=5)
    rep.summary(); rep.ic; rep.group_nav

and for a whole store: :func:`run_evaluate` (``fbgpu evaluate``).
"""

from fbgpu.evaluate.composite import icir_weights, signed, weighted_composite
from fbgpu.evaluate.correlation import factor_correlation, mean_cross_corr, style_correlation
from fbgpu.evaluate.run import (
    EvaluateConfig,
    EvaluateConfigError,
    EvaluateResult,
    resolve_directions,
    run_evaluate,
)
from fbgpu.evaluate.single import SUMMARY_COLUMNS, FactorReport, evaluate_factor, performance
from fbgpu.evaluate.stats import average_ranks, quantile_bins, rank_ic, row_corr

__all__ = [
    "SUMMARY_COLUMNS",
    "EvaluateConfig",
    "EvaluateConfigError",
    "EvaluateResult",
    "FactorReport",
    "average_ranks",
    "evaluate_factor",
    "factor_correlation",
    "icir_weights",
    "mean_cross_corr",
    "performance",
    "quantile_bins",
    "rank_ic",
    "resolve_directions",
    "row_corr",
    "run_evaluate",
    "signed",
    "style_correlation",
    "weighted_composite",
]
