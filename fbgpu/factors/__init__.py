"""The 27 high-frequency factors (spec/factors.md), written once against ``xp`` + the primitives.

Importing this package registers every factor in :data:`FACTORS` (minute, trade, order families).
Entry points: :func:`compute_factors` (a :class:`FactorCube` in memory) and :func:`run_factors`
(the ``factors`` table in the store).
"""

from fbgpu.factors import minute, order, trade  # noqa: F401  (registration side effect)
from fbgpu.factors.compute import (
    DayFactors,
    DayInputs,
    FactorCube,
    FactorRunSummary,
    compute_day,
    compute_factors,
    compute_loaded_day,
    day_to_backend,
    input_dates,
    load_day,
    run_factors,
)
from fbgpu.factors.config import FactorConfig
from fbgpu.factors.registry import FACTORS, FactorSpec, factor_names, resolve_names

__all__ = [
    "FACTORS",
    "DayFactors",
    "DayInputs",
    "FactorConfig",
    "FactorCube",
    "FactorRunSummary",
    "FactorSpec",
    "compute_day",
    "compute_factors",
    "compute_loaded_day",
    "day_to_backend",
    "factor_names",
    "input_dates",
    "load_day",
    "resolve_names",
    "run_factors",
]
