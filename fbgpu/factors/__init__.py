"""The 27 high-frequency factors (spec/factors.md), written once against ``xp`` + the primitives.

Importing this package registers every factor in :data:`FACTORS` (minute, trade, order families).
Entry points: :func:`compute_factors` (a :class:`FactorCube` in memory) and :func:`run_factors`
(the ``factors`` table in the store).
"""

from fbgpu.factors import minute, order, trade  # noqa: F401  (registration side effect)
from fbgpu.factors.compute import (
    DayFactors,
    DayInputs,
    FactorComputeError,
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
from fbgpu.factors.registry import (
    FACTORS,
    FactorDefinitionError,
    FactorSpec,
    builtin_names,
    factor,
    factor_names,
    resolve_names,
)
from fbgpu.factors.user import UserModule, UserModuleError, load_modules, unload

__all__ = [
    "FACTORS",
    "DayFactors",
    "DayInputs",
    "FactorComputeError",
    "FactorConfig",
    "FactorCube",
    "FactorDefinitionError",
    "FactorRunSummary",
    "FactorSpec",
    "UserModule",
    "UserModuleError",
    "builtin_names",
    "compute_day",
    "compute_factors",
    "compute_loaded_day",
    "day_to_backend",
    "factor",
    "factor_names",
    "input_dates",
    "load_day",
    "load_modules",
    "resolve_names",
    "run_factors",
    "unload",
]
