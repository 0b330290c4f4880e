"""The device sync guard (fbgpu/engine/guard.py): implicit torch device synchronisations raise
on a GPU, sanctioned crossings are allowed and counted.

On this CPU machine the guard must be inert (no CUDA to synchronise with) while the sanctioned
crossings are still counted -- the stand-in device's ``Backend.to_host`` is one. The GPU tests
run on a lent GPU machine (benchmarks/device/gpu_session.sh test).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from fbgpu.data.store import Store
from fbgpu.engine.backend import get_backend
from fbgpu.engine.guard import SANCTIONED, device_sync_guard, sanctioned
from fbgpu.engine.standin import standin_backend


def _cuda_ready() -> bool:
    try:
        import cupy
        import torch

        return bool(torch.cuda.is_available()) and cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def test_guard_is_inert_without_cuda_and_checks_its_mode() -> None:
    with pytest.raises(ValueError, match="'error' or 'warn'"), \
            device_sync_guard(get_backend("cpu"), "strict"):
        pass
    with device_sync_guard(get_backend("cpu"), "error") as report:
        pass
    assert not report.active and "no CUDA" in report.reason
    # the stand-in device (host memory behind the gpu backend) gets the torch audit instead
    # (fbgpu.models.syncmode, registered when fbgpu.models is imported)
    import fbgpu.models  # noqa: F401

    with device_sync_guard(standin_backend(), "error") as report:
        pass
    assert report.active and report.reason == "stand-in device: torch audit"


def test_sanctioned_crossings_are_counted_by_reason() -> None:
    b = standin_backend()
    before = SANCTIONED["to_host"], SANCTIONED["test reason"]
    x = b.xp.asarray(np.arange(5.0))
    np.testing.assert_array_equal(b.to_host(x), np.arange(5.0))
    with sanctioned("test reason"):
        pass
    assert SANCTIONED["to_host"] == before[0] + 1
    assert SANCTIONED["test reason"] == before[1] + 1
    # the CPU backend's to_host is no crossing: not counted
    get_backend("cpu").to_host(np.arange(3))
    assert SANCTIONED["to_host"] == before[0] + 1


def test_demo_accepts_the_guard_setting(tiny_store: Store, tmp_path: Path) -> None:
    """``[demo] sync_guard`` is validated and, on the CPU, leaves the demo's results alone."""
    from pydantic import ValidationError

    from fbgpu.data.runlog import read_runlog
    from fbgpu.pipeline import DemoConfig, run_demo

    with pytest.raises(ValidationError):
        DemoConfig(sync_guard="always")
    root = tmp_path / "demo"
    shutil.copytree(tiny_store.root, root, ignore=shutil.ignore_patterns(
        "factors", "panel", "reports", "run.json"))
    cfg = DemoConfig(preset="tiny", seed=0, stages=["factors"], sync_guard="error")
    run_demo(Store(root), backend="cpu", config=cfg)
    assert read_runlog(Store(root))["steps"]["factors"]["status"] == "ok"


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_ready(), reason="needs torch and cupy with a CUDA device")
def test_gpu_guard_raises_on_an_implicit_sync_and_allows_sanctioned_ones() -> None:
    import torch

    b = get_backend("gpu")
    x = torch.arange(10.0, device="cuda")
    with device_sync_guard(b, "error") as report:
        with pytest.raises(RuntimeError):
            float(x.sum().item())
        with sanctioned("epoch metrics"):
            assert x.sum().item() == 45.0
        y = x * 2  # no sync: fine
        host = b.to_host(b.xp.from_dlpack(y))
    assert report.active and report.sanctioned["epoch metrics"] == 1
    assert report.sanctioned["to_host"] == 1 and host[-1] == 18.0
    assert torch.cuda.get_sync_debug_mode() == 0  # restored
    float(x.sum().item())  # allowed again after the block


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_ready(), reason="needs torch and cupy with a CUDA device")
def test_gpu_demo_device_stages_make_no_implicit_torch_sync(tiny_store: Store,
                                                           tmp_path: Path) -> None:
    """factors -> evaluate -> train on the GPU with implicit torch syncs raising: the device
    stages before OSQP cross only where sanctioned (issue 12's "0 implicit syncs")."""
    from fbgpu.data.runlog import read_runlog
    from fbgpu.pipeline import DemoConfig, run_demo

    root = tmp_path / "demo"
    shutil.copytree(tiny_store.root, root, ignore=shutil.ignore_patterns(
        "factors", "panel", "reports", "run.json", "scores", "models"))
    cfg = DemoConfig(preset="tiny", seed=0, stages=["factors", "evaluate", "train"],
                     models="hf", sync_guard="error")
    # Settings that fit the tiny market's 60 days (rehearsed on the CPU backend).
    run_demo(Store(root), backend="gpu", config=cfg, stage_config={
        "evaluate": {"figures": False, "min_stocks": 5},
        "train": {"max_epochs": 2, "min_train_dates": 2, "retrain_months": [3],
                  "hf_window": 5, "label_horizon": 5, "lf_daily_len": 5, "sample_every": 2,
                  "hidden_size": 8}})
    steps = read_runlog(Store(root))["steps"]
    assert all(steps[s]["status"] == "ok" for s in ("factors", "evaluate", "train")), steps


# --------------------------------------------------------------------------- one memory budget
class _FakeCupy:
    """Records what share_torch_memory_pool installs (cupy's allocator API, no device)."""

    def __init__(self) -> None:
        fake = self

        class _Stream:
            ptr = 0xBEEF

        class _Allocator:
            def __init__(self, malloc, free) -> None:
                self.fns = (malloc, free)

            def malloc(self, size: int) -> tuple:  # cupy calls malloc(size, device) inside
                return self.fns

        class _Memory:
            PythonFunctionAllocator = _Allocator

        class _Cuda:
            memory = _Memory

            @staticmethod
            def get_current_stream() -> _Stream:
                return _Stream()

            @staticmethod
            def set_allocator(fn) -> None:
                fake.installed = fn

        self.cuda = _Cuda
        self.installed = None


class _FakeTorch:
    def __init__(self, cuda: bool = True) -> None:
        calls = self.calls = []

        class _Cuda:
            @staticmethod
            def is_available() -> bool:
                return cuda

            @staticmethod
            def caching_allocator_alloc(size: int, device: int, stream: int) -> int:
                calls.append(("alloc", size, device, stream))
                return 4096

            @staticmethod
            def caching_allocator_delete(ptr: int) -> None:
                calls.append(("delete", ptr))

        self.cuda = _Cuda


def test_cupy_allocates_through_torchs_caching_allocator(monkeypatch) -> None:
    """The wiring of the shared pool (the lines a GPU runs, here with recording fakes): cupy's
    malloc asks torch's caching allocator on cupy's current stream, its free gives back."""
    from fbgpu.engine.backend import SHARED_POOL_ENV, share_torch_memory_pool

    cp, torch = _FakeCupy(), _FakeTorch()
    assert share_torch_memory_pool(cp, torch) == "torch"
    malloc, free = cp.installed(123)
    assert malloc(1 << 20, 0) == 4096
    free(4096, 0)
    assert torch.calls == [("alloc", 1 << 20, 0, 0xBEEF), ("delete", 4096)]
    assert share_torch_memory_pool(_FakeCupy(), _FakeTorch(cuda=False)) == \
        "cupy (torch has no CUDA)"
    broken = _FakeCupy()
    broken.cuda.memory = None  # an API that moved: the backend keeps cupy's own pool
    assert share_torch_memory_pool(broken, _FakeTorch()).startswith("cupy (AttributeError")
    monkeypatch.setenv(SHARED_POOL_ENV, "0")
    cp = _FakeCupy()
    assert share_torch_memory_pool(cp, _FakeTorch()) == f"cupy ({SHARED_POOL_ENV}=0)"
    assert cp.installed is None


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_ready(), reason="needs torch and cupy with a CUDA device")
def test_gpu_cupy_and_torch_share_one_memory_pool() -> None:
    import cupy
    import torch

    b = get_backend("gpu")
    assert b.info["memory_pool"] == "torch", b.info
    n = 64 << 20
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    x = cupy.ones(n // 8, dtype=cupy.float64)  # allocated by torch's caching allocator
    assert torch.cuda.memory_allocated() >= before + n
    t = torch.from_dlpack(x)  # the DLPack hand-off still shares the memory
    assert t.data_ptr() == x.data.ptr and float(t.sum()) == n // 8
    del t, x
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == before  # freed back into torch's pool


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_ready(), reason="needs torch and cupy with a CUDA device")
def test_gpu_persistence_copy_is_pinned_and_counted() -> None:
    """Backend.to_host_async: a side-stream copy into pinned host memory, counted as one
    sanctioned crossing, right even when the caller drops the device array at once."""
    import cupy

    b = get_backend("gpu")
    before = SANCTIONED["to_host"]
    x = cupy.arange(1 << 20, dtype=cupy.float64)[::2] * 3.0  # a strided view: made contiguous
    pending = b.to_host_async(x)
    del x
    out = pending()
    assert SANCTIONED["to_host"] == before + 1
    np.testing.assert_array_equal(out, np.arange(1 << 20, dtype=np.float64)[::2] * 3.0)
    assert cupy.cuda.runtime.pointerGetAttributes(out.ctypes.data).type == 1  # host, pinned
