// fbgpu segmented primitives on a CUDA device: the kernels GpuSegmentOps launches on a real GPU.
//
// Loaded at run time with cupy.RawModule (NVRTC) by fbgpu/engine/cuda_c.py, compiled for the
// device it runs on; the test suite also compiles this file with `nvcc -ptx -arch=sm_90`
// (tests/test_engine_compile.py) and runs it on the CPU through kernels/host_emulation.h
// (tests/test_engine_cuda_c_host.py), so CI checks both the Hopper build and the semantics.
//
// A segment is the run offsets[s] .. offsets[s+1] of a flat array (one stock-day of ticks, or
// one row of a dense [stocks, 240] minute tensor). Offsets are int64, so a day may hold more
// than 2^31 ticks. Conventions are the CPU kernels' (fbgpu/engine/cpu_kernels.py):
//   * an element takes part when mask[i] (only if use_mask) and its value is finite;
//   * moments and co-moments are the corrected two-pass scheme (pass 1 the mean, pass 2 power
//     sums of d = x - mean0 and the shift c = sum(d)/n), min/max kept for the exact
//     "all values equal" test.
//
// Determinism: no float atomics anywhere. A block's reductions add fixed per-thread strided
// partials in a fixed tree, so a result depends on the data and FBGPU_BLOCK only, never on
// scheduling; bin sums and group totals add in element order, exactly as the CPU does, so they
// are bitwise equal to the CPU backend.
//
// Every kernel takes one thread block per segment (grid = S), except group_total (one thread
// per sorted position) and the 1-D helpers.

#ifndef FBGPU_BLOCK
#define FBGPU_BLOCK 256
#endif
#define BLOCK FBGPU_BLOCK
// Shared scratch rows: the most quantities one pass reduces (corr pass 1: n, sx, sy, 2 min, 2 max).
#define ROWS 7
// Bins per thread of seg_bin_sum: one launch covers BLOCK * BINS_PER_THREAD bins.
#define BINS_PER_THREAD 4

typedef long long i64;

#ifndef FBGPU_HOST_EMULATION
#define FBGPU_INF __longlong_as_double(0x7ff0000000000000LL)
#define FBGPU_NAN __longlong_as_double(0x7ff8000000000000LL)
#endif

// Tree-reduce the columns of sh[ROWS][BLOCK] into column 0: rows [0, n_sum) are added, the next
// n_min take the minimum, the next n_max the maximum. Every thread of the block must call it.
__device__ __forceinline__ void block_reduce(double (*sh)[BLOCK], int tid, int n_sum, int n_min,
                                             int n_max) {
    __syncthreads();
    for (int step = BLOCK / 2; step > 0; step >>= 1) {
        if (tid < step) {
            for (int r = 0; r < n_sum; ++r) sh[r][tid] += sh[r][tid + step];
            for (int r = n_sum; r < n_sum + n_min; ++r)
                sh[r][tid] = fmin(sh[r][tid], sh[r][tid + step]);
            for (int r = n_sum + n_min; r < n_sum + n_min + n_max; ++r)
                sh[r][tid] = fmax(sh[r][tid], sh[r][tid + step]);
        }
        __syncthreads();
    }
}

__device__ __forceinline__ bool takes_part(const bool* mask, bool use_mask, i64 i) {
    return !use_mask || mask[i];
}

// Block s: count and sum of the finite masked-in x of segment s.
extern "C" __global__ void seg_sum(const i64* offsets, const double* x, const bool* mask,
                                   bool use_mask, i64* n_out, double* sum_out) {
    __shared__ double sh[ROWS][BLOCK];
    const i64 s = blockIdx.x;
    const int tid = threadIdx.x;
    double n = 0.0, tot = 0.0;
    for (i64 i = offsets[s] + tid; i < offsets[s + 1]; i += BLOCK) {
        if (takes_part(mask, use_mask, i)) {
            const double v = x[i];
            if (isfinite(v)) {
                n += 1.0;
                tot += v;
            }
        }
    }
    sh[0][tid] = n;
    sh[1][tid] = tot;
    block_reduce(sh, tid, 2, 0, 0);
    if (tid == 0) {
        n_out[s] = (i64)sh[0][0];
        sum_out[s] = sh[1][0];
    }
}

// Block s: n, mean, central m2..m4 (population), min, max of the finite masked-in x.
extern "C" __global__ void seg_moments(const i64* offsets, const double* x, const bool* mask,
                                       bool use_mask, i64* n_out, double* mean_out,
                                       double* m2_out, double* m3_out, double* m4_out,
                                       double* min_out, double* max_out) {
    __shared__ double sh[ROWS][BLOCK];
    const i64 s = blockIdx.x;
    const int tid = threadIdx.x;
    const i64 lo = offsets[s], hi = offsets[s + 1];
    double n = 0.0, tot = 0.0, mn = FBGPU_INF, mx = -FBGPU_INF;
    for (i64 i = lo + tid; i < hi; i += BLOCK) {
        if (takes_part(mask, use_mask, i)) {
            const double v = x[i];
            if (isfinite(v)) {
                n += 1.0;
                tot += v;
                mn = fmin(mn, v);
                mx = fmax(mx, v);
            }
        }
    }
    sh[0][tid] = n;
    sh[1][tid] = tot;
    sh[2][tid] = mn;
    sh[3][tid] = mx;
    block_reduce(sh, tid, 2, 1, 1);
    n = sh[0][0];
    tot = sh[1][0];
    mn = sh[2][0];
    mx = sh[3][0];
    __syncthreads();  // everyone has read pass 1 before the scratch is reused
    if (n == 0.0) {
        if (tid == 0) {
            n_out[s] = 0;
            mean_out[s] = m2_out[s] = m3_out[s] = m4_out[s] = FBGPU_NAN;
            min_out[s] = max_out[s] = FBGPU_NAN;
        }
        return;  // n is the same in every thread: the whole block leaves
    }
    const double mean0 = tot / n;
    double s1 = 0.0, s2 = 0.0, s3 = 0.0, s4 = 0.0;
    for (i64 i = lo + tid; i < hi; i += BLOCK) {
        if (takes_part(mask, use_mask, i)) {
            const double v = x[i];
            if (isfinite(v)) {
                const double d = v - mean0;
                const double d2 = d * d;
                s1 += d;
                s2 += d2;
                s3 += d2 * d;
                s4 += d2 * d2;
            }
        }
    }
    sh[0][tid] = s1;
    sh[1][tid] = s2;
    sh[2][tid] = s3;
    sh[3][tid] = s4;
    block_reduce(sh, tid, 4, 0, 0);
    if (tid == 0) {
        const double c = sh[0][0] / n, e2 = sh[1][0] / n, e3 = sh[2][0] / n, e4 = sh[3][0] / n;
        n_out[s] = (i64)n;
        mean_out[s] = mean0 + c;
        m2_out[s] = e2 - c * c;
        m3_out[s] = e3 - 3.0 * c * e2 + 2.0 * c * c * c;
        m4_out[s] = e4 - 4.0 * c * e3 + 6.0 * c * c * e2 - 3.0 * c * c * c * c;
        min_out[s] = mn;
        max_out[s] = mx;
    }
}

// Block s: n, cov, var_x, var_y over the pairs with both sides finite (masked in); deg = 1 when
// every x or every y is exactly equal (or there is no pair).
extern "C" __global__ void seg_corr(const i64* offsets, const double* x, const double* y,
                                    const bool* mask, bool use_mask, i64* n_out, double* cov_out,
                                    double* vx_out, double* vy_out, unsigned char* deg_out) {
    __shared__ double sh[ROWS][BLOCK];
    const i64 s = blockIdx.x;
    const int tid = threadIdx.x;
    const i64 lo = offsets[s], hi = offsets[s + 1];
    double n = 0.0, tx = 0.0, ty = 0.0;
    double xmn = FBGPU_INF, xmx = -FBGPU_INF, ymn = FBGPU_INF, ymx = -FBGPU_INF;
    for (i64 i = lo + tid; i < hi; i += BLOCK) {
        if (takes_part(mask, use_mask, i)) {
            const double a = x[i], b = y[i];
            if (isfinite(a) && isfinite(b)) {
                n += 1.0;
                tx += a;
                ty += b;
                xmn = fmin(xmn, a);
                xmx = fmax(xmx, a);
                ymn = fmin(ymn, b);
                ymx = fmax(ymx, b);
            }
        }
    }
    sh[0][tid] = n;
    sh[1][tid] = tx;
    sh[2][tid] = ty;
    sh[3][tid] = xmn;
    sh[4][tid] = ymn;
    sh[5][tid] = xmx;
    sh[6][tid] = ymx;
    block_reduce(sh, tid, 3, 2, 2);
    n = sh[0][0];
    tx = sh[1][0];
    ty = sh[2][0];
    const unsigned char deg = (sh[3][0] == sh[5][0] || sh[4][0] == sh[6][0]) ? 1 : 0;
    __syncthreads();
    if (n == 0.0) {
        if (tid == 0) {
            n_out[s] = 0;
            cov_out[s] = vx_out[s] = vy_out[s] = FBGPU_NAN;
            deg_out[s] = 1;
        }
        return;
    }
    const double mx0 = tx / n, my0 = ty / n;
    double sx = 0.0, sy = 0.0, sxx = 0.0, syy = 0.0, sxy = 0.0;
    for (i64 i = lo + tid; i < hi; i += BLOCK) {
        if (takes_part(mask, use_mask, i)) {
            const double a = x[i], b = y[i];
            if (isfinite(a) && isfinite(b)) {
                const double dx = a - mx0, dy = b - my0;
                sx += dx;
                sy += dy;
                sxx += dx * dx;
                syy += dy * dy;
                sxy += dx * dy;
            }
        }
    }
    sh[0][tid] = sx;
    sh[1][tid] = sy;
    sh[2][tid] = sxx;
    sh[3][tid] = syy;
    sh[4][tid] = sxy;
    block_reduce(sh, tid, 5, 0, 0);
    if (tid == 0) {
        const double cx = sh[0][0] / n, cy = sh[1][0] / n;
        n_out[s] = (i64)n;
        cov_out[s] = sh[4][0] / n - cx * cy;
        vx_out[s] = sh[2][0] / n - cx * cx;
        vy_out[s] = sh[3][0] / n - cy * cy;
        deg_out[s] = deg;
    }
}

// Block s: out[s, b] = sum of the finite masked-in x[i] with bins[i] == b, for the bins
// b in [bin_lo, bin_lo + BLOCK * BINS_PER_THREAD) below n_bins (the launcher covers wider
// histograms with several launches). No atomics: the segment is staged through shared memory
// BIN_CHUNK elements at a time, and the thread that owns bin b (b - bin_lo = q * BLOCK + tid)
// adds that bin's values in element order, so each sum is the CPU's sequential sum, bit for bit.
// The scan compares 32-bit relative bins against the thread's (unrolled) owned bins: no integer
// division in the loop, and threads that own no bin (most of the block for 32 flag codes) skip it.
#define BIN_CHUNK (4 * BLOCK)
extern "C" __global__ void seg_bin_sum(const i64* offsets, const i64* bins, const double* x,
                                       const bool* mask, bool use_mask, double* out,
                                       i64 n_bins, i64 bin_lo) {
    __shared__ int sb[BIN_CHUNK];
    __shared__ double sx[BIN_CHUNK];
    const i64 s = blockIdx.x;
    const int tid = threadIdx.x;
    const i64 lo = offsets[s], hi = offsets[s + 1];
    const i64 span = (i64)BLOCK * BINS_PER_THREAD;
    const bool owns = bin_lo + tid < n_bins;
    double acc[BINS_PER_THREAD];
#pragma unroll
    for (int q = 0; q < BINS_PER_THREAD; ++q) acc[q] = 0.0;
    for (i64 base = lo; base < hi; base += BIN_CHUNK) {
        for (int t = tid; t < BIN_CHUNK; t += BLOCK) {
            const i64 i = base + t;
            int rb = -1;  // the bin relative to bin_lo, -1 when the element does not count here
            double v = 0.0;
            if (i < hi && takes_part(mask, use_mask, i)) {
                const i64 b = bins[i];
                v = x[i];
                if (b >= bin_lo && b < n_bins && b - bin_lo < span && isfinite(v))
                    rb = (int)(b - bin_lo);
            }
            sb[t] = rb;
            sx[t] = v;
        }
        __syncthreads();
        const int m = (hi - base < BIN_CHUNK) ? (int)(hi - base) : BIN_CHUNK;
        if (owns) {
            for (int j = 0; j < m; ++j) {
                const int r = sb[j];
#pragma unroll
                for (int q = 0; q < BINS_PER_THREAD; ++q)
                    if (r == q * BLOCK + tid) acc[q] += sx[j];
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int q = 0; q < BINS_PER_THREAD; ++q) {
        const i64 b = bin_lo + (i64)q * BLOCK + tid;
        if (b < n_bins) out[s * n_bins + b] = acc[q];
    }
}

// Thread i of the (segment, key)-sorted order: when position i starts a group (its segment or
// key differs from position i - 1's), add x over the group's elements order[i], order[i+1], ...
// (in element order, the sort being stable), write the total to each of them and flag order[i]
// as the group's first element. `first` must be all false on entry.
extern "C" __global__ void group_total(const i64* order, const i64* key_sorted,
                                       const int* seg_sorted, const double* x, double* totals,
                                       bool* first, i64 n) {
    const i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const i64 key = key_sorted[i];
    const int seg = seg_sorted[i];
    if (i > 0 && key_sorted[i - 1] == key && seg_sorted[i - 1] == seg) return;
    double tot = 0.0;
    i64 j = i;
    for (; j < n && key_sorted[j] == key && seg_sorted[j] == seg; ++j) tot += x[order[j]];
    for (i64 q = i; q < j; ++q) totals[order[q]] = tot;
    first[order[i]] = true;
}

// Block s: out[i] = always[s] || x[i] >= thr[s] over its segment (NaN compares false).
extern "C" __global__ void seg_threshold_mask(const i64* offsets, const double* x,
                                              const double* thr, const bool* always, bool* out) {
    const i64 s = blockIdx.x;
    const double t = thr[s];
    const bool a = always[s];
    for (i64 i = offsets[s] + threadIdx.x; i < offsets[s + 1]; i += BLOCK)
        out[i] = a || x[i] >= t;
}

// Block s: out[i] = the element is valid, finite, and among the k[s] largest of its segment,
// ties to the earlier element. Rank by counting: element i's rank is the number of valid finite
// j with x[j] > x[i], or x[j] == x[i] and j < i; it is selected when rank < k[s]. The segment is
// streamed through shared memory once per block-width chunk of candidates: O(L^2 / BLOCK) steps
// per segment, meant for rows of a few hundred elements (a day's 240 minutes).
extern "C" __global__ void seg_topk_mask(const i64* offsets, const double* x, const bool* valid,
                                         const i64* k, bool* out) {
    __shared__ double sx[BLOCK];
    __shared__ bool sok[BLOCK];
    const i64 s = blockIdx.x;
    const int tid = threadIdx.x;
    const i64 lo = offsets[s], hi = offsets[s + 1], kk = k[s];
    for (i64 ibase = lo; ibase < hi; ibase += BLOCK) {
        const i64 i = ibase + tid;
        const bool mine = i < hi;
        const double xi = mine ? x[i] : 0.0;
        const bool oki = mine && valid[i] && isfinite(xi);
        i64 rank = 0;
        for (i64 jbase = lo; jbase < hi; jbase += BLOCK) {
            const i64 j = jbase + tid;
            const double xj = j < hi ? x[j] : 0.0;
            sx[tid] = xj;
            sok[tid] = j < hi && valid[j] && isfinite(xj);
            __syncthreads();
            const i64 m = (hi - jbase < BLOCK) ? hi - jbase : BLOCK;
            if (oki)
                for (i64 q = 0; q < m; ++q)
                    if (sok[q] && (sx[q] > xi || (sx[q] == xi && jbase + q < i))) ++rank;
            __syncthreads();
        }
        if (mine) out[i] = oki && rank < kk;
    }
}

// Block s: out[i] = s for every element of segment s (the CSR's segment ids; int32: a day has
// far fewer than 2^31 stocks, and a 32-bit key halves the radix passes of a sort by segment).
extern "C" __global__ void segment_ids(const i64* offsets, int* out) {
    const i64 s = blockIdx.x;
    for (i64 i = offsets[s] + threadIdx.x; i < offsets[s + 1]; i += BLOCK) out[i] = (int)s;
}

// Thread s: out[s] = sum over j of m[s, cols[j]] for j = 0 .. n_cols-1, added left to right
// (m is [S, width], row-major). A filtered sum of flag codes: a fixed order, so a subset whose
// complement holds only zeros sums to exactly its superset, as on the CPU.
extern "C" __global__ void ordered_column_sum(const double* m, i64 S, i64 width, const i64* cols,
                                              i64 n_cols, double* out) {
    const i64 s = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (s >= S) return;
    double acc = m[s * width + cols[0]];
    for (i64 j = 1; j < n_cols; ++j) acc += m[s * width + cols[j]];
    out[s] = acc;
}
