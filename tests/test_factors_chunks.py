"""Bounded memory: a day processed in stock chunks gives exactly the whole-day values."""

from __future__ import annotations

import numpy as np

from fbgpu.data.store import Store
from fbgpu.factors.compute import compute_day, stock_chunks


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
    for d in tiny_store.dates("trades")[:3]:
        whole = compute_day(tiny_store, d, backend="cpu")
        chunked = compute_day(tiny_store, d, backend="cpu", memory_budget=1e6)
        assert list(chunked.symbols) == list(whole.symbols)
        np.testing.assert_array_equal(chunked.values, whole.values)  # NaN where NaN, else equal


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
    assert memory_budget_for("auto", cpu) > 0  # half the available host memory
    root = tmp_path / "s"
    for t in ("trades", "orders", "minute"):
        shutil.copytree(tiny_store.root / t, root / t)
    d = str(tiny_store.dates("trades")[0])
    assert main(["factors", "--store", str(root), "--start", d, "--end", d, "--backend", "cpu",
                 "--memory-gb", "0.001", "--no-progress"]) == 0
    chunked = Store(root).manifest("factors", d).sha256
    assert main(["factors", "--store", str(root), "--start", d, "--end", d, "--backend", "cpu",
                 "--memory-gb", "lots"]) != 0
    # "auto" (and any budget) leaves the stored partition exactly as the chunked run wrote it
    assert main(["factors", "--store", str(root), "--start", d, "--end", d, "--backend", "cpu",
                 "--memory-gb", "auto", "--no-progress"]) == 0
    assert Store(root).manifest("factors", d).sha256 == chunked
