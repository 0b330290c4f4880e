"""Raw partitions to daily factor values: :func:`compute_factors` and :func:`run_factors`.

Per day (days are independent: a day's values depend on that day's minute/trades/orders
partitions only, never on another day):

1. the stock universe is the sorted union of the symbols in that day's ``minute``, ``trades`` and
   ``orders`` partitions (whichever exist);
2. each needed source is read once (only the columns the factors use), moved to the backend, and
   wrapped in its family context (:mod:`fbgpu.factors.context`), which computes shared
   intermediates once;
3. each requested factor is computed for the stocks of its source and scattered into the
   ``[universe, factors]`` table; a stock absent from a source gets NaN for that family.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from fbgpu.data.store import DayTicks, MinuteDay, Store, StoreError, config_hash
from fbgpu.engine.backend import Backend, get_backend
from fbgpu.engine.segments import SegmentOps, check_offsets, segment_ops
from fbgpu.factors.config import FactorConfig
from fbgpu.factors.context import MinuteContext, OrderContext, TradeContext
from fbgpu.factors.registry import FACTORS, resolve_names
from fbgpu.progress import track

log = logging.getLogger(__name__)

Array = Any

SOURCES = ("minute", "trades", "orders")
#: Columns each tick source needs (``symbol`` is always read for the CSR runs).
TRADE_COLUMNS = ("ts", "price", "amount", "buy_order_id", "sell_order_id", "side")
ORDER_COLUMNS = ("ts", "price", "volume", "side", "order_type")
MINUTE_FIELDS = ("open", "high", "low", "close", "volume", "amount", "num_trades")
FACTORS_TABLE = "factors"


@dataclass
class FactorCube:
    """Daily factor values ``values[day, stock, factor]`` (float64, numpy or cupy), NaN = undefined.

    ``present[day, stock]`` says whether the stock was in that day's universe (it had minute,
    trade or order data); ``symbols`` is the sorted union over the days.
    """

    values: Array
    dates: list[dt.date]
    symbols: np.ndarray
    names: list[str]
    present: np.ndarray
    backend: str = "cpu"

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.values.shape)  # type: ignore[return-value]

    def to_numpy(self) -> np.ndarray:
        """The values as a host numpy array (a device->host copy on the GPU)."""
        v = self.values
        return v.get() if hasattr(v, "get") else np.asarray(v)

    def factor(self, name: str) -> np.ndarray:
        """``[days, stocks]`` values of one factor (host)."""
        return self.to_numpy()[:, :, self.names.index(name)]

    def to_pandas(self, layout: str = "wide") -> Any:
        """A pandas DataFrame of the present stock-days.

        ``wide``: index ``(date, symbol)``, one column per factor (alphalens/qlib style).
        ``long``: columns ``date, symbol, factor, value``.
        """
        import pandas as pd

        v = self.to_numpy()
        d_idx, s_idx = np.nonzero(self.present)
        index = pd.MultiIndex.from_arrays(
            [pd.to_datetime(np.asarray(self.dates, dtype="datetime64[D]")[d_idx]),
             self.symbols[s_idx]],
            names=["date", "symbol"],
        )
        wide = pd.DataFrame(v[d_idx, s_idx, :], index=index, columns=list(self.names))
        if layout == "wide":
            return wide
        if layout == "long":
            long = wide.melt(ignore_index=False, var_name="factor", value_name="value")
            return long.reset_index()
        raise ValueError(f"layout must be 'wide' or 'long', got {layout!r}")


@dataclass
class FactorRunSummary:
    """What :func:`run_factors` did."""

    dates_computed: list[dt.date] = field(default_factory=list)
    dates_skipped: list[dt.date] = field(default_factory=list)
    stock_days: int = 0
    factors: int = 0
    seconds: float = 0.0
    backend: str = ""
    #: With ``run_factors(..., keep=True)`` and every date computed (none skipped as current):
    #: the values as a :class:`FactorCube` on the backend's device, for the next stage to take
    #: in memory (:func:`fbgpu.panel.build_panel` ``factors=``).
    cube: FactorCube | None = None

    def line(self) -> str:
        return (
            f"factors: {len(self.dates_computed)} dates computed, {len(self.dates_skipped)} "
            f"up to date, {self.stock_days} stock-days x {self.factors} factors on "
            f"{self.backend} in {self.seconds:.1f}s"
        )


@dataclass
class DayFactors:
    """One day's values ``[universe, factors]`` (backend array) and its universe."""

    date: dt.date
    symbols: np.ndarray
    values: Array


def _as_date(d: dt.date | str) -> dt.date:
    if isinstance(d, dt.date):
        return d
    try:
        return dt.date.fromisoformat(str(d))
    except ValueError as e:
        raise ValueError(f"not a date (YYYY-MM-DD): {d!r}") from e


def _symbols_of(store: Store, table: str, date: dt.date) -> np.ndarray:
    col = store.read(table, date, ["symbol"]).column("symbol").combine_chunks()
    if pa.types.is_dictionary(col.type):
        used = np.unique(col.indices.to_numpy(zero_copy_only=False))
        return np.array(col.dictionary.take(pa.array(used)).to_pylist(), dtype=object)
    return np.array(sorted(set(col.to_pylist())), dtype=object)


def _positions(universe: np.ndarray, symbols: np.ndarray) -> np.ndarray:
    """Index of each of ``symbols`` in the sorted ``universe`` (all must be present)."""
    return np.searchsorted(universe, symbols).astype(np.int64)


def _lookup(haystack: np.ndarray, needles: np.ndarray) -> np.ndarray:
    """Index of each needle in ``haystack`` (sorted, unique), -1 where absent."""
    if len(haystack) == 0:
        return np.full(len(needles), -1, dtype=np.int64)
    pos = np.searchsorted(haystack, needles)
    pos = np.minimum(pos, len(haystack) - 1)
    found = haystack[pos] == needles
    return np.where(found, pos, -1).astype(np.int64)


@dataclass
class DayInputs:
    """One day's raw inputs on the host: the universe and each needed source (None if absent or
    not needed). ``source_symbols`` holds the symbols of every partition present that day."""

    date: dt.date
    universe: np.ndarray
    source_symbols: dict[str, np.ndarray]
    minute: MinuteDay | None = None
    trades: DayTicks | None = None
    orders: DayTicks | None = None

    @property
    def n_ticks(self) -> int:
        """Trades + orders rows held (for throughput figures)."""
        return sum(t.n_rows for t in (self.trades, self.orders) if t is not None)


def day_to_backend(day: DayInputs, backend: Backend) -> DayInputs:
    """``day`` with its arrays (minute fields, tick columns and offsets) on ``backend``'s device:
    the one host->device upload of the raw inputs. Symbols stay on the host (they index the
    universe, a host concern). On the CPU backend ``day`` is returned as it is.
    """
    if not backend.is_gpu:
        return day
    to = backend.xp.asarray
    minute = None
    if day.minute is not None:
        minute = MinuteDay(day.minute.date, day.minute.symbols,
                           {k: to(v) for k, v in day.minute.fields.items()})

    def ticks(t: DayTicks | None) -> DayTicks | None:
        if t is None:
            return None
        return DayTicks(t.date, t.symbols, to(t.offsets), {k: to(v) for k, v in t.columns.items()})

    return DayInputs(day.date, day.universe, day.source_symbols, minute, ticks(day.trades),
                     ticks(day.orders))


def load_day(store: Store, date: dt.date | str, names: Sequence[str] | None = None,
             symbols: Sequence[str] | None = None) -> DayInputs:
    """Read what the factors ``names`` need of ``date`` (only the columns they use; only the
    stocks ``symbols`` when given).

    Raises :class:`StoreError` when the store has no minute, trades or orders partition then.
    """
    d = _as_date(date)
    names = resolve_names(list(names) if names is not None else None)
    present = [t for t in SOURCES if store.has(t, d)]
    if not present:
        raise StoreError(f"store {store.root}: no minute, trades or orders partition for {d}")
    families = {FACTORS[n].family for n in names}
    need = {
        "minute": "minute" in families or "trade" in families,  # trade factors use r_k
        "trades": "trade" in families,
        "orders": "order" in families,
    }
    out = DayInputs(d, np.array([], dtype=object), {})

    def read(t: str) -> tuple[str, Any, np.ndarray]:
        if t == "minute" and need["minute"]:
            m = store.read_minute(d, symbols)
            return t, m, np.asarray(m.symbols, dtype=object)
        if t in ("trades", "orders") and need[t]:
            ticks = store.read_ticks(t, d, TRADE_COLUMNS if t == "trades" else ORDER_COLUMNS,
                                     symbols)
            check_offsets(ticks.offsets, ticks.n_rows, f"{t}/{d}")
            return t, ticks, np.asarray(ticks.symbols, dtype=object)
        syms = _symbols_of(store, t, d)
        return t, None, syms if symbols is None else np.intersect1d(
            syms, np.asarray(symbols, dtype=object))

    # The partitions are decoded concurrently (pyarrow releases the GIL while it decodes):
    # reading is most of a day's time on a GPU, and a large part on a many-core CPU.
    workers = min(len(present), os.cpu_count() or 1)
    if workers > 1:
        with ThreadPoolExecutor(workers, thread_name_prefix="fbgpu-read") as pool:
            parts = list(pool.map(read, present))
    else:
        parts = [read(t) for t in present]
    for t, data, syms in parts:
        if data is not None:
            setattr(out, t, data)
        out.source_symbols[t] = syms
    out.universe = np.array(sorted(set().union(*out.source_symbols.values())), dtype=object)
    return out


def compute_loaded_day(
    day: DayInputs,
    names: Sequence[str] | None = None,
    ops: SegmentOps | None = None,
    config: FactorConfig | None = None,
) -> DayFactors:
    """The factors ``names`` of an already loaded day, ``[universe, len(names)]`` on ``ops``'s
    backend (default: the CPU)."""
    names = resolve_names(list(names) if names is not None else None)
    cfg = config or FactorConfig()
    ops = ops or segment_ops("cpu")
    xp = ops.xp
    universe = day.universe
    col_of = {n: j for j, n in enumerate(names)}
    values = xp.full((len(universe), len(names)), xp.nan)

    def put(family: str, source: str, ctx: Any) -> None:
        wanted = [n for n in names if FACTORS[n].family == family]
        if not wanted:
            return
        pos = xp.asarray(_positions(universe, day.source_symbols[source]))
        for n in wanted:
            values[pos, col_of[n]] = FACTORS[n].compute(ctx)

    minute, trades, orders = day.minute, day.trades, day.orders
    minute_ctx = None
    if minute is not None:
        bars = {f: xp.asarray(minute.fields[f]) for f in MINUTE_FIELDS}
        minute_ctx = MinuteContext(ops, cfg, bars)
        put("minute", "minute", minute_ctx)
    if trades is not None and any(FACTORS[n].family == "trade" for n in names):
        ret = xp.full((trades.n_stocks, 240), xp.nan)
        if minute_ctx is not None and minute is not None:
            at = _lookup(np.asarray(minute.symbols, dtype=object),
                         np.asarray(trades.symbols, dtype=object))
            has = np.flatnonzero(at >= 0)
            if has.size:
                ret[xp.asarray(has)] = minute_ctx.ret[xp.asarray(at[has])]
        cols = {c: xp.asarray(trades.columns[c]) for c in TRADE_COLUMNS}
        put("trade", "trades", TradeContext(ops, cfg, xp.asarray(trades.offsets), cols, ret))
    if orders is not None:
        cols = {c: xp.asarray(orders.columns[c]) for c in ORDER_COLUMNS}
        put("order", "orders", OrderContext(ops, cfg, xp.asarray(orders.offsets), cols))
    return DayFactors(day.date, universe, values)


def compute_day(
    store: Store,
    date: dt.date | str,
    names: Sequence[str] | None = None,
    backend: Backend | str = "auto",
    config: FactorConfig | None = None,
    ops: SegmentOps | None = None,
    memory_budget: float | None = None,
) -> DayFactors:
    """All requested factors of one day, ``[universe, len(names)]`` on the backend.

    Reads only ``date``'s partitions of minute/trades/orders (:func:`load_day`), then computes
    (:func:`compute_loaded_day`). With ``memory_budget`` (bytes) the day is processed in stock
    chunks sized by :func:`stock_chunks`; stock-days are independent, so the values are
    identical to a whole-day run.
    """
    if ops is None:
        ops = segment_ops(get_backend(backend))
    chunks = stock_chunks(store, date, memory_budget) if memory_budget else None
    if chunks is None:
        return compute_loaded_day(load_day(store, date, names), names, ops, config)
    parts = [compute_loaded_day(load_day(store, date, names, list(c)), names, ops, config)
             for c in chunks]
    return DayFactors(_as_date(date), np.concatenate([p.symbols for p in parts]),
                      ops.xp.concatenate([p.values for p in parts], axis=0))


#: Bytes a stock-day row costs while it is being processed (the columns read, CSR and masks,
#: the family's intermediates), by source; measured on the ``full-day`` preset, with headroom.
WORKING_BYTES_PER_ROW = {"trades": 400, "orders": 300, "minute": 400}


def memory_budget_for(budget: float | str | None, backend: Backend) -> float | None:
    """Bytes for a day's working set: ``budget`` itself, or with ``"auto"`` half of what is free
    now (device memory on the GPU backend, available host memory on the CPU)."""
    if budget != "auto":
        return float(budget) if budget else None
    if backend.is_gpu:
        free, _ = backend.xp.cuda.runtime.memGetInfo()
        return 0.5 * free
    return 0.5 * os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def stock_chunks(store: Store, date: dt.date | str,
                 memory_budget: float) -> list[np.ndarray] | None:
    """Split a day's stocks (sorted) into chunks whose working memory fits ``memory_budget``
    bytes, estimated from the partitions' row counts; None when the whole day fits."""
    d = _as_date(date)
    present = [t for t in SOURCES if store.has(t, d)]
    universe = np.array(sorted(set().union(*[set(_symbols_of(store, t, d)) for t in present])),
                        dtype=object)
    if len(universe) == 0:
        return None
    need = 0
    for t in present:
        m = store.manifest(t, d)
        need += (m.rows if m else 0) * WORKING_BYTES_PER_ROW[t]
    per_stock = max(need / len(universe), 1.0)
    n_chunk = max(1, int(memory_budget // per_stock))
    if n_chunk >= len(universe):
        return None
    return [universe[i:i + n_chunk] for i in range(0, len(universe), n_chunk)]


def compute_factors(
    store: Store | str,
    dates: Sequence[dt.date | str],
    names: Sequence[str] | None = None,
    backend: Backend | str = "auto",
    config: FactorConfig | None = None,
    progress: bool = False,
) -> FactorCube:
    """Daily values of the factors ``names`` (default: all 27) for ``dates``: a :class:`FactorCube`.

    The cube stays on the backend (cupy on the GPU). Symbols are the sorted union over the days;
    ``present`` marks the stock-days in each day's universe.
    """
    store = store if isinstance(store, Store) else Store(store)
    names = resolve_names(list(names) if names is not None else None)
    b = get_backend(backend)
    ops = segment_ops(b)
    dates = [_as_date(d) for d in dates]
    it = track(dates, "factors") if progress else dates
    days = [compute_day(store, d, names, b, config, ops) for d in it]
    return assemble_cube(days, names, b)


def assemble_cube(days: Sequence[DayFactors], names: list[str], backend: Backend) -> FactorCube:
    """Days' values stacked into a :class:`FactorCube` on ``backend``'s device (symbols: the
    sorted union; NaN where a stock is not in a day's universe)."""
    xp = backend.xp
    symbols = np.array(sorted(set().union(*[set(x.symbols) for x in days])), dtype=object)
    values = xp.full((len(days), len(symbols), len(names)), xp.nan)
    present = np.zeros((len(days), len(symbols)), dtype=bool)
    for i, day in enumerate(days):
        pos = _positions(symbols, day.symbols)
        present[i, pos] = True
        values[i, xp.asarray(pos)] = day.values
    return FactorCube(values, [d.date for d in days], symbols, list(names), present, backend.name)


def input_dates(store: Store, start: dt.date | str | None, end: dt.date | str | None
                ) -> list[dt.date]:
    """Dates in ``[start, end]`` with a minute, trades or orders partition."""
    lo = _as_date(start) if start is not None else dt.date.min
    hi = _as_date(end) if end is not None else dt.date.max
    if lo > hi:
        raise ValueError(f"start {lo} is after end {hi}")
    all_dates: set[dt.date] = set()
    for t in SOURCES:
        all_dates.update(store.dates(t))
    return sorted(d for d in all_dates if lo <= d <= hi)


def run_factors(
    store: Store | str,
    start: dt.date | str | None = None,
    end: dt.date | str | None = None,
    names: Sequence[str] | None = None,
    backend: Backend | str = "auto",
    config: FactorConfig | None = None,
    progress: bool = True,
    memory_budget: float | str | None = None,
    keep: bool = False,
) -> FactorRunSummary:
    """Compute and store the ``factors`` table for every input date in ``[start, end]``.

    ``memory_budget`` (bytes, ``"auto"`` = half the free host/device memory, None = whole days)
    processes a day in stock chunks that fit it (:func:`stock_chunks`); the values do not depend
    on it, so it is not part of the config hash. ``keep`` also returns the computed values in
    memory (``summary.cube``, on the backend's device) when no date was skipped.

    One partition per date: ``date, symbol`` and one float64 column per factor, with a manifest
    holding the config hash (configuration + factor selection) and the content hashes of the
    day's minute/trades/orders partitions. A date whose partition is current (same code, config
    and inputs) is skipped, so re-running is cheap and an interrupted run resumes.
    """
    t0 = time.perf_counter()
    store = store if isinstance(store, Store) else Store(store)
    names = resolve_names(list(names) if names is not None else None)
    cfg = config or FactorConfig()
    b = get_backend(backend)
    ops = segment_ops(b)
    dates = input_dates(store, start, end)
    if not dates:
        raise ValueError(
            f"store {store.root} has no minute/trades/orders data between {start} and {end}"
        )
    chash = config_hash({"config": cfg.model_dump(mode="json"), "names": names})
    summary = FactorRunSummary(factors=len(names), backend=b.name)
    kept: list[DayFactors] = []
    for d in track(dates, "factors") if progress else dates:
        inputs = store.fingerprints([(t, d) for t in SOURCES if store.has(t, d)])
        if store.is_current(FACTORS_TABLE, d, config_hash_=chash, inputs=inputs):
            summary.dates_skipped.append(d)
            continue
        day = compute_day(store, d, names, b, cfg, ops, memory_budget_for(memory_budget, b))
        host = b.to_host(day.values)
        cols: dict[str, Any] = {
            "date": pa.array([d] * len(day.symbols), pa.date32()),
            "symbol": pa.array(list(day.symbols), pa.string()),
        }
        for j, n in enumerate(names):
            cols[n] = pa.array(host[:, j], pa.float64())
        store.write(FACTORS_TABLE, d, pa.table(cols), config_hash_=chash, inputs=inputs,
                    extra={"backend": b.name, "device": b.device})
        summary.dates_computed.append(d)
        summary.stock_days += len(day.symbols)
        if keep:
            kept.append(day)
    if keep and kept and not summary.dates_skipped:
        summary.cube = assemble_cube(kept, names, b)
    summary.seconds = time.perf_counter() - t0
    log.info(summary.line())
    return summary
