"""Weekly index-enhancement backtest: decide at T, trade at T+1 vwap, mark to market daily.

Timing (spec/research.md "Dates and returns"): a decision date ``T`` is every
``rebalance_every``-th trading day, starting on the first date with scores. At ``T`` the optimizer
sees only what is known at the close of ``T`` -- the scores of ``T``, prices, caps, industries,
ST flags and the index weights at the close of ``T`` -- plus the *tradability of the trade day*
``E = T+1`` (suspended on ``E``; opening at the limit-up / limit-down price on ``E``), which is
known at ``E``'s open, before the order is worked. The target weights are executed at ``E``'s
vwap; the portfolio is then marked to market at each close.

Accounting (all prices adjusted by ``adj_factor``, so dividends and splits are returns):

* between trades, position ``i`` grows by ``close_t adj_t / (close_{t-1} adj_{t-1})`` (0 return
  when a stock is suspended or has no row);
* on ``E`` the held weights are first carried to the vwap (``vwap_E adj_E / close_{E-1}
  adj_{E-1}``), the target is *executed* -- a stock that is suspended keeps its weight, one that
  cannot be bought is not bought, one that cannot be sold is not sold (the target was computed
  from the close of ``T`` and the vwap weights have drifted since, so the target is adjusted
  exactly where tradability binds and the difference is spread pro rata over freely tradable
  holdings) -- and the cost ``c = 0.2%`` of the traded value is paid: the NAV after trading
  ``V'`` solves ``V' = V - c * sum_i |w_i V' - h_i|`` (``h`` the vwap values), computed by
  fixed-point iteration (a contraction with factor ``c``). Positions then move from vwap to close.
* the benchmark's daily return is ``sum_i b_{i,t-1} r_{i,t}`` with ``b_{t-1}`` the index weights
  at the close of ``t-1`` (from ``index_weights``; between partitions the weights drift with the
  prices).

Series start at the close of the first decision date (NAV 1, in cash until its trade day).
Turnover reported per rebalance is the executed two-sided turnover ``sum |w_after - w_before|`` at
the vwap; the optimizer's cap applies to the change from the close-of-``T`` weights (the
difference is one day of drift). The initial build from cash is not turnover-capped.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from fbgpu.data.store import Store, atomic_write_bytes, config_hash
from fbgpu.errors import ExitStatus
from fbgpu.panel.market import Market, load_market
from fbgpu.panel.preprocess import zscore
from fbgpu.portfolio.analytics import TRADING_DAYS, performance, yearly_returns
from fbgpu.portfolio.optimizer import OptimizerConfig, RebalanceProblem, RebalanceSolver, Solution
from fbgpu.progress import track

log = logging.getLogger(__name__)


class BacktestError(ValueError):
    """Bad input to the backtest (missing tables, columns, dates); the message says which."""

    exit_status = ExitStatus.REJECTED  # fbgpu/errors.py: the command line's exit status


class BacktestConfig(BaseModel):
    """Backtest settings; every key has a documented default (section ``[backtest]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    optimizer: OptimizerConfig = Field(
        default_factory=OptimizerConfig,
        description="Constraint limits and solver settings (sub-table [backtest.optimizer]; "
        "see docs/portfolio.md).",
    )
    rebalance_every: int = Field(5, ge=1, description="trading days between decisions")
    cost_per_side: float = Field(0.002, ge=0, lt=1, description="cost per traded value")
    start: dt.date | None = Field(None, description="first decision date (default: first score)")
    end: dt.date | None = Field(None, description="last date of the backtest (default: last)")
    winsorize: float | None = Field(
        3.0, gt=0, description="clip standardized scores at +-this many std (None: no clip)"
    )
    limit_tolerance: float = Field(
        0.005, ge=0, description="open within this many CNY of a limit price counts as at it"
    )
    periods_per_year: int = Field(TRADING_DAYS, gt=0, description="annualization")


# ---------------------------------------------------------------------------- market data
class WarningTally:
    """Per-date problems of one kind, logged as one summary line instead of one line per date.

    :meth:`add` logs the date's detail at DEBUG (``fbgpu -v``) and counts it; :meth:`flush` logs
    one WARNING per kind: how many dates, the first and last, and the first detail. A backtest
    over years used to print a warning per date (1,087 on one run).
    """

    def __init__(self) -> None:
        self._seen: dict[str, list[tuple[dt.date, str]]] = {}

    def add(self, kind: str, date: dt.date, detail: str) -> None:
        log.debug("%s %s: %s", date, kind, detail)
        self._seen.setdefault(kind, []).append((date, detail))

    def counts(self) -> dict[str, int]:
        """Dates per kind so far."""
        return {k: len(v) for k, v in self._seen.items()}

    def flush(self, of_dates: int) -> None:
        """One WARNING per kind (``of_dates``: how many dates were looked at); then forget."""
        for kind, items in self._seen.items():
            (first, detail), last = items[0], items[-1][0]
            log.warning("%s on %d of %d dates (%s .. %s; first: %s); per-date details with -v",
                        kind, len(items), of_dates, first, last, detail)
        self._seen.clear()


def load_index_weights(store: Store, market: Market, index: str) -> np.ndarray:
    """``[dates, symbols]`` close weights of ``index``, normalized to 1 per date.

    Dates without a partition carry the previous close weights drifted by the day's returns.
    """
    D, S = len(market.dates), len(market.symbols)
    have = set(store.dates("index_weights"))
    out = np.zeros((D, S))
    found = False
    tally = WarningTally()
    for t, d in enumerate(market.dates):
        if d in have:
            tab = store.read("index_weights", d)
            mask = pc.equal(tab.column("index").cast(pa.string()), index)
            tab = tab.filter(mask)
            if tab.num_rows:
                syms = tab.column("symbol").cast(pa.string()).to_pylist()
                w = tab.column("weight").to_numpy(zero_copy_only=False)
                pos = np.array([market.index.get(s, -1) for s in syms])
                if (pos < 0).any():
                    tally.add(f"index_weights: {index} members without a daily row dropped", d,
                              f"{int((pos < 0).sum())} members, e.g. "
                              f"{syms[int(np.flatnonzero(pos < 0)[0])]}")
                bad = ~np.isfinite(w) | (w < 0)
                if bad.any():
                    i = int(np.flatnonzero(bad)[0])
                    raise BacktestError(
                        f"index_weights/{d}: {index} weight of {syms[i]} is {w[i]} "
                        "(must be finite and >= 0)"
                    )
                row = np.zeros(S)
                np.add.at(row, pos[pos >= 0], w[pos >= 0])
                if row.sum() > 0:
                    out[t] = row / row.sum()
                    found = True
                    continue
        if t > 0 and out[t - 1].sum() > 0:
            drift = out[t - 1] * market.growth(t)
            out[t] = drift / drift.sum()
    tally.flush(len(have))
    if not found:
        raise BacktestError(f"index_weights has no weights for index {index!r} in "
                            f"{market.dates[0]}..{market.dates[-1]}")
    return out


def available_indices(store: Store) -> list[str]:
    """Distinct index names in the store's ``index_weights`` table (from its last partition)."""
    dates = store.dates("index_weights")
    if not dates:
        raise BacktestError(f"store {store.root} has no index_weights table")
    tab = store.read("index_weights", dates[-1], ["index"])
    return sorted(set(tab.column("index").cast(pa.string()).to_pylist()))


def split_score(score: str) -> tuple[str, float]:
    """``(column, sign)`` of a score spec: ``"name"`` -> (name, +1), ``"-name"`` -> (name, -1).

    The sign lets a raw factor whose smaller values are better (negative direction, or a negative
    IC in the evaluation) be used as a score without rewriting the table.
    """
    if score.startswith("-") and len(score) > 1:
        return score[1:], -1.0
    return score, 1.0


def score_source(store: Store, score: str) -> str:
    """``"scores"`` if that table has the column ``score``, else ``"factors"``, else an error.

    ``score`` may carry a leading ``-`` (:func:`split_score`).
    """
    score, _ = split_score(score)
    options = []
    for table in ("scores", "factors"):
        dates = store.dates(table)
        if not dates:
            continue
        names = [c for c in store.read(table, dates[-1]).column_names
                 if c not in ("date", "symbol")]
        if score in names:
            return table
        options += [f"{table}.{c}" for c in names]
    raise BacktestError(
        f"score {score!r} is in neither the scores nor the factors table of {store.root}"
        + (f"; available: {', '.join(options[:40])}" if options else " (both are empty)")
    )


def read_scores(store: Store, table: str, score: str, date: dt.date,
                market: Market) -> np.ndarray:
    """The score column of ``date`` aligned on the market's symbols (NaN where absent).

    A leading ``-`` in ``score`` negates the column (:func:`split_score`).
    """
    score, sign = split_score(score)
    out = np.full(len(market.symbols), np.nan)
    if not store.has(table, date):
        return out
    tab = store.read(table, date, ["symbol", score])
    syms = tab.column("symbol").cast(pa.string()).to_pylist()
    vals = tab.column(score).to_numpy(zero_copy_only=False).astype(np.float64)
    pos = np.array([market.index.get(s, -1) for s in syms], dtype=np.int64)
    keep = pos >= 0
    out[pos[keep]] = sign * vals[keep]
    return out


def standardize(x: np.ndarray, mask: np.ndarray, clip: float | None) -> np.ndarray:
    """The cross-sectional z-score of ``x`` over ``mask`` (:func:`fbgpu.panel.preprocess.zscore`,
    ddof 0), clipped at ``+-clip``; 0 outside the mask and when fewer than 2 values or no spread."""
    z = zscore(np.where(mask, x, np.nan)[None, :])[0]
    if clip is not None:
        z = np.clip(z, -clip, clip)
    return np.nan_to_num(z, nan=0.0)


def build_problem(
    market: Market, t: int, scores: np.ndarray, bench: np.ndarray, held: np.ndarray,
    config: BacktestConfig,
) -> tuple[RebalanceProblem, np.ndarray]:
    """The decision problem of date index ``t`` (trade day ``t + 1``).

    Candidates: the pool (a finite score, listed and not ST at ``T``), the benchmark
    constituents and every stock some portfolio holds (``held``). ``mu`` is the pool's
    standardized score (0 outside the pool: such stocks can be held or sold, never bought);
    ``z_size`` is log float cap standardized over every stock listed at ``T``. Returns the
    problem and the candidates' indices into the market's symbols.
    """
    f = market.fields
    listed = market.present[t]
    pool = listed & ~market.st[t] & np.isfinite(scores)
    cand_mask = pool | (bench > 0) | held
    cand = np.flatnonzero(cand_mask)
    cap = f["float_cap"][t]
    logcap = np.where(listed & (cap > 0), np.log(np.where(cap > 0, cap, 1.0)), np.nan)
    size = standardize(np.nan_to_num(logcap), np.isfinite(logcap), None)
    mu = standardize(np.nan_to_num(scores), pool, config.winsorize)
    can_buy, can_sell = market.tradability(t + 1, config.limit_tolerance)
    can_buy &= pool
    names, codes = np.unique(market.industry_names(t, cand), return_inverse=True)
    b = bench[cand]
    if b.sum() <= 0:
        raise BacktestError(f"{market.dates[t]}: the benchmark has no constituent with data")
    problem = RebalanceProblem(
        symbols=market.symbols[cand], mu=mu[cand], benchmark=b / b.sum(),
        industry=codes, size=size[cand], can_buy=can_buy[cand], can_sell=can_sell[cand],
        industry_names=tuple(str(x) for x in names),
    )
    return problem, cand


# ---------------------------------------------------------------------------- simulation
@dataclass
class Book:
    """One portfolio's state at a close: weights over all symbols plus cash, and its NAV."""

    weights: np.ndarray
    cash: float = 1.0
    nav: float = 1.0

    def drift(self, gross: np.ndarray) -> float:
        """Move to the next price point; returns the period's gross return."""
        value = self.weights * gross
        total = self.cash + float(value.sum())
        self.weights = value / total
        self.cash = self.cash / total
        self.nav *= total
        return total


def execute(
    book: Book, target: np.ndarray, can_buy: np.ndarray, can_sell: np.ndarray, cost: float
) -> tuple[float, float]:
    """Trade ``book`` (at vwap weights) to ``target``; returns ``(turnover, cost)``.

    Turnover is the two-sided traded value and cost the amount paid, both as fractions of the
    NAV at the vwap before trading.

    Where tradability binds, the executed weight stays on the allowed side of the held weight;
    the weight this frees or needs is spread pro rata over the holdings that can be both bought
    and sold (or left in cash if there are none). Cost: ``c`` per unit of traded value, paid from
    the NAV, solved exactly by fixed-point iteration.
    """
    w0 = book.weights
    final = target.copy()
    final = np.where(can_buy, final, np.minimum(final, w0))
    final = np.where(can_sell, final, np.maximum(final, w0))
    gap = float(target.sum() - final.sum())
    free = can_buy & can_sell & (final > 0)
    if abs(gap) > 0 and free.any():
        base = final[free].sum()
        final[free] *= 1.0 + gap / base
    final = np.maximum(final, 0.0)
    # Holdings that cannot be sold keep at least their held weight; if they and the clipped rest
    # exceed the NAV, trim what may still move (buys and sellable holdings) pro rata. Possible
    # because the unsellable floor sums to at most the held weights, i.e. at most 1.
    excess = float(final.sum()) - 1.0
    if excess > 1e-12:
        room = final - np.where(can_sell, 0.0, np.minimum(w0, final))
        final = final - room * (excess / float(room.sum()))
    # NAV after cost x (relative to NAV at vwap): x = 1 - c * sum |final x - w0|
    x = 1.0
    for _ in range(50):
        x_new = 1.0 - cost * float(np.abs(final * x - w0).sum())
        if abs(x_new - x) < 1e-15:
            x = x_new
            break
        x = x_new
    traded = float(np.abs(final * x - w0).sum())
    book.weights = final.copy()
    book.cash = max(0.0, 1.0 - float(final.sum()))
    book.nav *= x
    return traded, cost * traded


@dataclass
class RunResult:
    """Daily series and rebalance log of one portfolio (one index, one cap)."""

    name: str
    index: str
    cap: float
    returns: list[float] = field(default_factory=list)
    turnovers: list[float] = field(default_factory=list)  # executed, excluding the initial build
    log: list[dict[str, object]] = field(default_factory=list)
    weights: dict[dt.date, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    """decision date -> (symbols, target weights) of the candidates"""


@dataclass
class BacktestResult:
    """Everything :func:`backtest_index` produces for one index."""

    index: str
    dates: list[dt.date]  # dates of the daily returns
    benchmark: np.ndarray
    runs: list[RunResult]
    decision_dates: list[dt.date]

    def performance_table(self, periods: int = TRADING_DAYS) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = []
        for run in self.runs:
            stats = performance(self.dates, np.array(run.returns), self.benchmark,
                                run.turnovers, periods)
            rows.append({"portfolio": f"turnover={run.cap:.0%}", **stats})
        rows.append({"portfolio": self.index, **performance(self.dates, self.benchmark,
                                                             periods=periods)})
        return rows

    def yearly_table(self) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = []
        for run in self.runs:
            rows.append({"portfolio": f"turnover={run.cap:.0%}",
                         **{str(y): v for y, v in
                            yearly_returns(self.dates, np.array(run.returns)).items()}})
        rows.append({"portfolio": self.index,
                     **{str(y): v for y, v in yearly_returns(self.dates, self.benchmark).items()}})
        return rows


def portfolio_name(index: str, cap: float) -> str:
    """``csi500_to30`` for index ``csi500`` and cap 0.30."""
    return f"{index}_to{round(cap * 100):d}"


def backtest_index(
    store: Store,
    market: Market,
    index: str,
    score_at: Callable[[dt.date, Market], np.ndarray],
    caps: tuple[float, ...],
    config: BacktestConfig,
    decision_idx: list[int],
    progress: bool = True,
) -> BacktestResult:
    """Run one benchmark's portfolios (one per cap) in lockstep over the market's dates.

    ``score_at(date, market)`` gives the scores of a decision date aligned on the market's
    symbols (NaN = no score): read from the store (:func:`read_scores`) or handed over in memory
    (:meth:`fbgpu.models.ScorePanel.row_on`).

    One :class:`RebalanceSolver` per decision date serves all caps (same candidates, same
    matrix); each cap's solve is warm-started from its own previous date's duals.
    """
    bench = load_index_weights(store, market, index)
    runs = [RunResult(portfolio_name(index, c), index, c) for c in caps]
    S = len(market.symbols)
    books = [Book(np.zeros(S)) for _ in caps]
    duals: list[dict[str, float] | None] = [None] * len(caps)
    pending: list[np.ndarray] | None = None
    t0 = decision_idx[0]
    last = len(market.dates) - 1
    decisions = set(decision_idx)
    bench_returns = []
    tally = WarningTally()
    days = range(t0, last + 1)
    it = track(days, f"backtest {index}") if progress else days
    for t in it:
        if t > t0:
            bench_returns.append(float(bench[t - 1] @ (market.growth(t) - 1.0)))
            if pending is not None:
                can_buy, can_sell = market.tradability(t, config.limit_tolerance)
                to_vwap = market.growth_to_vwap(t)
                to_close = np.where(market.halted[t], 1.0,
                                    market.close_adj[t] / market.vwap_adj[t])
                to_close = np.where(np.isfinite(to_close) & (to_close > 0), to_close, 1.0)
                for run, book, target in zip(runs, books, pending, strict=True):
                    start = book.nav
                    book.drift(to_vwap)
                    initial = book.cash > 0.5
                    turnover, paid = execute(book, target, can_buy, can_sell,
                                             config.cost_per_side)
                    book.drift(to_close)
                    run.returns.append(book.nav / start - 1.0)
                    if not initial:
                        run.turnovers.append(turnover)
                    run.log[-1].update({"trade_date": market.dates[t].isoformat(),
                                        "executed_turnover": turnover, "cost": paid})
                pending = None
            else:
                gross = market.growth(t)
                for run, book in zip(runs, books, strict=True):
                    start = book.nav
                    book.drift(gross)
                    run.returns.append(book.nav / start - 1.0)
        if t in decisions and t < last:
            scores = score_at(market.dates[t], market)
            held = np.zeros(S, dtype=bool)
            for book in books:
                held |= book.weights > 0
            problem, cand = build_problem(market, t, scores, bench[t], held, config)
            solver = RebalanceSolver(problem, config.optimizer)
            pending = []
            for i, (run, book) in enumerate(zip(runs, books, strict=True)):
                prev = book.weights[cand]
                first = book.weights.sum() <= 0
                sol: Solution = solver.solve(None if first else prev, None if first else run.cap,
                                             duals=duals[i])
                if sol.duals:
                    duals[i] = sol.duals
                target = np.zeros(S)
                target[cand] = sol.weights
                pending.append(target)
                run.weights[market.dates[t]] = (problem.symbols, sol.weights)
                run.log.append({
                    "date": market.dates[t].isoformat(), "portfolio": run.name,
                    "status": sol.status, "relaxed": json.dumps(sol.relaxed),
                    "pinned": len(sol.pinned), "candidates": problem.n,
                    "planned_turnover": sol.turnover if not first else float("nan"),
                    "objective": sol.objective, "max_violation": max(sol.violations.values()),
                    "osqp_iterations": sol.iterations, "solve_seconds": sol.solve_time,
                    "message": sol.message,
                })
                if not sol.ok:
                    tally.add(f"{run.name}: rebalance {sol.status}", market.dates[t],
                              sol.message)
    tally.flush(len([t for t in decision_idx if t < last]))
    dates = market.dates[t0 + 1 : last + 1]
    decision_dates = [market.dates[t] for t in decision_idx if t < last]
    return BacktestResult(index, dates, np.array(bench_returns), runs, decision_dates)


# ---------------------------------------------------------------------------- outputs
def write_weights(store: Store, results: list[BacktestResult], chash: str) -> int:
    """One ``weights`` partition per decision date, merged with other portfolios already there.

    Rows are the target weights decided at that date (weights below 1e-12 omitted).
    """
    by_date: dict[dt.date, list[tuple[str, np.ndarray, np.ndarray]]] = {}
    for res in results:
        for run in res.runs:
            for d, (symbols, w) in run.weights.items():
                by_date.setdefault(d, []).append((run.name, symbols, w))
    n_rows = 0
    for d, items in sorted(by_date.items()):
        ours = {name for name, _, _ in items}
        names: list[str] = []
        syms: list[str] = []
        weights: list[float] = []
        for name, symbols, w in items:
            keep = w > 1e-12
            names += [name] * int(keep.sum())
            syms += [str(x) for x in symbols[keep]]
            weights += [float(x) for x in w[keep]]
        table = pa.table({"date": pa.array([d] * len(weights), pa.date32()),
                          "portfolio": pa.array(names, pa.string()),
                          "symbol": pa.array(syms, pa.string()),
                          "weight": pa.array(weights, pa.float64())})
        if store.has("weights", d):
            old = store.read("weights", d)
            other = [p not in ours for p in old.column("portfolio").cast(pa.string()).to_pylist()]
            old = old.filter(pa.array(other, pa.bool_()))
            old = pa.table({c: old.column(c).cast(table.schema.field(c).type)
                            for c in table.column_names})
            table = pa.concat_tables([old, table])
        store.write("weights", d, table, config_hash_=chash)
        n_rows += table.num_rows
    return n_rows


def write_outputs(out_dir: Path, results: list[BacktestResult], periods: int) -> list[str]:
    """Tables (CSV + JSON), figures and the report index under ``out_dir``."""
    import pandas as pd

    from fbgpu.portfolio.analytics import PERFORMANCE_COLUMNS
    from fbgpu.portfolio.figures import cumulative_excess_figure

    out_dir.mkdir(parents=True, exist_ok=True)
    items: list[dict[str, str]] = []

    def save(df: pd.DataFrame, name: str, caption: str) -> None:
        atomic_write_bytes(out_dir / f"{name}.csv", df.to_csv(index=False).encode())
        atomic_write_bytes(out_dir / f"{name}.json",
                           df.to_json(orient="records", indent=1).encode())
        items.append({"file": f"{name}.csv", "caption": caption})

    for res in results:
        perf = pd.DataFrame(res.performance_table(periods))
        perf = perf.rename(columns=PERFORMANCE_COLUMNS)
        fig = out_dir / f"cumulative_excess_{res.index}.png"
        cumulative_excess_figure(res, fig)
        items.append({"file": fig.name,
                      "caption": f"{res.index} enhancement: cumulative excess return"})
        save(perf, f"performance_{res.index}", f"{res.index} enhancement: performance "
             "(exhibits 64/67 layout)")
        save(pd.DataFrame(res.yearly_table()), f"yearly_{res.index}",
             f"{res.index} enhancement: year-by-year returns (exhibits 65/68 layout)")
        daily = {"date": [d.isoformat() for d in res.dates], "benchmark": res.benchmark}
        for run in res.runs:
            daily[run.name] = np.array(run.returns)
        save(pd.DataFrame(daily), f"daily_returns_{res.index}",
             f"{res.index}: daily returns of each portfolio and the benchmark")
        log_rows = [row for run in res.runs for row in run.log]
        save(pd.DataFrame(log_rows), f"rebalances_{res.index}",
             f"{res.index}: every rebalance (solver status, relaxations, turnover, cost)")
    index = {"title": "Index enhancement",
             "text": "Weekly OSQP index-enhancement portfolios (decide at T, trade at T+1 vwap, "
                     "0.2% cost per side) against CSI-like benchmarks.",
             "items": items}
    atomic_write_bytes(out_dir / "index.json", json.dumps(index, indent=1).encode())
    return [it["file"] for it in items]


# ---------------------------------------------------------------------------- API
def run_backtest(
    store: Store | str | Path,
    score: str = "fused",
    index: str = "csi500",
    turnover: tuple[float, ...] = (0.3, 0.4, 0.5),
    config: BacktestConfig | dict | None = None,
    progress: bool = True,
    scores: Any = None,
) -> list[BacktestResult]:
    """Run the index-enhancement backtest and write its outputs; see docs/portfolio.md.

    ``score`` is a column of the store's ``scores`` table, or else of its ``factors`` table (a
    raw factor: larger = better, as for a score; a leading ``-``, e.g. ``"-bigorder_ret"``,
    negates the column for a factor whose smaller values are better). ``index`` is an index name
    of the ``index_weights`` table or ``"all"``; ``turnover`` are the two-sided caps per
    rebalance.
    ``scores``, an in-memory :class:`fbgpu.models.ScorePanel` holding the ``score`` column (e.g.
    ``run_train(...).scores``, on the backend's device), is read instead of the store: one
    date's vector crosses to the host per decision date, and nothing is read back from the
    ``scores`` table. Both routes give the same portfolios.
    Writes ``reports/backtest/`` (tables as CSV + JSON, cumulative-excess figures) and the
    ``weights`` table (one partition per decision date, portfolios named ``<index>_to<cap%>``).
    """
    store = store if isinstance(store, Store) else Store(store)
    if config is None:
        config = BacktestConfig()
    elif isinstance(config, dict):
        config = BacktestConfig.model_validate(config)
    caps = tuple(float(c) for c in turnover)
    if not caps or any(not (0 <= c <= 2) for c in caps):
        raise BacktestError(f"turnover caps must be in [0, 2], got {turnover}")
    indices = available_indices(store) if index == "all" else [index]
    if index != "all":
        have = available_indices(store)
        if index not in have:
            raise BacktestError(f"index {index!r} is not in index_weights (it has {have})")
    name, sign = split_score(score)
    if scores is not None and scores.has(name):
        table = "scores (in memory)"
        score_dates = set(scores.dates)

        def score_at(d: dt.date, m: Market) -> np.ndarray:
            return sign * scores.row_on(name, d, m.symbols, m.index)
    else:
        table = score_source(store, score)
        score_dates = set(store.dates(table))

        def score_at(d: dt.date, m: Market) -> np.ndarray:
            return read_scores(store, table, score, d, m)
    all_dates = store.dates("daily")
    if not all_dates:
        raise BacktestError(f"store {store.root} has no daily table")
    start = config.start or min(score_dates)
    end = config.end or all_dates[-1]
    dates = [d for d in all_dates if start <= d <= end]
    first = next((i for i, d in enumerate(dates) if d in score_dates), None)
    if first is None or first >= len(dates) - 1:
        raise BacktestError(f"no date with {table}.{score} and a following trading day in "
                            f"{start}..{end}")
    decision_idx = [t for t in range(first, len(dates) - 1, config.rebalance_every)
                    if dates[t] in score_dates]
    market = load_market(store, dates)
    results = [backtest_index(store, market, ix, score_at, caps, config, decision_idx,
                              progress) for ix in indices]
    chash = config_hash({"config": config.model_dump(mode="json"), "score": score,
                         "caps": caps})
    write_weights(store, results, chash)
    write_outputs(store.report_dir / "backtest", results, config.periods_per_year)
    return results
