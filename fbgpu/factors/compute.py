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

import contextlib
import datetime as dt
import itertools
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from fbgpu.data.schemas import SCHEMAS
from fbgpu.data.store import (
    DayTicks,
    MinuteDay,
    Store,
    StoreError,
    config_hash,
    date_column,
    float64_column,
    prefault_async,
    symbol_column,
)
from fbgpu.data.writebehind import StoreWriteBehind
from fbgpu.engine.backend import Backend, StagingPool, array_module, get_backend, index_to_device
from fbgpu.engine.guard import explicit_uploads_only
from fbgpu.engine.segments import SegmentOps, check_offsets, segment_ops
from fbgpu.factors.config import FactorConfig
from fbgpu.factors.context import CancelTicks, MinuteContext, OrderContext, TradeContext
from fbgpu.factors.fused import prime
from fbgpu.factors.registry import FACTORS, FactorSpec, resolve_names
from fbgpu.factors.user import load_modules, module_of
from fbgpu.progress import track

log = logging.getLogger(__name__)

Array = Any

SOURCES = ("minute", "trades", "orders")
#: Columns each tick source needs (``symbol`` is always read for the CSR runs).
TRADE_COLUMNS = ("ts", "price", "amount", "buy_order_id", "sell_order_id", "side")
ORDER_COLUMNS = ("ts", "price", "volume", "side", "order_type")
#: Columns of the cancellations, read when a requested factor has ``cancels=True``.
CANCEL_COLUMNS = ("ts", "order_id", "volume", "side")
#: Every tick column a *user* factor may read (``ctx.col(name)``): when a requested factor of a
#: family is a user factor, the family's table is read with these, not only the built-ins' needs.
USER_TRADE_COLUMNS = ("seq", "ts", "price", "volume", "amount", "buy_order_id", "sell_order_id",
                      "side")
USER_ORDER_COLUMNS = ("seq", "ts", "order_id", "price", "volume", "side", "order_type")


def tick_columns(table: str, names: Sequence[str]) -> tuple[str, ...]:
    """Columns of ``table`` ("trades" or "orders") read for the factors ``names``: what the
    built-ins use, or every column when a user factor of that family is among ``names``."""
    family = "trade" if table == "trades" else "order"
    user = any(FACTORS[n].family == family and not FACTORS[n].builtin for n in names)
    if table == "trades":
        return USER_TRADE_COLUMNS if user else TRADE_COLUMNS
    return USER_ORDER_COLUMNS if user else ORDER_COLUMNS
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
    if len(symbols) == len(universe) and bool((symbols == universe).all()):
        # the usual case (every source has every stock): no binary search over strings
        # (~3 ms for the full-day universe's object array, once per family)
        return np.arange(len(universe), dtype=np.int64)
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
    #: Cancellations, CSR over ``orders``' stocks (:func:`align_ticks`); only when needed.
    cancels: DayTicks | None = None
    #: Whether a compute has asked for the mapped columns to be paged in (``store.prefault``):
    #: once per loaded day; a day computed again (another factor selection) finds them mapped.
    paged_in: bool = field(default=False, repr=False, compare=False)

    @property
    def n_ticks(self) -> int:
        """Trades + orders rows held (for throughput figures)."""
        return sum(t.n_rows for t in (self.trades, self.orders) if t is not None)


def _day_arrays(day: DayInputs) -> list[Any]:
    """The arrays of ``day`` that live on the device, in a fixed order (:func:`_with_arrays`):
    the minute fields, then per tick source (trades, orders, cancels) its offsets and columns."""
    out: list[Any] = []
    if day.minute is not None:
        out += list(day.minute.fields.values())
    for t in (day.trades, day.orders, day.cancels):
        if t is not None:
            out += [t.offsets, *t.columns.values()]
    return out


def _with_arrays(day: DayInputs, arrays: Sequence[Any]) -> DayInputs:
    """``day`` with its device arrays replaced, in :func:`_day_arrays`' order."""
    it = iter(arrays)
    minute = None
    if day.minute is not None:
        minute = MinuteDay(day.minute.date, day.minute.symbols,
                           {k: next(it) for k in day.minute.fields})

    def ticks(t: DayTicks | None) -> DayTicks | None:
        if t is None:
            return None
        offsets = next(it)
        return DayTicks(t.date, t.symbols, offsets, {k: next(it) for k in t.columns})

    trades, orders, cancels = ticks(day.trades), ticks(day.orders), ticks(day.cancels)
    return DayInputs(day.date, day.universe, day.source_symbols, minute, trades, orders, cancels)


def upload_day(day: DayInputs, backend: Backend, staging: StagingPool | None = None,
               after: Any = None) -> Callable[[], DayInputs]:
    """Start the one host->device upload of ``day``'s raw inputs (minute fields, tick columns
    and offsets), one :meth:`Backend.to_device_async` crossing; the returned function orders
    the caller's stream after it and returns the day on the device. Symbols stay on the host
    (they index the universe, a host concern). On the CPU backend: ``day`` itself, no copy."""
    if not backend.is_gpu:
        return lambda: day
    pending = backend.to_device_async(_day_arrays(day), staging, after)
    return lambda: _with_arrays(day, pending())


def day_to_backend(day: DayInputs, backend: Backend,
                   staging: StagingPool | None = None) -> DayInputs:
    """``day`` with its arrays on ``backend``'s device (:func:`upload_day`, waited for). On
    the CPU backend ``day`` is returned as it is.

    ``staging``: the run's :class:`StagingPool` (:func:`run_staging`), so repeated uploads
    reuse its host buffers; without it a one-slot pool is allocated for this call.

    The upload first waits for all the work queued on the compute stream so far: its arrays
    are allocated from the upload stream's pool, which may hand out memory that an earlier
    day's inputs (uploaded on that stream) held while queued kernels still read them."""
    return upload_day(day, backend, staging,
                      after=backend.compute_event() if backend.is_gpu else None)()


def run_staging(backend: Backend) -> StagingPool | None:
    """The one staging pool of a run on ``backend`` (two slots: double buffering), handed to
    its :class:`DayPrefetch`, :func:`compute_day` and :func:`day_to_backend`, so the pinned
    host buffers are allocated once per slot and grow to the run's largest day or chunk
    rather than being allocated again for every day; None on the CPU backend (no upload).
    The pool is used by one thread at a time: the run's reader threads follow each other."""
    return backend.staging_pool(2) if backend.is_gpu else None


def _resident(day: DayInputs, backend: Backend, staging: StagingPool | None = None) -> DayInputs:
    """``day`` on ``backend``'s device: uploaded (:func:`day_to_backend` through ``staging``,
    one crossing) when any of its arrays is on the host, else ``day`` itself (a prefetched
    day, or the CPU)."""
    if not backend.is_gpu or all(array_module(a) is not np for a in _day_arrays(day)):
        return day
    return day_to_backend(day, backend, staging)


def align_ticks(ticks: DayTicks, symbols: np.ndarray) -> DayTicks:
    """``ticks`` re-laid as CSR over ``symbols`` (sorted): a symbol without rows gets an empty
    segment, rows of symbols not in ``symbols`` are dropped (host arrays)."""
    symbols = np.asarray(symbols, dtype=object)
    at = _lookup(symbols, np.asarray(ticks.symbols, dtype=object))
    counts = np.diff(np.asarray(ticks.offsets, dtype=np.int64))
    keep = at >= 0
    columns = ticks.columns
    if not keep.all():
        rows = np.repeat(keep, counts)
        columns = {k: v[rows] for k, v in columns.items()}
    per_symbol = np.zeros(len(symbols), dtype=np.int64)
    per_symbol[at[keep]] = counts[keep]
    offsets = np.concatenate([[0], np.cumsum(per_symbol)]).astype(np.int64)
    return DayTicks(ticks.date, symbols, offsets, columns)


#: Environment variable: ``0`` keeps the host (pyarrow) read where cudf is installed.
CUDF_ENV = "FBGPU_CUDF"


def device_reader(backend: Backend) -> Any:
    """The ``cudf`` module when the GPU decode of Parquet partitions can be used with
    ``backend`` (a GPU backend, cudf importable, ``FBGPU_CUDF`` not ``0``), else None."""
    if not backend.is_gpu or os.environ.get(CUDF_ENV, "1") == "0":
        return None
    try:
        import cudf
    except Exception:  # not installed (the usual case), or a broken CUDA install
        return None
    return cudf


def load_day(store: Store, date: dt.date | str, names: Sequence[str] | None = None,
             symbols: Sequence[str] | None = None, cudf: Any = None) -> DayInputs:
    """Read what the factors ``names`` need of ``date`` (only the columns they use; only the
    stocks ``symbols`` when given).

    ``cudf`` (:func:`device_reader`): the trades' and orders' Parquet partitions are decoded
    on the GPU, their columns device arrays (:meth:`Store.read_ticks`); everything else is
    read on the host.

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
        "cancels": any(FACTORS[n].cancels for n in names),
    }
    if need["cancels"] and store.has("cancels", d):
        present.append("cancels")
    out = DayInputs(d, np.array([], dtype=object), {})

    def read(t: str) -> tuple[str, Any, np.ndarray]:
        if t == "minute" and need["minute"]:
            m = store.read_minute(d, symbols)
            return t, m, np.asarray(m.symbols, dtype=object)
        if t == "cancels":
            ticks = store.read_ticks(t, d, CANCEL_COLUMNS, symbols)
            check_offsets(ticks.offsets, ticks.n_rows, f"{t}/{d}")
            return t, ticks, np.asarray(ticks.symbols, dtype=object)
        if t in ("trades", "orders") and need[t]:
            ticks = store.read_ticks(t, d, tick_columns(t, names), symbols, cudf=cudf)
            check_offsets(ticks.offsets, ticks.n_rows, f"{t}/{d}")
            return t, ticks, np.asarray(ticks.symbols, dtype=object)
        syms = _symbols_of(store, t, d)
        return t, None, syms if symbols is None else np.intersect1d(
            syms, np.asarray(symbols, dtype=object))

    # The partitions are decoded concurrently (pyarrow releases the GIL while it decodes):
    # reading is most of a day's time on a GPU, and a large part on a many-core CPU.
    workers = min(len(present), os.cpu_count() or 1)
    if workers > 1:
        # The readers' lazy import, done once here: racing imports of one module serialise
        # on its lock anyway, and interleave ``-X importtime``'s process-wide accounting
        # (a negative self time in benchmarks/bench_startup.py).
        import fbgpu.data.tickread  # noqa: F401

        with ThreadPoolExecutor(workers, thread_name_prefix="fbgpu-read") as pool:
            parts = list(pool.map(read, present))
    else:
        parts = [read(t) for t in present]
    for t, data, syms in parts:
        if data is not None:
            setattr(out, t, data)
        if t != "cancels":  # cancellations ride on the orders' stocks; not a universe source
            out.source_symbols[t] = syms
    if out.cancels is not None:
        out.cancels = (align_ticks(out.cancels, out.orders.symbols)
                       if out.orders is not None else None)
    out.universe = np.array(sorted(set().union(*out.source_symbols.values())), dtype=object)
    return out


def compute_loaded_day(
    day: DayInputs,
    names: Sequence[str] | None = None,
    ops: SegmentOps | None = None,
    config: FactorConfig | None = None,
) -> DayFactors:
    """The factors ``names`` of an already loaded day, ``[universe, len(names)]`` on ``ops``'s
    backend (default: the CPU).

    On a device backend a day still on the host is first uploaded through :func:`upload_day`
    (one ``to_device`` crossing); the compute itself runs under
    :func:`fbgpu.engine.guard.explicit_uploads_only`: the only other uploads are the small
    index arrays (a source's positions in the universe, the minute rows of the trades'
    stocks), through :func:`fbgpu.engine.backend.index_to_device`. The stand-in device
    refuses any other ``xp.asarray`` of host data here."""
    names = resolve_names(list(names) if names is not None else None)
    cfg = config or FactorConfig()
    ops = ops or segment_ops("cpu")
    if ops.xp is not np:  # the CPU backend computes on the host arrays as they are
        day = _resident(day, _device_backend(ops))
    with explicit_uploads_only():
        return _compute_resident_day(day, names, ops, cfg)


def _compute_resident_day(day: DayInputs, names: list[str], ops: SegmentOps,
                          cfg: FactorConfig) -> DayFactors:
    """:func:`compute_loaded_day` of a day whose arrays are on ``ops``'s device."""
    xp = ops.xp
    universe = day.universe
    col_of = {n: j for j, n in enumerate(names)}
    values = xp.full((len(universe), len(names)), xp.nan)

    def put(family: str, source: str, ctx: Any) -> None:
        wanted = [n for n in names if FACTORS[n].family == family]
        if not wanted:
            return
        symbols = np.asarray(day.source_symbols[source], dtype=object)
        pos = index_to_device(xp, _positions(universe, symbols))
        prime(ctx, wanted)  # the fused family pass, where the backend has one (fused.py)
        for n in wanted:
            spec = FACTORS[n]
            if spec.cancels and getattr(ctx, "cancels", None) is None:
                log.warning("%s: no cancels partition: factor %s is NaN", day.date, n)
                continue
            values[pos, col_of[n]] = evaluate_factor(spec, ctx, day.date, symbols)

    minute, trades, orders = day.minute, day.trades, day.orders
    # The first two families' mapped columns are paged in on a side thread while numba and the
    # contexts set up, instead of page faults inside the kernels (store.prefault; off:
    # FBGPU_PREFAULT=0). Not the orders': their pass runs last, after the trade family's
    # intermediates are freed, so faulting them in then keeps the peak RSS where it was.
    if xp is np and not day.paged_in:  # host arrays: the CPU backend (never a device's)
        prefault_async([*(minute.fields.values() if minute is not None else ()),
                        *(trades.columns.values() if trades is not None else ())])
        day.paged_in = True
    # The day's arrays are on ops's device already (compute_loaded_day uploaded a host day;
    # on the CPU they are the host arrays themselves): no xp.asarray of them here.
    minute_ctx = None
    if minute is not None:
        minute_ctx = MinuteContext(ops, cfg, {f: minute.fields[f] for f in MINUTE_FIELDS})
        put("minute", "minute", minute_ctx)
    if trades is not None and any(FACTORS[n].family == "trade" for n in names):
        at = (_lookup(np.asarray(minute.symbols, dtype=object),
                      np.asarray(trades.symbols, dtype=object))
              if minute_ctx is not None and minute is not None else None)
        if at is not None and at.shape[0] == minute_ctx.S and bool(
                (at == np.arange(at.shape[0])).all()):
            # The same stocks in the same order (the usual day): the minute context's returns
            # themselves, no [S, 240] fill and gather. The minute factors are done by now, and
            # the trade family only reads them.
            ret = minute_ctx.ret
        else:
            ret = xp.full((trades.n_stocks, 240), xp.nan)
            has = np.flatnonzero(at >= 0) if at is not None else np.zeros(0, dtype=np.int64)
            if has.size:
                ret[index_to_device(xp, has)] = minute_ctx.ret[index_to_device(xp, at[has])]
        put("trade", "trades", TradeContext(ops, cfg, trades.offsets, dict(trades.columns), ret))
    if orders is not None:
        cancels = None
        if day.cancels is not None:
            cancels = CancelTicks(ops, cfg, day.cancels.offsets, dict(day.cancels.columns))
        put("order", "orders", OrderContext(ops, cfg, orders.offsets, dict(orders.columns),
                                            cancels))
    return DayFactors(day.date, universe, values)


def _device_backend(ops: SegmentOps, backend: Backend | str | None = None) -> Backend:
    """The backend whose device ``ops`` computes on, for an upload to it: ``backend`` when it
    is that one (a caller's, e.g. a recording test backend), else one built on ``ops.xp``
    (the upload needs only the namespace)."""
    if isinstance(backend, Backend) and backend.xp is ops.xp:
        return backend
    if ops.xp is np:
        return get_backend("cpu")
    return Backend("gpu", ops.xp, f"device of {getattr(ops.xp, '__name__', ops.xp)}")


class FactorComputeError(RuntimeError):
    """A factor raised, or returned something other than one float per stock."""


def _describe(spec: FactorSpec) -> str:
    """``factor 'name'`` (plus ``(user module PATH)`` for a user factor), for messages."""
    from fbgpu.factors.user import origin_of

    return f"factor {spec.name!r}" + ("" if spec.builtin else
                                      f" (user module {origin_of(spec.module)})")


def _check_output(spec: FactorSpec, ctx: Any, out: Any) -> Any:
    """``out`` if it is a float array of shape ``[ctx.S]`` on the context's device, else a
    :class:`FactorComputeError` naming what is wrong (a host array on the GPU backend would be
    a host round trip; an integer or boolean result is almost always a forgotten ratio)."""
    from fbgpu.engine.backend import array_module

    where = _describe(spec)
    if array_module(out) is not ctx.xp or not hasattr(out, "shape"):
        raise FactorComputeError(
            f"{where} returned {type(out).__module__}.{type(out).__name__}, not an array of "
            f"the context's device ({getattr(ctx.xp, '__name__', ctx.xp)}): compute with ctx.xp "
            "and ctx.ops, and do not move data to the host")
    if tuple(out.shape) != (ctx.S,):
        raise FactorComputeError(
            f"{where} returned shape {tuple(out.shape)}; it must be ({ctx.S},): one value per "
            "stock of the context")
    if out.dtype.kind != "f":
        raise FactorComputeError(
            f"{where} returned dtype {out.dtype}; it must be a float (float64) array")
    return out


def evaluate_factor(spec: FactorSpec, ctx: Any, date: dt.date, symbols: np.ndarray) -> Any:
    """``spec.compute(ctx)``, checked (:func:`_check_output`). When it raises, the stocks are
    bisected on fresh sub-contexts to name the first stock-day that fails, and a
    :class:`FactorComputeError` says which factor, module, date and stock."""
    try:
        return _check_output(spec, ctx, spec.compute(ctx))
    except FactorComputeError:
        raise
    except Exception as e:
        where = _describe(spec)
        stock = _first_failing_stock(spec, ctx, symbols)
        at = f"{stock} on {date}" if stock is not None else f"{date} ({ctx.S} stocks)"
        raise FactorComputeError(f"{where} failed for {at}: {type(e).__name__}: {e}") from e


def _first_failing_stock(spec: FactorSpec, ctx: Any, symbols: np.ndarray) -> str | None:
    """The first stock whose one-stock context makes ``spec`` raise (None when no single stock
    does: the failure needs the whole cross-section)."""
    lo, hi = 0, int(ctx.S)

    def fails(a: int, b: int) -> bool:
        try:
            spec.compute(ctx.subset(a, b))
        except Exception:
            return True
        return False

    if hi == 0 or not fails(lo, hi):
        return None
    while hi - lo > 1:  # invariant: [lo, hi) fails
        mid = (lo + hi) // 2
        if fails(lo, mid):
            hi = mid
        elif fails(mid, hi):
            lo = mid
        else:
            return None
    return str(symbols[lo])


def compute_day(
    store: Store,
    date: dt.date | str,
    names: Sequence[str] | None = None,
    backend: Backend | str = "auto",
    config: FactorConfig | None = None,
    ops: SegmentOps | None = None,
    memory_budget: float | None = None,
    loaded: DayInputs | None = None,
    staging: StagingPool | None = None,
) -> DayFactors:
    """All requested factors of one day, ``[universe, len(names)]`` on the backend.

    ``loaded``: the day's inputs already read (``load_day(store, date, names)``, e.g. by a
    :class:`DayPrefetch` reader thread); used when the day is not split into chunks.
    ``staging``: the run's staging pool (:func:`run_staging`) for the uploads on a device;
    without it one is allocated for this day.

    Reads only ``date``'s partitions of minute/trades/orders (:func:`load_day`), then computes
    (:func:`compute_loaded_day`). With ``memory_budget`` (bytes the whole process may use,
    its :func:`fixed_footprint` included) the day is processed in stock chunks sized by
    :func:`stock_chunks`; stock-days are independent, so the values are identical to a
    whole-day run. A budget below the footprint plus the heaviest stock-day's need (plus, on
    a device, the next stock-day's raw inputs read ahead) raises :class:`MemoryBudgetError`.

    On a device every read reaches :func:`compute_loaded_day` through the upload crossing:
    chunk ``k + 1`` is read and its upload started (:class:`DayPrefetch`) while chunk ``k``
    computes; a whole day not prefetched is uploaded with :func:`day_to_backend`.
    """
    if ops is None:
        ops = segment_ops(get_backend(backend))
    names = resolve_names(list(names) if names is not None else None)
    dev = _device_backend(ops, backend)
    # On a device chunk k+1 is read ahead (below): the planner counts its raw inputs.
    host = ops.xp is np
    # On the CPU the budget is host memory, where a Parquet day's chunk reads decode whole row
    # groups (a device budget holds device arrays only).
    chunks = (stock_chunks(store, date, memory_budget,
                           fixed_footprint(not host, user_factors=bool(
                               config is not None and config.modules)),
                           read_ahead=dev.is_gpu,
                           per_row=HOST_WORKING_BYTES_PER_ROW if host else WORKING_BYTES_PER_ROW,
                           read_allowance=parquet_read_bytes(store, date) if host else 0.0)
              if memory_budget else None)
    if chunks is None:
        day = loaded if loaded is not None else load_day(store, date, names)
        return compute_loaded_day(_resident(day, dev, staging), names, ops, config)
    # On a device, chunk k+1 is read and its upload started while chunk k computes (its raw
    # inputs are then resident beside chunk k's working memory); on the CPU the chunks are
    # read one at a time, as the budget there is host memory. The chunks are read in stock
    # order, so a Parquet row group that one chunk ends inside is decoded once for two.
    d = _as_date(date)
    parts = []
    with store.chunked_reads(), DayPrefetch(
            store, [((d, k), names) for k in range(len(chunks))], enabled=dev.is_gpu,
            backend=dev, symbols=[list(c) for c in chunks], staging=staging) as ahead:
        for k, c in enumerate(chunks):
            day = ahead.take((d, k))
            if day is None:
                day = _resident(load_day(store, d, names, list(c)), dev, staging)
            parts.append(compute_loaded_day(day, names, ops, config))
    return DayFactors(d, np.concatenate([p.symbols for p in parts]),
                      ops.xp.concatenate([p.values for p in parts], axis=0))


class DayPrefetch:
    """Reads days ahead on one reader thread: while day ``k`` computes, day ``k + 1``'s
    :func:`load_day` runs (pyarrow and numpy release the GIL while they decode, copy or fault
    pages in) and, on a GPU backend (``backend``), its upload starts too (:func:`upload_day`
    through a two-slot :class:`StagingPool`: pinned buffers and a side stream on cupy), so
    :meth:`take` hands back the day already on the device. ``days``: ``(date, names)`` in the
    order they will be taken; :meth:`take` returns a date's inputs (waiting for them; a read
    error is raised there, for that date) and starts the next read. Disabled, :meth:`take`
    returns None (the caller reads).

    The stock chunks of a memory-budgeted day (:func:`compute_day`) use the same reader:
    ``days`` then holds ``((date, k), names)`` (the key :meth:`take` is given: the date, or a
    ``(date, chunk)`` pair) and ``symbols`` the stocks of each entry.

    ``staging``: the run's pool (:func:`run_staging`), shared with the run's other uploads;
    without it the prefetcher allocates its own two-slot pool.

    Device memory: the upload of day ``k + 1`` allocates its arrays from the side stream's
    pool, which may hand out memory that an earlier day's inputs used; it therefore waits for
    an event of the compute stream recorded in ``take(k)``, when all of day ``k - 1``'s work
    had been queued (not day ``k``'s: the copy overlaps day ``k``'s compute). To make that
    enough, the prefetcher keeps the inputs it handed out until the next :meth:`take` has
    recorded its event, so a day's inputs are freed only after every kernel reading them
    was queued before an event the next upload waits on. Hence a day returned by
    :meth:`take` must not be given new device work after the following :meth:`take`.
    """

    def __init__(self, store: Store, days: Sequence[tuple[Any, Sequence[str]]],
                 enabled: bool = True, backend: Backend | None = None,
                 symbols: Sequence[Sequence[str] | None] | None = None,
                 staging: StagingPool | None = None) -> None:
        self.store = store
        self.days = list(days)
        self.symbols = list(symbols) if symbols is not None else [None] * len(self.days)
        self.enabled = enabled and len(self.days) > 1
        self.backend = backend if backend is not None and backend.is_gpu else None
        if staging is None and self.backend is not None:
            staging = run_staging(self.backend)
        self.staging = staging
        self.cudf = device_reader(self.backend) if self.backend is not None else None
        self._pool: ThreadPoolExecutor | None = None
        self._futures: dict[Any, Any] = {}
        self._next = 0
        self._held: DayInputs | None = None

    def __enter__(self) -> DayPrefetch:
        if self.enabled:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="fbgpu-prefetch")
            self._submit(self.backend.compute_event() if self.backend is not None else None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            for f in self._futures.values():
                f.cancel()
            self._pool.shutdown(wait=True)
            self._pool = None
        self._futures.clear()
        self._held = None

    def _read(self, key: Any, names: list[str], symbols: list[str] | None,
              after: Any) -> Callable[[], DayInputs]:
        """The reader thread's job: read ``key``'s day (its ``symbols`` only, when given),
        start its upload (GPU backend)."""
        d = key[0] if isinstance(key, tuple) else key
        day = load_day(self.store, d, names, symbols, cudf=self.cudf)
        if self.backend is None:
            return lambda: day
        return upload_day(day, self.backend, self.staging, after)

    def _submit(self, after: Any) -> None:
        if self._pool is not None and self._next < len(self.days):
            key, names = self.days[self._next]
            self._futures[key] = self._pool.submit(
                self._read, key, list(names), self.symbols[self._next], after)
            self._next += 1

    def take(self, date: Any) -> DayInputs | None:
        """The inputs of ``date`` (a date, or a ``(date, chunk)`` key; read ahead, on the
        device with a GPU backend), or None when prefetching is off or ``date`` was not read
        ahead; the next entry's read starts."""
        fut = self._futures.pop(date, None)
        if fut is None:
            return None
        # The previous day's work is all queued now: the next upload waits for this event
        # only, and the previous day's inputs may be freed after it (class docstring).
        after = self.backend.compute_event() if self.backend is not None else None
        self._held = None
        self._submit(after)
        day = fut.result()()  # the compute stream waits for the upload (not the host)
        if self.backend is not None:
            self._held = day
        return day


#: Bytes a stock-day row costs on a device while it is being processed (the columns read, CSR
#: and masks, the family's intermediates), by source; measured on the ``full-day`` preset when
#: the engine made whole-column intermediates, with headroom (never re-measured on a GPU).
WORKING_BYTES_PER_ROW = {"trades": 400, "orders": 300, "minute": 400}

#: The same for the CPU engine, whose family passes are fused and whose trade pass works over
#: groups of ~1 M trades with one reused scratch: resident bytes a row adds while its family
#: computes, measured on the ``full-day`` preset with both store formats (peak RSS minus the
#: RSS at the day's start, one family at a time: minute 175 / 94 bytes a bar, trades ~31 / 43
#: beyond the minute bars, orders 25 / 26, Arrow IPC / Parquet; docs/scale.md), x ~1.5-2 for
#: headroom. A Parquet chunk also decodes whole row groups: :data:`PARQUET_READ_BYTES`.
HOST_WORKING_BYTES_PER_ROW = {"trades": 64, "orders": 48, "minute": 280}

#: Bytes a stock-day row occupies as raw input on the device (and in the host staging slot)
#: once uploaded: the schema's widths of every column a factor of the source may read (the
#: user-factor column sets, an upper bound of the built-ins'): trades 57, orders 42, minute 52
#: (7 fields of a minute bar). What chunk ``k + 1``'s read-ahead adds beside chunk ``k``.
RAW_BYTES_PER_ROW = {
    t: sum(SCHEMAS[t].field(c).type.byte_width for c in cols)
    for t, cols in (("trades", USER_TRADE_COLUMNS), ("orders", USER_ORDER_COLUMNS),
                    ("minute", MINUTE_FIELDS))}


#: Resident bytes the CPU engine adds when it is first used through numba's JIT (numba,
#: llvmlite and the compiled kernels loaded from numba's cache): measured +133 MB on the 2-core
#: VM (the first compute of a 20-stock chunk after load_day; ~60 MB of it the imports), +117 MB
#: in session 11; counted in the fixed footprint while numba is not imported yet.
ENGINE_FOOTPRINT_BYTES = 144 * 2**20

#: The same through the ahead-of-time kernels (:mod:`fbgpu.engine.cpu_aot`: a few shared
#: libraries and a thread pool, no numba): measured +9.4 MB.
AOT_ENGINE_FOOTPRINT_BYTES = 16 * 2**20


#: Row groups per Parquet partition that a budgeted chunk's read may hold at once
#: (:func:`parquet_read_bytes`).
PARQUET_READ_GROUPS = 3.0


def parquet_read_bytes(store: Store, date: dt.date | str) -> float:
    """Host bytes that reading one stock chunk of ``date`` needs beyond the chunk's own rows
    when its tick and minute partitions are Parquet: a chunk's stocks are decoded a whole row
    group at a time (pyarrow decodes into its own pool, which keeps freed blocks), and the
    partitions are read concurrently, so per Parquet partition three times its largest row
    group's raw bytes (``rows x RAW_BYTES_PER_ROW``): the group the previous chunk ended inside,
    kept for this one (``Store.chunked_reads``), the group being decoded, and the pool's slack
    (which also covers the day's ``symbol`` codes, decoded once to find the stock runs). 0 for
    memory-mapped Arrow IPC partitions (a chunk is a view of the file). Footers only."""
    from fbgpu.data.store import pq
    from fbgpu.data.tickread import is_ipc

    d = _as_date(date)
    total = 0.0
    for t in ("minute", "trades", "orders"):
        if not store.has(t, d):
            continue
        path = store.partition_path(t, d)
        if is_ipc(path):
            continue
        meta = pq.ParquetFile(path).metadata
        rows = max((meta.row_group(i).num_rows for i in range(meta.num_row_groups)), default=0)
        total += PARQUET_READ_GROUPS * rows * RAW_BYTES_PER_ROW[t]
    return total


class MemoryBudgetError(ValueError):
    """A memory budget too small for the process's fixed footprint plus one stock-day."""


def resident_bytes() -> int:
    """This process's resident set size now (``/proc/self/statm``; the peak RSS from
    ``getrusage`` where ``/proc`` is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource
        import sys

        scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale


def fixed_footprint(gpu: bool = False, user_factors: bool = False) -> float:
    """Bytes of the budget that the day's data cannot use: on the CPU backend the process's
    resident memory now (interpreter, numpy, pyarrow, ...) plus what the engine will add on
    first use while numba is not loaded yet: :data:`AOT_ENGINE_FOOTPRINT_BYTES` when the
    ahead-of-time kernels are available (their libraries are loaded here) and no user factor
    module is loaded, else :data:`ENGINE_FOOTPRINT_BYTES` for numba's JIT (``user_factors``:
    a user factor's primitives, or its argument types, may have no ahead-of-time build, and
    their first call loads numba); 0 on the GPU backend (its budget is device memory, which
    holds only the day's arrays)."""
    if gpu:
        return 0.0
    import sys

    from fbgpu.engine import cpu_aot

    if "numba" in sys.modules:
        engine = 0
    elif not user_factors and cpu_aot.kernels() is not None:
        engine = AOT_ENGINE_FOOTPRINT_BYTES
    else:
        engine = ENGINE_FOOTPRINT_BYTES
    return float(resident_bytes() + engine)


def memory_budget_for(budget: float | str | None, backend: Backend) -> float | None:
    """The memory budget in bytes: ``budget`` itself, or with ``"auto"`` the fixed footprint
    plus half of what is free now (device memory on the GPU backend, available host memory on
    the CPU)."""
    if budget != "auto":
        return float(budget) if budget else None
    if backend.is_gpu:
        free, _ = backend.xp.cuda.runtime.memGetInfo()
        return 0.5 * free
    return fixed_footprint(backend.is_gpu) + 0.5 * os.sysconf("SC_AVPHYS_PAGES") * os.sysconf(
        "SC_PAGE_SIZE")


def stock_chunks(store: Store, date: dt.date | str, memory_budget: float,
                 footprint: float = 0.0, read_ahead: bool = False,
                 per_row: Mapping[str, float] | None = None,
                 read_allowance: float = 0.0) -> list[np.ndarray] | None:
    """Split a day's stocks (sorted) into consecutive chunks whose working memory fits
    ``memory_budget - footprint`` bytes; None when the whole day fits.

    A stock-day's working memory is ``sum over sources of rows x per_row`` (bytes a row by
    source; None: :data:`WORKING_BYTES_PER_ROW`, the device figures; :func:`compute_day` passes
    :data:`HOST_WORKING_BYTES_PER_ROW` on the CPU), from
    each partition's per-stock row counts (:meth:`Store.symbol_counts`, the ``symbol`` column
    only); chunks are filled greedily in symbol order, so a heavy stock cannot overflow a chunk
    sized by the average (:func:`plan_chunks`). ``read_ahead`` (a device backend, where
    :func:`compute_day` reads and uploads chunk ``k + 1`` while chunk ``k`` computes): chunk
    ``k + 1``'s raw inputs (``rows x RAW_BYTES_PER_ROW``) are resident beside chunk ``k``'s
    working memory and count against the same room. ``read_allowance``: bytes that reading a
    chunk needs beyond its rows (:func:`parquet_read_bytes` for a Parquet day on the CPU),
    taken off the room like the footprint and named apart in the error. Stock-days cannot be
    split: when the
    heaviest one alone (plus the next stock-day's raw inputs, read ahead) needs more than
    ``memory_budget - footprint``, the budget is refused (:class:`MemoryBudgetError`, naming
    the stock, its need, the footprint and the smallest budget that works).
    """
    d = _as_date(date)
    per_row = WORKING_BYTES_PER_ROW if per_row is None else per_row
    present = [t for t in SOURCES if store.has(t, d)]
    runs = [(t, *store.symbol_counts(t, d)) for t in present]
    universe = np.array(sorted(set().union(*[set(names) for _, names, _ in runs])),
                        dtype=object)
    if len(universe) == 0:
        return None
    need, raw = np.zeros(len(universe)), np.zeros(len(universe))
    for t, names, rows in runs:
        at = _positions(universe, names)
        need[at] += rows * float(per_row[t])
        raw[at] += rows * float(RAW_BYTES_PER_ROW[t])
    room = memory_budget - footprint - read_allowance
    if need.sum() <= room:
        return None
    ahead = raw if read_ahead else np.zeros(len(universe))
    least = min_chunk_room(need, ahead)
    worst = int(np.argmax(least))
    if least[worst] > room:
        mb = 2**20
        plus = (f" plus ~{ahead[worst + 1] / mb:.1f} MB for the raw inputs of the next "
                f"stock-day ({universe[worst + 1]}), read ahead while it computes"
                if worst + 1 < len(universe) and ahead[worst + 1] > 0 else "")
        reading = (f", reading a chunk of its Parquet partitions ~{read_allowance / mb:.1f} MB "
                   "(whole row groups are decoded)" if read_allowance > 0 else "")
        raise MemoryBudgetError(
            f"{d}: memory budget {memory_budget / mb:.1f} MB is too small: the process's fixed "
            f"footprint is {footprint / mb:.1f} MB{reading} and stock-day {universe[worst]} "
            f"alone needs ~{need[worst] / mb:.1f} MB{plus} (stock-days are not split); give at "
            f"least {math.ceil((footprint + read_allowance + least[worst]) / mb * 10) / 10:.1f}"
            " MB")  # rounded up
    starts = plan_chunks(need, room, ahead)
    return [universe[a:b] for a, b in itertools.pairwise([*starts, len(universe)])]


def min_chunk_room(need: np.ndarray, ahead: np.ndarray) -> np.ndarray:
    """Per stock ``i`` the least room any chunking needs because of it: ``need[i] +
    ahead[i + 1]`` (``need[-1]`` for the last). A chunk ending at ``i`` has the next chunk,
    which starts with stock ``i + 1``, read ahead beside it; a chunk holding ``i`` and
    ``i + 1`` needs ``need[i] + need[i + 1]`` already, more since ``ahead <= need``. So the
    maximum is a lower bound for every plan, and :func:`plan_chunks` succeeds at it."""
    return need + np.append(ahead[1:], 0.0)


def plan_chunks(need: np.ndarray, room: float, ahead: np.ndarray | None = None) -> list[int]:
    """The start index of each chunk of consecutive stocks, filled greedily, such that

        need(chunk k) + ahead(chunk k + 1) <= room   for every k  (no next chunk: 0)

    where ``need`` is each stock's working bytes and ``ahead`` its raw input bytes resident
    while the previous chunk computes (read-ahead; None or zeros: ``need(chunk) <= room``,
    the plain greedy fill). A stock joins the open chunk when the chunk, with it, still leaves
    room for the next stock's raw inputs, when the chunk's own raw inputs still fit the room
    the previous chunk left (``room - need(chunk k - 1)``), and when the chunk stays within
    ``room / (1 + rho)``, ``rho = max(ahead / need)`` (the largest raw share of a stock's
    need): filling a chunk to the brim would leave the next one only a sliver of room for its
    read-ahead (a one-stock chunk after every full one), while chunks of ``room / (1 + rho)``
    leave each next chunk room for its raw inputs. Closing a chunk early never breaks the
    first two rules. Requires ``room >= max(min_chunk_room(need, ahead))`` (checked by
    :func:`stock_chunks`)."""
    n = len(need)
    ahead = np.zeros(n) if ahead is None else ahead
    has = need > 0
    rho = float(np.max(ahead[has] / need[has])) if has.any() else 0.0
    target = room / (1.0 + rho)
    nxt = np.append(ahead[1:], 0.0).tolist()
    w, r = need.tolist(), ahead.tolist()
    starts = [0]
    used = raw = 0.0
    cap = float("inf")  # the first chunk is read before any compute: nothing beside it
    for i in range(n):
        fits = (used + w[i] + nxt[i] <= room and raw + r[i] <= cap
                and used + w[i] <= target)
        if not fits and i > starts[-1]:
            # the last stock admitted left room[...] >= r[i], so stock i alone fits the cap
            cap = room - used
            starts.append(i)
            used = raw = 0.0
        used += w[i]
        raw += r[i]
    return starts


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
    ``present`` marks the stock-days in each day's universe. On a device every day goes up
    through the one staging pool of the call (:func:`run_staging`).
    """
    store = store if isinstance(store, Store) else Store(store)
    if config is not None and config.modules:
        load_modules(config.modules)
    names = resolve_names(list(names) if names is not None else None)
    b = get_backend(backend)
    ops = segment_ops(b)
    dates = [_as_date(d) for d in dates]
    it = track(dates, "factors") if progress else dates
    staging = run_staging(b)
    days = [compute_day(store, d, names, b, config, ops, staging=staging) for d in it]
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


def column_hashes(names: Sequence[str], config: FactorConfig) -> dict[str, str]:
    """Per factor column, the hash of what defines its values: the ``[factors]`` config, the
    name and, for a user factor, its module's source (:class:`fbgpu.factors.user.UserModule`).
    Built-ins are also versioned by the code version every manifest carries."""
    base = config.hash_fields()
    out = {}
    for n in names:
        spec = FACTORS[n]
        what: dict[str, object] = {"config": base, "name": n}
        if not spec.builtin:
            um = module_of(n)
            what["source"] = um.sha256 if um is not None else _function_source(spec)
        out[n] = config_hash(what)
    return out


def _function_source(spec: FactorSpec) -> str:
    """The source of a factor function not loaded from a module file (a notebook's)."""
    import inspect

    try:
        return inspect.getsource(spec.compute)
    except (OSError, TypeError):
        return spec.compute.__code__.co_code.hex()


def user_factor_meta(names: Sequence[str]) -> dict[str, dict[str, object]]:
    """What the ``factors`` manifest records of each user factor: module, family, direction,
    formula, NaN rule (so evaluation and reports know them without importing the module)."""
    out: dict[str, dict[str, object]] = {}
    for n in names:
        spec = FACTORS[n]
        if spec.builtin:
            continue
        um = module_of(n)
        out[n] = {"module": um.origin if um is not None else spec.module,
                  "family": spec.family, "direction": spec.direction,
                  "formula": spec.formula, "min_obs": spec.min_obs, "cancels": spec.cancels}
    return out


def stored_user_factors(store: Store, table: str = FACTORS_TABLE) -> dict[str, dict[str, Any]]:
    """The user factors recorded in the manifests of ``table`` (name -> module, family,
    direction, formula, ...), latest partition winning: what a later step knows of them
    without importing their modules."""
    out: dict[str, dict[str, Any]] = {}
    for d in store.dates(table):
        m = store.manifest(table, d)
        meta = m.extra.get("user_factors") if m is not None else None
        if isinstance(meta, dict):
            out.update(meta)
    return out


def factor_catalog(store: Store | None = None) -> list[dict[str, Any]]:
    """Every factor a report should list: the built-ins from the registry, then the user
    factors recorded in ``store``'s ``factors`` manifests (or registered in this process).

    Each entry: ``name, family, direction, formula, min_obs, user, module``.
    """
    out = [{"name": n, "family": s.family, "direction": s.direction, "formula": s.formula,
            "min_obs": s.min_obs, "user": False, "module": ""}
           for n, s in FACTORS.items() if s.builtin]
    user = stored_user_factors(store) if store is not None else {}
    for n in FACTORS:
        if not FACTORS[n].builtin and n not in user:
            user.update(user_factor_meta([n]))
    out += [{"name": n, "family": m.get("family", ""), "direction": m.get("direction", 1),
             "formula": m.get("formula", ""), "min_obs": m.get("min_obs", ""), "user": True,
             "module": m.get("module", "")} for n, m in user.items()]
    return out


def _current_columns(store: Store, d: dt.date, inputs: dict[str, str],
                     col_hashes: dict[str, str]) -> list[str]:
    """Columns of the stored ``factors`` partition of ``d`` that can be kept as they are: same
    code, same inputs, same column hash (so a changed user module recomputes only its own)."""
    from fbgpu.data.store import code_version

    m = store.manifest(FACTORS_TABLE, d)
    if m is None or m.code_version != code_version() or m.inputs != inputs:
        return []
    stored = m.extra.get("columns")
    if not isinstance(stored, dict):
        return []
    return [n for n, h in col_hashes.items() if stored.get(n) == h]


def _merge_stored(store: Store, d: dt.date, day: DayFactors, computed: list[str],
                  names: list[str], reuse: list[str], backend: Backend) -> DayFactors:
    """``day`` (the ``computed`` columns) widened to ``names`` with the stored ``reuse``
    columns of the same stock universe (the universe depends only on the inputs, which match)."""
    xp = backend.xp
    old = store.read(FACTORS_TABLE, d, ["symbol", *reuse])
    old_syms = np.asarray(old.column("symbol").to_pylist(), dtype=object)
    at = _lookup(old_syms, np.asarray(day.symbols, dtype=object))
    if (at < 0).any() or len(old_syms) != len(day.symbols):
        raise StoreError(f"factors/{d}: stored universe differs from the inputs' ({len(old_syms)}"
                         f" vs {len(day.symbols)} stocks); delete the partition and rerun")
    values = xp.full((len(day.symbols), len(names)), xp.nan)
    for j, n in enumerate(computed):
        values[:, names.index(n)] = day.values[:, j]
    for n in reuse:
        col = old.column(n).to_numpy(zero_copy_only=False).astype(np.float64)
        values[:, names.index(n)] = xp.asarray(col[at])
    return DayFactors(day.date, day.symbols, values)


def _partition_writer(store: Store, d: dt.date, symbols: list[str], names: list[str],
                      chash: str, inputs: dict[str, str], extra: dict[str, Any]
                      ) -> Callable[[list[np.ndarray]], None]:
    """The write-behind job of one date's ``factors`` partition: ``[S, F]`` host values ->
    ``date, symbol`` and one float64 column per factor, with its manifest."""

    def write(host: list[np.ndarray]) -> None:
        values = host[0]  # arrays built from buffers: pa.array would import pandas
        cols = [date_column(d, len(symbols)), symbol_column(symbols),  # the schema's types:
                # conform() casts nothing, so pyarrow.compute is not imported
                *(float64_column(values[:, j]) for j in range(len(names)))]
        table = pa.Table.from_arrays(cols, names=["date", "symbol", *names])
        store.write(FACTORS_TABLE, d, table, config_hash_=chash, inputs=inputs, extra=extra)

    return write


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
    writer: StoreWriteBehind | None = None,
) -> FactorRunSummary:
    """Compute and store the ``factors`` table for every input date in ``[start, end]``.

    ``memory_budget`` (bytes, ``"auto"`` = half the free host/device memory, None = whole days)
    processes a day in stock chunks that fit it (:func:`stock_chunks`); the values do not depend
    on it, so it is not part of the config hash. ``keep`` also returns the computed values in
    memory (``summary.cube``, on the backend's device) when no date was skipped.

    Partitions are written behind the compute (:mod:`fbgpu.data.writebehind`): a day's values
    start their copy to the host (``Backend.to_host_async``, the sanctioned crossing) and are
    encoded and written by a background thread while the next day computes. With ``writer``
    (the demo's) they are submitted to it and the caller flushes it; without, the call makes its
    own and waits for it before returning (a failed write raises
    :class:`fbgpu.data.writebehind.WriteBehindError` naming the table and date, after the other
    dates were written).

    One partition per date: ``date, symbol`` and one float64 column per factor, with a manifest
    holding the config hash (configuration + factor selection) and the content hashes of the
    day's minute/trades/orders partitions. A date whose partition is current (same code, config
    and inputs) is skipped, so re-running is cheap and an interrupted run resumes.
    """
    t0 = time.perf_counter()
    store = store if isinstance(store, Store) else Store(store)
    cfg = config or FactorConfig()
    if cfg.modules:
        load_modules(cfg.modules)
    names = resolve_names(list(names) if names is not None else None)
    b = get_backend(backend)
    ops = segment_ops(b)
    dates = input_dates(store, start, end)
    if not dates:
        raise ValueError(
            f"store {store.root} has no minute/trades/orders data between {start} and {end}"
        )
    col_hashes = column_hashes(names, cfg)
    chash = config_hash({"columns": col_hashes, "names": names})
    extra_meta = {"columns": col_hashes, "user_factors": user_factor_meta(names)}
    summary = FactorRunSummary(factors=len(names), backend=b.name)
    kept: list[DayFactors] = []
    own = writer is None
    w = writer if writer is not None else StoreWriteBehind(store, b.to_host_async, name="factors")
    plan: list[tuple[dt.date, dict[str, str], dict[str, str], list[str]]] = []
    for d in dates:  # days are independent: which to compute is known before computing any
        has_cancels = any(FACTORS[n].cancels for n in names) and store.has("cancels", d)
        inputs = store.fingerprints([(t, d) for t in (*SOURCES, "cancels")
                                     if store.has(t, d) and (t != "cancels" or has_cancels)])
        if store.is_current(FACTORS_TABLE, d, config_hash_=chash, inputs=inputs):
            summary.dates_skipped.append(d)
            continue
        reuse = _current_columns(store, d, inputs, col_hashes)
        plan.append((d, inputs, reuse, [n for n in names if n not in reuse]))
    # Without a budget the next day is read by a reader thread while this day computes, and on
    # a GPU its upload starts there too (its inputs are then resident beside this day's: what a
    # budget exists to prevent).
    # One staging pool for the whole run (day read-ahead, budget chunks, single uploads).
    staging = run_staging(b)
    prefetch = DayPrefetch(store, [(d, todo) for d, _, _, todo in plan if todo],
                           enabled=memory_budget is None, backend=b, staging=staging)
    with prefetch, w if own else contextlib.nullcontext(w):  # own writer: writes waited for
        if plan:  # the writer's one-time work (pyarrow.parquet, the code version) during day 1
            w.prepare(lambda: store.prepare_write(FACTORS_TABLE))
        for d, inputs, reuse, todo in track(plan, "factors") if progress else plan:
            try:
                day = _compute_planned(store, d, reuse, todo, names, b, cfg, ops, memory_budget,
                                       prefetch, staging)
            except Exception as e:
                if not summary.dates_computed:
                    raise  # nothing written yet: the error (and its exit status) as it is
                # Earlier dates are written (the writer finishes queued writes on an error), so
                # this is no longer a rejected input with the store unchanged: say what landed.
                raise PartialRunError(d, summary.dates_computed, e) from e
            w.submit(FACTORS_TABLE, d, [day.values], _partition_writer(
                store, d, list(day.symbols), names, chash, inputs,
                {"backend": b.name, "device": b.device, **extra_meta}))
            summary.dates_computed.append(d)
            summary.stock_days += len(day.symbols)
            if keep:
                kept.append(day)
    if keep and kept and not summary.dates_skipped:
        summary.cube = assemble_cube(kept, names, b)
    summary.seconds = time.perf_counter() - t0
    log.info(summary.line())
    return summary


class PartialRunError(RuntimeError):
    """A date of a multi-date run failed after earlier dates were computed and handed to the
    writer (which finishes queued writes on an error): exit
    status 3 (failed while running, :mod:`fbgpu.errors`), whatever the cause's own status, since
    the store did change. The message names the failing date, the dates written and the cause."""

    def __init__(self, date: dt.date, written: Sequence[dt.date], cause: BaseException) -> None:
        self.date = date
        self.written = list(written)
        span = (f"{written[0]}" if len(written) == 1 else f"{written[0]} .. {written[-1]}")
        super().__init__(f"factors for {date} failed after {len(written)} earlier date(s) were "
                         f"computed and handed to the writer ({span}; a re-run skips those "
                         f"written): {type(cause).__name__}: {cause}")


def _compute_planned(store: Store, d: dt.date, reuse: dict[str, str], todo: list[str],
                     names: list[str], b: Backend, cfg: FactorConfig, ops: SegmentOps,
                     memory_budget: float | str | None, prefetch: DayPrefetch,
                     staging: StagingPool | None) -> DayFactors:
    """One planned date of :func:`run_factors`: compute ``todo`` (prefetched or read now) and
    merge the ``reuse`` columns from the stored partition."""
    if todo:
        day = compute_day(store, d, todo, b, cfg, ops, memory_budget_for(memory_budget, b),
                          loaded=prefetch.take(d), staging=staging)
    else:  # only the selection's order or membership changed: nothing to compute
        syms = store.read(FACTORS_TABLE, d, ["symbol"]).column("symbol").to_pylist()
        day = DayFactors(d, np.asarray(syms, dtype=object), b.xp.empty((len(syms), 0)))
    if reuse:
        day = _merge_stored(store, d, day, todo, names, reuse, b)
        log.info("%s: %d column(s) recomputed, %d reused", d, len(todo), len(reuse))
    return day
