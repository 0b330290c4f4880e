"""One writer per store: an advisory lock on ``<store>/.lock``, and stale temporaries removed.

Every ``fbgpu`` command that takes ``--store`` holds the store's write lock while it runs
(:func:`fbgpu.cli.common.STORE_OPTION` takes it), so a second command on the same store stops at
once with :class:`StoreLockedError` (exit status 4, ``BUSY``) naming the store and the holder's
pid, command and start time, instead of repeating the first one's work. Setting
``FBGPU_LOCK_WAIT`` to a number of seconds (``inf`` = no limit) makes it wait for the lock instead.

Mechanism: ``fcntl.flock(LOCK_EX)`` on ``<store>/.lock``, which holds the holder's
``{"pid", "command", "host", "since"}`` as JSON. The kernel drops the lock when the holder's
process ends, however it ends (``kill -9`` included), so a lock never outlives its process; a
``.lock`` file left by a killed process is just a file, taken over by the next writer. On release
the file is removed (so a command that wrote nothing leaves the store byte-identical); a waiter
that locked the removed file notices (the path no longer names its inode) and locks again.

Stale temporaries: a partition or file write goes to a hidden ``.<name>.<32 hex>.tmp`` sibling
first (:func:`fbgpu.data.store.atomic_write_bytes`); a write killed midway leaves that file
behind. Whoever acquires the lock has excluded every other (locking) writer, so every such file in
the store is debris of a dead process; :func:`acquire` removes them all and logs how many.

If the store directory does not exist yet (``ingest`` or ``synth`` into a new store), the lock is
taken by the first write into it (:func:`claim`, called by :class:`fbgpu.data.store.Store`): two
commands creating one store race only until their first write. Library code that writes a store
from several processes takes the lock itself: ``with store_lock(root, "my job"): ...``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import logging
import math
import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fbgpu.errors import ExitStatus

log = logging.getLogger(__name__)

#: The lock file inside a store.
LOCK_NAME = ".lock"

#: Environment variable: seconds a writer waits for a held lock (unset/0 = fail at once, inf = no
#: limit).
WAIT_ENV = "FBGPU_LOCK_WAIT"

#: The temporaries of :func:`fbgpu.data.store._temp_name`: ``.<name>.<uuid4 hex>.tmp``.
TEMP_RE = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")

#: Seconds between two tries while waiting for a lock.
POLL_SECONDS = 0.2


class StoreLockedError(RuntimeError):
    """Another process holds the store's write lock; the message names the store and holder."""

    exit_status = ExitStatus.BUSY  # fbgpu/errors.py: the command line's exit status


@dataclass
class _Held:
    fd: int
    path: Path
    depth: int


#: Locks this process holds, by resolved store root (re-entrant: a nested take just counts).
_HELD: dict[Path, _Held] = {}
#: Store roots this process will lock at their first write (they did not exist when asked).
_PENDING: dict[Path, str] = {}


def _key(root: str | os.PathLike[str]) -> Path:
    return Path(os.path.abspath(root))


def wait_seconds(value: str | None = None) -> float:
    """The wait allowed by ``FBGPU_LOCK_WAIT`` (or ``value``): seconds >= 0, ``inf`` allowed."""
    raw = os.environ.get(WAIT_ENV, "") if value is None else value
    if raw.strip() == "":
        return 0.0
    try:
        s = float(raw)
    except ValueError:
        raise ValueError(f"{WAIT_ENV}={raw!r} is not a number of seconds (or 'inf')") from None
    if s < 0 or math.isnan(s):
        raise ValueError(f"{WAIT_ENV}={raw!r} must be >= 0 seconds (or 'inf')")
    return s


def holder(root: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The holder record in ``<root>/.lock`` (pid, command, host, since), None if unreadable."""
    try:
        info = json.loads((Path(root) / LOCK_NAME).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _describe(info: dict[str, Any] | None) -> str:
    if not info:
        return "another process (no holder record)"
    return (f"pid {info.get('pid', '?')} on {info.get('host', '?')} "
            f"(`{info.get('command', '?')}`, since {info.get('since', '?')})")


def remove_stale_temporaries(root: str | os.PathLike[str]) -> int:
    """Delete every write temporary (``.<name>.<hex>.tmp``) under ``root``; the number removed.

    Only safe while holding the store's lock (then no live writer owns one).
    """
    n = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            if TEMP_RE.match(f):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(dirpath, f))
                    n += 1
    if n:
        log.info("store %s: removed %d stale temporary file(s) left by an interrupted write",
                 root, n)
    return n


def _try_lock(path: Path) -> int | None:
    """An fd holding ``LOCK_EX`` on the file now at ``path``, or None while another holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            raise
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the holder removed the file as it released: lock the new one


def acquire(root: str | os.PathLike[str], command: str | None = None,
            wait: float | None = None) -> None:
    """Take the write lock of the existing store ``root`` (re-entrant within a process).

    ``wait``: seconds to wait for a held lock (default ``FBGPU_LOCK_WAIT``, else 0). Raises
    :class:`StoreLockedError` naming the store and the holder when it is not free in time. On
    success the holder record is written and stale temporaries are removed.
    """
    key = _key(root)
    held = _HELD.get(key)
    if held is not None:
        held.depth += 1
        return
    limit = wait_seconds() if wait is None else wait
    path = key / LOCK_NAME
    t0 = time.monotonic()
    announced = False
    while (fd := _try_lock(path)) is None:
        waited = time.monotonic() - t0
        if waited >= limit:
            hint = (f"waited {waited:.0f} s" if limit > 0 else
                    f"set {WAIT_ENV}=<seconds> (or inf) to wait for it")
            raise StoreLockedError(
                f"store {root} is being written by {_describe(holder(key))}; {hint}")
        if not announced:
            log.info("store %s is locked by %s; waiting (%s=%s)", root,
                     _describe(holder(key)), WAIT_ENV, limit)
            announced = True
        time.sleep(POLL_SECONDS)
    info = {"pid": os.getpid(), "command": command or " ".join(["fbgpu", *sys.argv[1:]]),
            "host": socket.gethostname(),
            "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(info).encode())
    _HELD[key] = _Held(fd, path, 1)
    _PENDING.pop(key, None)
    remove_stale_temporaries(key)


def release(root: str | os.PathLike[str]) -> None:
    """Release one take of ``root``'s lock; the last one removes ``.lock`` and unlocks."""
    key = _key(root)
    _PENDING.pop(key, None)
    held = _HELD.get(key)
    if held is None:
        return
    held.depth -= 1
    if held.depth > 0:
        return
    del _HELD[key]
    with contextlib.suppress(FileNotFoundError):
        os.unlink(held.path)  # before unlocking: a waiter then sees its inode is gone
    os.close(held.fd)


def lock_for_command(root: str | os.PathLike[str], command: str | None = None) -> None:
    """Lock ``root`` now if it exists, else at its first write (:func:`claim`)."""
    key = _key(root)
    if key.is_dir():
        acquire(key, command)
    else:
        _PENDING[key] = command or " ".join(["fbgpu", *sys.argv[1:]])


def claim(root: str | os.PathLike[str]) -> None:
    """Hook of the store's writers: take a lock registered by :func:`lock_for_command` for a
    store that did not exist yet. A dictionary lookup when nothing is pending."""
    if not _PENDING:
        return
    key = _key(root)
    command = _PENDING.get(key)
    if command is not None:
        key.mkdir(parents=True, exist_ok=True)
        acquire(key, command)


def is_held(root: str | os.PathLike[str]) -> bool:
    """Whether this process holds ``root``'s lock."""
    return _key(root) in _HELD


@contextlib.contextmanager
def store_lock(root: str | os.PathLike[str], command: str | None = None,
               wait: float | None = None) -> Iterator[None]:
    """``with store_lock(root): ...`` holds the write lock of the existing store ``root``."""
    acquire(root, command, wait)
    try:
        yield
    finally:
        release(root)
