"""A CPU stand-in for a GPU device: device-path code runs on it in CI, and hidden host round
trips fail there as they would cost a synchronisation on a real GPU.

On a GPU, anything that turns device data into a Python value (``float(a)``, ``bool(a)``,
``a.item()``, ``a.tolist()``, iterating) or whose result shape depends on the data (boolean-mask
indexing, ``nonzero``, ``unique``, ...) waits for the device and copies to the host. CuPy does
these silently. The stand-in backend (:func:`standin_backend`) is numpy with arrays of type
:class:`StandinArray`, which *raise* :class:`HostCrossingError` on every one of them; the only way
to the host is the sanctioned crossing, :meth:`StandinArray.get` (what
:meth:`fbgpu.engine.backend.Backend.to_host` calls, as ``cupy.ndarray.get``), and those are
counted (:data:`CROSSINGS`). The GPU kernels run on it under the host emulation
(:class:`fbgpu.engine.cuda_c.EmulatedKernels`). Uploads (``xp.asarray`` of a host array) are
counted too, and refused where only explicit uploads are allowed
(:func:`fbgpu.engine.guard.explicit_uploads_only`: the factor compute of a day).

Limits: reductions return 0-d stand-in arrays (as cupy does) and shapes are host data (fine); but a
``numpy`` call on a stand-in array made outside ``xp`` that converts it (``np.asarray(a)``,
``a.view(np.ndarray)``) is not caught, since numpy hands subclasses over as views (cupy raises a
TypeError on ``np.asarray``), nor is a crossing hidden inside a numpy function this module does
not list.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import numpy as np

from fbgpu.engine.backend import Backend
from fbgpu.engine.guard import implicit_upload_allowed


class HostCrossingError(RuntimeError):
    """Device data was converted to host data outside the sanctioned crossings."""


class ImplicitUploadError(HostCrossingError):
    """Host data was uploaded by ``xp.asarray`` where only explicit uploads are allowed
    (:func:`fbgpu.engine.guard.explicit_uploads_only`): the other direction of a hidden
    crossing, told apart so that ``fbgpu factors check`` can name it."""


#: Counts of sanctioned crossings on the stand-in: ``to_host`` (``.get()``) and ``upload``.
CROSSINGS: Counter[str] = Counter()
_lock = threading.Lock()

#: numpy functions that synchronise a GPU under cupy: an output shape that depends on the data
#: (nonzero, unique, ...; bincount's size is max(x) + 1 and it checks x >= 0 on the host;
#: histogram's range), or a Python result (array_equal).
_DATA_DEPENDENT = {np.nonzero, np.flatnonzero, np.argwhere, np.unique, np.compress, np.extract,
                   np.bincount, np.histogram, np.array_equal, np.array_equiv}


def _crossing(what: str) -> HostCrossingError:
    return HostCrossingError(
        f"{what} of a device array: an implicit device->host transfer (a GPU synchronisation). "
        "Keep the value on the device, or cross explicitly with Backend.to_host")


class StandinArray(np.ndarray):
    """A numpy array playing a device array: implicit host conversions raise."""

    def __repr__(self) -> str:  # printing would read the data: show what it is instead
        return f"StandinArray(shape={self.shape}, dtype={self.dtype})"

    __str__ = __repr__

    def __bool__(self) -> bool:
        raise _crossing("bool()")

    def __float__(self) -> float:
        raise _crossing("float()")

    def __int__(self) -> int:
        raise _crossing("int()")

    def __index__(self) -> int:
        raise _crossing("use as a Python index")

    def __complex__(self) -> complex:
        raise _crossing("complex()")

    def __iter__(self) -> Any:
        raise _crossing("iteration")

    def item(self, *args: Any) -> Any:
        raise _crossing(".item()")

    def tolist(self) -> Any:
        raise _crossing(".tolist()")

    def tobytes(self, order: str = "C") -> bytes:
        raise _crossing(".tobytes()")

    def __format__(self, spec: str) -> str:
        raise _crossing("formatting")

    def nonzero(self) -> Any:
        raise _crossing(".nonzero() (a data-dependent shape)")

    def compress(self, *args: Any, **kwargs: Any) -> Any:
        raise _crossing(".compress() (a data-dependent shape)")

    def __getitem__(self, key: Any) -> Any:
        keys = key if isinstance(key, tuple) else (key,)
        if any(isinstance(k, np.ndarray) and k.dtype == bool for k in keys):
            raise _crossing("boolean-mask indexing (a data-dependent shape)")
        out = super().__getitem__(key)
        # A scalar index gives a 0-d device array, as on cupy, not a host scalar.
        return out if isinstance(out, np.ndarray) else np.asarray(out).view(StandinArray)

    def __array_wrap__(self, arr: Any, context: Any = None, return_scalar: bool = False) -> Any:
        # Reductions stay 0-d device arrays (cupy's ``a.sum()``), never host scalars.
        return super().__array_wrap__(arr, context, False)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        if func in _DATA_DEPENDENT:
            raise _crossing(f"numpy.{func.__name__} (a data-dependent shape)")
        # numpy's own implementation runs on plain views (its internals may legitimately do
        # host-style things on intermediates, e.g. nanmedian's masked arrays; cupy's versions
        # of these functions run on the device): the checks are on what fbgpu code does.
        out = func(*_strip(args), **_strip(kwargs))
        # Functions that do not keep subclasses (where, clip, ...) still return device arrays.
        if isinstance(out, tuple):
            return tuple(_device(o) for o in out)
        return _device(out) if isinstance(out, np.ndarray | np.generic) else out

    def get(self) -> np.ndarray:
        """The sanctioned device->host copy (``cupy.ndarray.get``), counted in CROSSINGS."""
        with _lock:
            CROSSINGS["to_host"] += 1
        return np.array(self.view(np.ndarray), copy=True)


def _strip(obj: Any) -> Any:
    """``obj`` with every stand-in array replaced by a plain ndarray view (inside tuples, lists
    and dicts too)."""
    if isinstance(obj, StandinArray):
        return obj.view(np.ndarray)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a NamedTuple (a result record)
        return type(obj)(*(_strip(o) for o in obj))
    if isinstance(obj, tuple | list):
        return type(obj)(_strip(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items()}
    return obj


def _device(a: Any) -> Any:
    if isinstance(a, np.generic):  # a host scalar from a device computation stays on the device
        return np.asarray(a).view(StandinArray)
    return a.view(StandinArray) if isinstance(a, np.ndarray) else a


class StandinNamespace:
    """numpy as the array namespace of the stand-in device (``xp``): array creation returns
    :class:`StandinArray`; everything else is numpy's (which keeps the subclass)."""

    #: Marks the namespace for code that must tell a host namespace from a device one.
    host_standin = True
    __name__ = "fbgpu.engine.standin"
    _CREATE = ("empty", "zeros", "ones", "full", "arange", "empty_like", "zeros_like",
               "ones_like", "full_like", "linspace", "stack", "concatenate", "from_dlpack",
               "array")

    def __getattr__(self, name: str) -> Any:
        obj = getattr(np, name)
        if name in self._CREATE:
            def create(*args: Any, **kwargs: Any) -> Any:
                return _device(obj(*args, **kwargs))

            return create
        return obj

    def where(self, cond: Any, *xy: Any) -> Any:
        if not xy:
            raise _crossing("where(cond) with one argument (nonzero: a data-dependent shape)")
        return _device(np.where(cond, *xy))

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """An upload when ``a`` is host data (counted; refused inside
        :func:`fbgpu.engine.guard.explicit_uploads_only`), a no-op view for device data."""
        _upload(a)
        return _device(np.asarray(a, dtype=dtype))

    def ascontiguousarray(self, a: Any, dtype: Any = None) -> Any:
        _upload(a)
        return _device(np.ascontiguousarray(a, dtype=dtype))


def _upload(a: Any) -> None:
    """Count the upload of ``a`` when it is host data; raise :class:`HostCrossingError` where
    only explicit uploads are allowed (:func:`fbgpu.engine.guard.explicit_uploads_only`)."""
    if isinstance(a, StandinArray):
        return
    if not implicit_upload_allowed():
        raise ImplicitUploadError(
            f"implicit upload of host data ({type(a).__name__}) by xp.asarray where only "
            "explicit uploads are allowed: on a GPU a pageable host->device copy that waits "
            "for the stream. Upload with Backend.to_device_async / fbgpu.factors.upload_day "
            "(the day's inputs) or Backend.to_device (small index arrays)")
    with _lock:
        CROSSINGS["upload"] += 1


STANDIN = StandinNamespace()


def is_host_namespace(xp: Any) -> bool:
    """True for numpy and for the stand-in (arrays in host memory: numpy sorts, ctypes kernels)."""
    return xp is np or getattr(xp, "host_standin", False)


def standin_backend() -> Backend:
    """The ``gpu`` backend on the CPU stand-in device."""
    return Backend("gpu", STANDIN, "CPU stand-in device (implicit host crossings raise)")  # type: ignore[arg-type]
