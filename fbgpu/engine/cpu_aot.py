"""The CPU kernels compiled ahead of time: numba's code, loaded without numba.

A ``fbgpu factors`` process spends ~0.37 s on numba itself before its kernels run (importing it,
its target context, loading each cached kernel into LLVM's JIT; docs/benchmarks.md,
"Start-up"), on a day whose factors take ~0.6 s. This module removes that cost for the kernels
of the factor hot path (:data:`SPECS`):

* **Build** (once per kernel source, numba/llvmlite version and CPU; needs numba, llvmlite and a
  C compiler): each kernel's own Python source (:mod:`.cpu_kernels`) is compiled by numba
  without ``parallel`` (``prange`` runs as ``range``; ``error_model="numpy"``, as numba
  compiles a ``prange`` body), behind a ``numba.cfunc`` with a C ABI
  (each array as a pointer and its shape, rebuilt with ``numba.carray``); llvmlite compiles the
  cfunc's final LLVM module for this CPU, with position-independent code, and ``cc -shared``
  links it with ``kernels/cpu_aot_runtime.c``, the few numba runtime symbols the object calls
  (allocation of a kernel's scratch arrays, the GIL helpers, the exception paths). The
  libraries and a manifest go to the kernel cache (``$FBGPU_KERNEL_CACHE``, else
  ``~/.cache/fbgpu/kernels``), under a name that hashes everything above. ``make install``
  builds them; a process that finds none builds them on its first kernel call (~20 s, once).
* **Run** (no numba): ``ctypes`` loads a kernel's library on its first call. The stocks are cut
  into chunks of about equal element counts, which a pool of threads (numba's count:
  ``NUMBA_NUM_THREADS``, else the number of cores) takes in turn; ``ctypes`` releases the GIL
  during the call, so the chunks run in parallel as ``prange``'s iterations did. Each stock is
  still computed by one thread in element order, so the values are numba's, bit for bit
  (tests/test_cpu_aot.py compares every kernel with the JIT on adversarial inputs).

A call whose argument types are not the built ones (another dtype, a non-contiguous array), a
kernel not in :data:`SPECS`, ``FBGPU_AOT=0``, or a build that failed (no compiler) goes to
numba's dispatcher as before: the ahead-of-time build is a faster route to the same code, never
the only one.

The same build compiles ``kernels/cpu_simd_order.c``, the order pass with eight stocks per
AVX-512 vector (same bits; checked against numba's kernel before it is kept), which
:meth:`AotKernels.order_stats_simd` runs where the CPU has AVX-512 and ``FBGPU_SIMD`` is not
``0`` (docs/engine.md, "The order pass in AVX-512").
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: Argument roles, for cutting a call into chunks of stocks: ``offsets`` (the CSR offsets,
#: ``S + 1``: a chunk gets ``offsets[lo:hi + 1]``, still absolute element positions),
#: ``elements`` (a per-element array, or a length-1 mask: passed whole), ``stocks`` (the
#: stock is axis 0: a chunk gets the contiguous view ``a[lo:hi]``, read or written in place),
#: ``stocks_last`` (an output whose last axis is the stock: a chunk writes its own buffer,
#: copied into place after), ``scalar``.
ROLES = ("offsets", "elements", "stocks", "stocks_last", "scalar")


@dataclass(frozen=True)
class KernelSpec:
    """One kernel of :mod:`.cpu_kernels` built ahead of time.

    ``roles``: one of :data:`ROLES` per argument. ``types``: per argument, an array as
    ``"<dtype>:<ndim>"`` (numpy dtype names) or a scalar as ``"int64"`` / ``"bool"``: the
    argument types of the factor hot path (the store's column dtypes), one build per kernel."""

    roles: tuple[str, ...]
    types: tuple[str, ...]


_E, _S, _L, _X = "elements", "stocks", "stocks_last", "scalar"

#: The kernels of a CPU ``fbgpu factors`` run (the fused family passes and the three
#: primitives the factors still call), with the argument types a store's columns give them.
SPECS: dict[str, KernelSpec] = {
    "seg_sum": KernelSpec(
        ("offsets", _E, _E, _X, _S, _S),
        ("int64:1", "float64:1", "bool:1", "bool", "int64:1", "float64:1")),
    "seg_corr": KernelSpec(
        ("offsets", _E, _E, _E, _X, _S, _S, _S, _S, _S),
        ("int64:1", "float64:1", "float64:1", "bool:1", "bool", "int64:1", "float64:1",
         "float64:1", "float64:1", "uint8:1")),
    "seg_topk_mask": KernelSpec(
        ("offsets", _E, _E, _S, _E),
        ("int64:1", "float64:1", "bool:1", "int64:1", "bool:1")),
    "fused_order_stats": KernelSpec(
        ("offsets", _E, _E, _E, _E, _E, _X, _X, _X, _X, _X, _L, _L, _L, _S),
        ("int64:1", "int64:1", "int8:1", "int64:1", "float64:1", "int8:1", "int64", "int64",
         "int64", "int64", "int64", "int64:2", "float64:3", "float64:2", "uint8:1")),
    "fused_trade_pass": KernelSpec(
        ("offsets", _E, _E, _E, _E, _E, _E, _E, _X, _X, _L, _L, _S, _S, _S),
        ("int64:1", "int64:1", "int64:1", "float64:1", "int64:1", "int8:1", "float64:1",
         "float64:1", "int64", "int64", "int64:2", "float64:3", "float64:2", "float64:2",
         "float64:2")),
    "fused_minute_stats": KernelSpec(
        (_S, _S, _S, _S, _S, _S, _S, _X, _X, _X, _L, _L, _L, _L, _L, _S),
        ("float64:2", "float64:2", "int64:2", "float64:2", "int32:2", "float64:2", "float64:2",
         "int64", "int64", "int64", "int64:2", "float64:2", "float64:3", "uint8:2",
         "float64:2", "float64:2")),
}

#: Chunks per thread of a parallel call (load balance: stocks differ in size).
CHUNKS_PER_THREAD = 4

_HERE = Path(__file__).resolve()


def _runtime_source() -> Path:
    """``kernels/cpu_aot_runtime.c`` (checkout) or the copy a wheel ships (``fbgpu/_kernels``)."""
    from fbgpu.engine.cuda_c import KERNEL_DIR

    return KERNEL_DIR / "cpu_aot_runtime.c"


def _simd_source() -> Path:
    """``kernels/cpu_simd_order.c``: the order pass with eight stocks per AVX-512 vector."""
    from fbgpu.engine.cuda_c import KERNEL_DIR

    return KERNEL_DIR / "cpu_simd_order.c"


#: The library built from :func:`_simd_source` (in the build directory, named in the manifest).
SIMD_LIBRARY = "cpu_simd_order.so"
#: Flags of the SIMD library: no contraction of a multiply and an add into one rounding (numba
#: compiles without it; an FMA would change the bits), no fast-math. The kernel function asks
#: for AVX-512 itself (a target attribute), so the library loads on any x86-64 CPU and
#: ``fbgpu_simd_supported`` runs before any AVX-512 instruction.
SIMD_CFLAGS = ("-O2", "-fPIC", "-shared", "-ffp-contract=off", "-fno-fast-math")


def _package_file(name: str, rel: str) -> bytes:
    """Bytes of file ``rel`` in installed package ``name`` (found, not imported), or b""."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return b""
    path = Path(next(iter(spec.submodule_search_locations))) / rel
    return path.read_bytes() if path.is_file() else b""


def _cpu_signature() -> bytes:
    """This CPU's model name and feature flags (``/proc/cpuinfo``), else the machine name: the
    library is compiled for the host's instruction set."""
    try:
        with open("/proc/cpuinfo", "rb") as f:
            lines = [ln for ln in f.read().split(b"\n")
                     if ln.split(b":")[0].strip() in (b"model name", b"flags")]
        return b"\n".join(dict.fromkeys(lines))
    except OSError:
        import platform

        return platform.machine().encode()


@cache
def build_key() -> str:
    """Hash of what the libraries depend on: the kernels' source (and the bars and pooling
    helpers they inline), this module, the runtime shim, numba's and llvmlite's versions, the Python
    version and the CPU. Computed without importing numba (its ``_version.py`` is read)."""
    h = hashlib.sha256()
    pkg = _HERE.parents[1]
    for path in (pkg / "engine" / "cpu_kernels.py", pkg / "engine" / "pooled.py",
                 pkg / "data" / "bars.py",
                 pkg / "data" / "bars_kernels.py", pkg / "data" / "schemas.py", _HERE,
                 _runtime_source(), _simd_source()):
        if path.is_file():
            h.update(path.read_bytes())
    for name in ("numba", "llvmlite"):
        h.update(_package_file(name, "_version.py"))
    h.update(sys.version.encode())
    h.update(_cpu_signature())
    import platform

    h.update(platform.machine().encode())
    for var in ("NUMBA_OPT", "NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES", "NUMBA_BOUNDSCHECK", "CC"):
        h.update(f"{var}={os.environ.get(var, '')}".encode())
    return h.hexdigest()[:16]


def library_dir() -> Path:
    """Where this build key's libraries live (in the kernel cache)."""
    from fbgpu.engine.cuda_c import kernel_cache_dir

    return kernel_cache_dir() / f"cpu-aot-{build_key()}"


def enabled() -> bool:
    """``FBGPU_AOT`` is not ``0`` (read per call)."""
    return os.environ.get("FBGPU_AOT", "1") != "0"


def thread_count() -> int:
    """numba's thread count when numba is loaded, else what numba would choose:
    ``NUMBA_NUM_THREADS``, else the number of cores."""
    if "numba" in sys.modules:
        return int(sys.modules["numba"].get_num_threads())
    env = os.environ.get("NUMBA_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:  # numba counts the cores this process may run on (cgroups, taskset)
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


_POOLS: dict[int, ThreadPoolExecutor] = {}  # by size; never shut down (shared)
_POOLS_LOCK = threading.Lock()


def kernel_pool(threads: int) -> ThreadPoolExecutor:
    """The process's pool of ``threads`` threads for CPU work that releases the GIL: the
    ahead-of-time kernels' chunks and the engine's split elementwise numpy calls
    (:meth:`fbgpu.engine.segments.CpuSegmentOps.log`). Made on first use and kept."""
    with _POOLS_LOCK:
        pool = _POOLS.get(threads)
        if pool is None:
            pool = _POOLS[threads] = ThreadPoolExecutor(threads,
                                                        thread_name_prefix="fbgpu-kernel")
        return pool


# --------------------------------------------------------------------------------- build
class AotBuildError(RuntimeError):
    """The ahead-of-time libraries could not be built (no compiler, a compile error)."""


def _numba_type(text: str) -> Any:
    from numba import types
    from numba.np.numpy_support import from_dtype

    if ":" in text:
        dtype, ndim = text.split(":")
        return types.Array(from_dtype(np.dtype(dtype)), int(ndim), "C")
    return {"int64": types.int64, "bool": types.boolean}[text]


def _make_cfunc(name: str, spec: KernelSpec) -> Any:
    """``numba.cfunc`` wrapper of the serial kernel ``name``: each array argument becomes a
    pointer followed by its shape (int64 each), each scalar an int64 (a bool as 0/1)."""
    import numba as nb
    from numba import carray, types

    from fbgpu.engine import cpu_kernels

    # numba compiles a prange body with error_model="numpy" (parfor_lowering): a float
    # division by zero gives inf/NaN there instead of raising; the serial build does the same.
    serial = nb.njit(parallel=False, error_model="numpy")(getattr(cpu_kernels, name).py_func)
    params: list[str] = []
    c_types: list[Any] = []
    call: list[str] = []
    for i, text in enumerate(spec.types):
        t = _numba_type(text)
        if isinstance(t, types.Array):
            dims = [f"d{i}_{k}" for k in range(t.ndim)]
            params += [f"p{i}", *dims]
            c_types += [types.CPointer(t.dtype), *[types.int64] * t.ndim]
            call.append(f"carray(p{i}, ({', '.join(dims)},))")
        else:
            params.append(f"s{i}")
            c_types.append(types.int64)
            call.append(f"s{i} != 0" if t == types.boolean else f"s{i}")
    src = f"def wrapper({', '.join(params)}):\n    serial({', '.join(call)})\n"
    namespace: dict[str, Any] = {"serial": serial, "carray": carray}
    exec(compile(src, f"<fbgpu.engine.cpu_aot {name}>", "exec"), namespace)
    return nb.cfunc(types.void(*c_types))(namespace["wrapper"])


def build(out_dir: Path | None = None) -> Path:
    """Build every kernel of :data:`SPECS` into ``out_dir`` (default :func:`library_dir`) and
    write its ``manifest.json`` last; return the directory. Built in a temporary directory and
    renamed, so a process never loads a half-written build. Raises :class:`AotBuildError`."""
    out_dir = out_dir or library_dir()
    if (out_dir / "manifest.json").is_file():
        return out_dir
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise AotBuildError("no C compiler (cc) to link the ahead-of-time CPU kernels")
    import llvmlite
    import llvmlite.binding as llvm
    import numba

    t0 = time.perf_counter()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + "-", dir=out_dir.parent))
    try:
        runtime = tmp / "runtime.o"
        _run_cc([cc, "-O2", "-fPIC", "-c", str(_runtime_source()), "-o", str(runtime)])
        # numba's first compilation initialises LLVM's native target; the machine is made after
        cfuncs = {name: _make_cfunc(name, spec) for name, spec in SPECS.items()}
        # the host's CPU and features, as numba's JIT uses them; position-independent code
        tm = llvm.Target.from_default_triple().create_target_machine(
            cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(),
            opt=3, reloc="pic", codemodel="default")
        symbols: dict[str, str] = {}
        for name, cf in cfuncs.items():
            obj = tmp / f"{name}.o"
            obj.write_bytes(tm.emit_object(llvm.parse_assembly(str(cf._library._final_module))))
            lib = tmp / f"{name}.so"
            _run_cc([cc, "-shared", "-o", str(lib), str(obj), str(runtime)])
            obj.unlink()
            try:  # every symbol resolved (ctypes binds them all at load), numba's are local
                ctypes.CDLL(str(lib))
            except OSError as e:
                raise AotBuildError(f"{name}: {e}") from e
            symbols[name] = cf.native_name
        runtime.unlink()
        manifest = {"build_key": build_key(), "symbols": symbols, "simd": _build_simd(cc, tmp),
                    "numba": numba.__version__,
                    "llvmlite": llvmlite.__version__, "cpu": llvm.get_host_cpu_name(),
                    "seconds": round(time.perf_counter() - t0, 2)}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        try:
            os.replace(tmp, out_dir)
        except OSError:  # another process finished the same build first: keep theirs
            if not (out_dir / "manifest.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except Exception:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("built the ahead-of-time CPU kernels in %.1f s -> %s", time.perf_counter() - t0,
             out_dir)
    return out_dir


def _build_simd(cc: str, out_dir: Path) -> str | None:
    """Compile :func:`_simd_source` into ``out_dir`` and, where this CPU runs it, check it
    against numba's kernel (:func:`_simd_self_test`: a compiler whose flags let it change a
    bit is caught here, not in a factor); its file name, or None (logged) when the compiler
    cannot build it (not x86-64, no AVX-512 intrinsics) or the check fails: numba's kernel
    then runs."""
    lib = out_dir / SIMD_LIBRARY
    try:
        _run_cc([cc, *SIMD_CFLAGS, str(_simd_source()), "-o", str(lib)])
        loaded = _load_simd(lib)
        if loaded is not None and not _simd_self_test(loaded):
            raise AotBuildError(f"{cc}'s build differs from numba's kernel on the check input")
    except (AotBuildError, OSError, AttributeError) as e:
        log.warning("the SIMD order pass was not built (numba's kernel runs it): %s", e)
        lib.unlink(missing_ok=True)
        return None
    return lib.name


def _load_simd(path: Path) -> Any:
    """The SIMD library at ``path`` with its functions typed, or None when it cannot be
    loaded or this CPU lacks AVX-512 F, DQ, BW or VL (logged once)."""
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        log.warning("the SIMD order pass cannot be loaded (numba's kernel runs it): %s", e)
        return None
    lib.fbgpu_simd_supported.restype = ctypes.c_int
    lib.fbgpu_order_stats_x8.restype = ctypes.c_int
    if not lib.fbgpu_simd_supported():
        log.info("this CPU lacks AVX-512 F/DQ/BW/VL: numba's order pass runs")
        return None
    return lib


def _simd_self_test(lib: Any) -> bool:
    """The SIMD library's outputs equal numba's ``fused_order_stats`` bit for bit on a small
    adversarial day (empty and one-order stocks, lengths of every remainder mod 8, NaN, +-inf,
    -0.0, huge and subnormal prices, negative and huge volumes, timestamps on the windows'
    edges). Needs numba (the build has it)."""
    from fbgpu.engine import cpu_kernels

    rng = np.random.default_rng(20261206)
    lengths = [0, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 40, 0, 1, 300, 33]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    n, S = int(offsets[-1]), len(lengths)
    ts = rng.choice(np.array([0, 99, 100, 101, 149, 150, 151, 299, 300, 900, 901]), n)
    price = np.where(rng.random(n) < 0.3, 10.0, rng.normal(10.0, 1.0, n))
    for v in (np.nan, np.inf, -np.inf, -0.0, 1e308, -1e308, 5e-324):
        price[rng.random(n) < 0.03] = v
    volume = rng.integers(-5, 10_000, n).astype(np.int64)
    volume[rng.random(n) < 0.03] = (1 << 62) + 12345
    side = rng.choice(np.array([1, -1, 0, 5], dtype=np.int8), n, p=[0.45, 0.45, 0.05, 0.05])
    order_type = rng.choice(np.array([0, 1, 2, 3], dtype=np.int8), n)
    windows = (100, 900, 150, 300, 2)  # session, early window, limit type
    outs = []
    for _ in range(2):
        outs.append((np.full((4, S), -7, np.int64), np.full((3, 6, S), 7.5),
                     np.full((3, S), 7.5), np.full(S, 9, np.uint8)))
    cpu_kernels.fused_order_stats(offsets, ts.astype(np.int64), side, volume, price,
                                  order_type, *(np.int64(w) for w in windows), *outs[0])
    order = np.argsort(np.diff(offsets), kind="stable").astype(np.int64)
    args = (offsets, ts.astype(np.int64), side, volume, price, order_type,
            *(np.int64(w) for w in windows), *outs[1])
    status = _order_x8(lib, args, order, 0, -(-S // 8))
    return status == 0 and all(a.tobytes() == b.tobytes() for a, b in zip(*outs, strict=True))


def _order_x8(lib: Any, args: tuple[Any, ...], order: np.ndarray, g0: int, g1: int) -> int:
    """One call of the SIMD library's ``fbgpu_order_stats_x8`` on ``fused_order_stats``'s
    ``args`` for the groups of eight ``g0:g1`` of the stock permutation ``order``; its status
    (0, or 1: no scratch)."""
    offsets, ts, side, volume, price, order_type = args[:6]
    ptr, i64 = ctypes.c_void_p, ctypes.c_int64
    return int(lib.fbgpu_order_stats_x8(
        ptr(offsets.ctypes.data), i64(offsets.shape[0] - 1), ptr(order.ctypes.data), i64(g0),
        i64(g1), *(ptr(a.ctypes.data) for a in (ts, side, volume, price, order_type)),
        *(i64(int(x)) for x in args[6:11]), *(ptr(a.ctypes.data) for a in args[11:])))


def _run_cc(cmd: list[str]) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise AotBuildError(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")


# --------------------------------------------------------------------------------- run
def _matches(arg: Any, text: str) -> bool:
    if ":" in text:
        dtype, ndim = text.split(":")
        return (isinstance(arg, np.ndarray) and arg.ndim == int(ndim)
                and arg.dtype == np.dtype(dtype) and arg.flags.c_contiguous)
    if text == "bool":
        return isinstance(arg, bool | np.bool_)
    return isinstance(arg, int | np.integer) and not isinstance(arg, bool | np.bool_)


class _Kernel:
    """One loaded kernel library: its C function and error flag."""

    def __init__(self, path: Path, symbol: str) -> None:
        self.lib = ctypes.CDLL(str(path))
        self.fn = getattr(self.lib, symbol)
        self.fn.restype = None
        self.error = ctypes.c_int.in_dll(self.lib, "fbgpu_kernel_error")
        self.error_lock = threading.Lock()


class AotKernels:
    """The built libraries of one build key, loaded kernel by kernel on first use."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.manifest = json.loads((directory / "manifest.json").read_text())
        self._kernels: dict[str, _Kernel] = {}
        self._lock = threading.Lock()
        self._simd_lib: Any = None  # the SIMD library once loaded (False: this CPU lacks it)

    def _kernel(self, name: str) -> _Kernel:
        k = self._kernels.get(name)
        if k is None:
            with self._lock:
                k = self._kernels.get(name)
                if k is None:
                    k = _Kernel(self.directory / f"{name}.so", self.manifest["symbols"][name])
                    self._kernels[name] = k
        return k

    def _simd(self) -> Any:
        """The SIMD library when it was built, the CPU runs it and ``FBGPU_SIMD`` is not ``0``
        (read per call), else None."""
        if os.environ.get("FBGPU_SIMD", "1") == "0" or not self.manifest.get("simd"):
            return None
        with self._lock:
            if self._simd_lib is None:
                self._simd_lib = _load_simd(self.directory / self.manifest["simd"]) or False
            return self._simd_lib or None

    def order_stats_simd(self, args: tuple[Any, ...], parallel: bool) -> bool:
        """``fused_order_stats`` (its arguments, :data:`SPECS`' types) by the SIMD library,
        eight stocks per vector, the stocks sorted by order count so that a vector's lanes
        have similar lengths; returns False (nothing run) when it cannot (see :meth:`_simd`;
        other argument types). Same bits as the numba kernel (kernels/cpu_simd_order.c)."""
        spec = SPECS["fused_order_stats"]
        if not all(_matches(a, t) for a, t in zip(args, spec.types, strict=True)):
            return False
        lib = self._simd()
        if lib is None:
            return False
        offsets, ts, side, volume, price, order_type = args[:6]
        n_out, mom_out, corr_out, deg_out = args[11:]
        S = offsets.shape[0] - 1
        n = ts.shape[0]
        if (S < 0 or any(a.shape[0] != n for a in (side, volume, price, order_type))
                or n_out.shape != (4, S) or mom_out.shape != (3, 6, S)
                or corr_out.shape != (3, S) or deg_out.shape != (S,)
                or (S > 0 and (offsets[0] < 0 or offsets[-1] > n
                               or bool((np.diff(offsets) < 0).any())))):
            return False  # numba's kernel reports (or reads) what it reads
        if S == 0:
            return True
        lengths = np.diff(offsets)
        order = np.argsort(lengths, kind="stable").astype(np.int64)
        groups = -(-S // 8)
        # a group's work is its longest stock's (sorted: the last of its eight)
        work = np.cumsum(lengths[order[np.minimum(np.arange(groups) * 8 + 7, S - 1)]] + 1)
        threads = thread_count() if parallel else 1
        pieces = threads * CHUNKS_PER_THREAD if threads > 1 else 1
        cuts = np.searchsorted(work, np.linspace(0, work[-1], pieces + 1)[1:-1], side="right")
        bounds = sorted({0, groups, *np.clip(cuts, 0, groups).tolist()})
        status = self._map_chunks(threads, bounds,
                                  lambda g0, g1: _order_x8(lib, args, order, g0, g1))
        if any(status):  # per call: a concurrent call's failure is never mistaken for ours
            raise MemoryError("the SIMD order pass could not allocate its per-stock scratch "
                              f"({int(lengths.max())} orders x 132 bytes)")
        return True

    def _map_chunks(self, threads: int, bounds: list[int],
                    call: Callable[[int, int], Any]) -> list[Any]:
        """``call(lo, hi)`` for each pair of consecutive ``bounds``, on the pool of ``threads``
        (one call at a time on this thread when there is one thread or one chunk)."""
        chunks = list(itertools.pairwise(bounds))
        if threads > 1 and len(chunks) > 1:
            return list(kernel_pool(threads).map(lambda c: call(*c), chunks))
        return [call(lo, hi) for lo, hi in chunks]

    def run(self, name: str, args: tuple[Any, ...], parallel: bool) -> bool:
        """Run kernel ``name`` on ``args`` and return True, or return False (nothing run) when
        it was not built for these argument types. ``parallel``: cut the stocks into chunks
        on :func:`thread_count` threads (else one call on this thread). ``fused_order_stats``
        goes to the SIMD library first where it can (:meth:`order_stats_simd`: same bits)."""
        if name == "fused_order_stats" and self.order_stats_simd(args, parallel):
            return True
        spec = SPECS.get(name)
        if spec is None or name not in self.manifest["symbols"] or len(args) != len(spec.types):
            return False
        if not all(_matches(a, t) for a, t in zip(args, spec.types, strict=True)):
            return False
        if "offsets" in spec.roles:
            offsets = args[spec.roles.index("offsets")]
            n_stocks = offsets.shape[0] - 1
        else:
            offsets = None
            n_stocks = args[spec.roles.index("stocks")].shape[0]
        # a stock axis of another length: numba's kernel reports it (or reads what it reads)
        if not all(a.shape[0] == n_stocks if r == "stocks" else a.shape[-1] == n_stocks
                   for a, r in zip(args, spec.roles, strict=True)
                   if r in ("stocks", "stocks_last")):
            return False
        try:
            kernel = self._kernel(name)
        except (OSError, AttributeError, KeyError) as e:  # a damaged cache entry: the JIT runs
            if name not in _FAILED:
                _FAILED.add(name)
                log.warning("ahead-of-time CPU kernel %s unusable, using numba's JIT: %s",
                            name, e)
            return False
        threads = thread_count() if parallel else 1
        bounds = _chunk_bounds(offsets, n_stocks, threads * CHUNKS_PER_THREAD
                               if threads > 1 else 1)
        self._map_chunks(threads, bounds,
                         lambda lo, hi: _call_chunk(kernel, spec, args, lo, hi, n_stocks))
        if kernel.error.value:
            with kernel.error_lock:
                kernel.error.value = 0
            raise RuntimeError(f"the ahead-of-time CPU kernel {name} raised (the message is on "
                               "stderr); FBGPU_AOT=0 runs numba's, which names the error")
        return True


def _chunk_bounds(offsets: np.ndarray | None, n_stocks: int, chunks: int) -> list[int]:
    """Stock boundaries ``[0, ..., n_stocks]`` (strictly increasing: no empty chunk) of up to
    ``chunks`` chunks of about equal element counts (equal stock counts without offsets)."""
    if n_stocks == 0:
        return [0]
    if chunks <= 1 or n_stocks == 1:
        return [0, n_stocks]
    if offsets is None:
        cuts = np.linspace(0, n_stocks, chunks + 1).round().astype(np.int64)
    else:
        targets = np.linspace(offsets[0], offsets[-1], chunks + 1)[1:-1]
        cuts = np.concatenate([[0], np.searchsorted(offsets, targets), [n_stocks]])
    return sorted(set(np.clip(cuts, 0, n_stocks).tolist()))


def _call_chunk(kernel: _Kernel, spec: KernelSpec, args: tuple[Any, ...], lo: int, hi: int,
                n_stocks: int) -> None:
    """One C call over stocks ``lo:hi``; ``stocks_last`` outputs through chunk buffers."""
    c_args: list[Any] = []
    copy_back: list[tuple[np.ndarray, np.ndarray]] = []
    keep: list[np.ndarray] = []  # chunk views stay alive for the call
    for a, role in zip(args, spec.roles, strict=True):
        if role == "scalar":
            c_args.append(ctypes.c_int64(int(a)))
            continue
        if role == "offsets":
            view = a[lo : hi + 1]
        elif role == "stocks":
            view = a[lo:hi]
        elif role == "stocks_last" and (lo, hi) != (0, n_stocks):
            view = np.empty((*a.shape[:-1], hi - lo), dtype=a.dtype)
            copy_back.append((a, view))
        else:
            view = a
        keep.append(view)
        c_args.append(ctypes.c_void_p(view.ctypes.data))
        c_args += [ctypes.c_int64(d) for d in view.shape]
    kernel.fn(*c_args)
    for full, part in copy_back:
        full[..., lo:hi] = part


def built_manifest() -> dict[str, Any] | None:
    """The manifest of this build key's libraries when they are built and enabled, else None
    (builds nothing)."""
    if not enabled():
        return None
    path = library_dir() / "manifest.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


_LOAD_LOCK = threading.Lock()
_FAILED: set[str] = set()


def kernels() -> AotKernels | None:
    """The ahead-of-time kernels of this build key, built now if missing; None when disabled
    (``FBGPU_AOT=0``) or when the build failed (logged once; numba's dispatcher is used)."""
    if not enabled():
        return None
    return _load()


@cache
def _load() -> AotKernels | None:
    with _LOAD_LOCK:
        directory = library_dir()
        try:
            if not (directory / "manifest.json").is_file():
                log.info("building the ahead-of-time CPU kernels (once per kernel source, "
                         "numba version and CPU; FBGPU_AOT=0 skips)")
                build(directory)
            return AotKernels(directory)
        except Exception as e:  # no compiler, a compile error, a damaged cache entry
            key = str(directory)
            if key not in _FAILED:
                _FAILED.add(key)
                log.warning("ahead-of-time CPU kernels unavailable, using numba's JIT: %s", e)
            return None


def main() -> None:
    """``python -m fbgpu.engine.cpu_aot``: build the libraries (``make install`` runs it)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not enabled():
        log.info("FBGPU_AOT=0: not building the ahead-of-time CPU kernels")
        return
    try:
        log.info("ahead-of-time CPU kernels: %s", build())
    except Exception as e:  # not fatal: numba's JIT runs the same kernels
        log.warning("ahead-of-time CPU kernels not built (numba's JIT will be used): %s", e)


if __name__ == "__main__":
    main()
