"""The models layer's one z-score (fbgpu.models.zscore) against scipy, per slice."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fbgpu.models.zscore import zscore


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 6), s=st.integers(1, 40), seed=st.integers(0, 2**31 - 1),
       p_nan=st.floats(0.0, 0.6))
def test_rows_match_scipy_over_finite_entries(n: int, s: int, seed: int, p_nan: float) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(3.0, 2.0, (n, s))
    x[rng.random((n, s)) < p_nan] = np.nan
    out = zscore(torch.as_tensor(x), 1).numpy()
    for i in range(n):
        fin = np.isfinite(x[i])
        assert np.isnan(out[i][~fin]).all()  # missing entries keep their NaN
        v = x[i][fin]
        if v.size and np.var(v) > 0:
            np.testing.assert_allclose(out[i][fin], scipy.stats.zscore(v), rtol=1e-12, atol=1e-12)
        else:  # a constant or single-entry row: 0, not NaN or inf
            assert (out[i][fin] == 0.0).all()


def test_valid_mask_and_fill_across_stocks() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 50, 4))
    x[0, 1, :10, 2] = np.nan
    x[1, 2, :, 3] = 7.0  # constant across stocks: variance 0 <= min_var
    pool = rng.random((2, 50)) < 0.7
    valid = torch.as_tensor(pool)[:, None, :, None]
    out = zscore(torch.as_tensor(x), 2, valid, min_var=1e-12, keep_missing=False).numpy()
    assert np.isfinite(out).all()
    for d in range(2):
        for p in range(3):
            for f in range(4):
                col, o = x[d, p, :, f], out[d, p, :, f]
                m = pool[d] & np.isfinite(col)
                assert (o[~m] == 0.0).all()  # outside the pool or missing: the neutral 0
                if np.var(col[m]) > 1e-12:
                    np.testing.assert_allclose(o[m], scipy.stats.zscore(col[m]), atol=1e-12)
                else:
                    assert (o[m] == 0.0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_is_kept(dtype: torch.dtype) -> None:
    x = torch.arange(12, dtype=dtype).reshape(3, 4)
    z = zscore(x, 1)
    assert z.dtype == dtype
    torch.testing.assert_close(z.mean(1), torch.zeros(3, dtype=dtype), atol=1e-6, rtol=0)
