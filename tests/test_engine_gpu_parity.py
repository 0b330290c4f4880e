"""GPU backend == CPU backend, for every primitive and every factor.

Runs on a real GPU (cupy + numba.cuda) when one is usable, and under the CUDA simulator when
``NUMBA_ENABLE_CUDASIM=1`` was set before numba.cuda was imported (test_engine_cudasim.py runs
this module that way in a subprocess, so CI exercises the kernels without a GPU). Otherwise the
module is skipped. The tests are the same in both modes; only ``xp`` differs (cupy on a device,
numpy under the simulator).
"""

from __future__ import annotations

import datetime as dt
import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from fbgpu.engine.backend import Backend
from fbgpu.engine.segments import CpuSegmentOps, correlation, kurtosis, skewness

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def _gpu_backend() -> Backend | None:
    if SIM:
        # The simulator runs CUDA threads as Python threads; a short switch interval makes its
        # barrier polling (syncthreads) an order of magnitude faster.
        sys.setswitchinterval(1e-5)
        return Backend("gpu", np, "CUDA simulator")
    from fbgpu.engine.backend import BackendError, get_backend

    try:
        return get_backend("gpu")
    except BackendError:
        return None


GPU = _gpu_backend()
pytestmark = pytest.mark.skipif(
    GPU is None, reason="no usable GPU and NUMBA_ENABLE_CUDASIM is not set "
    "(test_engine_cudasim.py runs this module under the simulator)")

if GPU is not None:
    from test_engine_primitives import segments

    from fbgpu.engine.segments import GpuSegmentOps

    GOPS = GpuSegmentOps(GPU.xp)
else:  # pragma: no cover - skipped module
    from test_engine_primitives import segments

    GOPS = None
CPU = CpuSegmentOps()
PARITY = settings(max_examples=12 if SIM else 60, deadline=None,
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
    same(GOPS.bin_sum(dev(off), dev(bins), dev(d["x"]), 240, dev(d["mask"])),
         CPU.bin_sum(off, bins, d["x"], 240, d["mask"]), 1e-12, 1e-9)
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
