"""The order pass with eight stocks per AVX-512 vector (kernels/cpu_simd_order.c) gives the numba
kernel's bits.

Each lane of the SIMD kernel is one stock run in element order through the numba kernel's
operations, so every output (counts, moments, co-moments, the degenerate flag) must equal, bit
for bit, ``fused_order_stats`` of :mod:`fbgpu.engine.cpu_kernels` (numba's JIT) on the same
arguments: checked on random stocks of every length (empty, one order, lengths that are not a
multiple of eight, very unequal lengths in one vector), with NaN/inf/-0.0, overflowing and
subnormal prices, sides and order types outside the codes, timestamps on the window edges
(session and early windows apart) and negative volumes or ones that do not round-trip through a
double, serially and cut into many chunks on two threads; and for whole factor days
(tiny market, the hand-built edge day) against ``FBGPU_SIMD=0``. Also: the SIMD kernel really
ran, and ``FBGPU_SIMD=0`` or other argument types fall back to numba's kernel.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fbgpu.data.store import Store
from fbgpu.engine import cpu_aot
from fbgpu.engine.segments import CpuSegmentOps
from fbgpu.factors.compute import compute_loaded_day, load_day

_AOT = cpu_aot.kernels()
pytestmark = pytest.mark.skipif(
    _AOT is None or _AOT._simd() is None,
    reason="no SIMD order pass here (no C compiler, not x86-64, or no AVX-512 F/DQ/BW/VL): numba's "
           "kernel runs it, and tests/test_cpu_aot.py covers that route")

# windows apart from each other, and a limit type that is not a side code: a kernel that mixed
# them up would differ
SESSION, EARLY, LIMIT = (100, 900), (150, 300), 2


def _orders(lengths: list[int], seed: int) -> tuple[np.ndarray, ...]:
    """Random orders for stocks of ``lengths``: edge timestamps, odd sides and types, NaN,
    +-inf and -0.0 prices, constant runs (degenerate pairs) and huge volumes."""
    rng = np.random.default_rng(seed)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n = int(offsets[-1])
    ts = rng.choice(np.array([0, 99, 100, 101, 149, 150, 151, 299, 300, 301, 899, 900, 901]), n)
    ts = np.where(rng.random(n) < 0.5, rng.integers(0, 1000, n), ts).astype(np.int64)
    side = rng.choice(np.array([1, -1, 0, 2, -128, 127], dtype=np.int8), n,
                      p=[0.42, 0.42, 0.04, 0.04, 0.04, 0.04])
    volume = rng.integers(-50, 10_000, n).astype(np.int64)
    volume[rng.random(n) < 0.02] = (1 << 62) + 12345  # not exact as a double
    volume[rng.random(n) < 0.01] = -(10**18)
    volume[rng.random(n) < 0.2] = 500  # ties: constant runs
    price = rng.normal(10.0, 1.0, n)
    price[rng.random(n) < 0.3] = 10.0
    for v, share in ((np.nan, 0.03), (np.inf, 0.01), (-np.inf, 0.01), (-0.0, 0.02), (0.0, 0.02),
                     (1e308, 0.01), (-1e308, 0.01), (5e-324, 0.01), (-2.2e-308, 0.01)):
        price[rng.random(n) < share] = v  # overflowing sums, subnormals
    order_type = rng.choice(np.array([0, 1, 2, -1], dtype=np.int8), n, p=[0.3, 0.2, 0.4, 0.1])
    return offsets, ts, side, volume, price, order_type


def _outputs(S: int) -> tuple[np.ndarray, ...]:
    # filled with a sentinel, so that an output the kernel forgets to write shows
    return (np.full((4, S), -7, np.int64), np.full((3, 6, S), 7.5), np.full((3, S), 7.5),
            np.full(S, 9, np.uint8))


def _numba(args: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    from fbgpu.engine import cpu_kernels

    out = _outputs(args[0].shape[0] - 1)
    cpu_kernels.fused_order_stats(*args, *(np.int64(v) for v in (*SESSION, *EARLY, LIMIT)),
                                  *out)
    return out


def _simd(args: tuple[np.ndarray, ...], parallel: bool) -> tuple[np.ndarray, ...]:
    out = _outputs(args[0].shape[0] - 1)
    ran = _AOT.order_stats_simd(
        (*args, *(np.int64(v) for v in (*SESSION, *EARLY, LIMIT)), *out), parallel)
    assert ran, "the SIMD order pass did not run"
    return out


def _assert_same_bits(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> None:
    for x, y, name in zip(a, b, ("n", "moments", "co-moments", "degenerate"), strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert x.tobytes() == y.tobytes(), f"{name} differ (bits)"


@settings(max_examples=80, deadline=None)
@given(lengths=st.lists(st.one_of(st.integers(0, 3), st.integers(0, 40), st.integers(0, 400)),
                        min_size=0, max_size=45),
       seed=st.integers(0, 2**16), parallel=st.booleans())
def test_random_stocks_same_bits_as_numba(lengths: list[int], seed: int,
                                          parallel: bool) -> None:
    args = _orders(lengths, seed)
    with pytest.MonkeyPatch.context() as mp:
        if parallel:  # many chunks on two threads: chunk edges everywhere
            mp.setattr(cpu_aot, "CHUNKS_PER_THREAD", 7)
            mp.setattr(cpu_aot, "thread_count", lambda: 2)
        simd = _simd(args, parallel)
    _assert_same_bits(simd, _numba(args))


def test_one_long_stock_among_short_ones() -> None:
    """Lanes of very different lengths in one vector (the sort puts the long one last)."""
    args = _orders([5000, 1, 0, 3, 7, 2, 9, 8, 4, 6000, 1], seed=3)
    _assert_same_bits(_simd(args, True), _numba(args))


def test_the_build_check_passes_here() -> None:
    """The check the build runs before it keeps the library (cpu_aot._simd_self_test: numba's
    kernel against the library on an adversarial day) holds for this build."""
    assert cpu_aot._simd_self_test(_AOT._simd())


def test_other_argument_types_and_the_switch_fall_back(monkeypatch: pytest.MonkeyPatch) -> None:
    args = _orders([3, 4, 5], seed=1)
    scalars = tuple(np.int64(v) for v in (*SESSION, *EARLY, LIMIT))
    floats = (*args[:3], args[3].astype(np.float64), *args[4:])  # float volumes: numba's
    assert not _AOT.order_stats_simd((*floats, *scalars, *_outputs(3)), False)
    strided = (*args[:4], np.repeat(args[4], 2)[::2], args[5])  # not contiguous
    assert not _AOT.order_stats_simd((*strided, *scalars, *_outputs(3)), False)
    monkeypatch.setenv("FBGPU_SIMD", "0")
    assert not _AOT.order_stats_simd((*args, *scalars, *_outputs(3)), False)


def _day_both_ways(day: object, monkeypatch: pytest.MonkeyPatch) -> tuple[bytes, bytes]:
    calls: list[bool] = []
    real = cpu_aot.AotKernels.order_stats_simd

    def spy(self: cpu_aot.AotKernels, args: tuple, parallel: bool) -> bool:
        ok = real(self, args, parallel)
        calls.append(ok)
        return ok

    monkeypatch.setattr(cpu_aot.AotKernels, "order_stats_simd", spy)
    ops = CpuSegmentOps(parallel_min_elements=0)
    monkeypatch.setenv("FBGPU_SIMD", "1")
    simd = compute_loaded_day(day, None, ops).values
    assert calls and all(calls), "the SIMD order pass did not run"
    monkeypatch.setenv("FBGPU_SIMD", "0")
    numba = compute_loaded_day(day, None, ops).values
    assert not calls[-1]
    return simd.tobytes(), numba.tobytes()


def test_factor_days_same_bits(tiny_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_fused import _edge_day

    days = [load_day(tiny_store, d) for d in tiny_store.dates("trades")[:2]] + [_edge_day()]
    for day in days:
        simd, numba = _day_both_ways(day, monkeypatch)
        assert simd == numba, f"{day.date}: factor values differ (bits)"
