"""Shared test fixtures. Numba caches compiled kernels, so repeated runs stay fast."""

from __future__ import annotations

import os

import pytest

from fbgpu.data.store import Store

os.environ.setdefault("FBGPU_PROGRESS", "0")


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """The ``tiny`` synthetic market (seed 0), generated once per test session.

    Read-only by convention: tests that write derived tables should use their own store (e.g.
    ``Store(tmp_path)``) and read inputs from this one. Contents: docs/synth.md.
    """
    from fbgpu.data.synth import generate_market

    root = tmp_path_factory.mktemp("tiny_market")
    store = Store(root)
    generate_market(store, "tiny", seed=0, progress=False)
    return store


@pytest.fixture
def steady_rss(monkeypatch: pytest.MonkeyPatch) -> float:
    """The process's resident set pinned at 200 MiB for the memory-budget planner
    (``fbgpu.factors.compute.resident_bytes``), so that a test's budget of "the footprint plus
    N bytes" leaves exactly N bytes for the data however the test process's RSS drifts between
    days (the CPU's per-row figures make a tiny market's day need well under a megabyte, less
    than that drift). Returns the pinned bytes."""
    from fbgpu.factors import compute

    pinned = 200 * 2**20
    monkeypatch.setattr(compute, "resident_bytes", lambda: pinned)
    return float(pinned)


@pytest.fixture
def host_need():
    """``host_need(store, date)``: the CPU engine's planned working bytes of a day, i.e. each
    source's rows x ``HOST_WORKING_BYTES_PER_ROW`` (what ``stock_chunks`` fills chunks with on
    the CPU), for tests that size a budget to a fraction of a day."""
    from fbgpu.factors.compute import HOST_WORKING_BYTES_PER_ROW

    def need(store: Store, date) -> float:
        return float(sum(float(store.symbol_counts(t, date)[1].sum())
                         * HOST_WORKING_BYTES_PER_ROW[t] for t in ("minute", "trades", "orders")
                         if store.has(t, date)))

    return need
