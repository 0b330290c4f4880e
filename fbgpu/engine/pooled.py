"""Pooled mean and variance of two sets from their own (Chan et al.): one definition for numpy
and numba.

Plain arithmetic on its arguments, so numpy evaluates it on per-stock arrays (the trade family's
big-order rule, :func:`fbgpu.factors.context.big_order_threshold`) and numba compiles it on
scalars (the CPU's one-pass trade kernel, :func:`fbgpu.engine.cpu_kernels.fused_trade_pass`):
the same operations in the same order, hence the same bits. No numba here (``fbgpu factors``
imports the rule long before any kernel runs).

Editing this file: the ahead-of-time build key covers it (:func:`fbgpu.engine.cpu_aot.build_key`),
but numba's own JIT cache checks only the kernel's file, so touch ``cpu_kernels.py`` too (as for
the bars helpers it inlines) or the JIT route keeps the old formula.
"""

from __future__ import annotations

from typing import Any


def pooled_mean_var(n_a: Any, mean_a: Any, m2_a: Any, n_b: Any, mean_b: Any,
                    m2_b: Any) -> tuple[Any, Any]:
    """``(mean, var)`` of the union of set a (``n_a`` values, mean ``mean_a``, population
    variance ``m2_a``) and set b: ``mean = (n_a mean_a + n_b mean_b) / n`` and
    ``var = (n_a m2_a + n_b m2_b + n_a n_b / n (mean_b - mean_a)^2) / n``, ``n = n_a + n_b``
    (float counts; an empty set's mean and variance must be given as 0)."""
    n = n_a + n_b
    mean = (n_a * mean_a + n_b * mean_b) / n
    delta = mean_b - mean_a
    var = (n_a * m2_a + n_b * m2_b + n_a * n_b / n * delta * delta) / n
    return mean, var
