"""Shared test fixtures. Numba caches compiled kernels, so repeated runs stay fast."""

from __future__ import annotations

import os

os.environ.setdefault("FBGPU_PROGRESS", "0")
