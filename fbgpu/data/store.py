"""The store: every table of every stage, partitioned by table and date.

Layout (spec/data.md "The store")::

    <root>/<table>/date=YYYY-MM-DD/part-0.parquet      one partition = one table x one date
    <root>/<table>/date=YYYY-MM-DD/part-0.arrow        ... of a hot table in an "arrow" store
    <root>/<table>/date=YYYY-MM-DD/_manifest.json      what produced it (see :class:`Manifest`)
    <root>/securities/part-0.parquet                   unpartitioned tables
    <root>/reports/...                                 report outputs (tables, figures, HTML)
    <root>/store.json                                  the store's settings (``hot_format``)

**On-disk format.** The *hot* tables a factor run reads every day (:data:`HOT_TABLES`: trades,
orders, cancels, minute bars) are written in the store's ``hot_format``: ``"arrow"`` (the
default for a new store: an uncompressed Arrow IPC file, Feather v2, holding one record batch,
which readers memory-map and view as numpy arrays without copying or decoding) or
``"parquet"`` (LZ4, 4.5x smaller on disk, decoded on every read). Every other table is
Parquet. A partition is read in whatever format its file has, so stores written before the
setting existed (all Parquet) stay readable, and a store may mix formats while it is being
converted (:meth:`Store.convert`). Both formats are read directly by pyarrow, pandas
(``read_feather``/``read_parquet``) and polars (``read_ipc``/``read_parquet``).

Guarantees:

* **Atomic partitions.** A partition is written to a hidden temporary file in its directory,
  flushed and fsync'ed, then renamed over ``part-0.<ext>`` (``os.replace`` is atomic on POSIX)
  and the directory is fsync'ed. Readers only ever look at ``part-0.<ext>``; a write killed
  midway leaves at most a ``.tmp`` file that no reader takes as data, and the previous version of
  the partition (if any) stays intact. The next writer removes such debris when it takes the
  store's write lock (:mod:`fbgpu.data.lock`: one writing command per store at a time).
* **Canonical rows.** Data are cast to the table's schema (:mod:`fbgpu.data.schemas`) and sorted by
  the table's sort key, so one stock-day is one contiguous run; readers return per-day column
  arrays with CSR offsets (:class:`DayTicks`) or dense ``[stocks, 240]`` minute tensors
  (:class:`MinuteDay`).
* **Manifests.** Every partition records its row count, a content hash, and for derived results
  the code version, configuration hash and the content hashes of the input partitions; a step
  skips a date only when all of these still match (:meth:`Store.is_current`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import importlib
import io
import itertools
import json
import logging
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pyarrow as pa

from fbgpu.data.lock import claim as claim_store_lock
from fbgpu.data.schemas import MINUTES_PER_DAY, SORT_KEYS, UNPARTITIONED, schema_for
from fbgpu.errors import ExitStatus

log = logging.getLogger(__name__)


class LazyModule(ModuleType):
    """A module imported on its first attribute access: ``pyarrow.compute`` and
    ``pyarrow.parquet`` cost ~0.05-0.15 s of start-up, and a factor run on an ``arrow`` store
    needs neither before it writes its result (docs/benchmarks.md, imports)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._target = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._target), attr)


pc = LazyModule("pyarrow.compute")
pq = LazyModule("pyarrow.parquet")

PART_NAME = "part-0.parquet"
#: A partition's file name per on-disk format.
PART_NAMES = {"parquet": PART_NAME, "arrow": "part-0.arrow"}
#: The tables written in the store's ``hot_format`` (what a factor run reads every day).
HOT_TABLES = frozenset({"trades", "orders", "cancels", "minute"})
#: ``hot_format`` of a new store: the memory-mapped Arrow IPC layout, the only one measured at
#: the bandwidth floor (docs/data.md, "The on-disk format"); ``FBGPU_STORE_FORMAT=parquet`` at
#: a store's creation chooses the 4.5x smaller Parquet LZ4 files instead.
DEFAULT_HOT_FORMAT = "arrow"
#: The store's settings file (``{"hot_format": ...}``), written with its first hot partition.
SETTINGS_NAME = "store.json"
#: Arrow IPC files are written uncompressed: an LZ4 IPC file decodes as slowly as Parquet LZ4.
IPC_WRITE_OPTIONS = None  # pyarrow's default IpcWriteOptions: no compression
MANIFEST_NAME = "_manifest.json"
#: Parquet codec of every partition. LZ4 (LZ4_RAW, read by pyarrow, pandas, polars, duckdb):
#: on a full-market day's orders + trades files (full-day preset, dictionary encoding on) it
#: decodes in 0.33 s against 0.48 s for zstd, for files 18% larger (397 vs 337 MB; the whole
#: store, all tables: 459 vs 387 MB); uncompressed would be 0.28 s and 40% larger. Reading
#: ticks is the floor of the factor step, so speed wins.
PARQUET_COMPRESSION = "lz4"


def parquet_dictionary_columns(table_name: str, schema: pa.Schema) -> bool | list[str]:
    """Which columns a Parquet partition of ``table_name`` dictionary-encodes: every column of
    the tick and bar tables (prices and sizes repeat), the non-float columns of the others.

    A factor, a daily bar or a weight seldom repeats: the writer builds a dictionary for each
    such column until its page limit, then falls back to plain pages, which costs time and
    bytes (a full-day ``factors`` partition: 6.9 -> 3.3 ms to encode, 1,339 -> 1,119 kB; the
    daily bars 318 -> 313 kB; docs/data.md)."""
    if table_name in HOT_TABLES:
        return True
    return [f.name for f in schema if not pa.types.is_floating(f.type)]


class StoreError(Exception):
    """A store operation failed; the message names the table, date and path involved."""

    exit_status = ExitStatus.REJECTED  # fbgpu/errors.py: the command line's exit status


@cache
def code_version() -> str:
    """``<package version>+<sha256 prefix of the fbgpu sources>``: changes whenever code changes."""
    from fbgpu import __version__

    h = hashlib.sha256()
    pkg = Path(__file__).resolve().parents[1]
    for p in sorted(pkg.rglob("*.py")):
        h.update(str(p.relative_to(pkg)).encode())
        h.update(p.read_bytes())
    # The CUDA C kernels: the checkout's kernels/, or the copy a wheel ships as fbgpu/_kernels.
    kernels = pkg.parent / "kernels"
    if not kernels.is_dir():
        kernels = pkg / "_kernels"
    if kernels.is_dir():
        for p in sorted(kernels.glob("*.cu")):
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return f"{__version__}+{h.hexdigest()[:12]}"


def config_hash(config: object) -> str:
    """Stable sha256 prefix of a JSON-serialisable configuration (dataclass, pydantic or dict)."""
    if hasattr(config, "model_dump"):
        config = config.model_dump(mode="json")
    elif hasattr(config, "__dataclass_fields__"):
        config = asdict(config)  # type: ignore[arg-type]
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class Manifest:
    """What a partition holds and what produced it."""

    table: str
    date: str | None
    rows: int
    sha256: str
    code_version: str = ""
    config_hash: str = ""
    inputs: dict[str, str] = field(default_factory=dict)  # "table/date" -> sha256
    extra: dict[str, object] = field(default_factory=dict)


@dataclass
class DayTicks:
    """One day of a tick table as column arrays plus CSR offsets over stocks.

    Rows of stock ``symbols[i]`` are ``offsets[i]:offsets[i+1]`` in every column, in exchange
    sequence order.
    """

    date: dt.date
    symbols: np.ndarray  # str objects, sorted
    offsets: np.ndarray  # int64 [n_stocks + 1]
    columns: dict[str, np.ndarray]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    @property
    def n_stocks(self) -> int:
        return len(self.symbols)

    @property
    def n_rows(self) -> int:
        return int(self.offsets[-1])


@dataclass
class MinuteDay:
    """One day of minute bars as dense ``[stocks, 240]`` arrays, one per field."""

    date: dt.date
    symbols: np.ndarray
    fields: dict[str, np.ndarray]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.fields[name]

    @property
    def n_stocks(self) -> int:
        return len(self.symbols)


@dataclass
class Panel:
    """Dense ``[dates, symbols]`` arrays of a date-partitioned table (NaN where absent)."""

    dates: list[dt.date]
    symbols: np.ndarray
    fields: dict[str, np.ndarray]
    present: np.ndarray  # bool [dates, symbols]: a row exists

    def __getitem__(self, name: str) -> np.ndarray:
        return self.fields[name]


def _as_date(d: dt.date | str | None) -> dt.date | None:
    if d is None or isinstance(d, dt.date):
        return d
    try:
        return dt.date.fromisoformat(str(d))
    except ValueError as e:
        raise StoreError(f"not a date (YYYY-MM-DD): {d!r}") from e


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_name(path: Path) -> Path:
    """The hidden temporary sibling a write goes to before it is renamed onto ``path``."""
    return path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"


def _publish(tmp: Path, path: Path, durable: bool = True) -> None:
    """Rename a finished, fsync'ed temporary file onto ``path`` and fsync the directory
    (``durable=False``: no directory fsync; see :class:`Store`'s ``durable``)."""
    os.replace(tmp, path)
    if durable:
        _fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes | pa.Buffer, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same directory, fsync, rename.

    ``durable=False`` skips both fsyncs: the rename is still atomic for readers and against a
    killed process, but an operating-system crash may leave the file empty (scratch data only).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        _publish(tmp, path, durable)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _distinct_dates(col: pa.ChunkedArray) -> list[dt.date | None]:
    """The distinct values of a ``date32`` column in order of first appearance, as
    ``pc.unique(col).to_pylist()`` gives them; without nulls read from the buffers (numpy),
    so that writing a partition does not import ``pyarrow.compute`` (~0.05 CPU s)."""
    if col.type != pa.date32() or col.null_count:
        return pc.unique(col).to_pylist()
    days = np.concatenate([np.empty(0, dtype=np.int32)] + [  # date32: int32 days since 1970
        np.frombuffer(c.buffers()[1], dtype=np.int32, count=len(c), offset=4 * c.offset)
        for c in col.chunks if len(c)])
    uniq, first = np.unique(days, return_index=True)
    epoch = dt.date(1970, 1, 1)
    return [epoch + dt.timedelta(days=int(x)) for x in uniq[np.argsort(first)]]


def _sorted_by_symbol(table: pa.Table, keys: Sequence[str]) -> bool:
    """Whether ``table`` is already in the order :func:`_sort_indices` would give it when the
    only key is ``symbol`` (strings compare as Arrow compares them: UTF-8 bytes, i.e. code
    points), so that the sort, and ``pyarrow.compute``, can be skipped. False for any other
    key or a column with nulls."""
    if tuple(keys) != ("symbol",):
        return False
    col = table.column("symbol")
    if col.null_count:
        return False
    from fbgpu.data.tickread import as_numpy  # imported by the reads (it imports this module)

    values: list[str] = []
    for chunk in col.chunks:
        if pa.types.is_dictionary(chunk.type):
            if chunk.dictionary.null_count:  # a null symbol behind a valid index
                return False
            # to_pylist of a dictionary array builds a scalar per row (~1 us each: 6 ms for a
            # factors partition); the dictionary's strings indexed by the row indices are the
            # same values (the indices read as numpy without pyarrow's pandas shim)
            words = chunk.dictionary.to_pylist()
            values.extend(words[i] for i in as_numpy(chunk.indices).tolist())
        else:
            values.extend(chunk.to_pylist())
    return all(a <= b for a, b in itertools.pairwise(values))


def _sort_indices(table: pa.Table, keys: Sequence[str]) -> pa.Array:
    sort_cols = []
    for k in keys:
        col = table.column(k)
        if pa.types.is_dictionary(col.type):
            col = col.cast(pa.string())
        sort_cols.append((k, col))
    tmp = pa.table({k: c for k, c in sort_cols})
    return pc.sort_indices(tmp, sort_keys=[(k, "ascending") for k in keys])


def conform(table: pa.Table, table_name: str) -> pa.Table:
    """Cast ``table`` to the canonical schema of ``table_name`` (columns in schema order).

    Raises :class:`StoreError` naming missing or extra columns and failed casts.
    """
    value_cols = [c for c in table.column_names if c not in ("date", "symbol")]
    schema = schema_for(table_name, value_cols)
    missing = [f.name for f in schema if f.name not in table.column_names]
    extra = [c for c in table.column_names if c not in schema.names]
    if missing or extra:
        raise StoreError(
            f"table {table_name!r}: missing columns {missing}, unexpected columns {extra}"
        )
    cols = []
    for f in schema:
        col = table.column(f.name)
        if col.type != f.type:
            try:
                if pa.types.is_dictionary(f.type) and not pa.types.is_dictionary(col.type):
                    col = pc.dictionary_encode(col.cast(pa.string()))
                    col = col.cast(f.type)
                else:
                    col = col.cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise StoreError(
                    f"table {table_name!r}: column {f.name!r} cannot be cast "
                    f"from {col.type} to {f.type}: {e}"
                ) from e
        cols.append(col)
    return pa.Table.from_arrays(cols, schema=schema)


def float64_column(values: np.ndarray) -> pa.Array:
    """A float64 Arrow array of ``values`` (NaN stays a value, not a null: as ``pa.array``).

    This and :func:`string_column`/:func:`date_column` build arrays from buffers because
    ``pa.array``/``pa.table`` import pandas (pyarrow's pandas shim) on first use, ~0.3 CPU s
    of a ``fbgpu factors`` process that otherwise never needs pandas."""
    v = np.ascontiguousarray(values, dtype=np.float64)
    return pa.Array.from_buffers(pa.float64(), len(v), [None, pa.py_buffer(v)])


def string_column(values: Sequence[str]) -> pa.Array:
    """A UTF-8 string Arrow array of ``values`` (none may be None)."""
    encoded = [str(x).encode() for x in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return pa.Array.from_buffers(pa.string(), len(encoded),
                                 [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))])


#: ``madvise`` advice: populate the page tables of a range, reading it in if needed (Linux >= 5.14).
MADV_POPULATE_READ = 22
#: Environment switch: ``FBGPU_PREFAULT=0`` leaves the mapped columns to page faults.
PREFAULT_ENV = "FBGPU_PREFAULT"


@cache
def _madvise() -> Any:
    """libc's ``madvise`` through ctypes (which releases the GIL during the call), or None
    off Linux or where it cannot be found."""
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).madvise
        fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        fn.restype = ctypes.c_int
        return fn
    except (OSError, AttributeError):
        return None


def _mapped_view(a: object) -> bool:
    """Whether ``a`` is a plain numpy array viewing memory it neither owns nor may write: what
    the Arrow read path's zero-copy columns are (never a device or stand-in array)."""
    return type(a) is np.ndarray and not (a.flags.owndata or a.flags.writeable)


def prefault(arrays: Iterable[np.ndarray]) -> int:
    """Map in the pages of the read-only, memory-mapped ``arrays`` (the Arrow read path's
    zero-copy column views) with ``madvise(MADV_POPULATE_READ)``, one call per array, before the
    kernels read them; returns the bytes advised.

    A factor run reads every page of the columns it uses once; left to page faults, that is one
    trap per 64 KiB (the kernel's fault-around) taken by the compute threads: ~13,000 faults,
    ~0.07 s of system time for the full-day preset, on the compute's critical path. One
    ``madvise`` per column maps the same pages with no traps, and does it in the calling thread:
    :func:`prefault_async` runs it on a background thread while the main thread sets numba up
    (ctypes releases the GIL during the call). Arrays that own their memory or are writeable
    (the Parquet path's) are skipped; a kernel without ``MADV_POPULATE_READ`` (before Linux 5.14)
    returns an error that is ignored, as is ``FBGPU_PREFAULT=0``. Values are never changed.
    """
    fn = _madvise()
    if fn is None or os.environ.get(PREFAULT_ENV, "1").strip() == "0":
        return 0
    page = os.sysconf("SC_PAGE_SIZE")
    done = 0
    for a in arrays:
        if not _mapped_view(a) or a.nbytes == 0:
            continue
        start = a.ctypes.data - a.ctypes.data % page
        length = a.ctypes.data + a.nbytes - start
        if fn(start, length, MADV_POPULATE_READ) == 0:
            done += a.nbytes
    return done


def prefault_async(arrays: Iterable[np.ndarray]) -> None:
    """:func:`prefault` on a daemon thread (it holds the arrays, hence their mapping, until it
    is done); the caller goes on at once. A page the compute reaches first is simply faulted in
    by it, as without prefaulting."""
    import threading

    held = [a for a in arrays if _mapped_view(a)]
    if held and _madvise() is not None:
        threading.Thread(target=prefault, args=(held,), name="fbgpu-prefault",
                         daemon=True).start()


def symbol_column(symbols: Sequence[str]) -> pa.Array:
    """Distinct ``symbols`` as the stores' ``symbol`` type (``dictionary<int32, string>``):
    index ``i`` for the i-th symbol, the symbols themselves the dictionary, which is what
    ``pc.dictionary_encode`` gives for distinct values, built from buffers so that writing a
    ``factors`` partition needs neither ``pyarrow.compute`` (~0.05 CPU s to import) nor a cast
    in :func:`conform`. Raises ValueError when a symbol repeats."""
    if len(set(symbols)) != len(symbols):
        raise ValueError("symbol_column: symbols must be distinct")
    indices = pa.Array.from_buffers(pa.int32(), len(symbols),
                                    [None, pa.py_buffer(np.arange(len(symbols), dtype=np.int32))])
    return pa.DictionaryArray.from_arrays(indices, string_column(symbols))


def date_column(date: dt.date, n: int) -> pa.Array:
    """``n`` copies of ``date`` as an Arrow date32 array."""
    days = np.full(n, (date - dt.date(1970, 1, 1)).days, dtype=np.int32)
    return pa.Array.from_buffers(pa.date32(), n, [None, pa.py_buffer(days)])


def _check_format(fmt: str, where: str) -> str:
    if fmt not in PART_NAMES:
        raise StoreError(f"{where}: unknown store format {fmt!r} (one of {sorted(PART_NAMES)})")
    return fmt


def ipc_bytes(table: pa.Table) -> pa.Buffer:
    """``table`` as an uncompressed Arrow IPC file (Feather v2) with one record batch (its
    columns combined into one chunk each), so a reader can view each column as one array."""
    table = table.combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema, options=IPC_WRITE_OPTIONS) as w:
        if table.num_rows:
            w.write_table(table, max_chunksize=table.num_rows)
    return sink.getvalue()


def read_ipc(path: str | os.PathLike[str]) -> pa.Table:
    """An Arrow IPC file, memory-mapped: the table's buffers are the file's pages (no copy, no
    decoding; an LZ4-compressed file is decompressed). Partitions are replaced by rename, never
    rewritten in place, so a mapped file never changes under a reader."""
    return pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()


def _iter_batches(path: Path) -> Iterable[pa.RecordBatch]:
    """A partition's record batches (Parquet: one row group at a time; IPC: memory-mapped)."""
    if path.name == PART_NAMES["arrow"]:
        yield from read_ipc(path).to_batches()
    else:
        yield from pq.ParquetFile(path).iter_batches(batch_size=1 << 20)


class Store:
    """A directory of partitions; see the module docstring for layout, format and guarantees.

    ``hot_format`` (``"arrow"`` or ``"parquet"``) overrides the format of the hot tables'
    partitions written from now on (and is recorded in ``store.json`` with the next such
    write); by default it is the store's recorded setting, else ``"parquet"`` for a store that
    already holds Parquet hot partitions (written before the setting existed), else
    ``$FBGPU_STORE_FORMAT`` or :data:`DEFAULT_HOT_FORMAT`.

    ``durable`` (attribute, default True): every partition and manifest is fsync'ed (file and
    directory) before it counts as written. False skips the fsyncs, for scratch data that is
    regenerated rather than recovered (the synthetic market of ``fbgpu demo``,
    ``generate_market(..., durable=False)``): writes stay atomic for readers and against a
    killed process, but after an operating-system crash or power loss a partition may be empty
    or truncated. Ingest of real data always keeps the default.
    """

    def __init__(self, root: str | os.PathLike[str], hot_format: str | None = None) -> None:
        self.root = Path(root)
        self.durable = True
        self._hot_format = (_check_format(hot_format, f"store {self.root}")
                            if hot_format is not None else None)
        self._explicit_format = hot_format is not None

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # ---------------------------------------------------------------- format
    @property
    def hot_format(self) -> str:
        """The format new partitions of :data:`HOT_TABLES` are written in (see the class)."""
        if self._hot_format is None:
            self._hot_format = self._resolve_format()
        return self._hot_format

    def _resolve_format(self) -> str:
        path = self.root / SETTINGS_NAME
        if path.exists():
            try:
                fmt = json.loads(path.read_text()).get("hot_format", "")
            except (json.JSONDecodeError, AttributeError, OSError) as e:
                raise StoreError(f"{path}: unreadable store settings: {e}") from e
            return _check_format(fmt, str(path))
        for t in HOT_TABLES:
            if (self.root / t).is_dir() and any((self.root / t).glob(f"date=*/{PART_NAME}")):
                return "parquet"  # a store written before the setting existed
        env = os.environ.get("FBGPU_STORE_FORMAT")
        return _check_format(env, "FBGPU_STORE_FORMAT") if env else DEFAULT_HOT_FORMAT

    def _record_format(self) -> None:
        """Write ``store.json`` when it is missing or an explicit format changes it."""
        path = self.root / SETTINGS_NAME
        if path.exists() and not self._explicit_format:
            return
        want = json.dumps({"hot_format": self.hot_format}, indent=1).encode()
        if not path.exists() or path.read_bytes() != want:
            atomic_write_bytes(path, want)

    def _target_path(self, table: str, date: dt.date | str | None) -> Path:
        """Where a new partition of ``table`` is written (the store's format for a hot table)."""
        fmt = self.hot_format if table in HOT_TABLES else "parquet"
        return self.partition_dir(table, date) / PART_NAMES[fmt]

    @staticmethod
    def _drop_other_formats(path: Path) -> None:
        """Remove the partition's file in the other format (after ``path`` is published)."""
        for name in PART_NAMES.values():
            if name != path.name:
                with contextlib.suppress(FileNotFoundError):
                    (path.parent / name).unlink()

    def convert(self, hot_format: str, tables: Iterable[str] = HOT_TABLES) -> int:
        """Rewrite every partition of the hot ``tables`` whose file is not in ``hot_format``
        (streamed batch by batch through :class:`PartitionWriter`, atomically, one partition
        at a time) and make ``hot_format`` the store's setting; the number of partitions
        rewritten. Values are unchanged. Each manifest keeps its code version, config hash and
        inputs with the new file's sha256, so results derived from a converted partition
        (whose manifests name the old sha256) are recomputed by their next run.
        """
        fmt = _check_format(hot_format, f"store {self.root}")
        self._hot_format, self._explicit_format = fmt, True
        self._record_format()
        done = 0
        for t in sorted(set(tables) & HOT_TABLES):
            for d in self.dates(t):
                path = self.partition_path(t, d)
                if path.name == PART_NAMES[fmt]:
                    continue
                old = self.manifest(t, d)
                with self.open_writer(t, d) as w:
                    for batch in _iter_batches(path):
                        w.write(conform(pa.Table.from_batches([batch]), t))
                man = self.manifest(t, d)
                if old is not None and man is not None:
                    self._write_manifest(t, d, man.rows, man.sha256,
                                         code_version_=old.code_version,
                                         config_hash_=old.config_hash, inputs=old.inputs,
                                         extra=old.extra)
                log.info("%s/%s: %s -> %s", t, d, path.name, PART_NAMES[fmt])
                done += 1
        return done

    # ---------------------------------------------------------------- paths
    def partition_dir(self, table: str, date: dt.date | str | None) -> Path:
        if table in UNPARTITIONED or date is None:
            return self.root / table
        d = _as_date(date)
        return self.root / table / f"date={d.isoformat()}"

    def partition_path(self, table: str, date: dt.date | str | None) -> Path:
        """The partition's file: the existing one (either format; the store's own format first),
        else where a write would put it."""
        target = self._target_path(table, date)
        if target.exists():
            return target
        for name in PART_NAMES.values():
            p = target.parent / name
            if p.exists():
                return p
        return target

    @property
    def report_dir(self) -> Path:
        return self.root / "reports"

    # ---------------------------------------------------------------- listing
    def tables(self) -> list[str]:
        if not self.root.is_dir():
            return []
        out = []
        for p in sorted(self.root.iterdir()):
            if p.is_dir() and any((p / n).exists() or any(p.glob(f"date=*/{n}"))
                                  for n in PART_NAMES.values()):
                out.append(p.name)
        return out

    def dates(self, table: str) -> list[dt.date]:
        """Dates with a complete partition of ``table``, ascending."""
        base = self.root / table
        if not base.is_dir():
            return []
        out = []
        for p in base.glob("date=*"):
            if any((p / n).exists() for n in PART_NAMES.values()):
                out.append(dt.date.fromisoformat(p.name[5:]))
        return sorted(out)

    def has(self, table: str, date: dt.date | str | None = None) -> bool:
        return self.partition_path(table, date).exists()

    # ---------------------------------------------------------------- writing
    def prepare_write(self, table_name: str) -> None:
        """Do now what the first write of ``table_name`` in this process does once: import
        ``pyarrow.parquet`` where the table is written as Parquet (~9 ms: it imports
        ``pyarrow.fs`` and ``ssl``) and hash the package's sources (:func:`code_version`,
        ~5 ms). A write needs no call to it; the write-behind thread calls it while the first
        day computes (:meth:`fbgpu.data.writebehind.StoreWriteBehind.prepare`), which takes
        that time off a one-day run's critical path."""
        if table_name not in HOT_TABLES or self.hot_format == "parquet":
            _ = pq.ParquetWriter  # the first attribute imports the module
        code_version()

    def write(
        self,
        table_name: str,
        date: dt.date | str | None,
        data: pa.Table,
        *,
        code_version_: str | None = None,
        config_hash_: str = "",
        inputs: dict[str, str] | None = None,
        extra: dict[str, object] | None = None,
        sort: bool = True,
    ) -> Manifest:
        """Write one partition atomically (data first, then its manifest) and return its manifest.

        ``data`` is conformed to the canonical schema and sorted by the table's key. Every row's
        ``date`` must equal ``date`` for date-partitioned tables.
        """
        d = _as_date(date)
        if table_name not in UNPARTITIONED and d is None:
            raise StoreError(f"table {table_name!r} is partitioned by date; pass a date")
        data = conform(data, table_name)
        if d is not None and "date" in data.column_names and data.num_rows:
            dates = _distinct_dates(data.column("date"))
            if dates != [d]:
                raise StoreError(
                    f"table {table_name!r} partition {d}: rows carry dates {dates[:5]}"
                )
        if sort and data.num_rows:
            keys = SORT_KEYS.get(table_name, ())
            if keys and not _sorted_by_symbol(data, keys):
                data = data.take(_sort_indices(data, keys))
        claim_store_lock(self.root)  # fbgpu.data.lock: a command's lock on a store it creates
        # Re-encode dictionaries so each file carries only the symbols it uses, in sorted order.
        data = data.unify_dictionaries().combine_chunks()
        path = self._target_path(table_name, d)
        blob: bytes | pa.Buffer
        if path.name == PART_NAMES["arrow"]:
            blob = ipc_bytes(data)
        else:
            buf = io.BytesIO()
            pq.write_table(data, buf, compression=PARQUET_COMPRESSION, row_group_size=1 << 20,
                           use_dictionary=parquet_dictionary_columns(table_name, data.schema))
            blob = buf.getvalue()
        atomic_write_bytes(path, blob, self.durable)
        self._drop_other_formats(path)
        if table_name in HOT_TABLES:
            self._record_format()
        return self._write_manifest(
            table_name, d, data.num_rows, hashlib.sha256(blob).hexdigest(),
            code_version_=code_version_, config_hash_=config_hash_, inputs=inputs, extra=extra,
        )

    def _write_manifest(
        self,
        table_name: str,
        d: dt.date | None,
        rows: int,
        sha256: str,
        *,
        code_version_: str | None = None,
        config_hash_: str = "",
        inputs: dict[str, str] | None = None,
        extra: dict[str, object] | None = None,
    ) -> Manifest:
        """Write the manifest of a partition whose data file is already in place."""
        man = Manifest(
            table=table_name,
            date=d.isoformat() if d else None,
            rows=rows,
            sha256=sha256,
            code_version=code_version_ if code_version_ is not None else code_version(),
            config_hash=config_hash_,
            inputs=dict(inputs or {}),
            extra=dict(extra or {}),
        )
        path = self.partition_path(table_name, d)
        atomic_write_bytes(path.parent / MANIFEST_NAME, json.dumps(asdict(man), indent=1).encode(),
                           self.durable)
        return man

    def open_writer(
        self, table_name: str, date: dt.date | str, *, config_hash_: str = "",
        extra: dict[str, object] | None = None,
    ) -> PartitionWriter:
        """A :class:`PartitionWriter` streaming one large partition chunk by chunk."""
        return PartitionWriter(self, table_name, _as_date(date), config_hash_=config_hash_,
                               extra=extra)

    # ---------------------------------------------------------------- manifests
    def manifest(self, table: str, date: dt.date | str | None = None) -> Manifest | None:
        p = self.partition_dir(table, date) / MANIFEST_NAME
        if not p.exists() or not self.has(table, date):
            return None
        try:
            return Manifest(**json.loads(p.read_text()))
        except (ValueError, TypeError, OSError):  # not JSON, not UTF-8, wrong fields, unreadable
            return None

    def input_key(self, table: str, date: dt.date | str | None) -> str:
        d = _as_date(date)
        return f"{table}/{d.isoformat()}" if d else table

    def fingerprints(
        self, pairs: Iterable[tuple[str, dt.date | str | None]]
    ) -> dict[str, str]:
        """Content hashes of input partitions, for a derived result's manifest."""
        out = {}
        for table, date in pairs:
            m = self.manifest(table, date)
            if m is None:
                path = self.partition_dir(table, date) / MANIFEST_NAME
                if path.exists() and not self.has(table, date):
                    raise StoreError(
                        f"partition {self.input_key(table, date)} in {self.root} is damaged: "
                        f"its manifest is there but its data file is missing")
                if path.exists():  # present but not a manifest: say so, not "no partition"
                    raise StoreError(
                        f"partition {self.input_key(table, date)} in {self.root} is damaged: "
                        f"its manifest {path} is unreadable (re-ingest it, or re-run the step "
                        "that writes it)")
                raise StoreError(f"no partition {self.input_key(table, date)} in {self.root}")
            out[self.input_key(table, date)] = m.sha256
        return out

    def is_current(
        self,
        table: str,
        date: dt.date | str | None,
        *,
        config_hash_: str,
        inputs: dict[str, str],
        code_version_: str | None = None,
    ) -> bool:
        """True when the partition exists and was made by this code, config and these inputs."""
        m = self.manifest(table, date)
        if m is None:
            return False
        cv = code_version_ if code_version_ is not None else code_version()
        return m.code_version == cv and m.config_hash == config_hash_ and m.inputs == inputs

    # ---------------------------------------------------------------- reading
    def read(
        self,
        table: str,
        date: dt.date | str | None = None,
        columns: Sequence[str] | None = None,
        symbols: Sequence[str] | None = None,
    ) -> pa.Table:
        """Read one partition; a clear :class:`StoreError` when the table or date is absent.

        ``symbols`` keeps only those stocks' rows; the filter is applied while scanning, row
        group by row group, so memory holds the selection, not the whole partition.
        """
        path = self._existing_path(table, date)
        try:
            if path.name == PART_NAMES["arrow"]:
                t = read_ipc(path)
                if columns:
                    t = t.select(list(columns))
                if symbols is not None:
                    t = t.filter(pc.is_in(t.column("symbol"),
                                          value_set=pa.array(list(symbols), pa.string())))
                return t
            filters = [("symbol", "in", list(symbols))] if symbols is not None else None
            return pq.read_table(path, columns=list(columns) if columns else None,
                                 filters=filters)
        except (pa.ArrowInvalid, KeyError, OSError) as e:
            raise StoreError(f"cannot read {path}: {e}") from e

    def read_schema(self, table: str, date: dt.date | str | None = None) -> pa.Schema:
        """The Arrow schema of a partition (either format), without reading its data."""
        path = self._existing_path(table, date)
        try:
            if path.name == PART_NAMES["arrow"]:
                return pa.ipc.open_file(pa.memory_map(str(path), "r")).schema
            return pq.read_schema(path)
        except (pa.ArrowInvalid, OSError) as e:
            raise StoreError(f"cannot read {path}: {e}") from e

    def read_ticks(
        self, table: str, date: dt.date | str, columns: Sequence[str] | None = None,
        symbols: Sequence[str] | None = None, cudf: Any = None,
    ) -> DayTicks:
        """One day of ``trades``/``orders``/``cancels`` (of ``symbols`` only, if given) as
        column arrays plus CSR offsets.

        ``cudf`` (the module, or None): a whole-day (no ``symbols``) Parquet partition has its
        value columns decoded on the GPU straight into device arrays
        (:func:`fbgpu.data.tickread.read_runs_cudf`); symbols and offsets stay host arrays.
        Other partitions (Arrow IPC, a stock selection) are read on the host as without it."""
        from fbgpu.data.tickread import TickReadError, is_ipc, read_runs_cudf

        path = self._existing_path(table, date)
        if cudf is not None and symbols is None and not is_ipc(path):
            try:
                syms, offsets, arrays = read_runs_cudf(path, columns, cudf)
            except TickReadError as e:
                raise StoreError(str(e)) from e
            except (pa.ArrowInvalid, OSError) as e:
                raise StoreError(f"cannot read {path}: {e}") from e
            return DayTicks(_as_date(date), syms, offsets, arrays)  # type: ignore[arg-type]
        syms, offsets, arrays = self._read_runs(path, columns, symbols)
        return DayTicks(_as_date(date), syms, offsets, arrays)  # type: ignore[arg-type]

    def _existing_path(self, table: str, date: dt.date | str | None) -> Path:
        """The partition file of ``table``/``date``; a clear :class:`StoreError` when absent."""
        path = self.partition_path(table, date)
        if not path.exists():
            if not (self.root / table).is_dir():
                raise StoreError(f"store {self.root} has no table {table!r}")
            have = self.dates(table)
            span = f"{have[0]}..{have[-1]} ({len(have)} dates)" if have else "no dates"
            raise StoreError(
                f"store {self.root}: table {table!r} has no partition for {date} (it has {span})"
            )
        return path

    @staticmethod
    def chunked_reads() -> contextlib.AbstractContextManager[None]:
        """A block of in-order stock-chunk reads (a memory budget's day): a Parquet partition's
        row group that one chunk ends inside is decoded once for it and the next
        (:func:`fbgpu.data.tickread.chunked_reads`)."""
        from fbgpu.data.tickread import chunked_reads

        return chunked_reads()

    def symbol_counts(self, table: str, date: dt.date | str) -> tuple[np.ndarray, np.ndarray]:
        """``(symbols, rows)``: each stock's row count in a symbol-sorted partition, from its
        ``symbol`` column only (:func:`fbgpu.data.tickread.symbol_counts`)."""
        from fbgpu.data.tickread import TickReadError, symbol_counts

        path = self._existing_path(table, date)
        try:
            return symbol_counts(path)
        except TickReadError as e:
            raise StoreError(str(e)) from e
        except (pa.ArrowInvalid, OSError) as e:
            raise StoreError(f"cannot read {path}: {e}") from e

    @staticmethod
    def _read_runs(path: Path, columns: Sequence[str] | None,
                   symbols: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray,
                                                           dict[str, np.ndarray]]:
        """:func:`fbgpu.data.tickread.read_runs` (row group by row group into contiguous
        arrays; a stock selection reads only the row groups that hold it), errors as
        :class:`StoreError` naming the file."""
        from fbgpu.data.tickread import TickReadError, read_runs

        try:
            return read_runs(path, columns, symbols)
        except TickReadError as e:
            raise StoreError(str(e)) from e
        except (pa.ArrowInvalid, OSError) as e:
            raise StoreError(f"cannot read {path}: {e}") from e

    def read_minute(self, date: dt.date | str,
                    symbols: Sequence[str] | None = None) -> MinuteDay:
        """One day of minute bars (of ``symbols`` only, if given) as dense ``[stocks, 240]``
        arrays (every stock has 240 bars)."""
        path = self._existing_path("minute", date)
        symbols, offsets, cols = self._read_runs(path, None, symbols)
        counts = np.diff(offsets)
        bad = np.flatnonzero(counts != MINUTES_PER_DAY)
        if bad.size:
            i = int(bad[0])
            raise StoreError(
                f"minute/{date}: {symbols[i]} has {counts[i]} bars, expected {MINUTES_PER_DAY}"
            )
        minute = cols.pop("minute").reshape(len(symbols), MINUTES_PER_DAY)
        if not (minute == np.arange(MINUTES_PER_DAY)).all():
            raise StoreError(f"minute/{date}: minute index is not 0..239 for every stock")
        fields = {c: v.reshape(len(symbols), MINUTES_PER_DAY) for c, v in cols.items()}
        return MinuteDay(_as_date(date), symbols, fields)  # type: ignore[arg-type]

    def read_panel(
        self,
        table: str,
        dates: Sequence[dt.date] | None = None,
        columns: Sequence[str] | None = None,
        symbols: Sequence[str] | None = None,
    ) -> Panel:
        """Dense ``[dates, symbols]`` float64 arrays of a per-stock-day table (daily, factors, ...).

        ``symbols`` defaults to the sorted union over the dates. Numeric and boolean columns are
        returned as float64 (NaN where a stock has no row); dictionary columns as object arrays.
        """
        dates = list(dates) if dates is not None else self.dates(table)
        parts = [self.read(table, d, [*columns, "symbol"] if columns else None)
                 for d in dates]
        if symbols is None:
            allsyms: set[str] = set()
            for p in parts:
                allsyms.update(pc.unique(p.column("symbol").cast(pa.string())).to_pylist())
            sym_arr = np.array(sorted(allsyms), dtype=object)
        else:
            sym_arr = np.asarray(symbols, dtype=object)
        index = {s: i for i, s in enumerate(sym_arr)}
        value_cols = [c for c in (parts[0].column_names if parts else [])
                      if c not in ("date", "symbol")]
        D, S = len(dates), len(sym_arr)
        fields: dict[str, np.ndarray] = {}
        present = np.zeros((D, S), dtype=bool)
        for c in value_cols:
            typ = parts[0].schema.field(c).type
            if pa.types.is_dictionary(typ) or pa.types.is_string(typ):
                fields[c] = np.full((D, S), None, dtype=object)
            else:
                fields[c] = np.full((D, S), np.nan)
        for di, p in enumerate(parts):
            syms = p.column("symbol").cast(pa.string()).to_pylist()
            pos = np.array([index.get(s, -1) for s in syms], dtype=np.int64)
            keep = pos >= 0
            pos = pos[keep]
            present[di, pos] = True
            for c in value_cols:
                col = p.column(c)
                if pa.types.is_dictionary(col.type):
                    vals = np.array(col.cast(pa.string()).to_pylist(), dtype=object)
                else:
                    vals = col.to_numpy(zero_copy_only=False)
                fields[c][di, pos] = vals[keep]
        return Panel(dates, sym_arr, fields, present)


class PartitionWriter:
    """Append canonical-schema chunks to one partition; :meth:`close` publishes it atomically.

    For partitions too large to hold in memory (a full-market day of ticks): each chunk (already
    in canonical order, chunks in sort-key order) is appended to hidden temporary files in the
    partition directory; :meth:`close` finishes the file, fsyncs it, renames it over the
    partition's file and writes the manifest, with the same layout and atomicity as
    :meth:`Store.write`. :meth:`abort` (or an exception inside a ``with`` block) drops the
    temporary files and leaves the previous partition, if any, intact.

    * Parquet: the chunks are appended as row groups of the temporary file.
    * Arrow (a hot table of an ``"arrow"`` store): each column's values are appended to a
      spool file of raw values (the ``symbol`` column as int32 codes into the symbols the
      chunks use, in order of first appearance, i.e. sorted for sorted chunks); ``close``
      memory-maps the spools and writes them as the one record batch of an uncompressed Arrow
      IPC file, so a chunked write gives the same single-batch layout as :meth:`Store.write`
      without holding the partition in memory. Null values are refused (canonical tick
      tables have none: a missing price is NaN).
    """

    def __init__(self, store: Store, table: str, date: dt.date, *, config_hash_: str = "",
                 extra: dict[str, object] | None = None) -> None:
        self.store = store
        self.table = table
        self.date = date
        self.schema = schema_for(table)
        self.config_hash = config_hash_
        self.extra = dict(extra or {})
        self.path = store._target_path(table, date)
        claim_store_lock(store.root)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = _temp_name(self.path)
        self._arrow = self.path.name == PART_NAMES["arrow"]
        self._writer: pq.ParquetWriter | None = None
        self._spools: dict[str, tuple[Path, io.BufferedWriter]] = {}
        self._symbols: dict[str, int] = {}
        self._open = True
        if self._arrow:
            for f in self.schema:
                sp = self.path.parent / f".{self.path.name}.{f.name}.{uuid.uuid4().hex}.tmp"
                self._spools[f.name] = (sp, open(sp, "wb"))  # noqa: SIM115 (closed in close)
        else:
            self._writer = pq.ParquetWriter(
                self._tmp, self.schema, compression=PARQUET_COMPRESSION,
                use_dictionary=parquet_dictionary_columns(table, self.schema))
        self.rows = 0

    def __enter__(self) -> PartitionWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            if self._open:
                self.close()
        else:
            self.abort()

    def write(self, chunk: pa.Table) -> None:
        """Append rows (they must already carry the canonical schema and order)."""
        if not self._open:
            raise StoreError(f"{self.table}/{self.date}: writer already closed")
        if chunk.schema != self.schema:
            raise StoreError(f"{self.table}/{self.date}: chunk schema {chunk.schema} is not "
                             f"the canonical {self.schema}")
        if not chunk.num_rows:
            return
        if self._writer is not None:
            self._writer.write_table(chunk, row_group_size=1 << 20)
        else:
            self._spool(chunk)
        self.rows += chunk.num_rows

    def _spool(self, chunk: pa.Table) -> None:
        for f in self.schema:
            col = chunk.column(f.name).combine_chunks()
            if col.null_count:
                raise StoreError(f"{self.table}/{self.date}: column {f.name!r} has "
                                 f"{col.null_count} null value(s); an arrow partition "
                                 "written in chunks cannot hold nulls")
            out = self._spools[f.name][1]
            if pa.types.is_dictionary(f.type):
                codes = col.indices.to_numpy(zero_copy_only=False)
                first = codes[np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])]
                names = col.dictionary.to_pylist()
                remap = np.full(len(names), -1, dtype=np.int32)
                for k in dict.fromkeys(first.tolist()):  # used codes, in order of appearance
                    remap[k] = self._symbols.setdefault(names[k], len(self._symbols))
                out.write(remap[codes].data)
            elif f.type.bit_width % 8 == 0:  # fixed width: the raw values buffer
                width = f.type.bit_width // 8
                data = memoryview(col.buffers()[1])  # type: ignore[arg-type]
                out.write(data[col.offset * width:(col.offset + len(col)) * width])
            else:
                raise StoreError(f"{self.table}/{self.date}: column {f.name!r} ({f.type}) "
                                 "cannot be written to an arrow partition in chunks")

    def _finish_ipc(self) -> None:
        """The spools as the one record batch of the IPC file ``self._tmp``."""
        arrays = []
        for f in self.schema:
            sp, fh = self._spools[f.name]
            fh.close()
            if not self.rows:
                arrays.append(pa.array([], f.type))
                continue
            buf = pa.memory_map(str(sp), "r").read_buffer()
            if pa.types.is_dictionary(f.type):
                codes = pa.Array.from_buffers(pa.int32(), self.rows, [None, buf])
                arrays.append(pa.DictionaryArray.from_arrays(
                    codes, pa.array(list(self._symbols), f.type.value_type)))
            else:
                arrays.append(pa.Array.from_buffers(f.type, self.rows, [None, buf]))
        batch = pa.RecordBatch.from_arrays(arrays, schema=self.schema)
        with pa.OSFile(str(self._tmp), "wb") as sink, \
                pa.ipc.new_file(sink, self.schema, options=IPC_WRITE_OPTIONS) as w:
            if self.rows:
                w.write_batch(batch)
        del batch, arrays
        self._drop_spools()

    def _drop_spools(self) -> None:
        for sp, fh in self._spools.values():
            with contextlib.suppress(Exception):
                fh.close()
            with contextlib.suppress(FileNotFoundError):
                sp.unlink()
        self._spools = {}

    def close(self) -> Manifest:
        """Finish the file, fsync, rename into place, write the manifest; return it."""
        if not self._open:
            raise StoreError(f"{self.table}/{self.date}: writer already closed")
        self._open = False
        if self._writer is not None:
            if self.rows == 0:
                self._writer.write_table(self.schema.empty_table())
            self._writer.close()
            self._writer = None
        else:
            self._finish_ipc()
        h = hashlib.sha256()
        with open(self._tmp, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
            if self.store.durable:
                os.fsync(f.fileno())
        _publish(self._tmp, self.path, self.store.durable)
        self.store._drop_other_formats(self.path)
        if self.table in HOT_TABLES:
            self.store._record_format()
        return self.store._write_manifest(self.table, self.date, self.rows, h.hexdigest(),
                                          config_hash_=self.config_hash, extra=self.extra)

    def abort(self) -> None:
        """Drop the temporary files (the previous partition, if any, stays intact)."""
        self._open = False
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer = None
        self._drop_spools()
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()
