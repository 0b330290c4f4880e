"""GPU backend == CPU backend, for every primitive and every factor.

The GPU kernels are the CUDA C sources of ``kernels/`` (:mod:`fbgpu.engine.cuda_c`). On a machine
with a usable GPU they run there (cupy + NVRTC); everywhere else, CI included, the same kernels
run under the host emulation (real threads per block, barriers at ``__syncthreads``) on numpy
arrays, so these tests always run. Only ``xp`` and the block size differ between the modes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fbgpu.engine.backend import Backend, BackendError, get_backend
from fbgpu.engine.segments import CpuSegmentOps, GpuSegmentOps, correlation, kurtosis, skewness


def _gpu_backend() -> Backend:
    try:
        return get_backend("gpu")
    except BackendError:
        return Backend("gpu", np, "CUDA C kernels under host emulation")


GPU = _gpu_backend()
EMULATED = GPU.xp is np

from test_engine_primitives import segments  # noqa: E402
from test_fused import assert_same_bits  # noqa: E402

GOPS = GpuSegmentOps(GPU.xp)
CPU = CpuSegmentOps()
PARITY = settings(max_examples=30 if EMULATED else 60, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def dev(a: np.ndarray | None):
    return None if a is None else GPU.xp.asarray(a)


def host(a) -> np.ndarray:
    return GPU.to_host(a)


def same(a, b: np.ndarray, rtol: float = 1e-9, atol: float = 1e-12) -> None:
    np.testing.assert_allclose(host(a), b, rtol=rtol, atol=atol, equal_nan=True)


@PARITY
@given(segments(max_segments=4, max_len=24))
def test_sum_moments_corr_parity(d: dict) -> None:
    off, x, y, m = d["offsets"], d["x"], d["y"], d["mask"]
    gn, gs = GOPS.sum(dev(off), dev(x), dev(m))
    cn, cs = CPU.sum(off, x, m)
    assert host(gn).tolist() == cn.tolist()
    same(gs, cs, atol=1e-12 * (np.nanmax(np.abs(np.nan_to_num(x, posinf=0))) if len(x) else 1))
    gm, cm = GOPS.moments(dev(off), dev(x), dev(m)), CPU.moments(off, x, m)
    assert host(gm.n).tolist() == cm.n.tolist()
    same(gm.min, cm.min, 0, 0)
    same(gm.max, cm.max, 0, 0)
    same(skewness(GPU.xp, gm, 3), skewness(np, cm, 3), 1e-9, 1e-9)
    same(kurtosis(GPU.xp, gm, 3), kurtosis(np, cm, 3), 1e-9, 1e-9)
    gc, cc = GOPS.corr_stats(dev(off), dev(x), dev(y), dev(m)), CPU.corr_stats(off, x, y, m)
    assert host(gc.degenerate).tolist() == cc.degenerate.tolist()
    same(correlation(GPU.xp, gc, 3), correlation(np, cc, 3), 1e-9, 1e-9)


@PARITY
@given(segments(max_segments=4, max_len=24))
def test_group_bin_topk_parity(d: dict) -> None:
    off, keys = d["offsets"], d["keys"]
    x = np.nan_to_num(d["x"], nan=1.5, posinf=2.5)
    gt, gf = GOPS.group_sum(dev(off), dev(keys), dev(x))
    ct, cf = CPU.group_sum(off, keys, x)
    # Both add a group's elements sequentially in element order: bit-identical.
    assert host(gt).tolist() == ct.tolist()
    assert host(gf).tolist() == cf.tolist()
    bins = d["rng"].integers(-1, 241, len(x))
    # Bin sums add in element order on both backends: bit-identical, over several launches
    # (240 bins are more than one launch covers under emulation).
    assert host(GOPS.bin_sum(dev(off), dev(bins), dev(d["x"]), 240, dev(d["mask"]))).tobytes() \
        == CPU.bin_sum(off, bins, d["x"], 240, d["mask"]).tobytes()
    valid = d["rng"].random(len(x)) < 0.8
    k = np.arange(len(off) - 1) % 7
    assert host(GOPS.topk_mask(dev(off), dev(d["x"]), dev(valid), dev(k))).tolist() == \
        CPU.topk_mask(off, d["x"], valid, k).tolist()


@PARITY
@given(segments(max_segments=4, max_len=24))
def test_threshold_mask_and_integer_input_parity(d: dict) -> None:
    off = d["offsets"]
    S = len(off) - 1
    thr = d["rng"].choice(np.array([-np.inf, 0.0, 1.0, np.nan]), S) if S else np.zeros(0)
    always = d["rng"].random(S) < 0.3
    assert host(GOPS.threshold_mask(dev(off), dev(d["x"]), dev(thr), dev(always))).tolist() == \
        CPU.threshold_mask(off, d["x"], thr, always).tolist()
    # Integer columns: cast to float64 on the GPU, read as they are by the CPU kernels.
    xi = d["rng"].integers(-1000, 1000, len(d["x"]))
    gm, cm = GOPS.moments(dev(off), dev(xi), dev(d["mask"])), CPU.moments(off, xi, d["mask"])
    assert host(gm.n).tolist() == cm.n.tolist()
    same(kurtosis(GPU.xp, gm, 3), kurtosis(np, cm, 3), 1e-9, 1e-9)


def test_all_factors_parity(tmp_path) -> None:
    from oracle_factors import make_market

    from fbgpu.data.store import Store
    from fbgpu.factors import compute_factors

    store = Store(tmp_path)
    dates = [dt.date(2024, 3, 1)]
    make_market(store, dates, seed=5)
    cpu = compute_factors(store, dates, backend="cpu")
    gpu = compute_factors(store, dates, backend=GPU)
    assert gpu.names == cpu.names and list(gpu.symbols) == list(cpu.symbols)
    np.testing.assert_allclose(gpu.to_numpy(), cpu.to_numpy(), rtol=1e-9, atol=1e-12,
                               equal_nan=True)
    assert np.isfinite(cpu.to_numpy()).sum() > 100  # the comparison is not vacuous


def test_long_segments_and_determinism() -> None:
    """Segments many block-widths long (strided partials, the tree, staged chunks), a mask, NaNs;
    two runs give the same bits (no atomics, no scheduling dependence)."""
    rng = np.random.default_rng(7)
    lens = np.array([0, 1, 300, 1000, 37, 2048])
    off = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    n = int(off[-1])
    x = rng.standard_t(3, n) * 1e3 + 1e6
    x[rng.random(n) < 0.05] = np.nan
    y = 0.3 * x + rng.normal(0, 1e3, n)
    mask = rng.random(n) < 0.8
    keys = rng.integers(10**12, 10**12 + 50, n)
    runs = []
    for _ in range(2):
        gm = GOPS.moments(dev(off), dev(x), dev(mask))
        gc = GOPS.corr_stats(dev(off), dev(x), dev(y), dev(mask))
        gt, _ = GOPS.group_sum(dev(off), dev(keys), dev(np.nan_to_num(x)))
        runs.append(np.concatenate([host(skewness(GPU.xp, gm, 3)), host(gm.m2),
                                    host(correlation(GPU.xp, gc, 3)), host(gt)]))
    assert runs[0].tobytes() == runs[1].tobytes()
    cm = CPU.moments(off, x, mask)
    same(gm.m2, cm.m2, 1e-9, 0)
    same(skewness(GPU.xp, gm, 3), skewness(np, cm, 3), 1e-9, 1e-12)
    same(correlation(GPU.xp, gc, 3), correlation(np, CPU.corr_stats(off, x, y, mask), 3),
         1e-9, 1e-12)
    ct, _ = CPU.group_sum(off, keys, np.nan_to_num(x))
    assert host(gt).tobytes() == ct.tobytes()
    k = np.array([0, 1, 5, 400, 3, 2048])
    valid = rng.random(n) < 0.9
    assert host(GOPS.topk_mask(dev(off), dev(x), dev(valid), dev(k))).tolist() == \
        CPU.topk_mask(off, x, valid, k).tolist()


@pytest.mark.skipif(EMULATED, reason="cupy's sort on a device (the emulation uses numpy's)")
def test_device_argsort_is_stable() -> None:
    """group_sum relies on a stable sort of the packed keys (element order inside a group)."""
    cp = GPU.xp
    keys = cp.asarray(np.random.default_rng(1).integers(0, 5, 1 << 20))
    order = cp.argsort(keys, kind="stable").get()
    k = keys.get()[order]
    assert (np.diff(k) >= 0).all()
    assert all((np.diff(order[k == v]) > 0).all() for v in range(5))


@pytest.mark.skipif(EMULATED, reason="needs a CUDA device (cupy's synchronisation detector)")
def test_device_factor_day_has_no_implicit_sync_and_is_deterministic(tmp_path) -> None:
    """A whole factor day on inputs already on the device: no device->host synchronisation
    (cupyx.allow_synchronize(False) raises at the first one), and the same bits twice."""
    import warnings

    import cupyx
    from oracle_factors import make_market

    from fbgpu.data.store import Store
    from fbgpu.factors import compute_loaded_day, day_to_backend, load_day

    store = Store(tmp_path)
    date = dt.date(2024, 3, 1)
    make_market(store, [date], seed=6)
    day = day_to_backend(load_day(store, date), GPU)
    compute_loaded_day(day, ops=GOPS)  # warm: builds the kernels, fills cupy's caches
    GPU.xp.cuda.Device().synchronize()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # allow_synchronize is deprecated, still works
        with cupyx.allow_synchronize(False):
            a = compute_loaded_day(day, ops=GOPS).values
    b = compute_loaded_day(day, ops=GOPS).values
    assert host(a).tobytes() == host(b).tobytes()


# ------------------------------------------------- order reconstruction: seg_group_total
#: seg_group_total's shared-memory cap of the kernels under test (16 emulated, 4096 on a device):
#: segments up to it sort in shared memory, longer ones through the global scratch.
CAP = int(GOPS.kernels.group_cap)
I64 = np.iinfo(np.int64)


@st.composite
def group_days(draw: st.DrawFn) -> dict:
    """Segments of lengths around the cap (0, 1, cap - 1, cap, cap + 1, several caps), order ids
    of one kind, amounts with NaN, infinities and signed zeros."""
    lens = draw(st.lists(st.one_of(
        st.sampled_from([0, 1, 2, CAP - 1, CAP, CAP + 1, 2 * CAP, 2 * CAP + 1, 3 * CAP + 5]),
        st.integers(0, 5 * CAP)), min_size=0, max_size=5))
    off = np.r_[0, np.cumsum(lens)].astype(np.int64)
    n = int(off[-1])
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["distinct", "equal", "few", "shared", "extreme", "wide"]))
    if kind == "distinct":  # every trade its own order (a permutation: sorted order matters)
        keys = rng.permutation(n) - n // 2
    elif kind == "equal":  # one order per stock-day, the same id in every stock
        keys = np.full(n, 7)
    elif kind == "few":
        keys = rng.integers(-2, 3, n)
    elif kind == "shared":  # the same ids across stocks (groups never cross a stock)
        keys = rng.integers(0, 6, n) * 1_000_003
    elif kind == "extreme":  # the int64 ends and zero: no overflow in the comparisons
        keys = rng.choice(np.array([I64.min, I64.min + 1, -1, 0, 1, I64.max - 1, I64.max]), n)
    else:
        keys = rng.integers(I64.min, I64.max, n, dtype=np.int64, endpoint=True)
    x = rng.lognormal(8, 3, n) * rng.choice([1.0, -1.0], n)
    special = rng.random(n) < 0.1
    x[special] = rng.choice(np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 5e-324]),
                            int(special.sum()))
    return {"offsets": off, "keys": keys.astype(np.int64), "x": x}


def oracle_group_sum(off: np.ndarray, keys: np.ndarray, x: np.ndarray):
    """Per element: its (stock, id) group's total, added one element at a time in element order,
    and whether it is the group's first element (plain Python: the definition)."""
    totals = np.empty(len(x))
    first = np.zeros(len(x), dtype=bool)
    for s in range(len(off) - 1):
        groups: dict[int, list[int]] = {}
        for i in range(int(off[s]), int(off[s + 1])):
            groups.setdefault(int(keys[i]), []).append(i)
        for members in groups.values():
            tot = 0.0
            for i in members:
                tot += float(x[i])
            totals[members] = tot
            first[members[0]] = True
    return totals, first


@contextlib.contextmanager
def group_path(value: str | None) -> Iterator[None]:
    """``FBGPU_GROUP_SORT`` set to ``value`` (None: unset, the default path) inside the block."""
    old = os.environ.pop(GpuSegmentOps.GROUP_ENV, None)
    if value is not None:
        os.environ[GpuSegmentOps.GROUP_ENV] = value
    try:
        yield
    finally:
        os.environ.pop(GpuSegmentOps.GROUP_ENV, None)
        if old is not None:
            os.environ[GpuSegmentOps.GROUP_ENV] = old


def group_sum_global(off: np.ndarray, keys: np.ndarray, x: np.ndarray):
    """``group_sum`` through the two global radix sorts and ``group_total``."""
    with group_path("global"):
        assert not GOPS.segmented_groups()
        return GOPS.group_sum(dev(off), dev(keys), dev(x))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(group_days())
def test_segmented_group_sum_bits(d: dict) -> None:
    """seg_group_total (shared-memory sort up to the cap, global scratch above it) gives the
    totals and first flags of the definition, of the CPU kernels and of the two-sort path bit for
    bit, and the same bits twice."""
    off, keys, x = d["offsets"], d["keys"], d["x"]
    assert GOPS.segmented_groups()  # the default
    gt, gf = GOPS.group_sum(dev(off), dev(keys), dev(x))
    ot, of = oracle_group_sum(off, keys, x)
    assert_same_bits(host(gt), ot, "totals vs definition")
    assert host(gf).tolist() == of.tolist()
    ct, cf = CPU.group_sum(off, keys, x)
    assert_same_bits(host(gt), ct, "totals vs CPU")
    assert host(gf).tolist() == cf.tolist()
    wt, wf = group_sum_global(off, keys, x)
    assert_same_bits(host(gt), host(wt), "totals vs the two-sort path")
    assert host(gf).tolist() == host(wf).tolist()
    again = GOPS.group_sum(dev(off), dev(keys), dev(x))
    assert host(again[0]).tobytes() == host(gt).tobytes()


def test_segmented_group_sum_scratch_only_above_the_cap() -> None:
    """Segments longer than the cap sort in their slice of the scratch, which ends as their
    (id, element) pairs in sorted order; shorter ones never touch it (they sort in shared
    memory). Segment lengths cap - 1, cap, cap + 1, 2 cap, 4 cap + 3."""
    rng = np.random.default_rng(3)
    lens = np.array([CAP - 1, CAP, CAP + 1, 0, 2 * CAP, 1, 4 * CAP + 3])
    off = np.r_[0, np.cumsum(lens)].astype(np.int64)
    n = int(off[-1])
    keys = rng.integers(-3, 4, n) * 10**15
    x = rng.normal(1e6, 1e5, n)
    key_scratch = dev(np.full(n, -12345, dtype=np.int64))
    idx_scratch = dev(np.full(n, -7, dtype=np.int32))
    gt, gf = GOPS._group_sum(dev(off), dev(keys), dev(x), None, (key_scratch, idx_scratch))
    ks, xs = host(key_scratch), host(idx_scratch)
    for s, m in enumerate(lens):
        lo, hi = int(off[s]), int(off[s + 1])
        if m <= CAP:
            assert (ks[lo:hi] == -12345).all() and (xs[lo:hi] == -7).all(), f"stock {s}"
        else:
            order = np.lexsort((np.arange(m), keys[lo:hi]))  # by id, then element
            assert ks[lo:hi].tolist() == keys[lo:hi][order].tolist(), f"stock {s} ids"
            assert xs[lo:hi].tolist() == order.tolist(), f"stock {s} elements"
    ct, cf = CPU.group_sum(off, keys, x)
    assert_same_bits(host(gt), ct, "totals")
    assert host(gf).tolist() == cf.tolist()
