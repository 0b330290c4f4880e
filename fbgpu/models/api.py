"""Store-level model training: :func:`run_train` reads the market and the factor panel from a
store, trains the requested models on rolling windows, and writes the ``scores`` table.

Data flow on the GPU backend: the factor panel is preprocessed on the device
(:func:`fbgpu.panel.build_panel`, cupy), handed to torch by DLPack, windowed and trained on the
device; the scores leave the device once, per model, to be written to the store. On the CPU
backend the same code runs on numpy arrays that torch views without copying.

``scores`` table: one partition per predicted date (every rebalance date from the first retrain
date on), columns ``date, symbol`` and one float64 column per model score (:data:`SCORE_COLUMNS`
plus ``fused``), rows = the stocks of that date's scoring pool (:meth:`Market.scoring_pool`,
known at the close of T). Every score is a cross-sectional z-score
(seed ensemble of per-date z-scores, see :mod:`fbgpu.models.runner`). Re-running one model
rewrites its column and leaves the others; the partition manifest's ``extra.columns`` records,
per column, the model kind, its configuration hash and the windows it came from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from fbgpu.data.store import Store, StoreError
from fbgpu.data.writebehind import StoreWriteBehind
from fbgpu.engine.backend import Backend, get_backend
from fbgpu.errors import ExitStatus
from fbgpu.models.config import (
    FUSED_COLUMN,
    MODEL_KINDS,
    SCORE_COLUMNS,
    TrainConfig,
    load_train_config,
)
from fbgpu.models.datasets import LF_BAR_FIELDS, LF_SOURCES, DeviceSamples, ModelInputs
from fbgpu.models.device import torch_device
from fbgpu.models.rolling import NoRetrainWindowError, RetrainWindow, require_retrain_window
from fbgpu.models.runner import (
    Fingerprint,
    RollingResult,
    WindowReport,
    finish_rolling,
    fit_plans,
    model_config_hash,
    plan_rolling,
    sources_for,
)
from fbgpu.models.scores import ScorePanel, fuse_scores
from fbgpu.panel.market import Market, PoolConfig, load_market, rebalance_indices
from fbgpu.panel.preprocess import PanelConfig

log = logging.getLogger(__name__)

SCORES_TABLE = "scores"
CHECKPOINT_DIR = "models"


@dataclass
class TrainSummary:
    """What :func:`run_train` did: per model, its windows; dates and columns written."""

    kinds: list[str]
    backend: str
    device: str
    windows: dict[str, list[WindowReport]] = field(default_factory=dict)
    dates_written: int = 0
    columns: list[str] = field(default_factory=list)
    seconds: float = 0.0
    report_dir: Path | None = None
    #: This run's scores on the backend's device (every trained column, plus ``fused`` when
    #: both parts were trained in this run): the in-memory hand-off to the backtest.
    scores: ScorePanel | None = field(default=None, repr=False)

    def line(self) -> str:
        """The one-line summary of the CLI."""
        nw = sum(len(v) for v in self.windows.values())
        resumed = sum(r.resumed for v in self.windows.values() for r in v)
        where = f"; exhibits in {self.report_dir}" if self.report_dir else ""
        return (f"trained {', '.join(self.kinds)}: {nw} windows ({resumed} resumed), "
                f"{self.dates_written} dates of scores [{', '.join(self.columns)}] on "
                f"{self.backend} in {self.seconds:.1f}s{where}")


# --------------------------------------------------------------------------- inputs
def lf_bars(store: Store, market: Market) -> Any:
    """``[D, S, 6]`` adjusted open, high, low, close, vwap and volume of days with trading.

    Prices times ``adj_factor``; NaN on days without a row or without trading (suspended:
    volume 0 is kept, prices NaN, so a suspension is a gap, not a flat bar). Computed where the
    market's arrays live (:meth:`Market.on`): on a device, the daily ``high`` and ``low`` (raw
    inputs, read from the store) are its only uploads.
    """
    xp = market.xp
    extra = store.read_panel("daily", market.dates, columns=["high", "low"],
                             symbols=list(market.symbols))
    adj = market["adj_factor"]
    traded = market.traded()
    px = {
        "open": market["open"], "high": xp.asarray(extra["high"]),
        "low": xp.asarray(extra["low"]), "close": market["close"], "vwap": market["vwap"],
    }
    out = xp.full((*market.shape, len(LF_BAR_FIELDS)), np.nan)
    for k, name in enumerate(LF_BAR_FIELDS):
        if name == "volume":
            out[..., k] = xp.where(market.present, market["volume"], np.nan)
        else:
            out[..., k] = xp.where(traded, px[name] * adj, np.nan)
    return out


def load_model_inputs(
    store: Store,
    config: TrainConfig,
    backend: Backend,
    kinds: Sequence[str],
    market: Market | None = None,
    panel_config: PanelConfig | None = None,
    pool_config: PoolConfig | None = None,
    factors: Any = None,
) -> ModelInputs:
    """Pool, labels, factor panel (on the backend's device) and bars for ``kinds`` from a store.

    ``panel_config``/``pool_config`` are the evaluation's preprocessing and pool settings
    (``[evaluate.panel]``/``[evaluate.pool]``), so that models and single-factor tests see one
    panel; they are recorded in ``meta["preprocessing"]`` and hence in the checkpoints' hash.
    Pool = :meth:`Market.scoring_pool` (known at the close of T: the stocks normalised and scored
    at T); label = :meth:`Market.labels` over T+1 -> T+1+h, z-scored over the report's pool
    :meth:`Market.pool` (tradable on T+1; the label is NaN outside it, so training samples are
    scoring-pool stocks that are also in the T+1 pool); panel = :func:`fbgpu.panel.build_panel`
    (smoothing, winsorizing, neutralizing,
    z-scoring over the universe of each day, computed on ``backend``); sample dates =
    :func:`fbgpu.panel.rebalance_indices` (the evaluation's rebalance grid). ``factors``, an
    in-memory :class:`fbgpu.factors.FactorCube` on the backend's device, replaces the store's
    ``factors`` table as the panel's source (the same panel; see
    :func:`fbgpu.panel.build_panel`).
    """
    srcs = {s for k in kinds for s in sources_for(k)}
    # The daily inputs cross to the device once (Market.on: raw inputs, uploaded); pool, labels,
    # panel alignment and LF bars are then computed there, and nothing comes back.
    market = (market if market is not None else load_market(store)).on(backend)
    xp = backend.xp
    # Scores at T may know only the close of T: the samples' cross-section is the scoring pool;
    # the T+1 pool (tradable next day) shapes only the labels, which are future by definition.
    pool = market.scoring_pool(pool_config)
    label = market.labels(market.pool(pool_config), 1, 1 + config.label_horizon)
    hf_panel, names = None, ()
    if "hf" in srcs:
        from fbgpu.panel.build import build_panel

        hf_names = None if config.hf_factors == "all" else list(config.hf_factors)
        if hf_names is not None:
            from fbgpu.panel.build import factor_names

            have = list(factors.names) if factors is not None else factor_names(store)
            unknown = [n for n in hf_names if n not in have]
            if unknown:
                raise ValueError(f"[train] hf_factors: unknown factor(s) {unknown}; the "
                                 f"factors table has {', '.join(have)}")
        fp = build_panel(store, market, names=hf_names, panel_config=panel_config,
                         pool_config=pool_config, backend=backend, factors=factors)
        # float32 on the device: the one conversion copy of the panel (see docs/models.md).
        hf_panel, names = xp.asarray(fp.values, dtype=xp.float32), tuple(fp.names)
    bars = None
    if any(s in LF_SOURCES for s in srcs):
        bars = lf_bars(store, market).astype(xp.float32)
    return ModelInputs(
        dates=list(market.dates),
        symbols=np.asarray(market.symbols),
        pool=pool,
        label=label.astype(xp.float32),
        hf_panel=hf_panel,
        bars=bars,
        factor_names=names,
        sample_days=rebalance_indices(len(market.dates), config.sample_every, 0),
        meta={"preprocessing": preprocessing_settings(panel_config, pool_config)},
    )


def preprocessing_settings(panel_config: PanelConfig | None,
                           pool_config: PoolConfig | None) -> dict[str, Any]:
    """The panel and pool settings as plain data (for hashes and provenance)."""
    return {"panel": dataclasses.asdict(panel_config or PanelConfig()),
            "pool": dataclasses.asdict(pool_config or PoolConfig())}


def store_fingerprint(store: Store, inputs: ModelInputs, kind: str) -> Fingerprint:
    """Fingerprint of a window from the store's partition hashes of days before its retrain date.

    Covers ``daily`` (pool, labels, bars), ``factors`` for models reading the HF panel, and the
    ``securities`` master: data from R on never change it, data before R always do.
    """
    tables = ["daily"] + (["factors"] if "hf" in sources_for(kind) else [])
    hashes: dict[str, dict[dt.date, str]] = {}
    for t in tables:
        hashes[t] = {}
        for d in store.dates(t):
            m = store.manifest(t, d)
            hashes[t][d] = m.sha256 if m else ""
    sec = store.manifest("securities") if store.has("securities") else None
    sec_hash = sec.sha256 if sec else ""

    def fp(w: RetrainWindow) -> str:
        h = hashlib.sha256(sec_hash.encode())
        h.update(np.asarray(inputs.symbols, dtype=str).tobytes())
        for t in tables:
            for d in inputs.dates[: w.retrain_day]:
                h.update(f"{t}/{d.isoformat()}={hashes[t].get(d, '-')};".encode())
        return h.hexdigest()[:32]

    return fp


# --------------------------------------------------------------------------- scores table
def write_scores(
    store: Store,
    dates: Sequence[dt.date],
    symbols: np.ndarray,
    columns: Mapping[str, np.ndarray],
    provenance: Mapping[str, dict[str, Any]] | None = None,
) -> int:
    """Merge score ``columns`` (each ``[len(dates), S]``, NaN = no score) into ``scores``.

    Each partition keeps its other columns; a written column is replaced on every date of the
    table (dates outside ``dates`` lose it), so the table holds the latest run of each model.
    Returns the number of partitions written.
    """
    index = {d: i for i, d in enumerate(dates)}
    all_dates = sorted(set(dates) | set(store.dates(SCORES_TABLE)))
    sym = np.asarray(symbols, dtype=object)
    written = 0
    for d in all_dates:
        old: dict[str, np.ndarray] = {}
        old_syms = np.array([], dtype=object)
        extra: dict[str, Any] = {"columns": {}}
        if store.has(SCORES_TABLE, d):
            t = store.read(SCORES_TABLE, d)
            old_syms = np.asarray(t.column("symbol").cast(pa.string()).to_pylist(), dtype=object)
            old = {c: t.column(c).to_numpy() for c in t.column_names
                   if c not in ("date", "symbol") and c not in columns}
            m = store.manifest(SCORES_TABLE, d)
            if m is not None and isinstance(m.extra.get("columns"), dict):
                extra["columns"] = {k: v for k, v in m.extra["columns"].items()
                                    if k not in columns}
        i = index.get(d)
        new = {c: v[i] for c, v in columns.items()} if i is not None else {}
        keep_new = np.zeros(len(sym), dtype=bool)
        for v in new.values():
            keep_new |= np.isfinite(v)
        row_syms = sorted(set(old_syms.tolist()) | set(sym[keep_new].tolist()))
        if not row_syms:
            continue
        pos_old = {s: k for k, s in enumerate(old_syms)}
        pos_new = {s: k for k, s in enumerate(sym)}
        cols: dict[str, Any] = {
            "date": pa.array([d] * len(row_syms), type=pa.date32()),
            "symbol": pa.array(row_syms, type=pa.string()),
        }
        for c, v in old.items():
            cols[c] = pa.array([v[pos_old[s]] if s in pos_old else np.nan for s in row_syms],
                               type=pa.float64())
        for c in columns:
            v = new.get(c)
            cols[c] = pa.array(
                [float(v[pos_new[s]]) if v is not None and s in pos_new else np.nan
                 for s in row_syms], type=pa.float64())
            if v is not None and provenance and c in provenance:
                extra["columns"][c] = provenance[c]
        values = [c for c in cols if c not in ("date", "symbol")]
        table = pa.table({"date": cols["date"], "symbol": cols["symbol"],
                          **{c: cols[c] for c in sorted(values)}})
        store.write(SCORES_TABLE, d, table, extra=extra)
        written += 1
    return written


def read_scores(store: Store, columns: Sequence[str] | None = None,
                symbols: Sequence[str] | None = None) -> tuple[list[dt.date], np.ndarray,
                                                               dict[str, np.ndarray]]:
    """The ``scores`` table as ``(dates, symbols, {column: [D, S]})`` (NaN where absent)."""
    dates = store.dates(SCORES_TABLE)
    if not dates:
        raise StoreError(f"store {store.root} has no scores table: run `fbgpu train` first")
    have: set[str] = set()
    for d in dates:
        have |= {c for c in store.read(SCORES_TABLE, d).column_names
                 if c not in ("date", "symbol")}
    cols = [c for c in (columns or sorted(have)) if c in have]
    p = store.read_panel(SCORES_TABLE, dates, symbols=symbols)
    return list(p.dates), p.symbols, {c: p.fields[c] for c in cols if c in p.fields}


# --------------------------------------------------------------------------- the step
def _resolve_kinds(model: str | Sequence[str]) -> list[str]:
    if isinstance(model, str):
        if model == "all":
            return list(MODEL_KINDS)
        model = [model]
    kinds = list(model)
    bad = [k for k in kinds if k not in MODEL_KINDS]
    if bad:
        raise ValueError(f"unknown model {bad[0]!r}: choose all or one of {', '.join(MODEL_KINDS)}")
    return kinds


def run_train(
    store: Store | str | Path,
    model: str | Sequence[str] = "all",
    config: TrainConfig | Mapping[str, Any] | None = None,
    backend: str | Backend = "auto",
    progress: bool = True,
    report: bool = True,
    panel_config: PanelConfig | None = None,
    pool_config: PoolConfig | None = None,
    factors: Any = None,
    writer: StoreWriteBehind | None = None,
) -> TrainSummary:
    """Train ``model`` (a kind of :data:`MODEL_KINDS`, or ``"all"``) on rolling windows.

    With ``report`` the scores are then evaluated into ``<store>/reports/models``
    (:func:`fbgpu.models.exhibits.evaluate_models`); a store too short for an evaluation (fewer
    than two scored dates with a complete return window) is logged, not an error.

    Checkpoints go to ``<store>/models/<kind>/<retrain date>/seed<k>.pt`` (resumable: a complete
    window whose configuration and input partitions are unchanged is loaded, not retrained);
    out-of-sample scores go to the ``scores`` table; ``fused`` is (re)computed whenever both
    ``hf_gru`` and ``lf_mtl`` are in the table afterwards. ``factors`` (an in-memory
    :class:`fbgpu.factors.FactorCube` on the backend's device) is the HF panel's source instead
    of the store's ``factors`` table, as in :func:`load_model_inputs`; checkpoints still name the
    stored partitions as their inputs, so pass only a cube whose values were also stored.

    The checkpoints and the ``scores`` table are written behind (:mod:`fbgpu.data.writebehind`)
    from the device tensors and columns (``Backend.to_host_async``, one crossing per state
    tensor and per score column): by ``writer`` when given (the demo's, which the caller
    flushes; ``summary.dates_written`` is set when the write has run), else by the call's own
    writer, waited for before the call returns. Before anything reads the table back (the
    exhibits, a ``fused`` from the store) the writer is flushed.
    """
    t0 = time.perf_counter()
    st = store if isinstance(store, Store) else Store(store)
    if not Path(st.root).is_dir():
        raise StoreError(f"store {st.root} does not exist")
    cfg = config if isinstance(config, TrainConfig) else load_train_config(dict(config or {}))
    kinds = _resolve_kinds(model)
    be = backend if isinstance(backend, Backend) else get_backend(backend)
    if be.name != "cpu" and cfg.fit_workers != 1:
        # One device, one process: the GPU backend (and the CPU stand-in device that rehearses
        # it, whose torch device is the CPU) fits in this process, never in forked workers.
        cfg = cfg.model_copy(update={"fit_workers": 1})
    device = torch_device(be)
    dates = st.dates("daily")
    if dates:  # a market too short to train, refused before anything is read or written
        try:
            require_retrain_window(dates, cfg, hint="the store's market is too short for this "
                                   "training configuration ([train] min_train_dates, "
                                   "sample_every, retrain_months)")
        except NoRetrainWindowError as e:
            e.exit_status = ExitStatus.REJECTED  # the store lacks what the step needs
            raise
    inputs = load_model_inputs(st, cfg, be, kinds, panel_config=panel_config,
                               pool_config=pool_config, factors=factors)
    srcs: list[str] = []
    for k in kinds:
        srcs += [s for s in sources_for(k) if s not in srcs]
    data = DeviceSamples(inputs, cfg, device, srcs)
    summary = TrainSummary(kinds, be.name, be.device)
    tensors: dict[str, Any] = {}
    provenance: dict[str, dict[str, Any]] = {}
    pred_dates: list[dt.date] | None = None
    # Plan every kind first, so that all their fits go through one executor (forked CPU
    # workers share out the longest fits first across kinds; docs/models.md, "Fit workers").
    plans = [plan_rolling(kind, inputs, cfg, data, checkpoint_root=st.root / CHECKPOINT_DIR,
                          fingerprint=store_fingerprint(st, inputs, kind)) for kind in kinds]
    fitted, fit_seconds = fit_plans(plans, data, cfg, progress=progress)
    # Checkpoints and the scores table are written behind (the demo's writer, or our own,
    # closed -- i.e. waited for, its failures raised -- when this block ends): nothing here
    # reads them back; plan_rolling read the earlier runs' checkpoints above.
    own = writer is None
    w = writer if writer is not None else StoreWriteBehind(st, be.to_host_async, name="train")
    with w if own else contextlib.nullcontext(w):
        for kind, plan in zip(kinds, plans, strict=True):
            res: RollingResult = finish_rolling(plan, fitted, inputs, data,
                                                fit_seconds, w, be.xp)
            if pred_dates is not None and res.dates != pred_dates:
                raise RuntimeError("models predicted different dates; this is a bug")
            pred_dates = res.dates
            tensors[SCORE_COLUMNS[kind]] = res.scores
            provenance[SCORE_COLUMNS[kind]] = {
                "kind": kind, "config_hash": model_config_hash(
                    kind, cfg, inputs.factor_names, inputs.meta.get("preprocessing")),
                "windows": [r.window for r in res.windows], "backend": be.name,
            }
            summary.windows[kind] = res.windows
        assert pred_dates is not None
        # The scores stay on the device (torch -> backend arrays by DLPack) for the next stage;
        # the store gets a persistence copy, the step's one device->host transfer per column.
        scores = ScorePanel.from_torch(pred_dates, inputs.symbols, tensors, be)
        hf_col, lf_col = SCORE_COLUMNS["hf"], SCORE_COLUMNS["lf"]
        if scores.has(hf_col) and scores.has(lf_col):
            scores = scores.with_column(FUSED_COLUMN, fuse_scores(
                scores.columns[hf_col], scores.columns[lf_col], cfg.fusion_hf_weight,
                cfg.fusion_lf_weight))
            provenance[FUSED_COLUMN] = _fused_provenance(cfg)
        names = list(scores.columns)

        def persist(host: list[np.ndarray]) -> None:
            summary.dates_written = write_scores(st, pred_dates, inputs.symbols,
                                                 dict(zip(names, host, strict=True)),
                                                 provenance)

        w.submit(SCORES_TABLE, None, [scores.columns[n] for n in names], persist)
    summary.columns = list(scores.columns)
    summary.scores = scores
    # One part trained now, the other from an earlier run: fuse from the store.
    if FUSED_COLUMN not in scores.columns and ("hf" in kinds or "lf" in kinds):
        w.flush()  # the table is read back
        if update_fused(st, cfg):
            summary.columns.append(FUSED_COLUMN)
    summary.seconds = time.perf_counter() - t0
    if report:
        w.flush()  # the exhibits read the scores table
        from fbgpu.models.exhibits import evaluate_models

        try:
            summary.report_dir = evaluate_models(st, backend=be, panel_config=panel_config,
                                                 pool_config=pool_config,
                                                 train_config=cfg,
                                                 writer=writer).out_dir
        except StoreError as e:
            log.warning("model exhibits skipped: %s", e)
    return summary


def update_fused(store: Store, config: TrainConfig | None = None) -> bool:
    """(Re)compute ``fused`` from the ``hf_gru`` and ``lf_mtl`` columns; False if one is missing."""
    cfg = config or TrainConfig()
    hf_col, lf_col = SCORE_COLUMNS["hf"], SCORE_COLUMNS["lf"]
    dates, symbols, cols = read_scores(store, [hf_col, lf_col])
    if hf_col not in cols or lf_col not in cols:
        return False
    fused = fuse_scores(cols[hf_col], cols[lf_col], cfg.fusion_hf_weight, cfg.fusion_lf_weight)
    write_scores(store, dates, symbols, {FUSED_COLUMN: fused},
                 {FUSED_COLUMN: _fused_provenance(cfg)})
    return True


def _fused_provenance(cfg: TrainConfig) -> dict[str, Any]:
    """The ``fused`` column's manifest entry (its formula)."""
    hf_col, lf_col = SCORE_COLUMNS["hf"], SCORE_COLUMNS["lf"]
    return {"kind": "fusion", "formula": f"{cfg.fusion_hf_weight} z({hf_col}) + "
                                         f"{cfg.fusion_lf_weight} z({lf_col})"}
