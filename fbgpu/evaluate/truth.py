"""Ground truth of the synthetic market: the oracle IC and what each factor and model recovered.

The synthetic market (docs/synth.md, "Planted structure") records its latent states in table
``synth_truth``: the informed-flow state ``z_t`` (``informed_state``, AR(1) with coefficient
``phi``, moving the efficient log price of day t+1 by ``drift * z_t``) and the transient price
pressure ``pi_t`` (``pressure``, AR(1) with coefficient ``psi``, entering the efficient log
price as a level, so it reverts). At a rebalance date T the expected efficient log return over
the evaluation window (bought at T+1, valued at T+6, both taken as end-of-day for the planted
terms) is, given what the market planted up to T:

    mu_T = drift * (phi + phi^2 + ... + phi^5) * z_T  +  (psi^6 - psi) * pi_T

(days T+2..T+6 carry the drifts of z_{T+1..T+5}, E[z_{T+k} | z_T] = phi^k z_T; the pressure
level changes by pi_{T+6} - pi_{T+1}, E = (psi^6 - psi) pi_T). The **oracle** is the
cross-sectional ranking by ``mu_T``: its weekly RankIC against the realised evaluation return,
on the same dates and pool as every factor, is the best any signal that knows only the planted
states can expect; the rest of the return (market, industry, idiosyncratic noise, jumps) is
unpredictable by construction. The two parts are also reported alone (informed flow only,
pressure only). RankIC is invariant to scaling, so only the ratio of the two coefficients
matters for the combined oracle.

"Share of oracle" of a factor or model = its mean RankIC / the oracle's mean RankIC, both over
the same dates: the fraction of the plantable predictability it recovered.

**Attainable ceilings.** The oracle knows the latent states; a model only sees them through the
data, measured with noise. How much of the oracle the data can give at all is measured by a
least-squares fit, in sample, of the cross-sectionally z-scored ``mu_T`` on features the models
see (each z-scored per date over the pool, clipped at 5, missing = 0), pooled over every 5th
trading day of the store (the test dates included: a ceiling, not a forecast); the fitted
signal's weekly RankIC against the realised return on the test dates is reported like a model's
(:data:`ATTAIN_PANEL`: the evaluation's preprocessed factor panel, the stored ``panel`` table
with its 20-day smoothing, at lags :data:`PANEL_LAGS` of a 40-day window: the HF model's input
when it is trained on that panel, as ``fbgpu train`` does by default; :data:`ATTAIN_RAW`: the
raw daily factor values of the last 10 days and the last 20 daily close-to-close returns, i.e.
the data before any smoothing, close to what the demo's HF model sees (``[demo]
model_panel_window = 1``); :data:`ATTAIN_BARS`: the 20 returns alone, the part of the LF
model's bars that carries the planted terms). A non-linear learner can exceed a linear ceiling
(docs/synth.md, "Why the models recover little of the oracle").
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fbgpu.data.store import Store
from fbgpu.evaluate.stats import rank_ic
from fbgpu.panel.preprocess import zscore

log = logging.getLogger(__name__)

ORACLE = "oracle: planted expected return"
ORACLE_Z = "oracle: informed flow only"
ORACLE_PI = "oracle: price pressure only"
ATTAIN_PANEL = "attainable: linear in the 20-day smoothed panel (40 days)"
ATTAIN_RAW = "attainable: linear in raw factors + returns"
ATTAIN_BARS = "attainable: linear in past returns"

#: Lags (trading days before T) of the preprocessed panel in :data:`ATTAIN_PANEL`: a subsample
#: of the HF model's 40-day window (consecutive lags add little: the panel is a 20-day mean).
PANEL_LAGS: tuple[int, ...] = (0, 1, 2, 3, 5, 10, 20, 39)
#: Lags of the raw daily factor values and number of past daily returns in :data:`ATTAIN_RAW`.
RAW_LAGS: tuple[int, ...] = tuple(range(10))
RETURN_LAGS = 20
#: The ceilings' fit uses every ``FIT_EVERY``-th trading day (the rebalance grid).
FIT_EVERY = 5


def _host(a: Any) -> np.ndarray:
    return a.get() if hasattr(a, "get") else np.asarray(a)


def planted_coefficients(config: dict[str, Any], horizon: int = 5) -> tuple[float, float]:
    """``(a, b)`` of ``mu_T = a z_T + b pi_T`` (module doc) for a ``horizon``-day window that
    starts at T+1, from the synthetic market's config (``informed_drift``, ``informed_phi``,
    ``pressure_psi``); log-return units."""
    drift, phi = float(config["informed_drift"]), float(config["informed_phi"])
    psi = float(config["pressure_psi"])
    a = drift * sum(phi ** k for k in range(1, horizon + 1))
    b = psi ** (horizon + 1) - psi
    return a, b


def planted_signals(store: Store, market: Any, rows: np.ndarray) -> dict[str, np.ndarray] | None:
    """The oracle signals ``[R, S]`` at ``rows`` of ``market`` (module doc), or None when the
    store has no ``synth_truth`` / ``synth.json``."""
    meta_p = Path(store.root) / "synth.json"
    if not store.dates("synth_truth") or not meta_p.exists():
        return None
    cfg = json.loads(meta_p.read_text()).get("config", {})
    if not {"informed_drift", "informed_phi", "pressure_psi"} <= set(cfg):
        return None
    dates = [market.dates[i] for i in rows]
    have = set(store.dates("synth_truth"))
    if not all(d in have for d in dates):
        log.warning("synth_truth lacks some rebalance dates: oracle skipped")
        return None
    p = store.read_panel("synth_truth", dates, ["informed_state", "pressure"],
                         symbols=list(market.symbols))
    z, pi = p["informed_state"], p["pressure"]
    a, b = planted_coefficients(cfg)
    return {ORACLE: a * z + b * pi, ORACLE_Z: a * z, ORACLE_PI: b * pi}


def lagged_features(x: np.ndarray, rows: np.ndarray, lags: tuple[int, ...],
                    pool: np.ndarray) -> np.ndarray:
    """``[len(rows), S, F * len(lags)]``: ``x[r - k, :, f]`` for each lag ``k``, z-scored per
    row over ``pool`` (``[len(rows), S]``), clipped at +-5, missing (or before day 0) = 0."""
    R, S = len(rows), x.shape[1]
    x3 = x if x.ndim == 3 else x[:, :, None]
    out = np.zeros((R, S, x3.shape[2] * len(lags)))
    for i, k in enumerate(lags):
        src = rows - k
        ok = src >= 0
        v = np.full((R, S, x3.shape[2]), np.nan)
        v[ok] = x3[src[ok]]
        v = np.where(pool[:, :, None], v, np.nan)
        out[:, :, i * x3.shape[2]:(i + 1) * x3.shape[2]] = np.nan_to_num(
            np.clip(_host(zscore(v)), -5.0, 5.0))
    return out


def past_returns(market: Any) -> np.ndarray:
    """``[D, S]`` daily log returns of the adjusted close, ``log(C_t / C_{t-1})`` (NaN on day 0):
    known at each day's close."""
    logc = np.log(_host(market.close_adj))
    ret = np.full(logc.shape, np.nan)
    ret[1:] = logc[1:] - logc[:-1]
    return ret


def stored_cube(store: Store, market: Any, table: str, rows: np.ndarray,
                lags: tuple[int, ...]) -> np.ndarray | None:
    """``[D, S, F]``: the date-partitioned ``table`` (``panel`` or ``factors``) on the market's
    calendar and symbols, read only on the days ``rows - lag`` needs (NaN elsewhere); None when
    the store lacks one of them."""
    have = set(store.dates(table))
    need = sorted({market.dates[r - k] for r in rows for k in lags if r - k >= 0})
    if not have or not all(d in have for d in need):
        return None
    syms = list(market.symbols)
    p = store.read_panel(table, need, symbols=syms)
    cube = np.full((len(market.dates), len(syms), len(p.fields)), np.nan)
    cube[[market.date_index(d) for d in need]] = np.stack(list(p.fields.values()), axis=2)
    return cube


def linear_ceiling(features: np.ndarray, target: np.ndarray, fit_pool: np.ndarray,
                   fit_idx: np.ndarray, eval_idx: np.ndarray) -> np.ndarray:
    """The in-sample least-squares projection of ``target`` on ``features`` (module doc).

    ``features`` ``[R, S, K]`` and ``target`` ``[R, S]`` on a common set of rows; the
    coefficients are fitted on the rows ``fit_idx`` (pooled over the stocks of ``fit_pool``,
    target z-scored per row) and the fitted signal ``features @ coef`` is returned at the rows
    ``eval_idx`` (``[len(eval_idx), S]``, NaN outside ``fit_pool``)."""
    y = _host(zscore(np.where(fit_pool, target, np.nan)))
    A = features[fit_idx].reshape(-1, features.shape[2])
    t = y[fit_idx].ravel()
    ok = np.isfinite(t) & fit_pool[fit_idx].ravel()
    A, t = A[ok], t[ok]
    # normal equations (K x K, K <= a few hundred; an SVD of the [N, K] matrix is 100x slower);
    # a ridge of 1e-9 of the mean diagonal only keeps a constant (all-zero) feature solvable
    gram = A.T @ A
    gram[np.diag_indices_from(gram)] += 1e-9 * max(float(np.trace(gram)) / len(gram), 1e-300)
    coef = np.linalg.solve(gram, A.T @ t)
    return np.where(fit_pool[eval_idx], features[eval_idx] @ coef, np.nan)


def attainable_signals(store: Store, market: Any, rows: np.ndarray,
                       mu_all: Any) -> dict[str, np.ndarray]:
    """The attainable-ceiling signals ``[len(rows), S]`` (module doc) for the feature sets the
    store holds: :data:`ATTAIN_PANEL` needs the ``panel`` table, :data:`ATTAIN_RAW` the
    ``factors`` table; :data:`ATTAIN_BARS` needs only the market. ``mu_all(fit_rows)`` gives
    ``mu_T`` at the fit rows."""
    D = len(market.dates)
    grid = np.arange(max(PANEL_LAGS), D, FIT_EVERY)
    if len(grid) < 2:  # too short a market for a fit
        return {}
    fit_rows = np.union1d(grid, rows)
    eval_idx = np.searchsorted(fit_rows, rows)
    fit_idx = np.searchsorted(fit_rows, grid)
    pool = _host(market.pool())[fit_rows].astype(bool)
    mu = mu_all(fit_rows)
    bars = lagged_features(past_returns(market), fit_rows, tuple(range(RETURN_LAGS)), pool)
    out = {ATTAIN_BARS: linear_ceiling(bars, mu, pool, fit_idx, eval_idx)}
    for table, name, lags in (("panel", ATTAIN_PANEL, PANEL_LAGS), ("factors", ATTAIN_RAW,
                                                                      RAW_LAGS)):
        cube = stored_cube(store, market, table, fit_rows, lags)
        if cube is None:
            continue
        f = lagged_features(cube, fit_rows, lags, pool)
        if name == ATTAIN_RAW:
            f = np.concatenate([f, bars], axis=2)
        out[name] = linear_ceiling(f, mu, pool, fit_idx, eval_idx)
        log.info("truth: %s from %d features", name, f.shape[2])
    return out


def _summary(ic: pd.Series, oracle_mean: float) -> dict[str, float]:
    x = ic.dropna()
    n = len(x)
    m = float(x.mean()) if n else math.nan
    sd = float(x.std(ddof=1)) if n > 1 else math.nan
    t = m / (sd / math.sqrt(n)) if n > 1 and sd > 0 else math.nan
    share = m / oracle_mean if oracle_mean and math.isfinite(oracle_mean) else math.nan
    return {"RankIC mean": m, "t": t, "dates": n, "share of oracle IC": share}


def truth_table(store: Store, market: Any, rows: np.ndarray, pool: np.ndarray,
                ics: dict[str, pd.Series], fwd: np.ndarray | None = None,
                attainable: bool = True) -> pd.DataFrame | None:
    """Oracle RankICs, the attainable ceilings (with ``attainable``; module doc) and each entry
    of ``ics`` (weekly RankIC series by date, e.g. the model factors') as ``RankIC mean``, ``t``
    (mean / (sd / sqrt(n))), ``dates`` and ``share of oracle IC``; None on a store without
    ground truth. ``fwd`` is the evaluation return at ``rows`` (default
    ``P_{T+6} / P_{T+1} - 1``)."""
    sig = planted_signals(store, market, rows)
    if sig is None:
        return None
    fwd = market.forward_returns(1, 6)[rows] if fwd is None else fwd
    dates = pd.DatetimeIndex([market.dates[i] for i in rows], name="date")
    oracle_ic = {k: pd.Series(_host(rank_ic(v, fwd, pool)), index=dates) for k, v in sig.items()}
    om = float(oracle_ic[ORACLE].mean())
    out = {k: _summary(v, om) for k, v in oracle_ic.items()}
    if attainable:
        def mu_at(r: np.ndarray) -> np.ndarray:
            s = planted_signals(store, market, r)
            return s[ORACLE] if s is not None else np.full((len(r), len(market.symbols)), np.nan)

        for k, v in attainable_signals(store, market, rows, mu_at).items():
            out[k] = _summary(pd.Series(_host(rank_ic(v, fwd, pool)), index=dates), om)
    for name, ic in ics.items():
        s = ic.copy()
        s.index = pd.DatetimeIndex(pd.to_datetime(s.index), name="date")
        out[name] = _summary(s.reindex(dates), om)
    df = pd.DataFrame(out).T
    df.index.name = "signal"
    return df


def factor_truth_table(store: Store, market: Any, rows: np.ndarray, pool: np.ndarray,
                       values: Any, names: list[str], directions: dict[str, int],
                       ics: dict[str, pd.Series]) -> pd.DataFrame | None:
    """Per factor: what the planted structure puts in it and what it recovered.

    Columns: ``paper direction`` (the report's), ``planted direction`` (sign of the factor's
    mean cross-sectional rank correlation with ``mu_T``: the direction the planted structure
    gives it in this market), ``corr with planted mu`` (that mean rank correlation: the planted
    strength), ``corr with informed part`` / ``corr with pressure part`` (the same with each
    part of ``mu_T``),
    ``RankIC mean`` (direction-signed, realised) and ``share of oracle IC``. ``values`` is the
    raw ``[R, S, F]`` panel at ``rows``. None without ground truth."""
    sig = planted_signals(store, market, rows)
    if sig is None:
        return None
    fwd = market.forward_returns(1, 6)[rows]
    om = float(np.nanmean(_host(rank_ic(sig[ORACLE], fwd, pool))))
    v = _host(values)
    out = []
    for j, n in enumerate(names):
        f = v[:, :, j]
        cm = float(np.nanmean(_host(rank_ic(f, sig[ORACLE], pool))))
        cz = float(np.nanmean(_host(rank_ic(f, sig[ORACLE_Z], pool))))
        cp = float(np.nanmean(_host(rank_ic(f, sig[ORACLE_PI], pool))))
        ric = float(ics[n].mean()) if n in ics else math.nan
        out.append({"factor": n, "paper direction": directions.get(n, 1),
                    "planted direction": int(np.sign(cm)) if math.isfinite(cm) else 0,
                    "corr with planted mu": cm, "corr with informed part": cz,
                    "corr with pressure part": cp,
                    "RankIC mean": ric, "share of oracle IC": ric / om if om else math.nan})
    return pd.DataFrame(out).set_index("factor")
