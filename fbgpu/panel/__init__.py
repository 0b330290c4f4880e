"""Panel layer: raw daily factors -> preprocessed ``[days, stocks, factors]`` panel; the market.

* :mod:`fbgpu.panel.preprocess` - smoothing, MAD winsorizing, batched industry/size
  neutralization, z-scoring (numpy or cupy);
* :mod:`fbgpu.panel.market` - :class:`Market` from the store, stock pool, evaluation returns,
  training labels, rebalance dates, style factors;
* :mod:`fbgpu.panel.build` - the store's ``factors`` table to a :class:`FactorPanel` and back.
"""

from fbgpu.panel.build import FactorPanel, build_panel, load_factor_values, read_panel, write_panel
from fbgpu.panel.market import Market, PoolConfig, load_market, rebalance_indices
from fbgpu.panel.preprocess import (
    PanelConfig,
    mad_winsorize,
    neutralize,
    preprocess_panel,
    trailing_mean,
    trailing_sum,
    zscore,
)

__all__ = [
    "FactorPanel",
    "Market",
    "PanelConfig",
    "PoolConfig",
    "build_panel",
    "load_factor_values",
    "load_market",
    "mad_winsorize",
    "neutralize",
    "preprocess_panel",
    "read_panel",
    "rebalance_indices",
    "trailing_mean",
    "trailing_sum",
    "write_panel",
    "zscore",
]
