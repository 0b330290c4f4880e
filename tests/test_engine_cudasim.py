"""Run the GPU parity tests under the CUDA simulator, in a subprocess.

The simulator must be enabled before numba.cuda is first imported, which the main test process
cannot guarantee (other modules import it), hence the separate interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_gpu_kernels_match_cpu_under_cuda_simulator() -> None:
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "FBGPU_PROGRESS": "0"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
           "-o", "addopts=", str(TESTS / "test_engine_gpu_parity.py")]
    res = subprocess.run(cmd, cwd=TESTS.parent, env=env, capture_output=True, text=True,
                         timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "4 passed" in out, out[-2000:]  # ran, not skipped
