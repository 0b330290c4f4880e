"""``fbgpu bench --quick``: the benchmark suite's smoke test (no timing is asserted).

One quick run (module fixture) into a temporary store; the checks are on structure and on
invariants that tie the reported rates to the measured times and to the store's contents.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from fbgpu.data.store import Store

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fbgpu_main(argv: list[str]) -> int:
    """``fbgpu.cli.main`` with the ``bench`` command registered (also before the lead wires it
    into fbgpu/cli/commands.py)."""
    from fbgpu.cli import bench, commands, main

    original = commands.register

    def register(a: Any) -> None:
        original(a)
        if "bench" not in {c.name for c in a.registered_commands}:
            bench.register(a)

    commands.register = register
    try:
        return main(argv)
    finally:
        commands.register = original


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("bench")
    store, out = root / "store", root / "out"
    rc = fbgpu_main(["bench", "--quick", "--backend", "cpu", "--store", str(store),
                     "--out", str(out)])
    assert rc == 0
    return store, out, json.loads((out / "bench.json").read_text())


def _positive_numbers(d: dict[str, Any], where: str, allow_zero: tuple[str, ...] = ()) -> None:
    for k, v in d.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or k in allow_zero:
            continue
        assert math.isfinite(v) and v > 0, f"{where}.{k} = {v}"


def test_every_section_is_present(quick_run: tuple[Path, Path, dict[str, Any]]) -> None:
    _, _, res = quick_run
    assert {"meta", "factors", "scaling", "gru", "osqp", "dask", "memory"} <= set(res)
    assert res["meta"]["quick"] is True and res["meta"]["repeats"] == 1
    assert res["meta"]["backends"] == ["cpu"]
    libs = res["meta"]["machine"]["libraries"]
    assert {"numpy", "numba", "pandas", "pyarrow", "torch"} <= set(libs)
    assert res["dask"] == {"skipped": "quick mode"}


def test_factor_throughput_rows(quick_run: tuple[Path, Path, dict[str, Any]]) -> None:
    store, _, res = quick_run
    fac = res["factors"]
    rows = {(r["impl"], r["family"]): r for r in fac["rows"]}
    impls = ["cpu", "pandas"]
    if (Path(__file__).resolve().parents[1] / "benchmarks" / "bench_factors.py").exists():
        impls.append("polars")  # bench_factors.py's compute_day_polars
    for impl in impls:
        for family in ("minute", "trade", "order", "all"):
            assert (impl, family) in rows, (impl, family)
    market = Store(store / "bench-markets" / "market")
    day = market.dates("trades")[0]
    trades, orders = (market.read(t, day, ["symbol"]) for t in ("trades", "orders"))
    bars = market.read("minute", day, ["symbol"])
    universe = set(bars.column("symbol").to_pylist()) | set(trades.column("symbol").to_pylist()) \
        | set(orders.column("symbol").to_pylist())
    mk = fac["market"]
    assert mk["trades"] == trades.num_rows and mk["orders"] == orders.num_rows
    assert mk["minute_bars"] == bars.num_rows and mk["stock_days"] == len(universe)
    assert fac["bandwidth_bytes_per_s"]["cpu"] > 0
    for (impl, family), r in rows.items():
        _positive_numbers(r, f"{impl}/{family}", ("ticks",))  # the minute family has none
        t = r["seconds_median"]
        assert r["seconds_min"] <= t <= r["seconds_max"]
        assert r["stock_days"] == len(universe)
        assert math.isclose(r["stock_days_per_s"] * t, len(universe), rel_tol=1e-9)
        assert math.isclose(r["s_per_full_market_day"], t / len(universe) * 5000, rel_tol=1e-9)
        assert math.isclose(r["ratio_to_floor"], t / r["floor_s"], rel_tol=1e-9)
        expected_ticks = {"minute": 0, "trade": trades.num_rows, "order": orders.num_rows,
                          "all": trades.num_rows + orders.num_rows}[family]
        assert r["ticks"] == expected_ticks
        if expected_ticks:
            assert math.isclose(r["ticks_per_s"] * t, expected_ticks, rel_tol=1e-9)
        else:
            assert r["ticks_per_s"] is None
        for base in impls[1:]:
            if impl != base:
                ratio = rows[(base, family)]["seconds_median"] / t
                assert math.isclose(r[f"speedup_vs_{base}"], ratio, rel_tol=1e-9)
    # A family reads a subset of the day's bytes; all 27 read the union (every table in full),
    # and the trade family reads all of the trades but only part of the bars.
    b, tb = mk["bytes_read"], mk["table_bytes"]
    assert b["all"] == sum(tb.values()) > max(b["minute"], b["trade"], b["order"]) > 0
    assert b["minute"] == tb["minute"] and b["order"] == tb["orders"]
    assert tb["trades"] < b["trade"] < tb["trades"] + tb["minute"]


def test_scaling_gru_osqp_memory(quick_run: tuple[Path, Path, dict[str, Any]]) -> None:
    _, _, res = quick_run
    sizes = res["meta"]["sizes"]
    sc = res["scaling"]
    assert [p["x"] for p in sc["stocks"]] == list(sizes["scaling_stocks"])
    assert [p["stock_days"] for p in sc["stocks"]] == list(sizes["scaling_stocks"])
    assert [p["x"] for p in sc["ticks"]] == list(sizes["scaling_tick_multipliers"])
    assert [p["x"] for p in sc["days"]] == list(sizes["scaling_days"])
    for curve in sc.values():
        for p in curve:
            _positive_numbers(p, "scaling")
    # More orders per stock-day give more ticks per stock-day; more days more stock-days.
    assert sc["ticks"][-1]["ticks_per_stock_day"] > 2 * sc["ticks"][0]["ticks_per_stock_day"]
    assert sc["days"][-1]["stock_days"] > sc["days"][0]["stock_days"]
    assert {r["model"] for r in res["gru"]["rows"]} == {"hf", "lf"}
    for r in res["gru"]["rows"]:
        assert r["epoch_s"] > 0 and r["fit_samples"] > 0
    assert [(r["candidates"], r["constituents"]) for r in res["osqp"]["rows"]] == [
        tuple(s) for s in sizes["osqp_sizes"]]
    for r in res["osqp"]["rows"]:
        assert r["warm_s_median"] > 0 and r["cold_s_median"] > 0
        assert set(r["statuses"]) <= {"optimal", "optimal_inaccurate"}
    for name, m in res["memory"].items():
        assert m["peak_rss_mb"] > 10, name  # an interpreter with numpy alone is ~30 MB


def test_outputs_and_report_section(quick_run: tuple[Path, Path, dict[str, Any]]) -> None:
    store, out, res = quick_run
    assert set(res["figures"]) == {"scaling_stocks.png", "scaling_ticks.png",
                                   "scaling_days.png", "throughput.png"}
    for f in res["figures"]:
        assert (out / f).read_bytes()[:8] == PNG_MAGIC
    md = (out / "bench.md").read_text()
    assert "## factor throughput" in md and "| cpu | all |" in md
    report = store / "reports" / "bench"
    index = json.loads((report / "index.json").read_text())
    files = [it["file"] for it in index["items"]]
    assert {"factor_throughput.csv", "scaling.csv", "gru.csv", "osqp.csv",
            "memory.csv"} <= set(files)
    for f in files:
        assert (report / f).stat().st_size > 0
    import pandas as pd

    table = pd.read_csv(report / "factor_throughput.csv")
    assert len(table) == len(res["factors"]["rows"])
    from fbgpu.report.html import collect_section

    section = collect_section(store / "reports", "bench", "Benchmarks")
    assert section is not None and len(section.items) == len(files)


def test_cached_market_is_reused(quick_run: tuple[Path, Path, dict[str, Any]]) -> None:
    from fbgpu.cli.bench import load_suite

    store, _, res = quick_run
    suite = load_suite()
    meta = store / "bench-markets" / "market" / "synth.json"
    before = meta.stat().st_mtime_ns
    sizes = suite.quick_sizes()
    cfg = suite._market_config(sizes.market_preset, sizes.market_overrides)
    suite.ensure_market(meta.parent, cfg, sizes.seed)
    assert meta.stat().st_mtime_ns == before  # same config and seed: not regenerated
    assert res["meta"]["market_cache"] == str(store / "bench-markets")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backend", "tpu"], "tpu"),
        (["--repeats", "0"], "repeats"),
        (["--config", "{bad}"], "n_stockz"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path: Path, argv: list[str], message: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[bench]\nn_stockz = 3\n")
    argv = [str(bad) if a == "{bad}" else a for a in argv]
    rc = fbgpu_main(["bench", "--quick", "--store", str(tmp_path / "s"), *argv])
    assert rc != 0
    err = capsys.readouterr().err
    assert message in err
    assert not (tmp_path / "s" / "bench-markets").exists()
