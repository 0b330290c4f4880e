"""run_factors / compute_factors / FactorCube / FactorConfig / the ``fbgpu factors`` command."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
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


def test_config_hash_fields_are_the_documented_json_values() -> None:
    """The fields that key the factors partitions, pinned: a change here would silently change
    every store's config hash (FactorConfig was a pydantic model before 2026-12-06; these are
    that model's ``model_dump(mode="json")`` values, ints given for floats stored as floats)."""
    assert FactorConfig().hash_fields() == {
        "big_order_rule": "mean_plus_k_std", "big_order_k": 1.0,
        "big_order_notional": 1000000.0, "min_obs_day": 10, "min_obs_window": 5,
        "bigorder_ret_top_frac": 0.3}
    cfg = FactorConfig(big_order_k=2, big_order_notional=5, min_obs_day=12.0, modules=["m"])
    assert [type(v) for v in cfg.hash_fields().values()] == [str, float, float, int, int, float]
    assert cfg.modules == ("m",) and cfg == FactorConfig(**cfg.to_dict())
    assert cfg.replace(big_order_k=3).big_order_k == 3.0 and hash(cfg) == hash(cfg.replace())


@pytest.mark.parametrize(("key", "value", "message"), [
    ("big_order_rule", "median", "big_order_rule must be one of"),
    ("big_order_k", -0.5, "big_order_k must be a finite number >= 0"),
    ("big_order_k", float("nan"), "big_order_k must be a finite number"),
    ("big_order_k", "1.5", "big_order_k must be a number"),
    ("big_order_notional", 0, "big_order_notional must be a finite number > 0"),
    ("big_order_notional", float("inf"), "big_order_notional must be a finite number"),
    ("min_obs_day", 0, "min_obs_day must be >= 1"),
    ("min_obs_window", 2.5, "min_obs_window must be a whole number"),
    ("min_obs_window", True, "min_obs_window must be a whole number"),
    ("bigorder_ret_top_frac", 1.5, "bigorder_ret_top_frac must be a finite number > 0 and <= 1"),
    ("bigorder_ret_top_frac", 0.0, "bigorder_ret_top_frac must be a finite number > 0"),
    ("modules", "a.py", "modules must be a list of strings"),
])
def test_config_refuses_bad_values_naming_key_and_file(tmp_path: Path, key: str, value: object,
                                                       message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FactorConfig(**{key: value})
    with pytest.raises(ValueError, match=message):
        FactorConfig().replace(**{key: value})
    if isinstance(value, float) and not math.isfinite(value):
        return  # TOML writes nan/inf too, but the constructor case says it all
    p = tmp_path / "bad.toml"
    p.write_text(f"[factors]\n{key} = {json.dumps(value)}\n")
    with pytest.raises(ValueError, match=rf"bad\.toml: invalid \[factors\] configuration: "
                       rf"{re.escape(message)}"):
        FactorConfig.from_toml(p)
    with pytest.raises(ValueError, match=r"unknown keys \['big_order_kk'\]"):
        FactorConfig.from_mapping({"big_order_kk": 1})


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
