"""Hand-off from the array backends to torch, and a guard that counts device->host transfers.

* :func:`to_torch` turns a numpy or cupy array into a torch tensor through DLPack
  (``torch.from_dlpack``): zero copy, same memory, same device. Only a dtype change (float64 ->
  float32) copies, and that copy stays on the array's device.
* :class:`TransferGuard` patches the calls through which data leave a device (cupy ``asnumpy``
  and ``ndarray.get``; torch ``Tensor.cpu/.numpy/.tolist/.item`` and ``.to("cpu")``) and records
  every call made while it is active. ``.item()`` is a scalar synchronisation (early stopping
  reads one validation IC per epoch) and is counted apart from array transfers. With
  ``device_path=True`` (opened by :class:`fbgpu.models.syncmode.StrictSyncMode` on the stand-in
  device) it also reports blocking ``.to(<device>)`` calls and ``torch.tensor``/``as_tensor`` of
  host data with a ``device``, and hands each unsanctioned one to ``on_violation``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fbgpu.engine.guard import sanctioned_reason
from fbgpu.models import syncmode as _syncmode  # noqa: F401  (registers the stand-in audit)

log = logging.getLogger(__name__)


def torch_device(backend: Any) -> torch.device:
    """``cuda`` for the GPU backend, ``cpu`` otherwise.

    ``backend`` is a :class:`fbgpu.engine.backend.Backend` or its name. The CPU stand-in device
    (:func:`fbgpu.engine.standin.standin_backend`, a ``gpu`` backend whose arrays are host
    memory) trains with torch on the CPU, so that CI runs the GPU backend's device path end to
    end: its arrays reach torch by DLPack as cupy's do.
    """
    from fbgpu.engine.standin import is_host_namespace

    name = getattr(backend, "name", backend)
    if name == "gpu" and not is_host_namespace(getattr(backend, "xp", None)):
        return torch.device("cuda")
    return torch.device("cpu")


@contextlib.contextmanager
def cpu_threads(n: int, device: torch.device) -> Iterator[None]:
    """torch intra-op threads = ``n`` inside the block on the CPU (0: unchanged); restored after."""
    prev = torch.get_num_threads()
    active = device.type == "cpu" and n > 0 and n != prev
    if active:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if active:
            torch.set_num_threads(prev)


def upload_index(a: Any, device: torch.device) -> torch.Tensor:
    """An int64 index array built on the host, on ``device`` without a stream sync.

    On CUDA the host copy is pinned and uploaded with ``non_blocking=True`` (a pageable upload
    synchronises the stream, which the sync guard rightly rejects; torch's pinned-memory pool
    keeps the buffer until the copy has run). On the CPU it is the array itself, through the
    same non-blocking call (a no-op there), so the stand-in's audit checks the GPU's call.
    """
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))
    if device.type == "cuda":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def to_torch(a: Any, device: torch.device | None = None, dtype: torch.dtype | None = None) -> Any:
    """A torch view of ``a`` (numpy/cupy/torch) via DLPack; copies only to change dtype/device.

    ``device`` is a consistency check, not a move: a host array is never silently uploaded for
    a CUDA device here (the caller does that once, with the backend's ``asarray``).
    """
    if isinstance(a, torch.Tensor):
        t = a
    elif isinstance(a, np.ndarray):
        if a.dtype == np.bool_:
            t = torch.from_dlpack(a)
        else:
            t = torch.from_dlpack(np.ascontiguousarray(a) if not a.flags.c_contiguous else a)
    else:
        t = torch.from_dlpack(a)  # cupy and any other DLPack producer
    if device is not None and t.device.type != device.type:
        if t.device.type == "cpu":
            t = t.to(device)  # host -> device upload (allowed; never the other way)
        else:
            raise ValueError(f"array lives on {t.device}, expected {device}")
    if dtype is not None and t.dtype != dtype:
        t = t.to(dtype)
    return t


#: Why each patched call synchronises a GPU (the messages of the device-path audit).
_WHY = {
    "torch.Tensor.cpu": "a blocking device->host copy",
    "torch.Tensor.numpy": "device data read on the host",
    "torch.Tensor.tolist": "device data read on the host",
    "torch.Tensor.to(device)": "a blocking copy between host and device: pass "
                               "non_blocking=True from pinned memory, or sanction it",
    "torch.tensor(host data, device=)": "a pageable host->device upload",
    "torch.as_tensor(host data, device=)": "a pageable host->device upload",
}


@dataclass
class TransferEvent:
    """One guarded call: which API, how many elements, from which device, where from, and
    whether it was a sanctioned crossing."""

    api: str
    numel: int
    device: str
    where: str
    sanctioned: str = ""  # the reason, when made inside fbgpu.engine.guard.sanctioned


@dataclass
class TransferGuard:
    """Context manager recording device->host transfer calls made inside it.

    ``array_transfers`` lists the calls that move arrays (``.cpu()``, ``.numpy()``, ``.tolist()``,
    ``.to("cpu")`` of a device tensor, ``cupy.asnumpy``, ``cupy.ndarray.get``);
    ``scalar_syncs`` the ``.item()`` calls. With ``strict=True`` the first array transfer raises.
    On the CPU backend the same calls are counted (they would be copies or hand-offs out of
    the pipeline), so a CPU run proves the pipeline does not make them either.
    """

    strict: bool = False
    #: The stand-in's device path (:class:`fbgpu.models.syncmode.StrictSyncMode` opens it so):
    #: torch's device is the CPU there, so every tensor counts as device memory; ``.numpy()``,
    #: ``.tolist()``, ``.cpu()``, ``.to(<device>)`` without ``non_blocking=True`` and
    #: ``torch.tensor``/``torch.as_tensor`` of host data with a ``device`` are reported to
    #: ``on_violation`` outside sanctioned blocks (``.item()`` is left to the dispatch mode).
    device_path: bool = False
    on_violation: Callable[[str], None] | None = None
    events: list[TransferEvent] = field(default_factory=list)
    _restore: list[Callable[[], None]] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _depth: int = 0

    @property
    def array_transfers(self) -> list[TransferEvent]:
        """Unsanctioned array transfers (each one a defect of the device path)."""
        return [e for e in self.events if e.api != "torch.Tensor.item" and not e.sanctioned]

    @property
    def scalar_syncs(self) -> list[TransferEvent]:
        """Unsanctioned ``.item()`` calls."""
        return [e for e in self.events if e.api == "torch.Tensor.item" and not e.sanctioned]

    @property
    def sanctioned(self) -> list[TransferEvent]:
        """Calls made inside :func:`fbgpu.engine.guard.sanctioned` (allowed, named crossings)."""
        return [e for e in self.events if e.sanctioned]

    def _record(self, api: str, obj: Any) -> None:
        if self._depth:  # a guarded call made by another guarded call is one transfer
            return
        numel = int(getattr(obj, "numel", lambda: getattr(obj, "size", 1))())
        if not isinstance(numel, int):
            numel = int(np.prod(getattr(obj, "shape", ())))
        dev = str(getattr(obj, "device", "?"))
        frame = traceback.extract_stack(limit=4)[0]
        ev = TransferEvent(api, numel, dev, f"{frame.filename}:{frame.lineno}",
                           sanctioned_reason() or "")
        with self._lock:
            self.events.append(ev)
        if self.strict and api != "torch.Tensor.item" and not ev.sanctioned:
            raise RuntimeError(f"device->host transfer inside a TransferGuard: {ev}")
        if (self.device_path and self.on_violation is not None and not ev.sanctioned
                and api != "torch.Tensor.item"):
            self.on_violation(f"{api} ({_WHY.get(api, 'a device->host copy')})")

    def _call_inner(self, original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``original(*args, **kwargs)`` with the guard one level deep: the guarded calls it
        makes itself are part of this one transfer, not new ones (:meth:`_record`)."""
        self._depth += 1
        try:
            return original(*args, **kwargs)
        finally:
            self._depth -= 1

    def _wrap_method(
        self, owner: Any, name: str, api: str, only_if: Callable[..., bool] | None = None
    ) -> None:
        had = name in owner.__dict__
        original = getattr(owner, name)
        guard = self

        def wrapper(obj: Any, *args: Any, **kwargs: Any) -> Any:
            if only_if is None or only_if(obj, *args, **kwargs):
                guard._record(api, obj)
            return guard._call_inner(original, obj, *args, **kwargs)

        setattr(owner, name, wrapper)
        if had:
            self._restore.append(lambda: setattr(owner, name, original))
        else:
            self._restore.append(lambda: delattr(owner, name))

    def _wrap_factory(self, name: str) -> None:
        """Patch ``torch.<name>(data, ..., device=...)``: host data made on a device (a pageable
        upload, synchronous on CUDA) is recorded."""
        original = getattr(torch, name)
        guard = self

        def factory(data: Any, *args: Any, **kwargs: Any) -> Any:
            if kwargs.get("device") is not None and not isinstance(data, torch.Tensor):
                guard._record(f"torch.{name}(host data, device=)", np.asarray(data))
            return guard._call_inner(original, data, *args, **kwargs)

        setattr(torch, name, factory)
        self._restore.append(lambda: setattr(torch, name, original))

    def __enter__(self) -> TransferGuard:
        T = torch.Tensor
        for name in ("cpu", "numpy", "tolist", "item"):
            self._wrap_method(T, name, f"torch.Tensor.{name}")

        def _to_host(t: Any, *args: Any, **kwargs: Any) -> bool:
            target = kwargs.get("device", args[0] if args else None)
            if isinstance(target, str | torch.device):
                return torch.device(target).type == "cpu" and t.device.type != "cpu"
            return False

        def _to_sync(t: Any, *args: Any, **kwargs: Any) -> bool:
            # On the stand-in torch's device is the CPU: a .to(<device>) is a download or a
            # pageable upload on a GPU (both synchronous) unless non_blocking=True.
            target = kwargs.get("device", args[0] if args else None)
            blocking = not kwargs.get("non_blocking", len(args) > 2 and bool(args[2]))
            return isinstance(target, str | torch.device) and blocking

        if self.device_path:
            self._wrap_method(T, "to", "torch.Tensor.to(device)", only_if=_to_sync)
            for fn in ("tensor", "as_tensor"):
                self._wrap_factory(fn)
        else:
            self._wrap_method(T, "to", "torch.Tensor.to(cpu)", only_if=_to_host)
        try:
            import cupy
        except Exception:  # no cupy (CPU machine): nothing to patch
            return self
        original_asnumpy = cupy.asnumpy
        guard = self

        def asnumpy(a: Any, *args: Any, **kwargs: Any) -> Any:
            guard._record("cupy.asnumpy", a)
            guard._depth += 1
            try:
                return original_asnumpy(a, *args, **kwargs)
            finally:
                guard._depth -= 1

        cupy.asnumpy = asnumpy
        self._restore.append(lambda: setattr(cupy, "asnumpy", original_asnumpy))
        try:
            self._wrap_method(cupy.ndarray, "get", "cupy.ndarray.get")
        except TypeError:
            # cupy.ndarray is an extension type whose methods cannot be replaced; the pipeline
            # hands cupy arrays to torch (DLPack) before any model code runs, so the torch
            # patches cover it.
            log.debug("cannot patch cupy.ndarray.get; counting cupy.asnumpy only")
        return self

    def __exit__(self, *exc: object) -> None:
        for undo in reversed(self._restore):
            undo()
        self._restore.clear()
        if self.array_transfers:
            log.debug("transfer guard saw %d array transfers", len(self.array_transfers))
