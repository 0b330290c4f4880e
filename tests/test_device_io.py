"""IO straight to the device: the raw inputs' upload crossing (``Backend.to_device_async``),
its reusable staging buffers, and the next day's read + upload overlapping this day's compute
(``DayPrefetch`` on a GPU backend).

The CPU tests run the device path on the stand-in device (``fbgpu.engine.standin``), which
counts every upload and rejects implicit host conversions. The last test needs cupy and a CUDA
device (run by ``benchmarks/device/gpu_session.sh``): the real pinned staging and side stream.
"""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from fbgpu.data.store import Store, StoreError
from fbgpu.engine.backend import Backend, StagingPool, get_backend
from fbgpu.engine.guard import SANCTIONED
from fbgpu.engine.standin import CROSSINGS, StandinArray, standin_backend

DATES = [dt.date(2024, 3, 1), dt.date(2024, 3, 4), dt.date(2024, 3, 5)]
#: One factor of each tick family (minute and trades read): a quicker day on the emulated kernels.
NAMES = ["late_skew_ret", "bigorder_amt_perc"]


@pytest.fixture
def market(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """Three days of the hand-made oracle market (small: the emulated kernels are slow), in
    the default hot format (Arrow IPC)."""
    from oracle_factors import make_market

    with monkeypatch.context() as m:
        m.setenv("FBGPU_STORE_FORMAT", "arrow")
        store = Store(tmp_path / "market")
        make_market(store, DATES, seed=7)
    return store


def _copy_inputs(store: Store, root: Path) -> Store:
    import shutil

    shutil.copytree(store.root, root, ignore=shutil.ignore_patterns("factors"))
    return Store(root)


def _partitions(store: Store) -> dict[dt.date, bytes]:
    """Each stored ``factors`` partition's values, as bytes (byte-identical comparisons)."""
    out = {}
    for d in store.dates("factors"):
        t = store.read("factors", d)
        out[d] = b"".join(np.ascontiguousarray(t.column(c).to_numpy(zero_copy_only=False))
                          .tobytes() if c != "symbol" else "|".join(t.column(c).to_pylist())
                          .encode() for c in t.column_names[1:])
    return out


# -- the crossing and its staging ----------------------------------------------------------

def test_cpu_upload_is_the_arrays_themselves() -> None:
    a, b = np.arange(5.0), np.arange(3, dtype=np.int64)
    out = get_backend("cpu").to_device_async([a, b])()
    assert out[0] is a and out[1] is b  # no copy on the CPU backend


def test_standin_upload_is_one_counted_crossing_and_does_not_alias_staging() -> None:
    b = standin_backend()
    pool = b.staging_pool(2)
    rng = np.random.default_rng(0)
    days = [[rng.normal(size=n), rng.integers(-9, 9, size=n, dtype=np.int16),
             np.arange(n + 1, dtype=np.int64)] for n in (1000, 800, 1000, 0)]
    before = CROSSINGS["upload"], SANCTIONED["to_device"]
    got = [b.to_device_async(d, pool)() for d in days]
    assert CROSSINGS["upload"] - before[0] == 3 * len(days)  # one per array
    assert SANCTIONED["to_device"] - before[1] == len(days)  # one crossing per call
    # Every day's device arrays still hold its values after later days went through the
    # same two staging buffers (a device array aliasing its staging slot would not).
    for host, dev in zip(days, got, strict=True):
        for h, g in zip(host, dev, strict=True):
            assert type(g) is StandinArray and g.dtype == h.dtype and g.shape == h.shape
            np.testing.assert_array_equal(g.view(np.ndarray), h)


class _Event:
    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name

    def synchronize(self) -> None:
        self.log.append(f"sync {self.name}")


def test_staging_slots_are_reused_grown_and_waited_for() -> None:
    allocs: list[int] = []

    def alloc(n: int) -> np.ndarray:
        allocs.append(n)
        return np.empty(n, dtype=np.uint8)

    pool = StagingPool(2, alloc)
    log: list[str] = []
    seen = []
    for k, size in enumerate([3 * 2**20, 2**20, 3 * 2**20, 2**20, 5 * 2**20]):
        slot, buf = pool.acquire(size)
        assert buf.nbytes >= size
        seen.append((slot, buf))
        log.append(f"use {k}")
        pool.release(slot, _Event(log, str(k)))
    # Round-robin over two slots; days of equal or smaller size get the same buffer objects.
    assert [s for s, _ in seen] == [0, 1, 0, 1, 0]
    assert seen[2][1] is seen[0][1] and seen[3][1] is seen[1][1]
    assert seen[4][1] is not seen[0][1] and seen[4][1].nbytes >= 5 * 2**20  # grown
    assert allocs == [3 * 2**20, 2**20, 5 * 2**20] and pool.grown == 3
    # A slot is written again only after its previous upload's event completed.
    assert log == ["use 0", "use 1", "sync 0", "use 2", "sync 1", "use 3", "sync 2", "use 4"]


def test_day_to_backend_goes_through_the_crossing(market: Store) -> None:
    from fbgpu.factors.compute import _day_arrays, day_to_backend, load_day

    host = load_day(market, DATES[0])
    assert day_to_backend(host, get_backend("cpu")) is host
    b = standin_backend()
    before = CROSSINGS["upload"], SANCTIONED["to_device"]
    dev = day_to_backend(host, b)
    n = len(_day_arrays(host))
    # minute: 7 fields (all read); trades: offsets + 6 columns; orders: offsets + 5 columns
    assert n == 7 + 7 + 6
    assert (CROSSINGS["upload"] - before[0], SANCTIONED["to_device"] - before[1]) == (n, 1)
    for h, d in zip(_day_arrays(host), _day_arrays(dev), strict=True):
        assert type(d) is StandinArray
        np.testing.assert_array_equal(d.view(np.ndarray), h)
    assert list(dev.trades.symbols) == list(host.trades.symbols)
    assert dev.orders.columns.keys() == host.orders.columns.keys()


# -- the overlapped run on the stand-in device ---------------------------------------------

def test_standin_run_counts_crossings_and_matches_the_unoverlapped_run(
        market: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 3-day ``run_factors`` on the stand-in device with the prefetch (read + upload of day
    k+1 during day k): per day exactly one upload crossing carrying the day's arrays, the 5
    uploads of host index metadata, one persistence copy, no implicit crossing (it would
    raise); partitions byte-identical to the same device path without prefetch (``memory_budget``
    disables it: the day is read and uploaded inline), and the CPU backend's to 1e-9."""
    from fbgpu.engine.segments import GpuSegmentOps
    from fbgpu.factors import compute as compute_mod
    from fbgpu.factors import run_factors
    from fbgpu.factors.compute import _day_arrays, load_day

    b = standin_backend()
    ops = GpuSegmentOps(b.xp)  # warmed: its fixed column lists are uploaded once, here
    compute_mod.compute_loaded_day(compute_mod.day_to_backend(load_day(market, DATES[0]), b),
                                   ops=ops)
    monkeypatch.setattr(compute_mod, "segment_ops", lambda backend: ops)
    arrays = sum(len(_day_arrays(load_day(market, d))) for d in DATES)

    over = _copy_inputs(market, tmp_path / "over")
    before = CROSSINGS.copy(), SANCTIONED.copy()
    s = run_factors(over, backend=b, progress=False)
    assert s.dates_computed == DATES
    assert SANCTIONED["to_device"] - before[1]["to_device"] == len(DATES)
    assert CROSSINGS["upload"] - before[0]["upload"] == arrays + 5 * len(DATES)
    assert CROSSINGS["to_host"] - before[0]["to_host"] == len(DATES)

    inline = _copy_inputs(market, tmp_path / "inline")
    run_factors(inline, backend=b, progress=False, memory_budget=1e12)
    cpu = _copy_inputs(market, tmp_path / "cpu")
    run_factors(cpu, backend="cpu", progress=False)
    got, ref = _partitions(over), _partitions(inline)
    assert list(got) == DATES and got == ref
    _assert_within_1e9_of_cpu(over, cpu)


def _assert_within_1e9_of_cpu(device_run: Store, cpu_run: Store) -> None:
    """Every date's factors of the device run equal the CPU backend's to 1e-9 (relative)."""
    for d in DATES:
        dev, host = device_run.read("factors", d), cpu_run.read("factors", d)
        assert dev.column_names == host.column_names
        for c in host.column_names[2:]:
            np.testing.assert_allclose(dev.column(c).to_numpy(), host.column(c).to_numpy(),
                                       rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=c)


def test_cpu_run_with_prefetch_is_byte_identical_and_uploads_nothing(
        market: Store, tmp_path: Path) -> None:
    from fbgpu.factors import run_factors

    on, off = _copy_inputs(market, tmp_path / "on"), _copy_inputs(market, tmp_path / "off")
    before = CROSSINGS["upload"], SANCTIONED["to_device"]
    run_factors(on, backend="cpu", progress=False)
    assert (CROSSINGS["upload"], SANCTIONED["to_device"]) == before
    run_factors(off, backend="cpu", progress=False, memory_budget=1e12)
    assert _partitions(on) == _partitions(off) and len(_partitions(on)) == len(DATES)


class _RecordingBackend(Backend):
    """The stand-in backend, counting (and logging) the uploads it starts."""

    log: ClassVar[list[str]] = []
    cond: ClassVar[threading.Condition] = threading.Condition()
    uploads: ClassVar[int] = 0

    def to_device_async(self, arrays, staging=None, after=None):  # type: ignore[override]
        with _RecordingBackend.cond:
            _RecordingBackend.uploads += 1
            _RecordingBackend.log.append(f"upload {_RecordingBackend.uploads}")
            _RecordingBackend.cond.notify_all()
        return super().to_device_async(arrays, staging, after)


def test_next_days_upload_starts_before_this_days_compute_ends(
        market: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ordering, not timing: day ``i``'s compute (the real one, wrapped) does not end before
    upload ``i + 2`` (day ``i + 1``'s) has started; it waits for it, so without the overlap
    (the next day uploaded only when taken) the wait times out and the test fails. Each day
    is handed over already on the device."""
    from fbgpu.factors import compute as compute_mod
    from fbgpu.factors import run_factors

    sb = standin_backend()
    b = _RecordingBackend(sb.name, sb.xp, sb.device)
    _RecordingBackend.log, _RecordingBackend.uploads = [], 0
    log = _RecordingBackend.log
    real = compute_mod.compute_day

    def compute_day(store, d, names, backend, config, ops, budget, loaded=None, staging=None):
        assert loaded is not None and isinstance(loaded.trades.offsets, StandinArray)
        i = DATES.index(d)
        out = real(store, d, names, backend, config, ops, budget, loaded=loaded,
                   staging=staging)
        if i + 1 < len(DATES):
            with _RecordingBackend.cond:
                assert _RecordingBackend.cond.wait_for(
                    lambda: _RecordingBackend.uploads >= i + 2, 60), f"no upload during {d}"
        with _RecordingBackend.cond:
            log.append(f"end {i}")
        return out

    monkeypatch.setattr(compute_mod, "compute_day", compute_day)
    run_factors(_copy_inputs(market, tmp_path / "s"), backend=b, progress=False, names=NAMES)
    # Day i+1's upload (number i+2) is logged before day i's compute ends, and no upload
    # beyond the last day happens.
    assert log.index("upload 2") < log.index("end 0") < log.index("end 1")
    assert log.index("upload 3") < log.index("end 1")
    assert sorted(x for x in log if x.startswith("upload")) == ["upload 1", "upload 2",
                                                                "upload 3"], log


def test_a_read_error_of_the_next_day_surfaces_for_that_date(
        market: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fbgpu.factors import run_factors
    from fbgpu.factors.compute import PartialRunError

    store = _copy_inputs(market, tmp_path / "bad")
    real = Store.read_ticks

    def read_ticks(self, table, date, columns=None, symbols=None, **kw):
        if str(date) == str(DATES[1]) and table == "trades":
            raise StoreError(f"cannot read trades/{date}: corrupt (test)")
        return real(self, table, date, columns, symbols, **kw)

    monkeypatch.setattr(Store, "read_ticks", read_ticks)
    # the day before was computed and written, so the run reports a partial run (exit 3)
    # naming the date, with the read error as its cause
    with pytest.raises(PartialRunError, match=f"trades/{DATES[1]}") as err:
        run_factors(store, backend=standin_backend(), progress=False,
                    names=NAMES)
    assert err.value.date == DATES[1] and err.value.written == [DATES[0]]
    assert isinstance(err.value.__cause__, StoreError)
    assert store.dates("factors") == [DATES[0]]


# -- cudf: Parquet decoded on the device (a stand-in cudf module) -----------------------------

class _StubSeries:
    """What the read uses of a ``cudf.Series``, over a pyarrow column; device arrays are
    stand-in arrays made without an upload (cudf decodes on the device)."""

    def __init__(self, col: Any) -> None:
        self._col = col

    @property
    def null_count(self) -> int:
        return self._col.null_count

    @property
    def values(self) -> Any:
        from fbgpu.engine.standin import STANDIN

        return STANDIN.array(self._col.to_numpy())

    def astype(self, dtype: str) -> _StubSeries:
        import pyarrow as pa

        return _StubSeries(self._col.cast(pa.float64()))

    def to_cupy(self, na_value: float) -> Any:
        from fbgpu.engine.standin import STANDIN

        return STANDIN.array(self._col.to_numpy(zero_copy_only=False))


def _stub_cudf(calls: list[tuple[str, tuple[str, ...]]]) -> Any:
    import types

    import pyarrow.parquet as pq

    class Frame:
        def __init__(self, table: Any) -> None:
            self._t = table

        def __getitem__(self, c: str) -> _StubSeries:
            return _StubSeries(self._t.column(c))

    def read_parquet(path: str, columns: list[str]) -> Frame:
        calls.append((Path(path).parent.parent.name, tuple(columns)))
        return Frame(pq.read_table(path, columns=columns))

    mod = types.ModuleType("cudf")
    mod.read_parquet = read_parquet  # type: ignore[attr-defined]
    return mod


@pytest.fixture
def parquet_market(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    from oracle_factors import make_market

    with monkeypatch.context() as m:
        m.setenv("FBGPU_STORE_FORMAT", "parquet")
        store = Store(tmp_path / "pq")
        make_market(store, DATES, seed=7)
    assert store.partition_path("trades", DATES[0]).suffix == ".parquet"
    return store


def test_cudf_read_gives_the_host_paths_day_ticks(parquet_market: Store, market: Store) -> None:
    calls: list[tuple[str, tuple[str, ...]]] = []
    stub = _stub_cudf(calls)
    for table in ("trades", "orders"):
        host = parquet_market.read_ticks(table, DATES[1])
        dev = parquet_market.read_ticks(table, DATES[1], cudf=stub)
        assert list(dev.symbols) == list(host.symbols) and len(host.symbols) > 3
        assert type(dev.offsets) is np.ndarray
        np.testing.assert_array_equal(dev.offsets, host.offsets)
        assert dev.columns.keys() == host.columns.keys()
        for c, h in host.columns.items():
            g = dev.columns[c]
            assert type(g) is StandinArray and g.dtype == h.dtype, c
            np.testing.assert_array_equal(g.view(np.ndarray), h)
    assert [t for t, _ in calls] == ["trades", "orders"]
    # An Arrow IPC partition, or a stock selection, is read on the host as before.
    assert market.partition_path("trades", DATES[1]).suffix == ".arrow"
    assert type(market.read_ticks("trades", DATES[1], cudf=stub).columns["price"]) is np.ndarray
    sel = parquet_market.read_ticks("trades", DATES[1], symbols=["000001.SZ"], cudf=stub)
    assert type(sel.columns["price"]) is np.ndarray and len(calls) == 2


def test_standin_run_with_cudf_uploads_only_what_the_host_read(
        parquet_market: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a cudf module importable, the prefetched run decodes trades and orders on the
    device: per day the upload crossing carries only the minute fields and the two CSR
    offsets; the partitions are byte-identical to the run without cudf (``FBGPU_CUDF=0``)."""
    import sys

    from fbgpu.engine.segments import GpuSegmentOps
    from fbgpu.factors import compute as compute_mod
    from fbgpu.factors import run_factors

    calls: list[tuple[str, tuple[str, ...]]] = []
    monkeypatch.setitem(sys.modules, "cudf", _stub_cudf(calls))
    b = standin_backend()
    ops = GpuSegmentOps(b.xp)
    compute_mod.compute_loaded_day(
        compute_mod.day_to_backend(compute_mod.load_day(parquet_market, DATES[0]), b), ops=ops)
    monkeypatch.setattr(compute_mod, "segment_ops", lambda backend: ops)
    dev = _copy_inputs(parquet_market, tmp_path / "dev")
    before = CROSSINGS["upload"], SANCTIONED["to_device"]
    run_factors(dev, backend=b, progress=False)
    assert sorted(calls) == sorted([("trades", compute_mod.TRADE_COLUMNS),
                                    ("orders", compute_mod.ORDER_COLUMNS)] * len(DATES))
    assert SANCTIONED["to_device"] - before[1] == len(DATES)
    assert CROSSINGS["upload"] - before[0] == (7 + 2 + 5) * len(DATES)
    monkeypatch.setenv(compute_mod.CUDF_ENV, "0")
    host = _copy_inputs(parquet_market, tmp_path / "host")
    run_factors(host, backend=b, progress=False)
    assert len(calls) == 2 * len(DATES)  # not used again
    got = _partitions(dev)
    assert list(got) == DATES and got == _partitions(host)


# -- the real thing, on a GPU ----------------------------------------------------------------

def _cuda() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


@pytest.mark.skipif(not _cuda(), reason="needs cupy and a CUDA device")
def test_pinned_overlapped_upload_on_the_gpu(market: Store, tmp_path: Path) -> None:
    """cupy: staging buffers are page-locked and reused, the copy runs on the upload side
    stream, the compute stream waits for it, the device arrays equal the host's, and a
    prefetched multi-day run stores what the inline (unprefetched) GPU run stores."""
    import cupy
    import cupyx

    from fbgpu.engine.backend import _upload_stream
    from fbgpu.factors import run_factors
    from fbgpu.factors.compute import _day_arrays, day_to_backend, load_day, upload_day

    gpu = get_backend("gpu")
    pool = gpu.staging_pool(2)
    pinned = type(cupyx.empty_pinned((1,), np.uint8).base)
    days = [load_day(market, d) for d in DATES]
    got = []
    for day in days:
        got.append(upload_day(day, gpu, pool, gpu.compute_event())())
    assert all(b is not None and isinstance(b.base, pinned) for b in pool.buffers)
    assert pool.grown <= 3
    assert _upload_stream().ptr != cupy.cuda.get_current_stream().ptr
    for host, dev in zip(days, got, strict=True):
        for h, d in zip(_day_arrays(host), _day_arrays(dev), strict=True):
            assert isinstance(d, cupy.ndarray)
            np.testing.assert_array_equal(d.get(), h)
        ref = day_to_backend(host, gpu)
        for a, b in zip(_day_arrays(ref), _day_arrays(dev), strict=True):
            assert bool((a == b).all())
    over, inline = _copy_inputs(market, tmp_path / "o"), _copy_inputs(market, tmp_path / "i")
    run_factors(over, backend=gpu, progress=False)
    run_factors(inline, backend=gpu, progress=False, memory_budget=1e12)
    assert _partitions(over) == _partitions(inline)



@pytest.mark.skipif(not _cuda(), reason="needs cupy and a CUDA device")
def test_one_off_upload_survives_reuse_of_its_pinned_buffer(market: Store) -> None:
    """An upload without the run's pool (``day_to_backend(day, gpu)``) stages through a
    one-off pinned buffer: once its wait function returns, the copy has ended, so pinned
    memory handed out right after (and scribbled over) cannot change the device arrays."""
    import cupy
    import cupyx

    from fbgpu.factors.compute import _day_arrays, day_to_backend, load_day

    gpu = get_backend("gpu")
    host = load_day(market, DATES[0])
    dev = day_to_backend(host, gpu)
    total = sum(a.nbytes for a in _day_arrays(host))
    junk = cupyx.empty_pinned((total + (1 << 20),), np.uint8)
    junk[:] = 0xA5  # reuses the freed staging block when the pinned pool hands it out again
    cupy.cuda.get_current_stream().synchronize()
    for h, d in zip(_day_arrays(host), _day_arrays(dev), strict=True):
        np.testing.assert_array_equal(d.get(), h)


# -- every GPU read through the crossing: budgeted chunks, a single day, compute_day ---------

#: A budget (bytes of device working memory; the stand-in's fixed footprint is 0) that splits
#: each of the oracle market's days into two stock chunks (asserted where used).
TWO_CHUNKS = 1.2e6


def _warm_standin(store: Store, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The stand-in backend and warmed primitives (their fixed column lists uploaded once,
    here, not in the counted runs), installed as what ``run_factors`` builds."""
    from fbgpu.engine.segments import GpuSegmentOps
    from fbgpu.factors import compute as compute_mod

    b = standin_backend()
    ops = GpuSegmentOps(b.xp)
    compute_mod.compute_loaded_day(compute_mod.load_day(store, DATES[0]), ops=ops)
    monkeypatch.setattr(compute_mod, "segment_ops", lambda backend: ops)
    return b, ops


def _chunk_uploads(store: Store, d: dt.date) -> tuple[int, int, int]:
    """(chunks, arrays of the chunks' upload crossings, index uploads) of ``d`` under
    :data:`TWO_CHUNKS` (planned as on a device: the next chunk read ahead): per chunk one
    position array per family present, plus the two minute-row index arrays when a trades
    stock has minute bars and the two families' stocks differ (the same stocks in the same
    order share the minute returns, with no index)."""
    from fbgpu.factors.compute import _day_arrays, load_day, stock_chunks

    chunks = stock_chunks(store, d, TWO_CHUNKS, read_ahead=True)
    assert chunks is not None and len(chunks) == 2, d
    arrays = index = 0
    for c in chunks:
        day = load_day(store, d, None, list(c))
        arrays += len(_day_arrays(day))
        index += sum(x is not None for x in (day.minute, day.trades, day.orders))
        trades, minute = list(day.trades.symbols), list(day.minute.symbols)
        index += 2 * (bool(set(trades) & set(minute)) and trades != minute)
    return len(chunks), arrays, index


def _counts() -> tuple[int, int, int, int]:
    return (SANCTIONED["to_device"], SANCTIONED["to_device index"], CROSSINGS["upload"],
            CROSSINGS["to_host"])


def _diff(after: tuple[int, ...], before: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(a - b for a, b in zip(after, before, strict=True))


def test_budgeted_standin_run_uploads_each_chunk_through_the_crossing(
        market: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A memory-budgeted stand-in run (two stock chunks a day): per chunk exactly one
    ``to_device`` crossing carrying the chunk's arrays, and its index arrays through the
    explicit index upload; no other upload (inside the compute one would raise), one
    persistence copy a day; partitions byte-identical to the unbudgeted (prefetched) run and
    within 1e-9 of the CPU backend."""
    from fbgpu.factors import run_factors

    b, _ = _warm_standin(market, monkeypatch)
    expect = [_chunk_uploads(market, d) for d in DATES]
    chunks, arrays, index = (sum(x[i] for x in expect) for i in range(3))
    budgeted = _copy_inputs(market, tmp_path / "budgeted")
    before = _counts()
    run_factors(budgeted, backend=b, progress=False, memory_budget=TWO_CHUNKS)
    assert _diff(_counts(), before) == (chunks, index, arrays + index, len(DATES))
    assert chunks == 2 * len(DATES)

    whole = _copy_inputs(market, tmp_path / "whole")
    run_factors(whole, backend=b, progress=False)
    cpu = _copy_inputs(market, tmp_path / "cpu")
    run_factors(cpu, backend="cpu", progress=False)
    got = _partitions(budgeted)
    assert list(got) == DATES and got == _partitions(whole)
    _assert_within_1e9_of_cpu(budgeted, cpu)


def _counting_pools(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """From now on every staging pool a backend makes (``Backend.staging_pool``), as the list
    of the buffer sizes it allocated, in the order made."""
    pools: list[list[int]] = []

    def staging_pool(self: Backend, slots: int = 2) -> StagingPool:
        allocs: list[int] = []
        pools.append(allocs)

        def alloc(n: int) -> np.ndarray:
            allocs.append(n)
            return np.empty(n, dtype=np.uint8)

        return StagingPool(slots, alloc)

    monkeypatch.setattr(Backend, "staging_pool", staging_pool)
    return pools


def test_one_staging_pool_per_run_allocates_two_buffers(
        market: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run's one staging pool (``run_staging``): a 3-day budgeted stand-in run (two
    chunks a day, six uploads, every chunk within a slot's first MiB) makes one pool and
    allocates exactly two buffers, its two slots, reused for every later chunk; so do the
    unbudgeted (prefetched) run and ``compute_factors`` (three one-off day uploads). Before,
    each day's ``compute_day`` made its own pool (six buffers) and each one-off upload one.
    The partitions are byte-identical to a budgeted run with a fresh pool per upload."""
    from fbgpu.factors import compute as compute_mod
    from fbgpu.factors import compute_factors, run_factors

    b, _ = _warm_standin(market, monkeypatch)
    pools = _counting_pools(monkeypatch)
    budgeted = _copy_inputs(market, tmp_path / "budgeted")
    before = SANCTIONED["to_device"]
    run_factors(budgeted, backend=b, progress=False, memory_budget=TWO_CHUNKS)
    assert SANCTIONED["to_device"] - before == 2 * len(DATES)  # six chunk uploads
    assert pools == [[2**20, 2**20]], pools

    pools.clear()
    whole = _copy_inputs(market, tmp_path / "whole")
    run_factors(whole, backend=b, progress=False)
    assert pools == [[2**20, 2**20]], pools
    pools.clear()
    cube = compute_factors(market, DATES, NAMES, backend=b)
    assert pools == [[2**20, 2**20]], pools  # three days through two slots

    pools.clear()  # the baseline: no run pool, every upload stages through a pool of its own
    monkeypatch.setattr(compute_mod, "run_staging", lambda backend: None)
    fresh = _copy_inputs(market, tmp_path / "fresh")
    run_factors(fresh, backend=b, progress=False, memory_budget=TWO_CHUNKS)
    assert pools == [[2**20]] * (2 * len(DATES)), pools  # six buffers, one per upload
    assert _partitions(budgeted) == _partitions(fresh) == _partitions(whole)
    assert len(_partitions(budgeted)) == len(DATES)
    for i, d in enumerate(DATES):
        t = whole.read("factors", d)
        at = np.searchsorted(cube.symbols, np.asarray(t.column("symbol").to_pylist(), object))
        for j, n in enumerate(NAMES):
            np.testing.assert_array_equal(b.to_host(cube.values[i, at, j]),
                                          t.column(n).to_numpy())


def test_next_chunks_upload_starts_before_this_chunks_compute_ends(
        market: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ordering, as for days: chunk ``k``'s compute does not end before chunk ``k + 1``'s
    upload (number ``k + 2``) has started; without the read-ahead the wait times out. Each
    chunk reaches ``compute_loaded_day`` already on the device; the day's values equal the
    unbudgeted ``compute_day``'s bit for bit."""
    from fbgpu.factors import compute as compute_mod

    _, ops = _warm_standin(market, monkeypatch)
    sb = standin_backend()
    b = _RecordingBackend(sb.name, sb.xp, sb.device)
    _RecordingBackend.log, _RecordingBackend.uploads = [], 0
    log = _RecordingBackend.log
    real = compute_mod.compute_loaded_day
    seen: list[int] = []

    def compute_loaded_day(day, names=None, ops=None, config=None):
        assert all(type(a) is StandinArray for a in compute_mod._day_arrays(day))
        k = len(seen)
        seen.append(k)
        out = real(day, names, ops, config)
        if k == 0:
            with _RecordingBackend.cond:
                assert _RecordingBackend.cond.wait_for(
                    lambda: _RecordingBackend.uploads >= 2, 60), "no upload during chunk 0"
        with _RecordingBackend.cond:
            log.append(f"end {k}")
        return out

    monkeypatch.setattr(compute_mod, "compute_loaded_day", compute_loaded_day)
    got = compute_mod.compute_day(market, DATES[1], NAMES, b, None, ops, TWO_CHUNKS)
    assert log.index("upload 2") < log.index("end 0") < log.index("end 1")
    assert sorted(x for x in log if x.startswith("upload")) == ["upload 1", "upload 2"], log
    monkeypatch.setattr(compute_mod, "compute_loaded_day", real)
    ref = compute_mod.compute_day(market, DATES[1], NAMES, b, None, ops)
    assert list(got.symbols) == list(ref.symbols)
    assert got.values.view(np.ndarray).tobytes() == ref.values.view(np.ndarray).tobytes()


def test_single_day_run_and_compute_day_upload_once(
        market: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A one-day run (no read-ahead) and ``compute_day`` alone each make exactly one upload
    crossing carrying the day's arrays, plus the 5 index uploads, and give the same values."""
    from fbgpu.factors import compute as compute_mod
    from fbgpu.factors import run_factors
    from fbgpu.factors.compute import _day_arrays, load_day

    b, ops = _warm_standin(market, monkeypatch)
    n = len(_day_arrays(load_day(market, DATES[1])))
    one = _copy_inputs(market, tmp_path / "one")
    before = _counts()
    run_factors(one, start=DATES[1], end=DATES[1], backend=b, progress=False)
    assert _diff(_counts(), before) == (1, 5, n + 5, 1)
    before = _counts()
    day = compute_mod.compute_day(market, DATES[1], None, b, None, ops)
    assert _diff(_counts(), before) == (1, 5, n + 5, 0)
    stored = one.read("factors", DATES[1])
    assert list(day.symbols) == stored.column("symbol").to_pylist()
    np.testing.assert_array_equal(  # bit for bit, NaN where NaN
        b.to_host(day.values),
        np.column_stack([stored.column(c).to_numpy() for c in stored.column_names[2:]]))


def test_cpu_budgeted_run_uploads_nothing_and_is_byte_identical(
        market: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        steady_rss: float, host_need) -> None:
    """The CPU backend in stock chunks: no upload, no crossing, no read-ahead of the next
    chunk (its budget is host memory), and the same bytes as the whole-day run."""
    from fbgpu.factors import compute as compute_mod
    from fbgpu.factors import run_factors
    from fbgpu.factors.compute import fixed_footprint

    reads: list[tuple[str, ...] | None] = []
    real = compute_mod.load_day

    def load_day(store, date, names=None, symbols=None, cudf=None):
        if symbols is not None:  # a chunk: read by the computing thread, not ahead
            assert threading.current_thread() is threading.main_thread()
        reads.append(tuple(symbols) if symbols is not None else None)
        return real(store, date, names, symbols, cudf)

    monkeypatch.setattr(compute_mod, "load_day", load_day)
    whole, chunked = _copy_inputs(market, tmp_path / "w"), _copy_inputs(market, tmp_path / "c")
    before = _counts()
    run_factors(whole, backend="cpu", progress=False)
    reads.clear()
    room = min(host_need(market, d) for d in DATES) / 2  # half the smallest day's need
    run_factors(chunked, backend="cpu", progress=False, memory_budget=fixed_footprint() + room)
    assert _diff(_counts(), before) == (0, 0, 0, 0)
    assert len(reads) > len(DATES) and all(r is not None for r in reads)  # chunks were read
    assert _partitions(whole) == _partitions(chunked) and len(_partitions(whole)) == len(DATES)


def test_an_implicit_upload_inside_the_compute_fails_on_the_standin(
        market: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside the compute only explicit uploads are allowed: ``xp.asarray`` of host data
    raises on the stand-in (outside it is counted; a sanctioned or index upload passes). A
    host day that skipped the upload crossing therefore fails the run."""
    from fbgpu.engine.backend import index_to_device
    from fbgpu.engine.guard import explicit_uploads_only, sanctioned
    from fbgpu.engine.standin import STANDIN, HostCrossingError
    from fbgpu.factors import compute as compute_mod

    host = np.arange(4.0)
    before = CROSSINGS["upload"]
    assert type(STANDIN.asarray(host)) is StandinArray
    with explicit_uploads_only():
        with pytest.raises(HostCrossingError, match="implicit upload"):
            STANDIN.asarray(host)
        with pytest.raises(HostCrossingError, match="implicit upload"):
            STANDIN.ascontiguousarray(host)
        dev = STANDIN.asarray(STANDIN.zeros(3))  # device data: no upload
        with sanctioned("to_device"):
            STANDIN.asarray(host)
        idx = index_to_device(STANDIN, np.arange(3))
    assert type(dev) is StandinArray and type(idx) is StandinArray
    assert CROSSINGS["upload"] - before == 3
    assert index_to_device(np, host) is host  # the CPU: no copy

    _, ops = _warm_standin(market, monkeypatch)
    monkeypatch.setattr(compute_mod, "_resident", lambda day, backend: day)  # the regression
    with pytest.raises(Exception) as e:
        compute_mod.compute_loaded_day(compute_mod.load_day(market, DATES[0], NAMES), NAMES, ops)
    chain, err = [], e.value
    while err is not None:
        chain.append(err)
        err = err.__cause__ or err.__context__
    assert any(isinstance(x, HostCrossingError) and "implicit upload" in str(x) for x in chain)
