"""Factor throughput: fbgpu cpu (and gpu) vs. an expert polars implementation.

Usage::

    python benchmarks/bench_factors.py [--stocks 5000] [--store DIR] [--repeats 3] [--out DIR]

Data: one day of the synthetic ``full-day`` preset (``--stocks`` overrides its size; the market is
generated once into ``--store`` and reused). Measured, per family (minute / trade / order) and for
all 27 factors, on data already in memory (the Parquet read is timed separately):

* ``cpu``: :func:`fbgpu.factors.compute_loaded_day` on the CPU backend;
* ``gpu``: the same on the GPU backend, when one is usable (host->device copies included);
* ``polars``: :func:`polars_factors_from_frames`, the same definitions as polars expressions
  (filtered group-bys, windows over packed integer keys, ``collect_all`` of per-family parts),
  profiled and rewritten step by step in session 8 (docs/benchmarks.md, "The polars peer,
  rewritten (session 8)");
* the bandwidth floor: bytes the family must read once (the columns it uses) divided by the
  measured copy bandwidth of a large numpy copy.

Prints a table and writes ``bench_factors.json``. Also checks that polars and fbgpu agree (max
abs difference per factor), so that the comparison is between equal jobs. Timings are never
asserted anywhere.

:func:`compute_day_polars` (store, date, names) is the entry point the benchmark suite
(``suite.py``) times as its polars baseline.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from fbgpu.data.store import Store
from fbgpu.factors import (
    FACTORS,
    FactorConfig,
    compute_loaded_day,
    factor_names,
    load_day,
    resolve_names,
)

NS_PER_MIN = 60 * 1_000_000_000


def _clock(h: int, m: int) -> int:
    return (h * 60 + m) * NS_PER_MIN


T0915, T0930, T1000, T1130, T1300, T1500 = (
    _clock(9, 15), _clock(9, 30), _clock(10, 0), _clock(11, 30), _clock(13, 0), _clock(15, 0)
)


# ============================================================================ polars version
# How an experienced polars user writes the 27 definitions (issue #16, rewritten in session 8;
# docs/benchmarks.md, "The polars peer, rewritten"): lazy scans projected to the used columns,
# expressions only, the symbol kept as the store's dictionary (polars ``Categorical``: keys are
# its u32 codes, never strings; cast to String only on the 5,000-row result), high-cardinality
# keys (orders, stock-minutes) packed into one Int64 so that each hash pass hashes one integer,
# and no sorts or cross joins of tick tables (the store keeps each stock-day a contiguous run
# in ``(symbol, seq)`` order, spec/data.md, which the shifts below rely on).
Frame = pl.DataFrame | pl.LazyFrame


def _stat_ok(v: pl.Expr, min_obs: int) -> pl.Expr:
    return (v.count() >= min_obs) & (v.min() < v.max())


def _masked(x: pl.Expr, cond: pl.Expr) -> pl.Expr:
    """``x`` where ``cond`` holds and ``x`` is finite, else null (which every aggregation skips).
    A masked column is a plain vectorised expression; ``x.filter(cond)`` inside ``agg`` would be
    evaluated group by group."""
    return pl.when(cond & x.is_finite()).then(x)


def p_skew(x: pl.Expr, cond: pl.Expr, min_obs: int) -> pl.Expr:
    """Skewness ``m3 / m2^1.5`` (biased) of ``x`` over ``cond``; null below ``min_obs`` values
    or when they are all equal."""
    v = _masked(x, cond)
    return pl.when(_stat_ok(v, min_obs)).then(v.skew(bias=True)).otherwise(None)


def p_kurt(x: pl.Expr, cond: pl.Expr, min_obs: int) -> pl.Expr:
    """Excess kurtosis ``m4 / m2^2 - 3`` (biased) of ``x`` over ``cond``; null as
    :func:`p_skew`."""
    v = _masked(x, cond)
    return pl.when(_stat_ok(v, min_obs)).then(v.kurtosis(fisher=True, bias=True)).otherwise(None)


def p_corr(x: pl.Expr, y: pl.Expr, cond: pl.Expr, min_obs: int) -> pl.Expr:
    """Pearson correlation of ``x`` and ``y`` over the rows where ``cond`` holds and both are
    finite; null below ``min_obs`` pairs or when either side is constant."""
    ok = cond & x.is_finite() & y.is_finite()
    xs, ys = pl.when(ok).then(x), pl.when(ok).then(y)
    good = (xs.count() >= min_obs) & (xs.min() < xs.max()) & (ys.min() < ys.max())
    return pl.when(good).then(pl.corr(xs, ys)).otherwise(None)


def p_ratio(num: pl.Expr, den: pl.Expr) -> pl.Expr:
    """``num / den``; null when ``den`` is 0 or not finite."""
    return pl.when((den != 0) & den.is_finite()).then(num / den).otherwise(None)


def _where_sum(cond: pl.Expr, x: pl.Expr) -> pl.Expr:
    """Sum of ``x`` over the rows where ``cond`` holds (0 when none do)."""
    return pl.when(cond).then(x).sum()


def _symbol_code() -> pl.Expr:
    """The symbol's dictionary code (``Categorical`` -> u32 -> Int64), for packed keys."""
    return pl.col("symbol").to_physical().cast(pl.Int64)


def minute_returns(bars: Frame) -> Frame:
    """The bars with the minute return ``r`` (``r_0 = close_0 / open_0 - 1``, ``r_k = close_k /
    close_{k-1} - 1``) and ``prev_close``: one frame that the minute and trade families share
    (``collect_all`` computes it once). The store keeps the bars in ``(symbol, minute)`` order
    (``fbgpu.data.schemas.SORT_KEYS``), so the previous bar is the previous row; sorting them
    again cost 0.14 s."""
    prev_close = pl.col("close").shift(1)
    first = pl.col("minute") == 0
    return bars.with_columns(
        r=pl.when(first).then(pl.col("close") / pl.col("open") - 1)
        .otherwise(pl.col("close") / prev_close - 1),
        prev_close=prev_close,
    )


def polars_minute(bars: Frame, cfg: FactorConfig, rets: Frame | None = None) -> list[Frame]:
    """The minute family: one ``group_by("symbol").agg()`` of masked statistics over the 240
    bars, and the ranked top fraction of minutes for ``bigorder_ret``."""
    md, mw = cfg.min_obs_day, cfg.min_obs_window
    frac = cfg.top_frac_fraction
    df = (rets if rets is not None else minute_returns(bars)).with_columns(
        pl.col("volume").cast(pl.Float64), pl.col("num_trades").cast(pl.Float64),
        r_prev=pl.col("r").shift(1))
    r, m, v = pl.col("r"), pl.col("minute"), pl.col("volume")
    lagged, every = m >= 1, pl.lit(True)
    r2 = r * r
    amount, trades = pl.col("amount"), pl.col("num_trades")
    aggs = [
        p_skew(r, m >= 210, mw).alias("late_skew_ret"),
        p_ratio(_where_sum(r < 0, r2), _where_sum(r2.is_finite(), r2)).alias("down_vol_perc"),
        p_corr(r, pl.col("r_prev"), lagged, md).alias("corr_ret_lastret"),
        p_corr(pl.col("prev_close"), pl.col("open"), lagged, md).alias("corr_close_nextopen"),
        *[p_ratio(_where_sum(m // 30 == j - 1, v), v.sum()).alias(f"volume_perc{j}")
          for j in range(2, 8)],
        p_corr(v, trades, every, md).alias("corr_volume_item"),
        p_corr(v, r, m < 30, mw).alias("early_corr_volume_ret"),
        p_ratio(p_ratio(_where_sum(r < 0, amount), _where_sum(r < 0, trades)),
                p_ratio(amount.sum(), trades.sum())).alias("down_single_amt_perc"),
        p_corr(v, (pl.col("high") - pl.col("low")) / pl.col("open"), every, md)
        .alias("corr_volume_amplitude"),
    ]
    out = df.group_by("symbol").agg(aggs)
    lr = r.log1p()
    traded = (
        df.filter(trades > 0)
        .with_columns(a=amount / trades)
        .with_columns(
            rank=pl.col("a").rank("ordinal", descending=True).over("symbol"),
            n=pl.len().over("symbol"),
        )
        .filter(pl.col("rank") <= (pl.col("n") * frac.numerator + frac.denominator - 1)
                // frac.denominator)
        .group_by("symbol")
        .agg(bigorder_ret=_where_sum(lr.is_finite(), lr))
    )
    return [out, traded]


def _minute_of(ts: pl.Expr) -> pl.Expr:
    return (
        pl.when(ts < T1130).then((ts - T0930) // NS_PER_MIN)
        .when(ts < T1300).then(119)
        .otherwise(120 + (ts - T1300) // NS_PER_MIN)
        .clip(0, 239)
    )


def polars_trade(trades: Frame, bars: Frame | None, cfg: FactorConfig,
                 rets: Frame | None = None) -> list[Frame]:
    """The trade family in three hash passes over the trades and one over the stock-minutes.

    1. Each trade's buy-order and sell-order amounts ``B``, ``S``: window sums over a packed
       Int64 order key ``code * span + (id - lo)`` (one integer hashed instead of the pair
       ``(symbol, order_id)``; ``span`` = the id range of the day, so keys are unique while
       ``stocks * span < 2^63``). ``dlogp`` is a shift, zeroed where the stock changes (rows
       are contiguous per stock), not a window.
    2. Per stock, the big-order threshold ``mean + k * std`` over the union of buy and sell
       orders, without materialising the orders. The number of orders is ``sum_t 1 / c_t``
       over the trades, ``c_t`` the number of trades of the trade's order (each order adds
       ``c * (1/c) = 1``; rounded, so exact). ``c_t`` is a ``len()`` over the same window as
       ``B``, computed from the same groups (a per-stock ``n_unique`` of the ids cost 0.5 s
       more). ``sum_j B_j`` is the stock's total amount and ``sum_j B_j^2 = sum_t a_t
       B_j(t)`` (each order's trades' amounts sum to ``B_j``); population variance
       ``sum B^2 / n - mean^2`` clipped at 0. This is one-pass, not centred: its rounding
       error is ~1e-16 mean^2, i.e. ~1e-16 (mean/std)^2 of the std, harmless for order
       amounts (coefficient of variation ~1). All-equal amounts (min == max) make every order
       big.
    3. The masked sums: one ``group_by("symbol").agg()`` of ``pl.when(cond).then(x).sum()``
       after joining the per-stock threshold (5,000 rows) back; ``sum_j B_j`` over big orders
       is the amount of the trades whose order is big, ``sum_j B_j^2`` as in 2.

    The per-minute net active buying is one ``group_by`` on a packed stock-minute key
    ``code * 240 + minute``, left-joined on that key onto the bars' minute returns (already in
    ``(symbol, minute)`` order, every stock 240 bars): a stock without bars has no returns, so
    null correlations, as on the full grid. The join on one Int64 instead of ``(symbol,
    minute)`` halves the join (0.53 s instead of 0.78 s for this part).
    """
    a, side = pl.col("amount"), pl.col("side")
    code = _symbol_code()
    b, s = pl.col("buy_order_id"), pl.col("sell_order_id")
    lo = pl.min_horizontal(b.min(), s.min())
    span = pl.max_horizontal(b.max(), s.max()) - lo + 1
    lp = pl.col("price").log()
    ts = pl.col("ts")
    buy_key, sell_key = code * span + (b - lo), code * span + (s - lo)
    t = trades.with_columns(
        B=a.sum().over(buy_key),
        S=a.sum().over(sell_key),
        # trades per order: the same windows' groups, so free; see 2.
        nB=pl.len().over(buy_key),
        nS=pl.len().over(sell_key),
        dlogp=pl.when(code == code.shift(1)).then(lp - lp.shift(1)).otherwise(0.0),
        early=(ts >= T0930) & (ts < T1000),
    )
    B, S = pl.col("B"), pl.col("S")
    if cfg.big_order_rule == "fixed_notional":
        t = t.with_columns(thr=pl.lit(cfg.big_order_notional), all_eq=pl.lit(False))
    else:
        n = ((1 / pl.col("nB")).sum() + (1 / pl.col("nS")).sum()).round()
        mean = 2 * a.sum() / n
        var = ((a * (B + S)).sum() / n - mean * mean).clip(lower_bound=0.0)
        thr = t.group_by("symbol").agg(
            thr=mean + cfg.big_order_k * var.sqrt(),
            all_eq=pl.min_horizontal(B.min(), S.min()) == pl.max_horizontal(B.max(), S.max()),
        )
        t = t.join(thr, on="symbol", how="left")
    all_eq = pl.col("all_eq")
    thr_ = pl.col("thr")
    big_b, big_s = (thr_ <= B) | all_eq, (thr_ <= S) | all_eq
    early, dlogp = pl.col("early"), pl.col("dlogp")
    out = t.group_by("symbol").agg(
        T=a.sum(),
        a_buy=_where_sum(early & big_b, a),
        a_sell=_where_sum(early & big_s, a),
        bigorder_ret2=_where_sum(big_b | big_s, dlogp),
        early_active_bigorder_ret=_where_sum(
            early & (((side == 1) & big_b) | ((side == -1) & big_s)), dlogp),
        early_active_buy_perc=p_ratio(_where_sum(early & (side == 1), a), _where_sum(early, a)),
        bb=_where_sum(big_b, a), b2=(a * B).sum(),
        sb=_where_sum(big_s, a), s2=(a * S).sum(),
    ).with_columns(
        bigorder_amt_perc=p_ratio(pl.col("bb") + pl.col("sb"), 2 * pl.col("T")),
        early_bigorder_buy_perc=p_ratio(pl.col("a_buy"), pl.col("a_buy") + pl.col("a_sell")),
        concentration_diff=p_ratio(pl.col("b2"), pl.col("T") ** 2)
        - p_ratio(pl.col("s2"), pl.col("T") ** 2),
    )
    names = ["corr_netactivebuy_lastret", "corr_netactivebuy_nextret"]
    if bars is None:
        return [out.with_columns(pl.lit(None, dtype=pl.Float64).alias(c) for c in names)]
    # stock-minute key: one Int64 (the default Categorical's codes are one process-wide
    # mapping, polars.Categories, so a code names the same symbol in the bars and the trades)
    nab = trades.group_by(key=code * 240 + _minute_of(ts)).agg(
        nab=(a * side.cast(pl.Float64)).sum())
    full = (rets if rets is not None else minute_returns(bars)).select(
        "symbol", "minute", "r", key=code * 240 + pl.col("minute").cast(pl.Int64)
    ).join(nab, on="key", how="left", maintain_order="left")
    full = full.with_columns(pl.col("nab").fill_null(0.0)).with_columns(
        nab_prev=pl.col("nab").shift(1), r_prev=pl.col("r").shift(1))
    lagged = pl.col("minute") >= 1
    nab_c = pl.col("nab")
    corr = full.group_by("symbol").agg(
        corr_netactivebuy_lastret=p_corr(nab_c, pl.col("r_prev"), lagged, cfg.min_obs_day),
        corr_netactivebuy_nextret=p_corr(pl.col("nab_prev"), pl.col("r"), lagged,
                                         cfg.min_obs_day),
    )
    return [out, corr]


def polars_order(orders: Frame, cfg: FactorConfig) -> list[Frame]:
    """The order family: three filtered ``group_by`` passes over the orders placed 09:15 to
    15:00 (finite volumes), each aggregating a plain column (no masks):

    * ``group_by("symbol", "side")``: skewness, kurtosis and the guards (count, min, max) of
      buy and of sell order volumes in one pass, then buy minus sell per symbol on that
      10,000-row result (a second ``group_by``, not a self-join: in polars 2.1 a sub-plan used
      twice inside one query is cached, which stopped ``collect_all`` from sharing the order
      scan with the other two queries);
    * the early window (09:30 <= ts < 10:00): kurtosis of all orders' volumes;
    * buy limit orders with a finite price: corr(volume, price).

    A selection as a null-masked column (``pl.when(sel).then(v)``) costs each of its
    aggregations a pass over all 16.7 M rows; the filters run once, inside the scans.
    """
    md, mw = cfg.min_obs_day, cfg.min_obs_window
    ts, side = pl.col("ts"), pl.col("side")
    v, price = pl.col("volume").cast(pl.Float64), pl.col("price")
    placed = orders.filter((ts >= T0915) & (ts <= T1500) & v.is_finite())

    def guarded(stat: pl.Expr, min_obs: int) -> pl.Expr:
        return pl.when(_stat_ok(v, min_obs)).then(stat).otherwise(None)

    by_side = placed.group_by("symbol", "side").agg(
        skew=guarded(v.skew(bias=True), md),
        kurt=guarded(v.kurtosis(fisher=True, bias=True), md),
    )

    def buy_minus_sell(c: str) -> pl.Expr:
        x = pl.col(c)
        return x.filter(side == 1).first() - x.filter(side == -1).first()

    sides = by_side.group_by("symbol").agg(
        skew_order_diff=buy_minus_sell("skew"), kurt_order_diff=buy_minus_sell("kurt"))
    early = placed.filter((ts >= T0930) & (ts < T1000)).group_by("symbol").agg(
        early_kurt_order=guarded(v.kurtosis(fisher=True, bias=True), mw))
    limit_buy = placed.filter((side == 1) & (pl.col("order_type") == 0) & price.is_finite())
    corr = limit_buy.group_by("symbol").agg(
        corr_buyorder_volume_price=pl.when(_stat_ok(v, md) & (price.min() < price.max()))
        .then(pl.corr(v, price)).otherwise(None))
    return [sides, early, corr]


#: Columns each table contributes to the 27 factors (the peer projects only these).
POLARS_COLUMNS: dict[str, tuple[str, ...]] = {
    "minute": ("symbol", "minute", "open", "high", "low", "close", "volume", "amount",
               "num_trades"),
    "trades": ("symbol", "ts", "price", "amount", "buy_order_id", "sell_order_id", "side"),
    "orders": ("symbol", "ts", "price", "volume", "side", "order_type"),
}


def _symbols_categorical(frame: Frame) -> Frame:
    """The symbol as polars ``Categorical`` (the store's Arrow dictionary already reads as one;
    a plain string column, e.g. from another writer, is converted)."""
    return frame.with_columns(pl.col("symbol").cast(pl.Categorical))


def polars_frames(store: Store, date: dt.date) -> dict[str, pl.DataFrame]:
    """The day's minute/trades/orders partitions as eager polars frames (``read_ipc`` /
    ``read_parquet``, the used columns, symbols ``Categorical``)."""
    out = {}
    for t, cols in POLARS_COLUMNS.items():
        if store.has(t, date):
            path = store.partition_path(t, date)
            read = pl.read_ipc if path.suffix == ".arrow" else pl.read_parquet
            out[t] = _symbols_categorical(read(path, columns=list(cols)))  # type: ignore[operator]
    return out


def polars_scans(store: Store, date: dt.date) -> dict[str, pl.LazyFrame]:
    """The day's partitions as lazy frames projected to the used columns: ``scan_ipc`` of an
    Arrow IPC partition (the store's default hot format, memory-mapped by polars as by fbgpu),
    ``scan_parquet`` of a Parquet one, so the peer reads the same files fbgpu reads."""
    out = {}
    for t, cols in POLARS_COLUMNS.items():
        if store.has(t, date):
            path = store.partition_path(t, date)
            scan = pl.scan_ipc if path.suffix == ".arrow" else pl.scan_parquet
            out[t] = _symbols_categorical(scan(path).select(cols))
    return out


def polars_factors_from_frames(frames: dict[str, Frame], names: Sequence[str] | None = None,
                               config: FactorConfig | None = None) -> pl.DataFrame:
    """Factors ``names`` per symbol (the day's union universe, sorted, as strings), computed with
    polars from eager or lazy frames.

    Each family returns its per-symbol parts (a few thousand rows each); lazy parts are
    collected together with one ``pl.collect_all`` (the user guide's form for several queries
    over the same scans: shared sub-plans such as the bar returns are computed once), then
    joined on the symbol. Joining the parts inside one lazy plan instead made polars 2.1's
    streaming engine materialise the order table once for the three order queries: 1.6 s
    instead of 0.8 s for the order family.
    """
    names = resolve_names(list(names) if names is not None else None)
    cfg = config or FactorConfig()
    fams = {FACTORS[n].family for n in names}
    # The universe: each table's stocks are contiguous runs, so a run's first row names it (a
    # comparison with the previous row instead of hashing 28 M codes: 0.18 s instead of 0.31).
    code = _symbol_code()
    run_starts = pl.col("symbol").filter(code != code.shift(1, fill_value=-1))
    parts: list[Frame] = [pl.concat([f.select(run_starts) for f in frames.values()]).unique()]
    bars = frames.get("minute")
    rets = minute_returns(bars) if bars is not None else None
    if "minute" in fams and bars is not None:
        parts += polars_minute(bars, cfg, rets)
    if "trade" in fams and "trades" in frames:
        parts += polars_trade(frames["trades"], bars, cfg, rets)
    if "order" in fams and "orders" in frames:
        parts += polars_order(frames["orders"], cfg)
    done = [p for p in parts if isinstance(p, pl.DataFrame)]
    lazy = [p for p in parts if isinstance(p, pl.LazyFrame)]
    # streaming, explicitly (polars 2's default, unless POLARS_ENGINE_AFFINITY says otherwise):
    # the in-memory engine took 6.8 s instead of 3.6 s for all 27 on the full-day preset
    done += pl.collect_all(lazy, engine="streaming") if lazy else []
    out = done[0]
    for part in done[1:]:
        out = out.join(part, on="symbol", how="left")
    have = set(out.columns)
    return out.select(
        pl.col("symbol").cast(pl.String),
        *[pl.col(n) if n in have else pl.lit(None, dtype=pl.Float64).alias(n) for n in names],
    ).sort("symbol").fill_null(float("nan"))


def compute_day_polars(store: Store, date: dt.date, names: Sequence[str] | None = None
                       ) -> pl.DataFrame:
    """Read one day with polars and compute the factors ``names`` (the suite's polars runner).

    The whole job is one lazy query: ``scan_ipc``/``scan_parquet`` projected to the used columns,
    one ``group_by().agg()`` pass per family (plus the order-key windows and the stock-minute
    group-by of the trade family), all expressions, collected once so that polars' optimizer
    and its engine see the entire plan (the polars user guide's recommended form).
    """
    return polars_factors_from_frames(polars_scans(store, date), names)  # type: ignore[arg-type]


# ============================================================================ measurement
def copy_bandwidth(nbytes: int = 1 << 29) -> float:
    """Bytes/s of a large numpy copy (best of 3): the rate at which memory can be read once."""
    src = np.ones(nbytes // 8)
    dst = np.empty_like(src)
    best = math.inf
    for _ in range(3):
        t = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    return src.nbytes / best


FAMILY_COLUMNS: dict[str, dict[str, tuple[str, ...]]] = {
    "minute": {"minute": ("open", "high", "low", "close", "volume", "amount", "num_trades")},
    "trade": {"trades": ("ts", "price", "amount", "buy_order_id", "sell_order_id", "side"),
              "minute": ("open", "close")},
    "order": {"orders": ("ts", "price", "volume", "side", "order_type")},
}


def bytes_read_once(day: Any, family: str | None) -> int:
    """Bytes of the columns a family uses (all families when None), each read once."""
    fams = [family] if family else list(FAMILY_COLUMNS)
    need: dict[str, set[str]] = {}
    for f in fams:
        for table, cols in FAMILY_COLUMNS[f].items():
            need.setdefault(table, set()).update(cols)
    total = 0
    for table, cols in need.items():
        src = {"minute": day.minute, "trades": day.trades, "orders": day.orders}[table]
        if src is None:
            continue
        arrays = src.fields if table == "minute" else src.columns
        total += sum(arrays[c].nbytes for c in cols)
    return total


def timed(fn: Callable[[], Any], repeats: int) -> dict[str, float]:
    fn()  # warm-up: numba compilation / cache load, polars thread pool
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return {"median": statistics.median(ts), "min": min(ts), "max": max(ts)}


def ensure_market(store: Store, stocks: int) -> dt.date:
    """The store's first trading date, generating the ``full-day`` preset (with ``stocks``
    stocks) first if the store has no trades."""
    from fbgpu.data.synth import PRESETS, generate_market

    if not store.dates("trades"):
        cfg = PRESETS["full-day"]
        if stocks != cfg.n_stocks:
            cfg = cfg.model_copy(update={"n_stocks": stocks,
                                         "chunk_stocks": min(cfg.chunk_stocks, stocks)})
        generate_market(store, cfg, seed=0, progress=False)
    return store.dates("trades")[0]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stocks", type=int, default=5000)
    ap.add_argument("--store", type=Path, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("."))
    ap.add_argument("--threads", type=int, default=None, help="numba threads (default: all)")
    args = ap.parse_args(argv)
    import numba

    from fbgpu.engine.backend import BackendError, get_backend
    from fbgpu.engine.segments import segment_ops

    if args.threads:
        numba.set_num_threads(args.threads)
    store = Store(args.store or Path(f"/tmp/fbgpu-bench-full-day-{args.stocks}"))
    date = ensure_market(store, args.stocks)
    t = time.perf_counter()
    day = load_day(store, date)
    read_s = time.perf_counter() - t
    t = time.perf_counter()
    frames = polars_frames(store, date)
    polars_read_s = time.perf_counter() - t
    bw = copy_bandwidth()
    n_trades = day.trades.n_rows if day.trades else 0
    n_orders = day.orders.n_rows if day.orders else 0
    ticks = {"minute": 0, "trade": n_trades, "order": n_orders, "all": n_trades + n_orders}
    cpu_ops = segment_ops("cpu")
    impls: dict[str, Callable[[list[str]], Any]] = {
        "cpu": lambda names: compute_loaded_day(day, names, cpu_ops),
        "polars": lambda names: polars_factors_from_frames(frames, names),
    }
    try:
        gpu = get_backend("gpu")
        gops = segment_ops(gpu)
        impls["gpu"] = lambda names: gpu.to_host(compute_loaded_day(day, names, gops).values)
    except BackendError as e:
        print(f"gpu: skipped ({e})", file=sys.stderr)
    rows = []
    for family in ("minute", "trade", "order", "all"):
        names = factor_names(None if family == "all" else family)  # type: ignore[arg-type]
        nbytes = bytes_read_once(day, None if family == "all" else family)
        floor = nbytes / bw
        for impl, fn in impls.items():
            tm = timed(lambda fn=fn, names=names: fn(names), args.repeats)
            rows.append({"family": family, "impl": impl, "factors": len(names),
                         "seconds": tm["median"], "seconds_min": tm["min"],
                         "seconds_max": tm["max"], "ticks": ticks[family],
                         "ticks_per_s": ticks[family] / tm["median"] if ticks[family] else None,
                         "stock_days_per_s": len(day.universe) / tm["median"],
                         "bytes_read_once": nbytes, "floor_s": floor,
                         "ratio_to_floor": tm["median"] / floor})
    by = {(r["family"], r["impl"]): r["seconds"] for r in rows}
    for r in rows:
        r["speedup_vs_polars"] = by[(r["family"], "polars")] / r["seconds"]
    # Same job? Compare polars with fbgpu value by value.
    eng = compute_loaded_day(day, None, segment_ops("cpu"))
    pol = polars_factors_from_frames(frames, None)
    assert pol["symbol"].to_list() == list(eng.symbols)
    agree = {}
    for j, n in enumerate(eng_names := list(FACTORS)):
        a, b = eng.values[:, j], pol[n].to_numpy()
        same_nan = bool((np.isnan(a) == np.isnan(b)).all())
        diff = float(np.nanmax(np.abs(a - b))) if np.isfinite(a).any() else 0.0
        agree[n] = {"max_abs_diff": diff, "same_nan": same_nan}
    del eng_names
    result = {
        "date": str(date), "stocks": len(day.universe), "trades": n_trades, "orders": n_orders,
        "minute_bars": int(day.minute.n_stocks * 240) if day.minute else 0,
        "read_parquet_s": {"fbgpu": read_s, "polars": polars_read_s},
        "copy_bandwidth_GBps": bw / 1e9, "numba_threads": numba.get_num_threads(),
        "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
        "rows": rows, "polars_vs_fbgpu": agree,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_factors.json").write_text(json.dumps(result, indent=1))
    print(f"{len(day.universe)} stocks, {n_trades:,} trades, {n_orders:,} orders; copy bandwidth "
          f"{bw / 1e9:.1f} GB/s; numba threads {numba.get_num_threads()}; "
          f"load avg {os.getloadavg()[0]:.1f}")
    print(f"{'family':8}{'impl':8}{'seconds':>9}{'Mticks/s':>10}{'floor s':>9}"
          f"{'x floor':>9}{'vs polars':>10}")
    for r in rows:
        tps = f"{r['ticks_per_s'] / 1e6:10.2f}" if r["ticks_per_s"] else f"{'-':>10}"
        print(f"{r['family']:8}{r['impl']:8}{r['seconds']:9.3f}{tps}{r['floor_s']:9.3f}"
              f"{r['ratio_to_floor']:9.1f}{r['speedup_vs_polars']:10.1f}")
    worst = max(agree.items(), key=lambda kv: kv[1]["max_abs_diff"])
    print(f"polars vs fbgpu: largest difference {worst[1]['max_abs_diff']:.2e} ({worst[0]}); "
          f"NaN patterns equal for {sum(v['same_nan'] for v in agree.values())}/27 factors")
    return result


if __name__ == "__main__":
    main()
