""""The paper vs this run": each headline claim of the research report beside this run's figure.

Reads only what the pipeline steps wrote under ``<store>/reports/`` (numbers are computed in
evaluate/models/portfolio; this module only compares them). A claim "A beats B" is judged on the
paired weekly RankIC difference ``d_t = IC_A(t) - IC_B(t)`` over the dates both have:

    t = mean(d) / (std(d, ddof=1) / sqrt(n))

and the verdict is ``reproduced`` when ``t >= 2``, ``contradicted`` when ``t <= -2``,
``inconclusive`` otherwise (also when ``n < 3``). Index enhancement "earns excess at each cap" is
judged by ``t = IR * sqrt(years)`` of the annualized excess return (IR = annualized excess /
tracking error, so ``IR * sqrt(years)`` is the t-statistic of the mean daily excess).

The published figures are the report's own (``shared/spec/research.md``, real market
2017-01-04 .. 2023-11-30, weekly); they are quoted, never used in a verdict.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fbgpu.evaluate.families import best_single_factor as best_single

log = logging.getLogger(__name__)

#: Threshold on |t| for a verdict other than "inconclusive".
T_THRESHOLD = 2.0

#: The report's published weekly RankIC means (fractions), real market 2017-01 .. 2023-11.
PUBLISHED_RANKIC: dict[str, float] = {
    "full-band fusion": 0.1147, "HF deep-learning": 0.0910, "HF equal-weight": 0.0843,
    "HF ICIR-weighted": 0.0738, "LF multi-task": 0.1044, "daily only": 0.1093,
    "LF equal-weight of 3": 0.0991, "LF no shared GRU": 0.1022, "full-band multi-task": 0.1099,
    "best single factor": 0.067,
}

#: Published index-enhancement annualized excess return / IR per (index, turnover cap).
PUBLISHED_ENHANCEMENT: dict[str, list[tuple[str, float, float]]] = {
    "csi500": [("30%", 0.1946, 3.31), ("40%", 0.1844, 3.11), ("50%", 0.1768, 2.97)],
    "csi1000": [("30%", 0.2948, 4.33), ("40%", 0.3014, 4.30), ("50%", 0.2897, 4.05)],
}

#: (model row A, comparator B, exhibit) for each "A beats B" claim, by label in rank_ic.csv.
IC_CLAIMS: list[tuple[str, str, int]] = [
    ("HF deep-learning", "best single factor", 45),
    ("HF deep-learning", "HF equal-weight", 45),
    ("HF deep-learning", "HF ICIR-weighted", 45),
    ("LF multi-task", "daily only", 52),
    ("LF multi-task", "LF equal-weight of 3", 52),
    ("LF multi-task", "LF no shared GRU", 52),
    ("full-band fusion", "HF deep-learning", 57),
    ("full-band fusion", "LF multi-task", 57),
]


@dataclass
class Claim:
    """One row of the paper-vs-run table."""

    claim: str
    exhibit: int
    paper: str
    run: str
    t: float
    n: int
    verdict: str


def verdict(t: float, n: int) -> str:
    """``reproduced`` / ``contradicted`` / ``inconclusive`` from a t-statistic (module doc)."""
    if n < 3 or not math.isfinite(t):
        return "inconclusive"
    if t >= T_THRESHOLD:
        return "reproduced"
    if t <= -T_THRESHOLD:
        return "contradicted"
    return "inconclusive"


def paired_t(a: pd.Series, b: pd.Series) -> tuple[float, float, int]:
    """Mean paired difference, its t-statistic and the number of dates both have."""
    d = (a - b).dropna()
    n = len(d)
    if n < 2:
        return float("nan"), float("nan"), n
    sd = float(d.std(ddof=1))
    m = float(d.mean())
    t = m / (sd / math.sqrt(n)) if sd > 0 else float("nan")
    return m, t, n


def best_single_factor(report_dir: Path, dates: pd.Index) -> tuple[str, pd.Series] | None:
    """The single factor with the highest direction-signed RankIC mean, and its weekly RankIC on
    ``dates`` (chosen ex post over the evaluation window, which favours the single factor)."""
    sf, ric = report_dir / "evaluate" / "single_factor.csv", report_dir / "evaluate" / "rank_ic.csv"
    if not (sf.exists() and ric.exists()):
        return None
    table = pd.read_csv(sf)
    ics = pd.read_csv(ric, index_col="date")
    if "factor" not in table:
        return None
    best = best_single(table[table["factor"].isin(ics.columns)])
    if best is None:
        return None
    name, sign = best
    return name, (sign * ics[name]).reindex(dates)


def model_rank_ic(report_dir: Path) -> pd.DataFrame | None:
    """Weekly RankIC of every model row (``reports/models/rank_ic.csv``), indexed by date."""
    p = report_dir / "models" / "rank_ic.csv"
    return pd.read_csv(p, index_col="date") if p.exists() else None


def _pct(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{100 * v:.2f}%"


def ic_claims(report_dir: Path) -> list[Claim]:
    """The RankIC claims of exhibits 45/52/57 that this run has the columns for."""
    ic = model_rank_ic(report_dir)
    if ic is None:
        return []
    ic = ic.copy()
    best = best_single_factor(report_dir, ic.index)
    best_name = ""
    if best is not None:
        best_name, ic["best single factor"] = best
    out = []
    for a, b, ex in IC_CLAIMS:
        if a not in ic or b not in ic:
            continue
        m, t, n = paired_t(ic[a], ic[b])
        bl = f"best single factor ({best_name})" if b == "best single factor" else b
        pa, pb = PUBLISHED_RANKIC.get(a, float("nan")), PUBLISHED_RANKIC.get(b, float("nan"))
        paper = f"{_pct(pa)} vs {_pct(pb)}" + (" (max of 27)" if b == "best single factor" else "")
        run = (f"{_pct(float(ic[a].mean()))} vs {_pct(float(ic[b].mean()))}; "
               f"difference {_pct(m)}")
        out.append(Claim(f"{a} beats {bl} (weekly RankIC)", ex, paper, run, t, n, verdict(t, n)))
    return out


def enhancement_claims(report_dir: Path) -> list[Claim]:
    """Index enhancement earns excess at each turnover cap (exhibits 64/67)."""
    out = []
    for index, ex in (("csi500", 64), ("csi1000", 67)):
        p = report_dir / "backtest" / f"performance_{index}.csv"
        daily = report_dir / "backtest" / f"daily_returns_{index}.csv"
        if not p.exists():
            continue
        perf = pd.read_csv(p)
        years = len(pd.read_csv(daily)) / 252 if daily.exists() else float("nan")
        if "annualized excess return" not in perf or "information ratio" not in perf:
            continue
        published = {cap: (e, ir) for cap, e, ir in PUBLISHED_ENHANCEMENT.get(index, [])}
        label = perf.columns[0]
        for _, r in perf.iterrows():
            name = str(r[label])
            if not name.startswith("turnover="):  # the benchmark's own row is not a claim
                continue
            ir = float(r["information ratio"])
            t = ir * math.sqrt(years) if math.isfinite(years) else float("nan")
            cap = next((c for c in published if name == f"turnover={c}"), None)
            paper = (f"excess {_pct(published[cap][0])}, IR {published[cap][1]:.2f}"
                     if cap else "n/a")
            run = f"excess {_pct(float(r['annualized excess return']))}, IR {ir:.2f}"
            n = round(years * 252) if math.isfinite(years) else 0
            out.append(Claim(f"{index} enhancement ({name}) earns positive excess", ex, paper,
                             run, t, n, verdict(t, n)))
    return out


def paper_vs_run(report_dir: Path) -> pd.DataFrame:
    """Every claim this run can test, as a table (columns of :class:`Claim`)."""
    try:
        rows = ic_claims(report_dir) + enhancement_claims(report_dir)
    except (KeyError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        log.warning("report: paper-vs-run skipped, a step output under %s is unreadable: %s",
                    report_dir, e)
        rows = []
    df = pd.DataFrame([r.__dict__ for r in rows],
                      columns=["claim", "exhibit", "paper", "run", "t", "n", "verdict"])
    df["t"] = df["t"].astype(float).round(2)
    return df.replace({np.nan: None})
