"""Bounded memory: a day processed in stock chunks gives exactly the whole-day values."""

from __future__ import annotations

import numpy as np

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


def test_chunked_day_equals_whole_day_bit_for_bit(tiny_store: Store) -> None:
    """The budget counts the process's fixed footprint: the footprint plus 2 MB for the data
    gives several chunks on the tiny market, and exactly the whole-day values."""
    for d in tiny_store.dates("trades")[:3]:
        whole = compute_day(tiny_store, d, backend="cpu")
        assert len(stock_chunks(tiny_store, d, 2e6) or []) > 1
        budget = fixed_footprint() + 2e6
        chunked = compute_day(tiny_store, d, backend="cpu", memory_budget=budget)
        assert list(chunked.symbols) == list(whole.symbols)
        np.testing.assert_array_equal(chunked.values, whole.values)  # NaN where NaN, else equal


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


def test_auto_budget_and_cli_option(tiny_store: Store, tmp_path) -> None:
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
    gb = (fixed_footprint() + 50e6) / 2**30  # the footprint + 50 MB: chunks of stocks
    assert main(["factors", "--store", str(root), "--start", d, "--end", d, "--backend", "cpu",
                 "--memory-gb", f"{gb:.4f}", "--no-progress"]) == 0
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
    """`fbgpu factors`' imports leave numba, pandas, pyarrow.compute/parquet out (they cost
    start-up), and the whole run of a day never imports pandas (pyarrow's to_numpy/pa.array
    would: the read path and the factors writer build arrays from buffers)."""
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
        " 'scipy', 'matplotlib') if m in sys.modules]\n"
        "from fbgpu.cli import main\n"
        "import os; os.environ['FBGPU_PRELOAD'] = '0'\n"
        f"rc = main(['factors', '--store', {str(root)!r}, '--start', {d!r}, '--end', {d!r},"
        " '--backend', 'cpu', '--no-progress'])\n"
        "print('EARLY', early, 'PANDAS', 'pandas' in sys.modules, 'RC', rc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=600)
    line = [x for x in out.stdout.splitlines() if x.startswith("EARLY")]
    assert line, out.stdout + out.stderr
    assert line[0] == "EARLY [] PANDAS False RC 0", line[0]
    assert Store(root).has("factors", d)
