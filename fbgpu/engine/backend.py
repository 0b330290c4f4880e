"""Backend selection: ``cpu`` (numpy + numba) or ``gpu`` (cupy + the CUDA C kernels, kernels/).

``auto`` picks the GPU only when cupy imports *and* can really allocate and run a kernel on a
device; anything else (no cupy, no driver, no device, out of memory) falls back to the CPU and the
reason is kept in :attr:`Backend.note` for the report.
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from types import ModuleType
from typing import Any, Literal

import numpy as np

from fbgpu.engine.guard import sanctioned
from fbgpu.errors import ExitStatus

log = logging.getLogger(__name__)

BackendName = Literal["cpu", "gpu", "auto"]


class BackendError(RuntimeError):
    """The requested backend cannot be used on this machine."""

    exit_status = ExitStatus.USAGE  # fbgpu/errors.py: the command line's exit status


@dataclass(frozen=True)
class Backend:
    """A compute backend: its name, array namespace and a description of the device."""

    name: Literal["cpu", "gpu"]
    xp: ModuleType
    device: str
    info: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def is_gpu(self) -> bool:
        return self.name == "gpu"

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """Move/convert ``a`` to this backend's array type (host->device on the GPU)."""
        return self.xp.asarray(a, dtype=dtype)

    def to_host(self, a: Any) -> np.ndarray:
        """Copy ``a`` to a numpy array (a device->host transfer on the GPU).

        The explicit crossing of the device path: sanctioned and counted
        (:func:`fbgpu.engine.guard.sanctioned`).
        """
        if self.is_gpu and hasattr(a, "get"):
            with sanctioned("to_host"):
                return a.get()
        return np.asarray(a)

    def to_host_async(self, a: Any) -> Callable[[], np.ndarray]:
        """Start copying ``a`` to the host; the returned function waits for it and returns it.

        The persistence crossing of write-behind (:mod:`fbgpu.data.writebehind`), sanctioned
        and counted as ``to_host`` when it starts:

        * cupy: a copy into page-locked (pinned) host memory on a side stream, which first
          waits for the work queued so far on the current stream (the producer of ``a``); the
          caller's stream never waits for the copy. The device array is kept alive until the
          copy has landed. Waiting (in the writer's thread) synchronises on that copy alone.
        * the CPU stand-in device: the sanctioned ``.get()``, at once;
        * numpy: ``a`` itself, no copy.
        """
        if not (self.is_gpu and hasattr(a, "get")):
            host = np.asarray(a)
            return lambda: host
        if not type(a).__module__.startswith("cupy"):  # the stand-in: a host copy now
            host = self.to_host(a)
            return lambda: host
        import cupy
        import cupyx

        with sanctioned("to_host"):
            src = cupy.ascontiguousarray(a)
            stream = _side_stream()
            stream.wait_event(cupy.cuda.get_current_stream().record())
            out = cupyx.empty_pinned(src.shape, src.dtype)
            src.get(stream=stream, out=out, blocking=False)
            done = stream.record()

        def wait() -> np.ndarray:
            done.synchronize()
            _ = src  # alive until the copy has landed (the pool may not reuse it before)
            return out

        return wait


@cache
def _side_stream() -> Any:
    """The non-blocking CUDA stream of the persistence copies (one per process)."""
    import cupy

    return cupy.cuda.Stream(non_blocking=True)


@cache
def _cpu_backend() -> Backend:
    import numba

    info = {
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "numba": numba.__version__,
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "numpy": np.__version__,
    }
    return Backend("cpu", np, f"CPU ({os.cpu_count()} cores, {platform.machine()})", info)


def _probe_gpu() -> tuple[Backend | None, str]:
    """Try to build the GPU backend; return (backend, "") or (None, reason)."""
    try:
        import cupy as cp
    except Exception as e:  # ImportError, or a broken CUDA install raising at import
        return None, f"cupy not importable: {e}"
    try:
        n = cp.cuda.runtime.getDeviceCount()
        if n < 1:
            return None, "no CUDA device"
        x = cp.arange(1024, dtype=cp.float64)
        if float((x * 2).sum()) != 1023 * 1024:
            return None, "cupy computed a wrong result on the device"
        props = cp.cuda.runtime.getDeviceProperties(0)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        free, total = cp.cuda.runtime.memGetInfo()
    except Exception as e:
        return None, f"cupy cannot allocate on a GPU: {e}"
    try:
        import cudf  # noqa: F401

        has_cudf = True
    except Exception:
        has_cudf = False
    info = {
        "gpu_name": name,
        "device_count": n,
        "compute_capability": f"{props['major']}.{props['minor']}",
        "memory_total_gb": round(total / 2**30, 1),
        "memory_free_gb": round(free / 2**30, 1),
        "cupy": cp.__version__,
        "cudf": has_cudf,
    }
    info["memory_pool"] = share_torch_memory_pool()
    note = "" if has_cudf else "cudf not installed: Parquet is read with pyarrow (optional)"
    return Backend("gpu", cp, f"{name} (cc {info['compute_capability']})", info, note), ""


#: Environment variable: ``0`` keeps cupy's own memory pool (default: torch's, shared).
SHARED_POOL_ENV = "FBGPU_SHARED_POOL"


def share_torch_memory_pool(cupy_mod: Any = None, torch_mod: Any = None) -> str:
    """Route cupy's device allocations through torch's caching allocator: one memory budget.

    cupy and torch each keep a pool of freed device memory; side by side, memory cached by one
    is out of the other's reach (a day's factors leave gigabytes in cupy's pool that training
    then cannot use, and the reverse). With ``cupy.cuda.set_allocator`` on a
    ``PythonFunctionAllocator`` whose malloc is ``torch.cuda.caching_allocator_alloc(size,
    device, stream)`` (on cupy's current stream: the stream that uses the block) and whose free
    is ``torch.cuda.caching_allocator_delete``, every cupy array lives in torch's pool, so
    ``torch.cuda.memory_allocated`` counts both and either can reuse what the other freed.
    Called once, when the GPU backend is built (``_probe_gpu``); process-wide.

    Returns what was done, for ``Backend.info["memory_pool"]``: ``"torch"`` when shared, else
    ``"cupy (reason)"`` (torch without CUDA, ``FBGPU_SHARED_POOL=0``, or an error, logged).
    ``cupy_mod``/``torch_mod`` default to the real modules (the tests pass recording fakes).
    """
    if os.environ.get(SHARED_POOL_ENV, "1") == "0":
        return f"cupy ({SHARED_POOL_ENV}=0)"
    try:
        if cupy_mod is None:
            import cupy as cupy_mod
        if torch_mod is None:
            import torch as torch_mod
        if not torch_mod.cuda.is_available():
            return "cupy (torch has no CUDA)"
        cp, torch = cupy_mod, torch_mod

        def malloc(size: int, device_id: int) -> int:
            return int(torch.cuda.caching_allocator_alloc(
                size, device_id, cp.cuda.get_current_stream().ptr))

        def free(ptr: int, device_id: int) -> None:
            torch.cuda.caching_allocator_delete(ptr)

        allocator = cp.cuda.memory.PythonFunctionAllocator(malloc, free)
        cp.cuda.set_allocator(allocator.malloc)
    except Exception as e:  # keep cupy's pool: two budgets, but a working backend
        log.warning("cupy keeps its own memory pool (torch's could not be shared: %s)", e)
        return f"cupy ({type(e).__name__}: {e})"
    log.debug("cupy allocates through torch's caching allocator")
    return "torch"


@cache
def _gpu_backend_or_reason() -> tuple[Backend | None, str]:
    return _probe_gpu()


def get_backend(name: BackendName | str = "auto") -> Backend:
    """The backend called ``name``: ``cpu``, ``gpu`` (error if unusable) or ``auto``."""
    if isinstance(name, Backend):
        return name
    name = (name or "auto").lower()
    if name == "cpu":
        return _cpu_backend()
    if name in ("gpu", "auto"):
        gpu, reason = _gpu_backend_or_reason()
        if gpu is not None:
            return gpu
        if name == "gpu":
            raise BackendError(f"GPU backend requested but unusable: {reason}")
        return _auto_cpu_backend(reason)
    raise BackendError(f"unknown backend {name!r}: choose cpu, gpu or auto")


@cache
def _auto_cpu_backend(reason: str) -> Backend:
    """The CPU backend that ``auto`` falls back to, logged once per process (every step of a
    run asks for the backend; the demo used to log the same line eight times)."""
    cpu = _cpu_backend()
    log.info("auto backend: using the CPU (%s)", reason)
    return Backend(cpu.name, cpu.xp, cpu.device, cpu.info, note=f"GPU not used: {reason}")


def array_module(a: Any) -> ModuleType:
    """numpy, cupy or the stand-in device's namespace, whichever owns ``a`` (the ``xp`` of an
    existing array)."""
    mod = type(a).__module__
    if mod.startswith("cupy"):
        import cupy

        return cupy
    if mod == "fbgpu.engine.standin":  # the CPU stand-in device's arrays
        from fbgpu.engine.standin import STANDIN

        return STANDIN
    return np
