"""The store's ``factors`` table -> the preprocessed factor panel, and back into the store.

:func:`build_panel` reads the raw daily factor values onto the market's calendar, runs
:func:`fbgpu.panel.preprocess.preprocess_panel` on the chosen backend (one batched pass over all
days), and returns a :class:`FactorPanel`. :func:`write_panel` stores it as the derived wide table
``panel`` (date, symbol, one float64 column per factor; NaN-aware, not filled) with a manifest per
date naming the input partitions it depends on; :func:`read_panel` loads it back (for the models).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from fbgpu.data.store import Store, StoreError, config_hash
from fbgpu.data.writebehind import AsyncToHost, StoreWriteBehind
from fbgpu.engine.backend import Backend, get_backend
from fbgpu.panel.market import Market, PoolConfig
from fbgpu.panel.preprocess import PanelConfig, preprocess_panel

log = logging.getLogger(__name__)

PANEL_TABLE = "panel"


@dataclass
class FactorPanel:
    """A dense factor panel ``values[date, stock, factor]`` (numpy on the host, or cupy).

    ``universe[date, stock]`` is the cross-section each day was preprocessed over.
    """

    dates: list[dt.date]
    symbols: np.ndarray
    names: list[str]
    values: Any
    universe: Any
    meta: dict[str, Any] = field(default_factory=dict)

    def factor(self, name: str) -> Any:
        """``[D, S]`` values of one factor."""
        try:
            return self.values[:, :, self.names.index(name)]
        except ValueError as e:
            raise KeyError(f"no factor {name!r} in the panel (have {self.names})") from e

    def to_frame(self, name: str) -> Any:
        """One factor as a pandas DataFrame (dates x symbols)."""
        import pandas as pd

        vals = self.factor(name)
        vals = vals.get() if hasattr(vals, "get") else np.asarray(vals)
        return pd.DataFrame(vals, index=pd.DatetimeIndex(self.dates, name="date"),
                            columns=pd.Index(self.symbols, name="symbol"))


def factor_names(store: Store, table: str = "factors") -> list[str]:
    """Factor columns of the store's ``factors`` table (from its latest partition)."""
    dates = store.dates(table)
    if not dates:
        raise StoreError(f"store {store.root} has no {table} table: run `fbgpu factors` first")
    schema = store.read(table, dates[-1]).schema
    return [n for n in schema.names if n not in ("date", "symbol")]


def load_factor_values(
    store: Store, market: Market, names: list[str] | None = None, table: str = "factors"
) -> tuple[np.ndarray, list[str]]:
    """Raw daily factor values ``[D, S, F]`` on the market's calendar and symbols.

    Days of the calendar without a ``factors`` partition are NaN (so the smoothing window still
    counts trading days); stocks not in the market are dropped.
    """
    names = list(names) if names is not None else factor_names(store, table)
    have = set(store.dates(table))
    dates = [d for d in market.dates if d in have]
    if not dates:
        raise StoreError(f"store {store.root}: the {table} table has no date in common with "
                         f"the daily table ({market.dates[0]}..{market.dates[-1]})")
    panel = store.read_panel(table, dates, columns=names, symbols=list(market.symbols))
    missing = [n for n in names if n not in panel.fields]
    if missing:
        raise StoreError(f"{table} table in {store.root} lacks columns {missing}")
    D, S = market.shape
    out = np.full((D, S, len(names)), np.nan)
    rows = np.array([market.dates.index(d) for d in dates], dtype=np.int64)
    for j, n in enumerate(names):
        out[rows, :, j] = panel.fields[n]
    return out, names


def factor_values_from_cube(cube: Any, market: Market, names: list[str] | None,
                            xp: Any) -> tuple[Any, list[str]]:
    """Raw daily factor values ``[D, S, F]`` on the market's calendar and symbols, taken from an
    in-memory :class:`fbgpu.factors.FactorCube` on the backend's device (no store read, no host
    copy: only the date/symbol index maps, host metadata, are uploaded).

    The same layout as :func:`load_factor_values`: calendar days without cube values are NaN,
    cube stocks outside the market are dropped.
    """
    names = list(names) if names is not None else list(cube.names)
    missing = [n for n in names if n not in cube.names]
    if missing:
        raise StoreError(f"the factor cube lacks factors {missing} (has {cube.names})")
    day_of = {d: i for i, d in enumerate(market.dates)}
    pairs = [(i, day_of[d]) for i, d in enumerate(cube.dates) if d in day_of]
    if not pairs:
        raise StoreError(f"the factor cube ({cube.dates[0]}..{cube.dates[-1]}) has no date in "
                         f"the daily table ({market.dates[0]}..{market.dates[-1]})")
    sym_of = {str(x): j for j, x in enumerate(market.symbols)}
    cols = [(i, sym_of[str(x)]) for i, x in enumerate(cube.symbols) if str(x) in sym_of]
    D, S = market.shape
    out = xp.full((D, S, len(names)), xp.nan)
    if cols:
        src_d = xp.asarray(np.array([p[0] for p in pairs], dtype=np.int64))
        dst_d = xp.asarray(np.array([p[1] for p in pairs], dtype=np.int64))
        src_s = xp.asarray(np.array([c[0] for c in cols], dtype=np.int64))
        dst_s = xp.asarray(np.array([c[1] for c in cols], dtype=np.int64))
        src_f = xp.asarray(np.array([cube.names.index(n) for n in names], dtype=np.int64))
        vals = xp.asarray(cube.values)[src_d[:, None, None], src_s[None, :, None],
                                       src_f[None, None, :]]
        out[dst_d[:, None, None], dst_s[None, :, None],
            xp.arange(len(names))[None, None, :]] = vals
    return out, names


def build_panel(
    store: Store,
    market: Market,
    names: list[str] | None = None,
    panel_config: PanelConfig | None = None,
    pool_config: PoolConfig | None = None,
    backend: Backend | str = "auto",
    factors: Any = None,
) -> FactorPanel:
    """Raw factors preprocessed over the market's universe, on ``backend``.

    The raw values come from ``factors``, an in-memory :class:`fbgpu.factors.FactorCube` on the
    same backend, when given (the device-resident route: nothing is read back from the store),
    else from the store's ``factors`` table; both give the same panel. The result's arrays live
    on the backend's device (cupy on the GPU); panel value ``[T]`` depends only on data up to T.
    """
    be = get_backend(backend) if not isinstance(backend, Backend) else backend
    xp = be.xp
    if factors is not None:
        raw, names = factor_values_from_cube(factors, market, names, xp)
    else:
        raw, names = load_factor_values(store, market, names)
    universe = market.universe(pool_config)
    values = preprocess_panel(
        xp.asarray(raw), xp.asarray(universe), xp.asarray(market.industry),
        xp.asarray(market.log_cap()), panel_config,
        n_industries=max(len(market.industries), 1),
    )
    return FactorPanel(list(market.dates), market.symbols, names, values, xp.asarray(universe),
                       meta={"backend": be.name})


def _host_copy_now(a: Any) -> Callable[[], np.ndarray]:
    """``write_panel``'s default crossing when no writer is given: the array's own host copy
    (cupy's ``.get()``, the stand-in's counted one; numpy: the array itself)."""
    host = a.get() if hasattr(a, "get") else np.asarray(a)
    return lambda: host


def write_panel(
    store: Store,
    panel: FactorPanel,
    *,
    config: object | None = None,
    window: int = 20,
    factors_table: str = "factors",
    skip_current: bool = True,
    writer: StoreWriteBehind | None = None,
    to_host: AsyncToHost | None = None,
) -> int:
    """Write ``panel`` as the wide table ``panel``, one partition per date; return how many
    partitions are (being) written.

    Each partition's manifest lists as inputs the ``factors`` partitions of the last ``window``
    trading days, the ``daily`` partition of its date and the ``securities`` master (what the
    value at T depends on), so a re-run skips the dates whose inputs, code and configuration are
    unchanged. Which dates to write is decided now, from the manifests (host metadata only).

    The values are written *behind* (:mod:`fbgpu.data.writebehind`): ``panel.values`` and
    ``panel.universe`` start their host copy through ``writer``'s crossing (in a run, the
    backend's ``to_host_async``: two sanctioned crossings for the whole panel) and the Arrow
    encoding and the atomic partition writes run on the writer's thread; nothing is read back.
    With ``writer`` the caller flushes it before anything reads the table; without, the call
    makes its own (its crossing ``to_host``, default the arrays' own host copy) and waits for it.
    """
    chash = config_hash(config) if config is not None else ""
    have_factors = set(store.dates(factors_table))
    has_securities = store.has("securities")
    todo: list[tuple[int, dt.date, dict[str, str]]] = []
    for t, d in enumerate(panel.dates):
        pairs = [(factors_table, x) for x in panel.dates[max(0, t - window + 1): t + 1]
                 if x in have_factors]
        pairs.append(("daily", d))
        if has_securities:  # listing dates decide the universe
            pairs.append(("securities", None))
        inputs = store.fingerprints(pairs)
        if skip_current and store.is_current(PANEL_TABLE, d, config_hash_=chash, inputs=inputs):
            continue
        todo.append((t, d, inputs))
    if not todo:
        return 0

    def write(host: list[np.ndarray]) -> None:
        vals, uni = host
        for t, d, inputs in todo:
            idx = np.flatnonzero(uni[t] & np.isfinite(vals[t]).any(axis=1))
            cols: dict[str, Any] = {
                "date": pa.array([d] * len(idx), type=pa.date32()),
                "symbol": pa.array(panel.symbols[idx].astype(str).tolist(), type=pa.string()),
            }
            for j, n in enumerate(panel.names):
                cols[n] = pa.array(vals[t, idx, j], type=pa.float64())
            store.write(PANEL_TABLE, d, pa.table(cols), config_hash_=chash, inputs=inputs)

    if writer is not None:
        writer.submit(PANEL_TABLE, None, [panel.values, panel.universe], write)
    else:
        with StoreWriteBehind(store, to_host or _host_copy_now, name="panel") as own:
            own.submit(PANEL_TABLE, None, [panel.values, panel.universe], write)
    return len(todo)


def read_panel(store: Store, names: list[str] | None = None,
               dates: list[dt.date] | None = None) -> FactorPanel:
    """Load the stored ``panel`` table as a host :class:`FactorPanel` (NaN where absent)."""
    dates = list(dates) if dates is not None else store.dates(PANEL_TABLE)
    if not dates:
        raise StoreError(f"store {store.root} has no panel table: run `fbgpu evaluate` first")
    names = list(names) if names is not None else factor_names(store, PANEL_TABLE)
    p = store.read_panel(PANEL_TABLE, dates, columns=names)
    values = np.stack([p.fields[n] for n in names], axis=-1)
    return FactorPanel(list(p.dates), p.symbols, names, values, p.present)
