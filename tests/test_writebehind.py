"""The write-behind store writer (fbgpu/data/writebehind.py): jobs run behind the caller on one
thread, in order; failures are kept with their table and raised, never swallowed; host copies go
through the backend's explicit, counted crossing."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import numpy as np
import pytest

from fbgpu.data.store import Store
from fbgpu.data.writebehind import StoreWriteBehind, WriteBehindError
from fbgpu.engine.backend import get_backend
from fbgpu.engine.guard import SANCTIONED
from fbgpu.engine.standin import CROSSINGS, standin_backend


def test_jobs_run_behind_the_caller_in_order(tmp_path: Path) -> None:
    gate, seen, threads = threading.Event(), [], set()

    def job(k: int):
        def write(host: list[np.ndarray]) -> None:
            gate.wait(10)
            threads.add(threading.current_thread().name)
            seen.append((k, float(host[0].sum())))
        return write

    w = StoreWriteBehind(Store(tmp_path), max_pending=8, name="t")
    for k in range(5):
        w.submit("t", None, [np.full(3, float(k))], job(k))
    assert seen == []  # the caller went on while every write waited
    gate.set()
    w.close()
    assert seen == [(k, 3.0 * k) for k in range(5)] and w.written == 5
    assert threads == {"fbgpu-write-t"}
    with pytest.raises(RuntimeError, match="closed"):
        w.submit("t", None, [], job(9))


def test_a_failed_write_is_raised_with_its_table_and_the_others_still_run(tmp_path) -> None:
    store, done = Store(tmp_path), []
    d = dt.date(2024, 1, 2)

    def ok(host: list[np.ndarray]) -> None:
        done.append(len(host))

    def bad(host: list[np.ndarray]) -> None:
        raise OSError("disk full")

    w = StoreWriteBehind(store)
    w.submit("factors", d, [np.zeros(2)], ok)
    w.submit("factors", d + dt.timedelta(1), [np.zeros(2)], bad)
    w.submit("scores", None, [np.zeros(2), np.ones(2)], ok)
    w.submit("panel", d, [], bad)
    with pytest.raises(WriteBehindError, match=r"table 'factors' partition 2024-01-03: "
                       r"OSError: disk full \(and 1 more failed writes\)") as err:
        w.flush()
    assert [f.table for f in err.value.failures] == ["factors", "panel"]
    assert done == [1, 2]  # the writes after the failure ran
    assert err.value.exit_status == 3
    w.close()  # reported once: nothing left to raise


def test_an_error_of_the_block_wins_and_queued_writes_still_finish(tmp_path) -> None:
    done = []
    with pytest.raises(KeyError), StoreWriteBehind(Store(tmp_path)) as w:
        w.submit("t", None, [np.arange(3)], lambda h: done.append(h[0].tolist()))
        w.submit("t", None, [], lambda h: 1 / 0)  # logged, not raised over the KeyError
        raise KeyError("the stage failed")
    assert done == [[0, 1, 2]]


def test_host_copies_are_the_backends_explicit_crossing() -> None:
    a = np.arange(6.0)
    host = get_backend("cpu").to_host_async(a)()
    assert np.shares_memory(host, a)  # the CPU: the array itself
    b = standin_backend()
    dev = b.xp.asarray(a)
    before = CROSSINGS["to_host"], SANCTIONED["to_host"]
    pending = b.to_host_async(dev)
    assert (CROSSINGS["to_host"], SANCTIONED["to_host"]) == (before[0] + 1, before[1] + 1)
    out = pending()
    assert type(out) is np.ndarray and not np.shares_memory(out, dev)
    np.testing.assert_array_equal(out, a)


def test_factors_on_the_standin_device_persist_through_one_counted_copy_per_day(
        tiny_store: Store, tmp_path: Path) -> None:
    """run_factors through the GPU backend's path (stand-in device, emulated kernels): each
    computed day leaves the device once, by the writer's to_host_async, and the stored values
    are the CPU backend's (to the GPU kernels' rounding)."""
    import shutil

    from fbgpu.factors import run_factors

    roots = {k: tmp_path / k for k in ("dev", "cpu")}
    for r in roots.values():
        shutil.copytree(tiny_store.root, r, ignore=shutil.ignore_patterns(
            "factors", "panel", "reports", "run.json", "scores", "models"))
    d = Store(roots["dev"]).dates("trades")[0]
    before = CROSSINGS["to_host"], CROSSINGS["upload"]
    summary = run_factors(Store(roots["dev"]), d, d, backend=standin_backend(), progress=False)
    assert summary.dates_computed == [d]
    assert CROSSINGS["to_host"] == before[0] + 1  # the persistence copy, nothing else
    assert CROSSINGS["upload"] > before[1]  # the day's ticks went up
    run_factors(Store(roots["cpu"]), d, d, backend="cpu", progress=False)
    dev = Store(roots["dev"]).read("factors", d)
    ref = Store(roots["cpu"]).read("factors", d)
    assert dev.column_names == ref.column_names and dev.num_rows == ref.num_rows > 10
    for c in ref.column_names[2:]:
        np.testing.assert_allclose(dev.column(c).to_numpy(), ref.column(c).to_numpy(),
                                   rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=c)


def test_the_panel_is_written_behind_through_two_counted_copies(tiny_store: Store,
                                                                tmp_path: Path) -> None:
    """write_panel decides the dates now and submits ONE job: the panel's values and universe
    (two crossings, made by the writer's to_host_async) and a function that writes every
    partition; the caller writes nothing itself. The partitions equal the host route's, and a
    re-run with the same inputs submits nothing."""
    import shutil

    from fbgpu.panel.build import FactorPanel, write_panel

    stores = {}
    for k in ("dev", "host"):
        shutil.copytree(tiny_store.root, tmp_path / k, ignore=shutil.ignore_patterns(
            "factors", "panel", "reports", "run.json", "scores", "models"))
        stores[k] = Store(tmp_path / k)
    dates = stores["dev"].dates("daily")[:3]
    rng = np.random.default_rng(0)
    vals = rng.normal(size=(3, 5, 2))
    vals[0, 1, :] = np.nan  # no finite value: not written
    uni = np.ones((3, 5), dtype=bool)
    uni[2, 3] = False  # outside the day's universe: not written
    symbols = np.array([f"60000{i}.SH" for i in range(5)], dtype=object)
    b = standin_backend()

    class Recorder:
        def __init__(self) -> None:
            self.jobs: list[tuple] = []

        def submit(self, table, date, arrays, write) -> None:
            self.jobs.append((table, date, arrays, write))

    rec = Recorder()
    dev_panel = FactorPanel(dates, symbols, ["f1", "f2"], b.xp.asarray(vals), b.xp.asarray(uni))
    before = CROSSINGS["to_host"]
    assert write_panel(stores["dev"], dev_panel, config={"k": 1}, writer=rec) == 3
    assert CROSSINGS["to_host"] == before  # nothing crossed in the caller
    assert [j[:2] for j in rec.jobs] == [("panel", None)] and not stores["dev"].dates("panel")
    with StoreWriteBehind(stores["dev"], b.to_host_async) as w:
        w.submit(*rec.jobs[0])
    assert CROSSINGS["to_host"] == before + 2  # values and universe, by the writer
    host_panel = FactorPanel(dates, symbols, ["f1", "f2"], vals, uni)
    assert write_panel(stores["host"], host_panel, config={"k": 1}) == 3  # own writer, waited
    for d in dates:
        got, ref = stores["dev"].read("panel", d), stores["host"].read("panel", d)
        assert got.equals(ref), d
    assert stores["dev"].read("panel", dates[0]).num_rows == 4
    assert stores["dev"].read("panel", dates[2]).num_rows == 4
    again = Recorder()
    assert write_panel(stores["dev"], dev_panel, config={"k": 1}, writer=again) == 0
    assert again.jobs == []


# --------------------------------------------------------------------------- checkpoints
def _states() -> list[dict]:
    """Two networks' state dicts with the dtypes and shapes a checkpoint holds (float32
    weights, a 0-d tensor, an int64 counter), from a computation, not constants."""
    import torch

    g = torch.Generator().manual_seed(3)
    return [{"w": torch.randn(4, 3, generator=g), "b": torch.randn(3, generator=g)},
            {"w": torch.randn(2, 5, generator=g).t(),  # not contiguous
             "scale": torch.tensor(1.5), "n": torch.tensor(7, dtype=torch.int64)}]


@pytest.mark.parametrize("device", ["cpu", "standin"])
def test_a_checkpoint_written_behind_has_the_synchronous_bytes(tmp_path: Path,
                                                               device: str) -> None:
    """save_seed through the writer: nothing is on disk until the writer runs the job, the file
    then holds exactly the bytes of the synchronous route, and load_seed reads it back. On the
    stand-in device each state tensor leaves the device by the writer's counted crossing and
    the caller makes none itself."""
    import torch

    from fbgpu.models.checkpoints import load_seed, save_seed

    b = standin_backend() if device == "standin" else get_backend("cpu")
    payload = {"kind": "hf", "seed": 0, "config_hash": "h", "fingerprint": "f",
               "states": _states(), "best_valid_ic": [0.1, 0.2], "history": [[1.0]]}
    save_seed(tmp_path / "sync.pt", payload)
    gate = threading.Event()
    before = CROSSINGS["to_host"]
    with StoreWriteBehind(Store(tmp_path), b.to_host_async) as w:
        w.submit("gate", None, [], lambda h: gate.wait(10))  # holds the writer's thread
        save_seed(tmp_path / "behind.pt", payload, w, b.xp)
        assert not (tmp_path / "behind.pt").exists()  # queued, not written in the caller
        n_tensors = sum(len(s) for s in payload["states"])
        assert CROSSINGS["to_host"] - before == (n_tensors if device == "standin" else 0)
        gate.set()
    assert (tmp_path / "behind.pt").read_bytes() == (tmp_path / "sync.pt").read_bytes()
    loaded = load_seed(tmp_path / "behind.pt", torch.device("cpu"))
    assert loaded is not None
    for got, want in zip(loaded["states"], payload["states"], strict=True):
        assert list(got) == list(want)
        for k in want:
            assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k])


def test_a_failed_checkpoint_write_names_the_file(tmp_path: Path) -> None:
    """A checkpoint the writer cannot write (its directory is taken by a file) is raised by the
    flush, naming the file; the window manifest queued after it is still written last."""
    from fbgpu.models.checkpoints import WindowPaths, save_seed, write_window_manifest

    paths = WindowPaths(tmp_path / "models", "hf", "2024-03-29")
    paths.seed(0).parent.parent.mkdir(parents=True)
    (tmp_path / "models" / "hf" / "other").write_text("x")
    blocked = WindowPaths(tmp_path / "models", "hf", "other")
    b = get_backend("cpu")
    w = StoreWriteBehind(Store(tmp_path), b.to_host_async)
    save_seed(blocked.seed(0), {"states": _states()}, w, b.xp)
    save_seed(paths.seed(0), {"states": _states()}, w, b.xp)
    write_window_manifest(paths, {"seeds": [0]}, w)
    with pytest.raises(WriteBehindError, match=r"file '.*other/seed0\.pt'"):
        w.close()
    assert paths.seed(0).exists() and paths.manifest.exists()
    assert paths.seed(0).stat().st_mtime_ns <= paths.manifest.stat().st_mtime_ns


def test_preparation_runs_on_the_writer_thread_first_and_never_fails_the_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``prepare`` runs its work on the writer thread at once, ahead of the writes submitted
    after it; a failing preparation is neither a write nor a failure; ``FBGPU_PRELOAD=0``
    skips it; a closed writer refuses it."""
    order, threads = [], set()

    def work(tag: str, fail: bool = False):
        def run() -> None:
            threads.add(threading.current_thread().name)
            order.append(tag)
            if fail:
                raise OSError("no such module")
        return run

    w = StoreWriteBehind(Store(tmp_path), name="p")
    w.prepare(work("prepared"))
    w.prepare(work("broken", fail=True))
    w.submit("t", None, [np.zeros(1)], lambda host: order.append("write"))
    w.close()  # no WriteBehindError: the failed preparation is not a failed write
    assert order == ["prepared", "broken", "write"] and w.written == 1
    assert threads == {"fbgpu-write-p"}
    with pytest.raises(RuntimeError, match="closed"):
        w.prepare(work("late"))

    monkeypatch.setenv("FBGPU_PRELOAD", "0")
    w = StoreWriteBehind(Store(tmp_path), name="q")
    w.prepare(work("skipped"))
    w.close()
    assert "skipped" not in order and w._thread is None  # no thread was started for it


def test_prepare_write_imports_parquet_only_for_parquet_tables(tmp_path: Path) -> None:
    """``Store.prepare_write``: the factors table (Parquet) imports ``pyarrow.parquet`` and
    computes the code version; a hot table of an Arrow store needs no Parquet writer. A fresh
    process each, so that nothing imported it before."""
    import subprocess
    import sys

    code = ("import sys\nfrom fbgpu.data import store as s\nst = s.Store(sys.argv[1])\n"
            "st._hot_format = 'arrow'\nst.prepare_write(sys.argv[2])\n"
            "print('PQ', 'pyarrow.parquet' in sys.modules, 'CV', s.code_version.cache_info()"
            ".currsize)\n")
    for table, parquet in (("factors", True), ("trades", False)):
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path), table],
                             capture_output=True, text=True, timeout=120)
        assert f"PQ {parquet} CV 1" in out.stdout, out.stdout + out.stderr


def test_preparation_survives_any_exception_and_never_blocks(tmp_path: Path) -> None:
    """A preparation raising a BaseException (SystemExit) leaves the thread running the
    writes; with ``max_pending`` jobs waiting, ``prepare`` returns at once and skips its work
    (those writes will do it)."""
    ran, gate, started = [], threading.Event(), threading.Event()

    def boom() -> None:
        raise SystemExit(3)

    w = StoreWriteBehind(Store(tmp_path), max_pending=1, name="b")
    w.prepare(boom)
    done = threading.Event()
    w.submit("t", None, [], lambda host: done.set())
    assert done.wait(10), "the writer thread died with the preparation"

    def blocked(host: list[np.ndarray]) -> None:
        started.set()
        gate.wait(10)

    w.submit("t", None, [], blocked)
    assert started.wait(10)
    w.submit("t", None, [], lambda host: ran.append("queued"))  # the queue is full now
    t = threading.Thread(target=w.prepare, args=(lambda: ran.append("prepared"),))
    t.start()
    t.join(5)
    assert not t.is_alive(), "prepare blocked on a full queue"
    gate.set()
    w.close()
    assert ran == ["queued"] and w.written == 3
