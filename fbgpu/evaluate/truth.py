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

log = logging.getLogger(__name__)

ORACLE = "oracle: planted expected return"
ORACLE_Z = "oracle: informed flow only"
ORACLE_PI = "oracle: price pressure only"


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


def _summary(ic: pd.Series, oracle_mean: float) -> dict[str, float]:
    x = ic.dropna()
    n = len(x)
    m = float(x.mean()) if n else math.nan
    sd = float(x.std(ddof=1)) if n > 1 else math.nan
    t = m / (sd / math.sqrt(n)) if n > 1 and sd > 0 else math.nan
    share = m / oracle_mean if oracle_mean and math.isfinite(oracle_mean) else math.nan
    return {"RankIC mean": m, "t": t, "dates": n, "share of oracle IC": share}


def truth_table(store: Store, market: Any, rows: np.ndarray, pool: np.ndarray,
                ics: dict[str, pd.Series], fwd: np.ndarray | None = None) -> pd.DataFrame | None:
    """Oracle RankICs and each entry of ``ics`` (weekly RankIC series by date, e.g. the model
    factors') as ``RankIC mean``, ``t`` (mean / (sd / sqrt(n))), ``dates`` and ``share of
    oracle IC``; None on a store without ground truth. ``fwd`` is the evaluation return at
    ``rows`` (default ``P_{T+6} / P_{T+1} - 1``)."""
    sig = planted_signals(store, market, rows)
    if sig is None:
        return None
    fwd = market.forward_returns(1, 6)[rows] if fwd is None else fwd
    dates = pd.DatetimeIndex([market.dates[i] for i in rows], name="date")
    oracle_ic = {k: pd.Series(_host(rank_ic(v, fwd, pool)), index=dates) for k, v in sig.items()}
    om = float(oracle_ic[ORACLE].mean())
    out = {k: _summary(v, om) for k, v in oracle_ic.items()}
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
