"""GPU backend == CPU backend, for every primitive and every factor.

The GPU kernels are the CUDA C sources of ``kernels/`` (:mod:`fbgpu.engine.cuda_c`). On a machine
with a usable GPU they run there (cupy + NVRTC); everywhere else, CI included, the same kernels
run under the host emulation (real threads per block, barriers at ``__syncthreads``) on numpy
arrays, so these tests always run. Only ``xp`` and the block size differ between the modes.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

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
