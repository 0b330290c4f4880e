"""User factors (docs/user-factors.md): loading, validation, storage, incremental recompute,
the check command, downstream use, Dask shipping. Oracles: pandas on the raw store tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fbgpu.data.store import Store
from fbgpu.factors import (
    FACTORS,
    FactorComputeError,
    FactorConfig,
    UserModuleError,
    builtin_names,
    load_day,
    load_modules,
    run_factors,
    unload,
)
from fbgpu.factors.check import check_market, check_modules
from fbgpu.factors.compute import compute_loaded_day, stored_user_factors

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples" / "user_factors.py"
EXAMPLE_NAMES = ["minute_amihud", "minute_up_volume_share", "active_sell_amt_perc",
                 "trade_size_skew", "order_buy_volume_share", "early_order_size_cv",
                 "cancel_volume_ratio", "buy_cancel_imbalance"]


@pytest.fixture(autouse=True)
def _clean_registry():
    """Every test starts and ends with only the built-ins registered."""
    unload()
    yield
    unload()
    assert len(FACTORS) == 27


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    """A 16-stock, 3-day synthetic market (inputs only; tests copy it before writing)."""
    root = tmp_path_factory.mktemp("ufmarket")
    check_market(str(root), n_days=3)
    return root


@pytest.fixture
def store(market: Path, tmp_path: Path) -> Store:
    import shutil

    dst = tmp_path / "store"
    shutil.copytree(market, dst)
    return Store(dst)


def _module(tmp_path: Path, name: str, body: str) -> Path:
    p = tmp_path / f"{name}.py"
    p.write_text("from fbgpu.factors.api import *  # noqa\nimport fbgpu\n" + textwrap.dedent(body))
    return p


def _factors_frame(store: Store) -> pd.DataFrame:
    parts = [store.read("factors", d).to_pandas() for d in store.dates("factors")]
    return pd.concat(parts).set_index(["date", "symbol"]).sort_index()


def _plain(store: Store, table: str) -> pd.DataFrame:
    df = pd.concat([store.read(table, d).to_pandas() for d in store.dates(table)])
    df["symbol"] = df["symbol"].astype(str)
    return df


# ------------------------------------------------------------------------------ storage, oracle
def test_example_factors_are_stored_and_match_a_pandas_oracle(store: Store) -> None:
    cfg = FactorConfig(modules=(str(EXAMPLES),))
    summary = run_factors(store, config=cfg, progress=False)
    assert summary.factors == 27 + 8
    got = _factors_frame(store)
    assert list(got.columns) == [*builtin_names(), *EXAMPLE_NAMES]

    trades = _plain(store, "trades")
    sell = trades[trades.side == -1].groupby(["date", "symbol"]).amount.sum()
    total = trades.groupby(["date", "symbol"]).amount.sum()
    want = (sell.reindex(total.index, fill_value=0.0) / total).rename("want")
    want.index = want.index.set_levels(pd.to_datetime(want.index.levels[0]).date, level=0)
    j = got.join(want, how="inner")
    assert len(j) == len(total)
    np.testing.assert_allclose(j.active_sell_amt_perc, j.want, rtol=1e-12)

    orders = _plain(store, "orders")
    cancels = _plain(store, "cancels")
    t = orders.ts
    sess = orders[(t >= 9 * 3600e9 + 15 * 60e9) & (t <= 15 * 3600e9)]
    placed = sess.groupby(["date", "symbol"]).volume.sum().astype(float)
    cancelled = cancels.groupby(["date", "symbol"]).volume.sum().astype(float)
    keys = orders.groupby(["date", "symbol"]).size().index
    want = (cancelled.reindex(keys, fill_value=0.0) / placed.reindex(keys)).rename("want")
    want.index = want.index.set_levels(pd.to_datetime(want.index.levels[0]).date, level=0)
    j = got.join(want, how="inner").dropna(subset=["want"])
    assert len(j) > 20
    np.testing.assert_allclose(j.cancel_volume_ratio, j.want, rtol=1e-12)

    meta = stored_user_factors(store)
    assert set(meta) == set(EXAMPLE_NAMES)
    assert meta["cancel_volume_ratio"]["direction"] == -1
    assert meta["cancel_volume_ratio"]["family"] == "order"
    assert "Cancelled volume" in meta["cancel_volume_ratio"]["formula"]
    # Built-in values do not depend on which user factors ride along.
    unload()
    plain = Store(store.root.parent / "plain")
    import shutil

    shutil.copytree(store.root, plain.root, ignore=shutil.ignore_patterns("factors"))
    run_factors(plain, progress=False)
    base = _factors_frame(plain)
    pd.testing.assert_frame_equal(base, got[base.columns])


# ------------------------------------------------------------------------------ validation
BAD_MODULES = {
    "clash_builtin": ('@fbgpu.factor("volume_perc2", "minute", 1)\n'
                      'def f(ctx):\n    """x"""\n    return ctx.volume[:, 0]\n',
                      "clashes with a built-in factor"),
    "unknown_family": ('@fbgpu.factor("mine", "level2", 1)\n'
                       'def f(ctx):\n    """x"""\n    return 0\n', "unknown family 'level2'"),
    "no_docstring": ('@fbgpu.factor("mine", "minute", 1)\n'
                     'def f(ctx):\n    return ctx.volume[:, 0]\n', "needs its formula"),
    "bad_direction": ('@fbgpu.factor("mine", "minute", 0)\n'
                      'def f(ctx):\n    """x"""\n    return 0\n', "direction must be +1 or -1"),
    "nothing": ("X = 1\n", "registers no factor"),
    "syntax": ("def f(:\n", "SyntaxError"),
    "import_raises": ("raise RuntimeError('boom at import')\n", "boom at import"),
}


@pytest.mark.parametrize("kind", sorted(BAD_MODULES))
def test_bad_modules_are_refused_with_a_clear_error(tmp_path: Path, kind: str) -> None:
    body, message = BAD_MODULES[kind]
    p = _module(tmp_path, kind, body)
    before = dict(FACTORS)
    with pytest.raises(UserModuleError) as e:
        load_modules([str(p)])
    assert message in str(e.value)
    assert str(p.resolve()) in str(e.value) or p.name in str(e.value)
    assert before == FACTORS  # nothing half-registered


def test_a_name_clash_between_two_modules_names_both(tmp_path: Path) -> None:
    body = ('@fbgpu.factor("same", "minute", 1)\n'
            'def f(ctx):\n    """x"""\n    return ctx.volume[:, 0]\n')
    a, b = _module(tmp_path, "a", body), _module(tmp_path, "b", body)
    load_modules([str(a)])
    with pytest.raises(UserModuleError, match="clashes with a factor of"):
        load_modules([str(b)])


@pytest.mark.parametrize("ret, message", [
    ("ctx.volume", "shape (16, 240)"),  # [S, 240] instead of [S]
    ("(ctx.volume[:, 0] > 0)", "dtype bool"),
    ("float(ctx.volume.sum())", "returned builtins.float"),
])
def test_wrong_outputs_are_refused(market: Path, tmp_path: Path, ret: str, message: str) -> None:
    p = _module(tmp_path, "badout", f'@fbgpu.factor("badout", "minute", 1)\n'
                f'def f(ctx):\n    """x"""\n    return {ret}\n')
    load_modules([str(p)])
    day = load_day(Store(market), Store(market).dates("minute")[0], ["badout"])
    with pytest.raises(FactorComputeError, match="badout") as e:
        compute_loaded_day(day, ["badout"])
    assert message.replace("16", str(len(day.universe))) in str(e.value)


def test_an_exception_names_the_factor_module_stock_and_date(market: Path,
                                                             tmp_path: Path) -> None:
    st = Store(market)
    d = st.dates("trades")[0]
    day = load_day(st, d)
    tr = day.trades
    sums = np.add.reduceat(tr["price"], tr.offsets[:-1])
    order = np.argsort(sums)
    culprit = str(tr.symbols[order[-1]])
    cut = (sums[order[-1]] + sums[order[-2]]) / 2
    p = _module(tmp_path, "raiser", f'''
        @fbgpu.factor("raiser", "trade", 1)
        def f(ctx):
            """Fails for the stock with the largest sum of prices."""
            s = ctx.ops.sum(ctx.offsets, ctx.col("price"))[1]
            if (s > {float(cut)!r}).any():
                raise ValueError("price sum too large")
            return s
        ''')
    load_modules([str(p)])
    day = load_day(st, d, ["raiser"])
    with pytest.raises(FactorComputeError) as e:
        compute_loaded_day(day, ["raiser"])
    msg = str(e.value)
    assert "'raiser'" in msg and "raiser" in msg.split("user module")[1]
    assert f"{culprit} on {d}" in msg and "price sum too large" in msg


# ------------------------------------------------------------------------------ incremental
def test_a_changed_module_recomputes_only_its_own_columns(store: Store, tmp_path: Path,
                                                          monkeypatch) -> None:
    import fbgpu.factors.compute as compute

    a = _module(tmp_path, "mod_a", '''
        @fbgpu.factor("ua", "minute", 1)
        def ua(ctx):
            """Day volume."""
            return ctx.row_sum(ctx.volume)
        ''')
    b = _module(tmp_path, "mod_b", '''
        @fbgpu.factor("ub", "order", 1)
        def ub(ctx):
            """Order count."""
            return ctx.ops.sum(ctx.offsets, ctx.volume)[0].astype(ctx.xp.float64)
        ''')
    cfg = FactorConfig(modules=(str(a), str(b)))
    run_factors(store, config=cfg, progress=False)
    before = _factors_frame(store)

    asked: list[list[str]] = []
    real = compute.compute_day

    def spy(store_, d, names, *args, **kw):
        asked.append(list(names))
        return real(store_, d, names, *args, **kw)

    monkeypatch.setattr(compute, "compute_day", spy)
    s = run_factors(store, config=cfg, progress=False)  # nothing changed: all skipped
    assert asked == [] and len(s.dates_skipped) == 3

    a.write_text(a.read_text().replace("return ctx.row_sum(ctx.volume)",
                                       "return 2.0 * ctx.row_sum(ctx.volume)"))
    unload()
    run_factors(store, config=cfg, progress=False)
    assert asked == [["ua"]] * 3
    after = _factors_frame(store)
    np.testing.assert_array_equal(after["ua"], 2.0 * before["ua"])
    keep = [c for c in before.columns if c != "ua"]
    pd.testing.assert_frame_equal(after[keep], before[keep])


# ------------------------------------------------------------------------------ downstream
def test_evaluation_knows_a_user_factor_direction_without_its_module(store: Store) -> None:
    from fbgpu.evaluate.run import resolve_directions

    run_factors(store, config=FactorConfig(modules=(str(EXAMPLES),)), progress=False)
    unload()
    dirs = resolve_directions(["cancel_volume_ratio", "minute_amihud", "volume_perc2"],
                              store=store)
    assert dirs == {"cancel_volume_ratio": -1, "minute_amihud": 1,
                    "volume_perc2": FACTORS["volume_perc2"].direction}


def test_train_config_hf_factors() -> None:
    from fbgpu.models import TrainConfig

    assert TrainConfig().hf_factors == "all"
    assert TrainConfig(hf_factors=["volume_perc2", "mine"]).hf_factors == ("volume_perc2", "mine")
    for bad in ("some", []):
        with pytest.raises(ValueError, match="hf_factors"):
            TrainConfig(hf_factors=bad)


def test_dask_workers_get_the_module_source(store: Store, tmp_path: Path) -> None:
    pytest.importorskip("dask.distributed")
    from fbgpu.distributed import run_factors_distributed

    p = _module(tmp_path, "shipped", '''
        @fbgpu.factor("shipped", "minute", 1)
        def shipped(ctx):
            """Day volume."""
            return ctx.row_sum(ctx.volume)
        ''')
    cfg = FactorConfig(modules=(str(p),))
    s = run_factors_distributed(store, config=cfg, cluster="local", n_workers=1)
    assert len(s.dates_computed) == 3
    p.unlink()  # the worker had the source, not the file; the values are the day volumes
    got = _factors_frame(store)["shipped"]
    minute = _plain(store, "minute").groupby(["date", "symbol"]).volume.sum()
    minute.index = minute.index.set_levels(pd.to_datetime(minute.index.levels[0]).date,
                                           level=0)
    j = got.to_frame().join(minute.rename("want"), how="inner")
    assert len(j) == len(got)
    np.testing.assert_array_equal(j["shipped"], j["want"].astype(float))


# ------------------------------------------------------------------------------ check + CLI
def _fbgpu(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "FBGPU_PROGRESS": "0"}
    return subprocess.run([sys.executable, "-m", "fbgpu", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=600)


def test_check_passes_the_eight_examples_and_fails_bad_factors(market: Path,
                                                               tmp_path: Path) -> None:
    report = check_modules([str(EXAMPLES)], store=Store(market))
    assert [r.name for r in report.rows] == EXAMPLE_NAMES
    assert report.passed, report.table()
    assert all(r.parity.startswith("simulator") for r in report.rows)

    unload()
    bad = _module(tmp_path, "badcheck", '''
        import numpy as np
        _seen = []

        @fbgpu.factor("host_trip", "minute", 1)
        def host_trip(ctx):
            """Moves to the host (numpy on a device array)."""
            v = ctx.row_sum(ctx.volume)
            return ctx.xp.asarray(np.asarray(v.tolist()))

        @fbgpu.factor("stateful", "minute", 1)
        def stateful(ctx):
            """Carries the previous day's volume (state across days)."""
            v = ctx.row_sum(ctx.volume)
            out = v + (_seen[-1][: v.shape[0]].sum() if _seen else 0.0)
            _seen.append(v)
            return out

        @fbgpu.factor("cross_section", "minute", 1)
        def cross_section(ctx):
            """Volume divided by the cross-sectional mean (depends on other stocks)."""
            v = ctx.row_sum(ctx.volume)
            return v / v.mean()

        @fbgpu.factor("infinite", "minute", 1)
        def infinite(ctx):
            """1 / number of traded minutes after the first (inf on a one-minute stock)."""
            with quiet(ctx.xp):
                return 1.0 / (ctx.row_sum(ctx.volume > 0) - 1.0)
        ''')
    report = check_modules([str(bad)], store=Store(market))
    fails = {r.name: " | ".join(r.failures) for r in report.rows}
    assert not report.passed
    assert "host round trip" in fails["host_trip"]
    assert "look-ahead" in fails["stateful"] or "reverse order" in fails["stateful"]
    assert "other stocks" in fails["cross_section"]
    assert "inf on a one-tick stock" in fails["infinite"]


def test_check_reports_an_implicit_upload_with_the_factor_and_its_call(
        market: Path, tmp_path: Path) -> None:
    """A factor that hands ``ctx.xp.asarray`` a numpy array uploads host data behind the
    engine's back: the check fails it at parity with a finding that names the factor, the
    call (file, line, source) and what to use instead, not a traceback or a "round trip".
    The same factor uploading through ``to_device`` (the explicit crossing) or building the
    array with ``ctx.xp`` passes, with the same values on the CPU."""
    mod = _module(tmp_path, "uploads", '''
        import numpy as np

        def _ramp(xp):
            return xp.asarray(np.linspace(0.0, 1.0, 240))

        @fbgpu.factor("ramp_volume_host", "minute", 1)
        def ramp_volume_host(ctx):
            """Volume weighted by a minute ramp made on the host (a hidden upload)."""
            return ctx.row_sum(ctx.volume * _ramp(ctx.xp))

        @fbgpu.factor("ramp_volume_explicit", "minute", 1)
        def ramp_volume_explicit(ctx):
            """The same ramp uploaded explicitly."""
            return ctx.row_sum(ctx.volume * to_device(ctx.xp, np.linspace(0.0, 1.0, 240)))

        @fbgpu.factor("ramp_volume_xp", "minute", 1)
        def ramp_volume_xp(ctx):
            """The same ramp built on the device."""
            return ctx.row_sum(ctx.volume * ctx.xp.linspace(0.0, 1.0, 240))
        ''')
    report = check_modules([str(mod)], n_days=2, store=Store(market))
    rows = {r.name: r for r in report.rows}
    bad = rows["ramp_volume_host"]
    assert not bad.passed and bad.parity == "simulator: implicit upload", bad.parity
    (finding,) = bad.failures
    line = mod.read_text().splitlines().index(
        "    return xp.asarray(np.linspace(0.0, 1.0, 240))") + 1
    assert finding.startswith("simulator: implicit host->device upload in factor "
                              "ramp_volume_host: "), finding
    assert f"{mod}:{line} `return xp.asarray(np.linspace(0.0, 1.0, 240))`" in finding
    assert "ctx.xp" in finding and "to_device(ctx.xp, a)" in finding
    assert "Traceback" not in report.table() and "round trip" not in finding
    for n in ("ramp_volume_explicit", "ramp_volume_xp"):
        assert rows[n].passed, (n, rows[n].failures)
        assert rows[n].parity.startswith("simulator ") and ":" not in rows[n].parity  # ran
    day = load_day(Store(market), Store(market).dates("minute")[0], list(rows))
    v = compute_loaded_day(day, list(rows)).values  # the CPU: no guard, one value per column
    assert np.array_equal(v[:, 0], v[:, 1], equal_nan=True)
    assert np.array_equal(v[:, 0], v[:, 2], equal_nan=True)


def test_cli_factors_with_a_module_and_check_exit_codes(market: Path, tmp_path: Path) -> None:
    import shutil

    st = tmp_path / "store"
    shutil.copytree(market, st)
    r = _fbgpu("factors", "--store", str(st), "--backend", "cpu", "--no-progress",
               "--factors-module", str(EXAMPLES))
    assert r.returncode == 0, r.stderr
    man = json.loads((st / "factors").glob("*/_manifest.json").__next__().read_text()) \
        if list((st / "factors").glob("*/_manifest.json")) else None
    meta = stored_user_factors(Store(st))
    assert set(meta) == set(EXAMPLE_NAMES), man

    bad = _module(tmp_path, "clash", '@fbgpu.factor("volume_perc2", "minute", 1)\n'
                  'def f(ctx):\n    """x"""\n    return ctx.volume[:, 0]\n')
    before = sorted(p.stat().st_mtime_ns for p in (st / "factors").rglob("*"))
    r = _fbgpu("factors", "--store", str(st), "--backend", "cpu", "--no-progress",
               "--factors-module", str(bad))
    assert r.returncode == 1, r.stdout + r.stderr  # a bad module is a usage/config error
    assert "clash.py" in r.stderr and "clashes with a built-in" in r.stderr
    assert sorted(p.stat().st_mtime_ns for p in (st / "factors").rglob("*")) == before

    r = _fbgpu("factors", "check", str(EXAMPLES), "--days", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("PASS") == 8

    raiser = _module(tmp_path, "raiser", '@fbgpu.factor("always_raises", "order", 1)\n'
                     'def f(ctx):\n    """x"""\n    raise ZeroDivisionError("nope")\n')
    r = _fbgpu("factors", "check", str(raiser), "--days", "2")
    assert r.returncode == 2
    assert "FAIL always_raises" in r.stdout and "ZeroDivisionError" in r.stdout


def test_user_factors_chunked_and_on_the_gpu_code_path_match(store: Store,
                                                              steady_rss: float,
                                                              host_need) -> None:
    """Stock chunks under a memory budget, and the GPU code path on the CPU stand-in device
    (implicit host crossings raise), give the whole-day CPU values of the eight examples."""
    from fbgpu.engine.standin import standin_backend
    from fbgpu.factors import compute_factors

    cfg = FactorConfig(modules=(str(EXAMPLES),))
    dates = store.dates("trades")
    cube = compute_factors(store, dates, EXAMPLE_NAMES, backend="cpu", config=cfg)
    whole = cube.to_numpy()
    from fbgpu.factors.compute import (
        HOST_WORKING_BYTES_PER_ROW,
        compute_day,
        fixed_footprint,
        stock_chunks,
    )

    # a few stocks per chunk on this market: a quarter of the first day's planned CPU bytes
    budget = min(host_need(store, d) for d in dates) / 4
    assert len(stock_chunks(store, dates[0], budget, per_row=HOST_WORKING_BYTES_PER_ROW)
               or []) >= 3
    for i, d in enumerate(dates):  # the budget counts the process's footprint, measured now
        day = compute_day(store, d, EXAMPLE_NAMES, "cpu", cfg,
                          memory_budget=fixed_footprint(user_factors=True) + budget)
        np.testing.assert_array_equal(day.values,
                                      whole[i, np.searchsorted(cube.symbols, day.symbols)])
    gpu = compute_factors(store, dates, EXAMPLE_NAMES, backend=standin_backend(), config=cfg)
    np.testing.assert_allclose(gpu.to_numpy(), whole, rtol=1e-12, atol=0)


def test_factor_catalog_lists_builtins_then_stored_user_factors(store: Store) -> None:
    from fbgpu.factors.compute import factor_catalog

    run_factors(store, config=FactorConfig(modules=(str(EXAMPLES),)), progress=False)
    unload()  # a later process: the catalog comes from the manifests
    cat = factor_catalog(store)
    assert [c["name"] for c in cat] == [*builtin_names(), *EXAMPLE_NAMES]
    assert all(c["formula"] for c in cat)
    assert [c["user"] for c in cat].count(True) == 8
    assert cat[-1]["module"] == str(EXAMPLES.resolve())


def test_report_lists_user_factors_with_their_formulas(store: Store) -> None:
    from fbgpu.report import build_report

    run_factors(store, config=FactorConfig(modules=(str(EXAMPLES),)), progress=False)
    unload()
    html = build_report(store).read_text()
    assert 'id="factors"' in html
    for n in EXAMPLE_NAMES:
        assert n in html
    assert "Cancelled volume over new-order volume" in html
    cat = pd.read_csv(store.report_dir / "factor_catalog.csv")
    assert cat["user"].sum() == 8 and len(cat) == 35
