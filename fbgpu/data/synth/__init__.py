"""The built-in synthetic A-share market: a complete, consistent, deterministic tick market.

``generate_market(store, preset, seed)`` writes, day by day, every canonical table (``trades``,
``orders``, ``cancels``, ``minute``, ``daily``, ``index_weights``, ``securities``) plus the
ground truth ``synth_truth`` and ``<root>/synth.json``. Same preset and seed, same bytes.
Full description, calibration against real exchange samples and measurements: docs/synth.md.

Model in one paragraph. A weekday calendar; a universe of stocks on four boards (SH/SZ main
+-10% limits, ChiNext/STAR +-20%, ST +-5%) with ~30 industries, log-normal float shares and
prices, listings during the sample, ST episodes, suspensions, dividends and bonus shares. Each
stock has a latent *efficient price*: daily log-return = beta x market (GARCH) + industry +
idiosyncratic (GARCH x slow log-normal volatility regime) + news jumps + the planted terms below;
20% of the variance arrives overnight. Intraday, order flow from uninformed and informed traders
(U-shaped arrivals, log-normal + Pareto sizes in lots of 100) goes through a price-time-priority
limit order book with a 0.01 CNY tick, an opening call auction (09:15-09:25), continuous trading
and a closing call auction (14:57-15:00); limit orders rest, marketable orders sweep, resting
orders get cancelled, prices never leave the limit band. Minute and daily bars are aggregated
from the trades with :mod:`fbgpu.data.bars`, so every level agrees exactly.

Planted structure (what the research pipeline should find; signs are for *this* market):

1. **Informed flow** ``z`` (``synth_truth.informed_state``): per stock, AR(1) over days,
   ``z_t = 0.9 z_{t-1} + sqrt(1 - 0.9^2) e_t``, stationary N(0, 1). It moves the efficient price
   of the *next* day by ``informed_drift * z_t`` (0.10% per unit; 0.30% in the ``demo``
   preset), so the forward 5-day return from T+1 VWAP has RankIC ~ +0.08 with ``z_T`` (at
   0.10%). On day ``t`` informed traders, who know
   ``z_t``, send extra orders ``~ Poisson(0.12 x uninformed orders x (z+ + 0.5 z-))`` (selling is
   half as intense: short-sale constraint), on the side of ``sign(z)`` 90% of the time, 4x
   larger, arriving early (exponential decay from 09:30, 40 min), 75% marketable (sweeping up to
   40 bp past the efficient price, remainder cancelled within ~30 s). Factors that see it
   (sign +): early_active_buy_perc, early_active_bigorder_ret, early_corr_volume_ret,
   early_bigorder_buy_perc, bigorder_ret2 (raw and 20-day smoothed), concentration_diff (raw
   daily values only).
2. **Short-term reversal**: a transient uninformed price pressure ``pi_t = 0.6 pi_{t-1} + u_t``
   (``synth_truth.pressure``), ``u_t ~ N(0, 1.3%)`` scaled by the volatility regime, enters the
   efficient log price as a level (so it reverts), and tilts uninformed buy probability
   (0.5 + 0.08 u/sd). Past 5-day return has RankIC ~ -0.03; down_vol_perc (raw daily value)
   ~ +0.04 (removed by the 20-day smoothing).
3. **Nonlinear and temporal**: (a) the informed footprint is kinked in ``z`` (selling at half
   intensity); (b) moves driven by informed flow persist while pressure-driven moves revert, so
   the meaning of a past return depends on the flow that came with it; (c) ``z`` has a
   half-life of ~6.6 days, shorter than the 20-day factor smoothing, so the most recent days of
   the 40-day factor history carry more information than their 20-day means.
4. Everything else is noise: corr_close_nextopen, volume_perc3..6, corr_volume_item,
   corr_volume_amplitude, bigorder_amt_perc and early_kurt_order show |RankIC| < 0.02.
"""

from fbgpu.data.synth.config import PRESETS, SynthConfig, resolve_config
from fbgpu.data.synth.market import (
    GENERATOR_VERSION,
    SYNTH_JSON,
    TRUTH_COLUMNS,
    SynthSummary,
    generate_market,
)

__all__ = [
    "GENERATOR_VERSION",
    "PRESETS",
    "SYNTH_JSON",
    "TRUTH_COLUMNS",
    "SynthConfig",
    "SynthSummary",
    "generate_market",
    "resolve_config",
]
