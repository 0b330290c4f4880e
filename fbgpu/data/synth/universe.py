"""The synthetic universe: calendar, symbols and boards, industries, float shares, listings, ST
episodes, suspensions, corporate actions and forced news events.

Everything here is drawn once, up front, from the universe's own random stream, so the day loop
only reads it. Arrays are indexed by stock in sorted-symbol order (the store's row order).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from fbgpu.data.synth.config import SynthConfig

#: Shenwan-L1-like industry names (30).
INDUSTRIES: tuple[str, ...] = (
    "banks", "non_bank_finance", "real_estate", "steel", "coal", "nonferrous_metals",
    "basic_chemicals", "building_materials", "construction", "power_equipment", "machinery",
    "defense", "autos", "home_appliances", "textiles_apparel", "light_manufacturing",
    "retail", "social_services", "food_beverage", "agriculture", "pharma_biotech", "utilities",
    "transportation", "electronics", "computers", "media", "telecom", "environmental",
    "beauty_care", "petrochemicals",
)

#: Boards: name, code ranges (first code, count available), exchange suffix, price-limit fraction.
BOARDS: tuple[tuple[str, tuple[tuple[int, int], ...], str, float], ...] = (
    ("SSE Main", ((600000, 4000), (605000, 1000)), "SH", 0.10),
    ("SZSE Main", ((1, 3000),), "SZ", 0.10),
    ("ChiNext", ((300001, 1999),), "SZ", 0.20),
    ("STAR", ((688001, 999),), "SH", 0.20),
)
ST_LIMIT = 0.05


def weekday_calendar(start: dt.date, n_days: int) -> list[dt.date]:
    """The first ``n_days`` weekdays on or after ``start`` (no exchange holidays are modelled)."""
    out: list[dt.date] = []
    d = start
    while len(out) < n_days:
        if d.weekday() < 5:
            out.append(d)
        d += dt.timedelta(days=1)
    return out


@dataclass
class Universe:
    """Static description of the synthetic market (arrays over stocks ``[S]`` or ``[D, S]``)."""

    dates: list[dt.date]
    symbols: np.ndarray  # str, sorted
    names: np.ndarray
    board: np.ndarray  # str board names
    limit_frac: np.ndarray  # +-limit fraction outside ST
    industry: np.ndarray  # int index into industry_names
    industry_names: tuple[str, ...]
    float_shares: np.ndarray  # at the start of the sample (or listing)
    ipo_price_c: np.ndarray  # int64 cents: initial price (pre_close of day 0 or the IPO price)
    list_day: np.ndarray  # int64: first trading day index (negative: listed before the sample)
    list_date: list[dt.date]
    beta: np.ndarray  # market beta
    activity: np.ndarray  # relative order-flow intensity (median 1)
    st: np.ndarray  # bool [D, S]
    suspended: np.ndarray  # bool [D, S]
    cash_yield: np.ndarray  # float [D, S]: cash dividend per share / previous close on ex-day
    bonus_ratio: np.ndarray  # float [D, S]: bonus shares per share on ex-day
    forced_jump: np.ndarray  # bool [D, S]: a forced +15% news jump that day

    @property
    def n_stocks(self) -> int:
        return len(self.symbols)

    @property
    def n_days(self) -> int:
        return len(self.dates)

    def listed(self, d: int) -> np.ndarray:
        return self.list_day <= d


def _symbols(cfg: SynthConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    counts = rng.multinomial(cfg.n_stocks, cfg.board_shares)
    syms: list[str] = []
    boards: list[int] = []
    for b, (_name, ranges, suffix, _lim) in enumerate(BOARDS):
        pool = np.concatenate([np.arange(lo, lo + n) for lo, n in ranges])
        if counts[b] > len(pool):
            raise ValueError(f"n_stocks too large for board {BOARDS[b][0]}")
        codes = rng.choice(pool, size=counts[b], replace=False)
        syms += [f"{c:06d}.{suffix}" for c in codes]
        boards += [b] * int(counts[b])
    return np.array(syms, dtype=object), np.array(boards, dtype=np.int64)


def _episodes(rng: np.random.Generator, D: int, listed_from: np.ndarray, rate: float,
              mean_len: float, at_least: int, skip_first: bool) -> np.ndarray:
    """Bool [D, S] episodes starting with ``rate`` per stock-day, geometric lengths."""
    S = len(listed_from)
    out = np.zeros((D, S), dtype=bool)
    starts = rng.random((D, S)) < rate
    first = np.maximum(listed_from + (1 if skip_first else 0), 0)
    starts &= np.arange(D)[:, None] >= first[None, :]
    if starts.sum() < at_least and D > 2:
        cand = [s for s in range(S) if first[s] < D - 1]
        pick = rng.choice(cand, size=min(at_least, len(cand)), replace=False) if cand else []
        for s in pick:
            starts[rng.integers(first[s], D - 1), s] = True
    for d, s in zip(*np.nonzero(starts), strict=True):
        length = 1 + rng.geometric(1.0 / mean_len) - 1 if mean_len > 1 else 1
        out[d: d + max(int(length), 1), s] = True
    return out


def build_universe(cfg: SynthConfig, rng: np.random.Generator) -> Universe:
    """Draw the static universe for ``cfg`` from ``rng``."""
    D, S = cfg.n_days, cfg.n_stocks
    dates = weekday_calendar(cfg.start, D)
    syms, board_idx = _symbols(cfg, rng)
    order = np.argsort(syms)
    syms, board_idx = syms[order], board_idx[order]

    industry = rng.integers(0, cfg.n_industries, size=S)
    float_shares = np.round(cfg.float_shares_median
                            * np.exp(cfg.float_shares_log_sd * rng.standard_normal(S)), -4)
    float_shares = np.maximum(float_shares, 1e6)
    price = cfg.price_median * np.exp(cfg.price_log_sd * rng.standard_normal(S))
    price_c = np.clip(np.round(price * 100), 150, 50_000).astype(np.int64)

    # listing: most before the sample, some during it (days 10%..70% of the calendar)
    list_day = -rng.integers(60, 3000, size=S)
    n_mid = round(cfg.mid_listing_share * S)
    n_mid = max(n_mid, cfg.min_mid_listings) if D >= 10 else 0
    n_mid = min(n_mid, S // 2)
    if n_mid:
        mid = rng.choice(S, size=n_mid, replace=False)
        list_day[mid] = rng.integers(max(1, int(0.1 * D)), max(2, int(0.7 * D)), size=n_mid)
    first_cal = dates[0]
    list_date = [
        dates[d] if d >= 0 else first_cal - dt.timedelta(days=int(-d) * 7 // 5) for d in list_day
    ]

    st = np.zeros((D, S), dtype=bool)
    n_st = max(round(cfg.st_share * S), cfg.min_st)
    n_st = min(n_st, S)
    for s in rng.choice(S, size=n_st, replace=False):
        first = max(int(list_day[s]), 0) + 1
        # half of the episodes are already running when the sample starts
        begin = 0 if rng.random() < 0.5 else int(rng.integers(min(first, D - 1), D))
        length = int(rng.exponential(cfg.st_mean_days)) + 20
        st[max(begin, max(int(list_day[s]), 0)): begin + length, s] = True

    suspended = _episodes(rng, D, list_day, cfg.suspension_rate, cfg.suspension_mean_days,
                          cfg.min_suspensions, skip_first=True)

    div = _episodes(rng, D, list_day, cfg.dividend_rate, 1.0, cfg.min_dividends, skip_first=True)
    # an ex-date cannot fall on the first sample day (no previous close is known)
    div[0] = False
    cash_yield = np.where(div, rng.uniform(0.005, 0.03, size=(D, S)), 0.0)
    bonus = rng.random((D, S)) < 0.3
    bonus_ratio = np.where(div & bonus, rng.choice([0.2, 0.3, 0.5, 1.0], size=(D, S)), 0.0)

    forced = np.zeros((D, S), dtype=bool)
    if cfg.min_limit_events and D > 2:
        main = np.flatnonzero(np.isin(board_idx, [0, 1]))
        cand = [(d, s) for s in main for d in range(max(int(list_day[s]), 0) + 1, D)
                if not st[d, s] and not suspended[d, s]]
        if cand:
            pick = rng.choice(len(cand), size=min(cfg.min_limit_events, len(cand)), replace=False)
            for i in pick:
                forced[cand[i]] = True

    beta = np.clip(1.0 + 0.3 * rng.standard_normal(S), 0.2, 2.0)
    # activity: larger float caps trade more, with idiosyncratic dispersion
    cap = float_shares * price_c / 100.0
    activity = np.exp(0.35 * (np.log(cap) - np.median(np.log(cap)))
                      + cfg.orders_log_sd * rng.standard_normal(S))
    names = np.array([f"SYN{s[:6]}" for s in syms], dtype=object)
    boards = np.array([BOARDS[b][0] for b in board_idx], dtype=object)
    limit_frac = np.array([BOARDS[b][3] for b in board_idx])
    return Universe(
        dates=dates, symbols=syms, names=names, board=boards, limit_frac=limit_frac,
        industry=industry, industry_names=INDUSTRIES[: cfg.n_industries],
        float_shares=float_shares, ipo_price_c=price_c, list_day=list_day.astype(np.int64),
        list_date=list_date, beta=beta, activity=activity, st=st, suspended=suspended,
        cash_yield=cash_yield, bonus_ratio=bonus_ratio, forced_jump=forced,
    )
