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


# ======================================================================= the vectorised peer
# How an experienced pandas user writes the same 27 definitions: no Python per stock-day. The
# minute family on wide ``[stocks, 240]`` frames (``pivot``; row-wise numpy reductions), the tick
# families as masked columns (NaN outside a selection) reduced by one ``groupby("symbol")``
# aggregation per statistic, order amounts by ``groupby([symbol, order_id])``. Same numbers as
# ``compute_day_pandas`` (tests/test_bench_baseline.py checks both against the engine).
def _row_stats(x: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, ...]:
    """Row-wise ``n, mean, m2, m3, m4, min, max`` of the finite ``x`` where ``keep`` (two-pass
    central moments, population)."""
    ok = keep & np.isfinite(x)
    n = ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        xs = np.where(ok, x, 0.0)
        mean = xs.sum(axis=1) / n
        d = np.where(ok, x - mean[:, None], 0.0)
        m2, m3, m4 = ((d**p).sum(axis=1) / n for p in (2, 3, 4))
    lo = np.where(ok, x, np.inf).min(axis=1)
    hi = np.where(ok, x, -np.inf).max(axis=1)
    return n, mean, m2, m3, m4, lo, hi


def _row_skew(x: np.ndarray, keep: np.ndarray, min_obs: int) -> np.ndarray:
    n, _, m2, m3, _, lo, hi = _row_stats(x, keep)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n >= min_obs) & (lo < hi), m3 / m2**1.5, np.nan)


def _row_corr(x: np.ndarray, y: np.ndarray, keep: np.ndarray, min_obs: int) -> np.ndarray:
    ok = keep & np.isfinite(x) & np.isfinite(y)
    n, mx, vx, _, _, lx, hx = _row_stats(x, ok)
    _, my, vy, _, _, ly, hy = _row_stats(y, ok)
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = np.where(ok, (x - mx[:, None]) * (y - my[:, None]), 0.0).sum(axis=1) / n
        c = cov / np.sqrt(vx * vy)
    return np.where((n >= min_obs) & (lx < hx) & (ly < hy), c, np.nan)


def _ratio_v(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((den != 0) & np.isfinite(den), num / den, np.nan)




def minute_frame_vec(bars: pd.DataFrame, cfg: FactorConfig) -> tuple[pd.DataFrame, np.ndarray]:
    """The 15 minute factors of every stock (wide frames) and the ``[stocks, 240]`` returns."""
    fields = ["open", "high", "low", "close", "volume", "amount", "num_trades"]
    wide = bars.pivot(index="symbol", columns="minute", values=fields)  # one pivot, sorted
    syms = wide.index.to_numpy()
    o, h, lo, c, v, amt, nt = (wide[k].to_numpy(dtype=float) for k in fields)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.empty_like(c)
        r[:, 0] = c[:, 0] / o[:, 0] - 1.0
        r[:, 1:] = c[:, 1:] / c[:, :-1] - 1.0
    r[~np.isfinite(r)] = np.nan
    day, win = cfg.min_obs_day, cfg.min_obs_window
    k = np.arange(240)[None, :]
    every = np.ones_like(r, dtype=bool)
    out: dict[str, np.ndarray] = {}
    out["late_skew_ret"] = _row_skew(r, np.broadcast_to(k >= 210, r.shape), win)
    r2 = r**2
    out["down_vol_perc"] = _ratio_v(np.where(r < 0, r2, 0.0).sum(axis=1), np.nansum(r2, axis=1))
    lag = np.full_like(r, np.nan)
    lag[:, 1:] = r[:, :-1]
    out["corr_ret_lastret"] = _row_corr(r, lag, np.broadcast_to(k >= 1, r.shape), day)
    prev_c = np.full_like(c, np.nan)
    prev_c[:, 1:] = c[:, :-1]
    out["corr_close_nextopen"] = _row_corr(prev_c, o, np.broadcast_to(k >= 1, r.shape), day)
    total_v = v.sum(axis=1)
    for j in range(2, 8):
        out[f"volume_perc{j}"] = _ratio_v(v[:, (j - 1) * 30:j * 30].sum(axis=1), total_v)
    out["corr_volume_item"] = _row_corr(v, nt, every, day)
    out["early_corr_volume_ret"] = _row_corr(v, r, np.broadcast_to(k < 30, r.shape), win)
    # top fraction of the traded minutes by amount per trade (ties: the earlier minute first)
    frac = Fraction(str(cfg.bigorder_ret_top_frac))
    traded = nt > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        per = np.where(traded, amt / nt, -np.inf)
    order = np.argsort(-per, axis=1, kind="stable")
    n_tr = traded.sum(axis=1)
    keep_n = -((-frac.numerator * n_tr) // frac.denominator)  # ceil(frac * n)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(240)[None, :].repeat(len(r), 0), axis=1)
    top = traded & (rank < keep_n[:, None])
    lr = np.log1p(r)
    out["bigorder_ret"] = np.where(n_tr > 0, np.where(top & np.isfinite(lr), lr, 0.0)
                                   .sum(axis=1), np.nan)
    down = r < 0
    out["down_single_amt_perc"] = _ratio_v(
        _ratio_v(np.where(down, amt, 0.0).sum(axis=1), np.where(down, nt, 0.0).sum(axis=1)),
        _ratio_v(amt.sum(axis=1), nt.sum(axis=1)))
    with np.errstate(invalid="ignore", divide="ignore"):
        out["corr_volume_amplitude"] = _row_corr(v, (h - lo) / o, every, day)
    return pd.DataFrame(out, index=pd.Index(syms, name="symbol")), r


def _frame_moments(frame: pd.DataFrame, key: pd.Series) -> dict[str, pd.DataFrame]:
    """Per group and column of ``frame``: ``n, mean, m2, m3, m4, min, max`` of the non-NaN
    values (two-pass central moments), from one ``groupby`` (its group ids are computed once);
    ``cov`` of the ``(vc, pc)`` pair when present."""
    g = frame.groupby(key, sort=True, observed=True)
    d = frame - g.transform("mean")
    parts = {"m2": d**2, "m3": d**3, "m4": d**4}
    if "vc" in frame and "pc" in frame:
        parts["cov"] = (d["vc"] * d["pc"]).to_frame("vc")
    central = pd.concat(parts, axis=1).groupby(key, sort=True, observed=True).mean()
    out = {k: central[k] for k in parts}
    out.update(n=g.count(), mean=g.mean(), min=g.min(), max=g.max())
    return out


def order_frame_vec(orders: pd.DataFrame, cfg: FactorConfig) -> pd.DataFrame:
    """The 4 order factors of every stock: the selections as masked columns (NaN outside),
    their moments from one grouped pass (:func:`_frame_moments`)."""
    ts, side, key = orders["ts"], orders["side"], orders["symbol"]
    vol = orders["volume"].astype(float)
    price = orders["price"].astype(float)
    ok = (ts >= T_0915) & (ts <= T_1500) & np.isfinite(vol)
    limit = ok & (side == 1) & (orders["order_type"] == 0) & np.isfinite(price)
    frame = pd.DataFrame({
        "vb": vol.where(ok & (side == 1)), "vs": vol.where(ok & (side == -1)),
        "ve": vol.where(ok & (ts >= T_0930) & (ts < T_1000)),
        "vc": vol.where(limit), "pc": price.where(limit),
    })
    m = _frame_moments(frame, key)
    day, win = cfg.min_obs_day, cfg.min_obs_window

    def ok_(c: str, min_obs: int) -> pd.Series:
        return (m["n"][c] >= min_obs) & (m["min"][c] < m["max"][c])

    def skew(c: str) -> pd.Series:
        return (m["m3"][c] / m["m2"][c] ** 1.5).where(ok_(c, day))

    def kurt(c: str, min_obs: int) -> pd.Series:
        return (m["m4"][c] / m["m2"][c] ** 2 - 3.0).where(ok_(c, min_obs))

    corr = (m["cov"]["vc"] / np.sqrt(m["m2"]["vc"] * m["m2"]["pc"])).where(
        ok_("vc", day) & (m["min"]["pc"] < m["max"]["pc"]))
    return pd.DataFrame({
        "skew_order_diff": skew("vb") - skew("vs"),
        "kurt_order_diff": kurt("vb", day) - kurt("vs", day),
        "early_kurt_order": kurt("ve", win),
        "corr_buyorder_volume_price": corr,
    })


def trade_frame_vec(trades: pd.DataFrame, ret: pd.DataFrame | None,
                    cfg: FactorConfig) -> pd.DataFrame:
    """The 8 trade factors of every stock: order amounts by ``groupby([symbol, order id])``,
    the big-order threshold per symbol, masked sums by one ``groupby("symbol")``."""
    t = trades.sort_values(["symbol", "seq"], kind="stable")
    key = t["symbol"]
    a = t["amount"].astype(float)
    buy = a.groupby([key, t["buy_order_id"]], sort=False, observed=True).sum()
    sell = a.groupby([key, t["sell_order_id"]], sort=False, observed=True).sum()
    if cfg.big_order_rule == "fixed_notional":
        thr = pd.Series(cfg.big_order_notional, index=key.cat.categories)
        eq = pd.Series(False, index=thr.index)
    else:
        every = pd.concat([buy, sell])
        g = every.groupby(level=0, sort=True, observed=True)
        thr = g.mean() + cfg.big_order_k * g.std(ddof=0)
        eq = g.min() == g.max()
    cats, codes = key.cat.categories, key.cat.codes.to_numpy()
    thr_t = thr.reindex(cats).to_numpy()[codes]
    eq_t = eq.reindex(cats).to_numpy(dtype=bool)[codes]
    per_b = a.groupby([key, t["buy_order_id"]], observed=True).transform("sum").to_numpy()
    per_s = a.groupby([key, t["sell_order_id"]], observed=True).transform("sum").to_numpy()
    tb, ts_ = (per_b >= thr_t) | eq_t, (per_s >= thr_t) | eq_t
    lvl_b, lvl_s = buy.index.get_level_values(0), sell.index.get_level_values(0)
    big_buy = (buy >= thr.reindex(lvl_b).to_numpy()) | eq.reindex(lvl_b).to_numpy(dtype=bool)
    big_sell = (sell >= thr.reindex(lvl_s).to_numpy()) | eq.reindex(lvl_s).to_numpy(dtype=bool)
    early = ((t["ts"] >= T_0930) & (t["ts"] < T_1000)).to_numpy()
    side = t["side"].to_numpy()
    dlogp = np.log(t["price"].astype(float)).groupby(key, observed=True).diff().fillna(0.0)
    active_big = ((side == 1) & tb) | ((side == -1) & ts_)
    cols = pd.DataFrame({
        "T": a, "a_buy": a.where(early & tb, 0.0), "a_sell": a.where(early & ts_, 0.0),
        "ret2": dlogp.where(tb | ts_, 0.0), "active": dlogp.where(early & active_big, 0.0),
        "e_buy": a.where(early & (side == 1), 0.0), "e_all": a.where(early, 0.0),
    }).groupby(key, sort=True, observed=True).sum()
    bb = buy.where(big_buy, 0.0).groupby(level=0, observed=True).sum()
    sb = sell.where(big_sell, 0.0).groupby(level=0, observed=True).sum()
    b2 = (buy**2).groupby(level=0, observed=True).sum()
    s2 = (sell**2).groupby(level=0, observed=True).sum()
    T = cols["T"].to_numpy()
    out = pd.DataFrame(index=cols.index)
    out["bigorder_amt_perc"] = _ratio_v((bb + sb).reindex(out.index).to_numpy(), 2 * T)
    out["early_bigorder_buy_perc"] = _ratio_v(cols["a_buy"].to_numpy(),
                                              (cols["a_buy"] + cols["a_sell"]).to_numpy())
    out["bigorder_ret2"] = cols["ret2"]
    out["early_active_bigorder_ret"] = cols["active"]
    out["concentration_diff"] = (_ratio_v(b2.reindex(out.index).to_numpy(), T**2)
                                 - _ratio_v(s2.reindex(out.index).to_numpy(), T**2))
    out["early_active_buy_perc"] = _ratio_v(cols["e_buy"].to_numpy(), cols["e_all"].to_numpy())
    signed = a * t["side"].astype(float)
    nab = (signed.groupby([key, minute_of(t["ts"])], observed=True).sum().unstack(fill_value=0.0)
           .reindex(index=out.index, columns=range(240), fill_value=0.0).to_numpy())
    r = (ret.reindex(out.index).to_numpy() if ret is not None
         else np.full((len(out), 240), np.nan))
    lagged = np.broadcast_to(np.arange(240)[None, :] >= 1, r.shape)
    r_prev = np.full_like(r, np.nan)
    r_prev[:, 1:] = r[:, :-1]
    nab_prev = np.full_like(nab, np.nan)
    nab_prev[:, 1:] = nab[:, :-1]
    out["corr_netactivebuy_lastret"] = _row_corr(nab, r_prev, lagged, cfg.min_obs_day)
    out["corr_netactivebuy_nextret"] = _row_corr(nab_prev, r, lagged, cfg.min_obs_day)
    return out


def compute_day_pandas_vec(
    store: Store | str,
    date: dt.date | str,
    names: Sequence[str] | None = None,
    config: FactorConfig | None = None,
) -> pd.DataFrame:
    """The factors ``names`` of every stock on ``date``, vectorised pandas (no per-stock Python):
    the same result as :func:`compute_day_pandas`."""
    store = store if isinstance(store, Store) else Store(store)
    day = date if isinstance(date, dt.date) else dt.date.fromisoformat(str(date))
    names = resolve_names(list(names) if names is not None else None)
    cfg = config or FactorConfig()
    families = {FACTORS[n].family for n in names}
    cols = {"minute": None, "trades": ["symbol", "seq", "ts", "price", "amount", "buy_order_id",
                                       "sell_order_id", "side"],
            "orders": ["symbol", "ts", "price", "volume", "side", "order_type"]}
    symbols: set[str] = set()
    tables: dict[str, pd.DataFrame] = {}
    for t, c in cols.items():
        if store.has(t, day):
            df = store.read(t, day, c).to_pandas()
            # categorical: every groupby works on integer codes, not on Python strings
            df["symbol"] = df["symbol"].astype(str).astype("category")
            symbols.update(df["symbol"].cat.categories)
            tables[t] = df
    frames: list[pd.DataFrame] = []
    ret = None
    if "minute" in tables:
        mf, r = minute_frame_vec(tables["minute"], cfg)
        ret = pd.DataFrame(r, index=mf.index)
        if "minute" in families:
            frames.append(mf)
    if "trade" in families and "trades" in tables:
        frames.append(trade_frame_vec(tables["trades"], ret, cfg))
    if "order" in families and "orders" in tables:
        frames.append(order_frame_vec(tables["orders"], cfg))
    for f in frames:
        f.index = pd.Index(f.index.astype(str), name="symbol")
    out = pd.concat(frames, axis=1) if frames else pd.DataFrame()
    out = out.reindex(index=sorted(symbols), columns=names).astype(float)
    out.index.name = "symbol"
    return out
