"""fbgpu: full-band volume-price stock selection on GPU and CPU.

Layers import only downward: ``data`` -> ``engine`` -> ``factors`` -> ``panel`` -> ``evaluate``
-> ``models`` -> ``portfolio`` -> ``report``, with ``cli`` and ``pipeline`` on top.
"""

import os

# numba's OpenMP pool spins while waiting at the end of every parallel region; on a machine whose
# cores are shared (CI, notebooks next to other jobs) spinning threads steal the cores the work
# needs and a short kernel becomes several times slower. A passive wait costs nothing when the
# machine is idle. Set here, before any layer (the data layer's bar kernels included) makes the
# first parallel call that loads the OpenMP runtime; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``fbgpu.factor``: the public factor decorator (docs/user-factors.md), imported on first
    use so that ``import fbgpu`` stays light."""
    if name == "factor":
        from fbgpu.factors.registry import factor

        return factor
    raise AttributeError(f"module 'fbgpu' has no attribute {name!r}")
