"""The GPU factor engine on a lent GPU machine: compute-only and with IO, against the CPU backend
on the same machine, parity, determinism, and a real-scale (>= 150M ticks) day.

    python benchmarks/bench_gpu_engine.py --store /tmp/fbgpu-engine --out gpu-engine.json
    python benchmarks/bench_gpu_engine.py --emulate --preset tiny ...   # rehearsal without a GPU

What is timed (wall clock, the device synchronised before the clock stops; median of
``--repeats`` after one warm-up, which also builds the NVRTC kernels):

* ``read``: :func:`fbgpu.factors.load_day`, the store's partitions to host arrays;
* ``upload``: :func:`fbgpu.factors.day_to_backend`, host arrays to the device;
* ``compute``: :func:`fbgpu.factors.compute_loaded_day` on inputs already on the backend
  (all 27 factors, and per family), result left on the device;
* ``with_io``: :func:`fbgpu.factors.compute_day` from the store, result copied to the host: what
  one day of ``fbgpu factors`` costs apart from the write;
* ``gpu_days_with_io``: up to 3 consecutive days from the store, values to the host, with the
  next day's read and upload overlapping this day's compute (``DayPrefetch`` on the GPU
  backend: pinned staging buffers, a side stream) against read, upload, compute in turn
  (:func:`days_with_io`);
* the same for the CPU backend (numba, every core of the machine) on the same loaded day;
* ``gpu_fused``: the GPU compute (all 27 and per family) with the fused family passes on and
  off (``FBGPU_FUSED``, :func:`with_fused`), their gain, whether both give the same bits, and
  ``gpu_fused_profile_s``: each fused kernel pass alone (:func:`profile_fused`). The headline
  ``gpu_compute`` is the default (fused) path.
* ``gpu_order_reconstruction``: order reconstruction per side, segmented (``seg_group_total``,
  the default) vs the two global radix sorts (``FBGPU_GROUP_SORT=global``), the fused
  ``trade_order_stats`` and the trade family each way, same bits or not, and the stocks above
  the kernel's shared-memory cap (:func:`order_reconstruction`); on the full day and the real-
  scale day.

Parity: the GPU's values against the CPU's, per factor: the largest relative difference over
stock-days finite on both, and whether NaN sits in the same places. Determinism: two GPU runs,
compared bit for bit. Real scale: the day's ticks tiled (:func:`tile_ticks`) to at least
``--scale-ticks`` ticks over the same stocks, compute-only on both backends.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fbgpu.data.store import DayTicks, Store
from fbgpu.engine.backend import Backend, get_backend
from fbgpu.engine.segments import FUSED_ENV, segment_ops
from fbgpu.factors import (
    FACTORS,
    DayInputs,
    compute_day,
    compute_loaded_day,
    day_to_backend,
    factor_names,
    load_day,
)

log = logging.getLogger("fbgpu.bench.gpu_engine")

#: Tick columns that hold order ids: each tiled copy gets its own id range.
ORDER_ID_COLUMNS = ("buy_order_id", "sell_order_id")


def sync(b: Backend) -> None:
    if b.xp is not np:
        b.xp.cuda.Device().synchronize()


def timed(fn: Callable[[], Any], b: Backend, repeats: int, warmup: int = 1) -> dict[str, Any]:
    for _ in range(warmup):
        fn()
        sync(b)
    ts = []
    for _ in range(repeats):
        sync(b)
        t = time.perf_counter()
        fn()
        sync(b)
        ts.append(time.perf_counter() - t)
    return {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts),
            "repeats": repeats}


def days_with_io(store: Store, names: list[str], b: Backend, ops: Any, days: int = 3
                 ) -> dict[str, Any]:
    """Several consecutive days from the store, each day's values copied to the host: with the
    next day's read and upload overlapping this day's compute (``overlap``: ``DayPrefetch``
    with the backend, as ``run_factors`` runs it: pinned staging and a side stream on cupy)
    and without (``inline``: read, upload, compute, one after another). One timed pass each
    after the single-day timings warmed the kernels; the two alternate (inline, overlap,
    inline, overlap) and the medians are reported."""
    from fbgpu.factors.compute import DayPrefetch

    dates = store.dates("trades")[:days]

    def inline() -> None:
        for d in dates:
            b.to_host(compute_loaded_day(day_to_backend(load_day(store, d, names), b), names,
                                         ops).values)

    def overlap() -> None:
        with DayPrefetch(store, [(d, names) for d in dates], backend=b) as pre:
            for d in dates:
                b.to_host(compute_day(store, d, names, b, ops=ops, loaded=pre.take(d)).values)

    runs: dict[str, list[float]] = {"inline": [], "overlap": []}
    for _ in range(2):
        for k, fn in (("inline", inline), ("overlap", overlap)):
            sync(b)
            t = time.perf_counter()
            fn()
            sync(b)
            runs[k].append(time.perf_counter() - t)
    out: dict[str, Any] = {"days": len(dates)}
    for k, ts in runs.items():
        out[k] = {"median_s": statistics.median(ts), "min_s": min(ts), "runs": ts}
    out["overlap_gain"] = out["inline"]["median_s"] / out["overlap"]["median_s"]
    return out


def tile_ticks(t: DayTicks, k: int, id_columns: tuple[str, ...] = ORDER_ID_COLUMNS) -> DayTicks:
    """Each stock's ticks repeated ``k`` times inside its own segment (copy c after copy c-1).

    Per-copy perturbation: the order-id columns of copy c are shifted by ``c * (max id + 1)``, so
    each copy reconstructs its own orders (a stock-day then has k times the orders, each with
    the original's trades). Timestamps, prices, amounts and sides are the original's. The
    result has the shape of a day with k times the activity: same stocks, k-times longer
    segments, the same statistics per copy.
    """
    off = t.offsets.astype(np.int64)
    lens = np.diff(off)
    n = int(off[-1])
    seg = np.repeat(np.arange(lens.size), lens)
    within = np.arange(n, dtype=np.int64) - off[seg]
    base = (off * k)[:-1][seg] + within
    cols: dict[str, np.ndarray] = {}
    for name, a in t.columns.items():
        out = np.empty(n * k, dtype=a.dtype)
        shift = int(a.max()) + 1 if name in id_columns and n else 0
        for c in range(k):
            dest = base + c * lens[seg]
            out[dest] = a + c * shift if shift else a
        cols[name] = out
    return DayTicks(t.date, t.symbols, off * k, cols)


def tiled_day(day: DayInputs, min_ticks: float) -> tuple[DayInputs, int]:
    k = max(1, math.ceil(min_ticks / max(day.n_ticks, 1)))
    trades = tile_ticks(day.trades, k) if day.trades is not None else None
    orders = tile_ticks(day.orders, k) if day.orders is not None else None
    return dataclasses.replace(day, trades=trades, orders=orders), k


def parity(gpu_values: np.ndarray, cpu_values: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Per factor: the largest relative difference where both are finite, NaN placement."""
    per: dict[str, Any] = {}
    for j, name in enumerate(names):
        g, c = gpu_values[:, j], cpu_values[:, j]
        both = np.isfinite(g) & np.isfinite(c)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.abs(g[both] - c[both]) / np.maximum(np.abs(c[both]), 1e-300)
        per[name] = {"max_rel": float(rel.max()) if rel.size else 0.0,
                     "finite": int(both.sum()),
                     "same_nan": bool((np.isnan(g) == np.isnan(c)).all()),
                     "bitwise_equal": bool(np.array_equal(g, c, equal_nan=True))}
    return {"max_rel": max(v["max_rel"] for v in per.values()),
            "all_same_nan": all(v["same_nan"] for v in per.values()),
            "factors_bitwise_equal": sum(v["bitwise_equal"] for v in per.values()),
            "per_factor": per}


def sync_guard(dev_day: DayInputs, names: list[str], ops: Any) -> dict[str, Any]:
    """Run the compute under ``cupyx.allow_synchronize(False)`` (if this CuPy still has it):
    the first implicit device->host synchronisation raises, and is reported."""
    try:
        import cupyx
    except ImportError:
        return {"available": False, "why": "no cupyx"}
    guard = getattr(cupyx, "allow_synchronize", None)
    if guard is None:
        return {"available": False, "why": "cupyx.allow_synchronize is gone from this CuPy"}
    import traceback

    try:
        with guard(False):
            compute_loaded_day(dev_day, names, ops)
        return {"available": True, "raised": False}
    except Exception as e:
        tb = traceback.extract_tb(e.__traceback__)
        ours = [f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in tb
                if "fbgpu" in f.filename]
        return {"available": True, "raised": True, "error": f"{type(e).__name__}: {e}"[:300],
                "where": ours[-4:]}


def profile_steps(day: DayInputs, ops: Any, b: Backend) -> dict[str, float]:
    """Seconds of each shared intermediate and each factor of a day already on the backend,
    the device synchronised around every step (so the steps do not overlap: their sum exceeds
    the pipelined total). Intermediates first, in dependency order; a factor's time is then
    what it adds to them."""
    from fbgpu.factors.compute import MINUTE_FIELDS, ORDER_COLUMNS, TRADE_COLUMNS
    from fbgpu.factors.config import FactorConfig
    from fbgpu.factors.context import MinuteContext, OrderContext, TradeContext

    xp = ops.xp
    cfg = FactorConfig()
    steps: dict[str, float] = {}

    def step(name: str, fn: Callable[[], Any]) -> None:
        sync(b)
        t = time.perf_counter()
        fn()
        sync(b)
        steps[name] = time.perf_counter() - t

    names = factor_names()
    if day.minute is not None:
        mctx = MinuteContext(ops, cfg, {f: xp.asarray(day.minute.fields[f])
                                        for f in MINUTE_FIELDS})
        for attr in ("ret", "volume", "num_trades", "volume_buckets"):
            step(f"minute.{attr}", lambda a=attr: getattr(mctx, a))
        for n in (n for n in names if FACTORS[n].family == "minute"):
            step(f"minute:{n}", lambda n=n: FACTORS[n].compute(mctx))
    if day.trades is not None:
        tr = day.trades
        tctx = TradeContext(ops, cfg, xp.asarray(tr.offsets),
                            {c: xp.asarray(tr.columns[c]) for c in TRADE_COLUMNS},
                            xp.full((tr.n_stocks, 240), xp.nan))
        for attr in ("amount", "dlogp", "buy_orders", "sell_orders", "order_moments",
                     "big_threshold", "big_buy", "big_sell", "early", "flags", "amount_bins",
                     "dlogp_bins", "net_active_buy"):
            step(f"trade.{attr}", lambda a=attr: getattr(tctx, a))
        for n in (n for n in names if FACTORS[n].family == "trade"):
            step(f"trade:{n}", lambda n=n: FACTORS[n].compute(tctx))
        keys = xp.asarray(tr.columns["buy_order_id"])
        if hasattr(ops, "_stable_argsort"):
            step("sort: engine stable argsort (10M+ int64)", lambda: ops._stable_argsort(keys))
            step("sort: xp.argsort (for comparison)", lambda: xp.argsort(keys))
    if day.orders is not None:
        od = day.orders
        octx = OrderContext(ops, cfg, xp.asarray(od.offsets),
                            {c: xp.asarray(od.columns[c]) for c in ORDER_COLUMNS})
        for attr in ("session", "early", "volume", "price", "buy", "buy_moments",
                     "sell_moments"):
            step(f"order.{attr}", lambda a=attr: getattr(octx, a))
        for n in (n for n in names if FACTORS[n].family == "order"):
            step(f"order:{n}", lambda n=n: FACTORS[n].compute(octx))
    return steps


@contextlib.contextmanager
def with_fused(on: bool) -> Any:
    """Run the block with the fused family passes on or off (``FBGPU_FUSED``, read at each
    call by :func:`fbgpu.engine.segments.fused_enabled`), restoring the variable after."""
    before = os.environ.get(FUSED_ENV)
    os.environ[FUSED_ENV] = "1" if on else "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(FUSED_ENV, None)
        else:
            os.environ[FUSED_ENV] = before


def fused_vs_primitive(dev: DayInputs, names: list[str], ops: Any, b: Backend, repeats: int,
                       families: tuple[str, ...] = ("minute", "trade", "order")) -> dict[str, Any]:
    """All factors and each family's alone, with the fused passes on and off; the gain
    (off / on, median seconds) and whether the two paths give the same bits."""
    out: dict[str, Any] = {}
    values = {}
    for label, on in (("on", True), ("off", False)):
        with with_fused(on):
            compute_loaded_day(dev, names, ops)  # warm this path's kernels and caches
            out[label] = {
                "compute": timed(lambda: compute_loaded_day(dev, names, ops), b, repeats),
                "by_family": {fam: timed(lambda fam=fam: compute_loaded_day(
                    dev, [n for n in names if FACTORS[n].family == fam], ops), b, repeats)
                    for fam in families}}
            values[label] = b.to_host(compute_loaded_day(dev, names, ops).values)
    med = {k: out[k]["compute"]["median_s"] for k in ("on", "off")}
    out["gain"] = med["off"] / med["on"]
    out["gain_by_family"] = {fam: out["off"]["by_family"][fam]["median_s"]
                             / out["on"]["by_family"][fam]["median_s"] for fam in families}
    out["bitwise_equal"] = bool(values["on"].tobytes() == values["off"].tobytes())
    out["parity_on_vs_off"] = {k: v for k, v in parity(values["on"], values["off"], names).items()
                               if k != "per_factor"}
    return out


@contextlib.contextmanager
def with_env(var: str, value: str) -> Any:
    """Run the block with environment variable ``var`` set to ``value``, restoring it after."""
    before = os.environ.get(var)
    os.environ[var] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = before


def order_reconstruction(day: DayInputs, names: list[str], ops: Any, b: Backend,
                         repeats: int) -> dict[str, Any]:
    """Order reconstruction (big-order identification by order id) both ways: the segmented
    ``seg_group_total`` (one launch per side, one block per stock) and the two global stable
    radix sorts + ``group_total`` (``FBGPU_GROUP_SORT=global``). Timed per side
    (``group_sum`` by buy id, by sell id, each with its own allocations; the global path also
    builds the segment ids), the fused ``trade_order_stats`` (both sides + the order moments)
    and the trade family's factors; whether both give the same bits (order totals, first flags,
    order moments, all factors); and how many stocks and trades lie above the kernel's
    shared-memory cap (those sort through global scratch)."""
    from fbgpu.factors.compute import TRADE_COLUMNS

    if day.trades is None or not hasattr(ops, "segmented_groups"):
        return {"available": False}
    tr = day.trades
    xp = ops.xp
    lens = np.diff(np.asarray(tr.offsets, dtype=np.int64))  # host metadata of the loaded day
    cap = int(ops.kernels.group_cap)
    above = lens > cap
    out: dict[str, Any] = {
        "group_cap": cap, "stocks": int(lens.size), "stocks_above_cap": int(above.sum()),
        "trades_above_cap_share": float(lens[above].sum() / max(int(lens.sum()), 1)),
        "max_trades_per_stock": int(lens.max()) if lens.size else 0}
    off = xp.asarray(tr.offsets)
    cols = {c: xp.asarray(tr.columns[c]) for c in TRADE_COLUMNS}
    amount = xp.asarray(cols["amount"], dtype=xp.float64)
    trade_names = [n for n in names if FACTORS[n].family == "trade"]
    bits: dict[str, list[bytes]] = {}
    for path in ("segmented", "global"):
        with with_env(ops.GROUP_ENV, path):
            res: dict[str, Any] = {}
            for side in ("buy", "sell"):
                ids = cols[f"{side}_order_id"]
                res[f"group_sum_{side}"] = timed(lambda ids=ids: ops.group_sum(off, ids, amount),
                                                 b, repeats)
            res["trade_order_stats"] = timed(lambda: ops.trade_order_stats(
                off, cols["buy_order_id"], cols["sell_order_id"], amount), b, repeats)
            res["trade_family"] = timed(lambda: compute_loaded_day(day, trade_names, ops), b,
                                        repeats)
            got = ops.trade_order_stats(off, cols["buy_order_id"], cols["sell_order_id"], amount)
            bits[path] = [b.to_host(a).tobytes() for a in (
                got.buy_totals, got.sell_totals, got.buy.m2, got.sell.m4,
                ops.group_sum(off, cols["buy_order_id"], amount)[1],
                compute_loaded_day(day, names, ops).values)]
            out[path] = res
    out["bitwise_equal"] = bits["segmented"] == bits["global"]
    out["gain_per_side"] = {side: out["global"][f"group_sum_{side}"]["median_s"]
                            / out["segmented"][f"group_sum_{side}"]["median_s"]
                            for side in ("buy", "sell")}
    out["gain_trade_order_stats"] = (out["global"]["trade_order_stats"]["median_s"]
                                     / out["segmented"]["trade_order_stats"]["median_s"])
    return out


def profile_fused(day: DayInputs, ops: Any, b: Backend) -> dict[str, float]:
    """Seconds of each fused family pass alone (the device synchronised around each), on a
    fresh context per pass so that nothing is cached: ``minute`` (the returns and amplitude it
    reads, then ``minute_family_stats``), ``order`` (``order_family_stats``), and the trade
    family split into ``trade_order_stats`` (two group-bys + the order moments),
    ``trade.big_threshold + log_price`` (array code) and ``trade_flag_bins``."""
    from fbgpu.factors import fused
    from fbgpu.factors.compute import MINUTE_FIELDS, ORDER_COLUMNS, TRADE_COLUMNS
    from fbgpu.factors.config import FactorConfig
    from fbgpu.factors.context import EARLY_WINDOW, MinuteContext, OrderContext, TradeContext

    xp = ops.xp
    cfg = FactorConfig()
    steps: dict[str, float] = {}

    def step(name: str, fn: Callable[[], Any]) -> Any:
        sync(b)
        t = time.perf_counter()
        r = fn()
        sync(b)
        steps[name] = time.perf_counter() - t
        return r

    if day.minute is not None:
        fields = {f: xp.asarray(day.minute.fields[f]) for f in MINUTE_FIELDS}
        mctx = MinuteContext(ops, cfg, fields)
        step("minute: ret + amplitude", lambda: (mctx.ret, mctx.amplitude))
        step("minute: minute_family_stats", lambda: fused.prime_minutes(mctx))
        step("minute: whole pass, fresh context",
             lambda: fused.prime_minutes(MinuteContext(ops, cfg, fields)))
    if day.trades is not None:
        tr = day.trades
        cols = {c: xp.asarray(tr.columns[c]) for c in TRADE_COLUMNS}
        tctx = TradeContext(ops, cfg, xp.asarray(tr.offsets), cols,
                            xp.full((tr.n_stocks, 240), xp.nan))
        orders = step("trade: trade_order_stats", lambda: ops.trade_order_stats(
            tctx.offsets, tctx.col("buy_order_id"), tctx.col("sell_order_id"), tctx.amount))
        tctx.__dict__["order_moments"] = (orders.buy, orders.sell)
        thr, always = step("trade: big_threshold + log_price",
                           lambda: (*tctx.big_threshold, tctx.log_price))[:2]
        step("trade: trade_flag_bins", lambda: ops.trade_flag_bins(
            tctx.offsets, tctx.col("ts"), tctx.side, tctx.amount, tctx.log_price,
            orders.buy_totals, orders.sell_totals, thr, always, EARLY_WINDOW))
    if day.orders is not None:
        od = day.orders
        cols = {c: xp.asarray(od.columns[c]) for c in ORDER_COLUMNS}
        step("order: order_family_stats",
             lambda: fused.prime_orders(OrderContext(ops, cfg, xp.asarray(od.offsets), cols)))
    return steps


def run(store: Store, gpu: Backend, repeats: int, scale_ticks: float, cpu: bool) -> dict[str, Any]:
    names = factor_names()
    date = store.dates("trades")[0]
    gops = segment_ops(gpu)
    result: dict[str, Any] = {"date": date.isoformat(), "factors": len(names)}

    day = load_day(store, date, names)
    result["market"] = {"stocks": len(day.universe), "trades": day.trades.n_rows,
                        "orders": day.orders.n_rows, "ticks": day.n_ticks}
    result["read"] = timed(lambda: load_day(store, date, names), gpu, repeats, warmup=0)
    # One staging slot for every upload below, as a run has (run_staging): the pinned host
    # buffer is allocated once (in the warm-up) and reused, not allocated in every timed call.
    pool = gpu.staging_pool(1)
    result["upload"] = timed(lambda: day_to_backend(day, gpu, pool), gpu, repeats)
    dev = day_to_backend(day, gpu, pool)
    t = time.perf_counter()
    compute_loaded_day(dev, names, gops)  # first call: NVRTC build, cupy kernel caches
    sync(gpu)
    result["first_call_s"] = time.perf_counter() - t
    result["gpu_compute"] = timed(lambda: compute_loaded_day(dev, names, gops), gpu, repeats)
    result["gpu_compute_by_family"] = {
        fam: timed(lambda fam=fam: compute_loaded_day(
            dev, [n for n in names if FACTORS[n].family == fam], gops), gpu, repeats)
        for fam in ("minute", "trade", "order")}
    result["gpu_with_io"] = timed(
        lambda: gpu.to_host(compute_day(store, date, names, gpu, ops=gops).values), gpu,
        max(1, repeats // 2))
    if len(store.dates("trades")) > 1:  # the next day's read + upload behind this compute
        result["gpu_days_with_io"] = days_with_io(store, names, gpu, gops)
    g1 = gpu.to_host(compute_loaded_day(dev, names, gops).values)
    g2 = gpu.to_host(compute_loaded_day(dev, names, gops).values)
    result["gpu_deterministic"] = bool(g1.tobytes() == g2.tobytes())
    result["sync_guard"] = sync_guard(dev, names, gops) if gpu.xp is not np else {
        "available": False, "why": "emulated"}
    profile_steps(dev, gops, gpu)  # warm
    result["gpu_profile_s"] = profile_steps(dev, gops, gpu)
    if gops.fused_passes:
        result["gpu_fused"] = fused_vs_primitive(dev, names, gops, gpu, repeats)
        profile_fused(dev, gops, gpu)  # warm
        result["gpu_fused_profile_s"] = profile_fused(dev, gops, gpu)
    result["gpu_order_reconstruction"] = order_reconstruction(dev, names, gops, gpu, repeats)
    if gpu.xp is not np:
        pool = gpu.xp.get_default_memory_pool()
        result["device_pool_gb"] = {"used": pool.used_bytes() / 2**30,
                                    "total": pool.total_bytes() / 2**30}
    if cpu:
        cb = get_backend("cpu")
        cops = segment_ops(cb)
        result["cpu_compute"] = timed(lambda: compute_loaded_day(day, names, cops), cb,
                                      max(1, repeats // 2))
        result["cpu_with_io"] = timed(lambda: compute_day(store, date, names, cb, ops=cops),
                                      cb, max(1, repeats // 2), warmup=0)
        c = compute_loaded_day(day, names, cops).values
        result["parity"] = parity(g1, c, names)
        result["speedup_compute"] = (result["cpu_compute"]["median_s"]
                                     / result["gpu_compute"]["median_s"])
        result["speedup_with_io"] = (result["cpu_with_io"]["median_s"]
                                     / result["gpu_with_io"]["median_s"])
    if scale_ticks > 0:
        t = time.perf_counter()
        big, k = tiled_day(day, scale_ticks)
        scale: dict[str, Any] = {"copies": k, "ticks": big.n_ticks,
                                 "trades": big.trades.n_rows, "orders": big.orders.n_rows,
                                 "build_s": time.perf_counter() - t}
        bdev = day_to_backend(big, gpu, pool)  # untimed: grows the staging slot to this size
        scale["upload"] = timed(lambda: day_to_backend(big, gpu, pool), gpu, 1, warmup=0)
        scale["gpu_compute"] = timed(lambda: compute_loaded_day(bdev, names, gops), gpu,
                                     repeats)
        scale["gpu_profile_s"] = profile_steps(bdev, gops, gpu)
        scale["gpu_compute_by_family"] = {
            fam: timed(lambda fam=fam: compute_loaded_day(
                bdev, [n for n in names if FACTORS[n].family == fam], gops), gpu, repeats)
            for fam in ("trade", "order")}
        if gops.fused_passes:
            scale["gpu_fused"] = fused_vs_primitive(bdev, names, gops, gpu, repeats,
                                                    ("trade", "order"))
            scale["gpu_fused_profile_s"] = profile_fused(bdev, gops, gpu)
        scale["gpu_order_reconstruction"] = order_reconstruction(bdev, names, gops, gpu,
                                                                 repeats)
        gb = gpu.to_host(compute_loaded_day(bdev, names, gops).values)
        if gpu.xp is not np:
            pool = gpu.xp.get_default_memory_pool()
            scale["device_pool_gb_total"] = pool.total_bytes() / 2**30
            pool.free_all_blocks()
        if cpu:
            cb = get_backend("cpu")
            cops = segment_ops(cb)
            scale["cpu_compute"] = timed(lambda: compute_loaded_day(big, names, cops), cb, 1)
            cbv = compute_loaded_day(big, names, cops).values
            scale["parity"] = {k: v for k, v in parity(gb, cbv, names).items()
                               if k != "per_factor"}
            scale["speedup_compute"] = (scale["cpu_compute"]["median_s"]
                                        / scale["gpu_compute"]["median_s"])
        result["real_scale"] = scale
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", default="/tmp/fbgpu-engine")
    ap.add_argument("--out", default="gpu-engine.json")
    ap.add_argument("--preset", default="full-day")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--scale-ticks", type=float, default=150e6,
                    help="tile the day to at least this many ticks (0: skip)")
    ap.add_argument("--no-cpu", action="store_true", help="skip the CPU backend")
    ap.add_argument("--emulate", action="store_true",
                    help="no GPU: run the GPU kernels under the host emulation (a rehearsal)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    from fbgpu.data.synth import generate_market, resolve_config

    gpu = Backend("gpu", np, "host emulation") if args.emulate else get_backend("gpu")
    root = Path(args.store)
    store = Store(root)
    if not store.dates("trades"):
        t = time.perf_counter()
        _, cfg = resolve_config(args.preset)
        generate_market(store, cfg.model_copy(update={"n_days": 1}), seed=0, progress=False)
        log.info("generated %s in %.1f s", args.preset, time.perf_counter() - t)
    t0 = time.perf_counter()
    result = run(store, gpu, args.repeats, args.scale_ticks, not args.no_cpu)
    meta: dict[str, Any] = {"device": gpu.device, "backend_info": gpu.info,
                            "preset": args.preset, "emulated": args.emulate,
                            "cpu_count": os.cpu_count(), "platform": platform.platform(),
                            "python": platform.python_version(),
                            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            "seconds": time.perf_counter() - t0}
    with contextlib.suppress(Exception):
        import numba

        meta["numba_threads"] = numba.config.NUMBA_NUM_THREADS
    if gpu.xp is not np:
        meta["cupy"] = gpu.xp.__version__
    result = {"meta": meta, **result}
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    gc = result["gpu_compute"]["median_s"]
    line = (f"gpu-engine: {result['market']['ticks']:,} ticks, gpu compute {gc * 1e3:.1f} ms, "
            f"with io {result['gpu_with_io']['median_s']:.3f} s")
    if "gpu_fused" in result:
        gf = result["gpu_fused"]
        fams = " / ".join(f"{fam} {gf['on']['by_family'][fam]['median_s'] * 1e3:.1f} vs "
                          f"{gf['off']['by_family'][fam]['median_s'] * 1e3:.1f}"
                          for fam in gf["on"]["by_family"])
        line += (f" (fused on; off: {gf['off']['compute']['median_s'] * 1e3:.1f} ms, "
                 f"{gf['gain']:.2f}x; by family on vs off, ms: {fams}; same bits "
                 f"{gf['bitwise_equal']})")
    orc = result.get("gpu_order_reconstruction", {})
    if "segmented" in orc:
        line += (f"; order reconstruction per side (buy) segmented "
                 f"{orc['segmented']['group_sum_buy']['median_s'] * 1e3:.2f} ms vs two sorts "
                 f"{orc['global']['group_sum_buy']['median_s'] * 1e3:.2f} ms, same bits "
                 f"{orc['bitwise_equal']}")
    if "cpu_compute" in result:
        line += (f", cpu compute {result['cpu_compute']['median_s']:.3f} s "
                 f"({result['speedup_compute']:.0f}x), parity max rel "
                 f"{result['parity']['max_rel']:.2e}")
    if "real_scale" in result:
        rs = result["real_scale"]
        line += (f"; real scale {rs['ticks']:,} ticks: gpu "
                 f"{rs['gpu_compute']['median_s'] * 1e3:.1f} ms")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
