"""OSQP index-enhancement speed: seconds per rebalance (cold and warm) and per weekly backtest.

Usage::

    python benchmarks/bench_portfolio.py                      # CSI 500 and CSI 1000 sizes
    python benchmarks/bench_portfolio.py --sizes 1500:500 --steps 5 --backtest-days 0
    python benchmarks/bench_portfolio.py --json out.json

Rebalance problems are :func:`fbgpu.portfolio.optimizer.random_problem` instances of the index
sizes (``candidates:constituents``; 30 industries, 3% of the stocks untradable), evolved over
``--steps`` weekly dates: each date's scores are ``0.9 x`` last week's plus noise and the held
weights drift with 2% daily-like noise. Per date and cap it times

* ``cold``: a new solver, no dual warm start (a short full-problem OSQP run estimates the duals);
* ``warm``: a new solver (the candidates change every date), warm-started with the previous
  date's duals -- what the backtest does;
* ``warm, next cap``: the same date's solver re-used for the next cap (vector updates only).

Setup (building the sparse matrices) is reported separately. The whole-backtest timing runs
:func:`fbgpu.portfolio.run_backtest` on a daily-only synthetic store (``--backtest-stocks`` x
``--backtest-days``, one index, three caps). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from fbgpu.data.store import Store
from fbgpu.portfolio import run_backtest
from fbgpu.portfolio.optimizer import RebalanceSolver, random_problem


def bench_rebalance(n: int, members: int, steps: int, caps: tuple[float, ...],
                    seed: int = 0) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    pr = random_problem(n, members, 30, 0.03, seed=seed)
    t0 = time.perf_counter()
    solver = RebalanceSolver(pr)
    setup = [time.perf_counter() - t0]
    t0 = time.perf_counter()
    first = solver.solve(None, None)
    initial = time.perf_counter() - t0
    held = {c: first.weights for c in caps}
    duals = {c: first.duals for c in caps}
    rows: dict[str, list[float]] = {"cold": [], "warm": [], "warm_next_cap": []}
    stats: dict[str, list[float]] = {"iterations_warm": [], "working_set_warm": [],
                                     "rounds_warm": []}
    statuses: dict[str, int] = {}
    for _ in range(steps):
        pr.mu = 0.9 * pr.mu + np.sqrt(1 - 0.81) * rng.standard_normal(n)
        for c in caps:
            w = held[c] * np.exp(0.02 * rng.standard_normal(n))
            held[c] = w / w.sum()
        t0 = time.perf_counter()
        solver = RebalanceSolver(pr)
        setup.append(time.perf_counter() - t0)
        for i, c in enumerate(caps):
            if i == 0:
                cold_solver = RebalanceSolver(pr)
                t0 = time.perf_counter()
                cold_solver.solve(held[c], c)
                rows["cold"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            sol = solver.solve(held[c], c, duals=duals[c] if i == 0 else None)
            rows["warm" if i == 0 else "warm_next_cap"].append(time.perf_counter() - t0)
            if i == 0:
                stats["iterations_warm"].append(sol.iterations)
                stats["working_set_warm"].append(sol.working_set)
                stats["rounds_warm"].append(sol.rounds)
            statuses[sol.status] = statuses.get(sol.status, 0) + 1
            held[c], duals[c] = sol.weights, sol.duals or duals[c]
    out: dict[str, object] = {"candidates": n, "constituents": members, "steps": steps,
                              "initial_build_s": initial, "setup_s_median": float(
                                  np.median(setup)), "statuses": statuses}
    for k, v in rows.items():
        out[f"{k}_s_median"] = float(np.median(v)) if v else float("nan")
        out[f"{k}_s_max"] = float(np.max(v)) if v else float("nan")
    for k, v in stats.items():
        out[f"{k}_median"] = float(np.median(v)) if v else float("nan")
    return out


def daily_store(root: Path, stocks: int, days: int, members: int, seed: int = 0) -> Store:
    """A daily-only market (random walks, a cap-weighted index, random scores) for timing."""
    rng = np.random.default_rng(seed)
    store = Store(root)
    symbols = [f"{i:06d}.SZ" for i in range(stocks)]
    industry = [f"ind{i % 30}" for i in range(stocks)]
    shares = rng.lognormal(20, 1, stocks)
    close = rng.uniform(5, 50, stocks)
    d = dt.date(2023, 1, 2)
    for _ in range(days):
        while d.weekday() >= 5:
            d += dt.timedelta(1)
        pre = close
        close = pre * (1 + np.clip(rng.normal(0, 0.02, stocks), -0.09, 0.09))
        susp = rng.random(stocks) < 0.01
        close = np.where(susp, pre, close)
        store.write("daily", d, pa.table({
            "date": [d] * stocks, "symbol": symbols, "open": pre, "high": close, "low": close,
            "close": close, "pre_close": pre, "vwap": (pre + close) / 2,
            "volume": np.full(stocks, 1000), "amount": close * 1000,
            "adj_factor": np.ones(stocks), "limit_up": pre * 1.1, "limit_down": pre * 0.9,
            "suspended": susp, "st": np.zeros(stocks, dtype=bool), "float_cap": shares * close,
            "industry": industry}))
        cap = shares * close
        top = np.argsort(-cap)[:members]
        store.write("index_weights", d, pa.table({
            "date": [d] * members, "index": ["bench"] * members,
            "symbol": [symbols[i] for i in top], "weight": cap[top] / cap[top].sum()}))
        store.write("scores", d, pa.table({"date": [d] * stocks, "symbol": symbols,
                                           "fused": rng.standard_normal(stocks)}))
        d += dt.timedelta(1)
    return store


def bench_backtest(stocks: int, days: int, members: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        store = daily_store(Path(tmp), stocks, days, members)
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = run_backtest(store, "fused", "bench", (0.3, 0.4, 0.5), progress=False)[0]
        total = time.perf_counter() - t0
    n_reb = len(res.decision_dates)
    solve = sum(float(row["solve_seconds"]) for run in res.runs for row in run.log)
    return {"stocks": stocks, "constituents": members, "days": days, "rebalances": n_reb,
            "store_build_s": build, "backtest_s": total,
            "per_rebalance_date_s": total / max(n_reb, 1),
            "osqp_solve_s_per_portfolio_rebalance": solve / max(3 * n_reb, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1500:500,5000:1000",
                    help="candidates:constituents, comma-separated")
    ap.add_argument("--steps", type=int, default=8, help="weekly dates per size")
    ap.add_argument("--caps", default="0.3,0.4,0.5")
    ap.add_argument("--backtest-stocks", type=int, default=1500)
    ap.add_argument("--backtest-days", type=int, default=60, help="0: skip the backtest")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    caps = tuple(float(x) for x in args.caps.split(","))
    results: dict[str, object] = {"machine": platform.processor() or platform.machine(),
                                  "python": platform.python_version(), "rebalance": []}
    print(f"{'size':>11} {'setup':>7} {'initial':>8} {'cold':>7} {'warm':>7} {'warm max':>8} "
          f"{'next cap':>8} {'iters':>6} {'|W|':>5}  statuses")
    for spec in args.sizes.split(","):
        n, m = (int(x) for x in spec.split(":"))
        r = bench_rebalance(n, m, args.steps, caps)
        results["rebalance"].append(r)  # type: ignore[union-attr]
        print(f"{n:>5}:{m:<5} {r['setup_s_median']:7.3f} {r['initial_build_s']:8.3f} "
              f"{r['cold_s_median']:7.3f} {r['warm_s_median']:7.3f} {r['warm_s_max']:8.3f} "
              f"{r['warm_next_cap_s_median']:8.3f} {r['iterations_warm_median']:6.0f} "
              f"{r['working_set_warm_median']:5.0f}  {r['statuses']}")
    if args.backtest_days:
        b = bench_backtest(args.backtest_stocks, args.backtest_days,
                           max(2, args.backtest_stocks // 3))
        results["backtest"] = b
        print(f"backtest {b['stocks']} stocks x {b['days']} days, 3 caps: {b['backtest_s']:.2f} s "
              f"({b['rebalances']} rebalance dates, {b['per_rebalance_date_s']:.3f} s per date, "
              f"OSQP {b['osqp_solve_s_per_portfolio_rebalance']:.3f} s per portfolio-rebalance)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
