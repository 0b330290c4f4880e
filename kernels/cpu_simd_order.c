/* The order family's fused pass (fbgpu/engine/cpu_kernels.py: fused_order_stats) with eight
 * stocks per AVX-512 vector: each lane is one stock and runs that stock's orders in element
 * order through exactly the operations of the numba kernel, so every output is the numba
 * kernel's, bit for bit (tests/test_cpu_simd.py compares them on adversarial inputs).
 *
 * Why lanes are stocks: the numba kernel is a chain of sequential sums per stock; its bits
 * depend on that order, which rules out vectorising along a stock's elements, and neither of
 * LLVM's vectorisers produced the across-stocks form from numba source (docs/benchmarks.md,
 * session 11). The caller sorts the stocks by order count and passes that permutation, so the
 * eight stocks of a vector have similar lengths (the lanes of a shorter stock idle at its end).
 * The lanes read their stocks eight elements at a time (one masked load per lane and column,
 * then an 8 x 8 transpose): a gather per element and column cost more than the arithmetic.
 *
 * Exactness, operation by operation (numba compiles without fast-math: no reassociation and no
 * fused multiply-add; this file is built with -ffp-contract=off and no -ffast-math):
 * - a masked-out element adds an exact +0.0 to each numba sum; the sums start at +0.0 and are
 *   never -0.0 (x + y is -0.0 only when both are), so a masked add (lane unchanged) is the same;
 * - numba's min(a, v) is `v < a ? v : a`, max(a, v) is `v > a ? v : a` (numba's do_minmax):
 *   the same compare-and-blend here, on the same operands (v + 0.0, v - 0.0, or +-DBL_MAX);
 * - int64 -> double conversions round to nearest, as numba's sitofp; divisions are IEEE.
 * Lanes past a stock's last order take no update at all (numba's loop has ended there).
 *
 * Built by fbgpu/engine/cpu_aot.py next to the numba kernels (and checked there against numba's
 * kernel on an adversarial input before it is used); used only when the CPU reports
 * AVX-512 F, DQ, BW and VL (fbgpu_simd_supported), else the numba kernel runs.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define FBGPU_HAVE_AVX512 1
#endif

int fbgpu_simd_supported(void) {
#ifdef FBGPU_HAVE_AVX512
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

/* The corrected two-pass moments (cpu_kernels._finish_moments), written as numba evaluates
 * the Python expressions (left to right). */
static void put_moments(double *mom, int64_t S, int64_t k, int64_t s, int64_t n, double mean0,
                        double s1, double s2, double s3, double s4, double mn, double mx) {
    double *row = mom + k * 6 * S;
    if (n == 0) {
        for (int j = 0; j < 6; j++) row[j * S + s] = NAN;
        return;
    }
    double dn = (double)n;
    double c = s1 / dn, e2 = s2 / dn, e3 = s3 / dn, e4 = s4 / dn;
    row[0 * S + s] = mean0 + c;
    row[1 * S + s] = e2 - c * c;
    row[2 * S + s] = (e3 - (3.0 * c) * e2) + ((2.0 * c) * c) * c;
    row[3 * S + s] = ((e4 - (4.0 * c) * e3) + ((6.0 * c) * c) * e2) - (((3.0 * c) * c) * c) * c;
    row[4 * S + s] = mn;
    row[5 * S + s] = mx;
}

#ifdef FBGPU_HAVE_AVX512
#define TARGET __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl")))

/* 8 x 8 transpose of 64-bit elements: r[j][k] -> r[k][j] (rows in, columns out). */
TARGET static inline void transpose8(__m512i r[8]) {
    __m512i t0 = _mm512_unpacklo_epi64(r[0], r[1]), t1 = _mm512_unpackhi_epi64(r[0], r[1]);
    __m512i t2 = _mm512_unpacklo_epi64(r[2], r[3]), t3 = _mm512_unpackhi_epi64(r[2], r[3]);
    __m512i t4 = _mm512_unpacklo_epi64(r[4], r[5]), t5 = _mm512_unpackhi_epi64(r[4], r[5]);
    __m512i t6 = _mm512_unpacklo_epi64(r[6], r[7]), t7 = _mm512_unpackhi_epi64(r[6], r[7]);
    __m512i u0 = _mm512_shuffle_i64x2(t0, t2, 0x88), u1 = _mm512_shuffle_i64x2(t0, t2, 0xdd);
    __m512i u2 = _mm512_shuffle_i64x2(t1, t3, 0x88), u3 = _mm512_shuffle_i64x2(t1, t3, 0xdd);
    __m512i u4 = _mm512_shuffle_i64x2(t4, t6, 0x88), u5 = _mm512_shuffle_i64x2(t4, t6, 0xdd);
    __m512i u6 = _mm512_shuffle_i64x2(t5, t7, 0x88), u7 = _mm512_shuffle_i64x2(t5, t7, 0xdd);
    r[0] = _mm512_shuffle_i64x2(u0, u4, 0x88);
    r[4] = _mm512_shuffle_i64x2(u0, u4, 0xdd);
    r[2] = _mm512_shuffle_i64x2(u1, u5, 0x88);
    r[6] = _mm512_shuffle_i64x2(u1, u5, 0xdd);
    r[1] = _mm512_shuffle_i64x2(u2, u6, 0x88);
    r[5] = _mm512_shuffle_i64x2(u2, u6, 0xdd);
    r[3] = _mm512_shuffle_i64x2(u3, u7, 0x88);
    r[7] = _mm512_shuffle_i64x2(u3, u7, 0xdd);
}

/* Elements i0 .. i0 + 7 of the eight lanes' stocks, as columns: ts[k], vol[k], price[k] hold
 * element i0 + k of every lane; side_w / type_w hold each lane's eight bytes (byte k of lane
 * j's word is its element i0 + k). Masked loads: nothing past a stock's last order is read. */
typedef struct {
    __m512i ts[8], vol[8], price[8], side_w, type_w;
} Block;

#ifndef PREFETCH_AHEAD
#define PREFETCH_AHEAD 32 /* elements (4 cache lines of an 8-byte column; byte columns 4x as far) */
#endif

TARGET static inline void load_block(Block *b, const int64_t *lo_a, const int64_t *len_a,
                                     int64_t i0, const int64_t *ts, const int8_t *side,
                                     const int64_t *volume, const double *price,
                                     const int8_t *order_type) {
    int64_t sw[8], tw[8];
    for (int j = 0; j < 8; j++) {
        int64_t rem = len_a[j] - i0;
        __mmask8 m = rem >= 8 ? (__mmask8)0xff : rem > 0 ? (__mmask8)((1u << rem) - 1u) : 0;
        int64_t at = lo_a[j] + i0;
        if (rem > PREFETCH_AHEAD) { /* the lane's stock goes on: fetch ahead of its reads */
            /* addresses, not pointer arithmetic: the byte columns' may lie past the column's
             * end (a prefetch never faults) */
#define AHEAD(col, bytes) \
    _mm_prefetch((const char *)((uintptr_t)((col) + at) + (bytes)), _MM_HINT_T0)
            AHEAD(ts, 8 * PREFETCH_AHEAD);
            AHEAD(volume, 8 * PREFETCH_AHEAD);
            AHEAD(price, 8 * PREFETCH_AHEAD);
            AHEAD(side, 4 * PREFETCH_AHEAD);
            AHEAD(order_type, 4 * PREFETCH_AHEAD);
#undef AHEAD
        }
        b->ts[j] = _mm512_maskz_loadu_epi64(m, ts + at);
        b->vol[j] = _mm512_maskz_loadu_epi64(m, volume + at);
        b->price[j] = _mm512_castpd_si512(_mm512_maskz_loadu_pd(m, price + at));
        sw[j] = _mm_cvtsi128_si64(_mm_maskz_loadu_epi8(m, side + at));
        tw[j] = _mm_cvtsi128_si64(_mm_maskz_loadu_epi8(m, order_type + at));
    }
    transpose8(b->ts);
    transpose8(b->vol);
    transpose8(b->price);
    b->side_w = _mm512_loadu_si512(sw);
    b->type_w = _mm512_loadu_si512(tw);
}

/* Byte k of each lane's word, sign-extended (an int8 column's element i0 + k). */
TARGET static inline __m512i byte_k(__m512i w, int k) {
    return _mm512_srai_epi64(_mm512_sllv_epi64(w, _mm512_set1_epi64(56 - 8 * k)), 56);
}

/* numba's min(acc, v) / max(acc, v) on the lanes of `upd` (others keep acc). */
TARGET static inline __m512d vmin(__mmask8 upd, __m512d acc, __m512d v) {
    return _mm512_mask_blend_pd(upd & _mm512_cmp_pd_mask(v, acc, _CMP_LT_OQ), acc, v);
}
TARGET static inline __m512d vmax(__mmask8 upd, __m512d acc, __m512d v) {
    return _mm512_mask_blend_pd(upd & _mm512_cmp_pd_mask(v, acc, _CMP_GT_OQ), acc, v);
}

/* The finite lanes of x (not NaN, not +-inf). */
TARGET static inline __mmask8 finite_lanes(__m512d x) {
    return (__mmask8)~_mm512_fpclass_pd_mask(x, 0x01 | 0x08 | 0x10 | 0x80);
}

/* Stocks order[g0 * 8 .. g1 * 8) (a permutation of 0..S-1; lanes past S idle), eight at a
 * time. Arguments as fused_order_stats: offsets [S + 1]; ts, side, volume, price, order_type
 * per order; the windows and the limit type; outputs n_out [4, S], mom_out [3, 6, S],
 * corr_out [3, S], deg_out [S]. Returns 0, or 1 when the scratch could not be allocated
 * (nothing written: the caller raises). */
TARGET int fbgpu_order_stats_x8(
    const int64_t *offsets, int64_t S, const int64_t *order, int64_t g0, int64_t g1,
    const int64_t *ts, const int8_t *side, const int64_t *volume, const double *price,
    const int8_t *order_type, int64_t session_lo, int64_t session_hi, int64_t early_lo,
    int64_t early_hi, int64_t limit_type, int64_t *n_out, double *mom_out, double *corr_out,
    uint8_t *deg_out) {
    const __m512d zero = _mm512_setzero_pd();
    const __m512d big = _mm512_set1_pd(DBL_MAX), nbig = _mm512_set1_pd(-DBL_MAX);
    const __m512d inf = _mm512_set1_pd(INFINITY), ninf = _mm512_set1_pd(-INFINITY);
    const __m512i one = _mm512_set1_epi64(1);
    const __m512i v_slo = _mm512_set1_epi64(session_lo), v_shi = _mm512_set1_epi64(session_hi);
    const __m512i v_elo = _mm512_set1_epi64(early_lo), v_ehi = _mm512_set1_epi64(early_hi);
    const __m512i v_lim = _mm512_set1_epi64(limit_type);
    const __m512i v_p1 = _mm512_set1_epi64(1), v_m1 = _mm512_set1_epi64(-1);
    /* Pass 1 keeps each element's values and masks (8 lanes: 64 + 64 + 4 bytes), so pass 2
     * streams them back in one sequence instead of re-reading eight stocks' five columns.
     * Sized for the call's longest stock (the stocks are sorted: its last group's). */
    int64_t cap = 0;
    for (int64_t q = g0 * 8; q < g1 * 8 && q < S; q++) {
        int64_t len_q = offsets[order[q] + 1] - offsets[order[q]];
        if (len_q > cap) cap = len_q;
    }
    double *kept_fv = NULL, *kept_p = NULL;
    uint8_t *kept_m = NULL;
    if (cap > 0) {
        size_t vec_bytes = ((size_t)cap * 64 + 63) / 64 * 64;
        kept_fv = (double *)aligned_alloc(64, vec_bytes);
        kept_p = (double *)aligned_alloc(64, vec_bytes);
        kept_m = (uint8_t *)malloc((size_t)cap * 4);
        if (!kept_fv || !kept_p || !kept_m) {
            free(kept_fv);
            free(kept_p);
            free(kept_m);
            return 1;
        }
    }
    for (int64_t g = g0; g < g1; g++) {
        int64_t stock[8], lo_a[8], len_a[8];
        int64_t maxlen = 0;
        for (int j = 0; j < 8; j++) {
            int64_t q = g * 8 + j;
            stock[j] = q < S ? order[q] : -1;
            lo_a[j] = stock[j] >= 0 ? offsets[stock[j]] : 0;
            len_a[j] = stock[j] >= 0 ? offsets[stock[j] + 1] - lo_a[j] : 0;
            if (len_a[j] > maxlen) maxlen = len_a[j];
        }
        const __m512i len = _mm512_loadu_si512(len_a);
        /* pass 1: masked counts, sums, minima and maxima */
        __m512i nb = _mm512_setzero_si512(), ns = nb, ne = nb, nc = nb;
        __m512d tb = zero, tsl = zero, te = zero, tx = zero, ty = zero;
        __m512d bmn = inf, bmx = ninf, smn = inf, smx = ninf, emn = inf, emx = ninf;
        __m512d xmn = inf, xmx = ninf, ymn = inf, ymx = ninf;
        for (int64_t i0 = 0; i0 < maxlen; i0 += 8) {
            Block b;
            load_block(&b, lo_a, len_a, i0, ts, side, volume, price, order_type);
            int kmax = maxlen - i0 < 8 ? (int)(maxlen - i0) : 8;
            for (int k = 0; k < kmax; k++) {
                __mmask8 act = _mm512_cmplt_epi64_mask(_mm512_set1_epi64(i0 + k), len);
                __m512i t = b.ts[k];
                __m512d p = _mm512_castsi512_pd(b.price[k]);
                __m512i sd = byte_k(b.side_w, k);
                __m512i ot = byte_k(b.type_w, k);
                __m512d fv = _mm512_cvtepi64_pd(b.vol[k]);
                __mmask8 ses = act & _mm512_cmpge_epi64_mask(t, v_slo) &
                               _mm512_cmple_epi64_mask(t, v_shi);
                __mmask8 mb = ses & _mm512_cmpeq_epi64_mask(sd, v_p1);
                __mmask8 ms = ses & _mm512_cmpeq_epi64_mask(sd, v_m1);
                __mmask8 me = ses & _mm512_cmpge_epi64_mask(t, v_elo) &
                              _mm512_cmplt_epi64_mask(t, v_ehi);
                __mmask8 mc = mb & _mm512_cmpeq_epi64_mask(ot, v_lim) & finite_lanes(p);
                int64_t i = i0 + k;
                _mm512_store_pd(kept_fv + 8 * i, fv);
                _mm512_store_pd(kept_p + 8 * i, p);
                kept_m[4 * i] = mb;
                kept_m[4 * i + 1] = ms;
                kept_m[4 * i + 2] = me;
                kept_m[4 * i + 3] = mc;
                __m512d fvp = _mm512_add_pd(fv, zero), fvm = _mm512_sub_pd(fv, zero);
/* numba's _selected_first_pass: masked count and sum; min/max of v or +-DBL_MAX */
#define FIRST(m, n, tot, mn, mx)                                        \
    do {                                                                \
        n = _mm512_mask_add_epi64(n, m, n, one);                        \
        tot = _mm512_mask_add_pd(tot, m, tot, fv);                      \
        mn = vmin(act, mn, _mm512_mask_blend_pd(m, big, fvp));          \
        mx = vmax(act, mx, _mm512_mask_blend_pd(m, nbig, fvm));         \
    } while (0)
                FIRST(mb, nb, tb, bmn, bmx);
                FIRST(ms, ns, tsl, smn, smx);
                FIRST(me, ne, te, emn, emx);
                FIRST(mc, nc, tx, xmn, xmx);
#undef FIRST
                ty = _mm512_mask_add_pd(ty, mc, ty, p);
                ymn = vmin(act, ymn, _mm512_mask_blend_pd(mc, big, _mm512_add_pd(p, zero)));
                ymx = vmax(act, ymx, _mm512_mask_blend_pd(mc, nbig, _mm512_sub_pd(p, zero)));
            }
        }
        /* the means: tot / n where n > 0, else 0.0 */
#define MEAN(tot, n) _mm512_mask_div_pd(zero, _mm512_cmpgt_epi64_mask(n, _mm512_setzero_si512()), \
                                        tot, _mm512_cvtepi64_pd(n))
        const __m512d mb0 = MEAN(tb, nb), ms0 = MEAN(tsl, ns), me0 = MEAN(te, ne);
        const __m512d mx0 = MEAN(tx, nc), my0 = MEAN(ty, nc);
#undef MEAN
        /* pass 2: centred power sums and co-moments */
        __m512d b1 = zero, b2 = zero, b3 = zero, b4 = zero;
        __m512d s1 = zero, s2 = zero, s3 = zero, s4 = zero;
        __m512d e1 = zero, e2 = zero, e3 = zero, e4 = zero;
        __m512d sx = zero, sy = zero, sxx = zero, syy = zero, sxy = zero;
        for (int64_t i = 0; i < maxlen; i++) {
            /* what pass 1 kept: the lanes' values and masks of element i */
            __m512d fv = _mm512_load_pd(kept_fv + 8 * i);
            __m512d p = _mm512_load_pd(kept_p + 8 * i);
            __mmask8 mb = kept_m[4 * i], ms = kept_m[4 * i + 1];
            __mmask8 me = kept_m[4 * i + 2], mc = kept_m[4 * i + 3];
#define CENTRAL(m, mean0, a1, a2, a3, a4)                                \
    do {                                                                 \
        __m512d d = _mm512_sub_pd(fv, mean0);                            \
        __m512d d2 = _mm512_mul_pd(d, d);                                \
        a1 = _mm512_mask_add_pd(a1, m, a1, d);                           \
        a2 = _mm512_mask_add_pd(a2, m, a2, d2);                          \
        a3 = _mm512_mask_add_pd(a3, m, a3, _mm512_mul_pd(d2, d));        \
        a4 = _mm512_mask_add_pd(a4, m, a4, _mm512_mul_pd(d2, d2));       \
    } while (0)
            CENTRAL(mb, mb0, b1, b2, b3, b4);
            CENTRAL(ms, ms0, s1, s2, s3, s4);
            CENTRAL(me, me0, e1, e2, e3, e4);
#undef CENTRAL
            __m512d dx = _mm512_sub_pd(fv, mx0), dy = _mm512_sub_pd(p, my0);
            sx = _mm512_mask_add_pd(sx, mc, sx, dx);
            sy = _mm512_mask_add_pd(sy, mc, sy, dy);
            sxx = _mm512_mask_add_pd(sxx, mc, sxx, _mm512_mul_pd(dx, dx));
            syy = _mm512_mask_add_pd(syy, mc, syy, _mm512_mul_pd(dy, dy));
            sxy = _mm512_mask_add_pd(sxy, mc, sxy, _mm512_mul_pd(dx, dy));
        }
        /* per lane, the numba kernel's final step */
        int64_t a_nb[8], a_ns[8], a_ne[8], a_nc[8];
        double a[26][8];
        _mm512_storeu_si512(a_nb, nb);
        _mm512_storeu_si512(a_ns, ns);
        _mm512_storeu_si512(a_ne, ne);
        _mm512_storeu_si512(a_nc, nc);
        const __m512d keep[26] = {mb0, b1, b2, b3, b4, bmn, bmx, ms0, s1, s2, s3, s4, smn,
                                  smx, me0, e1, e2, e3, e4, emn, emx, sx, sy, sxx, syy, sxy};
        for (int r = 0; r < 26; r++) _mm512_storeu_pd(a[r], keep[r]);
        double xlo[8], xhi[8], ylo[8], yhi[8];
        _mm512_storeu_pd(xlo, xmn);
        _mm512_storeu_pd(xhi, xmx);
        _mm512_storeu_pd(ylo, ymn);
        _mm512_storeu_pd(yhi, ymx);
        for (int j = 0; j < 8; j++) {
            int64_t s = stock[j];
            if (s < 0) continue;
            n_out[0 * S + s] = a_nb[j];
            n_out[1 * S + s] = a_ns[j];
            n_out[2 * S + s] = a_ne[j];
            n_out[3 * S + s] = a_nc[j];
            put_moments(mom_out, S, 0, s, a_nb[j], a[0][j], a[1][j], a[2][j], a[3][j], a[4][j],
                        a[5][j], a[6][j]);
            put_moments(mom_out, S, 1, s, a_ns[j], a[7][j], a[8][j], a[9][j], a[10][j],
                        a[11][j], a[12][j], a[13][j]);
            put_moments(mom_out, S, 2, s, a_ne[j], a[14][j], a[15][j], a[16][j], a[17][j],
                        a[18][j], a[19][j], a[20][j]);
            int64_t n = a_nc[j];
            if (n > 0) {
                double dn = (double)n;
                double cx = a[21][j] / dn, cy = a[22][j] / dn;
                corr_out[0 * S + s] = a[25][j] / dn - cx * cy;
                corr_out[1 * S + s] = a[23][j] / dn - cx * cx;
                corr_out[2 * S + s] = a[24][j] / dn - cy * cy;
                deg_out[s] = (xlo[j] == xhi[j] || ylo[j] == yhi[j]) ? 1 : 0;
            } else {
                corr_out[0 * S + s] = corr_out[1 * S + s] = corr_out[2 * S + s] = NAN;
                deg_out[s] = 1;
            }
        }
    }
    free(kept_fv);
    free(kept_p);
    free(kept_m);
    return 0;
}
#endif
