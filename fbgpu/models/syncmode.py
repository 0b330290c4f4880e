"""A CPU stand-in for torch's CUDA sync debug mode: ops that would synchronise a GPU raise.

On a GPU, :func:`fbgpu.engine.guard.device_sync_guard` sets ``torch.cuda.set_sync_debug_mode
("error")`` and torch itself raises at every implicit device synchronisation. In CI there is no
GPU: the device path runs on the stand-in backend (:func:`fbgpu.engine.standin.standin_backend`)
and torch runs on the CPU, where nothing synchronises. :class:`StrictSyncMode` rejects, on the
CPU, what sync debug mode rejects on CUDA, at two levels:

* **aten ops** (a :class:`~torch.utils._python_dispatch.TorchDispatchMode`, which sees every aten
  op the Python program calls, after composite ops are decomposed): the ops whose CUDA kernels
  call ``c10::cuda::warn_or_error_on_sync`` (directly, through ``memcpy_and_sync`` or
  ``stream_synchronize``) because they read device data on the host: a Python scalar
  (``_local_scalar_dense``: ``item()``, ``float(t)``, ``int(t)``, ``bool(t)``, ``if t:``) or an
  output shape that depends on the data (:data:`SYNCING_OPS`, and the conditional ones in
  :func:`syncing_reason`: mask indexing, ``repeat_interleave`` without ``output_size``,
  ``histc`` without a range).
* **host exits and pageable uploads** (Python methods, patched by
  :class:`fbgpu.models.device.TransferGuard` with ``device_path=True``, which the mode opens):
  ``Tensor.numpy/.tolist/.cpu`` and ``Tensor.to(<a device>)`` without ``non_blocking=True`` (on
  the stand-in torch's device *is* the CPU, so a ``.to(device)`` is a download or a pageable
  upload on a GPU, both synchronous), and ``torch.tensor``/``torch.as_tensor`` of host data with
  a ``device`` (a pageable upload).

Inside :func:`fbgpu.engine.guard.sanctioned` nothing is rejected (the block already counts the
crossing). On the stand-in every tensor counts as device memory; two torch-internal callers that
on CUDA work on *host* tensors are exempt (:data:`HOST_SIDE_CALLERS`). What this does not catch
is listed in docs/engine.md ("A guard that catches in CI"): ops that synchronise only inside a
kernel not listed here, CPU-only code paths torch takes instead of its CUDA ones, and
``torch.cuda.synchronize``-style explicit waits (which are not implicit syncs anyway).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fbgpu.engine.guard import register_standin_audit, sanctioned_reason

log = logging.getLogger(__name__)

#: aten overload packets whose CUDA kernel always synchronises (reads device data on the host).
SYNCING_OPS: dict[str, str] = {
    "_local_scalar_dense": "a Python scalar from a device tensor (item(), float(t), bool(t), if t)",
    "is_nonzero": "bool() of a device tensor",
    "equal": "torch.equal returns a Python bool",
    "allclose": "torch.allclose returns a Python bool",
    "nonzero": "output size depends on the data",
    "masked_select": "output size depends on the data",
    "_unique": "output size depends on the data",
    "_unique2": "output size depends on the data",
    "unique_consecutive": "output size depends on the data",
    "unique_dim": "output size depends on the data",
    "unique_dim_consecutive": "output size depends on the data",
    "bincount": "output size is max(x) + 1, read on the host",
    "_linalg_check_errors": "reads the LAPACK info codes on the host",
}

#: Torch modules whose ops run on tensors that are host memory on CUDA too: torch.optim's step
#: counters of non-capturable optimizers are CPU scalars (their ``.item()`` is no device sync).
HOST_SIDE_CALLERS: tuple[str, ...] = (os.path.join("torch", "optim", ""),)

_FBGPU_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SKIP_FILES = (os.path.abspath(__file__), os.path.join(_FBGPU_DIR, "models", "device.py"))


class SyncViolationError(RuntimeError):
    """An op that would synchronise the GPU ran on the device path outside a sanctioned block."""


def _mask_index(indices: Any) -> bool:
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8)
               for i in (indices or ()))


def syncing_reason(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """Why the aten op ``func`` called with ``args``/``kwargs`` synchronises a CUDA device, or
    None when it does not."""
    name = func.overloadpacket.__name__
    if name in SYNCING_OPS:
        return SYNCING_OPS[name]
    if name in ("index", "index_put", "index_put_", "_index_put_impl_", "_unsafe_index_put"):
        indices = args[1] if len(args) > 1 else kwargs.get("indices")
        if _mask_index(indices):
            return "boolean-mask indexing: output size depends on the data (a nonzero)"
    if name == "repeat_interleave" and kwargs.get("output_size") is None:
        # the Tensor overloads read sum(repeats) on the host; an int repeats is host data
        repeats = args[1] if len(args) > 1 else kwargs.get("repeats", args[0] if args else None)
        if isinstance(repeats, torch.Tensor):
            return "repeat_interleave with tensor repeats and no output_size"
    if name == "histc":
        lo = args[2] if len(args) > 2 else kwargs.get("min", 0)
        hi = args[3] if len(args) > 3 else kwargs.get("max", 0)
        if lo == hi:
            return "histc without a range reads min and max on the host"
    return None


def caller() -> tuple[str, bool]:
    """``(where, host_side)``: the innermost fbgpu frame ("file:line in function") that led to
    the current op, and whether a torch module of :data:`HOST_SIDE_CALLERS` is between it and
    the op."""
    f = sys._getframe(1)
    host_side = False
    while f is not None:
        fn = os.path.abspath(f.f_code.co_filename)
        if any(p in fn for p in HOST_SIDE_CALLERS):
            host_side = True
        if fn.startswith(_FBGPU_DIR) and fn not in _SKIP_FILES:
            rel = os.path.relpath(fn, os.path.dirname(_FBGPU_DIR))
            return f"{rel}:{f.f_lineno} in {f.f_code.co_name}", host_side
        f = f.f_back
    return "(no fbgpu frame)", host_side


class StrictSyncMode(TorchDispatchMode):
    """Reject (``mode="error"``) or log (``"warn"``) torch ops that would synchronise a CUDA
    device, outside :func:`fbgpu.engine.guard.sanctioned` blocks.

    The dispatch mode is thread-local (torch's mode stack); the Python-level patches of
    :class:`fbgpu.models.device.TransferGuard` are process-wide while open. ``violations``
    lists what was seen (``"warn"`` mode keeps going).
    """

    def __init__(self, mode: str = "error") -> None:
        super().__init__()
        if mode not in ("error", "warn"):
            raise ValueError(f"strict sync mode must be 'error' or 'warn', got {mode!r}")
        self.mode = mode
        self.violations: list[str] = []
        self._exits: Any = None

    def report(self, what: str, where: str | None = None) -> None:
        """Record one violation (``where``: the calling fbgpu frame, found when not given):
        raise in ``"error"`` mode, log in ``"warn"`` mode."""
        if where is None:
            where, host_side = caller()
            if host_side:  # e.g. torch.optim's torch.tensor(..., device="cpu"): host on CUDA
                return
        msg = (f"{what}, called from {where}: on a GPU this synchronises the device "
               "(torch's sync debug mode raises). Keep it on the device, or cross inside "
               "fbgpu.engine.guard.sanctioned(reason)")
        self.violations.append(msg)
        if self.mode == "error":
            raise SyncViolationError(msg)
        log.warning("strict sync mode: %s", msg)

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        if sanctioned_reason() is None:
            why = syncing_reason(func, args, kwargs)
            if why is not None:
                where, host_side = caller()
                if not host_side:
                    self.report(f"aten.{func.overloadpacket.__name__} ({why})", where)
        return func(*args, **kwargs)

    def __enter__(self) -> StrictSyncMode:
        from fbgpu.models.device import TransferGuard

        self._exits = TransferGuard(device_path=True, on_violation=self.report)
        self._exits.__enter__()
        try:
            super().__enter__()
        except BaseException:
            self._exits.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            super().__exit__(*exc)
        finally:
            if self._exits is not None:
                self._exits.__exit__(*exc)
                self._exits = None


def strict_sync_mode(mode: str) -> StrictSyncMode:
    """The audit :func:`fbgpu.engine.guard.device_sync_guard` opens on the stand-in backend."""
    return StrictSyncMode(mode)


_factory: Callable[[str], Any] = strict_sync_mode
register_standin_audit("torch", _factory)
