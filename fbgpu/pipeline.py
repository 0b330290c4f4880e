"""The end-to-end pipeline (``fbgpu demo``): synthetic market -> factors -> evaluation -> models
-> index enhancement -> report, each stage reading from and writing to one store.

Every stage is resumable: it skips work whose outputs are current (manifests), so re-running the
demo after an interruption continues where it stopped.

The stages hand each other their results in memory, on the backend's device (the factor cube,
the score panel), and the store is written behind the compute by one background writer
(:class:`fbgpu.data.writebehind.StoreWriteBehind`: the factors partitions, the panel and scores
tables, the checkpoints and the evaluation's result tables; figures and everything after the
OSQP step are written synchronously; docs/engine.md lists each write).
Each stage ends by waiting for its writes (the next stage's fingerprints and the report read
them); a failed write fails the stage with the table named (exit status 3 from ``fbgpu demo``).

Stage wall times, backend and device are recorded in the store's run record and shown in the
report's run section; a stage that raises is recorded there as failed, with its error, and the
error propagates.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from fbgpu.data.runlog import record_step
from fbgpu.data.store import Store
from fbgpu.data.writebehind import StoreWriteBehind
from fbgpu.engine.backend import get_backend
from fbgpu.engine.guard import device_sync_guard
from fbgpu.errors import ExitStatus

log = logging.getLogger(__name__)

STAGES = ("synth", "factors", "evaluate", "train", "backtest", "report")
#: The stages that run on the device before the OSQP step (the sync guard's scope).
DEVICE_STAGES = ("factors", "evaluate", "train")


class DemoConfig(BaseModel):
    """What ``fbgpu demo`` runs. Stage settings come from the TOML sections of each stage."""

    preset: str = Field("demo", description="Synthetic market preset (tiny, small, demo). The "
                        "train stage needs ~300 trading days or more (a retrain date with the "
                        "demo's 24 training dates before it): 'tiny' (60) and 'small' (120) are "
                        "refused before any stage unless train is left out of the stages.")
    seed: int = Field(0, description="Seed of the synthetic market and of model training.")
    stages: list[str] = Field(list(STAGES), description="Stages to run, in pipeline order.")
    models: str = Field("all", description="Models to train (`fbgpu train --model`).")
    indices: str = Field("all", description="Benchmarks for the backtest: csi500, csi1000, all.")
    turnover: list[float] = Field([0.3, 0.4, 0.5], description="Turnover caps of the backtest.")
    model_panel_window: int = Field(
        1, ge=1, description="Smoothing window (days) of the factor panel the models' HF input "
        "is built from. 1 (no smoothing): the research report's model preprocessing "
        "(exhibit 44: winsorize, neutralize, z-score, fill; no 20-day mean, which belongs to "
        "its single-factor test), so the GRU sees the recent days the planted informed flow "
        "lives in (docs/synth.md). The single-factor evaluation keeps [evaluate] panel.window.")
    synth_durable: bool = Field(
        False, description="fsync the synthetic market's partitions as they are written. Off: "
        "the demo's market is scratch data, regenerated rather than recovered, and the fsyncs "
        "cost ~10% of the synth stage (docs/synth.md); ingest of real data always fsyncs.")
    sync_guard: Literal["off", "warn", "error"] = Field(
        "off", description="On a GPU, run the device stages (factors, evaluate, train) with "
        "implicit torch device synchronisations raising (error) or warning (warn); the "
        "sanctioned crossings are counted (fbgpu/engine/guard.py). On the CPU stand-in device "
        "(fbgpu.engine.standin) it opens the torch stand-in audit (fbgpu/models/syncmode.py: "
        "the aten ops that would synchronise a GPU raise or warn outside sanctioned blocks; "
        "docs/engine.md). On the CPU backend it does nothing.")


def stage_summary(result: Any) -> str:
    """The one-line summary a stage's result gives of itself (for the run record)."""
    for attr in ("line", "one_line"):
        fn = getattr(result, attr, None)
        if callable(fn):
            return str(fn())
    if isinstance(result, list) and result and hasattr(result[0], "index"):
        return "backtests: " + ", ".join(f"{r.index} ({len(r.runs)} caps)" for r in result)
    return str(result)


def _run_stage(store: Store, name: str, fn: Callable[[], Any], backend: str,
               sync_guard: str = "off", writer: StoreWriteBehind | None = None) -> Any:
    """Run stage ``name`` (``fn``), timed and recorded in the run record; with ``writer``, the
    stage ends when its write-behind jobs have run (their failure is the stage's)."""
    b = get_backend(backend)
    t0, c0 = time.perf_counter(), _cpu_seconds()
    log.info("demo: stage %s ...", name)
    guard = (device_sync_guard(b, sync_guard) if sync_guard != "off" and name in DEVICE_STAGES
             else contextlib.nullcontext(None))
    try:
        with guard as report:
            result = fn()
        if writer is not None:
            writer.flush()
        if report is not None and report.active:
            log.info("demo: stage %s ran under the sync guard (%s); sanctioned crossings %s",
                     name, sync_guard, dict(report.sanctioned))
    except BaseException as e:  # recorded as failed (never as finished), then re-raised
        error = "interrupted" if isinstance(e, KeyboardInterrupt) else f"{type(e).__name__}: {e}"
        try:
            record_step(store, name, time.perf_counter() - t0, backend=b.name, device=b.device,
                        status="failed", error=error[:300])
        except Exception:  # the run record is informational; the stage's error is what matters
            log.debug("could not record the failed stage %s", name, exc_info=True)
        raise
    seconds = time.perf_counter() - t0
    record_step(store, name, seconds, backend=b.name, device=b.device,
                summary=stage_summary(result)[:300])
    # CPU seconds of the whole process (all threads) and of the worker processes it waited for
    # (forked training workers): on a shared machine the wall time depends on the load, the CPU
    # time much less
    log.info("demo: stage %s done in %.1f s (%.1f CPU-s)", name, seconds, _cpu_seconds() - c0)
    return result


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its reaped children (``getrusage``)."""
    import resource

    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def synth_is_current(store: Store, preset: str, seed: int) -> bool:
    """True when the store already holds a complete synthetic market of this preset and seed."""
    p = Path(store.root) / "synth.json"
    if not p.exists():
        return False
    meta = json.loads(p.read_text())
    return meta.get("preset") == preset and meta.get("seed") == seed and meta.get("complete", True)


def best_score(store: Store, scores: Any = None) -> str:
    """The score the backtest uses: ``fused`` when trained, else the best-evaluated factor.

    ``scores`` (this run's :class:`fbgpu.models.ScorePanel`, in memory) is asked first, so the
    demo does not read the ``scores`` table back.
    """
    from fbgpu.models import FUSED_COLUMN

    if scores is not None and scores.has(FUSED_COLUMN):
        return FUSED_COLUMN
    for d in reversed(store.dates("scores")):
        cols = store.read("scores", d).column_names
        if FUSED_COLUMN in cols:
            return FUSED_COLUMN
        break
    summary = Path(store.report_dir) / "evaluate" / "single_factor.csv"
    if summary.exists():
        import pandas as pd

        df = pd.read_csv(summary)
        if "IC_IR" in df.columns and len(df):
            best = df.loc[df["IC_IR"].abs().idxmax()]
            # The table's ICs are of direction * factor; the backtest reads the raw factor, so
            # it is negated ("-name") when direction * sign(IC_IR) is negative.
            sign = float(best.get("direction", 1)) * (1.0 if best["IC_IR"] >= 0 else -1.0)
            return ("-" if sign < 0 else "") + str(best.iloc[0])
    raise ValueError(f"store {store.root} has neither scores nor an evaluated factor table")


def run_demo(
    store: Store | str | Path,
    backend: str = "auto",
    config: DemoConfig | None = None,
    stage_config: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """Run the whole pipeline into ``store`` and return the report's path.

    ``stage_config`` holds the TOML sections of the stages (``[synth]``, ``[factors]``,
    ``[evaluate]``, ``[train]``, ``[backtest]``); the demo's training runs with the documented
    demo override (:data:`fbgpu.models.DEMO_OVERRIDES`) under any ``[train]`` keys given.
    """
    store = store if isinstance(store, Store) else Store(store)
    cfg = config or DemoConfig()
    sc = stage_config or {}
    for stage in cfg.stages:
        if stage not in STAGES:
            raise DemoConfigError(f"unknown demo stage {stage!r}; stages are "
                                  f"{', '.join(STAGES)}")
    if "train" in cfg.stages:
        check_train_calendar(store, cfg, sc)
    writer = StoreWriteBehind(store, get_backend(backend).to_host_async, name="demo")
    with writer:
        return _run_stages(store, backend, cfg, sc, writer)


class DemoConfigError(ValueError):
    """The demo's configuration cannot run (an unknown stage, a market too short for its
    models); found before any stage runs, so nothing is written."""

    exit_status = ExitStatus.USAGE  # fbgpu/errors.py: the command line's exit status


def demo_train_config(cfg: DemoConfig, sc: dict[str, dict[str, Any]]) -> Any:
    """The demo's training configuration: the report's defaults with the demo override
    (:data:`fbgpu.models.DEMO_OVERRIDES`), the demo's seed and the ``[train]`` keys given."""
    from fbgpu.models import load_train_config

    return load_train_config({"seeds": [cfg.seed], **sc.get("train", {})}, demo=True)


def market_dates(store: Store, cfg: DemoConfig, sc: dict[str, dict[str, Any]]) -> list[dt.date]:
    """The trading days of the market the demo will run on: the store's, where the synth
    stage will not (re)generate it; else the preset's calendar (with the ``[synth]`` keys)."""
    if "synth" not in cfg.stages or synth_is_current(store, cfg.preset, cfg.seed):
        return store.dates("daily")
    from fbgpu.data.synth import resolve_config
    from fbgpu.data.synth.universe import weekday_calendar

    try:
        market = resolve_config(cfg.preset)[1].model_copy(update=sc.get("synth", {}))
    except ValueError as e:  # an unknown preset
        raise DemoConfigError(str(e)) from e
    return weekday_calendar(market.start, market.n_days)


def check_train_calendar(store: Store, cfg: DemoConfig, sc: dict[str, dict[str, Any]]) -> None:
    """Refuse, before any stage runs, a demo whose market is too short for its models: on the
    market's calendar alone (:func:`fbgpu.models.calendar_windows`) no retrain window has
    ``min_train_dates`` training dates, so the train stage would fail after the synth,
    factors and evaluate stages had run (the 'tiny' and 'small' presets: 60 and 120 days)."""
    from fbgpu.models import NoRetrainWindowError, require_retrain_window

    try:
        require_retrain_window(market_dates(store, cfg, sc), demo_train_config(cfg, sc),
                               hint="use the 'demo' preset (500 days), or leave train out of "
                               "[demo] stages (the backtest then takes the best single factor)")
    except NoRetrainWindowError as e:
        where = (f"preset {cfg.preset!r}" if "synth" in cfg.stages else "the store's market")
        raise DemoConfigError(f"demo: the train stage cannot run on {where}: {e}") from e


def _run_stages(store: Store, backend: str, cfg: DemoConfig, sc: dict[str, dict[str, Any]],
                writer: StoreWriteBehind) -> Path:
    """The stages of :func:`run_demo`, in order, with ``writer`` persisting behind them."""
    from fbgpu.data.synth import generate_market, resolve_config
    from fbgpu.evaluate import EvaluateConfig, run_evaluate
    from fbgpu.factors import FactorConfig, run_factors
    from fbgpu.models import run_train
    from fbgpu.portfolio import run_backtest
    from fbgpu.report import build_report

    report_path: Path | None = None
    cube = None  # the factor cube handed from the factors stage to the evaluation, in memory
    scores = None  # the scores handed from training to the backtest, in memory
    for stage in cfg.stages:
        if stage == "synth":
            if synth_is_current(store, cfg.preset, cfg.seed):
                log.info("demo: synthetic market %s/seed %d already in the store", cfg.preset,
                         cfg.seed)
                continue
            # [synth] keys override the preset's fields (the market is then named "custom")
            overrides = sc.get("synth", {})
            market = (resolve_config(cfg.preset)[1].model_copy(update=overrides)
                      if overrides else cfg.preset)
            _run_stage(store, "synth",
                       lambda m=market: generate_market(store, m, seed=cfg.seed,
                                                        durable=cfg.synth_durable), backend)
        elif stage == "factors":
            fcfg = FactorConfig.from_mapping(sc.get("factors", {}))
            summary = _run_stage(store, "factors", lambda c=fcfg: run_factors(
                store, backend=backend, config=c, keep=True, writer=writer), backend,
                cfg.sync_guard, writer)
            # Freshly computed values go on to the evaluation in memory, on the backend's
            # device; when dates were skipped as current the evaluation reads the store.
            cube = getattr(summary, "cube", None)
        elif stage == "evaluate":
            _run_stage(store, "evaluate",
                       lambda c=cube: run_evaluate(store, config=sc.get("evaluate"),
                                                   backend=backend, factors=c, writer=writer),
                       backend, cfg.sync_guard, writer)
        elif stage == "train":
            tcfg = demo_train_config(cfg, sc)
            ecfg = EvaluateConfig.from_dict(sc.get("evaluate", {}))
            # the models' panel: the evaluation's preprocessing with the demo's smoothing window
            mpanel = dataclasses.replace(ecfg.panel, window=cfg.model_panel_window,
                                         min_valid=min(ecfg.panel.min_valid,
                                                       cfg.model_panel_window))
            trained = _run_stage(store, "train", lambda c=tcfg, e=ecfg, f=cube, pc=mpanel: (
                run_train(store, model=cfg.models, config=c, backend=backend, panel_config=pc,
                          pool_config=e.pool, factors=f, writer=writer)),
                backend, cfg.sync_guard, writer)
            # This run's scores, on the backend's device, go on to the backtest in memory.
            scores = getattr(trained, "scores", None)
        elif stage == "backtest":
            score = best_score(store, scores)
            _run_stage(store, "backtest",
                       lambda s=score, p=scores: run_backtest(
                           store, score=s, index=cfg.indices, turnover=tuple(cfg.turnover),
                           config=sc.get("backtest"), scores=p), backend)
        elif stage == "report":
            report_path = build_report(store)
    return report_path or build_report(store)
