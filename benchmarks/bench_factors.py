"""Factor throughput: fbgpu cpu (and gpu) vs. a straightforward polars implementation.

Usage::

    python benchmarks/bench_factors.py [--stocks 5000] [--store DIR] [--repeats 3] [--out DIR]

Data: one day of the synthetic ``full-day`` preset (``--stocks`` overrides its size; the market is
generated once into ``--store`` and reused). Measured, per family (minute / trade / order) and for
all 27 factors, on data already in memory (the Parquet read is timed separately):

* ``cpu``: :func:`fbgpu.factors.compute_loaded_day` on the CPU backend;
* ``gpu``: the same on the GPU backend, when one is usable (host->device copies included);
* ``polars``: :func:`polars_factors_from_frames`, the same definitions as polars expressions
  (group_by / over / joins), the way a polars user would write them;
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
def _stat_ok(v: pl.Expr, min_obs: int) -> pl.Expr:
    return (v.count() >= min_obs) & (v.min() < v.max())


def p_skew(x: pl.Expr, cond: pl.Expr, min_obs: int) -> pl.Expr:
    v = x.filter(cond & x.is_finite())
    return pl.when(_stat_ok(v, min_obs)).then(v.skew(bias=True)).otherwise(None)


def p_kurt(x: pl.Expr, cond: pl.Expr, min_obs: int) -> pl.Expr:
    v = x.filter(cond & x.is_finite())
    return pl.when(_stat_ok(v, min_obs)).then(v.kurtosis(fisher=True, bias=True)).otherwise(None)


def p_corr(x: pl.Expr, y: pl.Expr, cond: pl.Expr, min_obs: int) -> pl.Expr:
    ok = cond & x.is_finite() & y.is_finite()
    xs, ys = x.filter(ok), y.filter(ok)
    good = (xs.count() >= min_obs) & (xs.min() < xs.max()) & (ys.min() < ys.max())
    return pl.when(good).then(pl.corr(xs, ys)).otherwise(None)


def p_ratio(num: pl.Expr, den: pl.Expr) -> pl.Expr:
    return pl.when((den != 0) & den.is_finite()).then(num / den).otherwise(None)


def polars_minute(bars: pl.DataFrame, cfg: FactorConfig) -> pl.DataFrame:
    md, mw = cfg.min_obs_day, cfg.min_obs_window
    frac = cfg.top_frac_fraction
    df = bars.sort("symbol", "minute").with_columns(
        pl.col("volume").cast(pl.Float64), pl.col("num_trades").cast(pl.Float64))
    prev_close = pl.col("close").shift(1)
    df = df.with_columns(
        r=pl.when(pl.col("minute") == 0).then(pl.col("close") / pl.col("open") - 1)
        .otherwise(pl.col("close") / prev_close - 1),
        prev_close=prev_close,
    ).with_columns(r_prev=pl.col("r").shift(1))
    r, m, v = pl.col("r"), pl.col("minute"), pl.col("volume")
    lagged = m >= 1
    r2 = r * r
    aggs = [
        p_skew(r, m >= 210, mw).alias("late_skew_ret"),
        p_ratio(r2.filter(r < 0).sum(), r2.filter(r2.is_finite()).sum()).alias("down_vol_perc"),
        p_corr(r, pl.col("r_prev"), lagged, md).alias("corr_ret_lastret"),
        p_corr(pl.col("prev_close"), pl.col("open"), lagged, md).alias("corr_close_nextopen"),
        *[p_ratio(v.filter(m // 30 == j - 1).sum(), v.sum()).alias(f"volume_perc{j}")
          for j in range(2, 8)],
        p_corr(v, pl.col("num_trades"), pl.lit(True), md).alias("corr_volume_item"),
        p_corr(v, r, m < 30, mw).alias("early_corr_volume_ret"),
        p_ratio(
            p_ratio(pl.col("amount").filter(r < 0).sum(), pl.col("num_trades").filter(r < 0).sum()),
            p_ratio(pl.col("amount").sum(), pl.col("num_trades").sum()),
        ).alias("down_single_amt_perc"),
        p_corr(v, (pl.col("high") - pl.col("low")) / pl.col("open"), pl.lit(True), md)
        .alias("corr_volume_amplitude"),
    ]
    out = df.group_by("symbol").agg(aggs)
    traded = (
        df.filter(pl.col("num_trades") > 0)
        .with_columns(a=pl.col("amount") / pl.col("num_trades"))
        .with_columns(
            rank=pl.col("a").rank("ordinal", descending=True).over("symbol"),
            n=pl.len().over("symbol"),
        )
        .filter(pl.col("rank") <= (pl.col("n") * frac.numerator + frac.denominator - 1)
                // frac.denominator)
        .group_by("symbol")
        .agg(bigorder_ret=pl.col("r").log1p().filter(pl.col("r").log1p().is_finite()).sum())
    )
    return out.join(traded, on="symbol", how="left")


def _minute_of(ts: pl.Expr) -> pl.Expr:
    return (
        pl.when(ts < T1130).then((ts - T0930) // NS_PER_MIN)
        .when(ts < T1300).then(119)
        .otherwise(120 + (ts - T1300) // NS_PER_MIN)
        .clip(0, 239)
    )


def polars_trade(trades: pl.DataFrame, bars: pl.DataFrame | None, cfg: FactorConfig
                 ) -> pl.DataFrame:
    """The trade family: order amounts as window sums (no join back to the trades), the
    big-order threshold as windows over the stock, then one ``group_by("symbol").agg()``.

    Rows are in the store's ``(symbol, seq)`` order (spec/data.md), which the windows keep, so
    no sort is needed. Masked sums are ``pl.when(cond).then(x).sum()`` (nulls are skipped):
    plain column expressions that polars evaluates vectorised before the grouped sum, not
    per-group ``filter`` calls.
    """
    a, side = pl.col("amount"), pl.col("side")
    t = trades.with_columns(
        B=a.sum().over("symbol", "buy_order_id"),
        S=a.sum().over("symbol", "sell_order_id"),
        fb=pl.col("buy_order_id").is_first_distinct().over("symbol"),
        fs=pl.col("sell_order_id").is_first_distinct().over("symbol"),
        dlogp=pl.col("price").log().diff().over("symbol").fill_null(0.0),
        early=(pl.col("ts") >= T0930) & (pl.col("ts") < T1000),
    ).with_columns(
        # one value per order (null on the order's other trades)
        Bo=pl.when(pl.col("fb")).then(pl.col("B")),
        So=pl.when(pl.col("fs")).then(pl.col("S")),
    )
    Bo, So = pl.col("Bo"), pl.col("So")
    if cfg.big_order_rule == "fixed_notional":
        t = t.with_columns(thr=pl.lit(cfg.big_order_notional), all_eq=pl.lit(False))
    else:
        # mean and population std over the union of buy and sell orders (two-pass)
        n = Bo.count() + So.count()
        t = t.with_columns(mu=((Bo.sum() + So.sum()) / n).over("symbol"))
        dev2 = ((Bo - pl.col("mu")) ** 2).sum() + ((So - pl.col("mu")) ** 2).sum()
        t = t.with_columns(
            thr=(pl.col("mu") + cfg.big_order_k * (dev2 / n).sqrt()).over("symbol"),
            all_eq=(pl.min_horizontal(Bo.min(), So.min())
                    == pl.max_horizontal(Bo.max(), So.max())).over("symbol"),
        )
    t = t.with_columns(big_b=(pl.col("B") >= pl.col("thr")) | pl.col("all_eq"),
                       big_s=(pl.col("S") >= pl.col("thr")) | pl.col("all_eq"))
    early, big_b, big_s = pl.col("early"), pl.col("big_b"), pl.col("big_s")
    dlogp, B, S = pl.col("dlogp"), pl.col("B"), pl.col("S")
    fb, fs = pl.col("fb"), pl.col("fs")

    def where(cond: pl.Expr, x: pl.Expr) -> pl.Expr:
        return pl.when(cond).then(x).sum()

    out = t.group_by("symbol").agg(
        T=a.sum(),
        a_buy=where(early & big_b, a),
        a_sell=where(early & big_s, a),
        bigorder_ret2=where(big_b | big_s, dlogp),
        early_active_bigorder_ret=where(
            early & (((side == 1) & big_b) | ((side == -1) & big_s)), dlogp),
        early_active_buy_perc=p_ratio(where(early & (side == 1), a), where(early, a)),
        bb=where(fb & big_b, B), b2=where(fb, B * B),
        sb=where(fs & big_s, S), s2=where(fs, S * S),
    ).with_columns(
        bigorder_amt_perc=p_ratio(pl.col("bb") + pl.col("sb"), 2 * pl.col("T")),
        early_bigorder_buy_perc=p_ratio(pl.col("a_buy"), pl.col("a_buy") + pl.col("a_sell")),
        concentration_diff=p_ratio(pl.col("b2"), pl.col("T") ** 2)
        - p_ratio(pl.col("s2"), pl.col("T") ** 2),
    )
    nab = (
        trades.with_columns(minute=_minute_of(pl.col("ts")).cast(pl.Int16))
        .group_by("symbol", "minute")
        .agg(nab=(a * side.cast(pl.Float64)).sum())
    )
    grid: Any = pl.DataFrame({"minute": np.arange(240, dtype=np.int16)})
    if isinstance(t, pl.LazyFrame):
        grid = grid.lazy()
    syms = trades.select("symbol").unique()
    full = syms.join(grid, how="cross").join(nab, on=["symbol", "minute"], how="left")
    full = full.with_columns(pl.col("nab").fill_null(0.0))
    if bars is not None:
        prev_close = pl.col("close").shift(1)
        rets = bars.sort("symbol", "minute").select(
            "symbol", pl.col("minute").cast(pl.Int16),
            r=pl.when(pl.col("minute") == 0).then(pl.col("close") / pl.col("open") - 1)
            .otherwise(pl.col("close") / prev_close - 1))
        full = full.join(rets, on=["symbol", "minute"], how="left")
    else:
        full = full.with_columns(r=pl.lit(None, dtype=pl.Float64))
    full = full.sort("symbol", "minute").with_columns(
        nab_prev=pl.col("nab").shift(1), r_prev=pl.col("r").shift(1))
    lagged = pl.col("minute") >= 1
    corr = full.group_by("symbol").agg(
        corr_netactivebuy_lastret=p_corr(pl.col("nab"), pl.col("r_prev"), lagged, cfg.min_obs_day),
        corr_netactivebuy_nextret=p_corr(pl.col("nab_prev"), pl.col("r"), lagged, cfg.min_obs_day),
    )
    return out.join(corr, on="symbol", how="left")


def _masked_stat(x: pl.Expr, min_obs: int, stat: Callable[[pl.Expr], pl.Expr]) -> pl.Expr:
    """``stat(x)`` of a column that is null outside its selection, when it has ``min_obs``
    values that are not all equal (else null)."""
    return pl.when((x.count() >= min_obs) & (x.min() < x.max())).then(stat(x)).otherwise(None)


def polars_order(orders: pl.DataFrame, cfg: FactorConfig) -> pl.DataFrame:
    """The order family: each selection (buy / sell / early / buy limit orders) is a column
    that is null outside it, built once with ``pl.when``; then one ``group_by("symbol").agg()``
    of ``skew``/``kurtosis``/``corr`` on those columns (nulls skipped), rather than a per-group
    ``filter`` inside each aggregation."""
    md = cfg.min_obs_day
    ts, side = pl.col("ts"), pl.col("side")
    v = pl.col("volume").cast(pl.Float64)
    ok = (ts >= T0915) & (ts <= T1500) & v.is_finite()
    limit_buy = ok & (side == 1) & (pl.col("order_type") == 0) & pl.col("price").is_finite()
    sel = orders.with_columns(
        vb=pl.when(ok & (side == 1)).then(v),
        vs=pl.when(ok & (side == -1)).then(v),
        ve=pl.when(ok & (ts >= T0930) & (ts < T1000)).then(v),
        vc=pl.when(limit_buy).then(v),
        pc=pl.when(limit_buy).then(pl.col("price")),
    )

    def skew(c: str) -> pl.Expr:
        return _masked_stat(pl.col(c), md, lambda x: x.skew(bias=True))

    def kurt(c: str, min_obs: int = md) -> pl.Expr:
        return _masked_stat(pl.col(c), min_obs, lambda x: x.kurtosis(fisher=True, bias=True))

    vc, pc = pl.col("vc"), pl.col("pc")
    return sel.group_by("symbol").agg(
        skew_order_diff=skew("vb") - skew("vs"),
        kurt_order_diff=kurt("vb") - kurt("vs"),
        early_kurt_order=kurt("ve", cfg.min_obs_window),
        corr_buyorder_volume_price=pl.when(
            (vc.count() >= md) & (vc.min() < vc.max()) & (pc.min() < pc.max()))
        .then(pl.corr(vc, pc)).otherwise(None),
    )


def polars_frames(store: Store, date: dt.date) -> dict[str, pl.DataFrame]:
    """The day's minute/trades/orders partitions as polars frames (symbols as strings)."""
    out = {}
    for t in ("minute", "trades", "orders"):
        if store.has(t, date):
            path = store.partition_path(t, date)
            df = pl.read_ipc(path) if path.suffix == ".arrow" else pl.read_parquet(path)
            out[t] = df.with_columns(pl.col("symbol").cast(pl.String))
    return out


#: Columns each table contributes to the 27 factors (the lazy peer projects only these).
POLARS_COLUMNS: dict[str, tuple[str, ...]] = {
    "minute": ("symbol", "minute", "open", "high", "low", "close", "volume", "amount",
               "num_trades"),
    "trades": ("symbol", "seq", "ts", "price", "amount", "buy_order_id", "sell_order_id", "side"),
    "orders": ("symbol", "ts", "price", "volume", "side", "order_type"),
}


def polars_scans(store: Store, date: dt.date) -> dict[str, pl.LazyFrame]:
    """The day's partitions as lazy frames projected to the used columns: ``scan_ipc`` of an
    Arrow IPC partition (the store's default hot format, memory-mapped by polars as by fbgpu),
    ``scan_parquet`` of a Parquet one, so the peer reads the same files fbgpu reads."""
    out = {}
    for t, cols in POLARS_COLUMNS.items():
        if store.has(t, date):
            path = store.partition_path(t, date)
            scan = pl.scan_ipc if path.suffix == ".arrow" else pl.scan_parquet
            lf = scan(path).select(cols)
            out[t] = lf.with_columns(pl.col("symbol").cast(pl.String))
    return out


def polars_factors_from_frames(frames: dict[str, pl.DataFrame], names: Sequence[str] | None = None,
                               config: FactorConfig | None = None) -> pl.DataFrame:
    """Factors ``names`` per symbol (the day's union universe), computed with polars."""
    names = resolve_names(list(names) if names is not None else None)
    cfg = config or FactorConfig()
    fams = {FACTORS[n].family for n in names}
    universe = pl.concat([f.select("symbol") for f in frames.values()]).unique().sort("symbol")
    out = universe
    bars = frames.get("minute")
    if "minute" in fams and bars is not None:
        out = out.join(polars_minute(bars, cfg), on="symbol", how="left")
    if "trade" in fams and "trades" in frames:
        trade = polars_trade(frames["trades"], bars, cfg)
        out = out.join(trade, on="symbol", how="left")
    if "order" in fams and "orders" in frames:
        out = out.join(polars_order(frames["orders"], cfg), on="symbol", how="left")
    have = set(out.collect_schema().names())
    for n in names:
        if n not in have:
            out = out.with_columns(pl.lit(None, dtype=pl.Float64).alias(n))
    out = out.select("symbol", *names).sort("symbol").fill_null(float("nan"))
    return out.collect() if isinstance(out, pl.LazyFrame) else out


def compute_day_polars(store: Store, date: dt.date, names: Sequence[str] | None = None
                       ) -> pl.DataFrame:
    """Read one day with polars and compute the factors ``names`` (the suite's polars runner).

    The whole job is one lazy query: ``scan_ipc``/``scan_parquet`` projected to the used columns,
    one ``group_by().agg()`` pass per family (plus the order-level and minute-level group-bys the
    trade family needs), all expressions, collected once so that polars' optimizer and its
    thread pool see the entire plan (the polars user guide's recommended form).
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
