"""run_factors / compute_factors / FactorCube / FactorConfig / the ``fbgpu factors`` command."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import typer
from oracle_factors import make_market
from typer.testing import CliRunner

from fbgpu.cli import factors as factors_cli
from fbgpu.data.store import Store, StoreError
from fbgpu.factors import (
    FACTORS,
    FactorConfig,
    compute_factors,
    factor_names,
    resolve_names,
    run_factors,
)

DATES = [dt.date(2024, 2, 5), dt.date(2024, 2, 6)]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "store")
    make_market(s, DATES, seed=3)
    return s


def test_run_factors_writes_one_partition_per_date(store: Store) -> None:
    summary = run_factors(store, "2024-02-01", "2024-02-29", backend="cpu", progress=False)
    assert summary.dates_computed == DATES and not summary.dates_skipped
    assert store.dates("factors") == DATES
    t = store.read("factors", DATES[0])
    assert t.column_names == ["date", "symbol", *FACTORS]
    assert all(t.schema.field(n).type == pa.float64() for n in FACTORS)
    man = store.manifest("factors", DATES[0])
    assert set(man.inputs) == {f"{x}/{DATES[0]}" for x in ("minute", "trades", "orders")}
    # The stored values are the in-memory ones.
    cube = compute_factors(store, DATES[:1], backend="cpu")
    stored = t.to_pandas().set_index("symbol")[list(FACTORS)]
    np.testing.assert_array_equal(stored.to_numpy(), cube.to_numpy()[0])
    assert list(stored.index) == list(cube.symbols)
    assert "2 dates computed" in summary.line()


def test_rerun_skips_current_dates_and_recomputes_changed_ones(store: Store) -> None:
    run_factors(store, backend="cpu", progress=False)
    again = run_factors(store, backend="cpu", progress=False)
    assert again.dates_computed == [] and again.dates_skipped == DATES
    # A changed input partition: only that date is recomputed.
    t = store.read("orders", DATES[1])
    store.write("orders", DATES[1], t.slice(0, t.num_rows - 5))
    third = run_factors(store, backend="cpu", progress=False)
    assert third.dates_computed == [DATES[1]] and third.dates_skipped == [DATES[0]]
    # A changed configuration: everything is recomputed.
    fourth = run_factors(store, backend="cpu", progress=False,
                         config=FactorConfig(big_order_k=1.5))
    assert fourth.dates_computed == DATES


def test_subset_of_names_and_families(store: Store) -> None:
    names = ["kurt_order_diff", "late_skew_ret"]
    cube = compute_factors(store, DATES, names=names, backend="cpu")
    assert cube.names == ["late_skew_ret", "kurt_order_diff"]  # registry order
    full = compute_factors(store, DATES, backend="cpu")
    np.testing.assert_array_equal(cube.factor("kurt_order_diff"), full.factor("kurt_order_diff"))
    assert len(factor_names("trade")) == 8
    assert resolve_names("late_skew_ret, bigorder_ret") == ["late_skew_ret", "bigorder_ret"]
    with pytest.raises(KeyError, match="unknown factor"):
        resolve_names(["nope"])


def test_cube_pandas_layouts(store: Store) -> None:
    cube = compute_factors(store, DATES, backend="cpu")
    wide = cube.to_pandas()
    assert wide.index.names == ["date", "symbol"] and list(wide.columns) == list(FACTORS)
    assert len(wide) == int(cube.present.sum())
    long = cube.to_pandas("long")
    assert list(long.columns) == ["date", "symbol", "factor", "value"]
    assert len(long) == len(wide) * len(FACTORS)
    v = long.set_index(["date", "symbol", "factor"])["value"]
    d, s = pd.Timestamp(DATES[1]), "000002.SZ"
    assert v[(d, s, "bigorder_ret")] == wide.loc[(d, s), "bigorder_ret"]
    with pytest.raises(ValueError, match="layout"):
        cube.to_pandas("tall")


def test_bad_inputs_give_clear_errors(store: Store, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no minute/trades/orders data"):
        run_factors(store, "2030-01-01", "2030-02-01", backend="cpu", progress=False)
    with pytest.raises(ValueError, match="after end"):
        run_factors(store, "2024-03-01", "2024-02-01", backend="cpu", progress=False)
    with pytest.raises(StoreError, match="no minute, trades or orders partition"):
        compute_factors(store, ["2024-02-07"], backend="cpu")
    with pytest.raises(ValueError, match="not a date"):
        compute_factors(store, ["Feb 5"], backend="cpu")


def test_config_defaults_and_toml(tmp_path: Path) -> None:
    cfg = FactorConfig()
    assert (cfg.big_order_rule, cfg.big_order_k, cfg.min_obs_day, cfg.min_obs_window) == \
        ("mean_plus_k_std", 1.0, 10, 5)
    assert cfg.top_frac_fraction.numerator == 3 and cfg.top_frac_fraction.denominator == 10
    p = tmp_path / "c.toml"
    p.write_text('[factors]\nbig_order_rule = "fixed_notional"\nbig_order_notional = 2e6\n')
    assert FactorConfig.from_toml(p).big_order_notional == 2e6
    p.write_text("[factors]\nbig_order_kk = 2\n")
    with pytest.raises(ValueError, match="c.toml"):
        FactorConfig.from_toml(p)


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:  # a callback makes "factors" a sub-command
        pass

    factors_cli.register(app)
    return app


def _text(output: str) -> str:
    """The output with rich's box drawing and line wrapping removed (width varies by terminal)."""
    return " ".join(output.replace("│", " ").replace("╭", " ").replace("╰", " ").split())


def test_cli_factors(store: Store, tmp_path: Path) -> None:
    # a wide terminal, so that rich does not wrap or truncate the messages checked below
    runner = CliRunner(env={"COLUMNS": "400"})
    res = runner.invoke(_app(), ["factors", "--store", str(store.root), "--backend", "cpu",
                                 "--only", "bigorder_ret,early_kurt_order", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "2 dates computed" in res.output
    assert store.read("factors", DATES[0]).column_names == [
        "date", "symbol", "bigorder_ret", "early_kurt_order"]
    bad = runner.invoke(_app(), ["factors", "--store", str(store.root), "--only", "zzz"])
    assert bad.exit_code != 0 and "unknown factor" in _text(bad.output)
    missing = runner.invoke(_app(), ["factors", "--store", str(tmp_path / "none")])
    assert missing.exit_code != 0 and "does not exist" in _text(missing.output)
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[factors]\nmin_obs_day = 0\n")
    res = runner.invoke(_app(), ["factors", "--store", str(store.root), "--config", str(cfg)])
    assert res.exit_code != 0 and "min_obs_day" in _text(res.output)
