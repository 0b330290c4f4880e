"""Start-up of a CPU factor run (issue #16): numba's BLAS probe is satisfied without importing
``scipy.linalg`` and without changing what numba sees, progress bars cost nothing when off, and
``benchmarks/bench_startup.py`` accounts for a whole process phase by phase."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fbgpu.data.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_startup import PHASES, main
from oracle_factors import make_market

PROBE = """
import os, sys
import numpy as np
from fbgpu.engine import cpu_kernels as k
off = np.array([0, 3, 5], dtype=np.int64)
n, s = np.empty(2, dtype=np.int64), np.empty(2)
k.seg_sum(off, np.arange(5.0), np.ones(1, dtype=bool), False, n, s)
assert n.tolist() == [3, 2] and s.tolist() == [3.0, 7.0]
import numba.np.arraymath as am
print("LINALG", "scipy.linalg" in sys.modules, "HAVE_BLAS", am._HAVE_BLAS)
"""


def _run(code: str, **env: str) -> str:
    import os

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=600, env={**os.environ, **env})
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_numba_blas_probe_without_scipy_linalg() -> None:
    """The first kernel call leaves scipy.linalg unimported while numba still finds BLAS
    (``_HAVE_BLAS``); with ``FBGPU_BLAS_PROBE=0`` numba's own probe imports scipy.linalg."""
    assert "LINALG False HAVE_BLAS True" in _run(PROBE)
    assert "LINALG True HAVE_BLAS True" in _run(PROBE, FBGPU_BLAS_PROBE="0")


def test_blas_probe_module_is_scipys_own_and_blas_still_works() -> None:
    """The pre-loaded module is the one a later ``import scipy.linalg`` uses, scipy.linalg
    works, and jitted ``np.dot`` (numba's BLAS path through that module) gives numpy's bits."""
    code = PROBE + """
from fbgpu.engine.cpu_kernels import BLAS_PROBE_MODULE
pre = sys.modules[BLAS_PROBE_MODULE]
import numba
@numba.njit
def dot(a, b):
    return np.dot(a, b)
rng = np.random.default_rng(0)
a, b = rng.random((37, 23)), rng.random((23, 11))
assert np.array_equal(dot(a, b), a @ b)
import scipy.linalg
import scipy.linalg.cython_blas as cb
assert cb is pre and scipy.linalg.cython_blas is pre and scipy.linalg.blas.dgemm is not None
x = scipy.linalg.solve(np.array([[2.0, 1.0], [1.0, 3.0]]), np.array([3.0, 5.0]))
assert np.allclose(x, [0.8, 1.4])
print("OK")
"""
    assert "OK" in _run(code)


def test_track_without_a_bar_imports_no_rich_progress() -> None:
    """With bars off (not a terminal), ``track`` is a plain iteration of every item, in order,
    and ``rich.progress`` is not imported; with ``FBGPU_PROGRESS=1`` the bar is made."""
    code = ("import sys\nfrom fbgpu.progress import track\n"
            "print(list(track(iter(range(5)), 'x')), 'rich.progress' in sys.modules)\n")
    assert "[0, 1, 2, 3, 4] False" in _run(code, FBGPU_PROGRESS="0")
    assert "[0, 1, 2, 3, 4] True" in _run(code, FBGPU_PROGRESS="1")


def test_without_a_bar_a_long_step_logs_plain_progress_lines() -> None:
    """Not on a terminal, ``track`` logs ``description: k/total done`` at most every
    ``FBGPU_PROGRESS_LOG_S`` seconds (here: every item), and nothing when the step is short."""
    code = ("import logging, sys, time\nfrom fbgpu.progress import track\n"
            "logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='%(message)s')\n"
            "for _ in track(range(3), 'steps'): time.sleep(0.02)\n")
    out = _run(code, FBGPU_PROGRESS="0", FBGPU_PROGRESS_LOG_S="0.01")
    assert "steps: 1/3 done" in out and "steps: 3/3 done" in out
    assert "steps:" not in _run(code, FBGPU_PROGRESS="0")  # 30 s default: a short step is quiet


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Store:
    store = Store(tmp_path_factory.mktemp("startup") / "s")
    make_market(store, [dt.date(2024, 3, 4)], seed=5)
    return store


def test_bench_startup_accounts_for_the_whole_process(market: Store, tmp_path: Path) -> None:
    """One instrumented run per variant: the phases tile the process (their wall and CPU
    seconds add up to the parent's totals), the compute split adds up to the compute phase,
    the day was really computed, and the variants' environments reached the child. The
    numba-JIT variants (``FBGPU_AOT=0``) load kernels through numba's dispatcher; the default
    run uses the ahead-of-time kernels and never imports numba."""
    from fbgpu.engine import cpu_aot

    out = tmp_path / "startup.json"
    res = main(["--store", str(market.root), "--repeats", "1", "--out", str(out),
                "--variant", "on:FBGPU_BLAS_PROBE=1,FBGPU_AOT=0",
                "--variant", "off:FBGPU_BLAS_PROBE=0,FBGPU_AOT=0", "--variant", "aot"])
    on_disk = json.loads(out.read_text())
    assert on_disk["summary"].keys() == {"on", "off", "aot"} == res["runs"].keys()
    assert on_disk["variants"] == {"on": {"FBGPU_BLAS_PROBE": "1", "FBGPU_AOT": "0"},
                                   "off": {"FBGPU_BLAS_PROBE": "0", "FBGPU_AOT": "0"},
                                   "aot": {}}
    aot_built = cpu_aot.kernels() is not None
    for name, runs in on_disk["runs"].items():
        (r,) = runs
        ph = r["phases"]
        assert list(ph) == list(PHASES)
        for k in ("wall_s", "cpu_s", "user_s", "sys_s"):
            assert sum(p[k] for p in ph.values()) == pytest.approx(r["total"][k], abs=1e-6)
        assert all(p["wall_s"] >= 0 for p in ph.values())
        assert r["total"]["wall_s"] > ph["compute"]["wall_s"] > 0
        split = r["compute_split"]
        assert (split["numba_context_s"] + split["kernel_load_s"]
                + split["kernel_run_and_rest_s"]) == pytest.approx(ph["compute"]["wall_s"])
        if name == "aot" and aot_built:
            assert r["kernels"] == [] and r["numba_imported"] is False
            assert split["numba_context_s"] == 0
            continue
        assert r["kernels"] and all(k["wall_s"] > 0 for k in r["kernels"])
        assert r["numba_imported"] is True
        assert r["scipy_linalg_imported"] is (name == "off")
        assert r["write"] is not None and r["write"]["wall_s"] > 0
    assert market.has("factors", dt.date(2024, 3, 4))
    assert on_disk["importtime_self_s_by_package"]["fbgpu"] > 0


def test_symbol_column_is_what_dictionary_encode_gives() -> None:
    """The factors writer's symbol column: the stores' dictionary type with the same indices
    and dictionary as ``pc.dictionary_encode`` of the distinct symbols; a repeat is refused."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from fbgpu.data.schemas import SYMBOL
    from fbgpu.data.store import string_column, symbol_column

    syms = ["000001.SZ", "000002.SZ", "300750.SZ", "600000.SH"]
    got = symbol_column(syms)
    want = pc.dictionary_encode(pa.array(syms)).cast(SYMBOL)
    assert got.type == SYMBOL and got.equals(want)
    assert symbol_column([]).equals(pc.dictionary_encode(string_column([])).cast(SYMBOL))
    with pytest.raises(ValueError, match="distinct"):
        symbol_column(["a", "b", "a"])


def test_a_factor_run_leaves_scipy_linalg_pyarrow_compute_and_rich_progress_out(
        tiny_store: Store, tmp_path: Path) -> None:
    """A whole CPU factor run (CLI, read, compute, the partition written) imports none of
    scipy.linalg (numba's BLAS probe), pyarrow.compute (the writer casts nothing) and
    rich.progress (no terminal), and writes the same values as the library call."""
    import shutil

    import numpy as np

    from fbgpu.factors import compute_factors

    root = tmp_path / "s"
    for t in ("trades", "orders", "minute"):
        shutil.copytree(tiny_store.root / t, root / t)
    day = tiny_store.dates("trades")[0]
    d = day.isoformat()
    code = ("import sys\nfrom fbgpu.cli import main\n"
            f"rc = main(['factors', '--store', {str(root)!r}, '--start', {d!r}, '--end', {d!r},"
            " '--backend', 'cpu'])\n"
            "print('LEFT OUT', [m for m in ('scipy.linalg', 'pyarrow.compute', 'rich',"
            " 'rich.progress', 'pandas') if m in sys.modules], 'RC', rc)\n")
    assert "LEFT OUT [] RC 0" in _run(code, FBGPU_PRELOAD="0")
    stored = Store(root).read("factors", day)
    cube = compute_factors(tiny_store, [d], backend="cpu")
    names = [c for c in stored.column_names if c not in ("date", "symbol")]
    assert names == cube.names
    assert stored.column("symbol").to_pylist() == list(cube.symbols)
    for j, n in enumerate(names):
        np.testing.assert_array_equal(stored.column(n).to_numpy(), cube.values[0, :, j])


def test_factors_partition_bytes_do_not_depend_on_the_skipped_sort(tmp_path: Path,
                                                                   monkeypatch) -> None:
    """Store.write skips the sort (and pyarrow.compute) when the rows are already in symbol
    order, and checks the date from the buffers: the partition's bytes are those of the sorted
    path, and rows given out of order are still sorted into the same bytes."""
    import numpy as np
    import pyarrow as pa

    from fbgpu.data import store as store_mod
    from fbgpu.data.store import StoreError, date_column, float64_column, symbol_column

    d = dt.date(2024, 3, 4)
    syms = ["000001.SZ", "000002.SZ", "300750.SZ", "600000.SH", "688981.SH"]
    vals = np.random.default_rng(1).random((len(syms), 2))
    vals[2, 1] = np.nan

    def table(order: list[int]) -> pa.Table:
        s = [syms[i] for i in order]
        return pa.Table.from_arrays([date_column(d, len(s)), symbol_column(s),
                                     float64_column(vals[order, 0]),
                                     float64_column(vals[order, 1])],
                                    names=["date", "symbol", "a", "b"])

    def written(name: str, t: pa.Table) -> bytes:
        st = Store(tmp_path / name)
        st.write("factors", d, t)
        return st.partition_path("factors", d).read_bytes()

    fast = written("fast", table([0, 1, 2, 3, 4]))
    shuffled = Store(tmp_path / "shuffled")
    shuffled.write("factors", d, table([3, 0, 4, 2, 1]))
    monkeypatch.setattr(store_mod, "_sorted_by_symbol", lambda *a: False)
    sorted_path = written("sorted", table([0, 1, 2, 3, 4]))
    assert fast == sorted_path
    back = shuffled.read("factors", d)  # sorted on write (its dictionary keeps its order)
    assert back.column("symbol").to_pylist() == syms
    np.testing.assert_array_equal(back.column("b").to_numpy(), vals[:, 1])
    other = pa.Table.from_arrays([date_column(dt.date(2024, 3, 5), 5), symbol_column(syms),
                                  float64_column(vals[:, 0]), float64_column(vals[:, 1])],
                                 names=["date", "symbol", "a", "b"])
    with pytest.raises(StoreError, match="rows carry dates"):
        Store(tmp_path / "bad").write("factors", d, other)


def test_timed_children_run_with_a_bytecode_cache(monkeypatch) -> None:
    """The benchmarks' children import cached bytecode, as an installed package does, even
    where PYTHONDONTWRITEBYTECODE is set; extra variables are added."""
    from bench_process import PYCACHE, child_env

    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    env = child_env({"FBGPU_PRELOAD": "0"})
    assert "PYTHONDONTWRITEBYTECODE" not in env
    assert env["PYTHONPYCACHEPREFIX"] == str(PYCACHE) and env["FBGPU_PRELOAD"] == "0"
    out = subprocess.run([sys.executable, "-c", "import sys; print(sys.dont_write_bytecode, "
                          "sys.pycache_prefix)"], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["False", str(PYCACHE)]


def test_prefault_maps_read_only_views_and_changes_nothing(tmp_path: Path, monkeypatch) -> None:
    """store.prefault advises exactly the read-only views of a memory-mapped Arrow file (the
    read path's columns), skips arrays that own their memory or are writeable, leaves every
    value as it was, and is off with FBGPU_PREFAULT=0."""
    import numpy as np
    import pyarrow as pa

    from fbgpu.data.store import _madvise, prefault
    from fbgpu.data.tickread import as_numpy

    n = 300_000
    rng = np.random.default_rng(2)
    cols = {"a": rng.random(n), "b": rng.integers(0, 1 << 40, n), "c": rng.random(n)}
    path = tmp_path / "t.arrow"
    with pa.OSFile(str(path), "wb") as f, pa.ipc.new_file(f, pa.schema(
            [(k, pa.from_numpy_dtype(v.dtype)) for k, v in cols.items()])) as w:
        w.write_batch(pa.record_batch([pa.array(v) for v in cols.values()],
                                      names=list(cols)))
    batch = pa.ipc.open_file(pa.memory_map(str(path), "r")).get_batch(0)
    views = [as_numpy(batch.column(k)) for k in cols]
    assert all(not v.flags.owndata and not v.flags.writeable for v in views)
    owned = np.ones(1000)
    if _madvise() is None:
        pytest.skip("madvise is not available here")
    import os
    import re

    got = prefault([*views, owned, views[1][10:20]])
    major, minor = (int(x) for x in re.match(r"(\d+)\.(\d+)", os.uname().release).groups())
    populate = (major, minor) >= (5, 14)  # MADV_POPULATE_READ is Linux 5.14+
    assert got == (sum(v.nbytes for v in views) + views[1][10:20].nbytes if populate else 0)
    for v, (k, want) in zip(views, cols.items(), strict=True):
        np.testing.assert_array_equal(v, want, err_msg=k)
    monkeypatch.setenv("FBGPU_PREFAULT", "0")
    assert prefault(views) == 0


def test_a_loaded_day_is_paged_in_once(tiny_store, monkeypatch) -> None:
    """The CPU compute asks for a day's mapped minute and trade columns to be paged in on its
    first compute only: computing the same loaded day again (another factor selection) finds
    them mapped; a newly loaded day is paged in again. Values are the same each time."""
    import fbgpu.factors.compute as compute

    calls: list[int] = []
    monkeypatch.setattr(compute, "prefault_async", lambda arrays: calls.append(len(arrays)))
    d = tiny_store.dates("trades")[0]
    day = compute.load_day(tiny_store, d)
    first = compute.compute_loaded_day(day).values
    again = compute.compute_loaded_day(day, ["bigorder_ret", "skew_order_diff"]).values
    assert len(calls) == 1 and calls[0] > 0 and day.paged_in
    assert first.shape[0] == again.shape[0]
    compute.compute_loaded_day(compute.load_day(tiny_store, d))
    assert len(calls) == 2


@pytest.mark.parametrize("preset,want", [(None, "__all__"), ("", ""), ("logfire", "logfire")])
def test_cli_skips_pydantic_plugin_discovery_unless_told(
        monkeypatch: pytest.MonkeyPatch, preset: str | None, want: str) -> None:
    """The `fbgpu` process entry turns pydantic's plugin discovery (an entry-point scan of every
    installed distribution, ~0.03 s) off, unless PYDANTIC_DISABLE_PLUGINS is already set (to
    anything, "" included), which it leaves as it is."""
    import fbgpu.cli as cli

    seen: list[str | None] = []

    class ExitCalledError(Exception):
        pass

    def fake_exit(code: int) -> None:
        raise ExitCalledError(code)

    monkeypatch.setenv("PYDANTIC_DISABLE_PLUGINS", "-")  # recorded: restored after the test
    if preset is None:
        monkeypatch.delenv("PYDANTIC_DISABLE_PLUGINS")
    else:
        monkeypatch.setenv("PYDANTIC_DISABLE_PLUGINS", preset)
    monkeypatch.setattr(cli, "main", lambda: seen.append(os.environ.get(
        "PYDANTIC_DISABLE_PLUGINS")) or 0)
    monkeypatch.setattr(cli.os, "_exit", fake_exit)
    monkeypatch.setattr(cli.atexit, "_run_exitfuncs", lambda: None)
    monkeypatch.setattr(cli.logging, "shutdown", lambda: None)  # pytest's handlers stay open
    with pytest.raises(ExitCalledError):
        cli.run()
    assert seen == [want]
