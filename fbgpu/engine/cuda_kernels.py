"""GPU kernels of the segmented primitives (numba.cuda), the device twin of :mod:`.cpu_kernels`.

Import this module only when the GPU path is used: importing it imports ``numba.cuda``, and the
CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) has to be switched on before that happens.

Design: one thread block per segment (a stock-day of ticks or a row of a dense minute tensor).
The block's threads stride over the segment, accumulate private partials and combine them with a
shared-memory tree reduction (:func:`_block_reduce`, one device function shared by every
kernel); thread 0 writes the segment's result. Device functions are compiled into the calling
kernel for the kernel's target, so :func:`numba.cuda.compile_ptx` still checks sm_90 without a
GPU. Moments and correlations use the same corrected two-pass scheme as the CPU kernels (see
:mod:`.cpu_kernels`), so the two backends agree to rounding (the order of additions differs:
strided partials + tree here, sequential on the CPU). Group-by sums run one thread per group over
an index permutation produced by a sort (see :class:`fbgpu.engine.segments.GpuSegmentOps`),
adding in element order, which makes them bitwise equal to the CPU hash-table version.

``KERNELS`` maps each kernel name to ``(python function, numba signature)``: tests compile every
entry for sm_90 with :func:`numba.cuda.compile_ptx` and run them under the simulator.
"""

from __future__ import annotations

import math

from numba import config, cuda, float64

#: Threads per block. A power of two (the tree reduction halves it). The simulator runs each
#: thread as a Python thread, so it uses a small block to stay fast; the code is the same.
BLOCK = 8 if config.ENABLE_CUDASIM else 128

#: Rows of the per-block shared scratch: the most quantities one pass reduces (corr pass 1).
_ROWS = 7

_INF = math.inf


@cuda.jit(device=True, inline="always")
def _block_reduce(sh, tid, n_sum, n_min, n_max):  # pragma: no cover - device
    """Tree-reduce the columns of ``sh[_ROWS, BLOCK]`` into column 0, in place.

    Rows ``0 .. n_sum-1`` are added, the next ``n_min`` rows take the minimum and the next
    ``n_max`` the maximum. Every thread of the block must call it (it holds barriers); on return
    ``sh[r, 0]`` is the block's result for row r, visible to all threads. All rows are combined
    in the same halving step, so a reduction costs log2(BLOCK) barriers whatever the row count.
    """
    cuda.syncthreads()  # every partial is in shared memory before anyone combines
    step = BLOCK // 2
    while step > 0:
        if tid < step:
            for r in range(n_sum):
                sh[r, tid] += sh[r, tid + step]
            for r in range(n_sum, n_sum + n_min):
                sh[r, tid] = min(sh[r, tid], sh[r, tid + step])
            for r in range(n_sum + n_min, n_sum + n_min + n_max):
                sh[r, tid] = max(sh[r, tid], sh[r, tid + step])
        cuda.syncthreads()
        step //= 2


def seg_sum_kernel(offsets, x, mask, use_mask, n_out, sum_out):  # pragma: no cover - device
    """Block s: count and sum of finite masked-in ``x`` in segment s."""
    s = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    sh = cuda.shared.array((_ROWS, BLOCK), float64)
    n = 0.0
    tot = 0.0
    i = offsets[s] + tid
    hi = offsets[s + 1]
    while i < hi:
        if (not use_mask) or mask[i]:
            v = x[i]
            if math.isfinite(v):
                n += 1.0
                tot += v
        i += BLOCK
    sh[0, tid] = n
    sh[1, tid] = tot
    _block_reduce(sh, tid, 2, 0, 0)
    if tid == 0:
        n_out[s] = int(sh[0, 0])
        sum_out[s] = sh[1, 0]


def seg_moments_kernel(
    offsets, x, mask, use_mask, n_out, mean_out, m2_out, m3_out, m4_out, min_out, max_out
):  # pragma: no cover - device
    """Block s: n, mean, central m2..m4, min, max of finite masked-in ``x`` (corrected 2-pass)."""
    s = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    sh = cuda.shared.array((_ROWS, BLOCK), float64)
    lo = offsets[s]
    hi = offsets[s + 1]
    n = 0.0
    tot = 0.0
    mn = _INF
    mx = -_INF
    i = lo + tid
    while i < hi:
        if (not use_mask) or mask[i]:
            v = x[i]
            if math.isfinite(v):
                n += 1.0
                tot += v
                mn = min(mn, v)
                mx = max(mx, v)
        i += BLOCK
    sh[0, tid] = n
    sh[1, tid] = tot
    sh[2, tid] = mn
    sh[3, tid] = mx
    _block_reduce(sh, tid, 2, 1, 1)
    n = sh[0, 0]
    tot = sh[1, 0]
    mn = sh[2, 0]
    mx = sh[3, 0]
    cuda.syncthreads()  # everyone has read the pass-1 results before the buffers are reused
    if n == 0.0:
        if tid == 0:
            n_out[s] = 0
            nan = math.nan
            mean_out[s] = nan
            m2_out[s] = nan
            m3_out[s] = nan
            m4_out[s] = nan
            min_out[s] = nan
            max_out[s] = nan
        return
    mean0 = tot / n
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    s4 = 0.0
    i = lo + tid
    while i < hi:
        if (not use_mask) or mask[i]:
            v = x[i]
            if math.isfinite(v):
                d = v - mean0
                d2 = d * d
                s1 += d
                s2 += d2
                s3 += d2 * d
                s4 += d2 * d2
        i += BLOCK
    sh[0, tid] = s1
    sh[1, tid] = s2
    sh[2, tid] = s3
    sh[3, tid] = s4
    _block_reduce(sh, tid, 4, 0, 0)
    if tid == 0:
        c = sh[0, 0] / n
        e2 = sh[1, 0] / n
        e3 = sh[2, 0] / n
        e4 = sh[3, 0] / n
        n_out[s] = int(n)
        mean_out[s] = mean0 + c
        m2_out[s] = e2 - c * c
        m3_out[s] = e3 - 3.0 * c * e2 + 2.0 * c * c * c
        m4_out[s] = e4 - 4.0 * c * e3 + 6.0 * c * c * e2 - 3.0 * c * c * c * c
        min_out[s] = mn
        max_out[s] = mx


def seg_corr_kernel(
    offsets, x, y, mask, use_mask, n_out, cov_out, vx_out, vy_out, deg_out
):  # pragma: no cover - device
    """Block s: n, cov, var_x, var_y over finite pairs; ``deg`` = 1 when a side is constant."""
    s = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    sh = cuda.shared.array((_ROWS, BLOCK), float64)
    lo = offsets[s]
    hi = offsets[s + 1]
    n = 0.0
    tx = 0.0
    ty = 0.0
    xmn = _INF
    xmx = -_INF
    ymn = _INF
    ymx = -_INF
    i = lo + tid
    while i < hi:
        if (not use_mask) or mask[i]:
            a = x[i]
            b = y[i]
            if math.isfinite(a) and math.isfinite(b):
                n += 1.0
                tx += a
                ty += b
                xmn = min(xmn, a)
                xmx = max(xmx, a)
                ymn = min(ymn, b)
                ymx = max(ymx, b)
        i += BLOCK
    sh[0, tid] = n
    sh[1, tid] = tx
    sh[2, tid] = ty
    sh[3, tid] = xmn
    sh[4, tid] = ymn
    sh[5, tid] = xmx
    sh[6, tid] = ymx
    _block_reduce(sh, tid, 3, 2, 2)
    n = sh[0, 0]
    tx = sh[1, 0]
    ty = sh[2, 0]
    deg = 1 if (sh[3, 0] == sh[5, 0] or sh[4, 0] == sh[6, 0]) else 0
    cuda.syncthreads()  # everyone has read the pass-1 results before the buffers are reused
    if n == 0.0:
        if tid == 0:
            n_out[s] = 0
            nan = math.nan
            cov_out[s] = nan
            vx_out[s] = nan
            vy_out[s] = nan
            deg_out[s] = 1
        return
    mx0 = tx / n
    my0 = ty / n
    sx = 0.0
    sy = 0.0
    sxx = 0.0
    syy = 0.0
    sxy = 0.0
    i = lo + tid
    while i < hi:
        if (not use_mask) or mask[i]:
            a = x[i]
            b = y[i]
            if math.isfinite(a) and math.isfinite(b):
                dx = a - mx0
                dy = b - my0
                sx += dx
                sy += dy
                sxx += dx * dx
                syy += dy * dy
                sxy += dx * dy
        i += BLOCK
    sh[0, tid] = sx
    sh[1, tid] = sy
    sh[2, tid] = sxx
    sh[3, tid] = syy
    sh[4, tid] = sxy
    _block_reduce(sh, tid, 5, 0, 0)
    if tid == 0:
        cx = sh[0, 0] / n
        cy = sh[1, 0] / n
        n_out[s] = int(n)
        cov_out[s] = sh[4, 0] / n - cx * cy
        vx_out[s] = sh[2, 0] / n - cx * cx
        vy_out[s] = sh[3, 0] / n - cy * cy
        deg_out[s] = deg


def seg_bin_sum_kernel(offsets, bins, x, mask, use_mask, out):  # pragma: no cover - device
    """Block s: ``out[s, bins[i]] += x[i]`` over its segment (atomic adds, finite x)."""
    s = cuda.blockIdx.x
    n_bins = out.shape[1]
    i = offsets[s] + cuda.threadIdx.x
    hi = offsets[s + 1]
    while i < hi:
        if (not use_mask) or mask[i]:
            b = bins[i]
            v = x[i]
            if b >= 0 and b < n_bins and math.isfinite(v):
                cuda.atomic.add(out, (s, b), v)
        i += BLOCK


def group_total_kernel(order, group_offsets, x, totals, first):  # pragma: no cover - device
    """Thread g: sum ``x`` over group g (its elements ``order[group_offsets[g]:...]``, in element
    order), write the total to each element and flag the group's first element."""
    g = cuda.grid(1)
    if g >= group_offsets.shape[0] - 1:
        return
    lo = group_offsets[g]
    hi = group_offsets[g + 1]
    tot = 0.0
    for j in range(lo, hi):
        tot += x[order[j]]
    for j in range(lo, hi):
        totals[order[j]] = tot
    first[order[lo]] = True


def seg_threshold_mask_kernel(offsets, x, thr, always, out):  # pragma: no cover - device
    """Block s: ``out[i] = x[i] >= thr[s] or always[s]`` over its segment (NaN compares False)."""
    s = cuda.blockIdx.x
    t = thr[s]
    a = always[s]
    i = offsets[s] + cuda.threadIdx.x
    hi = offsets[s + 1]
    while i < hi:
        out[i] = a or x[i] >= t
        i += BLOCK


_I = "int64[::1]"
_F = "float64[::1]"
_B = "boolean[::1]"

#: name -> (python function, signature used for the sm_90 compile check).
KERNELS: dict[str, tuple[object, str]] = {
    "seg_sum": (seg_sum_kernel, f"void({_I}, {_F}, {_B}, boolean, {_I}, {_F})"),
    "seg_moments": (
        seg_moments_kernel,
        f"void({_I}, {_F}, {_B}, boolean, {_I}, {_F}, {_F}, {_F}, {_F}, {_F}, {_F})",
    ),
    "seg_corr": (
        seg_corr_kernel,
        f"void({_I}, {_F}, {_F}, {_B}, boolean, {_I}, {_F}, {_F}, {_F}, uint8[::1])",
    ),
    "seg_bin_sum": (seg_bin_sum_kernel, f"void({_I}, {_I}, {_F}, {_B}, boolean, float64[:, ::1])"),
    "group_total": (group_total_kernel, f"void({_I}, {_I}, {_F}, {_F}, {_B})"),
    "seg_threshold_mask": (seg_threshold_mask_kernel, f"void({_I}, {_F}, {_F}, {_B}, {_B})"),
}

_jitted: dict[str, object] = {}


def kernel(name: str):  # returns a numba CUDA dispatcher
    """The launchable (lazily ``cuda.jit``-ed) kernel called ``name``."""
    k = _jitted.get(name)
    if k is None:
        # cache=True keeps the compiled PTX/cubin on disk across processes, like the CPU kernels.
        k = cuda.jit(KERNELS[name][0], cache=True)
        _jitted[name] = k
    return k
