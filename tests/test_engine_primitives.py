"""Segmented primitives (CPU backend) against exact references on adversarial inputs.

References: exact rational arithmetic (``fractions.Fraction``) for moments and correlations,
``math.fsum`` for sums, plain Python loops for group-by, histogram and top-k, plus scipy/numpy
where their own precision guards do not interfere. The strategies here are reused by the GPU
parity tests (test_engine_gpu_parity.py).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import scipy.stats
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fbgpu.engine.segments import (
    CpuSegmentOps,
    SegmentError,
    correlation,
    kurtosis,
    ratio,
    segment_ids,
    segment_starts_mask,
    skewness,
)

CPU = CpuSegmentOps()
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ----------------------------------------------------------------------------- strategies
@st.composite
def segments(draw: st.DrawFn, max_segments: int = 6, max_len: int = 40) -> dict:
    """CSR offsets + values of an adversarial kind + optional mask + integer keys."""
    lens = draw(st.lists(st.integers(0, max_len), min_size=0, max_size=max_segments))
    offsets = np.r_[0, np.cumsum(lens)].astype(np.int64)
    n = int(offsets[-1])
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(
        ["normal", "constant", "offset", "outlier", "nan", "integers", "tiny"]))
    if kind == "normal":
        x = rng.normal(0, 1, n)
    elif kind == "constant":
        x = np.full(n, 10.01)
    elif kind == "offset":
        # Prices near 1e8 moving by ~1e-3: raw power sums lose every digit here.
        x = 1e8 + rng.normal(0, 1e-3, n)
    elif kind == "outlier":
        x = np.full(n, 3.3)
        if n:
            x[rng.integers(0, n)] = 1e6
    elif kind == "nan":
        x = rng.normal(5, 2, n)
        x[rng.random(n) < 0.3] = np.nan
        x[rng.random(n) < 0.05] = np.inf
    elif kind == "integers":
        x = rng.integers(1, 4, n).astype(float) * 100
    else:
        x = rng.normal(0, 1e-12, n)
    y = draw(st.sampled_from(["indep", "linear", "constant"]))
    if y == "indep":
        yv = rng.normal(0, 1, n)
    elif y == "linear":
        yv = -3.0 * np.nan_to_num(x, nan=0.0, posinf=0.0) + 7.0
    else:
        yv = np.full(n, -2.5)
    mask = None if draw(st.booleans()) else rng.random(n) < 0.7
    key_kind = draw(st.sampled_from(["few", "all_equal", "unique", "huge"]))
    if key_kind == "few":
        keys = rng.integers(0, 5, n)
    elif key_kind == "all_equal":
        keys = np.full(n, 42)
    elif key_kind == "unique":
        keys = np.arange(n)
    else:
        keys = rng.integers(-(2**62), 2**62, n)
    return {"offsets": offsets, "x": x, "y": yv, "mask": mask, "keys": keys.astype(np.int64),
            "rng": rng}


def _segment(d: dict, s: int) -> slice:
    return slice(int(d["offsets"][s]), int(d["offsets"][s + 1]))


def _kept(d: dict, s: int, *arrays: np.ndarray) -> list[np.ndarray]:
    sl = _segment(d, s)
    ok = np.ones(sl.stop - sl.start, dtype=bool)
    if d["mask"] is not None:
        ok &= d["mask"][sl]
    for a in arrays:
        ok &= np.isfinite(a[sl])
    return [a[sl][ok] for a in arrays]


def exact_moments(v: np.ndarray) -> tuple[Fraction, Fraction, Fraction, Fraction]:
    f = [Fraction(float(a)) for a in v]
    n = len(f)
    mean = sum(f) / n
    m2 = sum((a - mean) ** 2 for a in f) / n
    m3 = sum((a - mean) ** 3 for a in f) / n
    m4 = sum((a - mean) ** 4 for a in f) / n
    return mean, m2, m3, m4


def close(a: float, b: float, rtol: float = 1e-9, atol: float = 0.0) -> bool:
    if math.isnan(b):
        return math.isnan(a)
    return abs(a - b) <= atol + rtol * abs(b)


# ----------------------------------------------------------------------------- properties
@SETTINGS
@given(segments())
def test_sum_matches_fsum(d: dict) -> None:
    n, tot = CPU.sum(d["offsets"], d["x"], d["mask"])
    for s in range(len(d["offsets"]) - 1):
        (v,) = _kept(d, s, d["x"])
        assert n[s] == len(v)
        scale = float(np.abs(v).sum()) if len(v) else 0.0
        assert close(tot[s], math.fsum(v), rtol=0, atol=1e-15 * scale * max(len(v), 1))


@SETTINGS
@given(segments())
def test_moments_match_exact_rationals(d: dict) -> None:
    m = CPU.moments(d["offsets"], d["x"], d["mask"])
    sk = skewness(np, m, 3)
    ku = kurtosis(np, m, 3)
    for s in range(len(d["offsets"]) - 1):
        (v,) = _kept(d, s, d["x"])
        assert m.n[s] == len(v)
        if len(v) == 0:
            assert np.isnan(m.mean[s]) and np.isnan(sk[s])
            continue
        mean, m2, m3, m4 = exact_moments(v)
        assert m.min[s] == v.min() and m.max[s] == v.max()
        # The mean may cancel (values ~1, mean ~0): its error is relative to the magnitudes.
        assert close(m.mean[s], float(mean), rtol=1e-15, atol=1e-14 * np.abs(v).max())
        assert close(m.m2[s], float(m2), rtol=1e-9, atol=1e-300)
        constant = v.min() == v.max()
        if len(v) < 3 or constant:
            assert np.isnan(sk[s]) and np.isnan(ku[s]), "constant or short -> NaN"
            continue
        # Skewness/kurtosis are dimensionless: an absolute tolerance covers symmetric data
        # (exact skew 0), where a relative one is meaningless.
        ref_sk = float(m3) / float(m2) ** 1.5
        ref_ku = float(m4) / float(m2) ** 2 - 3
        assert close(sk[s], ref_sk, rtol=1e-9, atol=1e-9), (sk[s], ref_sk)
        assert close(ku[s], ref_ku, rtol=1e-9, atol=1e-9), (ku[s], ref_ku)


@SETTINGS
@given(segments())
def test_corr_matches_exact_rationals_and_numpy(d: dict) -> None:
    c = CPU.corr_stats(d["offsets"], d["x"], d["y"], d["mask"])
    r = correlation(np, c, 3)
    for s in range(len(d["offsets"]) - 1):
        x, y = _kept(d, s, d["x"], d["y"])
        assert c.n[s] == len(x)
        if len(x) < 3 or x.min() == x.max() or y.min() == y.max():
            assert np.isnan(r[s])
            continue
        fx = [Fraction(float(a)) for a in x]
        fy = [Fraction(float(b)) for b in y]
        mx, my = sum(fx) / len(fx), sum(fy) / len(fy)
        cov = sum((a - mx) * (b - my) for a, b in zip(fx, fy, strict=True))
        vx = sum((a - mx) ** 2 for a in fx)
        vy = sum((b - my) ** 2 for b in fy)
        ref = float(cov) / math.sqrt(float(vx) * float(vy))
        assert close(r[s], ref, rtol=1e-9, atol=1e-9), (r[s], ref)
        # numpy's plain two-pass corrcoef loses digits when a side varies only at the rounding
        # level of its mean (e.g. y = 7 - 3x with |x| ~ 1e-13): compare only where it is exact.
        spread_ok = all(v.std() > 1e-6 * np.abs(v).max() for v in (x, y))
        if abs(float(mx)) < 1e6 and spread_ok:
            assert close(r[s], float(np.corrcoef(x, y)[0, 1]), rtol=1e-7, atol=1e-7)


@SETTINGS
@given(segments())
def test_moments_agree_with_scipy_on_ordinary_data(d: dict) -> None:
    m = CPU.moments(d["offsets"], d["x"], d["mask"])
    sk, ku = skewness(np, m, 3), kurtosis(np, m, 3)
    for s in range(len(d["offsets"]) - 1):
        (v,) = _kept(d, s, d["x"])
        if len(v) < 3 or v.min() == v.max() or np.abs(v).max() > 1e6 or v.std() < 1e-6:
            continue  # scipy declares near-constant data NaN on its own precision rule
        assert close(sk[s], float(scipy.stats.skew(v, bias=True)), 1e-8, 1e-8)
        assert close(ku[s], float(scipy.stats.kurtosis(v, fisher=True, bias=True)), 1e-8, 1e-8)


@SETTINGS
@given(segments())
def test_group_sum_equals_python_groupby_exactly(d: dict) -> None:
    x = np.nan_to_num(d["x"], nan=1.5, posinf=2.5)  # group sums need finite values
    totals, first = CPU.group_sum(d["offsets"], d["keys"], x)
    for s in range(len(d["offsets"]) - 1):
        sl = _segment(d, s)
        sums: dict[int, float] = {}
        firsts = []
        for i in range(sl.start, sl.stop):
            k = int(d["keys"][i])
            firsts.append(k not in sums)
            sums[k] = sums.get(k, 0.0) + float(x[i])  # element order: bit-exact
        ref = [sums[int(k)] for k in d["keys"][sl]]
        assert totals[sl].tolist() == ref
        assert first[sl].tolist() == firsts


@SETTINGS
@given(segments())
def test_bin_sum_matches_add_at(d: dict) -> None:
    rng = d["rng"]
    n = len(d["x"])
    bins = rng.integers(-2, 245, n)  # some out of range: ignored
    out = CPU.bin_sum(d["offsets"], bins, d["x"], 240, d["mask"])
    for s in range(len(d["offsets"]) - 1):
        sl = _segment(d, s)
        ref = np.zeros(240)
        for i in range(sl.start, sl.stop):
            ok = d["mask"] is None or d["mask"][i]
            if ok and 0 <= bins[i] < 240 and np.isfinite(d["x"][i]):
                ref[bins[i]] += d["x"][i]
        np.testing.assert_array_equal(out[s], ref)


@SETTINGS
@given(segments(), st.integers(0, 50))
def test_topk_mask_matches_sorted_reference(d: dict, k: int) -> None:
    valid = d["rng"].random(len(d["x"])) < 0.8
    S = len(d["offsets"]) - 1
    ks = (np.arange(S) * 3 + k) % 20
    sel = CPU.topk_mask(d["offsets"], d["x"], valid, ks)
    for s in range(S):
        sl = _segment(d, s)
        cand = [(-d["x"][i], i) for i in range(sl.start, sl.stop)
                if valid[i] and np.isfinite(d["x"][i])]
        chosen = {i for _, i in sorted(cand)[: ks[s]]}  # ties: smaller index first
        assert set(np.flatnonzero(sel[sl]) + sl.start) == chosen


@SETTINGS
@given(st.lists(st.sampled_from([-2.5, -0.0, 0.0, 1.0, 1.0, 3.0, 7.25, 1e300]) | st.floats(
    -1e6, 1e6), min_size=1, max_size=300), st.data())
def test_select_is_the_kth_smallest(values: list[float], data: st.DataObject) -> None:
    """The top-k kernel's quickselect returns the k-th smallest value (ties and signed zeros
    everywhere)."""
    from fbgpu.engine.cpu_kernels import _select

    a = np.array(values)
    kth = data.draw(st.integers(0, len(a) - 1))
    assert _select(a.copy(), np.full(len(a), np.nan), kth) == np.sort(a)[kth]
    # the heap-sort fallback, at once or after some partition rounds (sub-buffers)
    rounds = data.draw(st.integers(0, 4))
    assert _select(a.copy(), np.full(len(a), np.nan), kth, rounds) == np.sort(a)[kth]


def test_select_on_an_adversarial_order_falls_back_to_a_sort() -> None:
    """Inputs that defeat the median-of-three pivot (an organ-pipe order) still give the k-th
    value (the round limit hands the rest to a sort)."""
    from fbgpu.engine.cpu_kernels import _select

    m = 4096
    organ = np.concatenate([np.arange(0, m, 2), np.arange(m - 1, 0, -2)]).astype(np.float64)
    for kth in (0, 1, m // 3, m // 2, m - 1):
        assert _select(organ.copy(), np.empty(m), kth) == float(kth)


@SETTINGS
@given(segments())
def test_threshold_mask_matches_reference(d: dict) -> None:
    S = len(d["offsets"]) - 1
    rng = d["rng"]
    thr = rng.choice(np.array([-np.inf, 0.0, 1.0, 1e8, np.nan]), S) if S else np.zeros(0)
    always = rng.random(S) < 0.3
    out = CPU.threshold_mask(d["offsets"], d["x"], thr, always)
    for s in range(S):
        sl = _segment(d, s)
        ref = [bool(always[s]) or bool(v >= thr[s]) for v in d["x"][sl]]  # NaN: False
        assert out[sl].tolist() == ref
    plain = CPU.threshold_mask(d["offsets"], d["x"], thr)
    assert plain.tolist() == [bool(v >= thr[s]) for s in range(S) for v in d["x"][_segment(d, s)]]


@SETTINGS
@given(segments())
def test_integer_inputs_give_the_bits_of_their_float64_copy(d: dict) -> None:
    # The CPU kernels read int columns (order volume, trade counts) directly, converting each
    # element as they go: the results must be exactly those of the float64 copy.
    off, m = d["offsets"], d["mask"]
    xi = d["rng"].integers(-(10**6), 10**6, len(d["x"]))
    xf = xi.astype(np.float64)
    assert [a.tolist() for a in CPU.sum(off, xi, m)] == [a.tolist() for a in CPU.sum(off, xf, m)]
    mi, mf = CPU.moments(off, xi, m), CPU.moments(off, xf, m)
    for f in ("n", "mean", "m2", "m3", "m4", "min", "max"):
        np.testing.assert_array_equal(getattr(mi, f), getattr(mf, f))
    ci, cf = CPU.corr_stats(off, xi, d["y"], m), CPU.corr_stats(off, xf, d["y"], m)
    for f in ("n", "cov", "var_x", "var_y", "degenerate"):
        np.testing.assert_array_equal(getattr(ci, f), getattr(cf, f))
    bins = d["rng"].integers(0, 240, len(xi)).astype(np.int16)
    np.testing.assert_array_equal(CPU.bin_sum(off, bins, xi, 240, m),
                                  CPU.bin_sum(off, bins.astype(np.int64), xf, 240, m))
    S = len(off) - 1
    thr = d["rng"].integers(-(10**6), 10**6, S).astype(np.float64) + 0.5 * (d["rng"].random(S)
                                                                            < 0.5)
    np.testing.assert_array_equal(CPU.threshold_mask(off, xi, thr),
                                  CPU.threshold_mask(off, xf, thr))


@SETTINGS
@given(segments())
def test_group_sum_dense_and_hashed_paths_agree_bitwise(d: dict) -> None:
    # Small key spans take the direct-address table, sparse ones the hash table: spreading the
    # same keys 2**40 apart forces the hash path with the same grouping.
    x = np.nan_to_num(d["x"], nan=1.5, posinf=2.5)
    keys = d["rng"].integers(0, 7, len(x))
    dense = CPU.group_sum(d["offsets"], keys, x)
    hashed = CPU.group_sum(d["offsets"], keys * (1 << 40) - (1 << 50), x)
    assert dense[0].tolist() == hashed[0].tolist()
    assert dense[1].tolist() == hashed[1].tolist()


# ----------------------------------------------------------------------------- edge cases
def test_variance_zero_means_exactly_equal_values() -> None:
    # The float mean of 239 copies of 10.01 is not 10.01, so a float-variance test would not see
    # a constant series; the exact min == max test does.
    x = np.full(239, 10.01)
    offsets = np.array([0, 239])
    m = CPU.moments(offsets, x)
    assert np.isnan(skewness(np, m, 10)[0]) and np.isnan(kurtosis(np, m, 10)[0])
    y = np.arange(239.0)
    assert np.isnan(correlation(np, CPU.corr_stats(offsets, x, y), 10)[0])
    assert np.isnan(correlation(np, CPU.corr_stats(offsets, y, x), 10)[0])
    # One different value breaks the tie: defined again.
    x2 = x.copy()
    x2[5] = 10.02
    assert np.isfinite(skewness(np, CPU.moments(offsets, x2), 10)[0])


def test_min_obs_rule() -> None:
    x = np.array([1.0, 2.0, 4.0, 8.0, np.nan])
    offsets = np.array([0, 5])
    m = CPU.moments(offsets, x)
    assert m.n[0] == 4
    assert np.isfinite(skewness(np, m, 4)[0]) and np.isnan(skewness(np, m, 5)[0])


def test_ratio_is_nan_only_for_bad_denominators() -> None:
    num = np.array([1.0, 0.0, 2.0, 3.0, 5.0])
    den = np.array([2.0, 0.0, 0.0, np.inf, np.nan])
    out = ratio(np, num, den)
    assert out[0] == 0.5 and np.isnan(out[1:]).all()
    assert ratio(np, np.array([0.0]), np.array([4.0]))[0] == 0.0


def test_empty_and_single_segments() -> None:
    offsets = np.array([0, 0, 1, 1])
    x = np.array([7.0])
    n, tot = CPU.sum(offsets, x)
    assert n.tolist() == [0, 1, 0] and tot.tolist() == [0.0, 7.0, 0.0]
    m = CPU.moments(offsets, x)
    assert m.n.tolist() == [0, 1, 0] and m.m2[1] == 0.0 and np.isnan(m.mean[0])
    totals, first = CPU.group_sum(offsets, np.array([3]), x)
    assert totals.tolist() == [7.0] and first.tolist() == [True]
    assert CPU.bin_sum(offsets, np.array([2]), x, 4).tolist() == [[0] * 4, [0, 0, 7, 0], [0] * 4]
    assert segment_ids(np, offsets).tolist() == [1]
    assert segment_starts_mask(np, offsets, 1).tolist() == [True]


def test_dense_rows_equal_csr_runs() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 240))
    dense = CPU.moments(CPU.rows(5, 240), x)
    for s in range(5):
        single = CPU.moments(np.array([0, 240]), x[s])
        assert dense.m2[s] == single.m2[0] and dense.m3[s] == single.m3[0]


@pytest.mark.parametrize(
    ("offsets", "n", "match"),
    [
        (np.array([0, 3, 2, 5]), 5, "decrease"),
        (np.array([0, 3, 4]), 5, "end at its length 5"),
        (np.array([1, 5]), 5, "start at 0"),
    ],
)
def test_bad_offsets_are_rejected(offsets: np.ndarray, n: int, match: str) -> None:
    with pytest.raises(SegmentError, match=match):
        CPU.sum(offsets, np.zeros(n))


def test_length_mismatches_are_rejected() -> None:
    with pytest.raises(SegmentError, match="different lengths"):
        CPU.corr_stats(np.array([0, 3]), np.zeros(3), np.zeros(4))
    with pytest.raises(SegmentError, match="mask has 2"):
        CPU.sum(np.array([0, 3]), np.zeros(3), np.ones(2, bool))
    with pytest.raises(SegmentError, match="k has"):
        CPU.topk_mask(np.array([0, 3]), np.zeros(3), np.ones(3, bool), np.array([1, 2]))


@SETTINGS
@given(S=st.integers(1, 5), L=st.integers(2, 12), lag=st.integers(-4, 4).filter(bool),
       seed=st.integers(0, 2**32 - 1),
       kind=st.sampled_from(["normal", "special", "constant", "huge"]))
def test_lagged_rows_read_in_place_give_the_bits_of_the_copies(
        S: int, L: int, lag: int, seed: int, kind: str) -> None:
    """``lagged_row_corr_stats`` (the CPU reads the shifted rows in place, masking the pairs
    that straddle two rows) equals ``corr_stats`` of the copied slices bit for bit, on values
    that would show a masked-out pair leaking in: NaN and inf, signed zeros, the largest
    finite magnitudes, constant rows (degenerate), negative numbers."""
    if abs(lag) >= L:
        lag = (L - 1) * (1 if lag > 0 else -1)
    rng = np.random.default_rng(seed)
    pool = {"normal": rng.normal(0, 1, 16),
            "special": np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.5, -2.5, 3.0]),
            "constant": np.array([7.25]),
            "huge": np.array([np.finfo(np.float64).max, -np.finfo(np.float64).max, 1.0, -0.0])}
    x = rng.choice(pool[kind], (S, L))
    y = rng.choice(pool[kind] if kind != "constant" else rng.normal(0, 1, 4), (S, L))
    k = abs(lag)
    a, b = (x[:, k:], y[:, :L - k]) if lag > 0 else (x[:, :L - k], y[:, k:])
    with np.errstate(all="ignore"):
        want = CPU.corr_stats(CPU.rows(S, L - k), a.copy(), b.copy())
        got = CPU.lagged_row_corr_stats(x, y, lag)
    for f in ("n", "cov", "var_x", "var_y", "degenerate"):
        w, g = getattr(want, f), getattr(got, f)
        assert g.dtype == w.dtype and np.array_equal(g.view(np.uint8), w.view(np.uint8)), f


def test_lagged_rows_are_checked() -> None:
    with pytest.raises(SegmentError, match="lag 3"):
        CPU.lagged_row_corr_stats(np.zeros((2, 3)), np.zeros((2, 3)), 3)
    with pytest.raises(SegmentError, match="lag 0"):
        CPU.lagged_row_corr_stats(np.zeros((2, 3)), np.zeros((2, 3)), 0)
    with pytest.raises(SegmentError, match=r"y \(2, 4\)"):
        CPU.lagged_row_corr_stats(np.zeros((2, 3)), np.zeros((2, 4)), 1)


@SETTINGS
@given(n=st.integers(0, 5000), threads=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_log_cut_over_threads_gives_numpys_bits(n: int, threads: int, seed: int) -> None:
    """``CpuSegmentOps.log`` cuts a large array into one part per kernel thread: the same
    bits as one ``np.log`` call whatever the cut (odd lengths, vector tails), on special
    values too (0, negatives, NaN, inf, subnormals), into ``out`` when given."""
    from unittest import mock

    from fbgpu.engine import cpu_aot

    rng = np.random.default_rng(seed)
    special = rng.choice(np.array([0.0, -0.0, -1.0, np.nan, np.inf, 5e-324, 1e-310, 1.0]), n)
    x = np.where(rng.random(n) < 0.7, rng.lognormal(2, 3, n), special)
    ops = CpuSegmentOps(parallel_min_elements=4)  # every array here is "large"
    with mock.patch.object(cpu_aot, "thread_count", return_value=threads), \
            np.errstate(all="ignore"):
        want = np.log(x)
        got = ops.log(x)
        out = np.full(n, 7.0)
        into = ops.log(x, out=out)
    assert into is out
    assert np.array_equal(got.view(np.uint64), want.view(np.uint64))
    assert np.array_equal(out.view(np.uint64), want.view(np.uint64))


def test_log_cut_over_threads_keeps_the_callers_error_handling() -> None:
    """The parts run on pool threads, yet ``np.errstate`` of the caller (thread-local)
    applies there: ``divide="raise"`` raises, ``"ignore"`` is silent."""
    import warnings
    from unittest import mock

    from fbgpu.engine import cpu_aot

    ops = CpuSegmentOps(parallel_min_elements=4)
    x = np.r_[np.ones(50), 0.0, np.ones(50)]
    with mock.patch.object(cpu_aot, "thread_count", return_value=2):
        with np.errstate(divide="raise"), pytest.raises(FloatingPointError):
            ops.log(x)
        with np.errstate(divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("error")
            assert ops.log(x)[50] == -np.inf
