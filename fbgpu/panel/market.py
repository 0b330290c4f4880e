"""The market as dense ``[dates, stocks]`` arrays: stock pool, evaluation returns, labels, styles.

Built from the store's ``daily`` table (one row per listed stock per trading day) and the
``securities`` master (listing dates). The calendar is the set of dates of the ``daily`` table:
"trading day T+k" is k rows later. Every quantity states what it may know (spec/research.md
"Dates and returns"); the tests perturb later data and check earlier values do not move.

=========================  =============================================  ====================
quantity                   definition                                      known at
=========================  =============================================  ====================
``universe[T]``            row on T, listed >= ``min_listed_days`` trading  close of T
                           days (T included), not ST on T
``tradable_next[T]``       row on T+1, not suspended on T+1, T+1 open below  open of T+1
                           the limit-up price (minus half a tick)
``scoring_pool[T]``        ``universe & traded[T]`` (row on T, not            close of T
                           suspended, volume and vwap > 0 on T): the
                           cross-section every score-side step uses
``pool[T]``                ``universe & tradable_next`` (the report's pool)  open of T+1
``forward_return[T]``      ``P_{T+6} / P_{T+1} - 1``                         close of T+6
``label[T]``               ``P_{T+11} / P_{T+1} - 1``, z-scored over the      close of T+11
                           pool of T
style factors ``[T]``      from rows <= T only                                close of T
=========================  =============================================  ====================

``P_t`` is the adjusted trade price on day t: ``vwap * adj_factor`` when the stock traded on t;
on a suspended day it is the adjusted close (= previous close), i.e. a position that cannot be
sold is marked at its last price; NaN when the stock has no row on t (not yet listed / delisted)
or t is past the end of the data.

The pool is, by the report's definition, an execution filter that looks one day ahead (a stock
suspended or opening at limit-up on T+1 cannot be bought at T+1). Panel preprocessing therefore
runs over ``universe`` (known at T), and the T+1 filter is applied only where a signal is traded
or evaluated. Every score-side cross-section (model input normalisation, the stocks a model
scores, score z-scores, fused and composite scores) runs over ``scoring_pool`` (known at the close
of T); ``pool`` is used only for labels (future by definition), evaluation and execution.

**On a device.** :func:`load_market` reads the store into host numpy arrays.
:meth:`Market.on` gives the same market on a backend's device (cupy on a GPU, the CPU stand-in
in the tests): the ``[D, S]`` arrays are uploaded through the backend's namespace (``present``,
``suspended``, ``st`` and ``industry`` at once, each price field the first time it is used, the
per-stock listing offsets once), and the pool, the labels, the traded mask, prices and returns,
``log_cap`` and ``universe`` are then computed there by the same code (``xp`` is the arrays'
namespace), with no host round trip: one definition of each, on either device. The calendar,
symbols and listing dates stay host metadata. The execution helpers of the backtest
(``growth``, ``tradability``, ...) and ``style_factors`` are host-side (run them on
:func:`load_market`'s market).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from fbgpu.data.store import Store, StoreError
from fbgpu.engine.backend import Backend, array_module
from fbgpu.panel.preprocess import quiet_nan_warnings, trailing_mean, trailing_sum, zscore

log = logging.getLogger(__name__)

#: Daily columns a Market holds (all float64 [D, S] except the flags and industry codes).
PRICE_FIELDS = ("open", "close", "vwap", "adj_factor", "limit_up", "limit_down", "amount",
                "volume", "float_cap")


@dataclass(frozen=True)
class PoolConfig:
    """Stock pool rules (TOML section ``[evaluate.pool]``).

    Attributes:
        min_listed_days: minimum trading days since listing, T included (60).
        exclude_st: drop ST stocks (True).
        exclude_suspended_next: drop stocks suspended (or without a row) on T+1 (True).
        exclude_limit_up_open_next: drop stocks opening at the limit-up price on T+1 (True).
        limit_tolerance: CNY; "at limit-up" means ``open >= limit_up - limit_tolerance``
            (0.005, half the 0.01 tick, absorbs float rounding of stored prices).
    """

    min_listed_days: int = 60
    exclude_st: bool = True
    exclude_suspended_next: bool = True
    exclude_limit_up_open_next: bool = True
    limit_tolerance: float = 0.005

    def __post_init__(self) -> None:
        if self.min_listed_days < 0:
            raise ValueError(f"pool.min_listed_days must be >= 0, got {self.min_listed_days}")


class _Uploaded(Mapping[str, Any]):
    """Host ``[D, S]`` fields uploaded to a device by ``xp.asarray`` on first access, each once
    (a model run that needs four price fields uploads four, not nine)."""

    def __init__(self, host: Mapping[str, np.ndarray], xp: Any) -> None:
        self._host, self._xp, self._dev = host, xp, {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._dev:
            self._dev[name] = self._xp.asarray(self._host[name])
        return self._dev[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._host)

    def __len__(self) -> int:
        return len(self._host)


@dataclass
class Market:
    """Dense daily market data on the trading calendar; see the module docstring.

    Float fields are NaN where a stock has no row; ``suspended``/``st`` are False there.
    ``industry`` holds codes into ``industries`` (-1 = unknown/absent). ``list_date`` is
    ``datetime64[D]`` per symbol (NaT = unknown). The ``[D, S]`` arrays are numpy (from
    :func:`load_market`) or all on one device (:meth:`on`).
    """

    dates: list[dt.date]
    symbols: np.ndarray
    present: Any
    fields: Mapping[str, Any]
    suspended: Any
    st: Any
    industry: Any
    industries: list[str]
    list_date: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]

    @property
    def xp(self) -> Any:
        """The array namespace of the ``[D, S]`` arrays (numpy, cupy or the stand-in's)."""
        return array_module(self.present)

    def on(self, backend: Backend) -> Market:
        """This market with its ``[D, S]`` arrays on ``backend``'s device (the module doc's
        "On a device"); ``self`` when they are there already (always on the CPU backend).

        The uploads are the raw inputs' one crossing: ``present``, ``suspended``, ``st`` and
        ``industry`` now, the price fields lazily (:class:`_Uploaded`), each at most once per
        returned market.
        """
        xp = backend.xp
        if self.xp is xp:
            return self
        if xp is not np and self.xp is not np:
            raise ValueError("Market.on: the market is on another device already")
        return Market(
            dates=self.dates, symbols=self.symbols, present=xp.asarray(self.present),
            fields=_Uploaded(self.fields, xp), suspended=xp.asarray(self.suspended),
            st=xp.asarray(self.st), industry=xp.asarray(self.industry),
            industries=self.industries, list_date=self.list_date, meta=self.meta)

    @property
    def shape(self) -> tuple[int, int]:
        return self.present.shape  # type: ignore[return-value]

    def date_index(self, date: dt.date | str) -> int:
        d = date if isinstance(date, dt.date) else dt.date.fromisoformat(str(date))
        try:
            return self.dates.index(d)
        except ValueError as e:
            raise KeyError(f"{d} is not a trading day of this market "
                           f"({self.dates[0]}..{self.dates[-1]})") from e

    # ------------------------------------------------------------------ pool
    def listed_days(self) -> np.ndarray:
        """``[D, S]`` trading days since listing, T included (0 before listing).

        Days before the first date of the data are counted as weekdays
        (``numpy.busday_count``), the calendar being unknown there. A stock without a listing
        date counts from its first row, except that a stock present on the first date is
        assumed seasoned (listed long before the data start).
        """
        if "listing_dates" in self.meta and not self.meta.get("listing_dates_said"):
            log.warning("%s: listing dates inferred from daily rows", self.meta["listing_dates"])
            self.meta["listing_dates_said"] = True
        xp = self.xp
        D = self.shape[0]
        start, before, unknown = self._listing
        first_row = xp.where(self.present.any(axis=0), self.present.argmax(axis=0), D)
        # Unknown listing date: from the first row, or seasoned if present from the start.
        seasoned = unknown & (first_row == 0)
        start = xp.where(unknown, first_row, start)
        before = xp.where(seasoned, 10**6, before)
        t = xp.arange(D, dtype=xp.int64)[:, None]
        return xp.maximum(t - start[None, :] + 1 + before[None, :], 0).astype(xp.int64)

    @cached_property
    def _listing(self) -> tuple[Any, Any, Any]:
        """Per stock, from the listing dates and the calendar (host metadata, uploaded once):
        the calendar row of the listing date (0 before the data), the trading days counted
        before the data (weekdays, ``numpy.busday_count``), and whether the date is unknown."""
        cal = np.array(self.dates, dtype="datetime64[D]")
        ld = self.list_date.astype("datetime64[D]")
        known = ~np.isnat(ld)
        # Listed inside the calendar: count calendar rows from the listing date.
        start = np.searchsorted(cal, np.where(known, ld, cal[0]), side="left").astype(np.int64)
        before = np.zeros(len(ld), dtype=np.int64)
        early = known & (ld < cal[0])
        if early.any():
            before[early] = np.busday_count(ld[early], cal[0])
        start = np.where(early, 0, start)
        xp = self.xp
        return xp.asarray(start), xp.asarray(before), xp.asarray(~known)

    def universe(self, config: PoolConfig | None = None) -> np.ndarray:
        """``[D, S]`` bool: the cross-section of day T, known at the close of T."""
        cfg = config or PoolConfig()
        uni = self.present & (self.listed_days() >= cfg.min_listed_days)
        if cfg.exclude_st:
            uni &= ~self.st
        return uni

    def tradable_next(self, config: PoolConfig | None = None) -> np.ndarray:
        """``[D, S]`` bool: buyable on T+1 (known at the open of T+1); False on the last day."""
        cfg = config or PoolConfig()
        xp = self.xp
        D, S = self.shape
        ok = xp.zeros((D, S), dtype=bool)
        nxt = xp.ones((D - 1, S), dtype=bool) if D > 1 else xp.zeros((0, S), dtype=bool)
        if cfg.exclude_suspended_next:
            nxt &= self.present[1:] & ~self.suspended[1:]
        else:
            nxt &= self.present[1:]
        if cfg.exclude_limit_up_open_next:
            with np.errstate(invalid="ignore"):
                at_limit = self["open"][1:] >= self["limit_up"][1:] - cfg.limit_tolerance
            nxt &= ~at_limit
        ok[:-1] = nxt
        return ok

    def pool(self, config: PoolConfig | None = None) -> np.ndarray:
        """``[D, S]`` bool: the report's stock pool (universe on T and tradable on T+1).

        Known only at the open of T+1: for labels, evaluation and execution, never for scores
        (use :meth:`scoring_pool`).
        """
        return self.universe(config) & self.tradable_next(config)

    def scoring_pool(self, config: PoolConfig | None = None) -> np.ndarray:
        """``[D, S]`` bool: the stocks scored at T, known at the close of T.

        ``universe[T] & traded[T]``: listed long enough and not ST on T (:meth:`universe`), and
        traded on T (a row, not suspended, volume and vwap > 0; :meth:`traded`). Model inputs are
        normalised over it and models score exactly these stocks, so nothing about T+1 (e.g. a
        suspension announced for T+1) can change a score at T.
        """
        return self.universe(config) & self.traded()

    # ------------------------------------------------------------------ prices and returns
    def traded(self) -> np.ndarray:
        """``[D, S]`` bool: traded on the day (a row, not suspended, volume and vwap > 0)."""
        with np.errstate(invalid="ignore"):
            return (self.present & ~self.suspended & (self["volume"] > 0)
                    & self.xp.isfinite(self["vwap"]) & (self["vwap"] > 0))

    def trade_price(self) -> np.ndarray:
        """``[D, S]`` adjusted price ``P_t`` (see the module docstring)."""
        xp = self.xp
        adj = self["adj_factor"]
        px = xp.where(self.traded(), self["vwap"] * adj, self["close"] * adj)
        return xp.where(self.present, px, xp.nan)

    def adjusted_close(self) -> np.ndarray:
        """``[D, S]`` close * adj_factor (NaN without a row)."""
        return self.xp.where(self.present, self["close"] * self["adj_factor"], self.xp.nan)

    def forward_returns(self, start: int = 1, end: int = 6) -> np.ndarray:
        """``[D, S]`` return bought at ``P_{T+start}``, valued at ``P_{T+end}``; known at T+end.

        NaN where either price is missing or ``T + end`` is past the last date
        (:func:`forward_return` of :meth:`trade_price`).
        """
        return forward_return(self.trade_price(), start, end)

    def labels(self, pool: np.ndarray | None = None, start: int = 1, end: int = 11) -> np.ndarray:
        """``[D, S]`` training label: the ``start..end`` return z-scored over ``pool`` per date.

        Known at the close of T+end: a model trained at R may use samples with T + end < R.
        :func:`zscored_return` of :meth:`trade_price`; computed where the market's arrays live
        (:meth:`on`).
        """
        return zscored_return(self.trade_price(), pool, start, end)

    # ------------------------------------------------------------------ execution (backtest)
    @cached_property
    def index(self) -> dict[str, int]:
        """Symbol -> position on the stock axis."""
        return {str(s): i for i, s in enumerate(self.symbols)}

    @cached_property
    def halted(self) -> np.ndarray:
        """``[D, S]`` bool: cannot trade on the day (suspended, or no row: not listed)."""
        return self.suspended | ~self.present

    @cached_property
    def close_adj(self) -> np.ndarray:
        """``[D, S]`` close * adj_factor (NaN without a row)."""
        return self["close"] * self["adj_factor"]

    @cached_property
    def vwap_adj(self) -> np.ndarray:
        """``[D, S]`` vwap * adj_factor (NaN without a row)."""
        return self["vwap"] * self["adj_factor"]

    def growth(self, t: int) -> np.ndarray:
        """Close-to-close gross return ``close_adj[t] / close_adj[t-1]`` of every stock on day
        ``t`` (1 where undefined); known at the close of ``t``."""
        with np.errstate(invalid="ignore", divide="ignore"):
            g = self.close_adj[t] / self.close_adj[t - 1]
        return np.where(np.isfinite(g) & (g > 0), g, 1.0)

    def growth_to_vwap(self, t: int) -> np.ndarray:
        """Close ``t-1`` to vwap ``t`` gross return (1 for halted or missing stocks): the drift
        of a position up to the moment a rebalance executes at ``t``'s vwap."""
        with np.errstate(invalid="ignore", divide="ignore"):
            g = self.vwap_adj[t] / self.close_adj[t - 1]
        return np.where(np.isfinite(g) & (g > 0) & ~self.halted[t], g, 1.0)

    def tradability(self, t: int, tol: float) -> tuple[np.ndarray, np.ndarray]:
        """``(can_buy, can_sell)`` on day ``t``: not halted, and not opening at the limit
        (``open >= limit_up - tol`` blocks buying, ``open <= limit_down + tol`` selling)."""
        ok = ~self.halted[t]
        with np.errstate(invalid="ignore"):
            at_up = self["open"][t] >= self["limit_up"][t] - tol
            at_down = self["open"][t] <= self["limit_down"][t] + tol
        return ok & ~at_up, ok & ~at_down

    def industry_names(self, t: int, stocks: np.ndarray) -> np.ndarray:
        """Industry names of ``stocks`` (positions) on day ``t``; ``"unknown"`` where none."""
        codes = self.industry[t][stocks]
        names = np.array([*self.industries, "unknown"], dtype=object)
        return names[np.where(codes >= 0, codes, len(self.industries))]

    # ------------------------------------------------------------------ exposures
    def log_cap(self) -> np.ndarray:
        """``[D, S]`` log float market cap (NaN where absent or non-positive)."""
        xp = self.xp
        cap = self["float_cap"]
        with np.errstate(invalid="ignore", divide="ignore"):
            return xp.where(cap > 0, xp.log(cap), np.nan)

    def style_factors(self, window: int = 20, beta_window: int = 60,
                      min_valid: int = 10, beta_min_obs: int = 20) -> dict[str, np.ndarray]:
        """Common style factors for correlation analysis, each ``[D, S]`` and known at T.

        * ``reversal``: past ``window``-day return ``C_T / C_{T-window} - 1`` (adjusted closes);
        * ``size``: log float cap on T;
        * ``amount``: mean daily amount (CNY) over the traded days among the last ``window``;
        * ``turnover``: mean daily share turnover ``volume / float shares`` over the traded days
          among the last ``window`` (float shares = float_cap / close of that day);
        * ``beta``: OLS slope of daily adjusted-close returns on the equal-weight market return
          (mean over the stocks that traded) over the last ``beta_window`` days, at least
          ``beta_min_obs`` pairs.
        """
        D, _ = self.shape
        adj_close = self.adjusted_close()
        rev = np.full_like(adj_close, np.nan)
        if window < D:
            with np.errstate(invalid="ignore", divide="ignore"):
                rev[window:] = adj_close[window:] / adj_close[:-window] - 1.0
        traded = self.traded()
        amount = trailing_mean(np.where(traded, self["amount"], np.nan), window, min_valid)
        with np.errstate(invalid="ignore", divide="ignore"):
            shares = self["float_cap"] / self["close"]
            daily_turn = np.where(traded & (shares > 0), self["volume"] / shares, np.nan)
        turnover = trailing_mean(daily_turn, window, min_valid)
        ret = np.full_like(adj_close, np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            ret[1:] = np.where(traded[1:], adj_close[1:] / adj_close[:-1] - 1.0, np.nan)
        with np.errstate(invalid="ignore"), quiet_nan_warnings():
            mkt = np.nanmean(ret, axis=1, keepdims=True)
        both = np.isfinite(ret) & np.isfinite(mkt)
        x = np.where(both, np.broadcast_to(mkt, ret.shape), np.nan)
        y = np.where(both, ret, np.nan)
        sx, n = trailing_sum(x, beta_window)
        sy, _ = trailing_sum(y, beta_window)
        sxy, _ = trailing_sum(x * y, beta_window)
        sxx, _ = trailing_sum(x * x, beta_window)
        with np.errstate(invalid="ignore", divide="ignore"):
            var = n * sxx - sx * sx
            beta = (n * sxy - sx * sy) / var
        beta = np.where((n >= beta_min_obs) & (var > 0), beta, np.nan)
        return {"reversal": rev, "size": self.log_cap(), "amount": amount,
                "turnover": turnover, "beta": beta}


def forward_return(px: Any, start: int, end: int) -> Any:
    """``[D, S]`` return ``px[T+end] / px[T+start] - 1`` of prices ``px [D, S]``, known at T+end.

    NaN where either price is missing and where ``T + end`` is past the last row. Any ``xp``
    (the result lives where ``px`` does).
    """
    if not 0 <= start < end:
        raise ValueError(f"need 0 <= start < end, got start={start}, end={end}")
    D = px.shape[0]
    out = array_module(px).full_like(px, np.nan)
    if end < D:
        with np.errstate(invalid="ignore", divide="ignore"):
            out[: D - end] = px[end:] / px[start: D - end + start] - 1.0
    return out


def zscored_return(px: Any, pool: Any | None, start: int = 1, end: int = 11) -> Any:
    """The training label: :func:`forward_return` z-scored over ``pool`` per date (row).

    ``z = (r - mean) / std`` over the stocks of ``pool[T]`` with a finite return (population
    std, :func:`fbgpu.panel.preprocess.zscore` with at least 2 stocks); NaN elsewhere and on
    dates whose std is 0. Known at the close of T+end. The one label of the project
    (:meth:`Market.labels` on adjusted trade prices; :func:`fbgpu.models.make_labels` on a
    bare vwap panel).
    """
    r = forward_return(px, start, end)
    if pool is not None:
        r = array_module(r).where(pool, r, np.nan)
    return zscore(r, min_stocks=2)


def rebalance_indices(n_dates: int, every: int = 5, offset: int = 0) -> np.ndarray:
    """Row indices of the rebalance dates: ``offset, offset + every, ...`` below ``n_dates``."""
    if every < 1 or offset < 0:
        raise ValueError(f"need every >= 1 and offset >= 0, got every={every}, offset={offset}")
    return np.arange(offset, n_dates, every, dtype=np.int64)


def _bool_field(a: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.nan_to_num(a.astype(np.float64), nan=0.0) != 0


def load_market(
    store: Store,
    dates: list[dt.date] | None = None,
    symbols: list[str] | None = None,
) -> Market:
    """Read the ``daily`` table (and ``securities`` if present) into a :class:`Market`.

    ``dates`` defaults to every date of the ``daily`` table; pass a contiguous run of trading
    days (the calendar is the rows). Raises :class:`StoreError` when the table is missing or a
    required column is absent.
    """
    all_dates = store.dates("daily")
    if not all_dates:
        raise StoreError(f"store {store.root} has no daily table: run synth or ingest first")
    dates = list(dates) if dates is not None else all_dates
    cols = [*PRICE_FIELDS, "suspended", "st", "industry"]
    panel = store.read_panel("daily", dates, columns=cols, symbols=symbols)
    missing = [c for c in cols if c not in panel.fields]
    if missing:
        raise StoreError(f"daily table in {store.root} lacks columns {missing}")
    present = panel.present
    fields = {c: panel.fields[c].astype(np.float64) for c in PRICE_FIELDS}
    ind_raw = panel.fields["industry"]
    names = sorted({s for s in ind_raw[present].tolist() if s is not None and s != ""})
    lookup = {s: i for i, s in enumerate(names)}
    industry = np.full(ind_raw.shape, -1, dtype=np.int64)
    di, si = np.nonzero(present)
    industry[di, si] = [lookup.get(s, -1) if s is not None else -1 for s in ind_raw[di, si]]
    list_date = np.full(len(panel.symbols), np.datetime64("NaT"), dtype="datetime64[D]")
    meta: dict[str, Any] = {}
    if store.has("securities"):
        sec = store.read("securities", None, ["symbol", "list_date"]).to_pandas()
        ld = dict(zip(sec["symbol"].astype(str), sec["list_date"], strict=True))
        for i, s in enumerate(panel.symbols):
            v = ld.get(s)
            if v is not None and v == v:
                list_date[i] = np.datetime64(v, "D")
    else:  # said when the listing dates are used (Market.listed_days), not on every load
        meta["listing_dates"] = f"store {store.root} has no securities table"
    return Market(
        dates=list(panel.dates),
        symbols=panel.symbols,
        present=present,
        fields=fields,
        suspended=_bool_field(panel.fields["suspended"]) & present,
        st=_bool_field(panel.fields["st"]) & present,
        industry=industry,
        industries=names,
        list_date=list_date,
        meta=meta,
    )
