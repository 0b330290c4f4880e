"""Backend selection: cpu always works, auto falls back with a reason, gpu fails clearly."""

from __future__ import annotations

import numpy as np
import pytest

from fbgpu.engine.backend import BackendError, array_module, get_backend


def test_cpu_backend_is_numpy() -> None:
    b = get_backend("cpu")
    assert b.name == "cpu" and b.xp is np and not b.is_gpu
    assert "numba" in b.info and b.device.startswith("CPU")
    a = b.asarray([1, 2, 3], dtype=np.float64)
    assert b.to_host(a) is a or np.array_equal(b.to_host(a), a)
    assert array_module(a) is np


def test_auto_falls_back_to_cpu_with_a_reason_when_no_gpu() -> None:
    pytest.importorskip("numpy")
    try:
        import cupy  # noqa: F401

        pytest.skip("cupy present: auto may legitimately pick the GPU")
    except Exception:
        pass
    b = get_backend("auto")
    assert b.name == "cpu" and "GPU not used" in b.note
    with pytest.raises(BackendError, match="GPU backend requested but unusable"):
        get_backend("gpu")


def test_unknown_backend() -> None:
    with pytest.raises(BackendError, match="unknown backend 'tpu'"):
        get_backend("tpu")


def test_cpu_backend_starts_no_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building the CPU backend (every `fbgpu factors` does) spawns no process: the processor
    name comes from /proc/cpuinfo, not `platform.processor()` (which runs `uname -p`)."""
    import subprocess

    from fbgpu.engine import backend as backend_mod

    def no_spawn(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"subprocess started: {args!r}")

    monkeypatch.setattr(subprocess, "Popen", no_spawn)
    backend_mod._cpu_backend.cache_clear()
    try:
        info = backend_mod._cpu_backend().info
    finally:
        backend_mod._cpu_backend.cache_clear()
    assert isinstance(info["processor"], str) and info["processor"]
