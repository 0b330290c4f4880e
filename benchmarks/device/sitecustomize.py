"""Compatibility shim of the GPU-machine session (``gpu_session.sh`` copies it into its site folder,
which is on ``PYTHONPATH``, so every interpreter of the session imports it at start-up).

numba-cuda (0.30.4, the newest release when this was written) registers an overload of
``numpy.row_stack`` unconditionally when its CUDA target loads. NumPy 2.5 removed ``row_stack``
(numba itself guards the same line with ``numpy < 2.5``), so on the device image's numpy 2.5.2
every ``numba.cuda`` compilation fails with ``AttributeError: module 'numpy' has no attribute
'row_stack'``. Where numpy lacks it, the alias is restored: ``row_stack`` always was ``vstack``.
fbgpu does not use it. ``FBGPU_DEVICE_SHIM=0`` turns this off. The image's own sitecustomize, if
any, is run afterwards.
"""

import importlib.util
import os
import sys

if os.environ.get("FBGPU_DEVICE_SHIM", "1") != "0":
    try:
        import numpy

        if not hasattr(numpy, "row_stack"):
            numpy.row_stack = numpy.vstack
            os.environ["FBGPU_DEVICE_SHIM_APPLIED"] = "numpy.row_stack = numpy.vstack"
    except ImportError:
        pass

_here = os.path.dirname(os.path.abspath(__file__))
for _p in sys.path:
    _f = os.path.join(os.path.abspath(_p or "."), "sitecustomize.py")
    if os.path.dirname(_f) != _here and os.path.isfile(_f):
        _spec = importlib.util.spec_from_file_location("_image_sitecustomize", _f)
        if _spec is not None and _spec.loader is not None:
            _spec.loader.exec_module(importlib.util.module_from_spec(_spec))
        break
