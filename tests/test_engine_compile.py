"""Every GPU kernel compiles for real hardware (sm_90, Hopper) without needing a GPU.

The kernels are the CUDA C sources of ``kernels/``. They are compiled twice here:

* by NVRTC (the ``nvidia-cuda-nvrtc`` wheel of the dev extra), with the options a device uses at
  run time (``cupy.RawModule`` is NVRTC): this is the exact build an H100/H200 makes;
* by ``nvcc -ptx -arch=sm_90`` when a CUDA toolkit is installed (skipped, with the reason,
  otherwise), as a second compiler's opinion.

Their semantics are tested elsewhere: under the host emulation against the CPU kernels
(tests/test_engine_gpu_parity.py), and on a real GPU by the same tests on a lent machine.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

from fbgpu.engine.cuda_c import DEVICE_GROUP_CAP, KERNEL_DIR, KERNEL_NAMES, SOURCES, nvrtc_ptx

CUDA_SOURCES = sorted(KERNEL_DIR.glob("*.cu"))


@cache
def _sm90_ptx() -> str:
    """NVRTC's PTX for sm_90, built once for the tests of this file."""
    return nvrtc_ptx("sm_90")


def _entries(ptx: str) -> set[str]:
    return set(re.findall(r"\.entry\s+(\w+)\(", ptx))


def test_sources_listed() -> None:
    """Every .cu file in kernels/ is compiled into the module (none silently left out)."""
    assert sorted(p.name for p in CUDA_SOURCES) == sorted(SOURCES)


def test_nvrtc_compiles_every_kernel_for_sm90() -> None:
    ptx = _sm90_ptx()
    assert ".target sm_90" in ptx
    assert _entries(ptx) == set(KERNEL_NAMES)
    # No fused multiply-adds (--fmad=false): products round as on the CPU.
    assert "fma.rn.f64" not in ptx
    # The block reductions use shared memory and barriers; no float atomics anywhere
    # (deterministic sums).
    assert ".shared" in ptx and "bar.sync" in ptx
    assert "atom.global.add.f64" not in ptx and "red.global.add.f64" not in ptx


def _nvcc() -> str | None:
    return shutil.which("nvcc") or next(
        (p for p in ("/usr/local/cuda/bin/nvcc",) if Path(p).exists()), None)


@pytest.mark.parametrize("source", CUDA_SOURCES, ids=lambda p: p.name)
def test_nvcc_compiles_for_sm90(source: Path, tmp_path: Path) -> None:
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (CUDA toolkit absent); NVRTC compiled the same source above")
    out = tmp_path / (source.stem + ".ptx")
    res = subprocess.run([nvcc, "-ptx", "-arch=sm_90", "--fmad=false", str(source), "-o",
                          str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    ptx = out.read_text()
    assert ".target sm_90" in ptx
    assert _entries(ptx) == set(KERNEL_NAMES)


def test_static_shared_memory_fits_every_block_on_sm90() -> None:
    """Each kernel's static ``__shared__`` arrays (at the device block size) stay within the
    48 KiB a block may declare statically: the fused passes' scratch (19 rows of the order
    pass, the six staged columns of the trade bins) must not grow past it unnoticed."""
    ptx = _sm90_ptx()
    decl = re.findall(r"\.shared \.align \d+ \.b8 _ZZ(\d+)(\w+?)E\w*\[(\d+)\];", ptx)
    per_kernel: dict[str, int] = {}
    for n, rest, size in decl:
        name = rest[: int(n)]
        per_kernel[name] = per_kernel.get(name, 0) + int(size)
    fused = {"fused_order_stats", "trade_order_moments", "fused_trade_bins",
             "fused_minute_stats", "seg_group_total"}
    assert fused <= set(per_kernel) and fused <= set(KERNEL_NAMES)
    assert max(per_kernel.values()) <= 48 * 1024, per_kernel
    # Order reconstruction's shared-memory sort: an int64 id and an int32 element index per
    # element, up to the cap; a cap that no longer fits would fail to launch on the device.
    assert per_kernel["seg_group_total"] == 12 * DEVICE_GROUP_CAP, per_kernel


def test_segmented_group_total_has_no_atomics() -> None:
    """seg_group_total sorts and adds without any atomic, integer or float (deterministic, no
    order of arrival matters): its body in the PTX holds barriers but no ``atom``/``red``."""
    ptx = _sm90_ptx()
    body = ptx.split(".entry seg_group_total(", 1)[1].split(".entry ", 1)[0]
    assert "bar.sync" in body
    assert not re.search(r"\b(atom|red)\.", body)
