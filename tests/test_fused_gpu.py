"""The GPU backend's fused family passes (kernels/segments.cu) against the CPU's and the primitives.

The kernels run where the other GPU tests run them: on a device with cupy when one is usable,
else under the host emulation (g++, 8 threads per block, so short segments still cross block
boundaries; small inputs: the emulation is slow). Three comparisons per pass:

* against the GPU *primitive* path (``seg_moments``, ``seg_corr``, ``seg_sum``, ``group_sum``,
  ``bin_sum`` on the same elements): the same float64 bits. The fused kernels call the same
  block helpers on the same elements in the same thread order, and bins add in element order;
* against the CPU fused kernels (``fbgpu/engine/cpu_kernels.py``): counts, minima, maxima, group
  totals, flags and every bin (amount, dlogp, net active buying per minute, volume buckets) bit
  for bit; moments, correlations and sums, whose block reductions add in a tree where the CPU
  adds in element order, within 1e-9 relative (1e-9 absolute on skewness, kurtosis and
  correlations, as tests/test_engine_gpu_parity.py);
* all 27 factors on the GPU backend with the fused passes on and off (``FBGPU_FUSED``): the same
  bits, on the hand-made market (both big-order rules), the ``tiny`` market's first day and the
  hand-built day of edge cases of tests/test_fused.py.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_engine_gpu_parity import GPU, dev, host
from test_engine_primitives import segments
from test_fused import _edge_day, assert_same_bits, both_paths

from fbgpu.data.bars import NS_PER_MIN, T_0930, T_1130, T_1300, T_1500, minute_of_ts
from fbgpu.data.store import Store
from fbgpu.engine.segments import (
    CpuSegmentOps,
    GpuSegmentOps,
    correlation,
    fused_enabled,
    kurtosis,
    skewness,
)
from fbgpu.factors import FACTORS, FactorConfig
from fbgpu.factors.compute import compute_loaded_day, day_to_backend, load_day
from fbgpu.factors.context import (
    BUCKET_BARS,
    EARLY_BARS,
    EARLY_WINDOW,
    LATE_FROM,
    ORDER_SESSION,
    MinuteContext,
)

GOPS = GpuSegmentOps(GPU.xp)
CPU = CpuSegmentOps()
FUSED = settings(max_examples=25, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MOMENT_FIELDS = ("n", "mean", "m2", "m3", "m4", "min", "max")
CORR_FIELDS = ("n", "cov", "var_x", "var_y", "degenerate")
#: Tick times on every window edge the kernels test: the order session, the early window, the
#: minute grid's open, lunch break and close.
EDGES = np.array([ORDER_SESSION[0] - 1, ORDER_SESSION[0], T_0930 - 1, T_0930, EARLY_WINDOW[1] - 1,
                  EARLY_WINDOW[1], T_1130 - 1, T_1130, T_1300 - 1, T_1300, T_1500 - 1, T_1500,
                  ORDER_SESSION[1], ORDER_SESSION[1] + 1, T_1500 + NS_PER_MIN])


def same_bits(a, b: np.ndarray, what: str) -> None:
    assert_same_bits(host(a), np.asarray(b), what)


def close_to(a, b: np.ndarray, what: str, rtol: float = 1e-9, atol: float = 0.0) -> None:
    np.testing.assert_allclose(host(a), b, rtol=rtol, atol=atol, equal_nan=True, err_msg=what)


def check_moments_vs_cpu(g, c, what: str) -> None:
    """GPU moments vs CPU moments: counts and extremes exact, the rest to rounding."""
    for f in ("n", "min", "max"):
        same_bits(getattr(g, f), getattr(c, f), f"{what} {f}")
    close_to(g.mean, c.mean, f"{what} mean", 1e-9, 1e-12)
    close_to(skewness(GPU.xp, g, 3), skewness(np, c, 3), f"{what} skew", 1e-9, 1e-9)
    close_to(kurtosis(GPU.xp, g, 3), kurtosis(np, c, 3), f"{what} kurt", 1e-9, 1e-9)


def check_corr_vs_cpu(g, c, what: str) -> None:
    for f in ("n", "degenerate"):
        same_bits(getattr(g, f), getattr(c, f), f"{what} {f}")
    close_to(correlation(GPU.xp, g, 3), correlation(np, c, 3), f"{what} corr", 1e-9, 1e-9)


def tick_times(rng: np.random.Generator, n: int) -> np.ndarray:
    """Times over the whole day, a third of them exactly on a window edge."""
    ts = rng.integers(ORDER_SESSION[0] - 10 * NS_PER_MIN, T_1500 + 10 * NS_PER_MIN, n)
    on_edge = rng.random(n) < 0.35
    ts[on_edge] = rng.choice(EDGES, int(on_edge.sum()))
    return ts


# ----------------------------------------------------------------------------- the order pass
@FUSED
@given(segments(max_segments=5, max_len=40), st.sampled_from(["float", "int", "masked"]))
def test_order_pass(d: dict, volumes: str) -> None:
    off, rng = d["offsets"], d["rng"]
    n = int(off[-1])
    volume = d["x"] if volumes == "float" else rng.integers(1, 4, n) * 100
    ts = tick_times(rng, n)
    if volumes == "masked":  # no order in the session: every set empty
        ts[:] = ORDER_SESSION[0] - 1
    side = rng.choice(np.array([-1, 0, 1], dtype=np.int8), n)
    order_type = rng.choice(np.array([0, 1], dtype=np.int8), n)
    price = np.where(rng.random(n) < 0.1, np.nan, d["y"])
    args = (ts, side, volume, price, order_type, ORDER_SESSION, EARLY_WINDOW, 0)
    g = GOPS.order_family_stats(dev(off), *(dev(a) for a in args[:5]), *args[5:])
    c = CPU.order_family_stats(off, *args)
    session = (ts >= ORDER_SESSION[0]) & (ts <= ORDER_SESSION[1])
    buy = session & (side == 1)
    masks = {"buy": buy, "sell": session & (side == -1),
             "early": session & (ts >= EARLY_WINDOW[0]) & (ts < EARLY_WINDOW[1])}
    for name, mask in masks.items():
        prim = GOPS.moments(dev(off), dev(volume), dev(mask))
        for f in MOMENT_FIELDS:
            same_bits(getattr(getattr(g, name), f), host(getattr(prim, f)), f"{name} {f}")
        check_moments_vs_cpu(getattr(g, name), getattr(c, name), name)
    prim_c = GOPS.corr_stats(dev(off), dev(volume), dev(price), dev(buy & (order_type == 0)))
    for f in CORR_FIELDS:
        same_bits(getattr(g.buy_limit, f), host(getattr(prim_c, f)), f"buy limit {f}")
    check_corr_vs_cpu(g.buy_limit, c.buy_limit, "buy limit")


# ----------------------------------------------------------------------------- the trade passes
@FUSED
@given(segments(max_segments=5, max_len=40))
def test_trade_passes(d: dict) -> None:
    off, rng = d["offsets"], d["rng"]
    n, S = int(off[-1]), len(off) - 1
    amount = np.abs(d["x"]) * 1e4  # NaN and inf kinds kept: NaN order totals
    buy_id, sell_id = d["keys"], rng.permutation(d["keys"]) if n else d["keys"]
    g = GOPS.trade_order_stats(dev(off), dev(buy_id), dev(sell_id), dev(amount))
    c = CPU.trade_order_stats(off, buy_id, sell_id, amount)
    for side, keys, gm, cm, gt, ct in (("buy", buy_id, g.buy, c.buy, g.buy_totals, c.buy_totals),
                                       ("sell", sell_id, g.sell, c.sell, g.sell_totals,
                                        c.sell_totals)):
        same_bits(gt, ct, f"{side} order totals")  # group totals add in element order
        tot, first = GOPS.group_sum(dev(off), dev(keys), dev(amount))
        same_bits(tot, host(ct), f"{side} primitive totals")
        prim = GOPS.moments(dev(off), tot, first)
        for f in MOMENT_FIELDS:
            same_bits(getattr(gm, f), host(getattr(prim, f)), f"{side} order moments {f}")
        check_moments_vs_cpu(gm, cm, f"{side} orders")

    ts = tick_times(rng, n)
    side = rng.choice(np.array([-1, 0, 1], dtype=np.int8), n)
    with np.errstate(divide="ignore", invalid="ignore"):  # log(0) = -inf, inf - inf = NaN
        log_price = np.log(rng.choice([5.0, 5.01, 5.02, np.nan, 0.0], n))
    thr = np.where(rng.random(S) < 0.2, np.nan, rng.uniform(0, 3e4, S))
    always = rng.random(S) < 0.2
    gb = GOPS.trade_flag_bins(dev(off), dev(ts), dev(side), dev(amount), dev(log_price),
                              g.buy_totals, g.sell_totals, dev(thr), dev(always), EARLY_WINDOW)
    cb = CPU.trade_flag_bins(off, ts, side, amount, log_price, c.buy_totals, c.sell_totals, thr,
                             always, EARLY_WINDOW)
    for f in ("amount", "dlogp", "nab"):
        same_bits(getattr(gb, f), getattr(cb, f), f"{f} bins vs CPU")
    # ... and the primitive path's bins (the flag codes and dlogp built in numpy).
    early = (ts >= EARLY_WINDOW[0]) & (ts < EARLY_WINDOW[1])
    big_b = CPU.threshold_mask(off, c.buy_totals, thr, always)
    big_s = CPU.threshold_mask(off, c.sell_totals, thr, always)
    code = early | (side == 1) << 1 | (side == -1) << 2 | big_b << 3 | big_s << 4
    with np.errstate(invalid="ignore"):
        dlogp = np.r_[0.0, np.diff(log_price)] if n else np.zeros(0)
    dlogp[off[:-1][off[:-1] < n]] = 0.0
    same_bits(gb.amount, host(GOPS.bin_sum(dev(off), dev(code), dev(amount), 32)), "amount")
    same_bits(gb.dlogp, host(GOPS.bin_sum(dev(off), dev(code), dev(dlogp), 32)), "dlogp")
    same_bits(gb.nab, host(GOPS.bin_sum(dev(off), dev(minute_of_ts(ts)), dev(amount * side),
                                        240)), "net active buying")


def test_long_trade_segments_cross_the_staging_chunks() -> None:
    """Stocks longer than one shared-memory chunk (4 x block trades) and than several: the
    bins still add in element order across chunks; two runs give the same bits."""
    rng = np.random.default_rng(5)
    lens = np.array([0, 33, 4 * GOPS.block + 1, 700])
    off = np.r_[0, np.cumsum(lens)].astype(np.int64)
    n, S = int(off[-1]), len(lens)
    amount = rng.lognormal(10, 2, n)
    amount[rng.random(n) < 0.02] = np.nan
    ids = rng.integers(0, 60, (2, n))
    ts, side = tick_times(rng, n), rng.choice(np.array([-1, 0, 1], dtype=np.int8), n)
    log_price = np.log(10 + np.cumsum(rng.normal(0, 0.01, n)))
    thr, always = rng.uniform(0, 1e6, S), np.zeros(S, dtype=bool)
    runs = []
    for _ in range(2):
        g = GOPS.trade_order_stats(dev(off), dev(ids[0]), dev(ids[1]), dev(amount))
        gb = GOPS.trade_flag_bins(dev(off), dev(ts), dev(side), dev(amount), dev(log_price),
                                  g.buy_totals, g.sell_totals, dev(thr), dev(always),
                                  EARLY_WINDOW)
        runs.append([host(a) for a in (g.buy.m2, g.sell.m3, gb.amount, gb.dlogp, gb.nab)])
    assert all(a.tobytes() == b.tobytes() for a, b in zip(*runs, strict=True))
    c = CPU.trade_order_stats(off, ids[0], ids[1], amount)
    cb = CPU.trade_flag_bins(off, ts, side, amount, log_price, c.buy_totals, c.sell_totals, thr,
                             always, EARLY_WINDOW)
    for got, want in zip(runs[0][2:], (cb.amount, cb.dlogp, cb.nab), strict=True):
        assert_same_bits(got, want, "bins")
    assert np.count_nonzero(cb.nab) > 100  # the minute bins are not vacuous


# ----------------------------------------------------------------------------- the minute pass
def _bars(rng: np.random.Generator, S: int, L: int, kind: str) -> dict[str, np.ndarray]:
    close = {"walk": 10 + np.cumsum(rng.normal(0, 0.01, (S, L)), axis=1),
             "offset": 1e8 + rng.normal(0, 1e-3, (S, L)),
             "ties": rng.choice([10.0, 10.01, 9.99, np.nan], (S, L))}[kind]
    if kind == "ties" and S:
        close[0, L // 2:] = 10.0  # a constant stretch: a degenerate late window
    return {"open": np.where(rng.random((S, L)) < 0.05, 0.0, close + 0.001),
            "high": close + 0.02, "low": close - 0.02, "close": close,
            "volume": rng.integers(0, 3, (S, L)) * 100,
            "amount": np.where(rng.random((S, L)) < 0.05, np.inf, close * 300.0),
            "num_trades": rng.integers(0, 3, (S, L)).astype(np.int32)}


@pytest.mark.parametrize("kind", ["walk", "offset", "ties"])
@pytest.mark.parametrize("shape", [(4, 240, LATE_FROM, EARLY_BARS, BUCKET_BARS), (3, 50, 41, 7, 9),
                                   (0, 240, LATE_FROM, EARLY_BARS, BUCKET_BARS)],
                         ids=["day", "short-rows", "no-stock"])
def test_minute_pass(kind: str, shape: tuple[int, int, int, int, int]) -> None:
    S, L, late_from, early_bars, bucket = shape
    rng = np.random.default_rng([sum(map(ord, kind)), L])
    bars = _bars(rng, S, L, kind)
    cctx = MinuteContext(CPU, FactorConfig(), bars)
    gctx = MinuteContext(GOPS, FactorConfig(), {k: dev(v) for k, v in bars.items()})
    with np.errstate(all="ignore"):
        def run(ops, ctx):
            return ops.minute_family_stats(ctx.field("open"), ctx.field("close"),
                                           ctx.bars["volume"], ctx.field("amount"),
                                           ctx.bars["num_trades"], ctx.ret, ctx.amplitude,
                                           late_from, early_bars, bucket)

        g, c = run(GOPS, gctx), run(CPU, cctx)
        r, vol = gctx.ret, gctx.volume
        # The primitive path on the GPU (the slices the minute context reduces).
        prim_late = gctx.row_moments(r[:, late_from:])
        prims = [gctx.row_corr_stats(r[:, 1:], r[:, :-1]),
                 gctx.row_corr_stats(gctx.field("close")[:, :-1], gctx.field("open")[:, 1:]),
                 gctx.row_corr_stats(vol, gctx.num_trades),
                 gctx.row_corr_stats(vol[:, :early_bars], r[:, :early_bars]),
                 gctx.row_corr_stats(vol, gctx.amplitude)]
        down = r < 0
        amount = gctx.field("amount")
        prim_sums = [gctx.row_sum(r * r, down), gctx.row_sum(r * r), gctx.row_sum(amount, down),
                     gctx.row_sum(gctx.num_trades, down), gctx.row_sum(amount),
                     gctx.row_sum(gctx.num_trades)]
        for f in MOMENT_FIELDS:
            same_bits(getattr(g.late, f), host(getattr(prim_late, f)), f"late {f}")
        check_moments_vs_cpu(g.late, c.late, "late")
        pairs = ("ret_lastret", "close_nextopen", "volume_item", "early_volume_ret",
                 "volume_amplitude")
        for name, prim in zip(pairs, prims, strict=True):
            for f in CORR_FIELDS:
                same_bits(getattr(getattr(g, name), f), host(getattr(prim, f)), f"{name} {f}")
            check_corr_vs_cpu(getattr(g, name), getattr(c, name), name)
        for k, (gs, ps, cs) in enumerate(zip(g.sums, prim_sums, c.sums, strict=True)):
            same_bits(gs, host(ps), f"sum {k}")
            close_to(gs, cs, f"sum {k} vs CPU")
        # Each bucket is added in bar order by one thread: the CPU's bits.
        same_bits(g.buckets, c.buckets, "volume buckets")
        assert host(g.buckets).shape == (S, L // bucket)


# ----------------------------------------------------------------------------- all 27 factors
def _fused_vs_primitive_on_gpu(day, monkeypatch: pytest.MonkeyPatch,
                               config: FactorConfig | None = None) -> np.ndarray:
    """All factors of ``day`` on the GPU backend with the fused passes on and off: the same
    bits; both within 1e-9 of the CPU backend. Returns the fused values."""
    from fbgpu.factors.compute import DayInputs, day_to_backend

    assert isinstance(day, DayInputs)
    gday = day_to_backend(day, GPU) if GPU.xp is not np else day
    fused, prim, passes = both_paths(gday, monkeypatch, GOPS, config)
    assert passes == sum(x is not None for x in (day.minute, day.trades, day.orders))
    fused, prim = host(fused), host(prim)
    for j, name in enumerate(FACTORS):
        assert_same_bits(fused[:, j], prim[:, j], f"{day.date} {name}")
    cpu = compute_loaded_day(day, None, CPU, config).values
    np.testing.assert_allclose(fused, cpu, rtol=1e-9, atol=1e-12, equal_nan=True)
    return fused


@pytest.mark.parametrize("rule", ["mean_plus_k_std", "fixed_notional"])
def test_factors_handmade_market(rule: str, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from oracle_factors import make_market

    store = Store(tmp_path)
    date = dt.date(2024, 1, 2)
    make_market(store, [date], seed=11)
    cfg = FactorConfig(big_order_rule=rule, big_order_notional=50_000.0)
    values = _fused_vs_primitive_on_gpu(load_day(store, date), monkeypatch, cfg)
    assert np.isfinite(values).sum() > 100


def test_factors_tiny_market_day(tiny_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    values = _fused_vs_primitive_on_gpu(load_day(tiny_store, tiny_store.dates("trades")[0]),
                                        monkeypatch)
    assert np.isfinite(values).sum() > 500


def test_factors_edge_day(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stocks with 0/1/2 trades, all-NaN amounts, side-unknown days, orders outside the
    session, equal volumes (tests/test_fused.py, ``_edge_day``)."""
    _fused_vs_primitive_on_gpu(_edge_day(), monkeypatch)


@pytest.mark.parametrize("which", ["handmade", "edge"])
def test_factors_segmented_vs_two_sort_order_reconstruction(
        which: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """All 27 factors on the GPU backend, fused passes on and off, with order reconstruction by
    ``seg_group_total`` (the default) and by the two global radix sorts + ``group_total``
    (``FBGPU_GROUP_SORT=global``): the same bits, and each run launched the kernel it names."""
    from oracle_factors import make_market

    if which == "handmade":
        store = Store(tmp_path)
        date = dt.date(2024, 1, 2)
        make_market(store, [date], seed=11)
        day = load_day(store, date)
    else:
        day = _edge_day()
    gday = day_to_backend(day, GPU) if GPU.xp is not np else day
    launched: list[str] = []
    real_launch = GOPS._launch

    def counting(name: str, grid: int, *args) -> None:
        launched.append(name)
        real_launch(name, grid, *args)

    monkeypatch.setattr(GOPS, "_launch", counting)
    values = {}
    for path in ("segmented", "global"):
        monkeypatch.setenv(GpuSegmentOps.GROUP_ENV, path)
        for fused in ("1", "0"):
            monkeypatch.setenv("FBGPU_FUSED", fused)
            launched.clear()
            values[path, fused] = host(compute_loaded_day(gday, None, GOPS).values)
            kernel = "seg_group_total" if path == "segmented" else "group_total"
            other = "group_total" if path == "segmented" else "seg_group_total"
            assert launched.count(kernel) == 2 and other not in launched, (path, fused)
    ref = values["segmented", "1"]
    for key, v in values.items():
        for j, name in enumerate(FACTORS):
            assert_same_bits(v[:, j], ref[:, j], f"{which} {key} {name}")
    assert np.isfinite(ref).sum() > (100 if which == "handmade" else 10)


def test_the_gpu_backend_takes_the_fused_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FBGPU_FUSED", raising=False)
    assert GOPS.fused_passes and fused_enabled(GOPS)
    monkeypatch.setenv("FBGPU_FUSED", "0")
    assert not fused_enabled(GOPS)
