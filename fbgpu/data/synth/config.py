"""Configuration of the synthetic market: :class:`SynthConfig` and the named :data:`PRESETS`.

Every field has a documented default; a preset is a :class:`SynthConfig` with some fields
changed. Units: returns are log-returns (fractions), volatilities are per trading day, times of day
are minutes of the continuous session (0 = 09:30, 120 = 13:00, 237 = 14:57), sizes are lots of 100
shares, prices are CNY.
"""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SynthConfig(BaseModel):
    """All knobs of the synthetic A-share market (see docs/synth.md for the model)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # ------------------------------------------------------------------ universe and calendar
    n_stocks: int = Field(300, ge=2, description="Number of securities in the master.")
    n_days: int = Field(500, ge=1, description="Number of trading days (weekdays) generated.")
    start: dt.date = Field(dt.date(2022, 1, 3), description="First calendar day; the calendar "
                           "is every weekday from here on (no exchange holidays).")
    n_industries: int = Field(30, ge=1, le=30, description="Industries (Shenwan-L1-like names).")
    board_shares: tuple[float, float, float, float] = Field(
        (0.40, 0.30, 0.20, 0.10),
        description="Share of symbols on SH main (60xxxx), SZ main (00xxxx), ChiNext (300xxx, "
                    "+-20% limits) and STAR (688xxx, +-20% limits).")
    float_shares_median: float = Field(4e8, gt=0, description="Median float shares (log-normal).")
    float_shares_log_sd: float = Field(1.0, ge=0, description="Log-sd of float shares.")
    price_median: float = Field(12.0, gt=0, description="Median initial price, CNY (log-normal).")
    price_log_sd: float = Field(0.6, ge=0, description="Log-sd of initial prices.")
    mid_listing_share: float = Field(0.05, ge=0, le=0.5, description="Share of stocks listing "
                                     "during the sample (at days 10%..70% of the calendar).")
    min_mid_listings: int = Field(1, ge=0, description="At least this many mid-sample listings.")
    st_share: float = Field(0.04, ge=0, le=1, description="Share of stocks with an ST episode.")
    min_st: int = Field(1, ge=0, description="At least this many stocks with an ST episode.")
    st_mean_days: float = Field(120.0, gt=0, description="Mean length of an ST episode, days.")
    suspension_rate: float = Field(0.002, ge=0, le=0.5, description="Per stock-day probability "
                                   "that a suspension episode starts.")
    suspension_mean_days: float = Field(3.0, ge=1, description="Mean suspension length, days.")
    min_suspensions: int = Field(1, ge=0, description="At least this many suspension episodes.")
    dividend_rate: float = Field(1 / 250, ge=0, le=1, description="Per stock-day probability "
                                 "of an ex-dividend/bonus-share event (about one a year).")
    min_dividends: int = Field(2, ge=0, description="At least this many corporate actions.")

    # ------------------------------------------------------------------ daily price dynamics
    market_vol: float = Field(0.012, ge=0, description="Long-run market daily volatility.")
    industry_vol: float = Field(0.008, ge=0, description="Industry factor daily volatility.")
    idio_vol: float = Field(0.020, ge=0, description="Long-run idiosyncratic daily volatility.")
    garch_alpha: float = Field(0.12, ge=0, lt=1, description="GARCH(1,1) alpha (idio and market).")
    garch_beta: float = Field(0.86, ge=0, lt=1, description="GARCH(1,1) beta (idio and market).")
    sv_phi: float = Field(0.98, ge=0, lt=1, description="AR(1) coefficient of the slow "
                          "log-volatility regime multiplying the GARCH variance.")
    sv_sd: float = Field(0.35, ge=0, description="Stationary sd of the log-volatility regime.")
    idio_vol_dispersion: float = Field(0.25, ge=0, description="Cross-sectional log-sd of "
                                       "stocks' long-run idiosyncratic volatility.")
    overnight_var_share: float = Field(0.2, ge=0, lt=1, description="Share of daily variance "
                                       "realised overnight (the gap at 09:15).")
    jump_rate: float = Field(0.004, ge=0, le=1, description="Per stock-day probability of an "
                             "intraday news jump.")
    jump_size: float = Field(0.06, ge=0, description="Mean absolute jump log-size.")
    min_limit_events: int = Field(1, ge=0, description="At least this many forced +15% news "
                                  "jumps, so that price limits bind somewhere.")
    ipo_pop: float = Field(0.15, description="Mean log-jump of the efficient price on the "
                           "listing day above the IPO price.")

    # ------------------------------------------------------------------ planted structure
    informed_phi: float = Field(0.90, ge=0, lt=1, description="AR(1) coefficient of the daily "
                                "informed-flow state z (stationary N(0,1)).")
    informed_drift: float = Field(0.0010, ge=0, description="Efficient-price drift on day t+1 "
                                  "per unit of z_t (log-return per day).")
    informed_rate: float = Field(0.12, ge=0, description="Informed orders per unit |z|, as a "
                                 "fraction of the stock-day's uninformed orders.")
    informed_sell_ratio: float = Field(0.5, ge=0, le=1, description="Informed selling intensity "
                                       "relative to buying (short-sale constraint), for z < 0.")
    informed_side_accuracy: float = Field(0.9, ge=0.5, le=1, description="Probability that an "
                                          "informed order is on the side of sign(z).")
    informed_size_mult: float = Field(4.0, ge=1, description="Informed order size multiplier.")
    informed_decay_min: float = Field(40.0, gt=0, description="Informed arrivals decay "
                                      "exponentially from 09:30 with this time constant (min).")
    informed_marketable: float = Field(0.75, ge=0, le=1, description="Share of informed orders "
                                       "that are marketable.")
    informed_slippage_bp: float = Field(40.0, ge=0, description="Max distance an informed "
                                        "marketable order sweeps beyond the efficient price, bp.")
    informed_cancel_mean_min: float = Field(0.5, gt=0, description="Mean time before an "
                                            "informed order's unfilled rest is cancelled, min.")
    pressure_vol: float = Field(0.013, ge=0, description="Sd of the daily uninformed price-"
                                "pressure shock u_t (log-return) at the long-run volatility; "
                                "it scales with the stock's current GARCH volatility.")
    pressure_psi: float = Field(0.6, ge=0, lt=1, description="Persistence of the transient "
                                "price pressure pi_t = psi pi_{t-1} + u_t (short-term reversal).")
    pressure_flow_tilt: float = Field(0.08, ge=0, le=0.4, description="Uninformed buy "
                                      "probability tilt per sd of u_t (0.5 + tilt*u/sd).")

    # ------------------------------------------------------------------ intraday order flow
    orders_per_day: float = Field(600.0, gt=0, description="Median uninformed orders per "
                                  "stock-day (scaled by sqrt of float cap and activity).")
    orders_log_sd: float = Field(0.5, ge=0, description="Cross-sectional log-sd of activity.")
    orders_cap: int = Field(60_000, ge=10, description="Cap on orders per stock-day.")
    open_auction_share: float = Field(0.05, ge=0, lt=0.5, description="Share of uninformed "
                                      "orders placed in the opening call auction 09:15-09:25.")
    close_auction_share: float = Field(0.03, ge=0, lt=0.5, description="Share placed in the "
                                       "closing call auction 14:57-15:00.")
    ushape_open: float = Field(2.5, ge=0, description="Arrival intensity excess at 09:30 "
                                "(relative to the midday level 1).")
    ushape_open_min: float = Field(20.0, gt=0, description="Decay of the opening excess, min.")
    ushape_close: float = Field(1.0, ge=0, description="Intensity excess before 14:57.")
    ushape_close_min: float = Field(20.0, gt=0, description="Decay of the closing excess, min.")
    ushape_pm: float = Field(0.5, ge=0, description="Intensity excess right after 13:00.")
    notional_median: float = Field(6_000.0, gt=0, description="Median uninformed order "
                                   "notional, CNY (log-normal body).")
    size_log_sd: float = Field(1.0, ge=0, description="Log-sd of the order-size body.")
    tail_prob: float = Field(0.05, ge=0, le=1, description="Probability an order's size comes "
                             "from the Pareto tail.")
    tail_alpha: float = Field(1.5, gt=0, description="Pareto tail index of order sizes.")
    marketable_share: float = Field(0.30, ge=0, le=1, description="Share of uninformed "
                                    "continuous-session orders that are marketable.")
    market_order_share: float = Field(0.1, ge=0, le=1, description="Share of marketable orders "
                                      "sent as market orders (price NaN, remainder cancelled).")
    cancel_prob: float = Field(0.6, ge=0, le=1, description="Probability a resting limit order "
                               "is cancelled later (if still unfilled).")
    cancel_mean_min: float = Field(8.0, gt=0, description="Mean order lifetime before a cancel.")
    depth_bp: float = Field(15.0, ge=0, description="Mean distance of passive limit orders from "
                            "the efficient price, basis points (at least one tick).")
    slippage_bp: float = Field(5.0, ge=0, description="Max distance a marketable limit order "
                               "reaches beyond the efficient price, basis points.")
    auction_disp_bp: float = Field(60.0, ge=0, description="Sd of call-auction limit prices "
                                   "around the efficient price, basis points.")

    # ------------------------------------------------------------------ indices and output
    index_bands: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: {"csi500": (0.0, 1 / 3), "csi1000": (1 / 3, 1.0)},
        description="Index -> (from, to) fractions of the float-cap ranking of eligible stocks "
                    "(largest first). The real CSI 500/1000 are ranks 301-800/801-1800 of ~5,000.")
    index_min_listed_days: int = Field(20, ge=0, description="Trading days listed before a stock "
                                       "is eligible for an index.")
    rebalance_months: tuple[int, ...] = Field((6, 12), description="Indices rebalance on the "
                                              "first trading day of these months (and day 0).")
    chunk_stocks: int = Field(512, ge=1, description="Stocks simulated and written per chunk "
                              "(bounds memory on large days).")

    @model_validator(mode="after")
    def _check(self) -> SynthConfig:
        if any(not 0 <= s <= 1 for s in self.board_shares):
            raise ValueError(f"board_shares must each be in [0, 1] (shares of SH main, SZ main, "
                             f"ChiNext, STAR), got {self.board_shares}")
        if abs(sum(self.board_shares) - 1.0) > 1e-9:
            raise ValueError(f"board_shares must sum to 1, got {self.board_shares}")
        if self.garch_alpha + self.garch_beta >= 1:
            raise ValueError("garch_alpha + garch_beta must be < 1 (stationary variance)")
        a, b = self.garch_alpha, self.garch_beta
        if 3 * a * a + 2 * a * b + b * b >= 1:
            raise ValueError("GARCH needs 3 alpha^2 + 2 alpha beta + beta^2 < 1 (finite kurtosis)")
        if self.open_auction_share + self.close_auction_share >= 1:
            raise ValueError("auction shares must leave room for continuous trading")
        for name, (lo, hi) in self.index_bands.items():
            if not 0 <= lo < hi <= 1:
                raise ValueError(f"index band {name}: need 0 <= from < to <= 1, got {(lo, hi)}")
        return self


#: Named presets. ``tiny`` is what the tests use; ``small`` has enough stock-days for the planted
#: signal to be statistically visible; ``demo`` is the default end-to-end run; ``full-day`` is
#: one day of a full-size market for throughput benchmarks.
PRESETS: dict[str, SynthConfig] = {
    "tiny": SynthConfig(n_stocks=24, n_days=60, orders_per_day=400, min_mid_listings=1,
                        mid_listing_share=0.05, min_st=1, min_suspensions=1, min_dividends=2,
                        min_limit_events=2, chunk_stocks=8),
    "small": SynthConfig(n_stocks=180, n_days=120, orders_per_day=300),
    # demo: the informed drift the model tests plant (3x the default, docs/synth.md "The demo's
    # planted strength"), so 47 weekly test dates can show what the models recover
    "demo": SynthConfig(n_stocks=300, n_days=500, orders_per_day=450, informed_drift=0.003),
    "full-day": SynthConfig(n_stocks=5000, n_days=1, orders_per_day=2600, orders_log_sd=0.7,
                            index_bands={"csi500": (300 / 5000, 800 / 5000),
                                         "csi1000": (800 / 5000, 1800 / 5000)},
                            index_min_listed_days=0, min_mid_listings=0, mid_listing_share=0.0,
                            min_suspensions=0, min_dividends=0, min_limit_events=0,
                            chunk_stocks=500),
}


def resolve_config(preset: str | SynthConfig) -> tuple[str, SynthConfig]:
    """``(name, config)`` for a preset name or an explicit config (named ``custom``)."""
    if isinstance(preset, SynthConfig):
        return "custom", preset
    try:
        return preset, PRESETS[preset]
    except KeyError:
        raise ValueError(
            f"unknown synthetic-market preset {preset!r}; choose one of {sorted(PRESETS)}"
        ) from None
