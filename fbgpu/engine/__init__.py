"""Engine layer: backend selection, segmented primitives (CPU numba / GPU CUDA C), kernels."""

from fbgpu.engine.backend import Backend, BackendError, array_module, get_backend

__all__ = ["Backend", "BackendError", "array_module", "get_backend"]
