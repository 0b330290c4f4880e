"""``python -m fbgpu``: the ``fbgpu`` command line (same as the ``fbgpu`` console script)."""

from fbgpu.cli import run

run()
