"""Implicit device synchronisations made errors on a real GPU, with the sanctioned ones allowed.

The device path may cross to the host only where the design says so (docs/engine.md, "The
device-resident pipeline"): persistence copies, the scores handed to OSQP, and scalars a human
or a decision needs (per-epoch early-stopping metrics). Every such crossing runs inside
:func:`sanctioned`, which names it and counts it in :data:`SANCTIONED`.

:func:`device_sync_guard` runs a block with torch's CUDA sync debug mode set to ``"error"``
(``torch.cuda.set_sync_debug_mode``): any torch operation that synchronises the device outside
a sanctioned block (``.item()``, ``.cpu()``, boolean-mask indexing, ``nonzero``, ...) raises.
Inside :func:`sanctioned` the mode is lifted and restored afterwards. CuPy has no such mode; its
implicit crossings are caught in CI by the stand-in device (:mod:`fbgpu.engine.standin`), which
raises on each of them, and on a GPU every explicit one goes through ``Backend.to_host``, which
is sanctioned and counted.

On the CPU stand-in device (:func:`fbgpu.engine.standin.standin_backend`: a ``gpu`` backend whose
arrays are host memory, torch running on the CPU) the guard opens the registered stand-in audits
instead (:func:`register_standin_audit`; :mod:`fbgpu.models.syncmode` registers torch's
:class:`~fbgpu.models.syncmode.StrictSyncMode` when ``fbgpu.models`` is imported): the torch ops
that sync debug mode rejects on CUDA raise (``"error"``) or are logged (``"warn"``) on the CPU,
so CI runs the same audit. (The engine does not import the models layer: the audit registers
itself.) On the CPU backend, or on a ``gpu`` backend where torch has no CUDA and the arrays are
not the stand-in's, the guard does nothing (there is no device to synchronise with) and says so
in its report. The mode is process-wide in torch, so the guard is
meant for one pipeline at a time (the demo, a benchmark, the device tests).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

#: Sanctioned crossings by reason, over the process's lifetime (tests take differences).
SANCTIONED: Counter[str] = Counter()
_lock = threading.Lock()
_active: list[str] = []  # the mode of each open guard (innermost last)
_local = threading.local()  # the reasons of the sanctioned blocks open in this thread


#: Audits the guard opens on the stand-in device: name -> factory(mode) of a context manager.
_STANDIN_AUDITS: dict[str, Callable[[str], contextlib.AbstractContextManager[Any]]] = {}


def register_standin_audit(
        name: str, factory: Callable[[str], contextlib.AbstractContextManager[Any]]) -> None:
    """Have :func:`device_sync_guard` open ``factory(mode)`` around its block on the stand-in
    device (``name`` replaces an earlier registration of the same name)."""
    with _lock:
        _STANDIN_AUDITS[name] = factory


@contextlib.contextmanager
def explicit_uploads_only() -> Iterator[None]:
    """Within the block (in this thread), host data may reach the device only through a
    sanctioned crossing (``Backend.to_device_async``, ``Backend.to_device``): an upload made
    by the array namespace itself (``xp.asarray`` of a numpy array) is an error.

    Enforced on the stand-in device (:meth:`fbgpu.engine.standin.StandinNamespace.asarray`
    raises), so a hidden upload fails a CPU test; on cupy nothing checks it (``cupy.asarray``
    of host data is a pageable copy that waits for the stream), and on numpy there is no
    upload. Blocks nest.
    """
    depth = getattr(_local, "explicit_uploads", 0)
    _local.explicit_uploads = depth + 1
    try:
        yield
    finally:
        _local.explicit_uploads = depth


def implicit_upload_allowed() -> bool:
    """False inside :func:`explicit_uploads_only` (this thread) unless a :func:`sanctioned`
    block is open within it."""
    return not getattr(_local, "explicit_uploads", 0) or sanctioned_reason() is not None


def sanctioned_reason() -> str | None:
    """The reason of the innermost :func:`sanctioned` block open in this thread, else None
    (the CPU-side transfer guard, :class:`fbgpu.models.device.TransferGuard`, asks)."""
    stack = getattr(_local, "reasons", None)
    return stack[-1] if stack else None


@dataclass
class GuardReport:
    """What a :func:`device_sync_guard` block did: whether it was active, and its sanctioned
    crossings by reason."""

    active: bool
    mode: str
    reason: str = ""
    sanctioned: Counter[str] = field(default_factory=Counter)


def _set_mode(mode: str | int) -> None:
    import torch

    torch.cuda.set_sync_debug_mode(mode)


def _torch_cuda() -> bool:
    try:
        import torch
    except Exception:
        return False
    return bool(torch.cuda.is_available())


@contextlib.contextmanager
def device_sync_guard(backend: Any, mode: str = "error") -> Iterator[GuardReport]:
    """Run the block with implicit torch device synchronisations raising (``mode="error"``) or
    warning (``"warn"``); yields a :class:`GuardReport` filled in when the block ends.

    Inactive (a no-op) on the CPU backend and where torch has no CUDA device.
    """
    if mode not in ("error", "warn"):
        raise ValueError(f"sync guard mode must be 'error' or 'warn', got {mode!r}")
    from fbgpu.engine.standin import is_host_namespace

    if getattr(backend, "is_gpu", False) and is_host_namespace(getattr(backend, "xp", None)):
        with _standin_audits(mode) as report:
            yield report
        return
    if not getattr(backend, "is_gpu", False) or not _torch_cuda():
        yield GuardReport(False, mode, "no CUDA device: nothing to synchronise with")
        return
    import torch

    before = Counter(SANCTIONED)
    previous = torch.cuda.get_sync_debug_mode()
    report = GuardReport(True, mode)
    with _lock:
        _active.append(mode)
    _set_mode(mode)
    try:
        yield report
    finally:
        with _lock:
            _active.pop()
            outer = _active[-1] if _active else previous
        _set_mode(outer)
        report.sanctioned = Counter(SANCTIONED) - before
        log.debug("sync guard (%s): sanctioned crossings %s", mode, dict(report.sanctioned))


@contextlib.contextmanager
def _standin_audits(mode: str) -> Iterator[GuardReport]:
    """The guard on the stand-in device: every registered audit open around the block."""
    with _lock:
        audits = dict(_STANDIN_AUDITS)
    before = Counter(SANCTIONED)
    report = GuardReport(bool(audits), mode, "stand-in device: " + (
        ", ".join(sorted(audits)) + " audit" if audits else
        "no audit registered (fbgpu.models not imported)"))
    with contextlib.ExitStack() as stack:
        for name in sorted(audits):
            stack.enter_context(audits[name](mode))
        try:
            yield report
        finally:
            report.sanctioned = Counter(SANCTIONED) - before
            log.debug("sync guard (%s, stand-in): sanctioned crossings %s", mode,
                      dict(report.sanctioned))


@contextlib.contextmanager
def sanctioned(reason: str) -> Iterator[None]:
    """A crossing the device path allows (``reason`` names it): counted in :data:`SANCTIONED`,
    and run with an active :func:`device_sync_guard` lifted."""
    with _lock:
        SANCTIONED[reason] += 1
        lift = bool(_active)
        mode = _active[-1] if lift else None
    stack = getattr(_local, "reasons", None)
    if stack is None:
        stack = _local.reasons = []
    stack.append(reason)
    if lift:
        _set_mode(0)
    try:
        yield
    finally:
        stack.pop()
        if lift:
            with _lock:
                still = bool(_active)
            if still and mode is not None:
                _set_mode(mode)
