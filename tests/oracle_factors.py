"""An independent, deliberately simple oracle of the 27 factors, plus a small hand-made market.

The oracle re-reads the store's raw tables with pandas and computes every factor per stock-day
with plain pandas/numpy/scipy calls, straight from spec/factors.md. It shares no code with
fbgpu.factors or fbgpu.engine (it even maps timestamps to minutes on its own), so agreement is
evidence, not tautology.

``make_market`` writes a few days of adversarial hand-made stock-days into a store: normal
stocks at very different price levels, a stock locked at its limit all day, a one-trade stock,
a stock that trades only after lunch, a suspended stock (minute bars only), an orders-only stock,
a stock whose trades all share one buy order, orders outside 09:15-15:00, market orders without a
price.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.stats

from fbgpu.data.bars import minute_bars_from_trades
from fbgpu.data.store import Store

NS = 1_000_000_000


def hms(h: int, m: int, s: float = 0) -> int:
    return round((h * 3600 + m * 60 + s) * NS)


OPEN_AUCTION = hms(9, 25)
T0915, T0930, T1000, T1130, T1300, T1457, T1500 = (
    hms(9, 15), hms(9, 30), hms(10, 0), hms(11, 30), hms(13, 0), hms(14, 57), hms(15, 0)
)


# ----------------------------------------------------------------------------- oracle helpers
def _finite(*arrays: np.ndarray) -> list[np.ndarray]:
    ok = np.ones(len(arrays[0]), dtype=bool)
    for a in arrays:
        ok &= np.isfinite(a)
    return [np.asarray(a, dtype=float)[ok] for a in arrays]


def o_skew(v: np.ndarray, min_obs: int) -> float:
    (v,) = _finite(np.asarray(v, dtype=float))
    if len(v) < min_obs or v.min() == v.max():
        return math.nan
    return float(scipy.stats.skew(v, bias=True))


def o_kurt(v: np.ndarray, min_obs: int) -> float:
    (v,) = _finite(np.asarray(v, dtype=float))
    if len(v) < min_obs or v.min() == v.max():
        return math.nan
    return float(scipy.stats.kurtosis(v, fisher=True, bias=True))


def o_corr(x: np.ndarray, y: np.ndarray, min_obs: int) -> float:
    x, y = _finite(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    if len(x) < min_obs or x.min() == x.max() or y.min() == y.max():
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def o_ratio(num: float, den: float) -> float:
    if den == 0 or not np.isfinite(den):
        return math.nan
    return float(num / den)


def o_minute(ts: int) -> int:
    """Minute of a tick on the 240-bar grid, written independently of fbgpu.data.bars."""
    if ts < T0930:
        return 0
    if ts < T1130:
        return int((ts - T0930) // (60 * NS))
    if ts < T1300:
        return 119
    if ts < T1500:
        return int(120 + (ts - T1300) // (60 * NS))
    return 239


# ----------------------------------------------------------------------------- the oracle
def oracle_minute(bars: pd.DataFrame, top_frac: tuple[int, int] = (3, 10),
                  min_day: int = 10, min_win: int = 5) -> dict[str, float]:
    b = bars.sort_values("minute")
    o, h, lo, c = (b[f].to_numpy(float) for f in ("open", "high", "low", "close"))
    v = b["volume"].to_numpy(float)
    a = b["amount"].to_numpy(float)
    nt = b["num_trades"].to_numpy(float)
    r = np.empty(240)
    r[0] = c[0] / o[0] - 1
    r[1:] = c[1:] / c[:-1] - 1
    out: dict[str, float] = {}
    out["late_skew_ret"] = o_skew(r[210:240], min_win)
    r2 = r**2
    out["down_vol_perc"] = o_ratio(np.nansum(r2[r < 0]), np.nansum(r2))
    out["corr_ret_lastret"] = o_corr(r[1:], r[:-1], min_day)
    out["corr_close_nextopen"] = o_corr(c[:-1], o[1:], min_day)
    buckets = pd.Series(v).groupby(np.arange(240) // 30).sum()
    for j in range(2, 8):
        out[f"volume_perc{j}"] = o_ratio(buckets.iloc[j - 1], buckets.sum())
    out["corr_volume_item"] = o_corr(v, nt, min_day)
    out["early_corr_volume_ret"] = o_corr(v[:30], r[:30], min_win)
    traded = pd.DataFrame({"minute": np.arange(240), "a": a / np.where(nt > 0, nt, 1), "r": r})
    traded = traded[nt > 0]
    if len(traded) == 0:
        out["bigorder_ret"] = math.nan
    else:
        num, den = top_frac
        k = -(-len(traded) * num // den)
        top = traded.sort_values(["a", "minute"], ascending=[False, True]).head(k)
        out["bigorder_ret"] = float(np.nansum(np.log1p(top["r"].to_numpy())))
    down = r < 0
    out["down_single_amt_perc"] = o_ratio(
        o_ratio(a[down].sum(), nt[down].sum()), o_ratio(a.sum(), nt.sum())
    )
    out["corr_volume_amplitude"] = o_corr(v, (h - lo) / o, min_day)
    return out


def oracle_trade(tr: pd.DataFrame, ret: np.ndarray | None, rule: str = "mean_plus_k_std",
                 k: float = 1.0, notional: float = 1e6, min_day: int = 10) -> dict[str, float]:
    t = tr.sort_values("seq")
    amount = t["amount"].to_numpy(float)
    buy_amt = t.groupby("buy_order_id")["amount"].sum()
    sell_amt = t.groupby("sell_order_id")["amount"].sum()
    if rule == "fixed_notional":
        big_b, big_s = buy_amt >= notional, sell_amt >= notional
    else:
        every = pd.concat([buy_amt, sell_amt], ignore_index=True)
        if every.nunique() == 1:
            big_b = pd.Series(True, index=buy_amt.index)
            big_s = pd.Series(True, index=sell_amt.index)
        else:
            thr = every.mean() + k * every.std(ddof=0)
            big_b, big_s = buy_amt >= thr, sell_amt >= thr
    trade_big_b = t["buy_order_id"].map(big_b).to_numpy(bool)
    trade_big_s = t["sell_order_id"].map(big_s).to_numpy(bool)
    ts = t["ts"].to_numpy()
    side = t["side"].to_numpy()
    early = (ts >= T0930) & (ts < T1000)
    dlogp = np.log(t["price"]).diff().fillna(0.0).to_numpy()
    T = amount.sum()
    out: dict[str, float] = {}
    out["bigorder_amt_perc"] = o_ratio(buy_amt[big_b].sum() + sell_amt[big_s].sum(), 2 * T)
    a_buy = amount[early & trade_big_b].sum()
    a_sell = amount[early & trade_big_s].sum()
    out["early_bigorder_buy_perc"] = o_ratio(a_buy, a_buy + a_sell)
    out["bigorder_ret2"] = float(dlogp[trade_big_b | trade_big_s].sum())
    active = ((side == 1) & trade_big_b) | ((side == -1) & trade_big_s)
    out["early_active_bigorder_ret"] = float(dlogp[early & active].sum())
    out["concentration_diff"] = (
        o_ratio((buy_amt**2).sum(), T**2) - o_ratio((sell_amt**2).sum(), T**2)
    )
    out["early_active_buy_perc"] = o_ratio(amount[early & (side == 1)].sum(), amount[early].sum())
    nab = np.zeros(240)
    for ts_i, a_i, s_i in zip(ts, amount, side, strict=True):
        nab[o_minute(int(ts_i))] += a_i * s_i
    r = ret if ret is not None else np.full(240, np.nan)
    out["corr_netactivebuy_lastret"] = o_corr(nab[1:], r[:-1], min_day)
    out["corr_netactivebuy_nextret"] = o_corr(nab[:-1], r[1:], min_day)
    if not (side != 0).any():  # side unknown (no trade with side +-1): no aggressor factors
        out["early_active_bigorder_ret"] = out["early_active_buy_perc"] = np.nan
    return out


def oracle_order(od: pd.DataFrame, min_day: int = 10, min_win: int = 5) -> dict[str, float]:
    ts = od["ts"].to_numpy()
    vol = od["volume"].to_numpy(float)
    side = od["side"].to_numpy()
    sess = (ts >= T0915) & (ts <= T1500)
    early = (ts >= T0930) & (ts < T1000)
    buy, sell = vol[sess & (side == 1)], vol[sess & (side == -1)]
    limit_buy = sess & (side == 1) & (od["order_type"].to_numpy() == 0)
    return {
        "skew_order_diff": o_skew(buy, min_day) - o_skew(sell, min_day),
        "kurt_order_diff": o_kurt(buy, min_day) - o_kurt(sell, min_day),
        "early_kurt_order": o_kurt(vol[sess & early], min_win),
        "corr_buyorder_volume_price": o_corr(
            vol[limit_buy], od["price"].to_numpy(float)[limit_buy], min_day
        ),
    }


def oracle_day(store: Store, date: dt.date, **rule: object) -> pd.DataFrame:
    """Every factor for every stock-day of ``date`` (index: symbol), NaN where undefined."""

    def table(name: str) -> pd.DataFrame | None:
        if not store.has(name, date):
            return None
        df = store.read(name, date).to_pandas()
        df["symbol"] = df["symbol"].astype(str)
        return df

    minute, trades, orders = table("minute"), table("trades"), table("orders")
    rows: dict[str, dict[str, float]] = {}
    rets: dict[str, np.ndarray] = {}
    if minute is not None:
        for sym, g in minute.groupby("symbol", sort=True):
            rows.setdefault(sym, {}).update(oracle_minute(g))
            g = g.sort_values("minute")
            c = g["close"].to_numpy(float)
            r = np.empty(240)
            r[0] = c[0] / g["open"].to_numpy(float)[0] - 1
            r[1:] = c[1:] / c[:-1] - 1
            rets[sym] = r
    if trades is not None:
        for sym, g in trades.groupby("symbol", sort=True):
            rows.setdefault(sym, {}).update(oracle_trade(g, rets.get(sym), **rule))  # type: ignore[arg-type]
    if orders is not None:
        for sym, g in orders.groupby("symbol", sort=True):
            rows.setdefault(sym, {}).update(oracle_order(g))
    return pd.DataFrame.from_dict(rows, orient="index").sort_index()


# ----------------------------------------------------------------------------- hand-made market
def _continuous_times(rng: np.random.Generator, n: int, afternoon_only: bool = False) -> np.ndarray:
    morning = T1130 - T0930
    afternoon = T1457 - T1300
    u = rng.random(n) * (afternoon if afternoon_only else morning + afternoon)
    t = T1300 + u if afternoon_only else np.where(u < morning, T0930 + u, T1300 + (u - morning))
    # Millisecond timestamps, as exchanges publish them.
    return np.sort((t // 1_000_000) * 1_000_000).astype(np.int64)


def _stock_trades(rng: np.random.Generator, kind: str, p0: float) -> dict[str, np.ndarray]:
    if kind == "one_trade":
        ts = np.array([T0930 + 5 * NS], dtype=np.int64)
        side = np.array([1], dtype=np.int8)
    else:
        n = {"normal": int(rng.integers(150, 600)), "locked": 120, "afternoon": 200,
             "one_buyer": 80}[kind]
        ts_cont = _continuous_times(rng, n, afternoon_only=kind == "afternoon")
        n_open = 0 if kind == "afternoon" else int(rng.integers(1, 6))
        n_close = int(rng.integers(1, 6))
        ts = np.concatenate([np.full(n_open, OPEN_AUCTION), ts_cont, np.full(n_close, T1500)])
        side = np.concatenate([
            np.zeros(n_open, np.int8), rng.choice([-1, 1], n).astype(np.int8),
            np.zeros(n_close, np.int8),
        ])
    n = len(ts)
    if kind == "locked":
        price = np.full(n, p0)
        volume = np.full(n, 1000, dtype=np.int64)
        buy_ids = np.arange(n, dtype=np.int64) + 5000
        sell_ids = np.arange(n, dtype=np.int64) + 5000  # same numbers, different orders
    else:
        tick = 0.01
        steps = rng.choice([-1, 0, 0, 1], n) * tick * rng.integers(1, 3, n)
        price = np.round(np.maximum(p0 + np.cumsum(steps), tick), 2)
        volume = (100 * np.ceil(rng.pareto(1.5, n) * 5 + 1)).astype(np.int64)
        pool = max(2, n // 3)
        buy_ids = rng.integers(1, pool, n).astype(np.int64)
        sell_ids = rng.integers(1, pool, n).astype(np.int64)
        if kind == "one_buyer":
            buy_ids[:] = 7
    return {"ts": ts, "price": price, "volume": volume, "amount": price * volume,
            "buy_order_id": buy_ids, "sell_order_id": sell_ids, "side": side}


def _stock_orders(rng: np.random.Generator, kind: str, p0: float) -> dict[str, np.ndarray]:
    n = {"normal": int(rng.integers(60, 300)), "few": 7, "equal_buys": 60}[kind]
    ts = np.sort(rng.integers(hms(9, 10), hms(15, 2), n)).astype(np.int64)
    ts[: min(3, n)] = [hms(9, 40), hms(9, 45), T1500][: min(3, n)]
    ts = np.sort(ts)
    side = rng.choice([-1, 1], n).astype(np.int8)
    order_type = rng.choice([0, 0, 0, 0, 1, 2], n).astype(np.int8)
    price = np.round(p0 + rng.normal(0, 0.05, n) * p0, 2)
    price = np.where(order_type == 1, np.nan, price)
    volume = (100 * np.ceil(rng.lognormal(1.0, 1.0, n))).astype(np.int64)
    if kind == "equal_buys":
        volume[side == 1] = 500
    return {"ts": ts, "order_id": np.arange(n, dtype=np.int64) * 2 + 1, "price": price,
            "volume": volume, "side": side, "order_type": order_type}


#: symbol -> (trade kind or None, order kind or None, minute bars?, starting price)
MARKET_STOCKS: dict[str, tuple[str | None, str | None, bool, float]] = {
    "000001.SZ": ("normal", "normal", True, 10.0),
    "000002.SZ": ("normal", "normal", True, 98.76),
    "000003.SZ": ("normal", "few", True, 3.21),
    "300004.SZ": ("locked", "equal_buys", True, 12.34),
    "300005.SZ": ("one_trade", "normal", True, 55.5),
    "600006.SH": ("afternoon", "normal", True, 7.77),
    "600007.SH": ("one_buyer", "normal", True, 1688.0),
    "600008.SH": (None, None, True, 20.0),          # suspended: flat minute bars only
    "600009.SH": (None, "normal", False, 15.0),     # orders only
    "688010.SH": ("normal", None, False, 42.0),     # trades without minute bars
}


def make_market(store: Store, dates: list[dt.date], seed: int = 0) -> None:
    """Write ``trades``, ``orders`` and ``minute`` partitions of the hand-made market."""
    rng = np.random.default_rng(seed)
    for d in dates:
        trades, orders, minutes = [], [], []
        for sym, (tkind, okind, has_bars, p0) in MARKET_STOCKS.items():
            p0 = float(np.round(p0 * (1 + rng.normal(0, 0.02)), 2))
            tr = _stock_trades(rng, tkind, p0) if tkind else None
            if tr is not None:
                df = pd.DataFrame(tr)
                df.insert(0, "seq", np.arange(len(df), dtype=np.int64))
                df.insert(0, "symbol", sym)
                trades.append(df)
            if okind:
                df = pd.DataFrame(_stock_orders(rng, okind, p0))
                df.insert(0, "seq", np.arange(len(df), dtype=np.int64))
                df.insert(0, "symbol", sym)
                orders.append(df)
            if has_bars:
                if tr is None:
                    offs = np.array([0, 0])
                    e = np.array([], dtype=np.int64)
                    bars = minute_bars_from_trades(offs, e, e.astype(float), e, e.astype(float),
                                                   np.array([p0]))
                else:
                    offs = np.array([0, len(tr["ts"])])
                    bars = minute_bars_from_trades(offs, tr["ts"], tr["price"], tr["volume"],
                                                   tr["amount"], np.array([p0]))
                mb = pd.DataFrame({f: v[0] for f, v in bars.items()})
                mb.insert(0, "minute", np.arange(240, dtype=np.int16))
                mb.insert(0, "symbol", sym)
                minutes.append(mb)
        for name, frames in (("trades", trades), ("orders", orders), ("minute", minutes)):
            df = pd.concat(frames, ignore_index=True)
            df.insert(0, "date", d)
            store.write(name, d, pa.Table.from_pandas(df, preserve_index=False))
