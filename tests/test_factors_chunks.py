"""Bounded memory: a day processed in stock chunks gives exactly the whole-day values."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fbgpu.data.store import Store
from fbgpu.factors.compute import compute_day, fixed_footprint, stock_chunks


def test_chunks_cover_the_day_in_order_and_shrink_with_the_budget(tiny_store: Store) -> None:
    d = tiny_store.dates("trades")[5]
    assert stock_chunks(tiny_store, d, 1e12) is None  # everything fits: one whole-day pass
    small = stock_chunks(tiny_store, d, 3e6)
    smaller = stock_chunks(tiny_store, d, 1e6)
    assert small is not None and smaller is not None and len(smaller) > len(small) > 1
    flat = np.concatenate(smaller)
    assert list(flat) == sorted(flat) and len(set(flat)) == len(flat)
    whole = compute_day(tiny_store, d, backend="cpu")
    assert list(flat) == list(whole.symbols)


def test_chunked_day_equals_whole_day_bit_for_bit(tiny_store: Store,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  steady_rss: float, host_need) -> None:
    """The budget counts the process's fixed footprint: the footprint plus a third of the
    day's planned working bytes (the CPU engine's per-row figures) gives several chunks on the
    tiny market, each read on its own, and exactly the whole-day values."""
    from fbgpu.factors import compute
    from fbgpu.factors.compute import HOST_WORKING_BYTES_PER_ROW

    reads = []
    real = compute.load_day
    monkeypatch.setattr(compute, "load_day", lambda *a, **k: reads.append(1) or real(*a, **k))
    for d in tiny_store.dates("trades")[:3]:
        whole = compute_day(tiny_store, d, backend="cpu")
        data = host_need(tiny_store, d) / 3
        assert len(stock_chunks(tiny_store, d, data, per_row=HOST_WORKING_BYTES_PER_ROW)
                   or []) > 1
        reads.clear()
        chunked = compute_day(tiny_store, d, backend="cpu",
                              memory_budget=fixed_footprint() + data)
        assert len(reads) > 1  # the day was read in chunks
        assert list(chunked.symbols) == list(whole.symbols)
        np.testing.assert_array_equal(chunked.values, whole.values)  # NaN where NaN, else equal


def test_cpu_footprint_counts_the_engine_it_will_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """While numba is not imported, the CPU footprint adds what the engine will add on first
    use: the ahead-of-time kernels' small figure when they are available, numba's otherwise;
    nothing once numba is loaded; 0 on a device."""
    import sys

    from fbgpu.engine import cpu_aot
    from fbgpu.factors import compute

    monkeypatch.setattr(compute, "resident_bytes", lambda: 1000)
    assert fixed_footprint(True) == 0.0
    monkeypatch.setitem(sys.modules, "numba", sys.modules.get("numba", object()))
    assert fixed_footprint() == 1000
    monkeypatch.delitem(sys.modules, "numba")
    monkeypatch.setattr(cpu_aot, "kernels", lambda: object())
    assert fixed_footprint() == 1000 + compute.AOT_ENGINE_FOOTPRINT_BYTES
    # a user factor module may call kernels with no ahead-of-time build: numba's figure
    assert fixed_footprint(user_factors=True) == 1000 + compute.ENGINE_FOOTPRINT_BYTES
    monkeypatch.setattr(cpu_aot, "kernels", lambda: None)
    assert fixed_footprint() == 1000 + compute.ENGINE_FOOTPRINT_BYTES
    assert compute.AOT_ENGINE_FOOTPRINT_BYTES < compute.ENGINE_FOOTPRINT_BYTES


def test_parquet_days_count_a_row_group_decode_per_partition(
        tiny_store: Store, tmp_path, monkeypatch: pytest.MonkeyPatch, steady_rss: float,
        host_need) -> None:
    """A memory-mapped Arrow day needs no read allowance; a Parquet day needs twice each
    partition's largest row group in raw bytes (footers only), and a budget with the
    allowance taken off still chunks the day and gives the whole-day values."""
    import shutil

    import pyarrow.parquet as pq

    from fbgpu.factors.compute import PARQUET_READ_GROUPS, RAW_BYTES_PER_ROW, parquet_read_bytes

    d = tiny_store.dates("trades")[0]
    assert all(str(tiny_store.partition_path(t, d)).endswith(".arrow")
               for t in ("minute", "trades", "orders"))
    assert parquet_read_bytes(tiny_store, d) == 0.0
    root = tmp_path / "pq"
    for t in ("trades", "orders", "minute"):
        shutil.copytree(tiny_store.root / t, root / t)
    store = Store(root)
    store.convert("parquet")
    want = 0.0
    for t in ("minute", "trades", "orders"):
        meta = pq.ParquetFile(store.partition_path(t, d)).metadata
        want += PARQUET_READ_GROUPS * RAW_BYTES_PER_ROW[t] * max(
            meta.row_group(i).num_rows for i in range(meta.num_row_groups))
    assert want > 0 and parquet_read_bytes(store, d) == want
    whole = compute_day(store, d, backend="cpu")
    from fbgpu.factors import compute

    seen, reads = [], []
    real_chunks, real_load = compute.stock_chunks, compute.load_day
    monkeypatch.setattr(compute, "stock_chunks", lambda *a, **k: seen.append(k.get(
        "read_allowance")) or real_chunks(*a, **k))
    monkeypatch.setattr(compute, "load_day", lambda *a, **k: reads.append(1) or real_load(*a, **k))
    budget = fixed_footprint() + want + host_need(store, d) / 3
    chunked = compute_day(store, d, backend="cpu", memory_budget=budget)
    assert seen == [want] and len(reads) > 1  # the allowance was counted; the day chunked
    np.testing.assert_array_equal(chunked.values, whole.values)
    # too small: the message names the reading allowance apart from the footprint
    with pytest.raises(compute.MemoryBudgetError, match="reading a chunk of its Parquet "
                       "partitions ~[0-9.]+ MB"):
        compute_day(store, d, backend="cpu", memory_budget=fixed_footprint() + want / 2)


def test_budget_below_footprint_plus_one_stock_day_is_refused(tiny_store: Store) -> None:
    """A budget the process's fixed footprint already exceeds, or that leaves less than the
    heaviest stock-day needs, is refused with the stock, its need and the smallest budget
    that works; that smallest budget is accepted."""
    import re

    import pytest

    from fbgpu.factors.compute import WORKING_BYTES_PER_ROW, MemoryBudgetError

    d = tiny_store.dates("trades")[0]
    with pytest.raises(MemoryBudgetError, match="fixed footprint is .* MB and stock-day .* "
                       "alone needs"):
        compute_day(tiny_store, d, backend="cpu", memory_budget=1e6)  # below the footprint
    names, rows = tiny_store.symbol_counts("trades", d)
    heaviest = float(rows.max() * WORKING_BYTES_PER_ROW["trades"])
    with pytest.raises(MemoryBudgetError) as e:
        stock_chunks(tiny_store, d, 100e6 + heaviest / 2, footprint=100e6)
    msg = str(e.value)
    least = float(re.search(r"at least ([0-9.]+) MB", msg).group(1)) * 2**20
    assert least >= 100e6 + heaviest / 2 and msg.split("stock-day ")[1].split()[0] in set(
        tiny_store.symbol_counts("minute", d)[0]) | set(names)
    chunks = stock_chunks(tiny_store, d, least + 2**20, footprint=100e6)  # accepted
    assert chunks is None or len(np.concatenate(chunks)) > 0


def test_filtered_reads_return_only_the_requested_stocks(tiny_store: Store) -> None:
    d = tiny_store.dates("trades")[0]
    full = tiny_store.read_ticks("trades", d)
    pick = list(full.symbols[1:3])
    part = tiny_store.read_ticks("trades", d, symbols=pick)
    assert list(part.symbols) == pick
    lo, hi = full.offsets[1], full.offsets[3]
    np.testing.assert_array_equal(part["seq"], full["seq"][lo:hi])
    assert list(tiny_store.read_minute(d, symbols=pick).symbols) == pick


def test_auto_budget_and_cli_option(tiny_store: Store, tmp_path,
                                    monkeypatch: pytest.MonkeyPatch, steady_rss: float,
                                    host_need) -> None:
    import shutil

    from fbgpu.cli import main
    from fbgpu.engine.backend import get_backend
    from fbgpu.factors.compute import memory_budget_for

    cpu = get_backend("cpu")
    assert memory_budget_for(None, cpu) is None and memory_budget_for(2e9, cpu) == 2e9
    assert memory_budget_for("auto", cpu) > fixed_footprint()  # + half the available memory
    root = tmp_path / "s"
    for t in ("trades", "orders", "minute"):
        shutil.copytree(tiny_store.root / t, root / t)
    d = str(tiny_store.dates("trades")[0])
    # 1 MB is below the process's fixed footprint: refused (usage error), nothing written
    assert main(["factors", "--store", str(root), "--start", d, "--end", d, "--backend", "cpu",
                 "--memory-gb", "0.001", "--no-progress"]) == 1
    assert not Store(root).has("factors", d)
    # the footprint + a third of the day's planned working bytes: chunks of stocks
    gb = (fixed_footprint() + host_need(Store(root), d) / 3) / 2**30
    from fbgpu.factors import compute

    reads = []
    real = compute.load_day
    monkeypatch.setattr(compute, "load_day", lambda *a, **k: reads.append(1) or real(*a, **k))
    assert main(["factors", "--store", str(root), "--start", d, "--end", d, "--backend", "cpu",
                 "--memory-gb", f"{gb:.9f}", "--no-progress"]) == 0
    assert len(reads) > 1
    chunked = Store(root).manifest("factors", d).sha256
    assert main(["factors", "--store", str(root), "--start", d, "--end", d, "--backend", "cpu",
                 "--memory-gb", "lots"]) != 0
    # "auto" (and any budget) leaves the stored partition exactly as the chunked run wrote it
    assert main(["factors", "--store", str(root), "--start", d, "--end", d, "--backend", "cpu",
                 "--memory-gb", "auto", "--no-progress"]) == 0
    assert Store(root).manifest("factors", d).sha256 == chunked


def test_prefetch_reads_each_planned_day_ahead_as_load_day_does(tiny_store: Store) -> None:
    """DayPrefetch hands back, in order, exactly what load_day reads for each planned day;
    a day not planned (or prefetching disabled) gives None, so the caller reads it itself."""
    from fbgpu.factors.compute import DayPrefetch, load_day
    from fbgpu.factors.registry import builtin_names

    days = tiny_store.dates("trades")[:3]
    names = builtin_names()
    with DayPrefetch(tiny_store, [(d, names) for d in days]) as pre:
        for d in days:
            got = pre.take(d)
            want = load_day(tiny_store, d, names)
            assert got is not None and list(got.universe) == list(want.universe)
            for t in ("trades", "orders"):
                g, w = getattr(got, t), getattr(want, t)
                assert (g is None) == (w is None)
                if g is not None:
                    np.testing.assert_array_equal(g.offsets, w.offsets)
                    for c in w.columns:
                        np.testing.assert_array_equal(g.columns[c], w.columns[c])
        assert pre.take(days[0]) is None  # already taken
    with DayPrefetch(tiny_store, [(d, names) for d in days], enabled=False) as off:
        assert off.take(days[0]) is None


def test_a_factor_run_imports_neither_pandas_nor_numba_before_it_computes(tiny_store: Store,
                                                                        tmp_path) -> None:
    """`fbgpu factors`' imports leave numba, pandas, pyarrow.compute/parquet, pydantic out (they
    cost start-up), and the whole run of a day never imports pandas (pyarrow's to_numpy/pa.array
    would: the read path and the factors writer build arrays from buffers) nor pydantic (typer
    >= 0.29 builds a pydantic adapter per option; FactorConfig is a plain dataclass)."""
    import shutil
    import subprocess
    import sys

    root = tmp_path / "s"
    for t in ("trades", "orders", "minute"):
        shutil.copytree(tiny_store.root / t, root / t)
    d = str(tiny_store.dates("trades")[0])
    code = (
        "import sys\n"
        "import fbgpu.cli.factors, fbgpu.factors.compute\n"
        "early = [m for m in ('numba', 'pandas', 'pyarrow.compute', 'pyarrow.parquet', 'torch',"
        " 'scipy', 'matplotlib', 'pydantic') if m in sys.modules]\n"
        "from fbgpu.cli import main\n"
        "import os; os.environ['FBGPU_PRELOAD'] = '0'\n"
        f"rc = main(['factors', '--store', {str(root)!r}, '--start', {d!r}, '--end', {d!r},"
        " '--backend', 'cpu', '--no-progress'])\n"
        "print('EARLY', early, 'PANDAS', 'pandas' in sys.modules,"
        " 'PYDANTIC', 'pydantic' in sys.modules, 'RC', rc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=600)
    line = [x for x in out.stdout.splitlines() if x.startswith("EARLY")]
    assert line, out.stdout + out.stderr
    assert line[0] == "EARLY [] PANDAS False PYDANTIC False RC 0", line[0]
    assert Store(root).has("factors", d)


def _check_plan(starts: list[int], need: np.ndarray, ahead: np.ndarray, room: float) -> None:
    """``starts`` cover the stocks in order, and while chunk k computes, its working bytes
    plus chunk k+1's raw bytes (read ahead) stay within ``room``; the last chunk alone too."""
    n = len(need)
    assert starts[0] == 0 and starts == sorted(set(starts)) and starts[-1] < n
    bounds = [*starts, n]
    chunks = list(itertools.pairwise(bounds))
    for k, (a, b) in enumerate(chunks):
        nxt = ahead[slice(*chunks[k + 1])].sum() if k + 1 < len(chunks) else 0.0
        assert need[a:b].sum() + nxt <= room, (k, need[a:b].sum(), nxt, room)


def test_plan_with_read_ahead_counts_the_next_chunks_raw_inputs() -> None:
    """Known sizes: four stocks of 4 working bytes and 1 raw byte each, room 9. The plain
    fill ([0, 1], [2, 3]: 8 bytes each) would have chunk 1's 2 raw bytes beside chunk 0's 8;
    with read-ahead every chunk's need plus the next chunk's raw bytes fits. Random sizes:
    the same property, and the least room (``min_chunk_room``) is accepted."""
    from fbgpu.factors.compute import min_chunk_room, plan_chunks

    need, ahead = np.full(4, 4.0), np.full(4, 1.0)
    assert plan_chunks(need, 9.0) == [0, 2]  # no read-ahead: the plain greedy fill
    with pytest.raises(AssertionError):
        _check_plan([0, 2], need, ahead, 9.0)  # 8 + 2 > 9: the budget would not hold
    # chunks of at most room / (1 + max(ahead / need)) = 9 / 1.25 = 7.2 bytes: one stock each
    assert plan_chunks(need, 9.0, ahead) == [0, 1, 2, 3]
    _check_plan([0, 1, 2, 3], need, ahead, 9.0)
    assert plan_chunks(need, 10.0, ahead) == [0, 2]  # 8 + 2 <= 10: the plain plan holds
    rng = np.random.default_rng(5)
    for _ in range(200):
        n = int(rng.integers(1, 40))
        need = rng.gamma(0.7, 100.0, n) + 1.0
        ahead = need * rng.uniform(0.0, 0.2, n)  # raw bytes are a share of a stock's need
        least = float(min_chunk_room(need, ahead).max())
        for room in (least, least * rng.uniform(1.0, 3.0), need.sum() * 0.9):
            if room >= least:
                _check_plan(plan_chunks(need, room, ahead), need, ahead, room)


def test_read_ahead_budget_holds_on_a_store_and_too_small_is_refused(tiny_store: Store) -> None:
    """``stock_chunks(read_ahead=True)`` (a device run reads chunk k+1 while chunk k
    computes) on the tiny market: each chunk's working bytes plus the next chunk's raw bytes
    (per-stock rows x WORKING_/RAW_BYTES_PER_ROW) fit the budget. A budget that fits the
    heaviest stock-day alone but not with its neighbour's raw inputs read ahead is refused,
    naming the read-ahead and the least budget, which is then accepted."""
    import re

    from fbgpu.factors.compute import (
        RAW_BYTES_PER_ROW,
        WORKING_BYTES_PER_ROW,
        MemoryBudgetError,
        min_chunk_room,
    )

    d = tiny_store.dates("trades")[1]
    universe = np.array(sorted(set().union(*(tiny_store.symbol_counts(t, d)[0]
                                             for t in ("minute", "trades", "orders")))),
                        dtype=object)
    need, ahead = np.zeros(len(universe)), np.zeros(len(universe))
    for t in ("minute", "trades", "orders"):
        names, rows = tiny_store.symbol_counts(t, d)
        at = np.searchsorted(universe, names)
        need[at] += rows * WORKING_BYTES_PER_ROW[t]
        ahead[at] += rows * RAW_BYTES_PER_ROW[t]
    footprint = 50e6
    for budget in (need.sum() / 3, need.sum() / 8):
        chunks = stock_chunks(tiny_store, d, footprint + budget, footprint, read_ahead=True)
        assert chunks is not None and list(np.concatenate(chunks)) == list(universe)
        starts = np.cumsum([0, *map(len, chunks)])[:-1].tolist()
        _check_plan(starts, need, ahead, budget)
        plain = stock_chunks(tiny_store, d, footprint + budget, footprint)
        assert len(chunks) >= len(plain)  # the read-ahead takes room: never fewer chunks

    least = min_chunk_room(need, ahead)
    assert least.max() > need.max()  # the read-ahead is what binds
    between = (need.max() + least.max()) / 2
    stock_chunks(tiny_store, d, footprint + between, footprint)  # no read-ahead: accepted
    with pytest.raises(MemoryBudgetError, match="read ahead") as e:
        stock_chunks(tiny_store, d, footprint + between, footprint, read_ahead=True)
    msg = str(e.value)
    assert f"stock-day {universe[int(np.argmax(least))]} alone needs" in msg
    given = float(re.search(r"at least ([0-9.]+) MB", msg).group(1)) * 2**20
    # the printed minimum is rounded up (to 0.1 MB), so giving exactly it is accepted
    assert 0 <= given - (footprint + least.max()) < 0.1 * 2**20
    assert stock_chunks(tiny_store, d, given, footprint, read_ahead=True) is not None
    ok = stock_chunks(tiny_store, d, footprint + least.max(), footprint, read_ahead=True)
    assert ok is not None
    _check_plan(np.cumsum([0, *map(len, ok)])[:-1].tolist(), need, ahead, least.max())
