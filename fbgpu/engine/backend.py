"""Backend selection: ``cpu`` (numpy + numba) or ``gpu`` (cupy + the CUDA C kernels, kernels/).

``auto`` picks the GPU only when cupy imports *and* can really allocate and run a kernel on a
device; anything else (no cupy, no driver, no device, out of memory) falls back to the CPU and the
reason is kept in :attr:`Backend.note` for the report.
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Callable, Sequence
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

    def to_device(self, a: Any) -> Any:
        """Upload the small host array ``a`` now (index metadata: positions in a universe, a
        kernel's column list), :func:`index_to_device`. Bulk inputs go through
        :meth:`to_device_async` instead."""
        return index_to_device(self.xp, a)

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

    def staging_pool(self, slots: int = 2) -> StagingPool:
        """A :class:`StagingPool` for :meth:`to_device_async` on this backend: page-locked
        (pinned) host buffers on cupy (``cupyx.empty_pinned``), plain numpy buffers on the
        stand-in device (the same reuse logic, testable without a GPU)."""
        if self.is_gpu and self.xp.__name__.startswith("cupy"):
            import cupyx

            return StagingPool(slots, lambda n: cupyx.empty_pinned((n,), np.uint8))
        return StagingPool(slots)

    def compute_event(self) -> Any:
        """An event recorded now on the current (compute) stream, for an upload to wait on
        (:meth:`to_device_async` ``after``); None off cupy (nothing runs asynchronously)."""
        if self.is_gpu and self.xp.__name__.startswith("cupy"):
            return self.xp.cuda.get_current_stream().record()
        return None

    def to_device_async(self, arrays: Sequence[Any], staging: StagingPool | None = None,
                        after: Any = None) -> Callable[[], list[Any]]:
        """Start copying the host ``arrays`` to the device; the returned function makes the
        caller's (compute) stream wait for the copies and returns the device arrays.

        The upload crossing of the raw inputs, the mirror of :meth:`to_host_async`; one call
        is one sanctioned ``to_device`` crossing (:func:`fbgpu.engine.guard.sanctioned`):

        * cupy: the arrays are copied (host memcpy, in the calling thread) into one of
          ``staging``'s page-locked buffers, each at a 256-byte-aligned offset, then copied
          to freshly allocated device arrays with ``ndarray.set(..., stream=side)`` on a
          non-blocking side stream (:func:`_upload_stream`), which first waits for ``after``
          (an event of the compute stream, :meth:`compute_event`: device memory the pool
          hands the new arrays may have been freed by kernels queued before it). An event
          recorded after the copies is kept with the staging slot (the slot is not written
          again before it completed) and waited on by the compute stream when the returned
          function is called (``stream.wait_event``: the host does not block).
        * the CPU stand-in device: the same staging, then the counted ``xp.asarray`` upload
          of a copy (the stand-in's device arrays must not alias the reused staging buffer);
        * numpy: the arrays themselves, no copy.

        Arrays already on the device (a cudf read) are handed back as they are. Without
        ``staging`` a one-slot pool is made for this call (a one-off upload: a run passes its
        one pool, :func:`fbgpu.factors.compute.run_staging`), and on cupy the returned function
        waits on the host for the copy to end, since nothing else keeps that pinned buffer
        from being reused while the copy reads it.
        """
        if not self.is_gpu:
            same = list(arrays)
            return lambda: same
        on_device = [array_module(a) is not np for a in arrays]
        if any(on_device):  # already there (decoded on the GPU by cudf): passed through
            at = [i for i, dev in enumerate(on_device) if not dev]
            up = self.to_device_async([arrays[i] for i in at], staging, after)

            def merged() -> list[Any]:
                out = list(arrays)
                for i, a in zip(at, up(), strict=True):
                    out[i] = a
                return out

            return merged
        host = [np.ascontiguousarray(a) for a in arrays]
        offsets, total = _staging_layout(host)
        pool = staging if staging is not None else self.staging_pool(1)
        cupy_dev = self.xp.__name__.startswith("cupy")
        with sanctioned("to_device"):
            slot, buf = pool.acquire(total)
            views = []
            for a, off in zip(host, offsets, strict=True):
                v = buf[off:off + a.nbytes].view(a.dtype).reshape(a.shape)
                np.copyto(v, a)
                views.append(v)
            if not cupy_dev:  # the stand-in: counted uploads of copies, done at once
                devs = [self.xp.asarray(v.copy()) for v in views]
                pool.release(slot, _DONE)
                return lambda: devs
            cp = self.xp
            stream = _upload_stream()
            if after is not None:
                stream.wait_event(after)
            with stream:  # allocated in the stream's pool, ordered after ``after``
                devs = [cp.empty(a.shape, a.dtype) for a in host]
                for d, v in zip(devs, views, strict=True):
                    if v.size:
                        d.set(v, stream=stream)
            done = stream.record()
            pool.release(slot, done)

        if staging is None:
            # A one-off pool: nothing else holds its pinned buffer, which cupy's pinned pool
            # may hand out again once freed (it does not track the stream still reading it),
            # so the copy must end before ``buf`` is dropped: the host waits here, inside the
            # crossing (a one-off upload: runs pass their pool and never block).
            held = (pool, buf)  # referenced below: alive until the copy has ended

            def wait_one_off() -> list[Any]:
                with sanctioned("to_device"):
                    done.synchronize()
                held[1].shape  # noqa: B018 - the buffer is released only after this call
                return devs

            return wait_one_off

        def wait() -> list[Any]:
            cp.cuda.get_current_stream().wait_event(done)
            return devs

        return wait


def index_to_device(xp: Any, a: Any) -> Any:
    """``a`` (a small host array: kilobytes of index metadata) as an array of ``xp``'s device:
    the explicit upload of :func:`fbgpu.engine.guard.explicit_uploads_only` blocks, sanctioned
    and counted as ``to_device index`` (on cupy a blocking pageable copy, cheap at this size;
    not staged). On numpy ``np.asarray(a)``, no copy; device data is returned as it is."""
    if xp is np or array_module(a) is not np:
        return xp.asarray(a)
    with sanctioned("to_device index"):
        return xp.asarray(a)


#: Alignment of each array in a staging buffer (bytes): what cupy's allocator gives device
#: arrays, so DMA copies start aligned.
STAGING_ALIGN = 256


def _staging_layout(arrays: Sequence[np.ndarray]) -> tuple[list[int], int]:
    """Byte offset of each array in a staging buffer (aligned) and the bytes needed."""
    offsets, at = [], 0
    for a in arrays:
        offsets.append(at)
        at += -(-a.nbytes // STAGING_ALIGN) * STAGING_ALIGN
    return offsets, at


class _Done:
    """An already completed event (the stand-in's uploads finish at once)."""

    def synchronize(self) -> None:
        return None


_DONE = _Done()


class StagingPool:
    """Reusable host staging buffers of :meth:`Backend.to_device_async`, one per slot, used
    round-robin; grown (reallocated, rounded up to 1 MiB) when a day needs more bytes.

    Lifetime: a slot's buffer holds one upload's source until that upload's event completed.
    :meth:`acquire` waits for the event of the slot's previous upload before handing the
    buffer out again, so day ``k + 2``'s read cannot overwrite day ``k``'s bytes before they
    reached the device. With two slots (double buffering) and one reader thread, staging
    day ``k + 1`` never waits for day ``k``'s copy, and day ``k + 2``'s wait is for a copy the
    compute stream has already waited on. Not thread-safe: one thread at a time uses a pool
    (a run's pool, :func:`fbgpu.factors.compute.run_staging`, passes from one reader thread to
    the next, never used by two at once).
    """

    def __init__(self, slots: int = 2, alloc: Callable[[int], np.ndarray] | None = None) -> None:
        if slots < 1:
            raise ValueError(f"a staging pool needs at least one slot, got {slots}")
        self.buffers: list[np.ndarray | None] = [None] * slots
        self.events: list[Any] = [None] * slots
        self.grown = 0  #: buffers allocated so far (for tests and logs)
        self._alloc = alloc or (lambda n: np.empty(n, dtype=np.uint8))
        self._next = 0

    def acquire(self, nbytes: int) -> tuple[int, np.ndarray]:
        """The next slot and its buffer (at least ``nbytes``), once its last upload landed."""
        i = self._next
        self._next = (i + 1) % len(self.buffers)
        if self.events[i] is not None:
            self.events[i].synchronize()
            self.events[i] = None
        buf = self.buffers[i]
        if buf is None or buf.nbytes < nbytes:
            self.buffers[i] = None  # the old buffer goes back to its pool first
            buf = self.buffers[i] = self._alloc(max(1, -(-nbytes // 2**20)) * 2**20)
            self.grown += 1
        return i, buf

    def release(self, slot: int, event: Any) -> None:
        """Record ``event`` (completes when the slot's upload has landed) for the slot."""
        self.events[slot] = event


@cache
def _side_stream() -> Any:
    """The non-blocking CUDA stream of the persistence copies (one per process)."""
    import cupy

    return cupy.cuda.Stream(non_blocking=True)


@cache
def _upload_stream() -> Any:
    """The non-blocking CUDA stream of the input uploads (one per process; not the
    persistence stream, so an upload does not queue behind a device->host copy)."""
    import cupy

    return cupy.cuda.Stream(non_blocking=True)


def _cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else ``platform.machine()``. Not
    ``platform.processor()``: on Linux it runs ``uname -p`` in a subprocess (~0.03 s of every
    ``fbgpu factors``) to answer, at best, the machine name again."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.machine()


@cache
def _cpu_backend() -> Backend:
    from fbgpu.engine import cpu_aot

    info: dict[str, Any] = {
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
    }
    built = cpu_aot.built_manifest()
    if built is not None:  # the kernels run without numba: describe them without importing it
        info.update(numba=built["numba"], numba_threads=cpu_aot.thread_count(),
                    cpu_kernels=f"ahead-of-time {built['build_key']}")
    else:
        import numba

        info.update(numba=numba.__version__, numba_threads=numba.config.NUMBA_NUM_THREADS,
                    cpu_kernels="numba JIT")
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
