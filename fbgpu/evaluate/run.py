"""``fbgpu evaluate``: the single-factor test of every stored factor, plus the two composites.

:func:`run_evaluate` reads the store's ``factors`` (raw daily values) and ``daily`` tables, builds
the preprocessed panel on the chosen backend, evaluates each factor on the rebalance dates
(:func:`fbgpu.evaluate.single.evaluate_factor`), builds the equal-weight and trailing-ICIR
composites, the factor and style correlation matrices, and writes under
``<store>/reports/evaluate/``:

* ``single_factor.csv/.json`` - one row per factor (the report's exhibits 7, 26, 37 layout);
* ``composites.csv/.json`` - the same for the composites (10 groups, exhibit 45 layout);
* ``rank_ic.csv`` (dates x factors), ``group_nav.csv`` (long: date, factor, group, nav),
  ``icir_weights.csv`` (weights per rebalance), ``group_mean_returns.csv``;
* ``factor_correlation.csv``, ``style_correlation.csv``;
* per data family (:mod:`fbgpu.evaluate.families`): ``single_factor_<family>.csv``,
  ``corr_<family>.csv`` and ``corr_heatmap_<family>.png`` (exhibits 7/26/37, 23/24/35/42);
* figures: ``nav_<factor>.png`` per factor and composite, ``cumulative_rank_ic.png``,
  ``factor_correlation.png``;
* ``index.json`` ordering what the HTML report shows.

The preprocessed panel is also written back to the store as table ``panel`` (for the models).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import logging
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fbgpu.data.store import Store, StoreError
from fbgpu.data.writebehind import StoreWriteBehind
from fbgpu.engine.backend import Backend, get_backend
from fbgpu.errors import ExitStatus
from fbgpu.evaluate.composite import icir_weights, signed, weighted_composite
from fbgpu.evaluate.correlation import factor_correlation, style_correlation
from fbgpu.evaluate.single import SUMMARY_COLUMNS, FactorReport, evaluate_factor
from fbgpu.evaluate.stats import rank_ic
from fbgpu.panel.build import build_panel, factor_names, write_panel
from fbgpu.panel.market import PoolConfig, load_market, rebalance_indices
from fbgpu.panel.preprocess import PanelConfig
from fbgpu.progress import track

log = logging.getLogger(__name__)

COMPOSITE_EQUAL = "composite_equal"
COMPOSITE_ICIR = "composite_icir"


class EvaluateConfigError(ValueError):
    """A configuration key or value is invalid; the message names it."""

    exit_status = ExitStatus.USAGE  # fbgpu/errors.py: the command line's exit status


@dataclass
class EvaluateConfig:
    """Configuration of ``fbgpu evaluate`` (TOML section ``[evaluate]``, sub-tables ``panel``
    and ``pool``). Every key has a default:

    Attributes:
        factors: factor columns to evaluate (None = every column of the ``factors`` table).
        directions: per-factor direction overrides (+1 / -1); others come from the factor
            registry, and unknown factors default to +1 with a warning.
        return_start, return_end: evaluation return ``P_{T+end} / P_{T+start} - 1`` (1, 6).
        rebalance_every, rebalance_offset: rebalance on calendar rows ``offset + k * every``
            (5, 0).
        start, end: ISO dates bounding the rebalance dates (None = all data).
        groups: quantile groups for single factors (5); composite_groups: for composites (10).
        periods_per_year: rebalances per year for annualizing (250 / 5 = 50).
        icir_lookback: trailing rebalances in the ICIR weights (12); icir_min_periods: fewest
            known ICs for a weight (6).
        min_stocks: fewest valid stocks for a date to be evaluated (10).
        style_window: window of the reversal/amount/turnover styles (20); beta_window (60).
        write_panel: store the preprocessed panel as table ``panel`` (True).
        figures: draw the PNG figures (True).
        panel: :class:`fbgpu.panel.preprocess.PanelConfig`; pool:
            :class:`fbgpu.panel.market.PoolConfig`.
    """

    factors: list[str] | None = None
    directions: dict[str, int] = field(default_factory=dict)
    return_start: int = 1
    return_end: int = 6
    rebalance_every: int = 5
    rebalance_offset: int = 0
    start: str | None = None
    end: str | None = None
    groups: int = 5
    composite_groups: int = 10
    periods_per_year: float = 250 / 5
    icir_lookback: int = 12
    icir_min_periods: int = 6
    min_stocks: int = 10
    style_window: int = 20
    beta_window: int = 60
    write_panel: bool = True
    figures: bool = True
    panel: PanelConfig = field(default_factory=PanelConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)

    def __post_init__(self) -> None:
        if isinstance(self.factors, str):  # "a,b,c" from a command line or a TOML string
            self.factors = [f.strip() for f in self.factors.split(",") if f.strip()]
        for k, v in self.directions.items():
            if v not in (1, -1):
                raise EvaluateConfigError(f"evaluate.directions.{k} must be 1 or -1, got {v!r}")
        if not 0 <= self.return_start < self.return_end:
            raise EvaluateConfigError("evaluate: need 0 <= return_start < return_end")
        if self.groups < 2 or self.composite_groups < 2:
            raise EvaluateConfigError("evaluate: groups and composite_groups must be >= 2")
        for key in ("start", "end"):
            v = getattr(self, key)
            if v is not None:
                try:
                    dt.date.fromisoformat(str(v))
                except ValueError as e:
                    raise EvaluateConfigError(f"evaluate.{key}: not a date: {v!r}") from e

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluateConfig:
        """Build from a plain dict (e.g. a TOML table); unknown keys are an error."""
        data = dict(data)
        nested = {"panel": PanelConfig, "pool": PoolConfig}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise EvaluateConfigError(f"unknown [evaluate] keys {unknown}; known: {sorted(known)}")
        for key, typ in nested.items():
            if key in data:
                sub = dict(data[key])
                sub_known = {f.name for f in dataclasses.fields(typ)}
                bad = sorted(set(sub) - sub_known)
                if bad:
                    raise EvaluateConfigError(
                        f"unknown [evaluate.{key}] keys {bad}; known: {sorted(sub_known)}")
                try:
                    data[key] = typ(**sub)
                except (TypeError, ValueError) as e:
                    raise EvaluateConfigError(f"[evaluate.{key}]: {e}") from e
        try:
            return cls(**data)
        except TypeError as e:
            raise EvaluateConfigError(f"[evaluate]: {e}") from e

    @classmethod
    def from_toml(cls, path: str | Path, section: str = "evaluate") -> EvaluateConfig:
        """Read section ``[evaluate]`` of a TOML file (defaults when the file has none)."""
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError as e:
            raise EvaluateConfigError(f"config file {path} not found") from e
        except tomllib.TOMLDecodeError as e:
            raise EvaluateConfigError(f"config file {path}: {e}") from e
        return cls.from_dict(data.get(section, {}))


@dataclass
class EvaluateResult:
    """What :func:`run_evaluate` computed and where it wrote it."""

    summary: pd.DataFrame  # factors x SUMMARY_COLUMNS (+ direction)
    composites: pd.DataFrame
    reports: dict[str, FactorReport]
    factor_correlation: pd.DataFrame
    style_correlation: pd.DataFrame
    icir_weights: pd.DataFrame
    out_dir: Path
    backend: str
    panel_partitions_written: int
    seconds: float

    def one_line(self) -> str:
        best = self.summary["RankIC mean"].abs().idxmax() if len(self.summary) else "-"
        return (f"evaluated {len(self.summary)} factors + {len(self.composites)} composites "
                f"on {len(next(iter(self.reports.values())).ic) if self.reports else 0} "
                f"rebalance dates ({self.backend}, {self.seconds:.1f}s); strongest |RankIC|: "
                f"{best}; outputs in {self.out_dir}")


def resolve_directions(names: list[str], overrides: dict[str, int] | None = None,
                       store: Store | None = None) -> dict[str, int]:
    """Direction of each factor: override, else the factor registry, else the direction a user
    factor was stored with (``store``'s ``factors`` manifests), else +1 (with a warning)."""
    overrides = dict(overrides or {})
    registry: dict[str, int] = {}
    if store is not None:
        from fbgpu.factors.compute import stored_user_factors

        registry.update({n: int(m["direction"]) for n, m in stored_user_factors(store).items()
                         if m.get("direction") in (1, -1)})
    try:
        import fbgpu.factors  # noqa: F401  (registers the factors)
        from fbgpu.factors import registry as reg

        if not reg.FACTORS:
            import importlib

            for family in ("minute", "trade", "order"):
                importlib.import_module(f"fbgpu.factors.{family}")
        registry.update({n: s.direction for n, s in reg.FACTORS.items()})
    except Exception as e:  # the registry is optional here: directions can be passed
        log.warning("factor registry unavailable (%s): using configured directions", e)
    out = {}
    for n in names:
        if n in overrides:
            out[n] = int(overrides[n])
        elif n in registry:
            out[n] = registry[n]
        else:
            log.warning("no direction known for factor %r: using +1", n)
            out[n] = 1
    return out


def _host(a: Any) -> np.ndarray:
    return a.get() if hasattr(a, "get") else np.asarray(a)


def _write_table_files(df: pd.DataFrame, out_dir: Path, stem: str, index: bool) -> None:
    df.to_csv(out_dir / f"{stem}.csv", index=index)
    (out_dir / f"{stem}.json").write_text(
        df.reset_index().to_json(orient="records", indent=1, date_format="iso")
        if index else df.to_json(orient="records", indent=1, date_format="iso"))


def write_table(df: pd.DataFrame, out_dir: Path, stem: str, index: bool = True,
                writer: StoreWriteBehind | None = None) -> str:
    """Write ``df`` as ``<stem>.csv`` and ``<stem>.json`` (records) under ``out_dir``; return
    the CSV's file name (for ``index.json``).

    With ``writer`` both files are written behind, by the writer's thread (a failure names the
    CSV); the frame is copied first, so the caller may go on changing its own.
    """
    if writer is None:
        _write_table_files(df, out_dir, stem, index)
    else:
        frame = df.copy()
        writer.submit_file(out_dir / f"{stem}.csv",
                           lambda: _write_table_files(frame, out_dir, stem, index))
    return f"{stem}.csv"


def write_text(path: Path, text: str, writer: StoreWriteBehind | None = None) -> None:
    """``path.write_text(text)``, now or (with ``writer``) behind, after the files queued
    before it (an ``index.json`` after the tables it lists)."""
    if writer is None:
        path.write_text(text)
    else:
        writer.submit_file(path, lambda: path.write_text(text))


def run_evaluate(
    store: Store | str | Path,
    config: EvaluateConfig | dict[str, Any] | None = None,
    backend: Backend | str = "auto",
    progress: bool = True,
    directions: dict[str, int] | None = None,
    factors: Any = None,
    writer: StoreWriteBehind | None = None,
) -> EvaluateResult:
    """Evaluate every factor of the store and write tables and figures; see the module docstring.

    Args:
        store: the store (or its directory) holding ``daily`` and ``factors`` tables.
        config: :class:`EvaluateConfig` or a dict of its keys (None = defaults).
        backend: ``cpu``, ``gpu`` or ``auto``; the panel and the per-date statistics run on it.
        progress: show a progress bar over the factors.
        directions: direction overrides (merged over ``config.directions``).
        factors: the raw factor values in memory (a :class:`fbgpu.factors.FactorCube` on the
            backend's device, e.g. ``run_factors(..., keep=True).cube``) instead of the store's
            ``factors`` table; the results are the same.
        writer: the run's write-behind persistence (the demo's); the ``panel`` table is submitted
            to it and the caller flushes it. Without, the call makes its own and waits for it
            before returning.
    """
    store = store if isinstance(store, Store) else Store(store)
    if not store.root.is_dir():
        raise StoreError(f"store {store.root} does not exist")
    if config is None:
        cfg = EvaluateConfig()
    elif isinstance(config, dict):
        cfg = EvaluateConfig.from_dict(config)
    else:
        cfg = config
    be = get_backend(backend)
    if writer is None:  # our own: the panel's writes are waited for (and their errors raised)
        with StoreWriteBehind(store, be.to_host_async, name="evaluate") as own:
            return _evaluate(store, cfg, be, progress, directions, factors, own)
    return _evaluate(store, cfg, be, progress, directions, factors, writer)


def _evaluate(store: Store, cfg: EvaluateConfig, be: Backend, progress: bool,
              directions: dict[str, int] | None, factors: Any,
              writer: StoreWriteBehind) -> EvaluateResult:
    """The body of :func:`run_evaluate`, the panel persisted through ``writer``."""
    t0 = time.perf_counter()
    xp = be.xp
    market = load_market(store)
    available = list(factors.names) if factors is not None else factor_names(store)
    names = list(cfg.factors) if cfg.factors else available
    unknown = [n for n in names if n not in available]
    if unknown:  # a usage error, named before anything is read
        raise EvaluateConfigError(
            f"unknown factor(s) {', '.join(map(repr, unknown))}: the factors "
            f"{'cube' if factors is not None else 'table'} has {', '.join(available)}")
    dirs = resolve_directions(names, {**cfg.directions, **(directions or {})}, store)
    log.info("evaluate: %d factors, %d dates x %d stocks, backend %s", len(names),
             len(market.dates), len(market.symbols), be.name)
    panel = build_panel(store, market, names, cfg.panel, cfg.pool, be, factors=factors)
    # The panel is persisted behind the rest of the evaluation (write-behind: its host copy
    # starts now through the backend's crossing; the encoding and writes overlap what follows).
    written = 0
    if cfg.write_panel:
        written = write_panel(store, panel, config=dataclasses.asdict(cfg.panel) | {
            "pool": dataclasses.asdict(cfg.pool)}, window=cfg.panel.window, writer=writer)

    D = len(market.dates)
    rows = rebalance_indices(D, cfg.rebalance_every, cfg.rebalance_offset)
    rows = rows[rows + cfg.return_end < D]  # the return window must have closed
    grid = rows  # the whole rebalance grid: ICIR weights may use ICs from before `start`
    if cfg.start:
        rows = rows[np.array([market.dates[i] >= dt.date.fromisoformat(cfg.start) for i in rows],
                             dtype=bool)]
    if cfg.end:
        rows = rows[np.array([market.dates[i] <= dt.date.fromisoformat(cfg.end) for i in rows],
                             dtype=bool)]
    if len(rows) < 2:
        raise StoreError(f"store {store.root}: only {len(rows)} rebalance dates with a complete "
                         f"{cfg.return_end}-day return window; need more daily data")
    dates = pd.DatetimeIndex([market.dates[i] for i in rows], name="date")
    pool = xp.asarray(market.pool(cfg.pool)[rows])
    fwd = xp.asarray(market.forward_returns(cfg.return_start, cfg.return_end)[rows])
    values = panel.values[xp.asarray(rows)]  # [R, S, F] on the device

    reports: dict[str, FactorReport] = {}
    it = track(names, "evaluate factors") if progress else names
    for j, name in enumerate(it):
        reports[name] = evaluate_factor(
            values[:, :, j], fwd, pool, dirs[name], cfg.groups, name=name, dates=dates,
            periods_per_year=cfg.periods_per_year, min_stocks=cfg.min_stocks)

    # Composites of the signed factors (ICIR weights from ICs known at each rebalance).
    direction_vec = np.array([dirs[n] for n in names], dtype=np.float64)
    sv = signed(values, direction_vec)
    universe = panel.universe[xp.asarray(rows)]
    # ICs on the whole grid (those before `start` were known at the first evaluated date too)
    grid_fwd = xp.asarray(market.forward_returns(cfg.return_start, cfg.return_end)[grid])
    grid_pool = xp.asarray(market.pool(cfg.pool)[grid])
    grid_sv = signed(panel.values[xp.asarray(grid)], direction_vec)
    # one crossing for the whole [grid dates, factors] IC table (the ICIR weights are host math)
    ic_grid = be.to_host(xp.stack([rank_ic(grid_sv[:, :, j], grid_fwd, grid_pool,
                                           min_obs=max(cfg.min_stocks, 3))
                                   for j in range(len(names))], axis=1))
    weights_grid = icir_weights(ic_grid, grid, known_lag=cfg.return_end,
                                lookback=cfg.icir_lookback, min_periods=cfg.icir_min_periods)
    weights = weights_grid[np.searchsorted(grid, rows)]
    composites = {
        COMPOSITE_EQUAL: weighted_composite(sv, None, universe),
        COMPOSITE_ICIR: weighted_composite(sv, xp.asarray(weights), universe),
    }
    comp_reports = {
        k: evaluate_factor(v, fwd, pool, 1, cfg.composite_groups, name=k, dates=dates,
                           periods_per_year=cfg.periods_per_year, min_stocks=cfg.min_stocks)
        for k, v in composites.items()
    }

    all_names = [*names, *composites]
    stacked = xp.concatenate([sv, xp.stack(list(composites.values()), axis=2)], axis=2)
    fcorr = factor_correlation(stacked, all_names, pool)
    styles_full = market.style_factors(cfg.style_window, cfg.beta_window)
    styles = {k: xp.asarray(v[rows]) for k, v in styles_full.items()}
    scorr = style_correlation(stacked, all_names, styles, pool)

    summary = pd.DataFrame([reports[n].summary() for n in names])
    summary.insert(0, "direction", [dirs[n] for n in names])
    summary.index.name = "factor"
    comp = pd.DataFrame([r.summary() for r in comp_reports.values()])
    comp.index.name = "factor"
    w_df = pd.DataFrame(weights, index=dates, columns=names)

    out_dir = store.report_dir / "evaluate"
    out_dir.mkdir(parents=True, exist_ok=True)
    # The result tables go behind the rest of the stage (the figures are drawn here: pyplot is
    # not thread-safe); index.json is queued after them. Nothing in the stage reads them back.
    table = functools.partial(write_table, writer=writer)
    items: list[dict[str, str]] = []
    items.append({"file": table(summary, out_dir, "single_factor"),
                  "caption": f"Single-factor test ({cfg.groups} groups, weekly, direction-signed)"})
    items.append({"file": table(comp, out_dir, "composites"),
                  "caption": f"Equal-weight and ICIR-weighted composites "
                             f"({cfg.composite_groups} groups)"})
    every = {**reports, **comp_reports}
    ic_df = pd.DataFrame({n: r.ic for n, r in every.items()})
    table(ic_df, out_dir, "rank_ic")
    nav_long = pd.concat(
        [r.group_nav.stack().rename("nav").reset_index().assign(factor=n)
         for n, r in every.items()], ignore_index=True)[["date", "factor", "group", "nav"]]
    table(nav_long, out_dir, "group_nav", index=False)
    gm = pd.DataFrame({n: r.mean_group_returns() for n, r in every.items()}).T
    gm.index.name = "factor"
    table(gm, out_dir, "group_mean_returns")
    table(w_df, out_dir, "icir_weights")
    fcorr.index.name = "factor"
    scorr.index.name = "factor"
    items.append({"file": table(scorr, out_dir, "style_correlation"),
                  "caption": "Correlation with style factors (mean cross-sectional Pearson)"})
    table(fcorr, out_dir, "factor_correlation")
    from fbgpu.evaluate.families import factor_families, write_family_exhibits

    items += write_family_exhibits(out_dir, summary, fcorr, factor_families(names, store),
                                   table, cfg.figures)
    from fbgpu.evaluate.truth import factor_truth_table

    truth = factor_truth_table(store, market, rows, pool, values, names, dirs,
                               {n: reports[n].ic for n in names})
    if truth is not None:  # a synthetic store: what was planted in each factor (docs/synth.md)
        items.append({"file": table(truth, out_dir, "planted_truth"),
                      "caption": "Ground truth: the planted signal in each factor and the "
                                 "share of the oracle RankIC it recovers"})

    if cfg.figures:
        from fbgpu.evaluate.plots import plot_cumulative_ic, plot_group_nav, plot_heatmap

        plot_heatmap(fcorr, out_dir / "factor_correlation.png",
                     "Factor correlation (mean cross-sectional, direction-signed)")
        items.append({"file": "factor_correlation.png", "caption": "Factor correlation matrix"})
        plot_cumulative_ic(list(reports.values()), out_dir / "cumulative_rank_ic.png",
                           "Cumulative RankIC (direction-signed)")
        items.append({"file": "cumulative_rank_ic.png", "caption": "Cumulative RankIC"})
        plot_cumulative_ic(list(comp_reports.values()), out_dir / "cumulative_rank_ic_comp.png",
                           "Cumulative RankIC of the composites")
        items.append({"file": "cumulative_rank_ic_comp.png",
                      "caption": "Cumulative RankIC of the composites"})
        for n, r in every.items():
            p = plot_group_nav(r, out_dir / f"nav_{n}.png")
            items.append({"file": p.name, "caption": f"{n}: group net value relative to pool"})
    text = (f"{len(names)} factors, {len(dates)} rebalance dates "
            f"({dates[0].date()} .. {dates[-1].date()}), every {cfg.rebalance_every} trading "
            f"days; return P(T+{cfg.return_end})/P(T+{cfg.return_start})-1 at adjusted vwap; "
            f"pool: listed >= {cfg.pool.min_listed_days} days, not ST, tradable on T+1. "
            f"Backend: {be.name}.")
    write_text(out_dir / "index.json", json.dumps(
        {"title": "Single-factor tests", "text": text, "items": items}, indent=1), writer)

    res = EvaluateResult(summary, comp, every, fcorr, scorr, w_df, out_dir, be.name, written,
                         time.perf_counter() - t0)
    log.info("%s", res.one_line())
    return res


__all__ = ["SUMMARY_COLUMNS", "EvaluateConfig", "EvaluateConfigError", "EvaluateResult",
           "resolve_directions", "run_evaluate"]
