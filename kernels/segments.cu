// fbgpu segmented primitives on a CUDA device: the kernels GpuSegmentOps launches on a real GPU.
//
// Loaded at run time with cupy.RawModule (NVRTC) by fbgpu/engine/cuda_c.py, compiled for the
// device it runs on; the test suite also compiles this file with `nvcc -ptx -arch=sm_90`
// (tests/test_engine_compile.py) and runs it on the CPU through kernels/host_emulation.h
// (tests/test_engine_gpu_parity.py, tests/test_fused_gpu.py), so CI checks both the Hopper build and the semantics.
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

// ---------------------------------------------------------------------------------------------
// Block-wide moments and co-moments, the one definition of the two-pass scheme on a device.
// The block's threads take the elements j = tid, tid + BLOCK, ... of a run of `len` elements
// (strided per-thread partials, then block_reduce's fixed tree); `get(j, v)` (or `get(j, a, b)`)
// says whether element j is masked in and gives its value(s); non-finite values do not take
// part. Every thread of the block must call them, and every thread receives the results. A
// fused kernel that calls them on the same elements, in the same order, as seg_moments /
// seg_corr get the same bits as those primitives.

struct MomentsOut {
    double n, mean, m2, m3, m4, mn, mx;  // NaN statistics when n == 0
};

struct CorrOut {
    double n, cov, vx, vy;  // NaN when n == 0
    unsigned char deg;      // 1 when a side is exactly constant or there is no pair
};

// The corrected two-pass moments from the power sums s_p = sum (x - mean0)^p of n values: the
// exact centre is mean0 + c, c = s1 / n (fbgpu/engine/cpu_kernels.py, _finish_moments).
__device__ __forceinline__ MomentsOut finish_moments(double n, double mean0, double s1, double s2,
                                                     double s3, double s4, double mn, double mx) {
    MomentsOut o;
    o.n = n;
    if (n == 0.0) {
        o.mean = o.m2 = o.m3 = o.m4 = o.mn = o.mx = FBGPU_NAN;
        return o;
    }
    const double c = s1 / n, e2 = s2 / n, e3 = s3 / n, e4 = s4 / n;
    o.mean = mean0 + c;
    o.m2 = e2 - c * c;
    o.m3 = e3 - 3.0 * c * e2 + 2.0 * c * c * c;
    o.m4 = e4 - 4.0 * c * e3 + 6.0 * c * c * e2 - 3.0 * c * c * c * c;
    o.mn = mn;
    o.mx = mx;
    return o;
}

// (cov, var_x, var_y) at the exact centre from the centred sums of n pairs (_finish_corr).
__device__ __forceinline__ CorrOut finish_corr(double n, double sx, double sy, double sxx,
                                               double syy, double sxy, unsigned char deg) {
    CorrOut o;
    o.n = n;
    if (n == 0.0) {
        o.cov = o.vx = o.vy = FBGPU_NAN;
        o.deg = 1;
        return o;
    }
    const double cx = sx / n, cy = sy / n;
    o.cov = sxy / n - cx * cy;
    o.vx = sxx / n - cx * cx;
    o.vy = syy / n - cy * cy;
    o.deg = deg;
    return o;
}

template <class Get>
__device__ MomentsOut block_moments(double (*sh)[BLOCK], int tid, i64 len, Get get) {
    double n = 0.0, tot = 0.0, mn = FBGPU_INF, mx = -FBGPU_INF;
    for (i64 j = tid; j < len; j += BLOCK) {
        double v;
        if (get(j, v) && isfinite(v)) {
            n += 1.0;
            tot += v;
            mn = fmin(mn, v);
            mx = fmax(mx, v);
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
    if (n == 0.0) return finish_moments(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);  // block-uniform
    const double mean0 = tot / n;
    double s1 = 0.0, s2 = 0.0, s3 = 0.0, s4 = 0.0;
    for (i64 j = tid; j < len; j += BLOCK) {
        double v;
        if (get(j, v) && isfinite(v)) {
            const double d = v - mean0;
            const double d2 = d * d;
            s1 += d;
            s2 += d2;
            s3 += d2 * d;
            s4 += d2 * d2;
        }
    }
    sh[0][tid] = s1;
    sh[1][tid] = s2;
    sh[2][tid] = s3;
    sh[3][tid] = s4;
    block_reduce(sh, tid, 4, 0, 0);
    s1 = sh[0][0];
    s2 = sh[1][0];
    s3 = sh[2][0];
    s4 = sh[3][0];
    __syncthreads();
    return finish_moments(n, mean0, s1, s2, s3, s4, mn, mx);
}

template <class Get>
__device__ CorrOut block_corr(double (*sh)[BLOCK], int tid, i64 len, Get get) {
    double n = 0.0, tx = 0.0, ty = 0.0;
    double xmn = FBGPU_INF, xmx = -FBGPU_INF, ymn = FBGPU_INF, ymx = -FBGPU_INF;
    for (i64 j = tid; j < len; j += BLOCK) {
        double a, b;
        if (get(j, a, b) && isfinite(a) && isfinite(b)) {
            n += 1.0;
            tx += a;
            ty += b;
            xmn = fmin(xmn, a);
            xmx = fmax(xmx, a);
            ymn = fmin(ymn, b);
            ymx = fmax(ymx, b);
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
    if (n == 0.0) return finish_corr(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1);
    const double mx0 = tx / n, my0 = ty / n;
    double sx = 0.0, sy = 0.0, sxx = 0.0, syy = 0.0, sxy = 0.0;
    for (i64 j = tid; j < len; j += BLOCK) {
        double a, b;
        if (get(j, a, b) && isfinite(a) && isfinite(b)) {
            const double dx = a - mx0, dy = b - my0;
            sx += dx;
            sy += dy;
            sxx += dx * dx;
            syy += dy * dy;
            sxy += dx * dy;
        }
    }
    sh[0][tid] = sx;
    sh[1][tid] = sy;
    sh[2][tid] = sxx;
    sh[3][tid] = syy;
    sh[4][tid] = sxy;
    block_reduce(sh, tid, 5, 0, 0);
    sx = sh[0][0];
    sy = sh[1][0];
    sxx = sh[2][0];
    syy = sh[3][0];
    sxy = sh[4][0];
    __syncthreads();
    return finish_corr(n, sx, sy, sxx, syy, sxy, deg);
}

// Write moments set `o` of segment s into separate outputs (n, mean, m2, m3, m4, min, max) at
// index s, or into a [6, stride] block (mom = mean row) with stride S.
__device__ __forceinline__ void put_moments(const MomentsOut& o, i64* n_out, double* mom,
                                            i64 stride, i64 s) {
    n_out[s] = (i64)o.n;
    mom[s] = o.mean;
    mom[stride + s] = o.m2;
    mom[2 * stride + s] = o.m3;
    mom[3 * stride + s] = o.m4;
    mom[4 * stride + s] = o.mn;
    mom[5 * stride + s] = o.mx;
}

// Block s: n, mean, central m2..m4 (population), min, max of the finite masked-in x.
extern "C" __global__ void seg_moments(const i64* offsets, const double* x, const bool* mask,
                                       bool use_mask, i64* n_out, double* mean_out,
                                       double* m2_out, double* m3_out, double* m4_out,
                                       double* min_out, double* max_out) {
    __shared__ double sh[ROWS][BLOCK];
    const i64 s = blockIdx.x;
    const int tid = threadIdx.x;
    const i64 lo = offsets[s];
    const MomentsOut o = block_moments(sh, tid, offsets[s + 1] - lo, [&](i64 j, double& v) {
        if (!takes_part(mask, use_mask, lo + j)) return false;
        v = x[lo + j];
        return true;
    });
    if (tid == 0) {
        n_out[s] = (i64)o.n;
        mean_out[s] = o.mean;
        m2_out[s] = o.m2;
        m3_out[s] = o.m3;
        m4_out[s] = o.m4;
        min_out[s] = o.mn;
        max_out[s] = o.mx;
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
    const i64 lo = offsets[s];
    const CorrOut o = block_corr(sh, tid, offsets[s + 1] - lo, [&](i64 j, double& a, double& b) {
        if (!takes_part(mask, use_mask, lo + j)) return false;
        a = x[lo + j];
        b = y[lo + j];
        return true;
    });
    if (tid == 0) {
        n_out[s] = (i64)o.n;
        cov_out[s] = o.cov;
        vx_out[s] = o.vx;
        vy_out[s] = o.vy;
        deg_out[s] = o.deg;
    }
}

// The owner-adds step of the shared-memory bin sums (seg_bin_sum, fused_trade_bins): staged
// element j (bin relative to the launch, or -1) goes to the thread owning that bin, q * BLOCK +
// tid, which adds it to acc[q]; every thread scans j in element order, so each bin's sum is the
// CPU's sequential sum, bit for bit, with no atomics.
template <int Q>
__device__ __forceinline__ void add_owned(double (&acc)[Q], const int* staged_bin,
                                          const double* staged_value, int m, int tid) {
    for (int j = 0; j < m; ++j) {
        const int r = staged_bin[j];
#pragma unroll
        for (int q = 0; q < Q; ++q)
            if (r == q * BLOCK + tid) acc[q] += staged_value[j];
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
        if (owns) add_owned<BINS_PER_THREAD>(acc, sb, sx, m, tid);
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

// ---------------------------------------------------------------------------------------------
// Segmented order reconstruction: group_sum without the two global radix sorts.
//
// seg_group_total, block s: sort segment s's (key, element) pairs by (key, element index) with
// an ascending bitonic network inside the block, then let the thread that meets a group's first
// sorted position add x over the group in element order (the index breaks key ties, so a
// group's sorted run is its elements in element order): totals[i] = the total of i's group at
// every element, first[i] = whether i is its group's first element. These are group_total's
// outputs (and the CPU's seg_group_sum's) bit for bit: the same additions in the same order.
//
// The network is the variant whose comparators all point the same way: stage k (2, 4, ... P,
// P the next power of two >= the segment length m) opens with a "flip" step, pairing a with
// the mirror image of a in its block of k, then half-cleaner steps pair a with a + h for
// h = k/4 .. 1; each comparator puts the smaller (key, index) at the lower position. Positions
// m .. P-1 are virtual +infinity: a comparator whose upper position is >= m never swaps, so it
// is skipped and no padding is stored.
//
// A segment of up to GROUP_CAP elements sorts entirely in shared memory (GROUP_CAP * 12 bytes:
// an int64 key and an int32 index). A longer one sorts in its slice lo..hi of the caller's
// global scratch (key_scratch, idx_scratch, one slot per element; the segment's block is alone
// on it): each GROUP_CAP chunk is sorted in shared memory up to stage GROUP_CAP and written
// out; each later stage k runs its steps with h >= GROUP_CAP on the scratch, then each chunk
// is loaded once for the steps h < GROUP_CAP (which pair positions inside one aligned chunk)
// and written back. Which path a segment takes is decided by its block from the device offsets
// (no host read of any length). A segment must hold fewer than 2^31 elements (int32 index).
#ifndef FBGPU_GROUP_CAP
#define FBGPU_GROUP_CAP 4096
#endif
#define GROUP_CAP FBGPU_GROUP_CAP

// One step of the network over the m real positions of (key, idx): comparator t pairs
// a = t's position in the lower half of its block of 2h, with b = a + h (half-cleaner) or the
// mirror 2h - 1 - (a mod 2h) of its block (flip). lh = log2(h). Every thread calls it; the caller
// synchronises after it.
__device__ __forceinline__ void bitonic_step(i64* key, int* idx, i64 m, int lh, bool flip,
                                             int tid) {
    const i64 h = (i64)1 << lh;
    for (i64 t = tid;; t += BLOCK) {
        const i64 base = (t >> lh) << (lh + 1), r = t & (h - 1);
        const i64 a = base + r;
        if (a >= m) break;  // a grows with t
        const i64 b = flip ? base + 2 * h - 1 - r : a + h;
        if (b >= m) continue;  // b is virtual +infinity: never swaps
        const i64 ka = key[a], kb = key[b];
        const int ia = idx[a], ib = idx[b];
        if (kb < ka || (kb == ka && ib < ia)) {
            key[a] = kb;
            key[b] = ka;
            idx[a] = ib;
            idx[b] = ia;
        }
    }
}

// Stages 2, 4, .. up to the first power of two >= kmax of the network on m positions (the whole
// sort when kmax >= m).
__device__ void bitonic_stages(i64* key, int* idx, i64 m, i64 kmax, int tid) {
    for (int lk = 1; ((i64)1 << (lk - 1)) < kmax; ++lk) {
        bitonic_step(key, idx, m, lk - 1, true, tid);
        __syncthreads();
        for (int lh = lk - 2; lh >= 0; --lh) {
            bitonic_step(key, idx, m, lh, false, tid);
            __syncthreads();
        }
    }
}

extern "C" __global__ void seg_group_total(const i64* offsets, const i64* keys, const double* x,
                                           i64* key_scratch, int* idx_scratch, double* totals,
                                           bool* first) {
    __shared__ i64 sk[GROUP_CAP];
    __shared__ int si[GROUP_CAP];
    const i64 s = blockIdx.x;
    const int tid = threadIdx.x;
    const i64 lo = offsets[s], m = offsets[s + 1] - lo;
    const i64* gk = sk;  // the sorted pairs: shared memory, or the segment's scratch slice
    const int* gi = si;
    if (m <= GROUP_CAP) {
        for (i64 j = tid; j < m; j += BLOCK) {
            sk[j] = keys[lo + j];
            si[j] = (int)j;
        }
        __syncthreads();
        bitonic_stages(sk, si, m, m, tid);
    } else {
        i64* ck = key_scratch + lo;
        int* ci = idx_scratch + lo;
        i64 P = GROUP_CAP;
        while (P < m) P <<= 1;
        for (i64 c = 0; c < m; c += GROUP_CAP) {  // every chunk sorted up to stage GROUP_CAP
            const i64 mc = (m - c < GROUP_CAP) ? m - c : GROUP_CAP;
            for (i64 j = tid; j < mc; j += BLOCK) {
                sk[j] = keys[lo + c + j];
                si[j] = (int)(c + j);
            }
            __syncthreads();
            bitonic_stages(sk, si, mc, GROUP_CAP, tid);
            for (i64 j = tid; j < mc; j += BLOCK) {
                ck[c + j] = sk[j];
                ci[c + j] = si[j];
            }
            __syncthreads();
        }
        int lcap = 0;
        while (((i64)1 << lcap) < GROUP_CAP) ++lcap;
        for (int lk = lcap + 1; ((i64)1 << lk) <= P; ++lk) {
            bitonic_step(ck, ci, m, lk - 1, true, tid);  // the flip spans whole chunks
            __syncthreads();
            for (int lh = lk - 2; lh >= lcap; --lh) {
                bitonic_step(ck, ci, m, lh, false, tid);
                __syncthreads();
            }
            for (i64 c = 0; c < m; c += GROUP_CAP) {  // steps h < GROUP_CAP, chunk by chunk
                const i64 mc = (m - c < GROUP_CAP) ? m - c : GROUP_CAP;
                for (i64 j = tid; j < mc; j += BLOCK) {
                    sk[j] = ck[c + j];
                    si[j] = ci[c + j];
                }
                __syncthreads();
                for (int lh = lcap - 1; lh >= 0; --lh) {
                    bitonic_step(sk, si, mc, lh, false, tid);
                    __syncthreads();
                }
                for (i64 j = tid; j < mc; j += BLOCK) {
                    ck[c + j] = sk[j];
                    ci[c + j] = si[j];
                }
                __syncthreads();
            }
        }
        gk = ck;
        gi = ci;
    }
    // Group totals: the thread at a group's first sorted position adds it in element order.
    for (i64 p = tid; p < m; p += BLOCK) {
        const i64 key = gk[p];
        const bool start = p == 0 || gk[p - 1] != key;
        first[lo + gi[p]] = start;
        if (!start) continue;
        double tot = 0.0;
        i64 q = p;
        for (; q < m && gk[q] == key; ++q) tot += x[lo + gi[q]];
        for (i64 r = p; r < q; ++r) totals[lo + gi[r]] = tot;
    }
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

// ---------------------------------------------------------------------------------------------
// Fused family passes: everything one tick family's built-in factors need, in one launch (the
// GPU counterparts of fbgpu/engine/cpu_kernels.py's fused_* kernels, same output layouts).
// Moments and co-moments use the strided partials and the tree above, on the same elements as
// the primitives they replace, so they are the primitive GPU path's bits (and agree with the
// CPU to rounding); bins add in element order, the CPU's bits.

// The rows of the order pass: pass 1 is 9 sums (n and sum of the three volume sets, n and the
// two sums of the buy-limit pairs), 5 minima and 5 maxima; pass 2 is 17 sums.
#define ORDER_ROWS 19

// Block s: the order family of stock s in one sweep per pass. In-session orders (session_lo <=
// ts <= session_hi) feed three masked volume moment sets, k = 0 buy (side +1), 1 sell (side -1),
// 2 early (early_lo <= ts < early_hi): n_out[k, s], mom_out[k, (mean, m2, m3, m4, min, max), s];
// the (volume, price) co-moments over buy orders of type limit_type: n_out[3, s], corr_out[(cov,
// var_x, var_y), s], deg_out[s]. Outputs [4, S] int64, [3, 6, S], [3, S] float64, [S] uint8.
extern "C" __global__ void fused_order_stats(const i64* offsets, const i64* ts,
                                             const signed char* side, const double* volume,
                                             const double* price, const signed char* order_type,
                                             i64 session_lo, i64 session_hi, i64 early_lo,
                                             i64 early_hi, i64 limit_type, i64* n_out,
                                             double* mom_out, double* corr_out,
                                             unsigned char* deg_out) {
    __shared__ double sh[ORDER_ROWS][BLOCK];
    const i64 s = blockIdx.x, S = gridDim.x;
    const int tid = threadIdx.x;
    const i64 lo = offsets[s], hi = offsets[s + 1];
    double cnt[3], tot[3], mn[3], mx[3];
#pragma unroll
    for (int k = 0; k < 3; ++k) {
        cnt[k] = tot[k] = 0.0;
        mn[k] = FBGPU_INF;
        mx[k] = -FBGPU_INF;
    }
    double nc = 0.0, tx = 0.0, ty = 0.0;
    double xmn = FBGPU_INF, xmx = -FBGPU_INF, ymn = FBGPU_INF, ymx = -FBGPU_INF;
    for (i64 i = lo + tid; i < hi; i += BLOCK) {
        const double v = volume[i];
        if (!isfinite(v)) continue;  // no set takes a non-finite volume
        const i64 t = ts[i];
        const int sd = side[i];
        const bool ses = t >= session_lo && t <= session_hi;
        const bool in[3] = {ses && sd == 1, ses && sd == -1, ses && t >= early_lo && t < early_hi};
#pragma unroll
        for (int k = 0; k < 3; ++k) {
            if (in[k]) {
                cnt[k] += 1.0;
                tot[k] += v;
                mn[k] = fmin(mn[k], v);
                mx[k] = fmax(mx[k], v);
            }
        }
        if (in[0] && order_type[i] == limit_type) {
            const double p = price[i];
            if (isfinite(p)) {
                nc += 1.0;
                tx += v;
                ty += p;
                xmn = fmin(xmn, v);
                xmx = fmax(xmx, v);
                ymn = fmin(ymn, p);
                ymx = fmax(ymx, p);
            }
        }
    }
#pragma unroll
    for (int k = 0; k < 3; ++k) {
        sh[2 * k][tid] = cnt[k];
        sh[2 * k + 1][tid] = tot[k];
        sh[9 + k][tid] = mn[k];
        sh[14 + k][tid] = mx[k];
    }
    sh[6][tid] = nc;
    sh[7][tid] = tx;
    sh[8][tid] = ty;
    sh[12][tid] = xmn;
    sh[13][tid] = ymn;
    sh[17][tid] = xmx;
    sh[18][tid] = ymx;
    block_reduce(sh, tid, 9, 5, 5);
    double mean0[3];
#pragma unroll
    for (int k = 0; k < 3; ++k) {
        cnt[k] = sh[2 * k][0];
        tot[k] = sh[2 * k + 1][0];
        mn[k] = sh[9 + k][0];
        mx[k] = sh[14 + k][0];
        mean0[k] = cnt[k] > 0.0 ? tot[k] / cnt[k] : 0.0;
    }
    nc = sh[6][0];
    const double mx0 = nc > 0.0 ? sh[7][0] / nc : 0.0, my0 = nc > 0.0 ? sh[8][0] / nc : 0.0;
    const unsigned char deg = (sh[12][0] == sh[17][0] || sh[13][0] == sh[18][0]) ? 1 : 0;
    __syncthreads();  // everyone has read pass 1 before the scratch is reused
    double p1[3], p2[3], p3[3], p4[3];
#pragma unroll
    for (int k = 0; k < 3; ++k) p1[k] = p2[k] = p3[k] = p4[k] = 0.0;
    double sx = 0.0, sy = 0.0, sxx = 0.0, syy = 0.0, sxy = 0.0;
    for (i64 i = lo + tid; i < hi; i += BLOCK) {
        const double v = volume[i];
        if (!isfinite(v)) continue;
        const i64 t = ts[i];
        const int sd = side[i];
        const bool ses = t >= session_lo && t <= session_hi;
        const bool in[3] = {ses && sd == 1, ses && sd == -1, ses && t >= early_lo && t < early_hi};
#pragma unroll
        for (int k = 0; k < 3; ++k) {
            if (in[k]) {
                const double d = v - mean0[k];
                const double d2 = d * d;
                p1[k] += d;
                p2[k] += d2;
                p3[k] += d2 * d;
                p4[k] += d2 * d2;
            }
        }
        if (in[0] && order_type[i] == limit_type) {
            const double p = price[i];
            if (isfinite(p)) {
                const double dx = v - mx0, dy = p - my0;
                sx += dx;
                sy += dy;
                sxx += dx * dx;
                syy += dy * dy;
                sxy += dx * dy;
            }
        }
    }
#pragma unroll
    for (int k = 0; k < 3; ++k) {
        sh[4 * k][tid] = p1[k];
        sh[4 * k + 1][tid] = p2[k];
        sh[4 * k + 2][tid] = p3[k];
        sh[4 * k + 3][tid] = p4[k];
    }
    sh[12][tid] = sx;
    sh[13][tid] = sy;
    sh[14][tid] = sxx;
    sh[15][tid] = syy;
    sh[16][tid] = sxy;
    block_reduce(sh, tid, 17, 0, 0);
    if (tid == 0) {
#pragma unroll
        for (int k = 0; k < 3; ++k)
            put_moments(finish_moments(cnt[k], mean0[k], sh[4 * k][0], sh[4 * k + 1][0],
                                       sh[4 * k + 2][0], sh[4 * k + 3][0], mn[k], mx[k]),
                        n_out + k * S, mom_out + 6 * k * S, S, s);
        const CorrOut c = finish_corr(nc, sh[12][0], sh[13][0], sh[14][0], sh[15][0], sh[16][0],
                                      deg);
        n_out[3 * S + s] = (i64)c.n;
        corr_out[s] = c.cov;
        corr_out[S + s] = c.vx;
        corr_out[2 * S + s] = c.vy;
        deg_out[s] = c.deg;
    }
}

// Block s: the moments of the trade family's reconstructed orders, one value per order: set 0
// the buy orders' amounts (buy_tot where buy_first), set 1 the sell orders'; n_out [2, S],
// mom_out [2, 6, S]. The group totals come from group_total (two radix sorts per side): the
// bits of seg_moments(offsets, totals, first) for both sides, in one launch.
extern "C" __global__ void trade_order_moments(const i64* offsets, const double* buy_tot,
                                               const bool* buy_first, const double* sell_tot,
                                               const bool* sell_first, i64* n_out,
                                               double* mom_out) {
    __shared__ double sh[ROWS][BLOCK];
    const i64 s = blockIdx.x, S = gridDim.x;
    const int tid = threadIdx.x;
    const i64 lo = offsets[s], len = offsets[s + 1] - lo;
    const MomentsOut b = block_moments(sh, tid, len, [&](i64 j, double& v) {
        if (!buy_first[lo + j]) return false;
        v = buy_tot[lo + j];
        return true;
    });
    const MomentsOut q = block_moments(sh, tid, len, [&](i64 j, double& v) {
        if (!sell_first[lo + j]) return false;
        v = sell_tot[lo + j];
        return true;
    });
    if (tid == 0) {
        put_moments(b, n_out, mom_out, S, s);
        put_moments(q, n_out + S, mom_out + 6 * S, S, s);
    }
}

// The trade flag codes (fbgpu.factors.context: EARLY | BUY << 1 | SELL << 2 | BIG_BUY << 3 |
// BIG_SELL << 4) and the minutes of a day (fbgpu.data.schemas.MINUTES_PER_DAY).
#define N_CODES 32
#define N_MINUTES 240
#define CODE_Q ((N_CODES + BLOCK - 1) / BLOCK)
#define MINUTE_Q ((N_MINUTES + BLOCK - 1) / BLOCK)

// Minute 0..N_MINUTES-1 of a tick time on the bar grid (fbgpu.data.bars_kernels,
// minute_of_ts_scalar): before the open 0, the lunch break the morning's last minute, from the
// close the last minute.
__device__ __forceinline__ int minute_of(i64 t, i64 t_open, i64 t_noon, i64 t_resume,
                                         i64 t_close, i64 ns_per_min) {
    if (t < t_open) return 0;
    if (t < t_noon) return (int)((t - t_open) / ns_per_min);
    if (t < t_resume) return N_MINUTES / 2 - 1;
    if (t < t_close) return N_MINUTES / 2 + (int)((t - t_resume) / ns_per_min);
    return N_MINUTES - 1;
}

// Block s: the trade family's histograms of stock s in one launch. Per trade i: dlogp =
// log_price[i] - log_price[i-1] (0 for the stock-day's first trade); the flag code (early:
// early_lo <= ts < early_hi; buy/sell: side +1/-1; big buy: buy_tot[i] >= thr[s] or always[s],
// big sell likewise); then amount_bins[s, code] += amount, dlogp_bins[s, code] += dlogp and
// nab[s, minute(ts)] += amount * side, finite values only ([S, 32], [S, 32], [S, 240]).
// No atomics: as in seg_bin_sum, the segment is staged through shared memory BIN_CHUNK trades at
// a time (codes, minutes and values computed once per trade), and the thread that owns a code
// (and the one that owns a minute) adds its values in element order: the CPU's bits.
extern "C" __global__ void fused_trade_bins(const i64* offsets, const i64* ts,
                                            const signed char* side, const double* amount,
                                            const double* log_price, const double* buy_tot,
                                            const double* sell_tot, const double* thr,
                                            const bool* always, i64 early_lo, i64 early_hi,
                                            i64 t_open, i64 t_noon, i64 t_resume, i64 t_close,
                                            i64 ns_per_min, double* amount_bins,
                                            double* dlogp_bins, double* nab) {
    __shared__ int sca[BIN_CHUNK];  // code of a finite amount, else -1
    __shared__ int scd[BIN_CHUNK];  // code of a finite dlogp, else -1
    __shared__ int scm[BIN_CHUNK];  // minute of a finite amount * side, else -1
    __shared__ double sva[BIN_CHUNK];
    __shared__ double svd[BIN_CHUNK];
    __shared__ double svs[BIN_CHUNK];
    const i64 s = blockIdx.x;
    const int tid = threadIdx.x;
    const i64 lo = offsets[s], hi = offsets[s + 1];
    const double th = thr[s];
    const bool al = always[s];
    const bool owns_code = tid < N_CODES, owns_minute = tid < N_MINUTES;
    double acc_a[CODE_Q], acc_d[CODE_Q], acc_n[MINUTE_Q];
#pragma unroll
    for (int q = 0; q < CODE_Q; ++q) acc_a[q] = acc_d[q] = 0.0;
#pragma unroll
    for (int q = 0; q < MINUTE_Q; ++q) acc_n[q] = 0.0;
    for (i64 base = lo; base < hi; base += BIN_CHUNK) {
        for (int t = tid; t < BIN_CHUNK; t += BLOCK) {
            const i64 i = base + t;
            int ca = -1, cd = -1, cm = -1;
            double va = 0.0, vd = 0.0, vs = 0.0;
            if (i < hi) {
                const i64 tt = ts[i];
                const int sd = side[i];
                const double a = amount[i];
                const int code = ((tt >= early_lo && tt < early_hi) ? 1 : 0) |
                                 (sd == 1 ? 2 : 0) | (sd == -1 ? 4 : 0) |
                                 ((buy_tot[i] >= th || al) ? 8 : 0) |
                                 ((sell_tot[i] >= th || al) ? 16 : 0);
                if (isfinite(a)) {
                    ca = code;
                    va = a;
                }
                const double d = i > lo ? log_price[i] - log_price[i - 1] : 0.0;
                if (isfinite(d)) {
                    cd = code;
                    vd = d;
                }
                const double sg = a * (double)sd;
                if (isfinite(sg)) {
                    cm = minute_of(tt, t_open, t_noon, t_resume, t_close, ns_per_min);
                    vs = sg;
                }
            }
            sca[t] = ca;
            scd[t] = cd;
            scm[t] = cm;
            sva[t] = va;
            svd[t] = vd;
            svs[t] = vs;
        }
        __syncthreads();
        const int m = (hi - base < BIN_CHUNK) ? (int)(hi - base) : BIN_CHUNK;
        if (owns_code) {
            add_owned<CODE_Q>(acc_a, sca, sva, m, tid);
            add_owned<CODE_Q>(acc_d, scd, svd, m, tid);
        }
        if (owns_minute) add_owned<MINUTE_Q>(acc_n, scm, svs, m, tid);
        __syncthreads();
    }
#pragma unroll
    for (int q = 0; q < CODE_Q; ++q) {
        const int b = q * BLOCK + tid;
        if (b < N_CODES) {
            amount_bins[s * N_CODES + b] = acc_a[q];
            dlogp_bins[s * N_CODES + b] = acc_d[q];
        }
    }
#pragma unroll
    for (int q = 0; q < MINUTE_Q; ++q) {
        const int b = q * BLOCK + tid;
        if (b < N_MINUTES) nab[s * N_MINUTES + b] = acc_n[q];
    }
}

// Block s: the minute family's statistics of row s of [S, L] bars (every field float64,
// row-major): n_out[0, s] / mom_out[(mean, m2, m3, m4, min, max), s] the moments of ret[late_from:];
// the co-moments, set j of n_out[1 + j, s], corr_out[j, (cov, var_x, var_y), s], deg_out[j, s]:
// 0 (ret_k, ret_{k-1}) and 1 (close_{k-1}, open_k) for k >= 1, 2 (volume, num_trades), 3
// (volume, ret) for k < early_bars, 4 (volume, amplitude); sums_out[6, S] the finite sums of
// ret^2 where ret < 0, of ret^2, of amount and of num_trades where ret < 0, of amount, of
// num_trades; buckets_out[S, L / bucket] the volume per `bucket` bars. Each statistic is the
// block helpers on the elements the primitive path reduces (the slices ret[:, 1:] ... as
// segments), so the primitive GPU path's bits; a bucket is added by one thread in bar order (the
// CPU's bits). A row is a few KiB: the helpers' repeated sweeps read it from cache.
extern "C" __global__ void fused_minute_stats(const double* open_, const double* close,
                                              const double* volume, const double* amount,
                                              const double* num_trades, const double* ret,
                                              const double* amplitude, i64 L, i64 late_from,
                                              i64 early_bars, i64 bucket, i64* n_out,
                                              double* mom_out, double* corr_out,
                                              unsigned char* deg_out, double* sums_out,
                                              double* buckets_out) {
    __shared__ double sh[ROWS][BLOCK];
    const i64 s = blockIdx.x, S = gridDim.x;
    const int tid = threadIdx.x;
    const i64 o = s * L;
    const double* r = ret + o;
    const double* op = open_ + o;
    const double* cl = close + o;
    const double* vol = volume + o;
    const double* amt = amount + o;
    const double* trd = num_trades + o;
    const double* amp = amplitude + o;
    const MomentsOut late = block_moments(sh, tid, L - late_from, [&](i64 j, double& v) {
        v = r[late_from + j];
        return true;
    });
    CorrOut c[5];
    c[0] = block_corr(sh, tid, L - 1, [&](i64 j, double& a, double& b) {
        a = r[j + 1];
        b = r[j];
        return true;
    });
    c[1] = block_corr(sh, tid, L - 1, [&](i64 j, double& a, double& b) {
        a = cl[j];
        b = op[j + 1];
        return true;
    });
    c[2] = block_corr(sh, tid, L, [&](i64 j, double& a, double& b) {
        a = vol[j];
        b = trd[j];
        return true;
    });
    c[3] = block_corr(sh, tid, early_bars, [&](i64 j, double& a, double& b) {
        a = vol[j];
        b = r[j];
        return true;
    });
    c[4] = block_corr(sh, tid, L, [&](i64 j, double& a, double& b) {
        a = vol[j];
        b = amp[j];
        return true;
    });
    double dv = 0.0, av = 0.0, da = 0.0, dt = 0.0, aa = 0.0, at = 0.0;
    for (i64 j = tid; j < L; j += BLOCK) {
        const double rk = r[j];
        const bool down = rk < 0.0;
        const double r2 = rk * rk;
        if (isfinite(r2)) {
            if (down) dv += r2;
            av += r2;
        }
        const double a = amt[j];
        if (isfinite(a)) {
            if (down) da += a;
            aa += a;
        }
        const double t = trd[j];
        if (isfinite(t)) {
            if (down) dt += t;
            at += t;
        }
    }
    sh[0][tid] = dv;
    sh[1][tid] = av;
    sh[2][tid] = da;
    sh[3][tid] = dt;
    sh[4][tid] = aa;
    sh[5][tid] = at;
    block_reduce(sh, tid, 6, 0, 0);
    if (tid == 0) {
        put_moments(late, n_out, mom_out, S, s);
#pragma unroll
        for (int j = 0; j < 5; ++j) {
            n_out[(1 + j) * S + s] = (i64)c[j].n;
            corr_out[(3 * j) * S + s] = c[j].cov;
            corr_out[(3 * j + 1) * S + s] = c[j].vx;
            corr_out[(3 * j + 2) * S + s] = c[j].vy;
            deg_out[j * S + s] = c[j].deg;
        }
        for (int k = 0; k < 6; ++k) sums_out[k * S + s] = sh[k][0];
    }
    const i64 n_buckets = L / bucket;
    for (i64 b = tid; b < n_buckets; b += BLOCK) {
        double t = 0.0;
        for (i64 k = b * bucket; k < (b + 1) * bucket; ++k) {
            const double v = vol[k];
            if (isfinite(v)) t += v;
        }
        buckets_out[s * n_buckets + b] = t;
    }
}
