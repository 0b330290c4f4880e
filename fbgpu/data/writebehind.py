"""Write-behind persistence: store partitions written by a background thread, behind the compute.

In the in-memory pipeline (``fbgpu demo``, and the ``run_factors``/``run_train`` library calls)
a stage hands its results to the next stage on the device and persists them *behind*: it gives
:meth:`StoreWriteBehind.submit` the device arrays and a function that writes them, and goes on
computing. The writer

1. starts each array's device->host copy at once, in the submitting thread, through the
   ``to_host`` it was built with -- the backend's explicit, sanctioned crossing
   (:meth:`fbgpu.engine.backend.Backend.to_host_async`: on a GPU a copy into pinned host memory
   on a side stream, ordered after the work that produced the array; on the CPU the array
   itself, no copy: a submitted array must not be modified afterwards);
2. runs the write function on one background thread, in submission order, once the copies have
   landed: Parquet encoding and the store's atomic temp-file + fsync + rename
   (:meth:`fbgpu.data.store.Store.write`) overlap the next day's compute. The store's write lock
   is the command's (:mod:`fbgpu.data.lock`, per process), so the thread writes under it;
3. never reads anything back: the run keeps using its in-memory arrays;
4. can do the first write's one-time work ahead (:meth:`StoreWriteBehind.prepare`: importing
   ``pyarrow.parquet``, hashing the sources for the code version) while the caller computes its
   first result, so that a one-day run does not wait for it after its compute.

At most ``max_pending`` jobs wait (``submit`` blocks beyond that), which bounds the host memory
held by copies in flight. An error in a write does not stop the run at once: it is kept, with the
table and partition it was writing, the remaining jobs still run, and :meth:`flush` (or leaving
the ``with`` block) raises :class:`WriteBehindError` naming the first failing table: exit status
3 on the command line, the stage recorded as failed. Whoever submits must :meth:`flush` before
anything (a later stage, a fingerprint of the written partitions) reads those tables; the demo
flushes at the end of each stage, ``run_factors`` and ``run_train`` with their own writer at the
end of the call.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np

from fbgpu.data.store import Store
from fbgpu.errors import ExitStatus

log = logging.getLogger(__name__)

#: ``to_host(array) -> pending``: starts a device->host copy; ``pending()`` waits for it and
#: returns the host array (the shape of :meth:`fbgpu.engine.backend.Backend.to_host_async`).
AsyncToHost = Callable[[Any], Callable[[], np.ndarray]]


def host_now(a: Any) -> Callable[[], np.ndarray]:
    """The ``to_host`` of host arrays: the array itself (``numpy.asarray``, no copy)."""
    host = np.asarray(a)
    return lambda: host


@dataclass(frozen=True)
class WriteFailure:
    """A write that failed: the table and partition (None for a whole-table write) and why.

    ``kind`` says what ``table`` names: a store ``"table"``, or a ``"file"`` (its path) for the
    files the run writes outside the tables (checkpoints, the evaluation's result tables).
    """

    table: str
    date: dt.date | None
    error: BaseException
    kind: str = "table"

    def describe(self) -> str:
        where = f"{self.kind} {self.table!r}" + (f" partition {self.date}" if self.date else "")
        return f"{where}: {type(self.error).__name__}: {self.error}"


class WriteBehindError(RuntimeError):
    """Persisting a run's results behind the compute failed; the message names the table."""

    exit_status = ExitStatus.FAILED  # fbgpu/errors.py: the command line's exit status

    def __init__(self, failures: Sequence[WriteFailure]) -> None:
        self.failures = list(failures)
        more = f" (and {len(failures) - 1} more failed writes)" if len(failures) > 1 else ""
        super().__init__(f"writing the store behind the run failed: "
                         f"{failures[0].describe()}{more}")


@dataclass
class _Job:
    table: str
    date: dt.date | None
    pending: list[Callable[[], np.ndarray]]
    write: Callable[[list[np.ndarray]], Any]
    kind: str = "table"


_STOP = object()
#: The ``kind`` of a :meth:`StoreWriteBehind.prepare` job.
_PREPARE = "prepare"


class StoreWriteBehind:
    """A background writer of ``store`` partitions (module doc); a context manager.

    ``to_host`` starts the device->host copy of a submitted array (default :func:`host_now`,
    for numpy arrays). ``with StoreWriteBehind(store, backend.to_host_async) as w: ...`` waits
    for every write when the block ends and raises :class:`WriteBehindError` if one failed
    (unless the block itself raised: that error wins, and the failures are logged).
    """

    def __init__(self, store: Store, to_host: AsyncToHost | None = None, *,
                 max_pending: int = 4, name: str = "store") -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.store = store
        self.name = name
        self._to_host = to_host or host_now
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_pending)
        self._failures: list[WriteFailure] = []
        self._lock = threading.Lock()
        self.written = 0  #: jobs completed without error
        self._thread: threading.Thread | None = None
        self._closed = False

    # ----------------------------------------------------------------- submitting
    def submit(self, table: str, date: dt.date | None, arrays: Sequence[Any],
               write: Callable[[list[np.ndarray]], Any], *, kind: str = "table") -> None:
        """Queue ``write(host_arrays)`` for ``table`` (partition ``date``), after starting the
        host copies of ``arrays`` (in order); blocks while ``max_pending`` jobs wait.

        ``kind="file"``: ``table`` is the path of a file written outside the store's tables
        (a failure then names the file)."""
        if self._closed:
            raise RuntimeError(f"write-behind {self.name!r} is closed")
        pending = [self._to_host(a) for a in arrays]
        self._start()
        self._queue.put(_Job(table, date, pending, write, kind))

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"fbgpu-write-{self.name}",
                                            daemon=True)
            self._thread.start()

    def prepare(self, work: Callable[[], Any]) -> None:
        """Run ``work()`` on the writer thread now, ahead of the writes: what the first write
        would otherwise do on the run's critical path (``Store.prepare_write``: an import, the
        code version), done while the caller computes. Best effort: an error (any exception)
        is logged at debug level and left for the write that needs the work to meet again; it
        counts as neither a write nor a failure; skipped when ``max_pending`` jobs already wait
        (never blocks: those writes will do the work). Skipped under ``FBGPU_PRELOAD=0``, the
        switch of fbgpu's background preparation (the CPU kernels' numba preload of ``fbgpu
        factors`` is the other): ``-X importtime``'s accounting cannot take two threads
        importing at once."""
        if self._closed:
            raise RuntimeError(f"write-behind {self.name!r} is closed")
        if os.environ.get("FBGPU_PRELOAD", "1") == "0":
            return
        self._start()
        with contextlib.suppress(queue.Full):  # writes already wait: they will do the work
            self._queue.put_nowait(_Job("", None, [], lambda _host: work(), _PREPARE))

    def submit_file(self, path: Any, write: Callable[[], Any]) -> None:
        """Queue ``write()``, which writes the file ``path`` from host data (a checkpoint's
        manifest, an evaluation table): no device copy; a failure names the file."""
        self.submit(str(path), None, [], lambda _host: write(), kind="file")

    # ----------------------------------------------------------------- the thread
    def _run(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is _STOP:
                    return
                if job.kind == _PREPARE:
                    try:
                        job.write([])
                    except BaseException:  # the write that needs it meets the error again;
                        # whatever it was, the thread lives on to run the writes
                        log.debug("write-behind %r: preparation failed", self.name,
                                  exc_info=True)
                    continue
                try:
                    job.write([p() for p in job.pending])
                    with self._lock:
                        self.written += 1
                except BaseException as e:  # kept and raised by flush(), with the table named
                    fail = WriteFailure(job.table, job.date, e, job.kind)
                    log.error("write-behind: %s", fail.describe())
                    log.debug("write-behind failure", exc_info=True)
                    with self._lock:
                        self._failures.append(fail)
            finally:
                self._queue.task_done()

    # ----------------------------------------------------------------- waiting
    def wait(self) -> list[WriteFailure]:
        """Wait until every submitted job has run; return (and forget) the failures."""
        self._queue.join()
        with self._lock:
            failures, self._failures = self._failures, []
        return failures

    def flush(self) -> None:
        """Wait for every submitted write; raise :class:`WriteBehindError` if one failed."""
        failures = self.wait()
        if failures:
            raise WriteBehindError(failures)

    def close(self) -> None:
        """:meth:`flush`, then stop the thread (also when the flush raises)."""
        try:
            self.flush()
        finally:
            self._stop()

    def _stop(self) -> None:
        self._closed = True
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None

    def __enter__(self) -> StoreWriteBehind:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # the block's own error propagates; still finish (or fail) the queued writes
            for fail in self.wait():
                log.error("write-behind (after %s): %s", exc_type.__name__, fail.describe())
        finally:
            self._stop()
