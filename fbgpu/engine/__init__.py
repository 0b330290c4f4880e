"""Engine layer: backend selection, segmented primitives (CPU numba / GPU numba.cuda), kernels."""

import os

# numba's OpenMP pool spins while waiting at the end of every parallel region; on a machine whose
# cores are shared (CI, notebooks next to other jobs) spinning threads steal the cores the work
# needs and a short kernel becomes several times slower. A passive wait costs nothing when the
# machine is idle. Set before numba loads its OpenMP runtime (first parallel call); a user's own
# setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from fbgpu.engine.backend import Backend, BackendError, array_module, get_backend

__all__ = ["Backend", "BackendError", "array_module", "get_backend"]
