"""Calibration: the same market statistics on real exchange samples and on a synthetic store.

Run ``python -m fbgpu.data.synth.calibrate [STORE]`` to print the side-by-side table that
docs/synth.md shows. Real samples (``/work/shared/data/real`` by default, or ``$FBGPU_REAL_DATA``):

* ``sse_l2_2023-07-11/SHorders.zip`` + ``SHtrans.zip``: SSE Level-2 orders and trades, 5 stocks,
  one full day (read here with pandas directly);
* ``minute_000001sz_2018-01/candle_201801.csv``: 21 days of 1-minute bars of 000001.SZ.

Statistics (per stock-day, then the median over stock-days unless stated):

* order size quantiles (shares and CNY notional) and the Hill tail index of order notional
  (top 5% of orders, pooled);
* trades per order: trades / distinct buy order ids and / distinct sell order ids;
* intraday volume profile: share of the day's volume in each half-hour bucket ``h = k // 30`` of
  the 240-minute grid (auctions folded into the first and last bucket);
* 1-minute returns ``r_k = close_k / close_{k-1} - 1`` (k = 1..238, minutes with trades in both):
  lag-1 autocorrelation and excess kurtosis.

Caveat: SSE publishes only the resting part of an order, so its order file lacks marketable
orders that filled on arrival; the synthetic market publishes every order (like SZSE).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from fbgpu.data.bars import minute_bars_from_trades

REAL_ROOT = Path(os.environ.get("FBGPU_REAL_DATA", "/work/shared/data/real"))


def _hhmmss_ms_to_ns(s: pd.Series) -> np.ndarray:
    t = pd.to_timedelta(s)
    return t.to_numpy().astype("timedelta64[ns]").astype(np.int64)


def hill_tail_index(x: np.ndarray, top: float = 0.05) -> float:
    """Hill estimator of the Pareto tail index from the largest ``top`` share of ``x`` (> 0)."""
    x = np.sort(np.asarray(x, dtype=np.float64)[np.asarray(x) > 0])
    k = max(int(len(x) * top), 10)
    if len(x) <= k:
        return float("nan")
    tail = x[-k:]
    return float(1.0 / np.mean(np.log(tail / x[-k - 1])))


def minute_return_stats(close: np.ndarray, traded: np.ndarray) -> tuple[float, float]:
    """Median over rows of (lag-1 autocorrelation, excess kurtosis) of 1-minute returns.

    ``close``, ``traded`` are ``[days, 240]``; returns use k = 1..238 (the closing auction bar
    239 is excluded) and only pairs of minutes that both traded.
    """
    acs, kurts = [], []
    for c, tr in zip(close, traded, strict=True):
        r = c[1:239] / c[0:238] - 1.0
        ok = tr[1:239] & tr[0:238]
        r = np.where(ok, r, np.nan)
        a, b = r[1:], r[:-1]
        m = np.isfinite(a) & np.isfinite(b)
        if m.sum() < 30 or np.std(a[m]) == 0 or np.std(b[m]) == 0:
            continue
        acs.append(np.corrcoef(a[m], b[m])[0, 1])
        rr = r[np.isfinite(r)]
        z = rr - rr.mean()
        kurts.append(np.mean(z**4) / np.mean(z**2) ** 2 - 3.0)
    return float(np.median(acs)), float(np.median(kurts))


def volume_profile(volume: np.ndarray) -> np.ndarray:
    """Mean over rows of the share of daily volume per half-hour bucket, ``[8]``."""
    v = volume.reshape(volume.shape[0], 8, 30).sum(axis=2).astype(np.float64)
    tot = v.sum(axis=1, keepdims=True)
    keep = tot[:, 0] > 0
    return (v[keep] / tot[keep]).mean(axis=0)


def _tick_stats(trades: pd.DataFrame, orders: pd.DataFrame, pre_close: dict[str, float]
                ) -> dict[str, float]:
    """Statistics of one day of ticks (columns: symbol, ts, price, volume, buy/sell ids)."""
    out: dict[str, float] = {}
    q = orders.volume.to_numpy(dtype=np.float64)
    notional = q * orders.price.to_numpy(dtype=np.float64)
    notional = notional[np.isfinite(notional)]
    for p in (25, 50, 75, 90, 99):
        out[f"order notional p{p} (CNY)"] = float(np.percentile(notional, p))
    out["order size p50 (shares)"] = float(np.median(q))
    out["order notional Hill tail index (top 5%)"] = hill_tail_index(notional)
    per_buy, per_sell = [], []
    for _, g in trades.groupby("symbol", observed=True):
        per_buy.append(len(g) / g.buy_order_id.nunique())
        per_sell.append(len(g) / g.sell_order_id.nunique())
    out["trades per buy order"] = float(np.median(per_buy))
    out["trades per sell order"] = float(np.median(per_sell))
    trades = trades.sort_values(["symbol", "ts"], kind="stable")
    syms, starts = np.unique(trades.symbol.to_numpy().astype(str), return_index=True)
    offsets = np.r_[starts, len(trades)].astype(np.int64)
    pc = np.array([pre_close.get(s, np.nan) for s in syms])
    bars = minute_bars_from_trades(offsets, trades.ts.to_numpy(), trades.price.to_numpy(),
                                   trades.volume.to_numpy(), trades.amount.to_numpy(), pc)
    prof = volume_profile(bars["volume"])
    for h in range(8):
        out[f"volume share h{h}"] = float(prof[h])
    ac, ku = minute_return_stats(bars["close"], bars["num_trades"] > 0)
    out["1-min return lag-1 autocorrelation"] = ac
    out["1-min return excess kurtosis"] = ku
    return out


def real_sse_stats(root: Path = REAL_ROOT) -> dict[str, float]:
    """Statistics of the SSE Level-2 sample (5 stocks, 2023-07-11)."""
    folder = root / "sse_l2_2023-07-11"
    o = pd.read_csv(folder / "SHorders.zip")
    t = pd.read_csv(folder / "SHtrans.zip")
    new = o[o.OrderType == 2]
    orders = pd.DataFrame({"symbol": new.SecurityID, "volume": new.OrderQty,
                           "price": new.OrderPrice})
    trades = pd.DataFrame({
        "symbol": t.SecurityID, "ts": _hhmmss_ms_to_ns(t.MDTime), "price": t.TradePrice,
        "volume": t.TradeQty, "amount": t.TradeMoney.astype(np.float64),
        "buy_order_id": t.TradeBuyNo, "sell_order_id": t.TradeSellNo})
    out = _tick_stats(trades, orders, {})
    out["cancels per new order"] = float((o.OrderType == 10).sum() / max(len(new), 1))
    return out


def real_minute_stats(root: Path = REAL_ROOT) -> dict[str, float]:
    """Statistics of the 000001.SZ 1-minute bars (21 days of January 2018)."""
    df = pd.read_csv(root / "minute_000001sz_2018-01" / "candle_201801.csv")
    df = df.sort_values(["tradingDay", "time"])
    days = [g for _, g in df.groupby("tradingDay") if len(g) == 240]
    close = np.stack([g.close.to_numpy(dtype=np.float64) for g in days])
    volume = np.stack([g.volume.to_numpy(dtype=np.float64) for g in days])
    out: dict[str, float] = {}
    prof = volume_profile(volume)
    for h in range(8):
        out[f"volume share h{h}"] = float(prof[h])
    ac, ku = minute_return_stats(close, volume > 0)
    out["1-min return lag-1 autocorrelation"] = ac
    out["1-min return excess kurtosis"] = ku
    return out


def synth_stats(store_root: str | Path, max_days: int = 10) -> dict[str, float]:
    """The same statistics on a synthetic store: ticks of up to ``max_days`` days (pooled
    medians over stock-days), minute statistics over every stored day."""
    from fbgpu.data.store import Store

    store = Store(store_root)
    dates = store.dates("trades")
    picks = dates[:: max(1, len(dates) // max_days)][:max_days]
    rows = []
    for d in picks:
        t = store.read("trades", d).to_pandas()
        o = store.read("orders", d).to_pandas()
        c = store.read("cancels", d)
        daily = store.read("daily", d, ["symbol", "pre_close"]).to_pandas()
        pcs = dict(zip(daily.symbol.astype(str), daily.pre_close, strict=True))
        for df in (t, o):
            df["symbol"] = df.symbol.astype(str)
        s = _tick_stats(t, o, pcs)
        s["cancels per new order"] = c.num_rows / max(len(o), 1)
        rows.append(s)
    out = pd.DataFrame(rows).median().to_dict()
    closes, vols = [], []
    for d in dates:
        m = store.read_minute(d)
        closes.append(m["close"])
        vols.append(m["volume"])
    close, volume = np.concatenate(closes), np.concatenate(vols)
    prof = volume_profile(volume)
    for h in range(8):
        out[f"volume share h{h}"] = float(prof[h])
    ac, ku = minute_return_stats(close, volume > 0)
    out["1-min return lag-1 autocorrelation"] = ac
    out["1-min return excess kurtosis"] = ku
    return out


def calibration_table(store_root: str | Path, real_root: Path = REAL_ROOT) -> pd.DataFrame:
    """Rows: statistics; columns: ``synthetic``, ``real SSE L2 (5 stocks)``, ``real 000001.SZ``."""
    syn = synth_stats(store_root)
    sse = real_sse_stats(real_root)
    mnt = real_minute_stats(real_root)
    keys = list(dict.fromkeys([*sse, *syn]))
    return pd.DataFrame({"synthetic": [syn.get(k, np.nan) for k in keys],
                         "real SSE L2 2023-07-11 (5 stocks)": [sse.get(k, np.nan) for k in keys],
                         "real 000001.SZ 2018-01 (minute)": [mnt.get(k, np.nan) for k in keys]},
                        index=keys)


def main(argv: list[str] | None = None) -> int:
    """Print the calibration table (markdown) for the store given as the first argument."""
    argv = sys.argv[1:] if argv is None else argv
    root = argv[0] if argv else "fbgpu-demo"
    table = calibration_table(root)
    sys.stdout.write(to_markdown(table) + "\n")
    return 0


def to_markdown(table: pd.DataFrame) -> str:
    """A plain markdown table (3 significant digits), without optional dependencies."""
    head = ["statistic", *table.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for k, row in table.iterrows():
        cells = ["" if not np.isfinite(v) else f"{v:.3g}" for v in row.to_numpy(float)]
        lines.append("| " + " | ".join([str(k), *cells]) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
