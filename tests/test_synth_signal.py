"""The planted structure is there, with the documented signs and sizes (docs/synth.md).

Uses a mid-sized market with few ticks per stock-day (150 stocks x 80 days): the daily price
dynamics are those of every preset, and the cross-section is wide enough for statistics.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from fbgpu.data.store import Store
from fbgpu.data.synth import PRESETS, SynthConfig, generate_market

WIDE = PRESETS["small"].model_copy(update={"n_stocks": 150, "n_days": 80,
                                           "orders_per_day": 120})


def _generate(root: Path, cfg: SynthConfig) -> dict[str, np.ndarray]:
    store = Store(root)
    generate_market(store, cfg, seed=11, progress=False)
    daily = store.read_panel("daily")
    truth = store.read_panel("synth_truth", symbols=daily.symbols)
    out = {k: daily[k].astype(float) for k in ("close", "pre_close", "vwap", "adj_factor",
                                               "suspended")}
    out.update({k: truth[k] for k in ("informed_state", "pressure")})
    return out


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    return _generate(tmp_path_factory.mktemp("wide"), WIDE)


def _forward_vwap_return(p: dict[str, np.ndarray], h: int = 5) -> np.ndarray:
    """Evaluation return of a signal at T (spec/research.md): vwap_{T+1+h} / vwap_{T+1} - 1."""
    adj = p["vwap"] * p["adj_factor"]
    out = np.full_like(adj, np.nan)
    out[: -(h + 1)] = adj[h + 1:] / adj[1:-h] - 1
    return out


def _rank_ic(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    ics = []
    for a, b in zip(x, y, strict=True):
        m = np.isfinite(a) & np.isfinite(b)
        if m.sum() > 30:
            ics.append(stats.spearmanr(a[m], b[m])[0])
    return np.array(ics)


def _t_stat(ic: np.ndarray, overlap: int = 5) -> float:
    """Mean / standard error, the error inflated for ``overlap``-day overlapping returns."""
    return float(ic.mean() / (ic.std(ddof=1) * np.sqrt(overlap / len(ic))))


def test_informed_state_predicts_forward_returns(wide: dict[str, np.ndarray]) -> None:
    fwd = _forward_vwap_return(wide)
    ic = _rank_ic(wide["informed_state"], fwd)
    assert 0.04 < ic.mean() < 0.2, ic.mean()
    assert _t_stat(ic) > 3


def test_pressure_reverts(wide: dict[str, np.ndarray]) -> None:
    fwd = _forward_vwap_return(wide)
    ic = _rank_ic(wide["pressure"], fwd)
    assert ic.mean() < -0.1 and _t_stat(ic) < -3
    # and it shows in plain past returns: short-term reversal of the last 5 days
    close = wide["close"] * wide["adj_factor"]
    past = np.full_like(close, np.nan)
    past[5:] = close[5:] / close[:-5] - 1
    ic_rev = _rank_ic(past, fwd)
    assert ic_rev.mean() < 0, ic_rev.mean()


def test_no_signal_in_pure_noise_column(wide: dict[str, np.ndarray]) -> None:
    """Control: a random score has RankIC ~ 0 under the same statistics (the test can fail)."""
    fwd = _forward_vwap_return(wide)
    noise = np.random.default_rng(0).standard_normal(fwd.shape)
    ic = _rank_ic(noise, fwd)
    assert abs(_t_stat(ic)) < 3


def _abs_return_autocorrelation(p: dict[str, np.ndarray]) -> float:
    r = np.log(p["close"] / p["pre_close"])
    r[p["suspended"] == 1] = np.nan
    x = np.abs(r - np.nanmean(r, axis=1, keepdims=True))  # idiosyncratic part, per day
    x -= np.nanmean(x, axis=0)
    a, b = x[1:].ravel(), x[:-1].ravel()
    m = np.isfinite(a) & np.isfinite(b)
    return float(np.corrcoef(a[m], b[m])[0, 1])


def test_volatility_clustering_of_daily_returns(wide: dict[str, np.ndarray],
                                                tmp_path: Path) -> None:
    ac = _abs_return_autocorrelation(wide)
    assert ac > 0.04, ac
    # control: switch GARCH off and the clustering goes away
    flat = _generate(tmp_path, WIDE.model_copy(update={"garch_alpha": 0.0, "garch_beta": 0.0,
                                                       "n_days": 60, "orders_per_day": 40}))
    assert _abs_return_autocorrelation(flat) < ac - 0.03
