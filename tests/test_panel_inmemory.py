"""The device-resident hand-off factors -> panel: the in-memory factor cube gives the panel the
store route gives, without reading the store's factors table back."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from fbgpu.data.store import Store
from fbgpu.engine.standin import CROSSINGS, HostCrossingError, standin_backend
from fbgpu.factors import compute_factors, input_dates, run_factors
from fbgpu.panel.build import build_panel
from fbgpu.panel.market import load_market


@pytest.fixture(scope="module")
def store_with_factors(tiny_store: Store, tmp_path_factory: pytest.TempPathFactory) -> Store:
    root = tmp_path_factory.mktemp("panel_inmemory") / "store"
    shutil.copytree(tiny_store.root, root)
    store = Store(root)
    run_factors(store, backend="cpu", progress=False)
    return store


def test_cube_route_equals_store_route(store_with_factors: Store) -> None:
    store = store_with_factors
    market = load_market(store)
    cube = compute_factors(store, input_dates(store, None, None), backend="cpu")
    via_store = build_panel(store, market, backend="cpu")
    via_cube = build_panel(store, market, backend="cpu", factors=cube)
    assert via_cube.names == via_store.names and list(via_cube.symbols) == list(via_store.symbols)
    np.testing.assert_array_equal(via_cube.values, via_store.values)
    assert np.isfinite(via_store.values).sum() > 1000
    # A subset of factors, in another order, selects the same columns.
    pick = [via_store.names[5], via_store.names[0]]
    sub = build_panel(store, market, names=pick, backend="cpu", factors=cube)
    np.testing.assert_array_equal(sub.values, via_store.values[:, :, [5, 0]])


@pytest.mark.slow
def test_cube_to_panel_on_the_standin_device(store_with_factors: Store) -> None:
    """The whole factors -> panel path on the CPU stand-in device: factor cube on the device,
    aligned and preprocessed there, one explicit download at the end."""
    store = store_with_factors
    market = load_market(store)
    b = standin_backend()
    # Eleven days keep the emulated kernels quick (~3 s a day on 2 cores) and reach past the
    # smoothing window (the first panel values appear on day 10); the other calendar days are
    # NaN on both routes alike.
    dates = input_dates(store, None, None)[:11]
    before = CROSSINGS["to_host"]
    try:
        cube = compute_factors(store, dates, backend=b)
        panel = build_panel(store, market, backend=b, factors=cube)
    except HostCrossingError as e:  # pragma: no cover - a regression shows here
        pytest.fail(f"implicit host crossing on the device path: {e}")
    # Not one download, sanctioned or not, between the raw ticks and the preprocessed panel.
    assert CROSSINGS["to_host"] == before
    ref = build_panel(store, market, backend="cpu",
                      factors=compute_factors(store, dates, backend="cpu"))
    assert np.isfinite(ref.values).sum() > 50
    np.testing.assert_allclose(b.to_host(panel.values), ref.values, rtol=1e-9, atol=1e-12,
                               equal_nan=True)


def test_evaluate_from_the_kept_cube_equals_the_store_route(tiny_store: Store,
                                                             tmp_path) -> None:
    """``run_factors(keep=True)`` hands its values to ``run_evaluate(factors=...)`` in memory
    (the demo's route); the evaluation is the one the store route gives. A re-run that skips
    every date as current keeps no cube (the store then has the values)."""
    import pandas as pd

    from fbgpu.evaluate import run_evaluate

    root = tmp_path / "store"
    shutil.copytree(tiny_store.root, root)
    store = Store(root)
    summary = run_factors(store, backend="cpu", progress=False, keep=True)
    assert summary.cube is not None and summary.cube.shape[2] == 27
    via_cube = run_evaluate(store, backend="cpu", progress=False, factors=summary.cube)
    via_store = run_evaluate(store, backend="cpu", progress=False)
    pd.testing.assert_frame_equal(via_cube.summary, via_store.summary)
    pd.testing.assert_frame_equal(via_cube.composites, via_store.composites)
    again = run_factors(store, backend="cpu", progress=False, keep=True)
    assert again.dates_skipped and again.cube is None


def test_model_inputs_from_the_cube_equal_the_store_route(store_with_factors: Store) -> None:
    """The HF model's input panel (what run_train hands to torch) from the in-memory cube."""
    from fbgpu.engine.backend import get_backend
    from fbgpu.models import load_train_config
    from fbgpu.models.api import load_model_inputs

    store = store_with_factors
    cube = compute_factors(store, input_dates(store, None, None), backend="cpu")
    cfg = load_train_config({})
    be = get_backend("cpu")
    via_store = load_model_inputs(store, cfg, be, ["hf"])
    via_cube = load_model_inputs(store, cfg, be, ["hf"], factors=cube)
    assert via_cube.factor_names == via_store.factor_names
    np.testing.assert_array_equal(via_cube.hf_panel, via_store.hf_panel)
    np.testing.assert_array_equal(via_cube.label, via_store.label)
    assert np.isfinite(via_store.hf_panel).sum() > 1000
