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
