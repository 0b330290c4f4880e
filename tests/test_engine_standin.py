"""The CPU stand-in device: implicit host crossings raise, and a whole factor day runs on it.

This is CI's guard for the device path (no GPU there): the GPU backend's code (GpuSegmentOps,
the CUDA C kernels under the host emulation, the factor contexts) runs with arrays that refuse
every implicit device->host conversion. A hidden round trip added to the device path fails here.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from fbgpu.engine.standin import CROSSINGS, STANDIN, HostCrossingError, standin_backend


@pytest.mark.parametrize("op", [
    lambda a: bool(a[:1]), lambda a: float(a[0]), lambda a: int(a[0]), lambda a: a.item(0),
    lambda a: a.tolist(), lambda a: list(a), lambda a: a[a > 0],
    lambda a: np.flatnonzero(a), lambda a: np.nonzero(a), lambda a: np.unique(a),
    lambda a: range(10)[a[0]], lambda a: a.nonzero(), lambda a: a.compress(a > 0),
    lambda a: STANDIN.where(a > 0), lambda a: np.bincount(STANDIN.asarray(np.array([0, 2]))),
    lambda a: a.tobytes(), lambda a: f"{a.sum():.3f}", lambda a: np.array_equal(a, a),
], ids=["bool", "float", "int", "item", "tolist", "iter", "mask-index", "flatnonzero",
        "nonzero", "unique", "index", "nonzero-method", "compress-method", "where-1-arg",
        "bincount", "tobytes", "format", "array_equal"])
def test_implicit_crossings_raise(op) -> None:
    a = STANDIN.asarray(np.array([1.0, -2.0, 3.0]))
    with pytest.raises(HostCrossingError, match="device->host"):
        op(a)


def test_device_ops_and_sanctioned_crossing() -> None:
    b = standin_backend()
    a = b.xp.asarray(np.arange(6.0))
    y = b.xp.where(a > 2, a * 2, b.xp.nan)  # elementwise, integer indexing, reductions: fine
    z = y[b.xp.asarray(np.array([0, 5]))] + y.sum()
    before = CROSSINGS["to_host"]
    host = b.to_host(z)
    assert CROSSINGS["to_host"] == before + 1
    assert type(host) is np.ndarray
    assert np.isnan(host[0]) and host.size == 2


@pytest.mark.parametrize("fused", ["1", "0"], ids=["fused", "primitive"])
def test_factor_day_on_the_standin_device_matches_cpu(tmp_path, monkeypatch, fused: str) -> None:
    """All 27 factors of a day on the stand-in device: no implicit crossing (any would raise),
    one sanctioned download of the result, and the CPU backend's values; with the GPU fused
    family passes (one per family, counted) and with the primitives (``FBGPU_FUSED=0``)."""
    from oracle_factors import make_market

    from fbgpu.data.store import Store
    from fbgpu.engine.segments import FUSED_ENV, GpuSegmentOps, segment_ops
    from fbgpu.factors import compute as compute_mod
    from fbgpu.factors import compute_loaded_day, day_to_backend, load_day

    monkeypatch.setenv(FUSED_ENV, fused)
    ran: list[str] = []
    real_prime = compute_mod.prime

    def counting(ctx, names):
        took = real_prime(ctx, names)
        if took:
            ran.append(ctx.family)
        return took

    monkeypatch.setattr(compute_mod, "prime", counting)

    store = Store(tmp_path)
    date = dt.date(2024, 3, 1)
    make_market(store, [date], seed=4)
    host_day = load_day(store, date)
    b = standin_backend()
    day = day_to_backend(host_day, b)
    ops = GpuSegmentOps(b.xp)
    compute_loaded_day(day, ops=ops)  # first day: the ops upload their fixed column lists
    before = CROSSINGS.copy()
    ran.clear()
    values = compute_loaded_day(day, ops=ops).values
    assert sorted(ran) == (["minute", "order", "trade"] if fused == "1" else []), ran
    uploads = CROSSINGS["upload"] - before["upload"]
    got = b.to_host(values)
    assert CROSSINGS["to_host"] - before["to_host"] == 1
    # Per day, only host metadata goes up: each family's positions in the universe (3) and the
    # minute rows of the trading stocks (2 index arrays). No data round trip.
    assert uploads == 5, uploads
    cpu = compute_loaded_day(host_day, ops=segment_ops("cpu")).values
    np.testing.assert_allclose(got, cpu, rtol=1e-9, atol=1e-12, equal_nan=True)
    assert np.isfinite(cpu).sum() > 100


def test_a_result_record_goes_through_array_functions_as_a_sequence() -> None:
    """The primitives' result records are NamedTuples: an array function given one (e.g.
    ``xp.stack(bins)``) gets the record back with plain views of its arrays, as numpy and
    cupy take it (rebuilding it from one generator argument raised a TypeError)."""
    from fbgpu.engine.segments import TradeBins

    a = STANDIN.asarray(np.arange(3.0))
    out = STANDIN.stack(TradeBins(a, a + 1.0, a + 2.0))
    assert out.shape == (3, 3)
    before = CROSSINGS["to_host"]
    np.testing.assert_array_equal(out.get(), [[0, 1, 2], [1, 2, 3], [2, 3, 4]])
    assert CROSSINGS["to_host"] == before + 1
