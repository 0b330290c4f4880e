"""The fused family passes (fbgpu/factors/fused.py) give the primitive path's bits.

Every comparison here is exact (the same float64 bits, NaN where NaN): each fused accumulator adds
the same terms in the same order as the primitive it replaces, so there is no tolerance to state.
Checked at two levels: the engine's fused kernels against the primitives they replace, on random
segments (lengths 0, 1, 2 and long, random masks, NaN and inf, dense and sparse order ids, one
thread and the parallel loop); and all 27 factors, fused vs ``FBGPU_FUSED=0``, on the ``tiny``
synthetic market, the hand-made adversarial market (both big-order rules), the real exchange
samples and a hand-built day of edge cases (stocks with 0/1/2 ticks, all-NaN amounts and
prices, side-unknown days, orders outside the session).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fbgpu.data.bars import minute_of_ts
from fbgpu.data.store import DayTicks, MinuteDay, Store
from fbgpu.engine.segments import (
    FUSED_ENV,
    BigOrderRule,
    CpuSegmentOps,
    GpuSegmentOps,
    SegmentOps,
    fused_enabled,
)
from fbgpu.factors import FACTORS, FactorConfig
from fbgpu.factors import compute as compute_mod
from fbgpu.factors.compute import DayInputs, compute_loaded_day, load_day
from fbgpu.factors.context import (
    EARLY_WINDOW,
    ORDER_SESSION,
    OrderContext,
    TradeContext,
    big_order_rule,
    big_order_threshold,
)
from fbgpu.factors.fused import prime

REAL = Path(os.environ.get("FBGPU_REAL_DATA", "/work/shared/data/real"))
NS = 1_000_000_000
#: One thread below 2**20 elements (the default), and the parallel loop forced on every input.
def _grouped_ops() -> CpuSegmentOps:
    """Parallel CPU ops whose fused trade pass runs over groups of ~50 trades (many groups per
    day, giant stocks alone in theirs, the scratch reused): must give the whole-day bits."""
    ops = CpuSegmentOps(parallel_min_elements=0)
    ops.trade_group_trades = 50
    return ops


OPS = {"serial": CpuSegmentOps(), "parallel": CpuSegmentOps(parallel_min_elements=0),
       "grouped": _grouped_ops()}


def assert_same_bits(a: np.ndarray, b: np.ndarray, what: str = "") -> None:
    """``a`` and ``b`` hold the same float64 bits wherever either is a number, and are NaN at
    the same places."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, what
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    assert (nan_a == nan_b).all(), f"{what}: NaN at different places"
    same = a.view(np.int64) == b.view(np.int64)
    bad = ~same & ~nan_a
    assert not bad.any(), f"{what}: {int(bad.sum())} values differ, e.g. " \
        f"{a[bad][:3].tolist()} vs {b[bad][:3].tolist()}"


def both_paths(day: DayInputs, monkeypatch: pytest.MonkeyPatch, ops: SegmentOps,
               config: FactorConfig | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """All factors of ``day``: fused, primitive, and how many family passes the fused run took."""
    ran = []
    real_prime = compute_mod.prime

    def counting(ctx, names):
        ran.append(real_prime(ctx, names))
        return ran[-1]

    monkeypatch.setattr(compute_mod, "prime", counting)
    monkeypatch.setenv(FUSED_ENV, "1")
    fused = compute_loaded_day(day, None, ops, config).values
    passes = sum(ran)
    monkeypatch.setenv(FUSED_ENV, "0")
    prim = compute_loaded_day(day, None, ops, config).values
    assert sum(ran) == passes, "FBGPU_FUSED=0 still took a fused pass"
    return fused, prim, passes


def assert_day_matches(day: DayInputs, monkeypatch: pytest.MonkeyPatch,
                       config: FactorConfig | None = None) -> int:
    """Fused == primitive for every factor on both CPU ops; returns the finite values compared."""
    finite = 0
    for label, ops in OPS.items():
        fused, prim, passes = both_paths(day, monkeypatch, ops, config)
        assert passes == sum(x is not None for x in (day.minute, day.trades, day.orders)), label
        for j, name in enumerate(FACTORS):
            assert_same_bits(fused[:, j], prim[:, j], f"{day.date} {label} {name}")
        finite = int(np.isfinite(prim).sum())
    return finite


# ----------------------------------------------------------------------------- engine level
def _random_segments(rng: np.random.Generator) -> np.ndarray:
    lengths = rng.choice([0, 1, 2, 3, 7, 40, 300], size=int(rng.integers(1, 12)))
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


@pytest.mark.parametrize("mode", list(OPS))
def test_order_pass_equals_the_primitives(mode: str) -> None:
    ops = OPS[mode]
    rng = np.random.default_rng(1)
    lo, hi = ORDER_SESSION
    for trial in range(40):
        off = _random_segments(rng)
        n = int(off[-1])
        # Times around every window edge, including exactly on them.
        edges = np.array([lo - 1, lo, EARLY_WINDOW[0], EARLY_WINDOW[1] - 1, EARLY_WINDOW[1],
                          hi, hi + 1])
        ts = np.where(rng.random(n) < 0.3, rng.choice(edges, n),
                      rng.integers(lo - NS, hi + NS, n))
        side = rng.choice(np.array([-1, 0, 1], dtype=np.int8), n)
        order_type = rng.choice(np.array([0, 1], dtype=np.int8), n)
        volume = rng.integers(1, 6, n) * (100 if trial % 2 else 1)  # ties, constant runs
        if trial % 3 == 0:
            volume = np.full(n, 300, dtype=np.int64)
        price = rng.choice([10.0, 10.01, 1e8 + 1e-3, np.nan, -0.0, np.inf], n)
        st = ops.order_family_stats(off, ts, side, volume, price, order_type, ORDER_SESSION,
                                    EARLY_WINDOW, 0)
        session = (ts >= lo) & (ts <= hi)
        early = session & (ts >= EARLY_WINDOW[0]) & (ts < EARLY_WINDOW[1])
        buy = session & (side == 1)
        for got, mask in ((st.buy, buy), (st.sell, session & (side == -1)), (st.early, early)):
            want = ops.moments(off, volume, mask)
            for f in ("n", "mean", "m2", "m3", "m4", "min", "max"):
                assert_same_bits(getattr(got, f), getattr(want, f), f"moments {f}")
        want_c = ops.corr_stats(off, volume, price, buy & (order_type == 0))
        for f in ("n", "cov", "var_x", "var_y", "degenerate"):
            assert_same_bits(getattr(st.buy_limit, f), getattr(want_c, f), f"corr {f}")


@pytest.mark.parametrize("mode", list(OPS))
def test_trade_passes_equal_the_primitives(mode: str) -> None:
    ops = OPS[mode]
    rng = np.random.default_rng(2)
    for trial in range(40):
        off = _random_segments(rng)
        if trial % 5 == 2:  # the all-equal trials: a first stock of 7 trades (see below)
            off = np.array([0, 7, 47, 347], dtype=np.int64)
        n = int(off[-1])
        amount = rng.choice([1e4, 2.5e4, 3e5, 7.7e6], n) * rng.random(n)
        if trial % 4 == 0:
            amount[rng.random(n) < 0.1] = np.nan
        ids = rng.integers(0, max(n // 3, 1), (2, n))
        if trial % 2:  # sparse, channel-wide order numbers: the hash table
            ids = ids * (1 << 40) + rng.integers(0, 5, (2, n))
        if trial % 4 == 3:  # buy ids dense, sell ids sparse: not the two-table loop
            ids[0] = rng.integers(0, max(n // 3, 1), n)
        if trial % 5 == 2:  # one trade per order, one amount: every order equal (all big)
            ids = np.stack([np.arange(n), np.arange(n) + 7])
            # the pooled mean of 7 + 7 orders of this amount rounds above it, so only the
            # all-equal flag makes them big (asserted below)
            amount = np.full(n, 26978.67)
        st = ops.trade_order_stats(off, ids[0], ids[1], amount)
        for got_tot, got_m, keys in ((st.buy_totals, st.buy, ids[0]),
                                     (st.sell_totals, st.sell, ids[1])):
            tot, first = ops.group_sum(off, keys, amount)
            assert_same_bits(got_tot, tot, "order totals")
            want = ops.moments(off, tot, first)
            for f in ("n", "mean", "m2", "m3", "m4", "min", "max"):
                assert_same_bits(getattr(got_m, f), getattr(want, f), f"order moments {f}")
        S = len(off) - 1
        ts = rng.integers(9 * 3600 * NS, 15 * 3600 * NS + 60 * NS, n)
        at_edge = rng.random(n) < 0.2  # exactly on the early window's edges
        ts[at_edge] = rng.choice(np.array([EARLY_WINDOW[0], EARLY_WINDOW[1] - 1,
                                           EARLY_WINDOW[1]]), int(at_edge.sum()))
        side = rng.choice(np.array([-1, 0, 1], dtype=np.int8), n)
        with np.errstate(divide="ignore", invalid="ignore"):  # log(0) = -inf, inf - inf
            log_price = np.log(rng.choice([5.0, 5.01, 5.02, np.nan, 0.0], n))
            dlogp = np.zeros(n)
            dlogp[1:] = log_price[1:] - log_price[:-1]
        thr = np.where(rng.random(S) < 0.2, np.nan, rng.uniform(0, 5e5, S))
        always = rng.random(S) < 0.2
        got = ops.trade_flag_bins(off, ts, side, amount, log_price, st.buy_totals,
                                  st.sell_totals, thr, always, EARLY_WINDOW)
        early = (ts >= EARLY_WINDOW[0]) & (ts < EARLY_WINDOW[1])
        big_b = ops.threshold_mask(off, st.buy_totals, thr, always)
        big_s = ops.threshold_mask(off, st.sell_totals, thr, always)
        code = (early.astype(np.int64) | (side == 1) << 1 | (side == -1) << 2 | big_b << 3
                | big_s << 4)
        dlogp[off[:-1][off[:-1] < n]] = 0.0
        assert_same_bits(got.amount, ops.bin_sum(off, code, amount, 32), "amount bins")
        assert_same_bits(got.dlogp, ops.bin_sum(off, code, dlogp, 32), "dlogp bins")
        assert_same_bits(got.nab, ops.bin_sum(off, minute_of_ts(ts), amount * side, 240), "NAB")
        if not ops.one_pass_trades:
            continue
        # The one-pass kernel: the two passes with the rule's cut-off in between, bit for bit.
        for cfg in (FactorConfig(), FactorConfig(big_order_k=0.0),
                    FactorConfig(big_order_k=2.5),
                    FactorConfig(big_order_rule="fixed_notional",
                                 big_order_notional=float(rng.uniform(1e3, 2e5)))):
            thr, always = big_order_threshold(np, cfg, st.buy, st.sell)
            if trial % 5 == 2 and cfg.big_order_rule == "mean_plus_k_std" and cfg.big_order_k:
                assert thr[0] > 26978.67 and always[0]  # the flag decides
            want = ops.trade_flag_bins(off, ts, side, amount, log_price, st.buy_totals,
                                       st.sell_totals, thr, always, EARLY_WINDOW)
            one = ops.trade_family_stats(off, ids[0], ids[1], amount, ts, side, log_price,
                                         big_order_rule(cfg), EARLY_WINDOW)
            for f in ("n", "mean", "m2", "m3", "m4", "min", "max"):
                assert_same_bits(getattr(one.buy, f), getattr(st.buy, f), f"one-pass buy {f}")
                assert_same_bits(getattr(one.sell, f), getattr(st.sell, f), f"one-pass sell {f}")
            for f in ("amount", "dlogp", "nab"):
                assert_same_bits(getattr(one.bins, f), getattr(want, f), f"one-pass {f} {cfg}")


@pytest.mark.parametrize("mode", list(OPS))
def test_minute_pass_equals_the_primitives(mode: str) -> None:
    from fbgpu.engine.segments import correlation
    from fbgpu.factors.context import BUCKET_BARS, EARLY_BARS, LATE_FROM, MinuteContext

    ops = OPS[mode]
    rng = np.random.default_rng(3)
    for trial in range(20):
        S = int(rng.integers(0, 6))
        close = rng.choice([10.0, 10.01, 9.99, 1e8 + 1e-3, np.nan], (S, 240))
        if trial % 3 == 0:
            close[:, 100:] = 10.0  # constant stretches: degenerate late window
        bars = {"open": np.where(rng.random((S, 240)) < 0.05, 0.0, close + 0.001),
                "high": close + 0.02, "low": close - 0.02, "close": close,
                "volume": rng.integers(0, 3, (S, 240)) * 100,
                "amount": np.where(rng.random((S, 240)) < 0.05, np.inf, close * 300.0),
                "num_trades": rng.integers(0, 3, (S, 240)).astype(np.int32)}
        c = MinuteContext(ops, FactorConfig(), bars)
        with np.errstate(all="ignore"):
            st = ops.minute_family_stats(c.field("open"), c.field("close"), bars["volume"],
                                         c.field("amount"), bars["num_trades"], c.ret,
                                         c.amplitude, LATE_FROM, EARLY_BARS, BUCKET_BARS)
            want_late = c.late_ret_moments
            for f in ("n", "mean", "m2", "m3", "m4", "min", "max"):
                assert_same_bits(getattr(st.late, f), getattr(want_late, f), f"late {f}")
            for got, want in ((st.ret_lastret, c.ret_lastret_corr),
                              (st.close_nextopen, c.close_nextopen_corr),
                              (st.volume_item, c.volume_item_corr),
                              (st.early_volume_ret, c.early_volume_ret_corr),
                              (st.volume_amplitude, c.volume_amplitude_corr)):
                for f in ("n", "cov", "var_x", "var_y", "degenerate"):
                    assert_same_bits(getattr(got, f), getattr(want, f), f"corr {f}")
                assert_same_bits(correlation(np, got, 10), correlation(np, want, 10), "corr")
            for a, b in zip(st.sums, (*c.down_var_sums, *c.down_single_sums), strict=True):
                assert_same_bits(a, b, "sums")
            assert_same_bits(st.buckets, c.volume_buckets, "buckets")


def test_the_switch_and_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    ops = CpuSegmentOps()
    monkeypatch.setenv(FUSED_ENV, "1")
    assert fused_enabled(ops)
    monkeypatch.setenv(FUSED_ENV, "0")
    assert not fused_enabled(ops)
    monkeypatch.delenv(FUSED_ENV)
    assert fused_enabled(ops)
    # The GPU backend has its own fused kernels (tests/test_fused_gpu.py); a backend without
    # them takes the primitive path.
    assert GpuSegmentOps.fused_passes is True and SegmentOps.fused_passes is False
    off = np.array([0, 2], dtype=np.int64)
    with pytest.raises(NotImplementedError, match="fused"):
        SegmentOps(np).trade_order_stats(off, np.zeros(2), np.zeros(2), np.ones(2))
    # Only user factors requested: the family pass is not run for them.
    cfg = FactorConfig()
    orders = OrderContext(ops, cfg, off, {"ts": np.full(2, ORDER_SESSION[0]),
                                          "side": np.ones(2, np.int8),
                                          "volume": np.ones(2, np.int64),
                                          "price": np.ones(2), "order_type": np.zeros(2, np.int8)})
    builtin = [n for n in FACTORS if FACTORS[n].family == "order"]
    assert not prime(orders, [])
    assert prime(orders, builtin[:1])
    assert "buy_moments" in orders.__dict__ and "early_moments" in orders.__dict__
    trades = TradeContext(ops, cfg, off, {"ts": np.full(2, EARLY_WINDOW[0]),
                                          "price": np.ones(2), "amount": np.ones(2),
                                          "buy_order_id": np.zeros(2, np.int64),
                                          "sell_order_id": np.zeros(2, np.int64),
                                          "side": np.ones(2, np.int8)}, np.full((1, 240), np.nan))
    assert not prime(orders, [n for n in FACTORS if FACTORS[n].family == "trade"])
    assert prime(trades, [n for n in FACTORS if FACTORS[n].family == "trade"])
    assert trades.amount_bins[0, 1 | 2 | 8 | 16] == 2.0  # early buy, both orders big (all equal)


# ----------------------------------------------------------------------------- factor level
def test_tiny_market(tiny_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    for d in tiny_store.dates("trades")[:2]:
        assert assert_day_matches(load_day(tiny_store, d), monkeypatch) > 500


@pytest.mark.parametrize("rule", ["mean_plus_k_std", "fixed_notional"])
def test_handmade_market(rule: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from oracle_factors import make_market

    store = Store(tmp_path)
    dates = [dt.date(2024, 1, 2), dt.date(2024, 1, 3)]
    make_market(store, dates, seed=11)
    cfg = FactorConfig(big_order_rule=rule, big_order_notional=50_000.0)
    for d in dates:
        assert assert_day_matches(load_day(store, d), monkeypatch, cfg) > 50


@pytest.mark.skipif(not REAL.is_dir(), reason="real data samples not present")
def test_real_exchange_samples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fbgpu.data.ingest import ingest

    store = Store(tmp_path)
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    for fmt, path, kw in [
        ("sse-order", "sse_l2_2023-07-11/SHorders.zip", {}),
        ("sse-trade", "sse_l2_2023-07-11/SHtrans.zip", {}),
        ("szse-order", "szse_l2_000155_slice/Orders.csv", {"date": "2022-12-05"}),
        ("szse-trade", "szse_l2_000155_slice/Trans.csv", {"date": "2022-12-05"}),
    ]:
        ingest(store, fmt, [REAL / path], **kw)
    days = store.dates("trades")
    assert len(days) == 2
    for d in days:
        assert assert_day_matches(load_day(store, d), monkeypatch) > 10


def _edge_day() -> DayInputs:
    """A hand-built day: per stock a different edge case of the trade and order families."""
    rng = np.random.default_rng(7)
    t0 = 9 * 3600 * NS + 30 * 60 * NS
    trade_runs = {
        "A0": 0,      # no trades at all (empty segment)
        "A1": 1,      # one trade
        "A2": 2,      # two trades
        "A3": 50,     # all amounts NaN
        "A4": 60,     # side unknown all day (side 0 everywhere)
        "A5": 80,     # sparse order ids (hash path), prices with NaN
        "A6": 120,    # ordinary
    }
    cols: dict[str, list[np.ndarray]] = {k: [] for k in
                                         ("ts", "price", "amount", "buy_order_id",
                                          "sell_order_id", "side")}
    for sym, m in trade_runs.items():
        ts = np.sort(t0 - 10 * 60 * NS + rng.integers(0, 6 * 3600 * NS, m))
        price = 10 + np.cumsum(rng.normal(0, 0.01, m))
        amount = rng.integers(1, 50, m) * 100 * price
        ids = rng.integers(0, max(m // 4, 1), (2, m))
        side = rng.choice(np.array([-1, 1], dtype=np.int8), m)
        if sym == "A3":
            amount[:] = np.nan
        if sym == "A4":
            side[:] = 0
        if sym == "A5":
            ids = ids * (1 << 41) + 12345
            price[::7] = np.nan
        for k, v in zip(cols, (ts, price, amount, ids[0], ids[1], side), strict=True):
            cols[k].append(v)
    trades_syms = np.array(list(trade_runs), dtype=object)
    t_off = np.concatenate([[0], np.cumsum(list(trade_runs.values()))]).astype(np.int64)
    trades = DayTicks(dt.date(2024, 1, 2), trades_syms, t_off,
                      {k: np.concatenate(v) for k, v in cols.items()})
    order_runs = {"A0": 3, "A1": 1, "A2": 2, "A3": 40, "A4": 30, "A6": 200}
    ocols: dict[str, list[np.ndarray]] = {k: [] for k in
                                          ("ts", "price", "volume", "side", "order_type")}
    for sym, m in order_runs.items():
        ts = np.sort(t0 - 20 * 60 * NS + rng.integers(0, 7 * 3600 * NS, m))
        if sym == "A0":
            ts[:] = 8 * 3600 * NS  # every order before 09:15: none counts
        volume = rng.integers(1, 30, m) * 100
        if sym == "A4":
            volume[:] = 500  # all equal: moments NaN
        price = np.where(rng.random(m) < 0.2, np.nan, 10 + rng.normal(0, 0.05, m))
        side = rng.choice(np.array([-1, 1], dtype=np.int8), m)
        order_type = rng.choice(np.array([0, 1], dtype=np.int8), m)
        for k, v in zip(ocols, (ts, price, volume, side, order_type), strict=True):
            ocols[k].append(v)
    o_off = np.concatenate([[0], np.cumsum(list(order_runs.values()))]).astype(np.int64)
    orders = DayTicks(dt.date(2024, 1, 2), np.array(list(order_runs), dtype=object), o_off,
                      {k: np.concatenate(v) for k, v in ocols.items()})
    msyms = np.array(["A1", "A2", "A5", "A6"], dtype=object)  # A3, A4: trades, no bars
    close = 10 + np.cumsum(rng.normal(0, 0.01, (4, 240)), axis=1)
    fields = {"open": close + 0.001, "high": close + 0.02, "low": close - 0.02, "close": close,
              "volume": rng.integers(0, 9, (4, 240)) * 100, "amount": close * 500.0,
              "num_trades": rng.integers(0, 4, (4, 240)).astype(np.int32)}
    minute = MinuteDay(dt.date(2024, 1, 2), msyms, fields)
    universe = np.array(sorted(set(trades_syms) | set(order_runs) | set(msyms)), dtype=object)
    return DayInputs(dt.date(2024, 1, 2), universe,
                     {"minute": msyms, "trades": trades_syms, "orders": orders.symbols},
                     minute, trades, orders)


def test_edge_cases(monkeypatch: pytest.MonkeyPatch) -> None:
    day = _edge_day()
    assert_day_matches(day, monkeypatch)
    monkeypatch.setenv(FUSED_ENV, "1")
    values = compute_loaded_day(day, None, OPS["serial"]).values
    row = {s: values[i] for i, s in enumerate(day.universe)}
    col = {n: j for j, n in enumerate(FACTORS)}
    # The cases are what they claim to be (so the comparison above covers them).
    assert np.isnan(row["A0"][col["bigorder_amt_perc"]])          # no trades: NaN family
    assert np.isnan(row["A0"][col["kurt_order_diff"]])            # no order in session
    assert np.isnan(row["A3"][col["bigorder_amt_perc"]])          # all amounts NaN: T = 0
    assert np.isnan(row["A4"][col["early_active_buy_perc"]])      # side unknown: NaN, not 0
    assert np.isnan(row["A4"][col["corr_netactivebuy_lastret"]])
    assert np.isfinite(row["A4"][col["bigorder_amt_perc"]])       # ... the rest is defined
    assert np.isnan(row["A4"][col["skew_order_diff"]])            # equal volumes: NaN
    assert np.isfinite(row["A6"][col["concentration_diff"]])
    assert np.isfinite(row["A6"][col["kurt_order_diff"]])


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(0, 40), min_size=1, max_size=30),
       trades=st.one_of(st.none(), st.integers(1, 60)))
def test_stock_groups_cover_every_stock_once_in_order(lengths: list[int],
                                                      trades: int | None) -> None:
    """The trade pass's stock groups: consecutive, non-empty, covering every stock once, each
    group's last stock starting within ``trades`` trades of its first or at the day's end (so
    a group holds about ``trades`` trades plus its last stock, which is never split); None when
    one group holds the day."""
    from fbgpu.factors.fused import _stock_groups

    off = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    groups = _stock_groups(off, trades)
    if groups is None:
        assert trades is None or len(lengths) <= 1 or off[-1] <= trades
        return
    assert groups[0][0] == 0 and groups[-1][1] == len(lengths)
    assert all(a < b for a, b in groups)
    assert all(groups[i][1] == groups[i + 1][0] for i in range(len(groups) - 1))
    for a, b in groups:  # (empty stocks at the day's end start at the last offset)
        assert off[b - 1] - off[a] < trades or off[b - 1] == off[-1]


def test_totals_out_is_written_and_checked() -> None:
    """``trade_order_stats(..., totals_out=)`` on the CPU writes the per-trade totals into the
    caller's buffers (the same values as freshly allocated ones) and refuses wrong ones."""
    rng = np.random.default_rng(5)
    off = _random_segments(rng)
    n = int(off[-1])
    keys = rng.integers(0, 5, n).astype(np.int64)
    amount = rng.lognormal(8, 1, n)
    ops = CpuSegmentOps()
    ref = ops.trade_order_stats(off, keys, keys[::-1].copy(), amount)
    buf = np.full((2, n), np.nan)
    got = ops.trade_order_stats(off, keys, keys[::-1].copy(), amount, (buf[0], buf[1]))
    assert np.shares_memory(got.buy_totals, buf[0]) and np.shares_memory(got.sell_totals, buf[1])
    assert_same_bits(buf[0], ref.buy_totals)
    assert_same_bits(buf[1], ref.sell_totals)
    with pytest.raises(ValueError, match="totals_out"):
        ops.trade_order_stats(off, keys, keys, amount, (np.empty(n + 1), buf[1]))


def test_bins_out_is_written_and_checked() -> None:
    """``trade_flag_bins(..., bins_out=)`` on the CPU zero-fills and accumulates into the
    caller's arrays (rows of a bigger one, holding garbage before: the same values as freshly
    allocated bins) and refuses wrong ones."""
    rng = np.random.default_rng(6)
    off = _random_segments(rng)
    n, S = int(off[-1]), len(off) - 1
    ts = rng.integers(9 * 3600 * NS, 15 * 3600 * NS, n)
    side = rng.choice(np.array([-1, 0, 1], dtype=np.int8), n)
    amount = rng.lognormal(8, 1, n)
    log_price = np.log(rng.uniform(5, 6, n))
    tot = rng.lognormal(9, 1, (2, n))
    thr, always = rng.uniform(0, 2e4, S), rng.random(S) < 0.2
    ops = CpuSegmentOps()
    args = (off, ts, side, amount, log_price, tot[0], tot[1], thr, always, EARLY_WINDOW)
    ref = ops.trade_flag_bins(*args)
    whole = [np.full((S + 3, w), np.nan) for w in (32, 32, 240)]
    rows = tuple(w[2:S + 2] for w in whole)
    got = ops.trade_flag_bins(*args, rows)
    for g, r, b, w in zip((got.amount, got.dlogp, got.nab), (ref.amount, ref.dlogp, ref.nab),
                          rows, whole, strict=True):
        assert np.shares_memory(g, b)
        assert_same_bits(b, r)
        assert np.isnan(w[:2]).all() and np.isnan(w[S + 2:]).all()  # only its rows written
    with pytest.raises(ValueError, match="bins_out"):
        ops.trade_flag_bins(*args, (rows[0], rows[1], np.empty((S, 239))))
    # the one-pass kernel into rows of bigger arrays too
    ids = rng.integers(0, 9, (2, n))
    one_ref = ops.trade_family_stats(off, ids[0], ids[1], amount, ts, side, log_price,
                                     BigOrderRule(1.0), EARLY_WINDOW)
    whole = [np.full((S + 3, w), np.nan) for w in (32, 32, 240)]
    rows = tuple(w[2:S + 2] for w in whole)
    one = ops.trade_family_stats(off, ids[0], ids[1], amount, ts, side, log_price,
                                 BigOrderRule(1.0), EARLY_WINDOW, rows)
    for f, b, w in zip(("amount", "dlogp", "nab"), rows, whole, strict=True):
        assert np.shares_memory(getattr(one.bins, f), b)
        assert_same_bits(b, getattr(one_ref.bins, f))
        assert np.isnan(w[:2]).all() and np.isnan(w[S + 2:]).all()
    with pytest.raises(ValueError, match="bins_out"):
        ops.trade_flag_bins(*args, (rows[0], rows[1], whole[2][2:S + 2, :].T.copy().T))
