"""The CUDA C kernels of ``kernels/`` and the two ways to run them.

* :class:`DeviceKernels`: on a CUDA device, compiled at first use by NVRTC through
  ``cupy.RawModule`` for the device at hand (sm_90 on an H100/H200), launched on cupy arrays on
  the current stream. A launch is asynchronous: it never synchronises with the host.
* :class:`EmulatedKernels`: on the CPU, the same source built by the host C++ compiler with
  ``kernels/host_emulation.h`` (blocks run one after another, a block's threads are real
  threads meeting at ``__syncthreads`` on a barrier), launched on numpy arrays through ctypes.
  This is how CI, which has no GPU, runs the GPU kernels' semantics; the build is cached per
  source hash.

Both take arguments the way ``cuLaunchKernel`` does: arrays (cupy or numpy, C-contiguous) and
numpy scalars whose dtype is the C parameter's type (``np.bool_`` for ``bool``, ``np.int64`` for
``long long``, ``np.float64`` for ``double``).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

def _kernel_dir() -> Path:
    """``kernels/`` at the top of the checkout (editable installs, Docker images), else the copy
    a wheel ships as ``fbgpu/_kernels`` (setup.py)."""
    here = Path(__file__).resolve()
    checkout = here.parents[2] / "kernels"
    return checkout if (checkout / "segments.cu").is_file() else here.parents[1] / "_kernels"


#: The folder of the CUDA C sources.
KERNEL_DIR = _kernel_dir()
#: The sources compiled into one module (their kernels are ``extern "C"``).
SOURCES = ("segments.cu",)
#: Every kernel of :data:`SOURCES` (also the host emulation's dispatch list).
KERNEL_NAMES = (
    "seg_sum", "seg_moments", "seg_corr", "seg_bin_sum", "group_total", "seg_group_total",
    "seg_threshold_mask", "seg_topk_mask", "segment_ids", "ordered_column_sum",
    # the fused family passes (GpuSegmentOps.order_family_stats, ...; docs/engine.md)
    "fused_order_stats", "trade_order_moments", "fused_trade_bins", "fused_minute_stats",
)
#: Threads per block on a device (a power of two; the tree reductions halve it).
DEVICE_BLOCK = 256
#: Threads per block under emulation: small, so that a launch spawns few threads, and so that
#: tests with short segments still cross block-width boundaries.
EMULATED_BLOCK = 8
#: Bins one ``seg_bin_sum`` launch covers per thread (``BINS_PER_THREAD`` in the source).
BINS_PER_THREAD = 4
#: ``seg_group_total``'s shared-memory cap on a device (``FBGPU_GROUP_CAP``, elements): a
#: segment of up to this many elements is sorted in shared memory (12 bytes an element: 48 KiB,
#: the static limit of a block); a longer one sorts in global scratch, chunk by chunk.
DEVICE_GROUP_CAP = 4096
#: The same cap under emulation: tiny, so that tests with short segments take both paths (a
#: segment of up to 16 elements in shared memory, a longer one through the scratch).
EMULATED_GROUP_CAP = 16


class KernelBuildError(RuntimeError):
    """The CUDA C sources could not be compiled (NVRTC on a device, the C++ compiler on a host)."""


def kernel_source() -> str:
    """The concatenated CUDA C sources (what NVRTC compiles)."""
    missing = [s for s in SOURCES if not (KERNEL_DIR / s).is_file()]
    if missing:
        raise KernelBuildError(f"CUDA C sources not found in {KERNEL_DIR}: {missing} (fbgpu "
                               "runs its GPU kernels from the repository's kernels/ folder)")
    return "\n".join((KERNEL_DIR / s).read_text() for s in SOURCES)


def source_hash() -> str:
    """A hash of every file in ``kernels/`` that a build reads."""
    h = hashlib.sha256()
    for name in (*SOURCES, "host_emulation.h", "host_emulation.cpp"):
        p = KERNEL_DIR / name
        h.update(name.encode())
        h.update(p.read_bytes() if p.is_file() else b"")
    return h.hexdigest()[:16]


class DeviceKernels:
    """The kernels compiled by NVRTC (``cupy.RawModule``) for the current CUDA device."""

    block = DEVICE_BLOCK
    group_cap = DEVICE_GROUP_CAP
    emulated = False

    def __init__(self) -> None:
        import cupy as cp

        options = ("-std=c++17", "--fmad=false", f"-DFBGPU_BLOCK={self.block}",
                   f"-DFBGPU_GROUP_CAP={DEVICE_GROUP_CAP}")
        # --fmad=false: no fused multiply-adds, so every product and sum rounds as on the CPU
        # (the backends then differ only by the order of additions inside a block reduction).
        try:
            module = cp.RawModule(code=kernel_source(), options=options)
            self._functions = {n: module.get_function(n) for n in KERNEL_NAMES}
        except Exception as e:  # cupy.cuda.compiler.CompileException and driver errors
            raise KernelBuildError(f"NVRTC could not build kernels/{SOURCES}: {e}") from e

    def launch(self, name: str, grid: int, block: int, args: tuple[Any, ...]) -> None:
        if grid > 0:
            self._functions[name]((int(grid),), (int(block),), args)


class EmulatedKernels:
    """The kernels built for the CPU (``kernels/host_emulation.cpp``), run on numpy arrays."""

    block = EMULATED_BLOCK
    group_cap = EMULATED_GROUP_CAP
    emulated = True

    def __init__(self) -> None:
        self._lib = _emulation_library()
        self._fn = self._lib.fbgpu_emulate
        self._fn.restype = ctypes.c_int
        self._fn.argtypes = [ctypes.c_char_p, ctypes.c_longlong, ctypes.c_longlong,
                             ctypes.POINTER(ctypes.c_void_p)]

    def launch(self, name: str, grid: int, block: int, args: tuple[Any, ...]) -> None:
        if grid <= 0:
            return
        keep: list[Any] = []  # the ctypes values must outlive the call
        ptrs = (ctypes.c_void_p * len(args))()
        for j, a in enumerate(args):
            if isinstance(a, np.ndarray):
                if not a.flags.c_contiguous:
                    raise ValueError(f"{name}: argument {j} is not C-contiguous")
                v: Any = ctypes.c_void_p(a.ctypes.data)
            elif isinstance(a, np.bool_):
                v = ctypes.c_bool(bool(a))
            elif isinstance(a, np.integer):
                v = ctypes.c_longlong(int(a))
            elif isinstance(a, np.floating):
                v = ctypes.c_double(float(a))
            else:
                raise TypeError(f"{name}: argument {j} must be a numpy array or numpy scalar, "
                                f"got {type(a).__name__}")
            keep.append(v)
            ptrs[j] = ctypes.cast(ctypes.pointer(v), ctypes.c_void_p)
        # The emulation's launch state (block size, the barrier, the static "__shared__" arrays)
        # is process-global, and ctypes releases the GIL: one launch at a time per process.
        with _EMULATION_LOCK:
            rc = self._fn(name.encode(), int(grid), int(block), ptrs)
        if rc != 0:
            raise KernelBuildError(f"the emulated kernels have no kernel {name!r}")


_EMULATION_LOCK = threading.Lock()


def kernel_cache_dir() -> Path:
    """The compiled-kernel cache: ``$FBGPU_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/fbgpu/kernels``,
    else ``~/.cache/fbgpu/kernels`` (the emulation's and :mod:`.cpu_aot`'s builds)."""
    root = os.environ.get("FBGPU_KERNEL_CACHE") or os.environ.get("XDG_CACHE_HOME")
    base = Path(root) if root else Path.home() / ".cache"
    return base / "fbgpu" / "kernels"


@cache
def _emulation_library() -> ctypes.CDLL:
    """Build (once per source hash) and load the host emulation library."""
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        raise KernelBuildError("no C++ compiler (g++) to build the emulated GPU kernels")
    out_dir = kernel_cache_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    lib = out_dir / f"emulated-{source_hash()}-b{EMULATED_BLOCK}-g{EMULATED_GROUP_CAP}.so"
    if not lib.exists():
        # Built under a temporary name and renamed: parallel test workers never load a half-
        # written library.
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
        os.close(fd)
        cmd = [cxx, "-std=c++20", "-O1", "-shared", "-fPIC", f"-DFBGPU_BLOCK={EMULATED_BLOCK}",
               f"-DFBGPU_GROUP_CAP={EMULATED_GROUP_CAP}", str(KERNEL_DIR / "host_emulation.cpp"),
               "-o", tmp, "-lpthread"]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            Path(tmp).unlink(missing_ok=True)
            raise KernelBuildError(f"building the emulated kernels failed ({' '.join(cmd)}):\n"
                                   f"{res.stderr[-3000:]}")
        os.replace(tmp, lib)
        log.debug("built %s", lib)
    return ctypes.CDLL(str(lib))


@cache
def device_kernels() -> DeviceKernels:
    """The NVRTC-built kernels (one module per process)."""
    return DeviceKernels()


def kernels_for(xp: Any) -> DeviceKernels | EmulatedKernels:
    """The kernels that run on ``xp``'s arrays: the device's for cupy, the emulation's for numpy
    and for the CPU stand-in device (:mod:`fbgpu.engine.standin`)."""
    from fbgpu.engine.standin import is_host_namespace

    if is_host_namespace(xp):
        return emulated_kernels()
    return device_kernels()


@cache
def emulated_kernels() -> EmulatedKernels:
    """The host-emulated kernels (one library per process)."""
    return EmulatedKernels()


def _find_nvrtc() -> str | None:
    """Path of libnvrtc: the nvidia-cuda-nvrtc wheel's, else the CUDA toolkit's, else None."""
    import glob
    import site
    import sys

    roots = [*site.getsitepackages(), site.getusersitepackages(), *sys.path]
    for root in roots:
        for pattern in ("nvidia/cu*/lib/libnvrtc.so*", "nvidia/cuda_nvrtc/lib/libnvrtc.so*"):
            hits = sorted(p for p in glob.glob(str(Path(root) / pattern)) if "builtins" not in p)
            if hits:
                return hits[-1]
    for cand in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if cand:
            hits = sorted(glob.glob(str(Path(cand) / "lib64" / "libnvrtc.so*")))
            if hits:
                return hits[-1]
    return None


def nvrtc_ptx(arch: str = "sm_90", block: int = DEVICE_BLOCK) -> str:
    """Compile :func:`kernel_source` with NVRTC for ``arch`` (no GPU needed) and return the PTX.

    The same compiler and options as :class:`DeviceKernels` (cupy.RawModule is NVRTC), so CI
    checks the exact build a Hopper device makes. Raises :class:`KernelBuildError` with NVRTC's
    log on a compile error, or when no libnvrtc is installed.
    """
    path = _find_nvrtc()
    if path is None:
        raise KernelBuildError("libnvrtc not found (pip install nvidia-cuda-nvrtc)")
    lib = ctypes.CDLL(path)
    prog = ctypes.c_void_p()
    src = kernel_source().encode()

    def check(rc: int, what: str) -> None:
        if rc != 0:
            lib.nvrtcGetErrorString.restype = ctypes.c_char_p
            raise KernelBuildError(f"{what}: {lib.nvrtcGetErrorString(rc).decode()}")

    check(lib.nvrtcCreateProgram(ctypes.byref(prog), src, b"segments.cu", 0, None, None),
          "nvrtcCreateProgram")
    try:
        opts = [b"-std=c++17", b"--fmad=false", f"-DFBGPU_BLOCK={block}".encode(),
                f"-DFBGPU_GROUP_CAP={DEVICE_GROUP_CAP}".encode(),
                f"--gpu-architecture=compute_{arch.removeprefix('sm_')}".encode()]
        arr = (ctypes.c_char_p * len(opts))(*opts)
        rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
        if rc != 0:
            size = ctypes.c_size_t()
            lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            buf = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetProgramLog(prog, buf)
            raise KernelBuildError(f"NVRTC ({path}) could not compile kernels/ for {arch}:\n"
                                   f"{buf.value.decode(errors='replace')}")
        size = ctypes.c_size_t()
        check(lib.nvrtcGetPTXSize(prog, ctypes.byref(size)), "nvrtcGetPTXSize")
        buf = ctypes.create_string_buffer(size.value)
        check(lib.nvrtcGetPTX(prog, buf), "nvrtcGetPTX")
        return buf.value.decode()
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
