"""Model samples: labels, period bars, LF normalisation and HF windows against direct oracles."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import scipy.stats
import torch

from fbgpu.models.config import TrainConfig
from fbgpu.models.datasets import (
    DeviceSamples,
    ModelDataError,
    ModelInputs,
    daily_table,
    make_labels,
    period_tables,
    period_to_date_bars,
)

CPU = torch.device("cpu")


def _calendar(n: int, seed: int = 0, start: dt.date = dt.date(2021, 12, 20)) -> list[dt.date]:
    """Weekdays with a few random holidays (so some weeks are short or empty)."""
    rng = np.random.default_rng(seed)
    out, d = [], start
    while len(out) < n:
        if d.weekday() < 5 and rng.random() > 0.08:
            out.append(d)
        d += dt.timedelta(1)
    return out


def _bars(D: int, S: int, seed: int = 0, nan_share: float = 0.1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    close = 10 * np.exp(np.cumsum(0.02 * rng.standard_normal((D, S)), 0))
    o = close * np.exp(0.01 * rng.standard_normal((D, S)))
    h = np.maximum(o, close) * 1.01
    lo = np.minimum(o, close) * 0.99
    vw = (o + close) / 2
    vol = rng.integers(1000, 100000, (D, S)).astype(float)
    bars = np.stack([o, h, lo, close, vw, vol], -1)
    gone = rng.random((D, S)) < nan_share
    bars[gone, :5] = np.nan  # suspended: no prices
    bars[gone, 5] = 0.0
    return bars


def _period_key(d: dt.date, kind: str) -> tuple[int, int]:
    return d.isocalendar()[:2] if kind == "week" else (d.year, d.month)


@pytest.mark.parametrize("kind,length", [("week", 20), ("month", 12)])
def test_period_tables_against_loops(kind: str, length: int) -> None:
    dates = _calendar(300, 1)
    start, seq = period_tables(dates, kind, length)
    keys = [_period_key(d, kind) for d in dates]
    for d in range(len(dates)):
        assert keys[start[d]] == keys[d] and (start[d] == 0 or keys[start[d] - 1] != keys[d])
        prev_keys: list[tuple[int, int]] = []
        for k in keys[:d]:
            if k != keys[d] and (not prev_keys or prev_keys[-1] != k):
                prev_keys.append(k)
        want = []
        for k in prev_keys[-(length - 1):]:
            want.append(max(i for i in range(d) if keys[i] == k))
        want = [-1] * (length - 1 - len(want)) + want + [d]
        assert seq[d].tolist() == want
    assert daily_table(5, 3).tolist() == [[-1, -1, 0], [-1, 0, 1], [0, 1, 2], [1, 2, 3],
                                         [2, 3, 4]]


@pytest.mark.parametrize("kind", ["week", "month"])
def test_period_to_date_bars_against_pandas(kind: str) -> None:
    dates = _calendar(120, 2)
    bars = _bars(len(dates), 4, 3)
    start, _ = period_tables(dates, kind, 2)
    got = period_to_date_bars(torch.tensor(bars), torch.tensor(start), 31).numpy()
    keys = [_period_key(d, kind) for d in dates]
    for d in range(len(dates)):
        days = [i for i in range(d + 1) if keys[i] == keys[d]]
        blk = bars[days]  # [n, S, 6]
        for s in range(4):
            o, h, lo, c, vw, vol = (blk[:, s, k] for k in range(6))
            fin = np.isfinite(o)
            exp_open = o[fin][0] if fin.any() else np.nan
            ok = np.isfinite(vw) & (vol > 0)
            exp_vwap = (vw[ok] * vol[ok]).sum() / vol[ok].sum() if ok.any() else np.nan
            want = [exp_open, np.nanmax(h) if fin.any() else np.nan,
                    np.nanmin(lo) if fin.any() else np.nan, c[-1], exp_vwap, vol.sum()]
            np.testing.assert_allclose(got[d, s], want, rtol=1e-12, equal_nan=True)


def test_labels_are_zscored_ten_day_vwap_returns() -> None:
    rng = np.random.default_rng(4)
    D, S = 40, 30
    vwap = 10 * np.exp(np.cumsum(0.02 * rng.standard_normal((D, S)), 0))
    pool = rng.random((D, S)) > 0.2
    lab = make_labels(vwap, pool, 10)
    T = 7
    raw = vwap[T + 11] / vwap[T + 1] - 1
    want = np.full(S, np.nan)
    want[pool[T]] = scipy.stats.zscore(raw[pool[T]])
    np.testing.assert_allclose(lab[T], want, rtol=1e-10, equal_nan=True)
    assert np.isnan(lab[D - 11 :]).all()  # the label of T needs vwap at T+11
    assert np.isfinite(lab[: D - 11][pool[: D - 11]]).all()


def _inputs(D: int = 150, S: int = 25, F: int = 5, seed: int = 0,
            panel_dtype: type = np.float32) -> ModelInputs:
    rng = np.random.default_rng(seed)
    dates = _calendar(D, seed)
    bars = _bars(D, S, seed)
    pool = rng.random((D, S)) > 0.15
    panel = rng.standard_normal((D, S, F)).astype(panel_dtype)
    panel[rng.random((D, S, F)) < 0.05] = np.nan
    vw = np.where(np.isfinite(bars[..., 4]), bars[..., 4], 10.0)
    return ModelInputs(dates, np.array([f"S{i}" for i in range(S)], dtype=object), pool,
                       make_labels(vw, pool), panel, bars, tuple(f"f{i}" for i in range(F)))


def test_hf_windows_are_views_of_the_panel_and_gather_the_right_rows() -> None:
    inp = _inputs()
    cfg = TrainConfig()
    data = DeviceSamples(inp, cfg, CPU, ("hf",))
    assert data.hf_panel is not None and data.hf_windows is not None
    # float32 input: torch views the caller's memory, the windows view the same storage.
    assert data.hf_panel.data_ptr() == inp.hf_panel.ctypes.data
    assert data.hf_windows.untyped_storage().data_ptr() == inp.hf_panel.ctypes.data
    days = [45, 50]
    b = data.batch(days, train=False)
    assert b.xs["hf"].shape == (b.size, 40, 5)
    for r in range(b.size):
        d, s = days[int(b.group[r])], int(b.stock[r])
        assert inp.pool[d, s]
        want = np.nan_to_num(inp.hf_panel[d - 39 : d + 1, s, :], nan=0.0)
        np.testing.assert_array_equal(b.xs["hf"][r].numpy(), want)
    assert b.size == int(inp.pool[days].sum())
    tb = data.batch(days, train=True)
    assert tb.size == int((inp.pool[days] & np.isfinite(inp.label[days])).sum())
    np.testing.assert_allclose(
        tb.label.numpy(), inp.label[[days[g] for g in tb.group.tolist()], tb.stock.numpy()],
        rtol=1e-6)


def test_lf_features_against_direct_computation() -> None:
    inp = _inputs(D=330, S=20, seed=5)
    cfg = TrainConfig()
    data = DeviceSamples(inp, cfg, CPU, ("daily", "weekly", "monthly"))
    assert data.lf_cache is not None  # small: precomputed for the whole grid
    d = int(data.grid[-3])
    feats = data.lf_features([d])[0].numpy()  # [S, 72, 6]
    np.testing.assert_array_equal(feats, data.lf_cache[data._lf_pos[d]].numpy())
    pool = inp.pool[d]
    _, wk_seq = period_tables(inp.dates, "week", 20)
    week = period_to_date_bars(torch.tensor(inp.bars, dtype=torch.float32),
                               torch.tensor(period_tables(inp.dates, "week", 20)[0]), 7).numpy()
    for pos, feat, src_days, src in (
        (3, 3, list(range(d - 39, d + 1)), inp.bars),  # daily close, 4th bar
        (40 + 5, 5, wk_seq[d].tolist(), week),  # weekly volume, 6th weekly bar
    ):
        j = pos if pos < 40 else pos - 40
        x = src[src_days[j], :, feat] / src[d, :, feat]
        x = np.where(np.isfinite(x), x, np.nan)
        m = pool & np.isfinite(x)
        z = (x - x[m].mean()) / x[m].std()
        want = np.where(m, z, 0.0)
        np.testing.assert_allclose(feats[pool, pos, feat], want[pool], rtol=2e-4, atol=2e-5)
    # the last bar of each sequence is its own reference: constant, so z-scored to 0
    assert np.all(feats[:, [39, 59, 71], :] == 0)
    # every (position, feature) is standardised over the pool
    live = feats[pool][:, :39, :4]
    np.testing.assert_allclose(live.mean(0), 0, atol=1e-5)


def test_lf_equal_weight_is_the_mean_of_all_lf_inputs_over_the_pool() -> None:
    inp = _inputs(D=330, S=20, seed=6)
    data = DeviceSamples(inp, TrainConfig(), CPU, ("daily", "weekly", "monthly"))
    days = list(range(250, 320))  # more than one 64-date chunk
    got = data.lf_equal_weight(days).numpy()
    feats = data.lf_features(days).numpy()  # [n, S, 72, 6], checked above
    for k, d in enumerate(days):
        pool = inp.pool[d]
        np.testing.assert_allclose(got[k][pool], feats[k][pool].sum((1, 2)) / (72 * 6),
                                   rtol=1e-5, atol=1e-7)
        assert np.isnan(got[k][~pool]).all()


def test_date_batches_hold_whole_dates_within_batch_size() -> None:
    inp = _inputs(S=25)
    data = DeviceSamples(inp, TrainConfig(batch_size=60), CPU, ("hf",))
    days = list(data.grid)
    batches = data.date_batches(days, np.random.default_rng(0))
    assert all(len(b) == 2 for b in batches[:-1])  # 60 // 25 stocks = 2 dates
    assert sorted(x for b in batches for x in b) == sorted(days)
    again = data.date_batches(days, np.random.default_rng(0))
    assert batches == again
    assert data.date_batches(days, None)[0] == days[:2]


def test_bad_inputs_name_the_array() -> None:
    inp = _inputs()
    with pytest.raises(ModelDataError, match="label"):
        ModelInputs(inp.dates, inp.symbols, inp.pool, inp.label[:-1])
    with pytest.raises(ModelDataError, match="bars"):
        ModelInputs(inp.dates, inp.symbols, inp.pool, inp.label, bars=inp.bars[..., :5])
    with pytest.raises(ModelDataError, match="hf_panel"):
        DeviceSamples(ModelInputs(inp.dates, inp.symbols, inp.pool, inp.label), TrainConfig(),
                      CPU, ("hf",))


def test_lf_logdiff_inputs_against_direct_computation() -> None:
    inp = _inputs(D=330, S=20, seed=7)
    data = DeviceSamples(inp, TrainConfig(lf_inputs="logdiff"), CPU, ("daily",))
    d = int(data.grid[-2])
    feats = data.lf_features([d])[0].numpy()  # [S, 72, 6]
    pool = inp.pool[d]
    days = np.arange(d - 39, d + 1)
    b = inp.bars[days]  # [40, S, 6]
    with np.errstate(all="ignore"):
        want_x = {3: np.log(b[1:, :, 3] / b[:-1, :, 3]),  # close-to-close log return
                  0: np.log(b[1:, :, 0] / b[:-1, :, 3])}  # open gap vs previous close
        v = np.where(b[..., 5] > 0, b[..., 5], np.nan)
        want_x[5] = np.log(v / np.nanmean(v, 0))[1:]  # volume ratio to the 40-day mean
    for feat, x in want_x.items():
        pos = 20  # position 21 of the daily sequence
        col = x[pos - 1]
        col = np.where(np.isfinite(col), col, np.nan)
        m = pool & np.isfinite(col)
        want = np.where(m, (col - col[m].mean()) / col[m].std(), 0.0)
        np.testing.assert_allclose(feats[pool, pos, feat], want[pool], rtol=2e-4, atol=5e-5)
    assert np.all(feats[:, 0, :5] == 0)  # no previous close at position 0
    assert feats[pool][:, 39, 3].std() > 0.5  # the last bar now carries information
    assert TrainConfig().lf_inputs == "relative"
