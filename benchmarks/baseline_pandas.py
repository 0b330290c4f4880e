"""A straightforward pandas implementation of the 27 factors: the researcher's baseline.

This is how the factors of spec/factors.md are typically written in a research notebook: read a
day's raw tables into pandas DataFrames, ``groupby("symbol").apply`` a Python function that
computes one stock-day's values with pandas/numpy/scipy calls, and join the three families on
the symbol. It is *not* used by fbgpu; the benchmark suite (:mod:`suite`) times it against the
engine on the same store, and ``tests/test_bench_baseline.py`` checks that it computes the same
numbers as :func:`fbgpu.factors.compute_day` (so the benchmark compares the same job).

Definitions (restated from spec/factors.md; see docs/benchmarks.md):

* statistics drop non-finite observations; skewness/kurtosis are the biased (population)
  moments ``m3 / m2^1.5`` and ``m4 / m2^2 - 3``; Pearson correlations use the pairs where both
  sides are finite; all of them are NaN below their minimum count (10 for a full day, 5 in a
  30-minute window) or when a side is exactly constant;
* ratios are NaN only when the denominator is 0 or not finite; sums over an empty filter are 0;
* a stock absent from a source table that day gets NaN for the whole family.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
import pandas as pd
import scipy.stats

from fbgpu.data.store import Store
from fbgpu.factors import FACTORS, FactorConfig, resolve_names

NS_PER_MIN = 60 * 1_000_000_000


def _clock(h: int, m: int) -> int:
    """Nanoseconds since midnight of ``h:m``."""
    return (h * 60 + m) * NS_PER_MIN


T_0915, T_0930, T_1000 = _clock(9, 15), _clock(9, 30), _clock(10, 0)
T_1130, T_1300, T_1500 = _clock(11, 30), _clock(13, 0), _clock(15, 0)


# ------------------------------------------------------------------------ statistics helpers
def _finite(s: pd.Series) -> pd.Series:
    return s[np.isfinite(s.to_numpy(dtype=float))]


def skew(x: pd.Series, min_obs: int) -> float:
    """Population skewness of the finite values; NaN below ``min_obs`` or when constant."""
    x = _finite(x)
    if len(x) < min_obs or x.min() == x.max():
        return math.nan
    return float(scipy.stats.skew(x.to_numpy(), bias=True))


def kurt(x: pd.Series, min_obs: int) -> float:
    """Excess population kurtosis of the finite values; NaN below ``min_obs`` or when constant."""
    x = _finite(x)
    if len(x) < min_obs or x.min() == x.max():
        return math.nan
    return float(scipy.stats.kurtosis(x.to_numpy(), fisher=True, bias=True))


def corr(x: pd.Series, y: pd.Series, min_obs: int) -> float:
    """Pearson correlation over the pairs where both are finite (NaN below ``min_obs``/constant)."""
    xv, yv = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(xv) & np.isfinite(yv)
    xv, yv = xv[ok], yv[ok]
    if len(xv) < min_obs or xv.min() == xv.max() or yv.min() == yv.max():
        return math.nan
    return float(pd.Series(xv).corr(pd.Series(yv)))


def ratio(num: float, den: float) -> float:
    """``num / den``; NaN when the denominator is 0 or not finite."""
    if den == 0 or not np.isfinite(den):
        return math.nan
    return float(num / den)


def minute_of(ts: pd.Series) -> pd.Series:
    """Minute 0..239 of tick timestamps (ns since midnight) on the 240-bar grid.

    Before 09:30 -> 0 (opening auction); 11:30-13:00 -> 119; from 15:00 -> 239 (closing auction).
    """
    t = ts.to_numpy()
    k = np.select(
        [t < T_0930, t < T_1130, t < T_1300, t < T_1500],
        [0, (t - T_0930) // NS_PER_MIN, 119, 120 + (t - T_1300) // NS_PER_MIN],
        239,
    )
    return pd.Series(np.clip(k, 0, 239), index=ts.index)


# ------------------------------------------------------------------------ one stock-day each
def minute_returns(bars: pd.DataFrame) -> pd.Series:
    """``r_k = close_k / close_{k-1} - 1`` (k >= 1) and ``r_0 = close_0 / open_0 - 1``."""
    close = bars["close"].astype(float)
    r = close / close.shift(1) - 1.0
    r.iloc[0] = close.iloc[0] / float(bars["open"].iloc[0]) - 1.0
    return r.replace([np.inf, -np.inf], np.nan)


def minute_factors(bars: pd.DataFrame, cfg: FactorConfig) -> pd.Series:
    """The 15 minute-bar factors of one stock-day (``bars``: its 240 rows)."""
    bars = bars.sort_values("minute").reset_index(drop=True)
    r = minute_returns(bars)
    volume = bars["volume"].astype(float)
    amount = bars["amount"].astype(float)
    trades = bars["num_trades"].astype(float)
    day, win = cfg.min_obs_day, cfg.min_obs_window
    out: dict[str, float] = {}
    out["late_skew_ret"] = skew(r.iloc[210:240], win)
    r2 = r**2
    out["down_vol_perc"] = ratio(r2[r < 0].sum(), r2.sum())
    out["corr_ret_lastret"] = corr(r.iloc[1:], r.shift(1).iloc[1:], day)
    out["corr_close_nextopen"] = corr(bars["close"].shift(1).iloc[1:],
                                      bars["open"].iloc[1:], day)
    buckets = volume.groupby(bars["minute"] // 30).sum()
    for j in range(2, 8):
        out[f"volume_perc{j}"] = ratio(buckets.get(j - 1, 0.0), buckets.sum())
    out["corr_volume_item"] = corr(volume, trades, day)
    out["early_corr_volume_ret"] = corr(volume.iloc[:30], r.iloc[:30], win)
    traded = pd.DataFrame({"per_trade": amount / trades, "r": r})[trades > 0]
    if traded.empty:
        out["bigorder_ret"] = math.nan
    else:
        frac = Fraction(str(cfg.bigorder_ret_top_frac))
        keep = math.ceil(frac * len(traded))
        top = traded.nlargest(keep, "per_trade", keep="first")
        out["bigorder_ret"] = float(_finite(np.log1p(top["r"])).sum())
    down = r < 0
    out["down_single_amt_perc"] = ratio(
        ratio(amount[down].sum(), trades[down].sum()), ratio(amount.sum(), trades.sum())
    )
    amplitude = (bars["high"] - bars["low"]) / bars["open"]
    out["corr_volume_amplitude"] = corr(volume, amplitude, day)
    return pd.Series(out)


def _big_orders(buy: pd.Series, sell: pd.Series, cfg: FactorConfig) -> tuple[pd.Series, pd.Series]:
    """Big flags of the reconstructed buy and sell orders (amount per order id)."""
    if cfg.big_order_rule == "fixed_notional":
        return buy >= cfg.big_order_notional, sell >= cfg.big_order_notional
    every = pd.concat([buy, sell], ignore_index=True)
    if every.min() == every.max():
        return buy == buy, sell == sell
    threshold = every.mean() + cfg.big_order_k * every.std(ddof=0)
    return buy >= threshold, sell >= threshold


def trade_factors(trades: pd.DataFrame, ret: pd.Series | None, cfg: FactorConfig) -> pd.Series:
    """The 8 tick-trade factors of one stock-day (``ret``: its minute returns, or None)."""
    t = trades.sort_values("seq")
    amount = t["amount"].astype(float)
    buy = t.groupby("buy_order_id")["amount"].sum()
    sell = t.groupby("sell_order_id")["amount"].sum()
    big_buy, big_sell = _big_orders(buy, sell, cfg)
    trade_big_buy = t["buy_order_id"].map(big_buy).astype(bool)
    trade_big_sell = t["sell_order_id"].map(big_sell).astype(bool)
    early = (t["ts"] >= T_0930) & (t["ts"] < T_1000)
    side = t["side"]
    dlogp = np.log(t["price"].astype(float)).diff().fillna(0.0)
    total = amount.sum()
    out: dict[str, float] = {}
    out["bigorder_amt_perc"] = ratio(buy[big_buy].sum() + sell[big_sell].sum(), 2 * total)
    a_buy = amount[early & trade_big_buy].sum()
    a_sell = amount[early & trade_big_sell].sum()
    out["early_bigorder_buy_perc"] = ratio(a_buy, a_buy + a_sell)
    out["bigorder_ret2"] = float(dlogp[trade_big_buy | trade_big_sell].sum())
    active_big = ((side == 1) & trade_big_buy) | ((side == -1) & trade_big_sell)
    out["early_active_bigorder_ret"] = float(dlogp[early & active_big].sum())
    out["concentration_diff"] = (ratio((buy**2).sum(), total**2)
                                 - ratio((sell**2).sum(), total**2))
    out["early_active_buy_perc"] = ratio(amount[early & (side == 1)].sum(), amount[early].sum())
    signed = amount * side.astype(float)
    nab = signed.groupby(minute_of(t["ts"])).sum().reindex(range(240), fill_value=0.0)
    r = ret if ret is not None else pd.Series(np.nan, index=range(240))
    nab_v, r_v = nab.to_numpy(), r.to_numpy()
    out["corr_netactivebuy_lastret"] = corr(nab_v[1:], r_v[:-1], cfg.min_obs_day)
    out["corr_netactivebuy_nextret"] = corr(nab_v[:-1], r_v[1:], cfg.min_obs_day)
    return pd.Series(out)


def order_factors(orders: pd.DataFrame, cfg: FactorConfig) -> pd.Series:
    """The 4 tick-order factors of one stock-day (new orders placed 09:15:00-15:00:00)."""
    o = orders[(orders["ts"] >= T_0915) & (orders["ts"] <= T_1500)]
    volume = o["volume"].astype(float)
    buy, sell = volume[o["side"] == 1], volume[o["side"] == -1]
    early = (o["ts"] >= T_0930) & (o["ts"] < T_1000)
    limit_buy = (o["side"] == 1) & (o["order_type"] == 0)
    day = cfg.min_obs_day
    return pd.Series({
        "skew_order_diff": skew(buy, day) - skew(sell, day),
        "kurt_order_diff": kurt(buy, day) - kurt(sell, day),
        "early_kurt_order": kurt(volume[early], cfg.min_obs_window),
        "corr_buyorder_volume_price": corr(volume[limit_buy], o["price"][limit_buy], day),
    })


# ------------------------------------------------------------------------ one day
def _read(store: Store, table: str, date: dt.date) -> pd.DataFrame | None:
    if not store.has(table, date):
        return None
    df = store.read(table, date).to_pandas()
    df["symbol"] = df["symbol"].astype(str)
    return df


def compute_day_pandas(
    store: Store | str,
    date: dt.date | str,
    names: Sequence[str] | None = None,
    config: FactorConfig | None = None,
) -> pd.DataFrame:
    """The factors ``names`` (default all 27) of every stock on ``date``, pandas groupby-apply.

    Returns a DataFrame indexed by symbol (the sorted union of the day's minute/trades/orders
    symbols) with one float64 column per factor, in registry order; NaN where undefined.
    """
    store = store if isinstance(store, Store) else Store(store)
    day = date if isinstance(date, dt.date) else dt.date.fromisoformat(str(date))
    names = resolve_names(list(names) if names is not None else None)
    cfg = config or FactorConfig()
    families = {FACTORS[n].family for n in names}
    frames: list[pd.DataFrame] = []
    symbols: set[str] = set()
    returns: dict[str, pd.Series] = {}

    wanted = {"minute": bool(families & {"minute", "trade"}), "trades": "trade" in families,
              "orders": "order" in families}
    tables = {t: _read(store, t, day) if need else None for t, need in wanted.items()}
    for t, need in wanted.items():  # the universe is every source's stocks, read or not
        if tables[t] is not None:
            symbols.update(tables[t]["symbol"].unique())
        elif not need and store.has(t, day):
            symbols.update(store.read(t, day, ["symbol"]).column("symbol")
                           .cast("string").to_pylist())

    if (minute := tables["minute"]) is not None:
        groups = minute.sort_values(["symbol", "minute"]).groupby("symbol", sort=True)
        if "minute" in families:
            frames.append(groups.apply(minute_factors, cfg=cfg))
        if "trade" in families:
            returns = {s: minute_returns(g).reset_index(drop=True) for s, g in groups}
    if (trades := tables["trades"]) is not None:
        frames.append(trades.groupby("symbol", sort=True).apply(
            lambda g: trade_factors(g, returns.get(str(g.name)), cfg)))
    if (orders := tables["orders"]) is not None:
        frames.append(orders.groupby("symbol", sort=True).apply(order_factors, cfg=cfg))
    out = pd.concat(frames, axis=1) if frames else pd.DataFrame()
    out = out.reindex(index=sorted(symbols), columns=names).astype(float)
    out.index.name = "symbol"
    return out
