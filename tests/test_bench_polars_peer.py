"""The rewritten polars peer (benchmarks/bench_factors.py, session 8) computes the engine's numbers
beyond the default case that tests/test_bench_baseline.py covers: non-default factor options
(fixed-notional big orders, another top fraction and minimum count), a family subset, and
order ids far from zero (the peer packs ``(symbol, order_id)`` into one Int64 key offset by the
day's smallest id), each through the lazy (``scan_ipc``/``scan_parquet``) and the eager form."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from fbgpu.data.store import Store
from fbgpu.factors import FactorConfig, compute_day, resolve_names

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_factors import compute_day_polars, polars_factors_from_frames, polars_frames
from oracle_factors import make_market

DAY = dt.date(2024, 3, 5)


def _assert_peer_matches(store: Store, d: dt.date, names: list[str] | None = None,
                         config: FactorConfig | None = None) -> pl.DataFrame:
    engine = compute_day(store, d, names, backend="cpu", config=config)
    ours = np.asarray(engine.values)
    lazy = polars_factors_from_frames(
        {k: v.lazy() for k, v in polars_frames(store, d).items()}, names, config)
    eager = polars_factors_from_frames(polars_frames(store, d), names, config)
    for pol in (lazy, eager):
        assert pol["symbol"].to_list() == list(engine.symbols)
        assert pol.columns[1:] == resolve_names(names)
        for j, name in enumerate(pol.columns[1:]):
            a, b = ours[:, j], pol[name].to_numpy()
            np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=name)
            np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=name)
    return eager


@pytest.fixture(scope="module")
def adversarial(tmp_path_factory: pytest.TempPathFactory) -> Store:
    store = Store(tmp_path_factory.mktemp("adv_polars"))
    make_market(store, [DAY], seed=5)
    return store


def test_peer_with_non_default_options(adversarial: Store) -> None:
    for cfg in (
        FactorConfig(big_order_rule="fixed_notional", big_order_notional=20_000.0,
                     bigorder_ret_top_frac=0.5, min_obs_day=20),
        FactorConfig(big_order_k=0.5, min_obs_window=8),
    ):
        out = _assert_peer_matches(adversarial, DAY, config=cfg)
        assert np.isfinite(out.drop("symbol").to_numpy()).mean() > 0.4


def test_peer_family_subset_keeps_the_universe(adversarial: Store) -> None:
    out = _assert_peer_matches(adversarial, DAY, ["skew_order_diff", "bigorder_ret2"])
    row = out.filter(pl.col("symbol") == "600008.SH")  # minute bars only
    assert row.height == 1 and np.isnan(row.drop("symbol").to_numpy()).all()
    assert compute_day_polars(adversarial, DAY, ["skew_order_diff"]).height == out.height


def test_peer_with_order_ids_far_from_zero(adversarial: Store, tmp_path: Path) -> None:
    """Ids shifted by 7e11 (buy) and -3e11 (sell): the packed key must still keep each stock's
    orders apart (the stocks reuse the same small id numbers) and give the same factors."""
    store = Store(tmp_path)
    for table in ("minute", "trades", "orders"):
        path = adversarial.partition_path(table, DAY)
        df = pl.read_ipc(path) if path.suffix == ".arrow" else pl.read_parquet(path)
        if table == "trades":
            df = df.with_columns(pl.col("buy_order_id") + 700_000_000_000,
                                 pl.col("sell_order_id") - 300_000_000_000)
        store.write(table, DAY, df.with_columns(pl.col("symbol").cast(pl.String)).to_arrow())
    shifted = _assert_peer_matches(store, DAY)
    base = polars_factors_from_frames(polars_frames(adversarial, DAY))
    np.testing.assert_allclose(shifted.drop("symbol").to_numpy(), base.drop("symbol").to_numpy(),
                               rtol=1e-12, equal_nan=True)
