"""Store hygiene: one writer per store (an advisory lock, real processes) and the removal of the
temporaries a ``kill -9`` leaves behind."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from fbgpu.data import lock
from fbgpu.data.store import Store

FBGPU = [sys.executable, "-m", "fbgpu"]
DAY = dt.date(2024, 1, 2)


def _factors(n: int = 3) -> pa.Table:
    syms = [f"60000{i}.SH" for i in range(n)]
    return pa.table({"date": [DAY] * n, "symbol": syms, "f0": [10.0 + i for i in range(n)]})


def _start(code: str, *args: str) -> subprocess.Popen[str]:
    """A python child that prints ``ready`` once it holds what ``code`` takes, then sleeps."""
    p = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    line = p.stdout.readline().strip()
    assert line == "ready", f"child did not start: {line!r}"
    return p


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


HOLD = """
import sys, time
from fbgpu.data.lock import store_lock
with store_lock(sys.argv[1], "fbgpu holder --store x"):
    print("ready", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_second_writer_is_refused_with_the_holder_named(tmp_path: Path) -> None:
    st = Store(tmp_path / "s")
    st.write("factors", DAY, _factors())
    before = _files(st.root)
    holder = _start(HOLD, str(st.root), "30")
    try:
        info = lock.holder(st.root)
        assert info is not None and info["pid"] == holder.pid
        env = {**os.environ, lock.WAIT_ENV: ""}
        r = subprocess.run([*FBGPU, "report", "--store", str(st.root)], capture_output=True,
                           text=True, env=env, timeout=120)
        assert r.returncode == 4, r.stderr
        assert str(st.root) in r.stderr and f"pid {holder.pid}" in r.stderr
        assert "fbgpu holder --store x" in r.stderr and lock.WAIT_ENV in r.stderr
        # the refused command wrote nothing (the holder's .lock is the only new file)
        after = _files(st.root)
        assert after.pop(lock.LOCK_NAME)
        assert after == before
        # in-process too: the same error type, naming the store
        with pytest.raises(lock.StoreLockedError, match="being written by pid"):
            lock.acquire(st.root, wait=0.3)
    finally:
        holder.kill()
        holder.wait()


def test_a_waiting_writer_gets_the_lock_when_the_holder_ends(tmp_path: Path) -> None:
    root = tmp_path / "s"
    root.mkdir()
    holder = _start(HOLD, str(root), "1.0")
    try:
        t0 = time.monotonic()
        with lock.store_lock(root, "waiter", wait=30):
            waited = time.monotonic() - t0
            assert lock.holder(root)["command"] == "waiter"  # type: ignore[index]
        assert 0.5 < waited < 30  # it waited for the holder's 1 s to end, not for the timeout
        assert not (root / lock.LOCK_NAME).exists()  # released: removed
    finally:
        holder.kill()
        holder.wait()


KILLED = """
import sys, time, datetime as dt
from fbgpu.data.lock import lock_for_command
from fbgpu.data.store import PartitionWriter, Store
st = Store(sys.argv[1])
lock_for_command(st.root, "fbgpu factors --store x")
w = PartitionWriter(st, "index_weights", dt.date(2024, 1, 2))  # its temporary is open now
print("ready", flush=True)
time.sleep(60)
"""


def test_kill_9_debris_is_removed_by_the_next_writer(tmp_path: Path) -> None:
    st = Store(tmp_path / "s")
    st.write("factors", DAY, _factors())
    good = st.read("factors", DAY)
    child = _start(KILLED, str(st.root))
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    debris = list(st.root.rglob("*.tmp"))
    assert len(debris) == 1 and lock.TEMP_RE.match(debris[0].name)
    stale = json.loads((st.root / lock.LOCK_NAME).read_text())
    assert stale["pid"] == child.pid  # the dead holder's record is still there ...
    assert st.read("factors", DAY).equals(good)  # ... and the old partition intact
    # ... but the kernel dropped its lock: the next writer takes it and removes the debris
    with lock.store_lock(st.root, "next"):
        assert not list(st.root.rglob("*.tmp"))
        st.write("factors", DAY, _factors(4))
    assert st.read("factors", DAY).num_rows == 4
    assert not (st.root / lock.LOCK_NAME).exists()


def test_a_new_store_is_locked_at_its_first_write_and_left_clean(tmp_path: Path) -> None:
    root = tmp_path / "new"
    lock.lock_for_command(root, "fbgpu ingest")
    try:
        assert not root.exists()  # asking for the lock creates nothing
        Store(root).write("factors", DAY, _factors())
        assert lock.is_held(root) and lock.holder(root)["command"] == "fbgpu ingest"  # type: ignore[index]
        lock.acquire(root)  # re-entrant within the process
        lock.release(root)
        assert lock.is_held(root)
    finally:
        lock.release(root)
    assert not lock.is_held(root) and not (root / lock.LOCK_NAME).exists()
    # a temp-looking user file that is not ours is kept
    keep = root / "notes.tmp"
    keep.write_text("mine")
    with lock.store_lock(root):
        pass
    assert keep.exists()


def test_bad_wait_setting_is_a_usage_error(tmp_path: Path) -> None:
    root = tmp_path / "s"
    root.mkdir()
    r = subprocess.run([*FBGPU, "report", "--store", str(root)], capture_output=True, text=True,
                       env={**os.environ, lock.WAIT_ENV: "soon"}, timeout=120)
    assert r.returncode == 1 and lock.WAIT_ENV in r.stderr
    assert lock.wait_seconds("inf") == float("inf") and lock.wait_seconds("") == 0.0
    assert os.listdir(root) == []
