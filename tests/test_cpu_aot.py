"""The ahead-of-time CPU kernels (fbgpu/engine/cpu_aot.py) give numba's JIT's bits, without numba.

Every comparison is exact: the libraries are numba's own code for the same kernels (one stock per
thread, element order), so a factor day computed through them must equal, bit for bit, the same
day through numba's dispatcher (``FBGPU_AOT=0``), on the tiny synthetic market, the hand-made
adversarial market (both big-order rules) and the hand-built day of edge cases (empty stocks,
all-NaN columns, orders outside the session), on one thread and cut into many chunks on two.
Also: every kernel of ``SPECS`` really ran ahead of time there; a process computing a day never
imports numba; calls the build does not cover (another dtype, a non-contiguous array), a failed
build and ``FBGPU_AOT=0`` go to numba's dispatcher; the runtime shim's reshape and allocation
answer as numba's would; a kernel's error flag becomes a Python error.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import itertools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fbgpu.data.store import Store
from fbgpu.engine import cpu_aot
from fbgpu.engine.segments import CpuSegmentOps
from fbgpu.factors import FactorConfig
from fbgpu.factors.compute import DayInputs, compute_loaded_day, load_day

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(cpu_aot.kernels() is None,
                                reason="the ahead-of-time CPU kernels could not be built here "
                                       "(no C compiler?): numba's JIT runs everything")


def _spy_runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the kernels that ran ahead of time from now on."""
    ran: list[str] = []
    real = cpu_aot.AotKernels.run

    def spy(self: cpu_aot.AotKernels, name: str, args: tuple[Any, ...], parallel: bool) -> bool:
        ok = real(self, name, args, parallel)
        if ok:
            ran.append(name)
        return ok

    monkeypatch.setattr(cpu_aot.AotKernels, "run", spy)
    return ran


def _both_routes(day: DayInputs, monkeypatch: pytest.MonkeyPatch, ops: CpuSegmentOps,
                 config: FactorConfig | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    ran = _spy_runs(monkeypatch)
    monkeypatch.setenv("FBGPU_AOT", "1")
    monkeypatch.setenv("FBGPU_SIMD", "0")  # numba's order pass too (the SIMD one: test_cpu_simd)
    aot = compute_loaded_day(day, None, ops, config).values
    aot_ran = list(ran)
    monkeypatch.setenv("FBGPU_AOT", "0")
    jit = compute_loaded_day(day, None, ops, config).values
    assert ran == aot_ran, "FBGPU_AOT=0 still ran an ahead-of-time kernel"
    return aot, jit, aot_ran


def _assert_identical(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype
    assert a.tobytes() == b.tobytes(), "values differ (bits)"


def _many_chunks_ops(monkeypatch: pytest.MonkeyPatch) -> CpuSegmentOps:
    """Parallel on every call, two threads, ~25 chunks per thread: chunk edges everywhere."""
    monkeypatch.setattr(cpu_aot, "CHUNKS_PER_THREAD", 25)
    monkeypatch.setattr(cpu_aot, "thread_count", lambda: 2)
    return CpuSegmentOps(parallel_min_elements=0)


@pytest.mark.parametrize("mode", ["serial", "chunked"])
def test_tiny_market_same_bits_and_every_kernel_ran(tiny_store: Store, mode: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    ops = _many_chunks_ops(monkeypatch) if mode == "chunked" else CpuSegmentOps()
    for d in tiny_store.dates("trades")[:2]:
        aot, jit, ran = _both_routes(load_day(tiny_store, d), monkeypatch, ops)
        _assert_identical(aot, jit)
        assert np.isfinite(aot).sum() > 500
        missing = set(cpu_aot.SPECS) - set(ran)
        assert not missing, f"not run ahead of time: {missing}"


@pytest.mark.parametrize("rule", ["mean_plus_k_std", "fixed_notional"])
def test_handmade_market_same_bits(rule: str, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from oracle_factors import make_market

    store = Store(tmp_path)
    dates = [dt.date(2024, 1, 2), dt.date(2024, 1, 3)]
    make_market(store, dates, seed=11)
    cfg = FactorConfig(big_order_rule=rule, big_order_notional=50_000.0)
    ops = _many_chunks_ops(monkeypatch)
    for d in dates:
        aot, jit, ran = _both_routes(load_day(store, d), monkeypatch, ops, cfg)
        _assert_identical(aot, jit)
        assert ran


@pytest.mark.parametrize("mode", ["serial", "chunked"])
def test_edge_day_same_bits(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_fused import _edge_day

    ops = _many_chunks_ops(monkeypatch) if mode == "chunked" else CpuSegmentOps()
    aot, jit, ran = _both_routes(_edge_day(), monkeypatch, ops)
    _assert_identical(aot, jit)
    assert {"fused_order_stats", "fused_trade_pass"} <= set(ran)


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(0, 30), min_size=0, max_size=40), chunks=st.integers(1, 12),
       seed=st.integers(0, 2**16))
def test_primitives_on_random_segments(lengths: list[int], chunks: int, seed: int) -> None:
    """``sum`` and ``corr_stats`` (with NaN, inf, masks, empty and one-element segments) cut
    into ``chunks`` chunks equal numba's kernels; the chunk bounds cover every stock once."""
    rng = np.random.default_rng(seed)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n = int(offsets[-1])
    x = rng.normal(size=n)
    y = np.where(rng.random(n) < 0.3, 1.0, rng.normal(size=n))  # ties: degenerate segments
    x[rng.random(n) < 0.1] = np.nan
    y[rng.random(n) < 0.05] = np.inf
    mask = rng.random(n) < 0.7
    bounds = cpu_aot._chunk_bounds(offsets, len(lengths), chunks)
    assert bounds[0] == 0 and bounds[-1] == len(lengths)
    assert all(a < b for a, b in itertools.pairwise(bounds))
    assert len(bounds) - 1 <= max(chunks, 1)
    from fbgpu.engine import cpu_kernels

    aot = cpu_aot.kernels()
    assert aot is not None
    S = len(lengths)
    for use in (True, False):
        m = mask if use else np.ones(1, dtype=bool)
        outs = [np.empty(S, np.int64), np.empty(S)]
        ref = [np.empty(S, np.int64), np.empty(S)]
        assert aot.run("seg_sum", (offsets, x, m, use, *outs), parallel=chunks > 1)
        cpu_kernels.seg_sum(offsets, x, m, use, *ref)
        for a, b in zip(outs, ref, strict=True):
            _assert_identical(a, b)
        outs = [np.empty(S, np.int64), *(np.empty(S) for _ in range(3)), np.empty(S, np.uint8)]
        ref = [np.empty(S, np.int64), *(np.empty(S) for _ in range(3)), np.empty(S, np.uint8)]
        assert aot.run("seg_corr", (offsets, x, y, m, use, *outs), parallel=chunks > 1)
        cpu_kernels.seg_corr(offsets, x, y, m, use, *ref)
        for a, b in zip(outs, ref, strict=True):
            _assert_identical(a, b)


def test_calls_the_build_does_not_cover_go_to_numba() -> None:
    aot = cpu_aot.kernels()
    assert aot is not None
    offsets = np.array([0, 2, 5], dtype=np.int64)
    n, s = np.empty(2, np.int64), np.empty(2)
    m = np.ones(1, dtype=bool)
    assert not aot.run("seg_sum", (offsets, np.arange(5, dtype=np.int32), m, False, n, s), False)
    assert not aot.run("seg_sum", (offsets, np.arange(10.0)[::2], m, False, n, s), False)
    assert not aot.run("seg_sum", (offsets, np.arange(5.0), m, False, n[:1], s), False)
    assert not aot.run("seg_moments", (offsets, np.arange(5.0), m, False), False)
    assert aot.run("seg_sum", (offsets, np.arange(5.0), m, False, n, s), False)
    assert n.tolist() == [2, 3] and s.tolist() == [1.0, 9.0]
    # through the ops: an int32 column is reduced by numba's kernel, same answer
    n2, s2 = CpuSegmentOps().sum(offsets, np.arange(5, dtype=np.int32))
    assert n2.tolist() == [2, 3] and s2.tolist() == [1.0, 9.0]


def test_a_kernel_error_becomes_a_python_error() -> None:
    aot = cpu_aot.kernels()
    assert aot is not None
    offsets = np.array([0, 2], dtype=np.int64)
    args = (offsets, np.arange(2.0), np.ones(1, bool), False, np.empty(1, np.int64), np.empty(1))
    kernel = aot._kernel("seg_sum")
    kernel.error.value = 1  # what the runtime shim sets when the compiled code raises
    with pytest.raises(RuntimeError, match="seg_sum raised.*FBGPU_AOT=0"):
        aot.run("seg_sum", args, False)
    assert kernel.error.value == 0
    assert aot.run("seg_sum", args, False)


def test_runtime_shim_reshape_and_allocation() -> None:
    """``numba_attempt_nocopy_reshape`` answers as numba's for C-contiguous arrays and refuses
    other layouts; ``NRT_MemInfo_alloc_aligned`` aligns the data and starts at refcount 1."""
    aot = cpu_aot.kernels()
    assert aot is not None
    lib = aot._kernel("seg_topk_mask").lib
    f = lib.numba_attempt_nocopy_reshape
    f.restype = ctypes.c_int
    P = ctypes.POINTER(ctypes.c_ssize_t)

    def attempt(dims: list[int], strides: list[int], new: list[int]) -> tuple[int, list[int]]:
        d = (ctypes.c_ssize_t * len(dims))(*dims)
        s = (ctypes.c_ssize_t * len(strides))(*strides)
        nd = (ctypes.c_ssize_t * len(new))(*new)
        out = (ctypes.c_ssize_t * len(new))()
        ok = f(ctypes.c_ssize_t(len(dims)), ctypes.cast(d, P), ctypes.cast(s, P),
               ctypes.c_ssize_t(len(new)), ctypes.cast(nd, P), ctypes.cast(out, P),
               ctypes.c_ssize_t(8), ctypes.c_int(0))
        return ok, list(out)

    a = np.zeros((2, 3))
    assert attempt([2, 3], list(a.strides), [3, 2]) == (1, list(np.zeros((3, 2)).strides))
    assert attempt([2, 3], list(a.strides), [6]) == (1, [8])
    assert attempt([1, 6], [999, 8], [2, 3]) == (1, [24, 8])  # a length-1 axis's stride is free
    assert attempt([2, 3], list(a.T.copy().T.strides), [6])[0] == 0  # F-ordered: refused
    assert attempt([2, 3], list(a.strides), [5])[0] == 0  # another size
    assert attempt([0, 3], [24, 8], [3, 0]) == (1, [8, 8])  # empty: numba's answer
    alloc = lib.NRT_MemInfo_alloc_aligned
    alloc.restype = ctypes.c_void_p
    mi = alloc(ctypes.c_size_t(1000), ctypes.c_uint(64))
    fields = (ctypes.c_size_t * 6).from_address(mi)
    assert fields[0] == 1 and fields[3] % 64 == 0 and fields[4] == 1000
    lib.NRT_MemInfo_call_dtor(ctypes.c_void_p(mi))


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, cwd=ROOT, timeout=600)


DAY_PROBE = """
import sys
from fbgpu.data import Store
from fbgpu.factors.compute import load_day, compute_loaded_day
s = Store(sys.argv[1] if len(sys.argv) > 1 else {root!r})
v = compute_loaded_day(load_day(s, s.dates("trades")[0])).values
print("NUMBA", "numba" in sys.modules, "SUM", float(abs(v[v == v]).sum()))
"""


def test_a_process_computing_a_day_never_imports_numba(tiny_store: Store) -> None:
    code = DAY_PROBE.format(root=str(tiny_store.root))
    aot = _python(code)
    jit = _python(code, FBGPU_AOT="0")
    assert aot.returncode == 0 and jit.returncode == 0, aot.stderr + jit.stderr
    assert "NUMBA False" in aot.stdout and "NUMBA True" in jit.stdout
    assert aot.stdout.split("SUM")[1] == jit.stdout.split("SUM")[1]


def test_a_failed_build_falls_back_to_numba(tiny_store: Store, tmp_path: Path) -> None:
    """No usable C compiler and an empty kernel cache: one warning, numba's JIT, same values;
    nothing half-built is left in the cache."""
    code = DAY_PROBE.format(root=str(tiny_store.root))
    res = _python(code, CC="false", FBGPU_KERNEL_CACHE=str(tmp_path))
    ok = _python(code)
    assert res.returncode == 0, res.stderr
    assert "NUMBA True" in res.stdout
    assert res.stderr.count("ahead-of-time CPU kernels unavailable, using numba's JIT") == 1
    assert res.stdout.split("SUM")[1] == ok.stdout.split("SUM")[1]
    cache = tmp_path / "fbgpu" / "kernels"
    assert not any(p.name.startswith("cpu-aot-") for p in cache.iterdir())


def test_the_build_key_follows_the_kernel_source(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    """Another kernel source (or numba version, or CPU) is another library directory."""
    key = cpu_aot.build_key()
    src = tmp_path / "fbgpu"
    (src / "engine").mkdir(parents=True)
    (src / "data").mkdir()
    pkg = Path(cpu_aot.__file__).resolve().parents[1]
    for rel in ("engine/cpu_kernels.py", "engine/pooled.py", "data/bars.py",
                "data/bars_kernels.py", "data/schemas.py", "engine/cpu_aot.py"):
        (src / rel).write_bytes((pkg / rel).read_bytes())
    (src / "engine" / "cpu_kernels.py").write_bytes((pkg / "engine" / "cpu_kernels.py")
                                                    .read_bytes() + b"\n# edited\n")
    try:
        with monkeypatch.context() as m:
            m.setattr(cpu_aot, "_HERE", src / "engine" / "cpu_aot.py")
            cpu_aot.build_key.cache_clear()
            assert cpu_aot.build_key() != key
            (src / "engine" / "cpu_kernels.py").write_bytes(
                (pkg / "engine" / "cpu_kernels.py").read_bytes())
            cpu_aot.build_key.cache_clear()
            assert cpu_aot.build_key() == key  # the same sources: the same key
    finally:
        cpu_aot.build_key.cache_clear()
    assert cpu_aot.build_key() == key
